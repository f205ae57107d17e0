import GridTestSupport
import XCTest

@testable import GridCrypto

final class CryptoTests: XCTestCase {
    var vectors: [String: Any] = [:]

    override func setUpWithError() throws {
        vectors = try Fixtures.json("hashutil.json") as! [String: Any]
    }

    func input(_ c: [String: Any]) -> [UInt8] {
        if let h = c["input_hex"] as? String { return unhex(h) }
        return content(seed: c["input_seed"] as! String, length: c["input_len"] as! Int)
    }

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than the block is hashed first).
    func testHMACSHA256KnownAnswers() throws {
        XCTAssertEqual(hex(try HMACSHA256.authenticationCode(key: [UInt8](repeating: 0x0b, count: 20), data: Array("Hi There".utf8))),
                       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        XCTAssertEqual(hex(try HMACSHA256.authenticationCode(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8))),
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        XCTAssertEqual(hex(try HMACSHA256.authenticationCode(key: [UInt8](repeating: 0xaa, count: 131),
                                                             data: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))),
                       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    func testSHA256KnownAnswers() {
        XCTAssertEqual(hex(SHA256.hash(Array("abc".utf8))),
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(hex(SHA256.hash([])),
                       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // Incremental equals one-shot, and finalize() resets.
        let h = SHA256()
        h.update(Array("a".utf8)); h.update(Array("bc".utf8))
        XCTAssertEqual(h.finalize(), SHA256.hash(Array("abc".utf8)))
        h.update(Array("abc".utf8))
        XCTAssertEqual(h.finalize(), SHA256.hash(Array("abc".utf8)))
    }

    func testNetstrings() {
        for c in vectors["netstring"] as! [[String: Any]] {
            XCTAssertEqual(hex(Netstring.encode(unhex(c["input_hex"] as! String))), c["output_hex"] as! String)
        }
    }

    func testTaggedHashes() {
        for c in vectors["tagged_hash"] as! [[String: Any]] {
            let out = TahoeHash.tagged(unhex(c["tag_hex"] as! String), unhex(c["value_hex"] as! String),
                                       truncateTo: c["truncate_to"] as? Int)
            XCTAssertEqual(hex(out), c["output_hex"] as! String)
        }
        for c in vectors["tagged_pair_hash"] as! [[String: Any]] {
            let out = TahoeHash.taggedPair(unhex(c["tag_hex"] as! String), unhex(c["a_hex"] as! String),
                                           unhex(c["b_hex"] as! String))
            XCTAssertEqual(hex(out), c["output_hex"] as! String)
        }
    }

    func testTagsMatchTahoe() {
        let tags = vectors["tags"] as! [String: [String: String]]
        let ours: [String: String] = [
            "STORAGE_INDEX_TAG": TahoeTag.storageIndex, "BLOCK_TAG": TahoeTag.block,
            "UEB_TAG": TahoeTag.uriExtension, "CIPHERTEXT_TAG": TahoeTag.crypttext,
            "CIPHERTEXT_SEGMENT_TAG": TahoeTag.crypttextSegment, "PLAINTEXT_TAG": TahoeTag.plaintext,
            "PLAINTEXT_SEGMENT_TAG": TahoeTag.plaintextSegment,
            "CONVERGENT_ENCRYPTION_TAG": TahoeTag.convergencePrefix,
            "CLIENT_RENEWAL_TAG": TahoeTag.clientRenewal, "CLIENT_CANCEL_TAG": TahoeTag.clientCancel,
            "FILE_RENEWAL_TAG": TahoeTag.fileRenewal, "FILE_CANCEL_TAG": TahoeTag.fileCancel,
            "BUCKET_RENEWAL_TAG": TahoeTag.bucketRenewal, "BUCKET_CANCEL_TAG": TahoeTag.bucketCancel,
            "MUTABLE_WRITEKEY_TAG": TahoeTag.mutableWritekey, "MUTABLE_READKEY_TAG": TahoeTag.mutableReadkey,
            "MUTABLE_WRITE_ENABLER_MASTER_TAG": TahoeTag.mutableWriteEnablerMaster,
            "MUTABLE_WRITE_ENABLER_TAG": TahoeTag.mutableWriteEnabler, "MUTABLE_PUBKEY_TAG": TahoeTag.mutablePubkey,
            "MUTABLE_DATAKEY_TAG": TahoeTag.mutableDatakey, "MUTABLE_STORAGEINDEX_TAG": TahoeTag.mutableStorageIndex,
            "DIRNODE_CHILD_WRITECAP_TAG": TahoeTag.dirnodeChildCapKey, "DIRNODE_CHILD_SALT_TAG": TahoeTag.dirnodeChildSalt,
        ]
        // Two Merkle tags (checked below) and Tahoe's backup database's, which grid has no use for.
        XCTAssertEqual(tags.count, ours.count + 3, "every tag in the vectors is checked")
        XCTAssertNotNil(tags["BACKUPDB_DIRHASH_TAG"])
        for (name, value) in ours { XCTAssertEqual(tags[name]?["ascii"], value, name) }
        XCTAssertEqual(tags.first { $0.key.hasPrefix("MERKLE_EMPTY_LEAF_TAG") }?.value["ascii"], TahoeTag.merkleEmptyLeaf)
        XCTAssertEqual(tags.first { $0.key.hasPrefix("MERKLE_INTERNAL_NODE_TAG") }?.value["ascii"], TahoeTag.merkleInternalNode)
    }

    func testConvergenceKeysAndStorageIndexes() {
        let cases = vectors["convergence"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 48)
        for c in cases {
            let secret = unhex(c["convergence_secret_hex"] as! String)
            let k = c["k"] as! Int, n = c["n"] as! Int, seg = c["segsize"] as! Int
            XCTAssertEqual(hex(TahoeHash.convergenceTag(secret: secret, k: k, n: n, segmentSize: seg)), c["tag_hex"] as! String)
            let data = (c["data_seed"] as? String).map { content(seed: $0, length: c["data_len"] as! Int) } ?? []
            let h = TahoeHash.convergenceHasher(secret: secret, k: k, n: n, segmentSize: seg)
            // Feed in uneven pieces: streaming must not change the result.
            var i = 0
            while i < data.count { let j = min(data.count, i + 1 + i % 977); h.update(data[i..<j]); i = j }
            let key = h.finalize()
            XCTAssertEqual(hex(key), c["key_hex"] as! String)
            XCTAssertEqual(hex(TahoeHash.storageIndex(forKey: key)), c["storage_index_hex"] as! String)
        }
        for c in vectors["storage_index_hash"] as! [[String: Any]] {
            XCTAssertEqual(hex(TahoeHash.storageIndex(forKey: unhex(c["key_hex"] as! String))), c["storage_index_hex"] as! String)
        }
    }

    func testObjectHashes() {
        let funcs: [(String, ([UInt8]) -> [UInt8])] = [
            ("block_hash", { TahoeHash.blockHash($0) }),
            ("uri_extension_hash", { TahoeHash.uriExtensionHash($0) }),
            ("crypttext_segment_hash", { TahoeHash.crypttextSegmentHash($0) }),
            ("crypttext_hash", { TahoeHash.tagged(TahoeTag.crypttext, $0) }),
            ("plaintext_hash", { TahoeHash.tagged(TahoeTag.plaintext, $0) }),
            ("plaintext_segment_hash", { TahoeHash.tagged(TahoeTag.plaintextSegment, $0) }),
        ]
        for (name, f) in funcs {
            let cases = vectors[name] as! [[String: Any]]
            XCTAssertFalse(cases.isEmpty)
            for c in cases { XCTAssertEqual(hex(f(input(c))), c["output_hex"] as! String, name) }
        }
    }

    func testLeaseSecretChain() {
        let v = vectors["lease_secrets"] as! [String: Any]
        let client = unhex(v["client_lease_secret_hex"] as! String)
        let si = unhex(v["storage_index_hex"] as! String)
        let server = unhex(v["server_id_20_bytes_hex"] as! String)
        let renew = TahoeHash.clientRenewalSecret(client)
        let cancel = TahoeHash.clientCancelSecret(client)
        XCTAssertEqual(hex(renew), v["my_renewal_secret_hash"] as! String)
        XCTAssertEqual(hex(cancel), v["my_cancel_secret_hash"] as! String)
        let fr = TahoeHash.fileRenewalSecret(clientRenewal: renew, storageIndex: si)
        let fc = TahoeHash.fileCancelSecret(clientCancel: cancel, storageIndex: si)
        XCTAssertEqual(hex(fr), v["file_renewal_secret_hash"] as! String)
        XCTAssertEqual(hex(fc), v["file_cancel_secret_hash"] as! String)
        XCTAssertEqual(hex(TahoeHash.bucketRenewalSecret(fileRenewal: fr, serverID: server)), v["bucket_renewal_secret_hash"] as! String)
        XCTAssertEqual(hex(TahoeHash.bucketCancelSecret(fileCancel: fc, serverID: server)), v["bucket_cancel_secret_hash"] as! String)
    }

    func testMutableKeyChain() {
        let v = vectors["ssk"] as! [String: Any]
        let priv = content(seed: v["privkey_der_stand_in_seed"] as! String, length: v["privkey_der_stand_in_len"] as! Int)
        let pub = content(seed: v["pubkey_der_stand_in_seed"] as! String, length: v["pubkey_der_stand_in_len"] as! Int)
        let server = unhex(v["server_id_20_bytes_hex"] as! String)
        let wk = TahoeHash.sskWritekey(privateKey: priv)
        XCTAssertEqual(hex(wk), v["ssk_writekey_hash(privkey)"] as! String)
        let rk = TahoeHash.sskReadkey(writekey: wk)
        XCTAssertEqual(hex(rk), v["ssk_readkey_hash(writekey)"] as! String)
        XCTAssertEqual(hex(TahoeHash.sskStorageIndex(readkey: rk)), v["ssk_storage_index_hash(readkey)"] as! String)
        XCTAssertEqual(hex(TahoeHash.sskWriteEnablerMaster(writekey: wk)), v["ssk_write_enabler_master_hash(writekey)"] as! String)
        XCTAssertEqual(hex(TahoeHash.sskWriteEnabler(writekey: wk, serverID: server)), v["ssk_write_enabler_hash(writekey, server_id)"] as! String)
        XCTAssertEqual(hex(TahoeHash.sskPubkeyFingerprint(publicKey: pub)), v["ssk_pubkey_fingerprint_hash(pubkey)"] as! String)
        XCTAssertEqual(hex(TahoeHash.sskDataKey(iv: unhex(v["iv_hex"] as! String), readkey: rk)), v["ssk_readkey_data_hash(iv, readkey)"] as! String)
    }

    func testAESCTRVectors() throws {
        let aes = vectors["aes128_ctr"] as! [String: Any]
        for c in aes["cases"] as! [[String: Any]] {
            let pt = content(seed: c["plaintext_seed"] as! String, length: c["plaintext_len"] as! Int)
            let ct = try AESCTR(key: unhex(c["key_hex"] as! String)).process(pt)
            XCTAssertEqual(sha256hex(ct), c["ciphertext_sha256"] as! String)
            XCTAssertEqual(hex(ct.prefix(64)), c["ciphertext_first_64_hex"] as! String)
            if let full = c["ciphertext_hex"] as? String { XCTAssertEqual(hex(ct), full) }
        }
    }

    /// Starting the keystream at any byte offset gives the matching slice of the whole stream.
    func testAESCTRAtAnyOffset() throws {
        let key = pseudoRandom(16, seed: 1)
        let pt = pseudoRandom(1000, seed: 2)
        let whole = try AESCTR(key: key).process(pt)
        for offset in [0, 1, 15, 16, 17, 31, 32, 500, 999] {
            let part = try AESCTR(key: key, offset: UInt64(offset)).process(Array(pt[offset...]))
            XCTAssertEqual(part, Array(whole[offset...]), "offset \(offset)")
        }
        // Decryption is the same operation.
        XCTAssertEqual(try AESCTR(key: key).process(whole), pt)
        // Processing in pieces continues the stream.
        let c = try AESCTR(key: key)
        XCTAssertEqual(c.process(Array(pt[0..<7])) + c.process(Array(pt[7...])), whole)
        XCTAssertThrowsError(try AESCTR(key: [1, 2, 3]))
    }

    func testAESCTRCounterCarriesAcross64Bits() throws {
        // Block 2^64 - 1 then 2^64: the counter is one 128-bit big-endian integer.
        let key = pseudoRandom(16, seed: 3)
        let offset = (UInt64.max / 16) * 16
        let a = try AESCTR(key: key, offset: offset - 16).process([UInt8](repeating: 0, count: 32))
        let b = try AESCTR(key: key, offset: offset).process([UInt8](repeating: 0, count: 16))
        XCTAssertEqual(Array(a[16...]), b)
    }

    func testEd25519RFC8032() throws {
        // RFC 8032 section 7.1, test 1 (empty message).
        let key = try Ed25519PrivateKey(seed: unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
        XCTAssertEqual(hex(key.publicKey.bytes), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        let sig = try key.sign([])
        XCTAssertEqual(hex(sig), "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
        XCTAssertTrue(key.publicKey.isValidSignature(sig, for: []))
    }

    func testEd25519RejectsForgeries() throws {
        let key = Ed25519PrivateKey()
        let other = Ed25519PrivateKey()
        let msg = Array("announce: storage server".utf8)
        let sig = try key.sign(msg)
        XCTAssertTrue(key.publicKey.isValidSignature(sig, for: msg))
        XCTAssertFalse(key.publicKey.isValidSignature(sig, for: msg + [0]))
        XCTAssertFalse(other.publicKey.isValidSignature(sig, for: msg))
        var bad = sig
        bad[10] ^= 1
        XCTAssertFalse(key.publicKey.isValidSignature(bad, for: msg))
        XCTAssertFalse(key.publicKey.isValidSignature(Array(sig.prefix(63)), for: msg))
        XCTAssertThrowsError(try Ed25519PrivateKey(seed: [1]))
    }

    func testRandom() {
        let a = SecureRandom.bytes(32), b = SecureRandom.bytes(32)
        XCTAssertEqual(a.count, 32)
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(SecureRandom.bytes(0), [])
    }
}

final class BLAKE2bTests: XCTestCase {
    func testRFC7693AndReferenceVectors() throws {
        // RFC 7693 appendix A: BLAKE2b-512("abc").
        XCTAssertEqual(hex(BLAKE2b.hash(Array("abc".utf8), digestSize: 64)),
                       "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923")
        let doc = try Fixtures.json("blake2b.json") as! [String: Any]
        for c in doc["cases"] as! [[String: Any]] {
            XCTAssertEqual(hex(BLAKE2b.hash(unhex(c["input_hex"] as! String), digestSize: c["digest_size"] as! Int)),
                           c["output_hex"] as! String)
        }
    }
}
