import COpenSSL
import Foundation
import GridCrypto
import GridFormat
import GridSystem

/// A node's identity: an Ed25519 key. Its node id, `v0-<base32 public key>`, names it
/// everywhere (announcements, addresses, pins).
public struct NodeIdentity: Sendable {
    public let key: Ed25519PrivateKey

    public init(key: Ed25519PrivateKey) { self.key = key }

    public var publicKey: Ed25519PublicKey { key.publicKey }
    public var nodeID: String { NodeIdentity.nodeID(for: key.publicKey) }

    public static func nodeID(for key: Ed25519PublicKey) -> String { "v0-" + Base32.encode(key.bytes) }

    /// The public key named by a node id, or nil when the id is malformed.
    public static func publicKey(fromNodeID id: String) -> Ed25519PublicKey? {
        guard id.hasPrefix("v0-"), let b = Base32.decode(id.dropFirst(3)), b.count == 32 else { return nil }
        return try? Ed25519PublicKey(bytes: b)
    }

    /// Loads the key file at `path` (hex seed), or creates it with mode 0600 when absent.
    public static func loadOrCreate(path: String) throws -> NodeIdentity {
        if let existing = try readSecretFile(path) {
            guard let seed = Hex.decode(existing.trimmingWhitespace()), seed.count == 32 else {
                throw GridError(.corrupt, "\(path) does not hold a 32-byte hex Ed25519 seed")
            }
            return NodeIdentity(key: try Ed25519PrivateKey(seed: seed))
        }
        let key = Ed25519PrivateKey()
        try writeSecretFile(path, Hex.encode(key.seed) + "\n")
        return NodeIdentity(key: key)
    }
}


/// Describes the most recent OpenSSL error and clears the queue.
func opensslError(_ what: String) -> WireError {
    let code = ERR_get_error()
    ERR_clear_error()
    if code == 0 { return WireError(.internal, what) }
    var buf = [CChar](repeating: 0, count: 256)
    ERR_error_string_n(code, &buf, buf.count)
    return WireError(.internal, "\(what): \(cString(buf))")
}

/// An OpenSSL TLS 1.3 context. Servers present a self-signed certificate for their node
/// key; clients accept any certificate during the handshake and then check that its
/// key is the pinned one before sending a byte.
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let isServer: Bool

    public static func server(identity: NodeIdentity) throws -> TLSContext {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw opensslError("SSL_CTX_new") }
        let c = TLSContext(ctx: ctx, isServer: true)
        try c.configure()
        let pkey = try Ed25519PrivateKey.loadForTLS(identity.key.seed)
        defer { EVP_PKEY_free(pkey) }
        guard let x509 = X509_new() else { throw opensslError("X509_new") }
        defer { X509_free(x509) }
        X509_set_version(x509, 2)
        ASN1_INTEGER_set(X509_get_serialNumber(x509), 1)
        X509_gmtime_adj(X509_getm_notBefore(x509), -86400)
        X509_gmtime_adj(X509_getm_notAfter(x509), 100 * 365 * 86400)
        guard X509_set_pubkey(x509, pkey) == 1, grid_x509_set_name(x509, "grid node") == 1,
              X509_sign(x509, pkey, nil) > 0
        else { throw opensslError("cannot make the node certificate") }
        guard SSL_CTX_use_certificate(ctx, x509) == 1, SSL_CTX_use_PrivateKey(ctx, pkey) == 1 else {
            throw opensslError("cannot load the node certificate")
        }
        return c
    }

    public static func client() throws -> TLSContext {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw opensslError("SSL_CTX_new") }
        let c = TLSContext(ctx: ctx, isServer: false)
        try c.configure()
        grid_ssl_ctx_request_any_peer_cert(ctx)
        return c
    }

    init(ctx: OpaquePointer, isServer: Bool) {
        self.ctx = ctx
        self.isServer = isServer
    }

    func configure() throws {
        guard grid_ssl_ctx_tls13_only(ctx) == 1 else { throw opensslError("cannot require TLS 1.3") }
        grid_ssl_ctx_set_modes(ctx)
        guard SSL_CTX_set_ciphersuites(ctx, Self.cipherSuites) == 1 else { throw opensslError("cannot set the TLS 1.3 cipher suites") }
        _ = grid_ssl_session_cache_off(ctx)
    }

    /// TLS 1.3's suites, AES-128-GCM first: every byte of a share is sealed by the sender and
    /// opened by the receiver, and with AES instructions the 128-bit key's 10 rounds run
    /// about 1.2x as fast as AES-256's 14 (docs/benchmarks.md), at a security level
    /// well beyond what an attacker can reach. A peer that prefers another suite still gets
    /// it: the server follows the client's order.
    static let cipherSuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

    deinit { SSL_CTX_free(ctx) }

    /// A new SSL object on `fd`.
    func makeSSL(fd: Int32) throws -> OpaquePointer {
        guard let ssl = SSL_new(ctx) else { throw opensslError("SSL_new") }
        SSL_set_fd(ssl, fd)
        if isServer { SSL_set_accept_state(ssl) } else { SSL_set_connect_state(ssl) }
        return ssl
    }

    /// The Ed25519 public key of the peer's certificate, after the handshake.
    static func peerKey(_ ssl: OpaquePointer) -> Ed25519PublicKey? {
        guard let cert = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(cert) }
        guard let pkey = X509_get0_pubkey(cert), EVP_PKEY_get_id(pkey) == EVP_PKEY_ED25519 else { return nil }
        var raw = [UInt8](repeating: 0, count: 32)
        var len = 32
        guard raw.withUnsafeMutableBufferPointer({ EVP_PKEY_get_raw_public_key(pkey, $0.baseAddress, &len) }) == 1,
              len == 32
        else { return nil }
        return try? Ed25519PublicKey(bytes: raw)
    }
}

extension Ed25519PrivateKey {
    static func loadForTLS(_ seed: [UInt8]) throws -> OpaquePointer {
        guard let pkey = seed.withUnsafeBufferPointer({
            EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, $0.baseAddress, 32)
        }) else { throw opensslError("EVP_PKEY_new_raw_private_key") }
        return pkey
    }
}

extension TLSContext {
    /// A process's first SSL_CTX_new costs OpenSSL 3.0 2-3 ms (its configuration file, and
    /// every cipher, digest and group a context may use fetched from the providers); later
    /// ones ~0.2 ms. A CLI process calls this first thing: the work runs on another core
    /// while the arguments are parsed and the node's files read, and the first connection
    /// finds it done.
    public static func warmUpInBackground() {
        let t = Thread {
            if let ctx = SSL_CTX_new(TLS_client_method()) { SSL_CTX_free(ctx) }
        }
        t.name = "grid-tls-warm"
        t.stackSize = 256 << 10
        t.start()
    }
}
