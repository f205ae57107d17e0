import Foundation
import GridCrypto
import GridFormat
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
        var compared = 0
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
                        XCTAssertEqual(SHA256.hash(ours).map { String(format: "%02x", $0) }.joined(), s["share_sha256"] as! String,
                                       "\(file["id"]!) seq \(version["seqnum"]!) share \(n)")
                    }
                    compared += 1
                }
                XCTAssertTrue(key.publicKey.isValidSignature(signature, for: shares[0].signedPrefix))
            }
        }
        XCTAssertEqual(compared, 50)
    }
}
