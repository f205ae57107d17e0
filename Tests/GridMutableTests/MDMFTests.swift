import Foundation
import GridCrypto
import GridFormat
import GridImmutable
import GridSystem
import GridTestSupport
import XCTest

@testable import GridMutable

func int(_ v: Any?) -> Int { (v as? Int) ?? Int(v as! String)! }

final class MDMFTests: XCTestCase {
    /// mdmf.json: three real MDMF files (1000 bytes; empty; 300 KiB created, overwritten,
    /// then updated at an offset) with Tahoe's keys. With Tahoe's per-segment salts and
    /// (randomized) signature given, every share of every version equals Tahoe's: byte for
    /// byte where the vectors hold the bytes, by SHA-256 where they hold only the hash.
    func testReproducesTahoeMDMFShares() throws {
        let doc = try Fixtures.json("mdmf.json") as! [String: Any]
        var compared = 0, checkedVersions = 0
        for file in doc["files"] as! [[String: Any]] {
            let key = try RSAPrivateKey(der: unhex(file["private_key_der_pkcs8_hex"] as! String))
            var previous: [UInt8] = []
            for version in file["versions"] as! [[String: Any]] {
                var content: [UInt8]
                if let offset = version["update_offset"] {
                    let o = int(offset), patch = vectorContent(version["update_seed"] as! String, int(version["update_len"]))
                    content = Array(previous.prefix(o)) + patch
                    if previous.count > o + patch.count { content += previous[(o + patch.count)...] }
                } else {
                    content = vectorContent(version["content_seed"] as! String, int(version["content_len"]))
                }
                previous = content
                let salts = (version["salts_hex"] as? [String] ?? []).map(unhex)
                let signature = unhex(version["signature_hex"] as! String)
                let (cap, shares) = try MDMFEncoder.encode(content, privateKey: key, sequenceNumber: UInt64(int(version["seqnum"])),
                                                           needed: int(version["k"]), total: int(version["N"]), salts: salts,
                                                           sign: { _ in signature })
                XCTAssertEqual(cap.string, file["writecap"] as! String)
                XCTAssertEqual(shares[0].rootHash, unhex(version["root_hash_hex"] as! String), "\(file["id"]!) seq \(version["seqnum"]!)")
                XCTAssertEqual(shares[0].signedPrefix, unhex(version["signed_header_hex"] as! String))
                for s in version["shares"] as! [[String: Any]] {
                    let n = int(s["shnum"])
                    let ours = shares[n].serialized()
                    if let hex = s["share_hex"] as? String {
                        XCTAssertEqual(ours, unhex(hex), "\(file["id"]!) seq \(version["seqnum"]!) share \(n)")
                    } else {
                        XCTAssertEqual(hex(SHA256.hash(ours)), s["share_sha256"] as! String,
                                       "\(file["id"]!) seq \(version["seqnum"]!) share \(n)")
                    }
                    compared += 1
                }
                XCTAssertTrue(key.publicKey.isValidSignature(signature, for: shares[0].signedPrefix))
                // The same shares (Tahoe's, byte for byte) parse back and read back, with the
                // read-only capability too, and from parity shares alone.
                let numbered = shares.enumerated().map { (number: $0.offset, bytes: $0.element.serialized()) }
                for s in numbered { XCTAssertEqual(try MDMFShare(parsing: s.bytes), shares[s.number]) }
                let ro = try MutableCapability(parsing: file["readcap"] as! String)
                XCTAssertEqual(try MDMFDecoder(capability: ro).decode(numbered).data, content)
                XCTAssertEqual(try MDMFDecoder(capability: cap).decode(Array(numbered.suffix(3))).data, content)
                if let tahoeBytes = (version["shares"] as! [[String: Any]]).first?["share_hex"] as? String {
                    XCTAssertNoThrow(try MDMFDecoder(capability: ro).check(unhex(tahoeBytes), number: int((version["shares"] as! [[String: Any]]).first!["shnum"])))
                }
                checkedVersions += 1
            }
        }
        XCTAssertEqual(compared, 50)
        XCTAssertEqual(checkedVersions, 5)
    }

    /// A damaged block, salt or signature sets the share aside and names what failed; the
    /// newest version with k good shares wins; truncations are refused cleanly.
    func testMDMFDamageAndVersions() throws {
        let key = try RSAPrivateKey(der: unhex(((try Fixtures.json("mdmf.json") as! [String: Any])["files"] as! [[String: Any]])[0]["private_key_der_pkcs8_hex"] as! String))
        let data1 = vectorContent("one", 300_000), data2 = vectorContent("two", 200_000)
        let (cap, v1) = try MDMFEncoder.encode(data1, privateKey: key, sequenceNumber: 1, needed: 3, total: 6)
        let (_, v2) = try MDMFEncoder.encode(data2, privateKey: key, sequenceNumber: 2, needed: 3, total: 6)
        let d = try MDMFDecoder(capability: cap)
        func numbered(_ s: [MDMFShare]) -> [(number: Int, bytes: [UInt8])] { s.enumerated().map { ($0.offset, $0.element.serialized()) } }
        XCTAssertEqual(try d.decode(numbered(v1) + numbered(v2)).sequenceNumber, 2)
        XCTAssertEqual(try d.decode(numbered(v1) + Array(numbered(v2).prefix(2))).data, data1, "2 new shares: the old version")
        var bad = numbered(v2)
        let dataAt = MDMFShare.shareDataOffset
        let blockSize = 131073 / 3
        bad[0].bytes[dataAt + 16 + blockSize + 16 + 7] ^= 1   // segment 1's block
        bad[1].bytes[dataAt + 3] ^= 1                          // segment 0's salt
        bad[2].bytes[20] ^= 1                                  // the root hash: signature fails
        XCTAssertThrowsError(try d.check(bad[0].bytes, number: 0)) { XCTAssertTrue("\($0)".contains("block 1"), "\($0)") }
        XCTAssertThrowsError(try d.check(bad[1].bytes, number: 1)) { XCTAssertTrue("\($0)".contains("block 0"), "\($0)") }
        XCTAssertThrowsError(try d.check(bad[2].bytes, number: 2)) { XCTAssertTrue("\($0)".contains("signature"), "\($0)") }
        XCTAssertEqual(try d.decode(bad).data, data2, "3 good shares left")
        XCTAssertThrowsError(try d.decode(Array(bad.prefix(5)))) { XCTAssertTrue("\($0)".contains("need 3"), "\($0)") }
        let whole = v2[3].serialized()
        for cut in [0, 58, 122, 123, 2000, whole.count - 1] {
            XCTAssertThrowsError(try MDMFShare(parsing: Array(whole.prefix(cut))), "cut at \(cut)")
        }
        XCTAssertThrowsError(try MDMFDecoder(capability: cap.verifier).decode(numbered(v2))) { XCTAssertEqual($0.errorClass, .usage) }
    }
}
