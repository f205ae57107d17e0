import GridSystem
import GridCrypto

/// A read capability for a CHK immutable file:
/// `URI:CHK:<b32 key>:<b32 UEB hash>:<k>:<n>:<size>`.
public struct CHKCapability: Equatable, Sendable {
    public let key: [UInt8]
    public let uebHash: [UInt8]
    public let needed: Int
    public let total: Int
    public let size: UInt64

    public init(key: [UInt8], uebHash: [UInt8], needed: Int, total: Int, size: UInt64) {
        self.key = key
        self.uebHash = uebHash
        self.needed = needed
        self.total = total
        self.size = size
    }

    public var storageIndex: [UInt8] { TahoeHash.storageIndex(forKey: key) }

    public var verifier: CHKVerifierCapability {
        CHKVerifierCapability(storageIndex: storageIndex, uebHash: uebHash, needed: needed, total: total, size: size)
    }

    public var string: String {
        "URI:CHK:\(Base32.encode(key)):\(Base32.encode(uebHash)):\(needed):\(total):\(size)"
    }
}

/// A verify capability: `URI:CHK-Verifier:<b32 storage index>:<b32 UEB hash>:<k>:<n>:<size>`.
/// It can check shares but not decrypt them.
public struct CHKVerifierCapability: Equatable, Sendable {
    public let storageIndex: [UInt8]
    public let uebHash: [UInt8]
    public let needed: Int
    public let total: Int
    public let size: UInt64

    public init(storageIndex: [UInt8], uebHash: [UInt8], needed: Int, total: Int, size: UInt64) {
        (self.storageIndex, self.uebHash, self.needed, self.total, self.size) = (storageIndex, uebHash, needed, total, size)
    }

    public var string: String {
        "URI:CHK-Verifier:\(Base32.encode(storageIndex)):\(Base32.encode(uebHash)):\(needed):\(total):\(size)"
    }
}

/// A literal capability: the (at most 55-byte) file is the capability: `URI:LIT:<b32 data>`.
public struct LITCapability: Equatable, Sendable {
    public let data: [UInt8]
    public init(data: [UInt8]) { self.data = data }
    public var string: String { "URI:LIT:\(Base32.encode(data))" }
}

/// Any capability grid understands.
public enum Capability: Equatable, Sendable, CustomStringConvertible {
    case lit(LITCapability)
    case chk(CHKCapability)
    case chkVerifier(CHKVerifierCapability)

    /// Files of this many bytes or fewer are stored in a LIT capability.
    public static let literalThreshold = 55

    /// The file's size, as the capability states it.
    public var fileSize: UInt64 {
        switch self {
        case let .lit(c): return UInt64(c.data.count)
        case let .chk(c): return c.size
        case let .chkVerifier(c): return c.size
        }
    }

    /// A verify capability: enough to check and verify a file, not to read or repair it.
    public var isVerifyOnly: Bool { if case .chkVerifier = self { return true }; return false }

    public var description: String {
        switch self {
        case let .lit(c): return c.string
        case let .chk(c): return c.string
        case let .chkVerifier(c): return c.string
        }
    }

    /// Parses a capability string; the error says which part is wrong.
    public init(parsing raw: String) throws {
        let s = raw.trimmingWhitespace()
        func fail(_ m: String) -> GridError { GridError(.usage, "bad capability: \(m)") }
        if s.hasPrefix("URI:LIT:") {
            let body = s.dropFirst("URI:LIT:".count)
            guard let data = Base32.decode(body) else { throw fail("URI:LIT data is not valid base32") }
            guard data.count <= Self.literalThreshold else {
                throw fail("URI:LIT holds \(data.count) bytes; literal files hold at most \(Self.literalThreshold)")
            }
            self = .lit(LITCapability(data: data))
            return
        }
        let kind: String
        if s.hasPrefix("URI:CHK:") { kind = "URI:CHK" }
        else if s.hasPrefix("URI:CHK-Verifier:") { kind = "URI:CHK-Verifier" }
        else if s.hasPrefix("URI:SSK") || s.hasPrefix("URI:MDMF") {
            throw GridError(.incompatible, "\(s.prefix(12))…: mutable files (URI:SSK, URI:MDMF) "
                + "are not supported by this version of grid yet")
        } else {
            let shown = s.count > 24 ? String(s.prefix(24)) + "…" : s
            throw fail("'\(shown)' is not a URI:LIT, URI:CHK or URI:CHK-Verifier capability")
        }
        let parts = s.dropFirst(kind.count + 1).split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 5 else {
            throw fail("\(kind) needs 5 fields after the prefix (key:hash:k:n:size), found \(parts.count)")
        }
        let firstName = kind == "URI:CHK" ? "encryption key" : "storage index"
        guard parts[0].count == 26, let first = Base32.decode(parts[0]), first.count == 16 else {
            throw fail("\(firstName) must be 26 base32 characters (16 bytes), got '\(parts[0])'")
        }
        guard parts[1].count == 52, let hash = Base32.decode(parts[1]), hash.count == 32 else {
            throw fail("URI extension hash must be 52 base32 characters (32 bytes)")
        }
        func number(_ p: Substring, _ name: String) throws -> UInt64 {
            guard !p.isEmpty, p.count <= 19, p.allSatisfy({ $0.isASCII && $0.isNumber }), let v = UInt64(p) else {
                throw fail("\(name) '\(p)' is not a decimal number")
            }
            return v
        }
        let k = try number(parts[2], "needed shares (k)")
        let n = try number(parts[3], "total shares (n)")
        let size = try number(parts[4], "size")
        guard k >= 1, k <= n, n <= 256 else {
            throw fail("encoding \(k)-of-\(n) is invalid: need 1 <= k <= n <= 256")
        }
        guard size >= 1 else { throw fail("a CHK file cannot be empty (size 0)") }
        guard size <= URIExtension.maxFileSize else { throw fail("size \(size) is beyond what grid supports") }
        if kind == "URI:CHK" {
            self = .chk(CHKCapability(key: first, uebHash: hash, needed: Int(k), total: Int(n), size: size))
        } else {
            self = .chkVerifier(CHKVerifierCapability(
                storageIndex: first, uebHash: hash, needed: Int(k), total: Int(n), size: size))
        }
    }
}

extension String {
    /// The string without leading and trailing whitespace (spaces, tabs, newlines).
    public func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
