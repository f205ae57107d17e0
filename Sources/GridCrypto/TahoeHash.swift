/// Tahoe-LAFS's hash constructions (allmydata/util/hashutil.py), on OpenSSL's SHA-256.
///
///     netstring(x)                 = ascii(len(x)) ":" x ","
///     SHA256d(x)                   = SHA256(SHA256(x))
///     tagged_hash(tag, v[, t])     = SHA256d(netstring(tag) || v)[0:t]
///     tagged_pair_hash(tag, a, b)  = SHA256d(netstring(tag) || netstring(a) || netstring(b))
public enum Netstring {
    public static func encode(_ bytes: [UInt8]) -> [UInt8] {
        Array(String(bytes.count).utf8) + [UInt8(ascii: ":")] + bytes + [UInt8(ascii: ",")]
    }
    public static func encode(_ string: String) -> [UInt8] { encode(Array(string.utf8)) }
}

/// The tag strings Tahoe hashes with.
public enum TahoeTag {
    public static let storageIndex = "allmydata_immutable_key_to_storage_index_v1"
    public static let block = "allmydata_encoded_subshare_v1"
    public static let uriExtension = "allmydata_uri_extension_v1"
    public static let crypttext = "allmydata_crypttext_v1"
    public static let crypttextSegment = "allmydata_crypttext_segment_v1"
    public static let plaintext = "allmydata_plaintext_v1"
    public static let plaintextSegment = "allmydata_plaintext_segment_v1"
    public static let convergencePrefix = "allmydata_immutable_content_to_key_with_added_secret_v1+"
    public static let merkleEmptyLeaf = "Merkle tree empty leaf"
    public static let merkleInternalNode = "Merkle tree internal node"
    public static let clientRenewal = "allmydata_client_renewal_secret_v1"
    public static let clientCancel = "allmydata_client_cancel_secret_v1"
    public static let fileRenewal = "allmydata_file_renewal_secret_v1"
    public static let fileCancel = "allmydata_file_cancel_secret_v1"
    public static let bucketRenewal = "allmydata_bucket_renewal_secret_v1"
    public static let bucketCancel = "allmydata_bucket_cancel_secret_v1"
    public static let mutableWritekey = "allmydata_mutable_privkey_to_writekey_v1"
    public static let mutableWriteEnablerMaster = "allmydata_mutable_writekey_to_write_enabler_master_v1"
    public static let mutableWriteEnabler = "allmydata_mutable_write_enabler_master_and_nodeid_to_write_enabler_v1"
    public static let mutablePubkey = "allmydata_mutable_pubkey_to_fingerprint_v1"
    public static let mutableReadkey = "allmydata_mutable_writekey_to_readkey_v1"
    public static let mutableDatakey = "allmydata_mutable_readkey_to_datakey_v1"
    public static let mutableStorageIndex = "allmydata_mutable_readkey_to_storage_index_v1"
    /// Directories: the key that encrypts a child's write capability, and its salt.
    public static let dirnodeChildCapKey = "allmydata_mutable_writekey_and_salt_to_dirnode_child_capkey_v1"
    public static let dirnodeChildSalt = "allmydata_dirnode_child_rwcap_to_salt_v1"
}

/// An incremental tagged hash: SHA256d(netstring(tag) || data...), optionally truncated.
public final class TaggedHasher {
    private let inner = SHA256()
    private let truncate: Int?
    private let prefix: [UInt8]

    public init(tag: [UInt8], truncateTo: Int? = nil) {
        prefix = Netstring.encode(tag)
        truncate = truncateTo
        inner.update(prefix)
    }

    public convenience init(tag: String, truncateTo: Int? = nil) {
        self.init(tag: Array(tag.utf8), truncateTo: truncateTo)
    }

    public func update(_ bytes: UnsafeRawBufferPointer) { inner.update(bytes) }
    public func update<B: ContiguousBytes>(_ bytes: B) { bytes.withUnsafeBytes { inner.update($0) } }

    /// Returns the digest and starts over with the same tag.
    public func finalize() -> [UInt8] {
        let d = SHA256.hash(inner.finalize())
        inner.update(prefix)
        if let t = truncate { return Array(d[0..<t]) }
        return d
    }
}

public enum TahoeHash {
    public static func tagged(_ tag: [UInt8], _ value: UnsafeRawBufferPointer, truncateTo: Int? = nil) -> [UInt8] {
        let h = TaggedHasher(tag: tag, truncateTo: truncateTo)
        h.update(value)
        return h.finalize()
    }

    public static func tagged<B: ContiguousBytes>(_ tag: [UInt8], _ value: B, truncateTo: Int? = nil) -> [UInt8] {
        value.withUnsafeBytes { tagged(tag, $0, truncateTo: truncateTo) }
    }

    public static func tagged<B: ContiguousBytes>(_ tag: String, _ value: B, truncateTo: Int? = nil) -> [UInt8] {
        tagged(Array(tag.utf8), value, truncateTo: truncateTo)
    }

    public static func taggedPair(_ tag: [UInt8], _ a: [UInt8], _ b: [UInt8], truncateTo: Int? = nil) -> [UInt8] {
        let d = SHA256.doubleHash(Netstring.encode(tag) + Netstring.encode(a) + Netstring.encode(b))
        if let t = truncateTo { return Array(d[0..<t]) }
        return d
    }

    public static func taggedPair(_ tag: String, _ a: [UInt8], _ b: [UInt8], truncateTo: Int? = nil) -> [UInt8] {
        taggedPair(Array(tag.utf8), a, b, truncateTo: truncateTo)
    }

    // MARK: Immutable-file hashes

    /// The storage index of a CHK file: 16 bytes derived from its encryption key.
    public static func storageIndex(forKey key: [UInt8]) -> [UInt8] {
        tagged(TahoeTag.storageIndex, key, truncateTo: 16)
    }

    public static func blockHash<B: ContiguousBytes>(_ block: B) -> [UInt8] { tagged(TahoeTag.block, block) }
    public static func uriExtensionHash<B: ContiguousBytes>(_ ueb: B) -> [UInt8] { tagged(TahoeTag.uriExtension, ueb) }
    public static func crypttextSegmentHash<B: ContiguousBytes>(_ seg: B) -> [UInt8] {
        tagged(TahoeTag.crypttextSegment, seg)
    }

    /// The tag of the convergent-encryption key hasher for one secret and encoding:
    /// prefix || netstring(secret) || netstring("k,n,segsize").
    public static func convergenceTag(secret: [UInt8], k: Int, n: Int, segmentSize: Int) -> [UInt8] {
        Array(TahoeTag.convergencePrefix.utf8) + Netstring.encode(secret)
            + Netstring.encode("\(k),\(n),\(segmentSize)")
    }

    /// A streaming hasher whose 16-byte result is the CHK encryption key of the data fed to it.
    public static func convergenceHasher(secret: [UInt8], k: Int, n: Int, segmentSize: Int) -> TaggedHasher {
        TaggedHasher(tag: convergenceTag(secret: secret, k: k, n: n, segmentSize: segmentSize), truncateTo: 16)
    }

    // MARK: Lease secrets (client side)

    /// my_renewal_secret_hash: the secret is the tag here, as in hashutil.py.
    public static func clientRenewalSecret(_ clientSecret: [UInt8]) -> [UInt8] {
        tagged(clientSecret, Array(TahoeTag.clientRenewal.utf8))
    }

    public static func clientCancelSecret(_ clientSecret: [UInt8]) -> [UInt8] {
        tagged(clientSecret, Array(TahoeTag.clientCancel.utf8))
    }

    public static func fileRenewalSecret(clientRenewal: [UInt8], storageIndex: [UInt8]) -> [UInt8] {
        taggedPair(TahoeTag.fileRenewal, clientRenewal, storageIndex)
    }

    public static func fileCancelSecret(clientCancel: [UInt8], storageIndex: [UInt8]) -> [UInt8] {
        taggedPair(TahoeTag.fileCancel, clientCancel, storageIndex)
    }

    public static func bucketRenewalSecret(fileRenewal: [UInt8], serverID: [UInt8]) -> [UInt8] {
        taggedPair(TahoeTag.bucketRenewal, fileRenewal, serverID)
    }

    public static func bucketCancelSecret(fileCancel: [UInt8], serverID: [UInt8]) -> [UInt8] {
        taggedPair(TahoeTag.bucketCancel, fileCancel, serverID)
    }

    // MARK: Mutable-file (SSK) key chain

    /// writekey = tagged_hash(writekey tag, private key DER, 16)
    public static func sskWritekey(privateKey: [UInt8]) -> [UInt8] { tagged(TahoeTag.mutableWritekey, privateKey, truncateTo: 16) }
    /// readkey = tagged_hash(readkey tag, writekey, 16)
    public static func sskReadkey(writekey: [UInt8]) -> [UInt8] { tagged(TahoeTag.mutableReadkey, writekey, truncateTo: 16) }
    /// storage index = tagged_hash(storage-index tag, readkey, 16)
    public static func sskStorageIndex(readkey: [UInt8]) -> [UInt8] { tagged(TahoeTag.mutableStorageIndex, readkey, truncateTo: 16) }
    public static func sskWriteEnablerMaster(writekey: [UInt8]) -> [UInt8] { tagged(TahoeTag.mutableWriteEnablerMaster, writekey) }
    /// The write enabler one server records: tagged_pair_hash(tag, master, server id).
    public static func sskWriteEnabler(writekey: [UInt8], serverID: [UInt8]) -> [UInt8] {
        taggedPair(TahoeTag.mutableWriteEnabler, sskWriteEnablerMaster(writekey: writekey), serverID)
    }
    public static func sskPubkeyFingerprint(publicKey: [UInt8]) -> [UInt8] { tagged(TahoeTag.mutablePubkey, publicKey) }
    /// The AES key of one SDMF/MDMF version: tagged_pair_hash(datakey tag, IV, readkey, 16).
    public static func sskDataKey(iv: [UInt8], readkey: [UInt8]) -> [UInt8] {
        taggedPair(TahoeTag.mutableDatakey, iv, readkey, truncateTo: 16)
    }
}
