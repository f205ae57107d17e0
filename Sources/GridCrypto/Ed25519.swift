import COpenSSL

/// An Ed25519 signing key (OpenSSL). Node identities are built on these.
public struct Ed25519PrivateKey: Sendable {
    /// The 32-byte seed (RFC 8032 private key).
    public let seed: [UInt8]
    public let publicKey: Ed25519PublicKey

    /// A new random key.
    public init() {
        try! self.init(seed: SecureRandom.bytes(32))
    }

    public init(seed: [UInt8]) throws {
        guard seed.count == 32 else { throw CryptoError.badKeyLength(expected: 32, got: seed.count) }
        self.seed = seed
        let pkey = try Self.load(seed)
        defer { EVP_PKEY_free(pkey) }
        var pub = [UInt8](repeating: 0, count: 32)
        var len = 32
        guard pub.withUnsafeMutableBufferPointer({ EVP_PKEY_get_raw_public_key(pkey, $0.baseAddress, &len) }) == 1,
              len == 32
        else { throw CryptoError.openssl("EVP_PKEY_get_raw_public_key") }
        publicKey = try Ed25519PublicKey(bytes: pub)
    }

    static func load(_ seed: [UInt8]) throws -> OpaquePointer {
        guard let pkey = seed.withUnsafeBufferPointer({
            EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, $0.baseAddress, 32)
        }) else { throw CryptoError.openssl("EVP_PKEY_new_raw_private_key") }
        return pkey
    }

    /// A 64-byte signature of `message`.
    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        let pkey = try Self.load(seed)
        defer { EVP_PKEY_free(pkey) }
        guard let md = EVP_MD_CTX_new() else { throw CryptoError.openssl("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestSignInit(md, nil, nil, nil, pkey) == 1 else {
            throw CryptoError.openssl("EVP_DigestSignInit")
        }
        var sig = [UInt8](repeating: 0, count: 64)
        var sigLen = 64
        let ok = sig.withUnsafeMutableBufferPointer { s in
            message.withUnsafeBufferPointer { m in
                EVP_DigestSign(md, s.baseAddress, &sigLen, m.baseAddress, m.count)
            }
        }
        guard ok == 1, sigLen == 64 else { throw CryptoError.openssl("EVP_DigestSign") }
        return sig
    }
}

/// An Ed25519 verification key.
public struct Ed25519PublicKey: Sendable, Hashable {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) throws {
        guard bytes.count == 32 else { throw CryptoError.badKeyLength(expected: 32, got: bytes.count) }
        self.bytes = bytes
    }

    /// True when `signature` is a valid signature of `message` by this key.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        guard signature.count == 64 else { return false }
        guard let pkey = bytes.withUnsafeBufferPointer({
            EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, 32)
        }) else { return false }
        defer { EVP_PKEY_free(pkey) }
        guard let md = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestVerifyInit(md, nil, nil, nil, pkey) == 1 else { return false }
        let ok = signature.withUnsafeBufferPointer { s in
            message.withUnsafeBufferPointer { m in
                EVP_DigestVerify(md, s.baseAddress, 64, m.baseAddress, m.count)
            }
        }
        return ok == 1
    }
}
