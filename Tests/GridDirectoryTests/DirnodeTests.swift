import Foundation
import GridCrypto
import GridFormat
import GridImmutable
import GridSystem
import GridTestSupport
import XCTest

@testable import GridDirectory

/// dirnode.json: Tahoe 1.20's own packing (pack_children) and real directories made
/// through its web API, reproduced byte for byte and read back as Tahoe reads them.
final class DirnodeVectorTests: XCTestCase {
    var doc: [String: Any] { try! Fixtures.json("dirnode.json") as! [String: Any] }

    /// Compares what we unpacked with Tahoe's `_unpack_contents` result.
    func assertUnpacked(_ contents: DirectoryContents, _ expected: [[String: Any]], _ label: String,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let got = try contents.entries()
        XCTAssertEqual(got.map(\.name), expected.map { $0["name"] as! String }, label, file: file, line: line)
        for (e, x) in zip(got, expected) {
            let name = "\(label) '\(e.name)'"
            XCTAssertEqual(Array(e.name.utf8), unhex(x["name_utf8_hex"] as! String), name, file: file, line: line)
            XCTAssertEqual(e.capability.writeString, x["rw_uri"] as? String, name, file: file, line: line)
            XCTAssertEqual(e.capability.readString, x["ro_uri"] as? String, name, file: file, line: line)
            XCTAssertEqual(e.capability.isMutable, x["is_mutable"] as! Bool, name, file: file, line: line)
            XCTAssertEqual(e.capability.isReadOnly, x["is_readonly"] as! Bool, name, file: file, line: line)
            let kind: String
            switch e.capability {
            case .immutable(.lit): kind = "LiteralFileNode"
            case .immutable: kind = "ImmutableFileNode"
            case .mutable: kind = "MutableFileNode"
            case .directory: kind = "DirectoryNode"
            case .unknown: kind = "UnknownNode"
            }
            XCTAssertEqual(kind, x["node_class"] as! String, name, file: file, line: line)
            // Metadata equal as JSON values (Foundation's parse of the vector vs ours).
            let theirs = try JSONSerialization.data(withJSONObject: x["metadata"]!, options: [.sortedKeys])
            let ours = try JSONEncoder.sorted.encode(e.metadata)
            XCTAssertEqual(try JSONSerialization.jsonObject(with: ours) as? NSDictionary,
                           try JSONSerialization.jsonObject(with: theirs) as? NSDictionary, name, file: file, line: line)
        }
    }

    func testPackCasesByteForByte() throws {
        for c in doc["pack_cases"] as! [[String: Any]] {
            let id = c["id"] as! String
            let mutable = !(c["deep_immutable"] as! Bool) && c["writekey_hex"] is String
            let writekey = (c["writekey_hex"] as? String).map(unhex)
            let entries = c["entries"] as! [[String: Any]]
            let metadataText = Dictionary(uniqueKeysWithValues: entries.map { ($0["name"] as! String, $0["metadata_json"] as! String) })
            var contents = DirectoryContents(mutable: mutable, writekey: writekey)
            for child in c["children_input"] as! [[String: Any]] {
                let cap = try AnyCapability(parsing: (child["rw_uri"] as? String) ?? (child["ro_uri"] as! String))
                let nfc = child["name_nfc"] as! String
                let metadata = try JSONValue.parse(metadataText[nfc]!)
                XCTAssertEqual(metadata.pythonText, metadataText[nfc]!, "\(id): json.dumps text of '\(nfc)'")
                // Given as input (possibly NFD): stored as NFC.
                contents.set(DirectoryEntry(name: child["name_input"] as! String, capability: cap, metadata: metadata))
            }
            let packed = try contents.pack()
            XCTAssertEqual(packed.count, c["packed_len"] as! Int, id)
            XCTAssertEqual(hex(packed), c["packed_hex"] as! String, id)
            // Entry by entry, with the rwcap pieces.
            var at = 0
            for e in entries {
                let (s, end, next) = try Netstrings.next(packed, at: at, what: "entry")
                XCTAssertEqual(hex(packed[s..<end]), e["entry_hex"] as! String, "\(id) \(e["name"]!)")
                at = next
                if let salt = e["rwcap_salt_hex"] as? String, let writekey {
                    let rw = Array((e["rw_uri_plaintext"] as! String).utf8)
                    let data = Dirnode.encryptWriteCap(rw, writekey: writekey)
                    XCTAssertEqual(hex(data.prefix(16)), salt)
                    XCTAssertEqual(hex(data.suffix(32)), e["rwcap_mac_hex"] as! String)
                    XCTAssertEqual(hex(data.dropFirst(16).dropLast(32)), e["rwcap_crypttext_hex"] as! String)
                    XCTAssertEqual(try Dirnode.decryptWriteCap(data, writekey: writekey), rw)
                }
            }
            XCTAssertEqual(at, packed.count)
            // Read back as Tahoe reads it, by the write key and (mutable) read-only.
            let bytes = unhex(c["packed_hex"] as! String)
            try assertUnpacked(try DirectoryContents.unpack(bytes, mutable: mutable, writekey: writekey), c["unpacked"] as! [[String: Any]], id)
            if let ro = c["unpacked_readonly"] as? [[String: Any]] {
                try assertUnpacked(try DirectoryContents.unpack(bytes, mutable: true, writekey: nil), ro, "\(id) read-only")
            }
            // Unpacked and packed again untouched: the very same bytes.
            XCTAssertEqual(try DirectoryContents.unpack(bytes, mutable: mutable, writekey: writekey).pack(), bytes, id)
        }
    }

    func testImmutableDirectories() throws {
        let secret = unhex(doc["convergence_secret_hex"] as! String)
        for d in doc["immutable_directories"] as! [[String: Any]] {
            let id = d["id"] as! String
            let packed = unhex(d["packed_hex"] as! String)
            let contents = try DirectoryContents.unpack(packed, mutable: false, writekey: nil)
            try assertUnpacked(contents, d["unpacked"] as! [[String: Any]], id)
            // Made again from its entries (decoded, so packed anew, not reused).
            var again = DirectoryContents(mutable: false, writekey: nil)
            for e in try contents.entries() { again.set(e) }
            XCTAssertEqual(try again.pack(), packed, id)
            let cap = try DirectoryCapability(parsing: d["dircap"] as! String)
            XCTAssertEqual(cap.string, d["dircap"] as! String)
            XCTAssertEqual(cap.fileCapability.string, d["filecap"] as! String)
            XCTAssertTrue(cap.isReadOnly)
            XCTAssertFalse(cap.isMutable)
            if d["type"] as! String == "DIR2-LIT" {
                XCTAssertEqual(cap.string, "URI:DIR2-LIT:" + Base32.encode(packed))
                XCTAssertNil(cap.verifier)
                continue
            }
            // DIR2-CHK: an ordinary CHK upload of the packed bytes with the client's secret.
            let k = d["k"] as! Int, n = d["n"] as! Int
            let enc = try CHKEncoder(parameters: EncodingParameters(needed: k, happy: 7, total: n, maxSegmentSize: d["max_segment_size"] as! Int))
            let sink = MemoryShareSink(shares: n)
            let r = try enc.encode(source: MemorySource(packed), convergenceSecret: secret, sink: sink)
            XCTAssertEqual(DirectoryCapability(.chk({ if case let .chk(c) = r.capability { return c }; fatalError() }())).string, d["dircap"] as! String)
            XCTAssertEqual(cap.verifier?.string, d["verifycap"] as? String)
            XCTAssertEqual(Base32.encode(cap.storageIndex!), d["storage_index_b32"] as! String)
            for s in d["shares"] as! [[String: Any]] {
                XCTAssertEqual(sha256hex(sink.shares[s["shnum"] as! Int]), s["share_data_sha256"] as! String, "\(id) share \(s["shnum"]!)")
            }
        }
    }

    func testMutableDirectories() throws {
        for d in doc["mutable_directories"] as! [[String: Any]] {
            let id = d["id"] as! String
            let cap = try DirectoryCapability(parsing: d["dircap"] as! String)
            XCTAssertEqual(cap.string, d["dircap"] as! String)
            XCTAssertEqual(cap.readOnly?.string, d["dircap_ro"] as? String)
            XCTAssertEqual(cap.verifier?.string, d["dircap_verify"] as? String)
            XCTAssertEqual(cap.fileCapability.string, d["filecap"] as! String)
            XCTAssertEqual(cap.fileCapability.readString, d["filecap_ro"] as? String)
            XCTAssertEqual(cap.writekey.map(hex), d["writekey_hex"] as? String)
            XCTAssertEqual(try DirectoryCapability(parsing: d["dircap_ro"] as! String).string, d["dircap_ro"] as! String)
            XCTAssertEqual(try DirectoryCapability(parsing: d["dircap_verify"] as! String).isVerifyOnly, true)
            let plaintext = unhex(d["plaintext_hex"] as! String)
            XCTAssertEqual(plaintext.count, d["plaintext_len"] as! Int)
            let contents = try DirectoryContents.unpack(plaintext, mutable: true, writekey: cap.writekey)
            try assertUnpacked(contents, d["unpacked"] as! [[String: Any]], id)
            let ro = try DirectoryContents.unpack(plaintext, mutable: true, writekey: nil)
            try assertUnpacked(ro, d["unpacked_readonly"] as! [[String: Any]], "\(id) read-only")
            // Decoded and packed anew: Tahoe's bytes (metadata floats, NFC names, salts, macs).
            var again = DirectoryContents(mutable: true, writekey: cap.writekey)
            for e in try contents.entries() { again.set(e) }
            XCTAssertEqual(hex(try again.pack()), hex(plaintext), id)
            // A read-only view can list but not pack a new entry.
            var roChange = ro
            roChange.set(DirectoryEntry(name: "x", capability: try AnyCapability(parsing: "URI:LIT:nfxgq")))
            XCTAssertThrowsError(try roChange.pack())
        }
    }
}

final class CapabilityFamilyTests: XCTestCase {
    func testEveryKindParsesAndPrints() throws {
        let doc = try Fixtures.json("dirnode.json") as! [String: Any]
        var caps: [String] = []
        for d in doc["mutable_directories"] as! [[String: Any]] {
            caps += ["dircap", "dircap_ro", "dircap_verify", "filecap", "filecap_ro"].map { d[$0] as! String }
        }
        for d in doc["immutable_directories"] as! [[String: Any]] { caps.append(d["dircap"] as! String); if let v = d["verifycap"] as? String { caps.append(v) } }
        for f in doc["child_files"] as! [[String: Any]] { caps.append(f["cap"] as! String) }
        var kinds = Set<String>()
        for s in caps {
            let c = try AnyCapability(parsing: s)
            XCTAssertEqual(c.string, s)
            XCTAssertFalse(c.isUnknown)
            kinds.insert(c.kindName)
            if let ro = c.readString { XCTAssertEqual(try AnyCapability(parsing: ro).readString, ro) }
        }
        for k in ["URI:DIR2", "URI:DIR2-RO", "URI:DIR2-Verifier", "URI:DIR2-MDMF", "URI:DIR2-MDMF-RO", "URI:DIR2-MDMF-Verifier",
                  "URI:DIR2-CHK", "URI:DIR2-CHK-Verifier", "URI:DIR2-LIT"] {
            XCTAssertTrue(kinds.contains(k), k)
        }
        // ro. and imm. prefixes: accepted when the promise holds.
        let sdmf = (doc["mutable_directories"] as! [[String: Any]])[0]
        XCTAssertEqual(try AnyCapability(parsing: "ro." + (sdmf["dircap_ro"] as! String)).string, sdmf["dircap_ro"] as! String)
        XCTAssertThrowsError(try AnyCapability(parsing: "ro." + (sdmf["dircap"] as! String)))
        XCTAssertThrowsError(try AnyCapability(parsing: "imm." + (sdmf["dircap_ro"] as! String)))
        let chk = (doc["child_files"] as! [[String: Any]])[0]["cap"] as! String
        XCTAssertEqual(try AnyCapability(parsing: "imm." + chk).string, chk)
        // Unknown caps: an error where a person typed one, kept as they are in a directory.
        XCTAssertThrowsError(try AnyCapability(parsing: "URI:FUTURE:abc"))
        let u = AnyCapability.fromEntry(write: "x-future:rw", read: "x-future:ro", deepImmutable: false)
        XCTAssertEqual(u, .unknown(UnknownCapability(writeString: "x-future:rw", readString: "ro.x-future:ro")))
        let imm = AnyCapability.fromEntry(write: nil, read: "x-future:ro", deepImmutable: true)
        XCTAssertEqual(imm.readString, "imm.x-future:ro")
        // A mutable child inside an immutable directory is not a usable mutable node.
        let inImm = AnyCapability.fromEntry(write: nil, read: sdmf["dircap_ro"] as? String, deepImmutable: true)
        XCTAssertTrue(inImm.isUnknown)
        // Bad fields in a known kind.
        XCTAssertThrowsError(try AnyCapability(parsing: "URI:DIR2:abc:def"))
        XCTAssertThrowsError(try AnyCapability(parsing: "URI:DIR2-LIT:!!"))
        XCTAssertEqual(try AnyCapability(parsing: "URI:DIR2-LIT:").string, "URI:DIR2-LIT:")
    }
}

final class PythonJSONTests: XCTestCase {
    func testReprOfFloats() {
        let cases: [(Double, String)] = [
            (1700000000.123456, "1700000000.123456"), (1.0, "1.0"), (0.5, "0.5"), (1600000000.25, "1600000000.25"),
            (1e16, "1e+16"), (1e15, "1000000000000000.0"), (123456789012345678, "1.2345678901234568e+17"),
            (0.0001, "0.0001"), (0.00001, "1e-05"), (1.5e-7, "1.5e-07"), (-2.5, "-2.5"), (0, "0.0"), (1e100, "1e+100"),
            (0.1, "0.1"), (1/3, "0.3333333333333333"), (1234.5e-10, "1.2345e-07"), (9007199254740993, "9007199254740992.0"),
        ]
        for (d, s) in cases { XCTAssertEqual(JSONValue.pythonRepr(d), s, "\(d)") }
    }

    func testDumpsText() throws {
        let v = try JSONValue.parse(#"{"b": [1, 2.50, "x\"y\\z\n"], "a": {"é": "😀", "ctl": "\u0001"}, "t": true, "n": null}"#)
        XCTAssertEqual(v.pythonText, #"{"b": [1, 2.5, "x\"y\\z\n"], "a": {"\u00e9": "\ud83d\ude00", "ctl": "\u0001"}, "t": true, "n": null}"#)
        for bad in ["{", "[1,]", "{\"a\" 1}", "01", "\"\u{1}\"", "1 2", "{\"a\":1}x", String(repeating: "[", count: 100) + String(repeating: "]", count: 100)] {
            XCTAssertThrowsError(try JSONValue.parse(bad), bad)
        }
    }

    /// Damaged packed directories fail cleanly (a corrupt error), never crash.
    func testHostileDirectoryBytes() throws {
        let doc = try Fixtures.json("dirnode.json") as! [String: Any]
        let c = (doc["pack_cases"] as! [[String: Any]])[0]
        let packed = unhex(c["packed_hex"] as! String)
        let writekey = unhex(c["writekey_hex"] as! String)
        var rng = SystemRandomNumberGenerator()
        var failures = 0
        for i in 0..<3000 {
            var b = packed
            switch i % 4 {
            case 0: b[Int.random(in: 0..<b.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            case 1: b = Array(b.prefix(Int.random(in: 0..<b.count, using: &rng)))
            case 2: b.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0..<b.count, using: &rng))
            default: b = (0..<Int.random(in: 0..<64, using: &rng)).map { _ in UInt8.random(in: 0x2c...0x3a, using: &rng) }
            }
            do {
                let d = try DirectoryContents.unpack(b, mutable: true, writekey: writekey)
                _ = try d.entries()
                _ = try d.pack()
            } catch {
                XCTAssertEqual(error.errorClass, .corrupt, "\(error)")
                failures += 1
            }
        }
        XCTAssertGreaterThan(failures, 500)
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder { let e = JSONEncoder(); e.outputFormatting = [.sortedKeys]; return e }
}
