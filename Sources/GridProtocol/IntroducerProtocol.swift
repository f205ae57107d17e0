import GridCrypto
import GridFormat
import GridWire
import GridSystem

/// Methods of the "introducer" service.
public enum IntroducerMethod: UInt16, Sendable, CaseIterable {
    /// A storage server publishes its signed announcement.
    case announce = 1
    /// A client asks for every current announcement; updates then arrive as NOTIFY frames.
    case subscribe = 2
}

/// NOTIFY methods the introducer pushes to subscribers.
public enum IntroducerNotify: UInt16, Sendable {
    /// Body: a signed announcement (new or updated).
    case announcement = 1
    /// Body: the 32-byte public key of a server whose announcement expired.
    case removed = 2
}

public let introducerServiceName = "introducer"

/// What a storage server tells the grid about itself, signed with its node key.
public struct Announcement: Equatable, Sendable {
    public var publicKey: Ed25519PublicKey
    public var nickname: String
    /// host:port strings where the server listens (first is preferred).
    public var addresses: [String]
    public var protocolVersion: UInt16
    public var availableSpace: UInt64
    /// Increases with every announcement of one server; the highest wins.
    public var sequence: UInt64

    public var nodeID: String { NodeIdentity.nodeID(for: publicKey) }

    public init(publicKey: Ed25519PublicKey, nickname: String, addresses: [String], protocolVersion: UInt16 = Hello.currentVersion,
                availableSpace: UInt64, sequence: UInt64) {
        self.publicKey = publicKey
        self.nickname = nickname
        self.addresses = addresses
        self.protocolVersion = protocolVersion
        self.availableSpace = availableSpace
        self.sequence = sequence
    }

    static let domain = Array("grid-announcement-v1\n".utf8)

    public func payload() -> [UInt8] {
        var w = WireWriter()
        w.fixed(publicKey.bytes)
        w.string(nickname)
        w.list(addresses) { $0.string($1) }
        w.u16(protocolVersion)
        w.u64(availableSpace)
        w.u64(sequence)
        return w.bytes
    }

    /// payload, then the 64-byte Ed25519 signature of domain || payload.
    public func signed(with key: Ed25519PrivateKey) throws -> SignedAnnouncement {
        let p = payload()
        return SignedAnnouncement(payload: p, signature: try key.sign(Self.domain + p))
    }

    init(payload: [UInt8]) throws {
        var r = WireReader(payload)
        publicKey = try Ed25519PublicKey(bytes: try r.fixed(32, "public key"))
        nickname = try r.string("nickname", max: 256)
        addresses = try r.list("addresses", minElementSize: 4, max: 16) { try $0.string("address", max: 300) }
        protocolVersion = try r.u16("protocol version")
        availableSpace = try r.u64("available space")
        sequence = try r.u64("sequence")
        try r.finish("announcement")
    }
}

/// An announcement as it travels: the exact payload bytes and their signature. It is the
/// body of an `announce` request and of an `announcement` NOTIFY.
public struct SignedAnnouncement: IntroducerRequest, Equatable {
    public typealias Response = EmptyMessage
    public static let method = IntroducerMethod.announce
    public var payload: [UInt8]
    public var signature: [UInt8]

    public init(payload: [UInt8], signature: [UInt8]) {
        self.payload = payload
        self.signature = signature
    }

    public func encode(to w: inout WireWriter) {
        w.data(payload)
        w.fixed(signature)
    }

    public init(from r: inout WireReader) throws {
        payload = try r.data("announcement", max: 8192)
        signature = try r.fixed(64, "signature")
    }

    /// The announcement without checking its signature: only for bytes this node checked
    /// itself before and can prove unchanged since (its authenticated server cache).
    public func checkedBefore() throws -> Announcement { try Announcement(payload: payload) }

    /// The announcement, if the signature is valid for the key inside it.
    public func verified() throws -> Announcement {
        let a = try Announcement(payload: payload)
        guard a.publicKey.isValidSignature(signature, for: Announcement.domain + payload) else {
            throw WireError(.badSecret, "announcement from \(a.nodeID) has a bad signature")
        }
        return a
    }
}

/// A request of the introducer service: which method carries it, and what the reply is.
public protocol IntroducerRequest: RPCRequest where Method == IntroducerMethod {}

/// `subscribe`: asks for every current announcement; changes then arrive as NOTIFY frames.
public struct SubscribeRequest: IntroducerRequest, EmptyWireMessage {
    public typealias Response = SubscribeResponse
    public static let method = IntroducerMethod.subscribe
    public init() {}
}

public struct SubscribeResponse: WireMessage {
    public var announcements: [SignedAnnouncement]
    public init(announcements: [SignedAnnouncement]) { self.announcements = announcements }
    public func encode(to w: inout WireWriter) { w.list(announcements) { $1.encode(to: &$0) } }
    public init(from r: inout WireReader) throws {
        announcements = try r.list("announcements", minElementSize: 68, max: 100_000) { try SignedAnnouncement(from: &$0) }
    }
}

/// The body of a `removed` NOTIFY: the server whose announcement expired.
public struct RemovedNotice: WireMessage {
    public var publicKey: Ed25519PublicKey
    public init(publicKey: Ed25519PublicKey) { self.publicKey = publicKey }
    public func encode(to w: inout WireWriter) { w.fixed(publicKey.bytes) }
    public init(from r: inout WireReader) throws { publicKey = try Ed25519PublicKey(bytes: try r.fixed(32, "public key")) }
}

/// The introducer's address, one string a person can paste:
///
///     grid://<node id>@<host>:<port>/<secret in base32>
///
/// The node id pins the introducer's key; the secret grants the right to announce and
/// subscribe. IPv6 hosts go in brackets: grid://v0-...@[::1]:4000/....
public struct IntroducerAddress: Equatable, Sendable, CustomStringConvertible {
    public var publicKey: Ed25519PublicKey
    public var host: String
    public var port: UInt16
    public var secret: [UInt8]

    public init(publicKey: Ed25519PublicKey, host: String, port: UInt16, secret: [UInt8]) {
        self.publicKey = publicKey
        self.host = host
        self.port = port
        self.secret = secret
    }

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "grid://\(NodeIdentity.nodeID(for: publicKey))@\(h):\(port)/\(Base32.encode(secret))"
    }

    public init(parsing raw: String) throws {
        func fail(_ m: String) -> WireError { WireError(.badRequest, "bad introducer address: \(m) (expected grid://v0-<key>@host:port/<secret>)") }
        let s = raw.trimmingWhitespace()
        guard s.hasPrefix("grid://") else { throw fail("it does not start with grid://") }
        let rest = s.dropFirst("grid://".count)
        guard let at = rest.firstIndex(of: "@") else { throw fail("no '@' after the node id") }
        guard let key = NodeIdentity.publicKey(fromNodeID: String(rest[..<at])) else { throw fail("the node id is not a v0- key") }
        let hostPart = rest[rest.index(after: at)...]
        guard let slash = hostPart.lastIndex(of: "/") else { throw fail("no '/' before the secret") }
        guard let secret = Base32.decode(hostPart[hostPart.index(after: slash)...]), secret.count >= 16 else {
            throw fail("the secret is not base32 of at least 16 bytes")
        }
        let hp = hostPart[..<slash]
        let host: String, portStr: Substring
        if hp.hasPrefix("[") {
            guard let close = hp.firstIndex(of: "]"), hp[hp.index(after: close)...].hasPrefix(":") else { throw fail("bad [IPv6] host") }
            host = String(hp[hp.index(after: hp.startIndex)..<close])
            portStr = hp[hp.index(close, offsetBy: 2)...]
        } else {
            guard let colon = hp.lastIndex(of: ":") else { throw fail("no port") }
            host = String(hp[..<colon])
            portStr = hp[hp.index(after: colon)...]
        }
        guard !host.isEmpty else { throw fail("empty host") }
        guard let port = UInt16(portStr), port > 0 else { throw fail("bad port '\(portStr)'") }
        self.init(publicKey: key, host: host, port: port, secret: secret)
    }
}

/// Splits "host:port" or "[v6]:port".
public func splitHostPort(_ s: String) throws -> (String, UInt16) {
    if s.hasPrefix("["), let close = s.firstIndex(of: "]") {
        let host = String(s[s.index(after: s.startIndex)..<close])
        let rest = s[s.index(after: close)...]
        guard rest.hasPrefix(":"), let p = UInt16(rest.dropFirst()) else { throw WireError(.badRequest, "bad address '\(s)'") }
        return (host, p)
    }
    guard let colon = s.lastIndex(of: ":"), let p = UInt16(s[s.index(after: colon)...]) else {
        throw WireError(.badRequest, "bad address '\(s)': expected host:port")
    }
    return (String(s[..<colon]), p)
}

