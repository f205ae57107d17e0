import GridSystem
/// The frames of grid's RPC protocol (docs/protocol.md).
///
///     be32 length            bytes that follow (1 + 4 + body), at most maxFrameLength
///     u8   type              FrameType
///     be32 id                request id (0 for HELLO, HELLO_OK, PING, PONG)
///     ...  body
public enum FrameType: UInt8, Sendable {
    case hello = 1      // client → server: magic, versions, service, secret
    case helloOK = 2    // server → client: chosen version
    case request = 3    // be16 method, then the method's arguments
    case response = 4   // the method's result
    case error = 5      // be16 code, be32 length + UTF-8 message
    case ping = 6
    case pong = 7
    case notify = 8     // server → client, unsolicited: be16 method, then the payload
}

public struct Frame: Equatable, Sendable {
    public var type: FrameType
    public var id: UInt32
    public var body: [UInt8]

    public init(_ type: FrameType, id: UInt32 = 0, body: [UInt8] = []) {
        self.type = type
        self.id = id
        self.body = body
    }

    /// Largest value of the length field: 16 MiB of body plus the 5-byte type and id.
    public static let maxFrameLength = (16 << 20) + 5
    public static let headerSize = 4 + 1 + 4

    /// The bytes on the wire.
    public func encoded() -> [UInt8] {
        var w = WireWriter(capacity: body.count + Self.headerSize)
        Self.writeHeader(&w, type: type, id: id, bodyLength: body.count)
        w.fixed(body)
        return w.bytes
    }

    /// The 9-byte header: be32 length of what follows it, the type, be32 request id.
    public static func writeHeader(_ w: inout WireWriter, type: FrameType, id: UInt32, bodyLength: Int) {
        w.u32(UInt32(1 + 4 + bodyLength))
        w.u8(type.rawValue)
        w.u32(id)
    }

    public static func error(id: UInt32, _ e: WireError) -> Frame {
        var w = WireWriter()
        w.u16(e.code.rawValue)
        w.string(String(e.message.prefix(1000)))
        return Frame(.error, id: id, body: w.bytes)
    }

    /// Decodes an ERROR frame's body.
    public static func parseError(_ body: [UInt8]) -> WireError {
        var r = WireReader(body)
        guard let code = try? r.u16("error code"), let msg = try? r.string("error message") else {
            return WireError(.badFrame, "malformed error frame")
        }
        return WireError(.init(raw: code), msg)
    }
}

/// Cuts a byte stream into frames. The length is checked before any body is buffered,
/// so a peer cannot make us allocate more than one maximum frame.
public struct FrameParser {
    var buffer: [UInt8] = []
    var start = 0
    public let maxFrameLength: Int

    public init(maxFrameLength: Int = Frame.maxFrameLength) { self.maxFrameLength = maxFrameLength }

    public var bufferedBytes: Int { buffer.count - start }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) { buffer += bytes }

    /// The next complete frame, nil if more bytes are needed; throws on a malformed frame.
    public mutating func next() throws -> Frame? {
        let avail = buffer.count - start
        guard avail >= 4 else { compact(); return nil }
        var len = 0
        for i in 0..<4 { len = len << 8 | Int(buffer[start + i]) }
        guard len >= 5 else { throw WireError(.badFrame, "frame length \(len) is too short") }
        guard len <= maxFrameLength else {
            throw WireError(.tooLarge, "frame of \(len) bytes exceeds the maximum of \(maxFrameLength)")
        }
        guard avail >= 4 + len else { compact(); return nil }
        let typeByte = buffer[start + 4]
        guard let type = FrameType(rawValue: typeByte) else {
            throw WireError(.badFrame, "unknown frame type \(typeByte)")
        }
        var id: UInt32 = 0
        for i in 0..<4 { id = id << 8 | UInt32(buffer[start + 5 + i]) }
        let body = Array(buffer[(start + 9)..<(start + 4 + len)])
        start += 4 + len
        if start == buffer.count { buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 16); start = 0 }
        return Frame(type, id: id, body: body)
    }

    mutating func compact() {
        if start > 0 {
            buffer.removeFirst(start)
            start = 0
        }
        if buffer.isEmpty && buffer.capacity > 1 << 16 { buffer = [] }
    }
}

/// The first exchange: the client's HELLO and the server's HELLO_OK.
public struct Hello: Equatable, Sendable {
    public static let magic: [UInt8] = Array("GRID".utf8)
    /// Protocol versions this implementation speaks. 2: the server runs a connection's
    /// requests on one bucket writer (write, close, abort) in the order they arrived, so a
    /// client may close without waiting for the writes' replies (`orderedBucketsVersion`).
    /// 3: the client may name the buckets it allocates and write them in the same flight
    /// (`namedBucketsVersion`), and read a share with the census (get_buckets_peek).
    public static let currentVersion: UInt16 = 3
    public static let minVersion: UInt16 = 1
    /// The first version whose servers order a bucket's requests (see above).
    public static let orderedBucketsVersion: UInt16 = 2
    /// The first version whose servers take allocate_named_buckets.
    public static let namedBucketsVersion: UInt16 = 3
    /// The first version whose servers take get_buckets_peek.
    public static let peekVersion: UInt16 = 3

    public var minVersion: UInt16
    public var maxVersion: UInt16
    /// The service asked for: "storage" or "introducer".
    public var service: String
    /// A shared secret some services require (the introducer's); empty otherwise.
    public var secret: [UInt8]

    public init(service: String, secret: [UInt8] = [], minVersion: UInt16 = Hello.minVersion, maxVersion: UInt16 = Hello.currentVersion) {
        self.service = service
        self.secret = secret
        self.minVersion = minVersion
        self.maxVersion = maxVersion
    }

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.fixed(Self.magic)
        w.u16(minVersion)
        w.u16(maxVersion)
        w.string(service)
        w.data(secret)
        return w.bytes
    }

    public init(parsing body: [UInt8]) throws {
        var r = WireReader(body)
        guard try r.fixed(4, "magic") == Self.magic else { throw WireError(.badFrame, "not a grid client (bad magic)") }
        minVersion = try r.u16("min version")
        maxVersion = try r.u16("max version")
        service = try r.string("service", max: 64)
        secret = try r.data("secret", max: 256)
        try r.finish("hello")
    }

    /// The version both sides speak, or nil.
    public func negotiate() -> UInt16? {
        let v = min(maxVersion, Self.currentVersion)
        return v >= max(minVersion, Self.minVersion) ? v : nil
    }
}

// MARK: RPC framing on a transport

extension Connection {
    func send(_ frame: Frame) { send(encoded: frame.encoded()) }
    /// Best-effort immediate write of a frame (used just before closing).
    func sendNow(_ frame: Frame) { sendNow(frame.encoded()) }
}

/// The RPC's framing over a `Connection`'s byte stream: frames parsed as bytes arrive.
/// A stream that does not parse cannot be resynchronised: the peer is told why
/// (an ERROR frame) and the connection is closed.
final class FrameReceiver {
    var parser = FrameParser()
    var onFrame: ((Frame) -> Void)?

    init(_ conn: Connection) {
        conn.onData = { [self, unowned conn] bytes in
            self.parser.append(bytes)
            do {
                while conn.isOpen, let frame = try self.parser.next() { self.onFrame?(frame) }
            } catch let e as WireError {
                conn.sendNow(Frame.error(id: 0, e))
                conn.close(e)
            } catch {
                conn.close(WireError(.badFrame, "\(error)"))
            }
        }
    }
}
