import COpenSSL

nonisolated(unsafe) let aes128CTR: OpaquePointer = {
    guard let c = EVP_CIPHER_fetch(nil, "AES-128-CTR", nil) else { fatalError("OpenSSL has no AES-128-CTR") }
    return c
}()

/// AES-128 in CTR mode as Tahoe uses it: the initial counter block is 16 zero bytes
/// and the counter is the whole block taken as a 128-bit big-endian integer.
///
/// The keystream can start at any byte offset of the stream, which range reads need.
/// Encryption and decryption are the same operation. Not thread-safe; one per task.
public final class AESCTR {
    private let ctx: OpaquePointer
    private let key: [UInt8]
    /// Byte position in the keystream of the next byte processed.
    public private(set) var position: UInt64

    public init(key: [UInt8], offset: UInt64 = 0) throws {
        guard key.count == 16 else { throw CryptoError.badKeyLength(expected: 16, got: key.count) }
        guard let c = EVP_CIPHER_CTX_new() else { throw CryptoError.openssl("EVP_CIPHER_CTX_new") }
        ctx = c
        self.key = key
        position = 0
        try seek(to: offset)
    }

    deinit { EVP_CIPHER_CTX_free(ctx) }

    /// Moves the keystream to byte `offset` of the stream.
    public func seek(to offset: UInt64) throws {
        var iv = [UInt8](repeating: 0, count: 16)
        var block = offset / 16
        for i in stride(from: 15, through: 8, by: -1) {
            iv[i] = UInt8(truncatingIfNeeded: block)
            block >>= 8
        }
        let ok = key.withUnsafeBufferPointer { k in
            iv.withUnsafeBufferPointer { v in
                EVP_EncryptInit_ex2(ctx, aes128CTR, k.baseAddress, v.baseAddress, nil)
            }
        }
        guard ok == 1 else { throw CryptoError.openssl("EVP_EncryptInit_ex2") }
        position = offset - offset % 16
        let skip = Int(offset % 16)
        if skip > 0 {
            var junk = [UInt8](repeating: 0, count: skip)
            junk.withUnsafeMutableBytes { apply(in: $0) }
        }
    }

    /// XORs the keystream into `buffer` in place.
    public func apply(in buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count > 0, let base = buffer.baseAddress else { return }
        var done = 0
        // EVP_EncryptUpdate takes an Int32 length.
        while done < buffer.count {
            let chunk = min(buffer.count - done, 1 << 30)
            var outLen: Int32 = 0
            let p = (base + done).assumingMemoryBound(to: UInt8.self)
            let ok = EVP_EncryptUpdate(ctx, p, &outLen, p, Int32(chunk))
            precondition(ok == 1 && Int(outLen) == chunk, "EVP_EncryptUpdate failed")
            done += chunk
        }
        position &+= UInt64(buffer.count)
    }

    /// Returns `input` XORed with the keystream.
    public func process(_ input: [UInt8]) -> [UInt8] {
        var out = input
        out.withUnsafeMutableBytes { apply(in: $0) }
        return out
    }
}

/// Cryptographically secure random bytes (OpenSSL's CSPRNG).
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        guard count > 0 else { return out }
        let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        precondition(ok == 1, "RAND_bytes failed: the CSPRNG is not seeded")
        return out
    }
}
