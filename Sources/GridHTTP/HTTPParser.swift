/// A strict HTTP/1.1 request parser (RFC 9112), with no I/O: bytes in, events out.
///
/// It accepts only what it can frame without guessing: one request line of a token
/// method, an origin-form (or `*`) target and HTTP/1.0 or HTTP/1.1; header lines of a
/// token name and a value without control characters (no obsolete line folding);
/// `Content-Length` (one value, digits only) or `Transfer-Encoding: chunked` (never
/// both: a smuggling vector), chunk sizes in hex with extensions ignored, trailers
/// skipped. Every length is bounded before it is used. Errors carry the status to
/// answer with (400, 413, 414, 431, 501, 505).
public struct HTTPLimits: Sendable {
    /// The request line and every header together.
    public var maxHeadBytes = 64 << 10
    public var maxHeaders = 100
    public var maxTargetBytes = 16 << 10
    public var maxBodyBytes: UInt64 = 1 << 42
    public init() {}
}

public struct HTTPParseError: Error, Sendable, CustomStringConvertible {
    public let status: Int
    public let message: String
    public init(_ status: Int, _ message: String) { (self.status, self.message) = (status, message) }
    public var description: String { message }
}

/// A request's line and headers.
public struct HTTPRequestHead: Sendable {
    public var method: String
    /// The target as sent (percent-encoded path and query).
    public var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    /// Header names lowercased, values trimmed, in the order sent.
    public var headers: [(name: String, value: String)]
    /// The body's length when it has one of known size (0: none); nil when chunked.
    public var contentLength: UInt64?

    public func header(_ name: String) -> String? {
        let n = name.lowercased()
        return headers.first { $0.name == n }?.value
    }

    /// Whether the connection stays open after this request's response.
    public var keepAlive: Bool {
        let tokens = (header("connection") ?? "").lowercased().split(separator: ",").map { $0.trimmingSpaces() }
        if tokens.contains("close") { return false }
        return minorVersion >= 1 || tokens.contains("keep-alive")
    }

    public var expectsContinue: Bool { header("expect")?.lowercased() == "100-continue" }

    /// The path part of the target, still percent-encoded.
    public var rawPath: String { String(target.prefix { $0 != "?" }) }
    /// The query part after `?`, still encoded ("" when none).
    public var rawQuery: String {
        guard let q = target.firstIndex(of: "?") else { return "" }
        return String(target[target.index(after: q)...])
    }
}

public struct HTTPRequestParser: Sendable {
    public enum Event: Sendable, Equatable {
        case head
        case body([UInt8])
        case end
    }

    enum State: Sendable { case head, fixed(UInt64), chunkSize, chunkData(UInt64), chunkDataEnd, trailers, done }

    public let limits: HTTPLimits
    var buffer: [UInt8] = []
    var start = 0
    var state: State = .head
    /// The head of the request being read (set when `.head` is returned).
    public private(set) var head: HTTPRequestHead?
    var bodyReceived: UInt64 = 0
    /// Bytes of a body at most handed out per event.
    public var maxEventBytes = 1 << 20

    public init(limits: HTTPLimits = HTTPLimits()) { self.limits = limits }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 1 << 16 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    /// Bytes received and not yet consumed.
    public var buffered: Int { buffer.count - start }
    /// Whether the current request has been read to its end.
    public var isDone: Bool { if case .done = state { return true } else { return false } }
    /// Whether nothing of a next request has been read yet.
    public var isIdle: Bool { if case .head = state { return buffered == 0 } else { return false } }

    /// Starts on the next request (bytes already buffered are kept: pipelining).
    public mutating func reset() {
        state = .head
        head = nil
        bodyReceived = 0
    }

    /// The next event, or nil when more bytes are needed (or the request is done).
    public mutating func next() throws -> Event? {
        switch state {
        case .head:
            guard let end = try findHeadEnd() else {
                if buffered > limits.maxHeadBytes { throw HTTPParseError(431, "request headers larger than \(limits.maxHeadBytes) bytes") }
                return nil
            }
            let h = try parseHead(buffer[start..<end])
            start = end + 4
            head = h
            if let n = h.contentLength {
                state = .fixed(n)
            } else {
                state = .chunkSize
            }
            return .head
        case let .fixed(remaining):
            if remaining == 0 { state = .done; return .end }
            guard buffered > 0 else { return nil }
            let n = Int(min(UInt64(buffered), remaining, UInt64(maxEventBytes)))
            let out = Array(buffer[start..<start + n])
            start += n
            state = .fixed(remaining - UInt64(n))
            return .body(out)
        case .chunkSize:
            guard let line = try takeLine(max: 1024) else { return nil }
            let sizeText = line.prefix { $0 != UInt8(ascii: ";") }.drop { $0 == 32 || $0 == 9 }
            let trimmed = sizeText.reversed().drop { $0 == 32 || $0 == 9 }.reversed()
            guard !trimmed.isEmpty, trimmed.count <= 15 else { throw HTTPParseError(400, "bad chunk size") }
            var size: UInt64 = 0
            for c in trimmed {
                guard let d = URLCoding.hex(c) else { throw HTTPParseError(400, "bad chunk size") }
                size = size << 4 | UInt64(d)
            }
            if size == 0 { state = .trailers; return try next() }
            let (total, overflow) = bodyReceived.addingReportingOverflow(size)
            guard !overflow, total <= limits.maxBodyBytes else { throw HTTPParseError(413, "request body larger than \(limits.maxBodyBytes) bytes") }
            bodyReceived = total
            state = .chunkData(size)
            return try next()
        case let .chunkData(remaining):
            guard buffered > 0 else { return nil }
            let n = Int(min(UInt64(buffered), remaining, UInt64(maxEventBytes)))
            let out = Array(buffer[start..<start + n])
            start += n
            state = remaining == UInt64(n) ? .chunkDataEnd : .chunkData(remaining - UInt64(n))
            return .body(out)
        case .chunkDataEnd:
            guard buffered >= 2 else { return nil }
            guard buffer[start] == 13, buffer[start + 1] == 10 else { throw HTTPParseError(400, "chunk not followed by CRLF") }
            start += 2
            state = .chunkSize
            return try next()
        case .trailers:
            while true {
                guard let line = try takeLine(max: limits.maxHeadBytes) else { return nil }
                if line.isEmpty { state = .done; return .end }
            }
        case .done:
            return nil
        }
    }

    /// A line ending in CRLF (without it), or nil when incomplete.
    mutating func takeLine(max: Int) throws -> ArraySlice<UInt8>? {
        var i = start
        while i + 1 < buffer.count {
            if buffer[i] == 13 {
                guard buffer[i + 1] == 10 else { throw HTTPParseError(400, "bare CR in a chunked body's framing") }
                let line = buffer[start..<i]
                start = i + 2
                return line
            }
            if buffer[i] == 10 { throw HTTPParseError(400, "bare LF in a chunked body's framing") }
            i += 1
            if i - start > max { throw HTTPParseError(400, "chunk framing line too long") }
        }
        if buffered > max { throw HTTPParseError(400, "chunk framing line too long") }
        return nil
    }

    /// Where the head ends (its CRLF CRLF), or nil while incomplete. A line feed without
    /// its carriage return is refused at once rather than waited on.
    func findHeadEnd() throws -> Int? {
        let limit = min(buffer.count, start + limits.maxHeadBytes + 4)
        var i = start
        while i < limit {
            if buffer[i] == 10 && (i == start || buffer[i - 1] != 13) { throw HTTPParseError(400, "bare LF in the request head") }
            if i + 3 < limit && buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { return i }
            i += 1
        }
        return nil
    }

    static func isToken(_ c: UInt8) -> Bool {
        switch c {
        case 48...57, 65...90, 97...122: return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }

    func parseHead(_ bytes: ArraySlice<UInt8>) throws -> HTTPRequestHead {
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = bytes.startIndex
        var i = bytes.startIndex
        while i < bytes.endIndex {
            if bytes[i] == 13 {
                guard i + 1 < bytes.endIndex, bytes[i + 1] == 10 else { throw HTTPParseError(400, "bare CR in the request head") }
                lines.append(bytes[lineStart..<i])
                i += 2
                lineStart = i
                continue
            }
            if bytes[i] == 10 { throw HTTPParseError(400, "bare LF in the request head") }
            i += 1
        }
        lines.append(bytes[lineStart..<bytes.endIndex])
        guard let requestLine = lines.first else { throw HTTPParseError(400, "empty request") }
        let parts = requestLine.split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw HTTPParseError(400, "malformed request line") }
        guard !parts[0].isEmpty, parts[0].count <= 32, parts[0].allSatisfy(Self.isToken) else { throw HTTPParseError(400, "malformed method") }
        guard parts[1].count <= limits.maxTargetBytes else { throw HTTPParseError(414, "request target longer than \(limits.maxTargetBytes) bytes") }
        guard let first = parts[1].first, first == UInt8(ascii: "/") || (parts[1].count == 1 && first == UInt8(ascii: "*")),
              parts[1].allSatisfy({ $0 > 32 && $0 < 127 }) else { throw HTTPParseError(400, "malformed request target") }
        let minor: Int
        switch String(decoding: parts[2], as: UTF8.self) {
        case "HTTP/1.1": minor = 1
        case "HTTP/1.0": minor = 0
        default:
            if parts[2].starts(with: "HTTP/".utf8) { throw HTTPParseError(505, "only HTTP/1.0 and HTTP/1.1 are spoken here") }
            throw HTTPParseError(400, "malformed HTTP version")
        }
        guard lines.count - 1 <= limits.maxHeaders else { throw HTTPParseError(431, "more than \(limits.maxHeaders) headers") }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw HTTPParseError(400, "header line without a colon") }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(Self.isToken) else { throw HTTPParseError(400, "malformed header name") }
            var value = line[(colon + 1)...]
            while let f = value.first, f == 32 || f == 9 { value = value.dropFirst() }
            while let l = value.last, l == 32 || l == 9 { value = value.dropLast() }
            guard value.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else { throw HTTPParseError(400, "control character in a header value") }
            headers.append((String(decoding: name, as: UTF8.self).lowercased(), String(decoding: value, as: UTF8.self)))
        }
        var head = HTTPRequestHead(method: String(decoding: parts[0], as: UTF8.self), target: String(decoding: parts[1], as: UTF8.self),
                                   minorVersion: minor, headers: headers, contentLength: 0)
        let lengths = headers.filter { $0.name == "content-length" }
        let encodings = headers.filter { $0.name == "transfer-encoding" }
        if !encodings.isEmpty {
            guard lengths.isEmpty else { throw HTTPParseError(400, "both Content-Length and Transfer-Encoding") }
            guard minor == 1, encodings.count == 1, encodings[0].value.lowercased() == "chunked" else {
                throw HTTPParseError(501, "only the chunked transfer coding is understood")
            }
            head.contentLength = nil
        } else if !lengths.isEmpty {
            // Several equal values are allowed by RFC 9110; different ones are not.
            let values = Set(lengths.flatMap { $0.value.split(separator: ",").map { $0.trimmingSpaces() } })
            guard values.count == 1, let v = values.first, !v.isEmpty, v.count <= 19, v.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                  let n = UInt64(v) else { throw HTTPParseError(400, "malformed Content-Length") }
            guard n <= limits.maxBodyBytes else { throw HTTPParseError(413, "request body larger than \(limits.maxBodyBytes) bytes") }
            head.contentLength = n
        }
        guard minor == 0 || head.header("host") != nil else { throw HTTPParseError(400, "HTTP/1.1 request without Host") }
        return head
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}

/// Percent-decoding and query strings (application/x-www-form-urlencoded).
public enum URLCoding {
    /// Decodes %XX escapes (and `+` as space when `plusIsSpace`); nil when malformed or not UTF-8.
    public static func decode(_ s: Substring, plusIsSpace: Bool = false) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let c = it.next() {
            if c == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(), let hv = hex(h), let lv = hex(l) else { return nil }
                out.append(hv << 4 | lv)
            } else if c == UInt8(ascii: "+") && plusIsSpace {
                out.append(32)
            } else {
                out.append(c)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    public static func decode(_ s: String, plusIsSpace: Bool = false) -> String? { decode(s[...], plusIsSpace: plusIsSpace) }

    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }

    /// `a=1&b=x%20y` as ordered pairs; nil when an escape is malformed.
    public static func query(_ q: String) -> [(String, String)]? {
        var out: [(String, String)] = []
        for part in q.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let k = decode(kv[0], plusIsSpace: true) else { return nil }
            let v = kv.count > 1 ? decode(kv[1], plusIsSpace: true) : ""
            guard let v else { return nil }
            out.append((k, v))
        }
        return out
    }

    /// Percent-encodes everything but unreserved characters (and `/` when `keepSlash`).
    public static func encode(_ s: String, keepSlash: Bool = false) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case 48...57, 65...90, 97...122, UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            case UInt8(ascii: "/") where keepSlash, UInt8(ascii: ":"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += "%" + String(b, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
