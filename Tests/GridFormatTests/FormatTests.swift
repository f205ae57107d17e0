import GridCrypto
import GridSystem
import GridTestSupport
import XCTest

@testable import GridFormat

final class Base32Tests: XCTestCase {
    func testVectors() throws {
        let v = try Fixtures.json("hashutil.json") as! [String: Any]
        for c in v["base32"] as! [[String: Any]] {
            let bytes = unhex(c["input_hex"] as! String)
            XCTAssertEqual(Base32.encode(bytes), c["output"] as! String)
            XCTAssertEqual(Base32.decode(c["output"] as! String), bytes)
        }
    }

    func testRoundTripAllLengths() {
        for n in 0..<40 {
            let b = pseudoRandom(n, seed: UInt64(n))
            let s = Base32.encode(b)
            XCTAssertEqual(s.count, Base32.encodedLength(n))
            XCTAssertEqual(Base32.decode(s), b)
        }
    }

    func testStrictDecoding() {
        XCTAssertNil(Base32.decode("A"))        // upper case
        XCTAssertNil(Base32.decode("ab1"))      // '1' is not in the alphabet
        XCTAssertNil(Base32.decode("a"))        // impossible length
        XCTAssertNil(Base32.decode("abc"))      // impossible length
        XCTAssertNil(Base32.decode("lz"))       // 'z' leaves non-zero padding bits ('ly' is canonical)
        XCTAssertEqual(Base32.decode("ly"), [0x5e])
        XCTAssertEqual(Base32.decode(""), [])
    }
}

final class HashTreeTests: XCTestCase {
    func testTahoeVectors() throws {
        let v = try Fixtures.json("hashtree.json") as! [String: Any]
        let cases = v["cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 10)
        for c in cases {
            let leaves = (c["leaves_hex"] as! [String]).map(unhex)
            let t = HashTree(leaves: leaves)
            XCTAssertEqual(t.paddedLeafCount, c["padded_leaf_count"] as! Int)
            XCTAssertEqual(t.firstLeafIndex, c["first_leaf_index"] as! Int)
            XCTAssertEqual(t.nodes.count, c["node_count"] as! Int)
            XCTAssertEqual(t.nodes.map { hex($0) }, c["nodes_hex"] as! [String])
            XCTAssertEqual(hex(t.root), c["root_hex"] as! String)
            for p in c["padding_leaves"] as! [[String: Any]] {
                XCTAssertEqual(hex(HashTree.emptyLeafHash(p["leaf_position"] as! Int)), p["hash_hex"] as! String)
            }
            for (leafStr, nh) in c["needed_hashes"] as! [String: [String: [Int]]] {
                let leaf = Int(leafStr)!
                XCTAssertEqual(t.neededHashes(leaf: leaf, includeLeaf: false).sorted(), nh["needed_hashes"]!)
                XCTAssertEqual(t.neededHashes(leaf: leaf, includeLeaf: true).sorted(), nh["needed_hashes_include_leaf"]!)
                // The exact order Tahoe writes share hash chains in.
                XCTAssertEqual(t.neededHashes(leaf: leaf, includeLeaf: true), nh["include_leaf_python_set_order"]!,
                               "leaf \(leaf) of \(leaves.count)")
                // Verifying the leaf from its chain reaches the root.
                var chain: [Int: [UInt8]] = [:]
                for i in nh["needed_hashes"]! { chain[i] = t[i] }
                XCTAssertEqual(HashTree.rootFromLeaf(leafNode: t.firstLeafIndex + leaf, leafHash: leaves[leaf], hashes: chain), t.root)
                var wrong = leaves[leaf]
                wrong[0] ^= 1
                XCTAssertNotEqual(HashTree.rootFromLeaf(leafNode: t.firstLeafIndex + leaf, leafHash: wrong, hashes: chain), t.root)
                if let any = nh["needed_hashes"]!.first {
                    chain[any] = nil
                    XCTAssertNil(HashTree.rootFromLeaf(leafNode: t.firstLeafIndex + leaf, leafHash: leaves[leaf], hashes: chain))
                }
            }
        }
    }

    func testPythonSetOrderExamples() {
        // From the vectors README: n = 8, share 0 gives [8, 2, 4, 7].
        XCTAssertEqual(HashTree.neededHashes(leaf: 0, firstLeafIndex: 7, includeLeaf: true), [8, 2, 4, 7])
        // Ascending for small n (keys below the table size, no collisions).
        XCTAssertEqual(HashTree.neededHashes(leaf: 1, firstLeafIndex: 3, includeLeaf: true), [2, 3, 4])
        // One leaf: the chain is just the root-leaf itself.
        XCTAssertEqual(HashTree.neededHashes(leaf: 0, firstLeafIndex: 0, includeLeaf: true), [0])
        // Growth and collisions: a 256-leaf tree (n = 256) keeps every key exactly once.
        let order = HashTree.neededHashes(leaf: 200, firstLeafIndex: 255, includeLeaf: true)
        XCTAssertEqual(Set(order).count, 9)
        XCTAssertEqual(Set(order), Set(HashTree.siblingsToRoot(455) + [455]))
    }
}

final class URIExtensionTests: XCTestCase {
    func chkCases() throws -> [[String: Any]] {
        let doc = try Fixtures.json("chk.json") as! [String: Any]
        return (doc["cases"] as! [[String: Any]]).filter { ($0["type"] as! String) == "CHK" }
    }

    func testParseAndSerializeTahoeUEBs() throws {
        for c in try chkCases() {
            let bytes = unhex(c["ueb_hex"] as! String)
            let ueb = try URIExtension(parsing: bytes)
            let f = c["ueb"] as! [String: Any]
            XCTAssertEqual(ueb.serialized(), bytes)
            XCTAssertEqual(hex(ueb.hash), c["ueb_hash_hex"] as! String)
            XCTAssertEqual(Int(ueb.size), f["size"] as! Int)
            XCTAssertEqual(ueb.segmentSize, f["segment_size"] as! Int)
            XCTAssertEqual(ueb.numSegments, f["num_segments"] as! Int)
            XCTAssertEqual(ueb.neededShares, f["needed_shares"] as! Int)
            XCTAssertEqual(ueb.totalShares, f["total_shares"] as! Int)
            XCTAssertEqual(ueb.codecParams, f["codec_params"] as! String)
            XCTAssertEqual(ueb.tailCodecParams, f["tail_codec_params"] as! String)
            XCTAssertEqual(hex(ueb.shareRootHash), (f["share_root_hash"] as! [String: String])["hex"])
            XCTAssertEqual(hex(ueb.crypttextHash), (f["crypttext_hash"] as! [String: String])["hex"])
            XCTAssertEqual(hex(ueb.crypttextRootHash), (f["crypttext_root_hash"] as! [String: String])["hex"])
        }
    }

    func testStrictParsing() throws {
        let good = unhex(try chkCases()[0]["ueb_hex"] as! String)
        func rejects(_ bytes: [UInt8], _ fragment: String, line: UInt = #line) {
            XCTAssertThrowsError(try URIExtension(parsing: bytes), line: line) { e in
                XCTAssertTrue("\(e)".contains(fragment), "'\(e)' should mention '\(fragment)'", line: line)
            }
        }
        rejects(Array(good.dropLast()), "truncated")
        rejects(good + Array("size:2:10,".utf8), "twice")
        rejects(good + Array("extra".utf8), "no ':'")
        func replacing(_ a: String, _ b: String) -> [UInt8] {
            let from = Array(a.utf8), to = Array(b.utf8)
            var out = good
            for i in 0...(out.count - from.count) where Array(out[i..<(i + from.count)]) == from {
                out.replaceSubrange(i..<(i + from.count), with: to)
                return out
            }
            XCTFail("'\(a)' not found")
            return out
        }
        rejects(replacing("needed_shares:1:", "needed_sharez:1:"), "missing 'needed_shares'")
        rejects(replacing("codec_name:3:crs", "codec_name:3:xyz"), "not supported")
        rejects(replacing("needed_shares:1:", "needed_shares:2:0"), "needed_shares")
        // Unknown keys are kept, not an error.
        let withExtra = try URIExtension(parsing: Array("a-new-key:3:xyz,".utf8) + good)
        XCTAssertEqual(withExtra.extra["a-new-key"], Array("xyz".utf8))
        XCTAssertEqual(withExtra.serialized(), Array("a-new-key:3:xyz,".utf8) + good)
    }
}

final class ShareLayoutTests: XCTestCase {
    func testLayoutsMatchTahoe() throws {
        let doc = try Fixtures.json("chk.json") as! [String: Any]
        for c in (doc["cases"] as! [[String: Any]]) where (c["type"] as! String) == "CHK" {
            let l = c["share_layout"] as! [String: Any]
            let ueb = c["ueb"] as! [String: Any]
            let n = ueb["total_shares"] as! Int
            let hashes = HashTree.neededHashes(leaf: 0, firstLeafIndex: HashTree.paddedCount(n) - 1, includeLeaf: true).count
            let layout = ShareLayout(blockSize: l["block_size"] as! Int, dataSize: UInt64(l["data_size"] as! Int),
                                     numSegments: ueb["num_segments"] as! Int, numShareHashes: hashes)
            XCTAssertEqual(layout.version, l["version"] as! Int)
            XCTAssertEqual(Int(layout.dataOffset), l["data_offset"] as! Int)
            XCTAssertEqual(Int(layout.plaintextHashTreeOffset), l["plaintext_hash_tree_offset"] as! Int)
            XCTAssertEqual(Int(layout.crypttextHashTreeOffset), l["crypttext_hash_tree_offset"] as! Int)
            XCTAssertEqual(Int(layout.blockHashesOffset), l["block_hashes_offset"] as! Int)
            XCTAssertEqual(Int(layout.shareHashesOffset), l["share_hashes_offset"] as! Int)
            XCTAssertEqual(Int(layout.uriExtensionOffset), l["uri_extension_offset"] as! Int)
            XCTAssertEqual(Int(layout.totalSize(uebLength: l["uri_extension_length"] as! Int)), l["share_data_len"] as! Int)
            XCTAssertEqual(try ShareLayout(parsing: layout.header()), layout)
            // The header is the first 36 bytes of Tahoe's share data.
            if let share = (c["shares"] as! [[String: Any]]).first, let data = share["share_data_hex"] as? String {
                XCTAssertEqual(hex(layout.header()), String(data.prefix(72)))
            }
        }
    }

    func testVersion2ForLargeShares() throws {
        // Data over 4 GiB forces 8-byte fields.
        let layout = ShareLayout(blockSize: 349_526, dataSize: 5 << 30, numSegments: 15360, numShareHashes: 5)
        XCTAssertEqual(layout.version, 2)
        XCTAssertEqual(layout.dataOffset, 0x44)
        XCTAssertEqual(layout.header().count, 0x44)
        XCTAssertEqual(layout.uebLengthFieldSize, 8)
        XCTAssertEqual(try ShareLayout(parsing: layout.header()), layout)
        XCTAssertEqual(Array(layout.uebSection([1, 2]).prefix(8)), [0, 0, 0, 0, 0, 0, 0, 2])
    }

    func testRejectsBadHeaders() {
        let good = ShareLayout(blockSize: 334, dataSize: 334, numSegments: 1, numShareHashes: 5).header()
        var v3 = good
        v3[3] = 3
        XCTAssertThrowsError(try ShareLayout(parsing: v3)) { XCTAssertTrue("\($0)".contains("unknown share version 3")) }
        XCTAssertThrowsError(try ShareLayout(parsing: Array(good.prefix(20)))) { XCTAssertTrue("\($0)".contains("truncated")) }
        var shuffled = good
        shuffled[0x1b] ^= 0x40  // block hashes offset
        XCTAssertThrowsError(try ShareLayout(parsing: shuffled))
        XCTAssertThrowsError(try ShareLayout(parsing: [])) 
    }
}

final class CapabilityTests: XCTestCase {
    func testTahoeCapabilitiesRoundTrip() throws {
        let doc = try Fixtures.json("chk.json") as! [String: Any]
        for c in doc["cases"] as! [[String: Any]] {
            let capString = c["cap"] as! String
            let cap = try Capability(parsing: capString)
            XCTAssertEqual(cap.description, capString)
            if case let .chk(chk) = cap {
                XCTAssertEqual(hex(chk.key), c["encryption_key_hex"] as! String)
                XCTAssertEqual(hex(chk.storageIndex), c["storage_index_hex"] as! String)
                XCTAssertEqual(chk.verifier.string, c["verify_cap"] as! String)
                XCTAssertEqual(try Capability(parsing: c["verify_cap"] as! String), .chkVerifier(chk.verifier))
            } else {
                XCTAssertEqual(c["type"] as! String, "LIT")
                guard case let .lit(lit) = cap else { return XCTFail() }
                XCTAssertEqual(lit.data, content(seed: c["seed"] as! String, length: c["size"] as! Int))
            }
        }
    }

    func testMalformedCapabilitiesNameTheProblem() {
        let key = String(repeating: "a", count: 26), h = String(repeating: "a", count: 52)
        let cases: [(String, String)] = [
            ("URI:CHK:\(key):\(h):3:10", "5 fields"),
            ("URI:CHK:\(key.dropLast()):\(h):3:10:1000", "encryption key"),
            ("URI:CHK-Verifier:\(key)1:\(h):3:10:1000", "storage index"),
            ("URI:CHK:\(key):\(h.dropLast()):3:10:1000", "URI extension hash"),
            ("URI:CHK:\(key):\(h):x:10:1000", "needed shares"),
            ("URI:CHK:\(key):\(h):3:10:-5", "size"),
            ("URI:CHK:\(key):\(h):11:10:1000", "11-of-10"),
            ("URI:CHK:\(key):\(h):3:300:1000", "3-of-300"),
            ("URI:CHK:\(key):\(h):3:10:0", "empty"),
            ("URI:SSK:abc:def", "mutable files"),
            ("hello", "not a URI:LIT"),
            ("URI:LIT:A", "base32"),
            ("URI:LIT:\(String(repeating: "a", count: 96))", "at most 55"),
        ]
        for (s, fragment) in cases {
            XCTAssertThrowsError(try Capability(parsing: s), s) { e in
                XCTAssertTrue("\(e)".contains(fragment), "'\(e)' should mention '\(fragment)'")
                XCTAssertFalse("\(e)".contains("\n"))
            }
        }
        XCTAssertEqual(try Capability(parsing: "URI:LIT:"), .lit(LITCapability(data: [])))
        XCTAssertEqual(try Capability(parsing: "  URI:LIT:ly\n"), .lit(LITCapability(data: [0x5e])))
    }
}

final class DirectoryCapabilityErrorTests: XCTestCase {
    /// A damaged directory capability is named as what the user typed, not as the file
    /// capability inside it.
    func testErrorsNameTheDirectoryKind() {
        for (bad, kind) in [("URI:DIR2:abc", "URI:DIR2"), ("URI:DIR2-MDMF-RO:x:y:z", nil), ("URI:DIR2-CHK:a", "URI:DIR2-CHK")] {
            XCTAssertThrowsError(try AnyCapability(parsing: bad)) { e in
                let text = "\(e)"
                if let kind { XCTAssertTrue(text.contains(kind), text) }
                XCTAssertFalse(text.contains("URI:SSK") || text.contains("URI:MDMF") || text.contains("URI:CHK:"), text)
                XCTAssertEqual((e as? ClassifiedError)?.errorClass, .usage)
            }
        }
    }
}
