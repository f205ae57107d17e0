import Foundation
import GridCrypto
import GridSystem
import GridTestSupport
import XCTest

@testable import GridFormat

/// Mutable-file capabilities and their RSA keys, against Tahoe-LAFS 1.20.
final class MutableCapabilityTests: XCTestCase {
    /// Tahoe's 240 SDMF and MDMF interoperability vectors: each RSA key gives the
    /// capability Tahoe printed, and it parses back to itself.
    func testTahoeIntegrationVectors() throws {
        let doc = try Fixtures.json("tahoe-integration-ssk.json") as! [String: Any]
        let vectors = doc["vectors"] as! [[String: Any]]
        XCTAssertEqual(doc["entries"] as? Int, 240)
        XCTAssertEqual(vectors.count, 240)
        var formats: [String: Int] = [:]
        for v in vectors {
            let format = MutableFormat(rawValue: v["format"] as! String)!
            formats[format.rawValue, default: 0] += 1
            let key = try RSAPrivateKey(pem: v["key"] as! String)
            let cap = MutableCapability(format: format, privateKey: key)
            XCTAssertEqual(cap.string, v["expected"] as! String)
            XCTAssertEqual(try MutableCapability(parsing: cap.string), cap)
            for weaker in [cap.readOnly!, cap.verifier] {
                XCTAssertEqual(try MutableCapability(parsing: weaker.string), weaker)
                XCTAssertEqual(weaker.storageIndex, cap.storageIndex)
            }
        }
        XCTAssertEqual(formats, ["sdmf": 120, "mdmf": 120])
    }

    /// The real SDMF file of sdmf.json: the same key chain and capabilities, and our RSA-PSS
    /// (SHA-256, 32-byte salt) accepts Tahoe's signature of each version's signed prefix.
    func testSDMFReferenceKeysCapabilitiesAndSignatures() throws {
        let v = try Fixtures.json("sdmf.json") as! [String: Any]
        let key = try RSAPrivateKey(der: unhex(v["private_key_der_pkcs8_hex"] as! String))
        XCTAssertEqual(key.der, unhex(v["private_key_der_pkcs8_hex"] as! String), "PKCS#8 DER as Tahoe writes it")
        XCTAssertEqual(key.publicKey.der, unhex(v["public_key_der_spki_hex"] as! String))
        let cap = MutableCapability(format: .sdmf, privateKey: key)
        XCTAssertEqual(cap.key, unhex(v["writekey_hex"] as! String))
        XCTAssertEqual(cap.readkey, unhex(v["readkey_hex"] as! String))
        XCTAssertEqual(cap.fingerprint, unhex(v["pubkey_fingerprint_hex"] as! String))
        XCTAssertEqual(cap.storageIndex, unhex(v["storage_index_hex"] as! String))
        XCTAssertEqual(cap.string, v["writecap"] as! String)
        XCTAssertEqual(cap.readOnly?.string, v["readcap"] as! String)
        XCTAssertEqual(cap.verifier.string, v["verifycap"] as! String)
        var checked = 0
        for version in v["versions"] as! [[String: Any]] {
            for share in version["shares"] as! [[String: Any]] {
                let data = unhex(share["share_data_hex"] as! String)
                let signature = unhex(share["signature_hex"] as! String)
                // SDMF's signed prefix: version, seqnum, root hash, IV, k, N, segsize, datalen (75 bytes).
                XCTAssertTrue(key.publicKey.isValidSignature(signature, for: Array(data.prefix(75))))
                XCTAssertFalse(key.publicKey.isValidSignature(signature, for: Array(data.prefix(74)) + [data[74] ^ 1]))
                checked += 1
            }
        }
        XCTAssertEqual(checked, 20)
        // Our own signatures verify, and a new key is 2048 bits of PKCS#8 that loads back.
        let sig = try key.sign(Array("grid".utf8))
        XCTAssertEqual(sig.count, 256)
        XCTAssertTrue(key.publicKey.isValidSignature(sig, for: Array("grid".utf8)))
        let fresh = try RSAPrivateKey(bits: 2048)
        XCTAssertEqual(try RSAPrivateKey(der: fresh.der).der, fresh.der)
        XCTAssertFalse(fresh.publicKey.isValidSignature(sig, for: Array("grid".utf8)))
    }

    func testParsingErrorsAndMDMFExtensions() throws {
        let w = MutableCapability(format: .mdmf, access: .write, key: Array(repeating: 1, count: 16), fingerprint: Array(repeating: 2, count: 32))
        XCTAssertEqual(try MutableCapability(parsing: w.string + ":3:131073"), w, "MDMF extension fields are ignored")
        let sdmf = MutableCapability(format: .sdmf, access: .write, key: w.key, fingerprint: w.fingerprint)
        XCTAssertThrowsError(try MutableCapability(parsing: sdmf.string + ":3")) { XCTAssertTrue("\($0)".contains("2 fields"), "\($0)") }
        XCTAssertThrowsError(try MutableCapability(parsing: "URI:SSK:abc:def")) { XCTAssertTrue("\($0)".contains("writekey"), "\($0)") }
        XCTAssertThrowsError(try MutableCapability(parsing: "URI:CHK:x")) { XCTAssertTrue("\($0)".contains("not a URI:SSK or URI:MDMF"), "\($0)") }
        // The immutable-file commands say plainly that they cannot take these yet.
        XCTAssertThrowsError(try Capability(parsing: w.string)) { e in
            XCTAssertEqual(e.errorClass, .incompatible)
            XCTAssertTrue("\(e)".contains("not supported"), "\(e)")
        }
        XCTAssertNil(w.verifier.readOnly, "a verify capability cannot be made read-only")
        XCTAssertNil(w.verifier.readkey)
        XCTAssertEqual(w.readOnly?.writekey, nil)
    }
}

final class HashTreePathTests: XCTestCase {
    /// Replacing leaves along their paths gives the tree a full rebuild gives; a damaged
    /// node on a path is caught.
    func testReplacingLeavesMatchesARebuild() throws {
        for count in [1, 2, 5, 8, 13, 100] {
            let leaves = (0..<count).map { SHA256.hash([UInt8(truncatingIfNeeded: $0), 7]) }
            let tree = HashTree(leaves: leaves)
            let p = tree.paddedLeafCount
            for changes in [[0], [count - 1], Array(0..<min(3, count)), [count / 2]] {
                let newLeaves = Dictionary(uniqueKeysWithValues: changes.map { ($0, SHA256.hash([UInt8(truncatingIfNeeded: $0), 9])) })
                let needed = HashTree.pathNodes(leaves: changes, paddedLeaves: p).needed
                let known = Dictionary(uniqueKeysWithValues: needed.map { ($0, tree[$0]) })
                var all = leaves
                for (i, h) in newLeaves { all[i] = h }
                let rebuilt = HashTree(leaves: all)
                let r = try XCTUnwrap(HashTree.replacingLeaves(known, paddedLeaves: p, with: newLeaves), "\(count) \(changes)")
                XCTAssertEqual(r.root, rebuilt.root, "\(count) leaves, changing \(changes)")
                for (i, h) in r.nodes { XCTAssertEqual(h, rebuilt[i]) }
                if let sibling = needed.subtracting(HashTree.pathNodes(leaves: changes, paddedLeaves: p).changed).min() {
                    var bad = known
                    bad[sibling]![0] ^= 1
                    XCTAssertNil(HashTree.replacingLeaves(bad, paddedLeaves: p, with: newLeaves), "a damaged sibling is caught")
                }
            }
        }
    }
}
