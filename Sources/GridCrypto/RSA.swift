import COpenSSL

/// An RSA private key (OpenSSL), as Tahoe-LAFS's mutable files use them: 2048 bits,
/// serialised as PKCS#8 DER, signing with RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt).
public final class RSAPrivateKey: @unchecked Sendable {
    let pkey: OpaquePointer
    /// PKCS#8 DER: what Tahoe hashes into the write key and stores (encrypted) in shares.
    public let der: [UInt8]
    public let publicKey: RSAPublicKey

    init(taking pkey: OpaquePointer) throws {
        self.pkey = pkey
        guard let info = EVP_PKEY2PKCS8(pkey) else { EVP_PKEY_free(pkey); throw CryptoError.openssl("EVP_PKEY2PKCS8") }
        defer { PKCS8_PRIV_KEY_INFO_free(info) }
        var out: UnsafeMutablePointer<UInt8>?
        let n = i2d_PKCS8_PRIV_KEY_INFO(info, &out)
        guard n > 0, let p = out else { EVP_PKEY_free(pkey); throw CryptoError.openssl("i2d_PKCS8_PRIV_KEY_INFO") }
        der = Array(UnsafeBufferPointer(start: p, count: Int(n)))
        CRYPTO_free(p, nil, 0)
        publicKey = try RSAPublicKey(of: pkey)
    }

    deinit { EVP_PKEY_free(pkey) }

    /// A new random key of `bits` (2048 for Tahoe's mutable files).
    public convenience init(bits: Int = 2048) throws {
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, nil) else { throw CryptoError.openssl("EVP_PKEY_CTX_new_id") }
        defer { EVP_PKEY_CTX_free(ctx) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, Int32(bits)) == 1,
              EVP_PKEY_keygen(ctx, &key) == 1, let key else { throw CryptoError.openssl("RSA key generation") }
        try self.init(taking: key)
    }

    /// A key from DER (PKCS#8, or PKCS#1 RSAPrivateKey).
    public convenience init(der: [UInt8]) throws {
        let key = der.withUnsafeBufferPointer { b -> OpaquePointer? in
            var p: UnsafePointer<UInt8>? = b.baseAddress
            return d2i_AutoPrivateKey(nil, &p, b.count)
        }
        guard let key, EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA else {
            if let key { EVP_PKEY_free(key) }
            throw CryptoError.openssl("not an RSA private key in DER")
        }
        try self.init(taking: key)
    }

    /// A key from PEM text ("BEGIN PRIVATE KEY" or "BEGIN RSA PRIVATE KEY").
    public convenience init(pem: String) throws {
        let bytes = Array(pem.utf8)
        let key = bytes.withUnsafeBytes { b -> OpaquePointer? in
            guard let bio = BIO_new_mem_buf(b.baseAddress, Int32(b.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
        guard let key, EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA else {
            if let key { EVP_PKEY_free(key) }
            throw CryptoError.openssl("not an RSA private key in PEM")
        }
        try self.init(taking: key)
    }

    /// RSA-PSS signature of `message` (SHA-256, MGF1-SHA-256, 32-byte salt).
    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        guard let md = EVP_MD_CTX_new() else { throw CryptoError.openssl("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(md) }
        var pctx: OpaquePointer?
        guard EVP_DigestSignInit(md, &pctx, EVP_sha256(), nil, pkey) == 1, let pctx,
              RSAPublicKey.setPSS(pctx) else { throw CryptoError.openssl("EVP_DigestSignInit (RSA-PSS)") }
        var len = 0
        guard message.withUnsafeBufferPointer({ EVP_DigestSign(md, nil, &len, $0.baseAddress, $0.count) }) == 1 else {
            throw CryptoError.openssl("EVP_DigestSign")
        }
        var sig = [UInt8](repeating: 0, count: len)
        let ok = sig.withUnsafeMutableBufferPointer { s in
            message.withUnsafeBufferPointer { m in EVP_DigestSign(md, s.baseAddress, &len, m.baseAddress, m.count) }
        }
        guard ok == 1 else { throw CryptoError.openssl("EVP_DigestSign") }
        return Array(sig.prefix(len))
    }
}

/// An RSA public key: SubjectPublicKeyInfo DER, as Tahoe stores it in mutable shares
/// and hashes into the capability's fingerprint.
public struct RSAPublicKey: Sendable, Equatable {
    public let der: [UInt8]

    init(of pkey: OpaquePointer) throws {
        var out: UnsafeMutablePointer<UInt8>?
        let n = i2d_PUBKEY(pkey, &out)
        guard n > 0, let p = out else { throw CryptoError.openssl("i2d_PUBKEY") }
        der = Array(UnsafeBufferPointer(start: p, count: Int(n)))
        CRYPTO_free(p, nil, 0)
    }

    /// A key from SubjectPublicKeyInfo DER (checked to parse as an RSA key).
    public init(der: [UInt8]) throws {
        guard let key = Self.load(der) else { throw CryptoError.openssl("not an RSA public key in DER") }
        EVP_PKEY_free(key)
        self.der = der
    }

    static func load(_ der: [UInt8]) -> OpaquePointer? {
        let key = der.withUnsafeBufferPointer { b -> OpaquePointer? in
            var p: UnsafePointer<UInt8>? = b.baseAddress
            return d2i_PUBKEY(nil, &p, b.count)
        }
        guard let key else { return nil }
        guard EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA else { EVP_PKEY_free(key); return nil }
        return key
    }

    static func setPSS(_ pctx: OpaquePointer) -> Bool {
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
            && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1
            && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1
    }

    /// Whether `signature` is an RSA-PSS (SHA-256, 32-byte salt) signature of `message`.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        guard let key = Self.load(der) else { return false }
        defer { EVP_PKEY_free(key) }
        guard let md = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(md) }
        var pctx: OpaquePointer?
        guard EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), nil, key) == 1, let pctx, Self.setPSS(pctx) else { return false }
        let ok = signature.withUnsafeBufferPointer { s in
            message.withUnsafeBufferPointer { m in EVP_DigestVerify(md, s.baseAddress, s.count, m.baseAddress, m.count) }
        }
        return ok == 1
    }
}
