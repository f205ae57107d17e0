import COpenSSL
import GridSystem

/// Errors from the crypto layer (OpenSSL failures are not expected in practice; they are
/// reported, never ignored).
public enum CryptoError: ClassifiedError, Equatable {
    public var errorClass: ErrorClass {
        switch self {
        case .openssl: return .internal
        case .badKeyLength: return .usage
        }
    }

    case openssl(String)
    case badKeyLength(expected: Int, got: Int)

    public var description: String {
        switch self {
        case let .openssl(what): return "OpenSSL failure: \(what)"
        case let .badKeyLength(e, g): return "key must be \(e) bytes, got \(g)"
        }
    }
}

/// The SHA-256 algorithm object, fetched once (implicit fetching per call is slow in OpenSSL 3).
nonisolated(unsafe) let sha256MD: OpaquePointer = {
    guard let md = EVP_MD_fetch(nil, "SHA256", nil) else { fatalError("OpenSSL has no SHA256") }
    return md
}()

/// An incremental SHA-256 (OpenSSL, SHA-NI where the CPU has it). Not thread-safe; one per task.
public final class SHA256 {
    private let ctx: OpaquePointer

    public static let digestSize = 32

    public init() {
        guard let c = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed (out of memory)") }
        ctx = c
        reset()
    }

    deinit { EVP_MD_CTX_free(ctx) }

    /// Starts a new hash, discarding anything fed so far.
    public func reset() {
        guard EVP_DigestInit_ex2(ctx, sha256MD, nil) == 1 else { fatalError("EVP_DigestInit_ex2 failed") }
    }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        EVP_DigestUpdate(ctx, bytes.baseAddress, bytes.count)
    }

    public func update<B: ContiguousBytes>(_ bytes: B) {
        bytes.withUnsafeBytes { update($0) }
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Returns the digest and resets the hasher for reuse.
    public func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        out.withUnsafeMutableBufferPointer { buf in
            _ = EVP_DigestFinal_ex(ctx, buf.baseAddress, &len)
        }
        reset()
        return out
    }

    /// One-shot SHA-256.
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        out.withUnsafeMutableBufferPointer { buf in
            _ = EVP_Digest(bytes.baseAddress, bytes.count, buf.baseAddress, &len, sha256MD, nil)
        }
        return out
    }

    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { hash($0) }
    }

    /// SHA256d: SHA-256 of SHA-256.
    public static func doubleHash(_ bytes: [UInt8]) -> [UInt8] { hash(hash(bytes)) }
}

/// Anything whose bytes can be borrowed: [UInt8], ArraySlice<UInt8>, buffers.
public protocol ContiguousBytes {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ContiguousBytes where Element == UInt8 {}
extension ArraySlice: ContiguousBytes where Element == UInt8 {}
extension UnsafeRawBufferPointer: ContiguousBytes {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(self)
    }
}

/// SHA-1, used only where Tahoe-LAFS uses it: ordering servers in the permuted list
/// (not for integrity).
public enum SHA1 {
    nonisolated(unsafe) static let md: OpaquePointer = {
        guard let md = EVP_MD_fetch(nil, "SHA1", nil) else { fatalError("OpenSSL has no SHA1") }
        return md
    }()

    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 20)
        var len: UInt32 = 0
        let ok = bytes.withUnsafeBytes { b in
            out.withUnsafeMutableBufferPointer { EVP_Digest(b.baseAddress, b.count, $0.baseAddress, &len, md, nil) }
        }
        precondition(ok == 1 && len == 20, "EVP_Digest(SHA1) failed")
        return out
    }
}

/// HMAC-SHA256 (RFC 2104), from OpenSSL.
public enum HMACSHA256 {
    /// The 32-byte authentication code of `data` under `key`.
    public static func authenticationCode(key: [UInt8], data: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len = 0
        let ok = key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in
                out.withUnsafeMutableBytes { o in
                    EVP_Q_mac(nil, "HMAC", nil, "SHA256", nil, k.baseAddress, k.count,
                              d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count,
                              o.baseAddress?.assumingMemoryBound(to: UInt8.self), 32, &len) != nil
                }
            }
        }
        guard ok, len == 32 else { throw CryptoError.openssl("HMAC-SHA256") }
        return out
    }
}
