import Foundation
import GridCodec
import GridCrypto
import GridFormat
import GridTestSupport
import GridSystem
import XCTest

@testable import GridImmutable

func encodeInMemory(_ data: [UInt8], secret: [UInt8], k: Int, n: Int, segment: Int,
                    path: SIMDPath = .best, threads: Int = 2, sha: SHA256Path = .current) throws -> (EncodeResult, [[UInt8]]) {
    let enc = try CHKEncoder(parameters: EncodingParameters(needed: k, happy: min(n, 7), total: n, maxSegmentSize: segment),
                             threads: threads, simdPath: path, shaPath: sha)
    let sink = MemoryShareSink(shares: n)
    let r = try enc.encode(source: MemorySource(data), convergenceSecret: secret, sink: sink)
    return (r, sink.shares)
}

func decodeInMemory(_ cap: CHKCapability, _ shares: [(Int, [UInt8])], offset: UInt64 = 0, length: UInt64? = nil) throws -> ([UInt8], CHKDecoder) {
    let d = CHKDecoder(capability: cap, shares: shares.map { MemoryShareReader(shareNumber: $0.0, bytes: $0.1) })
    let out = MemoryPlaintextSink()
    try d.decode(to: out, offset: offset, length: length)
    return (out.bytes, d)
}

/// The acceptance test: the same file, secret and encoding give Tahoe's capability and share bytes.
final class TahoeInteropTests: XCTestCase {
    func testEveryCHKCaseMatchesTahoeShareForShare() throws {
        let doc = try Fixtures.json("chk.json") as! [String: Any]
        let cases = doc["cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 88)
        var contentCache: [Int: [UInt8]] = [:]
        for c in cases {
            let size = c["size"] as! Int
            let data = contentCache[size] ?? content(seed: c["seed"] as! String, length: size)
            contentCache[size] = data
            let k = c["k"] as! Int, n = c["n"] as! Int, seg = c["max_segment_size"] as! Int
            let (result, shares) = try encodeInMemory(data, secret: unhex(c["convergence_secret_hex"] as! String), k: k, n: n, segment: seg)
            XCTAssertEqual(result.capability.description, c["cap"] as! String, "size \(size) \(k)-of-\(n) seg \(seg)")
            guard case let .chk(cap, ueb) = result else {
                XCTAssertEqual(c["type"] as! String, "LIT")
                continue
            }
            XCTAssertEqual(hex(ueb.serialized()), c["ueb_hex"] as! String)
            XCTAssertEqual(cap.verifier.string, c["verify_cap"] as! String)
            for s in c["shares"] as! [[String: Any]] {
                let shnum = s["shnum"] as! Int
                XCTAssertEqual(shares[shnum].count, s["share_data_len"] as! Int)
                XCTAssertEqual(sha256hex(shares[shnum]), s["share_data_sha256"] as! String, "share \(shnum) of size \(size) \(k)-of-\(n)")
                if let h = s["share_data_hex"] as? String { XCTAssertEqual(hex(shares[shnum]), h) }
            }
            // And it decodes back, from the last k shares (erasure decoding where k < n).
            let (plain, _) = try decodeInMemory(cap, (n - k..<n).map { ($0, shares[$0]) })
            XCTAssertEqual(plain, data)
        }
    }

    func testTahoeIntegrationVectors() throws {
        let doc = try Fixtures.json("tahoe-integration-chk.json") as! [String: Any]
        let vectors = doc["vectors"] as! [[String: Any]]
        XCTAssertEqual(vectors.count, 120)
        var plaintexts: [String: [UInt8]] = [:]
        for v in vectors {
            let seed = Array(Data(base64Encoded: v["seed"] as! String)!)
            let length = v["length"] as! Int
            let key = "\(v["seed"]!)/\(length)"
            if plaintexts[key] == nil {
                var p = [UInt8]()
                p.reserveCapacity(length)
                while p.count < length { p += seed.prefix(length - p.count) }
                plaintexts[key] = p
            }
            let secret = Array(Data(base64Encoded: v["convergence"] as! String)!)
            let k = v["k"] as! Int, n = v["n"] as! Int
            let enc = try CHKEncoder(parameters: EncodingParameters(needed: k, happy: 1, total: n, maxSegmentSize: v["segment_size"] as! Int))
            let r = try enc.encode(source: MemorySource(plaintexts[key]!), convergenceSecret: secret, sink: DiscardShareSink())
            XCTAssertEqual(r.capability.description, v["expected"] as! String, "\(k)-of-\(n), \(length) bytes")
        }
    }
}

final class CHKCodingTests: XCTestCase {
    let secret = Array("grid-test-secret".utf8)

    func testLiteralThreshold() throws {
        for size in [0, 1, 55] {
            let (r, _) = try encodeInMemory(pseudoRandom(size, seed: 1), secret: secret, k: 3, n: 10, segment: 1 << 20)
            guard case let .literal(l) = r else { return XCTFail("size \(size) should be LIT") }
            XCTAssertEqual(l.data, pseudoRandom(size, seed: 1))
        }
        let (r, _) = try encodeInMemory(pseudoRandom(56, seed: 1), secret: secret, k: 3, n: 10, segment: 1 << 20)
        guard case .chk = r else { return XCTFail("56 bytes should be CHK") }
    }

    /// Sizes around segment boundaries, every SIMD path: identical shares, and round trips.
    func testSegmentBoundariesAndPathsAgree() throws {
        let seg = 4096
        for size in [56, 4094, 4095, 4096, 4097, 8191, 8192, 8193, 3 * 4096 + 5] {
            let data = pseudoRandom(size, seed: UInt64(size))
            var reference: [[UInt8]]?
            for path in SIMDPath.available {
                let (r, shares) = try encodeInMemory(data, secret: secret, k: 3, n: 7, segment: seg, path: path)
                if let ref = reference { XCTAssertEqual(shares, ref, "size \(size) on \(path)") } else { reference = shares }
                guard case let .chk(cap, _) = r else { return XCTFail() }
                XCTAssertEqual(try decodeInMemory(cap, (0..<3).map { ($0, shares[$0]) }).0, data)
                XCTAssertEqual(try decodeInMemory(cap, [(6, shares[6]), (4, shares[4]), (5, shares[5])]).0, data)
            }
        }
    }

    /// Every SHA-256 path gives the same shares: block hashes batched sixteen at a time
    /// across segments (AVX-512) or hashed a segment at a time, with n below, at and above
    /// sixteen, tails of other lengths, and one thread or two.
    func testSHA256PathsGiveTheSameShares() throws {
        let paths = SHA256Path.allCases.filter(\.isSupported)
        print("SHA-256 paths compared: \(paths)")
        for (k, n, size) in [(1, 1, 40_000), (2, 3, 70_001), (3, 10, 100_000), (3, 10, 8192 * 7), (5, 16, 90_000), (7, 20, 123_457)] {
            let data = pseudoRandom(size, seed: UInt64(size + n))
            var reference: [[UInt8]]?
            for sha in paths {
                for threads in [1, 2] {
                    let (r, shares) = try encodeInMemory(data, secret: secret, k: k, n: n, segment: 8190, threads: threads, sha: sha)
                    if let ref = reference { XCTAssertEqual(shares, ref, "\(k)-of-\(n) size \(size) on \(sha), \(threads) threads") } else { reference = shares }
                    guard case let .chk(cap, _) = r else { return XCTFail() }
                    XCTAssertEqual(try decodeInMemory(cap, (n - k..<n).map { ($0, shares[$0]) }).0, data)
                }
            }
        }
    }

    func testOneThreadAndTwoThreadsAgree() throws {
        let data = pseudoRandom(100_000, seed: 9)
        let a = try encodeInMemory(data, secret: secret, k: 3, n: 10, segment: 8192, threads: 1)
        let b = try encodeInMemory(data, secret: secret, k: 3, n: 10, segment: 8192, threads: 2)
        XCTAssertEqual(a.0, b.0)
        XCTAssertEqual(a.1, b.1)
    }

    func testRangeDecoding() throws {
        let seg = 3000
        let data = pseudoRandom(10_000, seed: 5)
        let (r, shares) = try encodeInMemory(data, secret: secret, k: 3, n: 5, segment: seg)
        guard case let .chk(cap, _) = r else { return XCTFail() }
        let all = (0..<5).map { ($0, shares[$0]) }
        for (off, len) in [(0, 1), (0, 3000), (2999, 2), (3000, 3000), (5999, 1), (6000, 4000), (9999, 1), (123, 9000), (0, 10_000), (10_000, 5)] {
            let want = Array(data[off..<min(10_000, off + len)])
            XCTAssertEqual(try decodeInMemory(cap, all, offset: UInt64(off), length: UInt64(len)).0, want, "range \(off)+\(len)")
        }
        XCTAssertThrowsError(try decodeInMemory(cap, all, offset: 10_001, length: 1))
    }

    // MARK: Bad input

    func sampleFile() throws -> (CHKCapability, [[UInt8]], [UInt8]) {
        let data = pseudoRandom(20_000, seed: 7)
        let (r, shares) = try encodeInMemory(data, secret: secret, k: 3, n: 6, segment: 4096)
        guard case let .chk(cap, _) = r else { throw ImmutableError.invalidParameters("not CHK") }
        return (cap, shares, data)
    }

    /// With `width` above k the segments are read from that many shares in turn (each from
    /// k of them, parity included): the same bytes, every share used, and a corrupt one
    /// among them is set aside and replaced.
    func testSpreadingSegmentsOverMoreSharesGivesTheSameBytes() throws {
        let (cap, shares, data) = try sampleFile()
        for width in [3, 4, 5, 6, 9] {
            let d = CHKDecoder(capability: cap, shares: (0..<6).map { MemoryShareReader(shareNumber: $0, bytes: shares[$0]) },
                               readahead: 3)
            d.width = width
            let out = MemoryPlaintextSink()
            try d.decode(to: out)
            XCTAssertEqual(out.bytes, data, "width \(width)")
            XCTAssertEqual(d.usedReaders.count, min(6, width), "width \(width): every share in the rotation is read")
        }
        let layout = try ShareLayout(parsing: Array(shares[0].prefix(0x44)))
        var bad = shares
        bad[4][Int(layout.dataOffset) + 4096 / 3 + 5] ^= 1  // share 4's second block
        let d = CHKDecoder(capability: cap, shares: (0..<6).map { MemoryShareReader(shareNumber: $0, bytes: bad[$0]) })
        d.width = 6
        let out = MemoryPlaintextSink()
        try d.decode(to: out)
        XCTAssertEqual(out.bytes, data)
        XCTAssertEqual(d.badShares[4]?.errorClass, .corrupt)
    }

    /// A share set aside from the rotation is replaced in its own slot: every other share
    /// keeps the segments it had (and the blocks already requested for them).
    func testASetAsideShareIsReplacedInItsOwnSlot() throws {
        let (cap, shares, _) = try sampleFile()
        let d = CHKDecoder(capability: cap, shares: (0..<6).map { MemoryShareReader(shareNumber: $0, bytes: shares[$0]) })
        d.width = 4
        try d.prepare()
        try d.ensureChecked()
        func plan() -> [[Int]] { (0..<8).map { seg in d.activeShares(seg, d.checkedInOrder()).map(\.reader.shareNumber) } }
        let before = plan()
        XCTAssertEqual(Set(before.flatMap { $0 }), [0, 1, 2, 3])
        d.markBad(d.checked[1]!.reader, ShareFailure.corrupt(.block(segment: 0), "test"))
        try d.ensureChecked()
        let after = plan()
        for (b, a) in zip(before, after) {
            XCTAssertEqual(b.map { $0 == 1 ? 4 : $0 }, a, "share 4 takes share 1's place; the others keep theirs")
        }
    }

    /// Damage to any section of one share: the decoder sets that share aside, names it,
    /// and still rebuilds the file from the others.
    func testCorruptionInEverySectionIsDetected() throws {
        let (cap, shares, data) = try sampleFile()
        let layout = try ShareLayout(parsing: Array(shares[0].prefix(0x44)))
        let spots: [(String, Int)] = [
            ("header", 5),
            ("first block", Int(layout.dataOffset) + 10),
            ("last block", Int(layout.plaintextHashTreeOffset) - 1),
            ("crypttext hash tree", Int(layout.crypttextHashTreeOffset) + 40),
            ("block hash tree leaf", Int(layout.blockHashesOffset) + Int(layout.segmentTreeSize) / 2 + 20),
            ("share hashes", Int(layout.shareHashesOffset) + 7),
            ("URI extension", Int(layout.uriExtensionOffset) + 20),
        ]
        for (what, at) in spots {
            var bad = shares
            bad[1][at] ^= 0x55
            let (plain, d) = try decodeInMemory(cap, (0..<6).map { ($0, bad[$0]) })
            XCTAssertEqual(plain, data, "corrupt \(what)")
            if what == "crypttext hash tree" {
                // Share 0's tree is the one read; share 1's copy is never needed.
                continue
            }
            XCTAssertNotNil(d.badShares[1], "corrupt \(what) should set share 1 aside")
            // Damage is always classed as corruption (what a verifier reports to the server).
            XCTAssertEqual(d.badShares[1]?.errorClass, .corrupt, "\(what): \(String(describing: d.badShares[1]))")
        }
    }

    /// The one-pass verifier: damage in any section of one share (its copy of the
    /// crypttext hash tree too, which a decoder never needs) names that share; a bad second
    /// copy of a share number is named too; the ciphertext is rebuilt (from parity shares
    /// when the data shares are missing) and checked; with fewer than k good shares it
    /// cannot be rebuilt.
    func testFileVerifierChecksEveryShareInOnePass() throws {
        let (cap, shares, _) = try sampleFile()
        let layout = try ShareLayout(parsing: Array(shares[0].prefix(0x44)))
        let verifier = CHKFileVerifier(verifier: cap.verifier)
        func readers(_ s: [[UInt8]], _ numbers: [Int]) -> [ShareReader] { numbers.map { MemoryShareReader(shareNumber: $0, bytes: s[$0]) } }
        var clean = verifier.verify(readers(shares, Array(0..<6)))
        XCTAssertTrue(clean.bad.isEmpty, "\(clean.bad.map(\.failure))")
        XCTAssertEqual(clean.ciphertextMatches, true)
        clean = verifier.verify(readers(shares, [3, 4, 5]))
        XCTAssertEqual(clean.ciphertextMatches, true, "rebuilt from parity shares alone")
        for at in [5, Int(layout.dataOffset) + 10, Int(layout.plaintextHashTreeOffset) - 1, Int(layout.crypttextHashTreeOffset) + 40,
                   Int(layout.blockHashesOffset) + Int(layout.segmentTreeSize) / 2 + 20, Int(layout.shareHashesOffset) + 7,
                   Int(layout.uriExtensionOffset) + 20] {
            var bad = shares
            bad[1][at] ^= 0x55
            var copy = shares[2]
            copy[Int(layout.dataOffset) + 3] ^= 1
            let r = verifier.verify(readers(bad, Array(0..<6)) + [MemoryShareReader(shareNumber: 2, bytes: copy)])
            XCTAssertEqual(r.bad.map(\.reader.shareNumber).sorted(), [1, 2], "byte \(at): \(r.bad.map(\.failure))")
            XCTAssertTrue(r.bad.allSatisfy { $0.failure.isCorrupt }, "\(r.bad.map(\.failure))")
            XCTAssertEqual(r.ciphertextMatches, true)
        }
        let few = verifier.verify(readers(shares, [0, 4]))
        XCTAssertNil(few.ciphertextMatches, "2 shares of a 3-of-6 file")
        XCTAssertTrue(few.bad.isEmpty)
    }

    func testTooFewGoodSharesFailsNamingThem() throws {
        let (cap, shares, _) = try sampleFile()
        var bad = shares
        bad[0][Int(0x24) + 3] ^= 1   // a block of share 0
        XCTAssertThrowsError(try decodeInMemory(cap, [(0, bad[0]), (1, shares[1]), (2, shares[2])])) { e in
            let m = "\(e)"
            XCTAssertTrue(m.contains("need 3, have 2"), m)
            XCTAssertTrue(m.contains("share 0: block 0 does not match its hash"), m)
            // Typed: which share, which part, which class.
            guard case let .notEnoughShares(needed, usable, failures)? = e as? ImmutableError else {
                return XCTFail("not a notEnoughShares error: \(e)")
            }
            XCTAssertEqual([needed, usable], [3, 2])
            guard case let .corrupt(part, _)? = failures[0] else { return XCTFail("share 0 not corrupt: \(failures)") }
            XCTAssertEqual(part, .block(segment: 0))
            XCTAssertEqual(e.errorClass, .corrupt, "lost to damage alone")
        }
        XCTAssertThrowsError(try decodeInMemory(cap, [(0, shares[0]), (1, shares[1])])) { e in
            XCTAssertTrue("\(e)".contains("need 3, have 2"), "\(e)")
            XCTAssertEqual(e.errorClass, .unavailable, "shares missing, none damaged")
        }
        XCTAssertThrowsError(try decodeInMemory(cap, [])) { e in XCTAssertTrue("\(e)".contains("need 3, have 0")) }
    }

    func testTruncatedShares() throws {
        let (cap, shares, data) = try sampleFile()
        for cut in [0, 3, 40, shares[2].count / 2, shares[2].count - 1] {
            var s = shares
            s[2] = Array(s[2].prefix(cut))
            let (plain, d) = try decodeInMemory(cap, (0..<6).map { ($0, s[$0]) })
            XCTAssertEqual(plain, data)
            XCTAssertNotNil(d.badShares[2], "share cut to \(cut) bytes must be set aside")
        }
    }

    func testWrongCapability() throws {
        let (cap, shares, _) = try sampleFile()
        let all = (0..<6).map { ($0, shares[$0]) }
        // Another file's UEB hash: no share matches.
        var h = cap.uebHash
        h[0] ^= 1
        let wrong = CHKCapability(key: cap.key, uebHash: h, needed: 3, total: 6, size: cap.size)
        XCTAssertThrowsError(try decodeInMemory(wrong, all)) { e in
            XCTAssertTrue("\(e)".contains("does not match the capability"), "\(e)")
        }
        // Right hash, wrong size or k in the capability.
        let lying = CHKCapability(key: cap.key, uebHash: cap.uebHash, needed: 3, total: 6, size: cap.size + 1)
        XCTAssertThrowsError(try decodeInMemory(lying, all)) { e in
            XCTAssertTrue("\(e)".contains("the capability says"), "\(e)")
            guard case .capabilityMismatch? = e as? ImmutableError else { return XCTFail("\(e)") }
        }
        // Wrong key: blocks verify but the plaintext would be garbage. The ciphertext is
        // still authentic, so this decodes to different bytes rather than failing: what
        // Tahoe does too (the key is not checked against the storage index here).
        var k2 = cap.key
        k2[0] ^= 1
        let other = CHKCapability(key: k2, uebHash: cap.uebHash, needed: 3, total: 6, size: cap.size)
        XCTAssertNotEqual(try decodeInMemory(other, all).0, try decodeInMemory(cap, all).0)
    }

    func testDuplicateAndOutOfRangeShareNumbers() throws {
        let (cap, shares, data) = try sampleFile()
        // Share 0 offered twice, first copy corrupt: the second copy serves.
        var bad0 = shares[0]
        bad0[100] ^= 1
        let (plain, _) = try decodeInMemory(cap, [(0, bad0), (0, shares[0]), (1, shares[1]), (2, shares[2])])
        XCTAssertEqual(plain, data)
        // A share labelled with a number it is not: its chain does not verify.
        let (p2, d2) = try decodeInMemory(cap, [(0, shares[3]), (1, shares[1]), (2, shares[2]), (4, shares[4]), (5, shares[5])])
        XCTAssertEqual(p2, data)
        XCTAssertNotNil(d2.badShares[0])
        // A share number beyond n is refused, by name.
        XCTAssertThrowsError(try decodeInMemory(cap, [(9, shares[0]), (1, shares[1]), (2, shares[2])])) { e in
            XCTAssertTrue("\(e)".contains("share 9: share number 9 is outside 0..<6"), "\(e)")
        }
    }

    func testBadParameters() {
        XCTAssertThrowsError(try CHKEncoder(parameters: EncodingParameters(needed: 5, happy: 3, total: 4)))
        XCTAssertThrowsError(try CHKEncoder(parameters: EncodingParameters(needed: 0, happy: 1, total: 4)))
        XCTAssertThrowsError(try CHKEncoder(parameters: EncodingParameters(needed: 3, happy: 1, total: 257)))
        XCTAssertThrowsError(try CHKEncoder(parameters: EncodingParameters(needed: 3, happy: 11, total: 10)))
        XCTAssertThrowsError(try CHKEncoder(parameters: EncodingParameters(needed: 3, happy: 7, total: 10, maxSegmentSize: 0)))
    }

    func testFileSourcesAndSinks() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("grid-chk-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = pseudoRandom(50_000, seed: 11)
        let file = dir.appendingPathComponent("in").path
        FileManager.default.createFile(atPath: file, contents: Data(data))
        let enc = try CHKEncoder(parameters: EncodingParameters(needed: 2, happy: 3, total: 4, maxSegmentSize: 10_000))
        let shareDir = dir.appendingPathComponent("shares").path
        let r = try enc.encode(source: try FileSource(path: file), convergenceSecret: secret,
                               sink: try DirectoryShareSink(directory: shareDir, shares: 4))
        // Identical to the in-memory encoding.
        let (mem, shares) = try encodeInMemory(data, secret: secret, k: 2, n: 4, segment: 10_000)
        XCTAssertEqual(r, mem)
        for i in 0..<4 { XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: "\(shareDir)/\(i)"))), shares[i]) }
        XCTAssertThrowsError(try FileSource(path: dir.appendingPathComponent("missing").path)) { e in
            XCTAssertTrue("\(e)".contains("No such file"), "\(e)")
        }
        XCTAssertThrowsError(try FileSource(path: dir.path)) { e in XCTAssertTrue("\(e)".contains("directory")) }
    }
}
