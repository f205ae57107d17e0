import Foundation
import GridCrypto
import GridFormat
import GridImmutable
import GridSystem
import GridTestSupport
import XCTest

@testable import GridMutable

final class SDMFTests: XCTestCase {
    /// sdmf.json: a real SDMF file (created, then overwritten) with Tahoe's key. With the IV
    /// and the (randomized) signature taken from Tahoe's shares, every one of our 20 shares
    /// equals Tahoe's byte for byte, and parses back to the same fields.
    func testReproducesTahoeSDMFSharesByteForByte() throws {
        let v = try Fixtures.json("sdmf.json") as! [String: Any]
        let key = try RSAPrivateKey(der: unhex(v["private_key_der_pkcs8_hex"] as! String))
        var compared = 0
        for version in v["versions"] as! [[String: Any]] {
            let data = vectorContent(version["content_seed"] as! String, version["content_len"] as! Int)
            let f = version["signed_prefix_fields"] as! [String: Any]
            let tahoe = (version["shares"] as! [[String: Any]]).map { (($0["shnum"] as? Int) ?? Int($0["shnum"] as! String)!, unhex($0["share_data_hex"] as! String)) }
            let signature = try SDMFShare(parsing: tahoe[0].1).signature
            let (cap, shares) = try SDMFEncoder.encode(data, privateKey: key, sequenceNumber: UInt64(f["seqnum"] as! Int),
                                                       needed: f["k"] as! Int, total: f["N"] as! Int,
                                                       iv: unhex(f["IV_salt_hex"] as! String), sign: { _ in signature })
            XCTAssertEqual(cap.string, v["writecap"] as! String)
            XCTAssertEqual(shares[0].rootHash, unhex(f["root_hash_hex"] as! String))
            for (n, bytes) in tahoe {
                XCTAssertEqual(shares[n].serialized(), bytes, "version \(f["seqnum"]!), share \(n)")
                XCTAssertEqual(try SDMFShare(parsing: bytes), shares[n])
                compared += 1
            }
            XCTAssertTrue(key.publicKey.isValidSignature(signature, for: shares[0].signedPrefix))
        }
        XCTAssertEqual(compared, 20)
    }

    /// Tahoe's shares read back with the write and the read-only capability; the newest
    /// version with k good shares wins; damaged shares are set aside by class.
    func testDecodesTahoeSDMFVersions() throws {
        let v = try Fixtures.json("sdmf.json") as! [String: Any]
        let versions = (v["versions"] as! [[String: Any]]).map { version in
            (vectorContent(version["content_seed"] as! String, version["content_len"] as! Int),
             (version["shares"] as! [[String: Any]]).map { (number: ($0["shnum"] as? Int) ?? Int($0["shnum"] as! String)!, bytes: unhex($0["share_data_hex"] as! String)) })
        }
        let write = try MutableCapability(parsing: v["writecap"] as! String)
        let read = try MutableCapability(parsing: v["readcap"] as! String)
        for cap in [write, read] {
            let d = try SDMFDecoder(capability: cap)
            var got = try d.decode(versions[1].1)
            XCTAssertEqual(got.data, versions[1].0)
            XCTAssertEqual(got.sequenceNumber, 2)
            // Old shares beside 3 new ones: the new version; beside only 2: the old one.
            got = try d.decode(versions[0].1 + versions[1].1.prefix(3))
            XCTAssertEqual(got.sequenceNumber, 2)
            got = try d.decode(versions[0].1 + versions[1].1.suffix(2))
            XCTAssertEqual(got.data, versions[0].0)
            XCTAssertEqual(got.sequenceNumber, 1)
            // Parity shares alone rebuild it.
            XCTAssertEqual(try d.decode(Array(versions[1].1.suffix(3))).data, versions[1].0)
        }
        let d = try SDMFDecoder(capability: read)
        var shares = versions[1].1
        let layout = try SDMFShare(parsing: shares[0].bytes)
        let dataAt = shares[0].bytes.count - layout.encryptedPrivateKey.count - layout.shareData.count
        shares[0].bytes[dataAt + 5] ^= 1             // a block byte
        shares[1].bytes[20] ^= 1                      // the root hash: the signature fails
        shares[2].bytes[SDMFShare.headerLength] ^= 1  // the verification key
        XCTAssertThrowsError(try d.check(shares[0].bytes, number: 0)) { XCTAssertEqual(($0 as? ShareFailure)?.isCorrupt, true) }
        XCTAssertThrowsError(try d.check(shares[1].bytes, number: 1)) { XCTAssertTrue("\($0)".contains("signature"), "\($0)") }
        XCTAssertThrowsError(try d.check(shares[2].bytes, number: 2)) { XCTAssertTrue("\($0)".contains("fingerprint"), "\($0)") }
        XCTAssertThrowsError(try d.check(shares[3].bytes, number: 4)) { XCTAssertTrue("\($0)".contains("share hash chain"), "\($0)") }
        XCTAssertEqual(try d.decode(shares).data, versions[1].0, "7 good shares left")
        XCTAssertThrowsError(try d.decode(Array(shares.prefix(4)))) { XCTAssertTrue("\($0)".contains("need 3"), "\($0)") }
        XCTAssertThrowsError(try SDMFDecoder(capability: write.verifier).decode(versions[1].1)) { XCTAssertEqual($0.errorClass, .usage) }
    }

    /// A share's key and signature are checked against the capability; a good check is
    /// remembered (every share of a version carries the same key, signature and prefix),
    /// a bad one never is: a changed signature, prefix or key after a good check still fails.
    func testSignatureChecksRememberOnlySuccess() throws {
        let key = try RSAPrivateKey(der: unhex((try Fixtures.json("sdmf.json") as! [String: Any])["private_key_der_pkcs8_hex"] as! String))
        let (cap, shares) = try SDMFEncoder.encode(pseudoRandom(300, seed: 9), privateKey: key, sequenceNumber: 4, needed: 3, total: 5)
        let s = shares[1]
        func check(key k: [UInt8] = s.verificationKey, signature: [UInt8] = s.signature, prefix: [UInt8] = s.signedPrefix) throws {
            try MutableKeys.checkSigned(cap, number: 1, total: 5, verificationKey: k, signature: signature, signedPrefix: prefix)
        }
        for _ in 0..<2 { XCTAssertNoThrow(try check()) }
        var sig = s.signature
        sig[10] ^= 1
        var prefix = s.signedPrefix
        prefix[prefix.count - 1] ^= 1
        var k = s.verificationKey
        k[k.count - 3] ^= 1
        for _ in 0..<2 {
            XCTAssertThrowsError(try check(signature: sig)) { XCTAssertEqual($0.errorClass, .corrupt) }
            XCTAssertThrowsError(try check(prefix: prefix)) { XCTAssertEqual($0.errorClass, .corrupt) }
            XCTAssertThrowsError(try check(key: k)) { XCTAssertEqual($0.errorClass, .corrupt) }
        }
        XCTAssertNoThrow(try check())
    }

    /// Our own signature verifies; every truncation and a bad offset are refused cleanly.
    func testOwnSharesSignAndParseStrictly() throws {
        let key = try RSAPrivateKey(der: unhex((try Fixtures.json("sdmf.json") as! [String: Any])["private_key_der_pkcs8_hex"] as! String))
        let (_, shares) = try SDMFEncoder.encode(Array(repeating: 7, count: 100), privateKey: key, sequenceNumber: 1, needed: 3, total: 5)
        XCTAssertTrue(key.publicKey.isValidSignature(shares[2].signature, for: shares[2].signedPrefix))
        let bytes = shares[2].serialized()
        XCTAssertEqual(try SDMFShare(parsing: bytes), shares[2])
        for cut in [0, 50, 106, 107, bytes.count - 1] {
            XCTAssertThrowsError(try SDMFShare(parsing: Array(bytes.prefix(cut))), "cut at \(cut)")
        }
        var bad = bytes
        bad[82] = 0xff  // the share hash chain's offset, now far past the end
        XCTAssertThrowsError(try SDMFShare(parsing: bad)) { XCTAssertEqual($0.errorClass, .corrupt) }
        bad = bytes
        bad[0] = 1
        XCTAssertThrowsError(try SDMFShare(parsing: bad)) { XCTAssertEqual($0.errorClass, .incompatible) }
    }
}
