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

/// Cuts a byte stream into frames. Each body byte is copied once, from the bytes handed
/// to `append` into the frame's own body, which is reserved at its declared size as soon
/// as the header arrives (up to `reserveLimit`; a longer body grows as its bytes come,
/// so 9 bytes from a peer cannot make us reserve a maximum frame). The length is checked
/// before any body is buffered.
public struct FrameParser {
    /// Frames parsed and not yet taken by `next`.
    var ready: [Frame] = []
    var readyStart = 0
    /// The error that stopped parsing, thrown once the frames before it are taken.
    var failure: WireError?
    /// The header being read (fewer than 9 bytes), or the header of the body being filled.
    var header: [UInt8] = []
    var body: [UInt8] = []
    /// Body bytes still to come for the frame whose header has been read; -1 between frames.
    var bodyMissing = -1
    var type = FrameType.ping
    var id: UInt32 = 0
    public let maxFrameLength: Int
    /// A body is reserved whole on its header up to this size.
    public static let reserveLimit = 1 << 20

    public init(maxFrameLength: Int = Frame.maxFrameLength) { self.maxFrameLength = maxFrameLength }

    /// Bytes received that are not yet part of a whole frame.
    public var bufferedBytes: Int { bodyMissing < 0 ? header.count : Frame.headerSize + body.count }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil else { return }
        var at = 0
        while at < bytes.count {
            if bodyMissing < 0 {
                let n = min(Frame.headerSize - header.count, bytes.count - at)
                header.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
                at += n
                if header.count >= 4, let e = lengthError() { failure = e; return }
                guard header.count == Frame.headerSize else { continue }
                guard let t = FrameType(rawValue: header[4]) else {
                    failure = WireError(.badFrame, "unknown frame type \(header[4])")
                    return
                }
                type = t
                id = header[5..<9].reduce(0) { $0 << 8 | UInt32($1) }
                bodyMissing = declaredLength - 5
                body = []
                body.reserveCapacity(min(bodyMissing, Self.reserveLimit))
            } else {
                let n = min(bodyMissing, bytes.count - at)
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
                at += n
                bodyMissing -= n
            }
            if bodyMissing == 0 {
                ready.append(Frame(type, id: id, body: body))
                body = []
                header.removeAll(keepingCapacity: true)
                bodyMissing = -1
            }
        }
    }

    /// The length field of the header being read (its first 4 bytes are here).
    private var declaredLength: Int { header[0..<4].reduce(0) { $0 << 8 | Int($1) } }

    private func lengthError() -> WireError? {
        let len = declaredLength
        if len < 5 { return WireError(.badFrame, "frame length \(len) is too short") }
        if len > maxFrameLength {
            return WireError(.tooLarge, "frame of \(len) bytes exceeds the maximum of \(maxFrameLength)")
        }
        return nil
    }

    /// The next complete frame, nil if more bytes are needed; throws on a malformed frame
    /// (after the whole frames that came before it).
    public mutating func next() throws -> Frame? {
        if readyStart < ready.count {
            let frame = ready[readyStart]
            ready[readyStart] = Frame(.ping)  // the caller holds the only reference to the body
            readyStart += 1
            if readyStart == ready.count { ready.removeAll(keepingCapacity: true); readyStart = 0 }
            return frame
        }
        if let failure { throw failure }
        return nil
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
