import GridSystem

/// Errors on the wire. `code` travels in ERROR frames; `message` is one line for people.
public struct WireError: MessageError, Equatable {
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) { (self.code, self.message) = (code, message) }

    /// Error codes carried in ERROR frames (docs/protocol.md lists them).
    public enum Code: UInt16, Sendable {
        case badFrame = 1          // malformed frame or message
        case unknownMethod = 2
        case notAuthorized = 3     // wrong introducer secret, wrong service
        case notFound = 4
        case conflict = 5          // e.g. a double write with different data
        case noSpace = 6           // reserved space would be crossed
        case `internal` = 7
        case badSecret = 8         // wrong write enabler or lease secret
        case tooLarge = 9
        case versionMismatch = 10
        case badRequest = 11       // well-formed but invalid arguments
        case timeout = 100         // local only: the call timed out
        case connectionLost = 101  // local only
        case pinMismatch = 102     // local only: the server's key is not the one expected
        case unreachable = 103     // local only: cannot connect

        public init(raw: UInt16) { self = Code(rawValue: raw) ?? .internal }

    }

    public var errorClass: ErrorClass {
        switch code {
        case .badFrame, .unknownMethod, .versionMismatch: return .incompatible
        case .notAuthorized, .badSecret, .pinMismatch: return .denied
        case .notFound: return .notFound
        case .conflict: return .conflict
        case .noSpace: return .noSpace
        case .internal, .timeout, .connectionLost, .unreachable: return .unavailable
        case .tooLarge, .badRequest: return .usage
        }
    }
}

/// A message with one encoder and one decoder: the same code writes it on one side and
/// reads it on the other. `init(from:)` must read exactly what `encode(to:)` wrote.
public protocol WireMessage: Equatable, Sendable {
    func encode(to w: inout WireWriter)
    init(from r: inout WireReader) throws
    /// The whole message as bytes (a message that is one byte string may return it as is).
    func encoded() -> [UInt8]
}

extension WireMessage {
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        encode(to: &w)
        return w.bytes
    }

    /// Decodes a whole message: bytes left over are an error.
    public init(decoding bytes: [UInt8]) throws {
        var r = WireReader(bytes)
        try self.init(from: &r)
        try r.finish()
    }
}

/// A request of some service: the method that carries it and the type of its reply.
public protocol RPCRequest: WireMessage {
    associatedtype Response: WireMessage
    associatedtype Method: RawRepresentable where Method.RawValue == UInt16
    static var method: Method { get }
}

/// A message with no fields (its type says everything): encoding writes nothing.
public protocol EmptyWireMessage: WireMessage {
    init()
}

extension EmptyWireMessage {
    public func encode(to w: inout WireWriter) {}
    public init(from r: inout WireReader) throws { self.init() }
}

/// The message of a call or reply that carries nothing.
public struct EmptyMessage: EmptyWireMessage {
    public init() {}
}

/// Appends big-endian integers and length-prefixed byte strings.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xff)) }
    public mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
    public mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
    /// Exactly `count` raw bytes (a fixed-size field); the caller guarantees the length.
    public mutating func fixed(_ b: [UInt8]) { bytes += b }
    /// be32 length, then the bytes.
    public mutating func data(_ b: [UInt8]) { u32(UInt32(b.count)); bytes += b }
    public mutating func data(_ b: UnsafeRawBufferPointer) { u32(UInt32(b.count)); bytes += b }
    public mutating func string(_ s: String) { data(Array(s.utf8)) }
    /// be32 count, then each element.
    public mutating func list<T>(_ items: [T], _ each: (inout WireWriter, T) -> Void) {
        u32(UInt32(items.count))
        for i in items { each(&self, i) }
    }
}

/// Reads what WireWriter writes, refusing anything that runs past the end, declares more
/// elements than bytes remain, or leaves bytes unread (`finish()`).
public struct WireReader {
    let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }

    /// A copy of the bytes not read yet.
    public var rest: [UInt8] { offset == 0 ? bytes : Array(bytes[offset...]) }

    /// Reads every byte left (a message whose last field runs to its end).
    public mutating func remainder() -> [UInt8] {
        defer { offset = bytes.count }
        return rest
    }

    func need(_ n: Int, _ what: String) throws {
        guard n >= 0, remaining >= n else {
            throw WireError(.badFrame, "message truncated reading \(what) (need \(n) bytes, have \(remaining))")
        }
    }

    public mutating func u8(_ what: String = "u8") throws -> UInt8 {
        try need(1, what)
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func bool(_ what: String = "bool") throws -> Bool {
        let v = try u8(what)
        guard v <= 1 else { throw WireError(.badFrame, "\(what) is \(v), not a boolean") }
        return v == 1
    }

    public mutating func u16(_ what: String = "u16") throws -> UInt16 {
        try need(2, what)
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    public mutating func u32(_ what: String = "u32") throws -> UInt32 { UInt32(try bigEndian(4, what)) }

    public mutating func u64(_ what: String = "u64") throws -> UInt64 { try bigEndian(8, what) }

    mutating func bigEndian(_ n: Int, _ what: String) throws -> UInt64 {
        try need(n, what)
        var v: UInt64 = 0
        for i in 0..<n { v = v << 8 | UInt64(bytes[offset + i]) }
        offset += n
        return v
    }

    public mutating func fixed(_ n: Int, _ what: String) throws -> [UInt8] {
        try need(n, what)
        defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }

    /// Where a length-prefixed byte string lies, without copying it (see `withBytes`).
    public mutating func dataRange(_ what: String = "bytes", max: Int = Int.max) throws -> Range<Int> {
        let n = Int(try u32("length of \(what)"))
        guard n <= max else { throw WireError(.tooLarge, "\(what) of \(n) bytes exceeds the limit of \(max)") }
        try need(n, what)
        defer { offset += n }
        return offset..<(offset + n)
    }

    /// Reads bytes of the message in place.
    public func withBytes<R>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    public mutating func data(_ what: String = "bytes", max: Int = Int.max) throws -> [UInt8] {
        let n = Int(try u32("length of \(what)"))
        guard n <= max else { throw WireError(.tooLarge, "\(what) of \(n) bytes exceeds the limit of \(max)") }
        return try fixed(n, what)
    }

    public mutating func string(_ what: String = "string", max: Int = 4096) throws -> String {
        let b = try data(what, max: max)
        guard let s = String(validating: b, as: UTF8.self) else { throw WireError(.badFrame, "\(what) is not UTF-8") }
        return s
    }

    /// A count followed by that many elements; each element must take at least `minElementSize` bytes,
    /// so a huge declared count is refused before anything is allocated.
    public mutating func list<T>(_ what: String, minElementSize: Int = 1, max: Int = 1 << 20,
                                 _ each: (inout WireReader) throws -> T) throws -> [T] {
        let n = Int(try u32("count of \(what)"))
        guard n <= max, n <= remaining / Swift.max(1, minElementSize) else {
            throw WireError(.badFrame, "\(what) declares \(n) elements, more than the message holds")
        }
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try each(&self)) }
        return out
    }

    /// Throws if any bytes are left: every message is parsed completely.
    public func finish(_ what: String = "message") throws {
        guard remaining == 0 else { throw WireError(.badFrame, "\(remaining) unexpected bytes after \(what)") }
    }
}
