import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum RawHTTPClientError: Error { case connectFailed }

/// A blocking HTTP client on a raw socket, for saying exactly what goes on the wire.
public final class RawHTTPClient {
    public let fd: Int32
    public var buffer: [UInt8] = []

    public init(port: UInt16, timeout: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { connect(fd, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_in>.size)) }
        guard rc == 0 else { throw RawHTTPClientError.connectFailed }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    public func send(_ s: String) { send(Array(s.utf8)) }
    public func send(_ b: [UInt8]) {
        var off = 0
        while off < b.count {
            let n = b[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads more bytes; false at end of stream or timeout.
    public func fill() -> Bool {
        var tmp = [UInt8](repeating: 0, count: 65536)
        let n = tmp.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return false }
        buffer += tmp[0..<n]
        return true
    }

    public struct Response {
        public var status: Int
        public var headers: [String: String]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// One request with a Content-Length body, and its response.
    public func request(_ method: String, _ target: String, body: [UInt8] = [], headers: [String: String] = [:]) -> Response? {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for (k, v) in headers.sorted(by: { $0.key < $1.key }) { head += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "PUT" || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        send(Array((head + "\r\n").utf8) + body)
        return response(head: method == "HEAD")
    }

    /// Reads one response (Content-Length, chunked, or to the end of the stream).
    public func response(head: Bool = false) -> Response? {
        while true {
            if let r = findHeadEnd() {
                let headText = String(decoding: buffer[0..<r], as: UTF8.self)
                var lines = headText.components(separatedBy: "\r\n")
                let status = Int(lines.removeFirst().split(separator: " ")[1]) ?? 0
                var headers: [String: String] = [:]
                for l in lines {
                    guard let c = l.firstIndex(of: ":") else { continue }
                    headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
                }
                buffer.removeFirst(r + 4)
                if status == 100 { continue }
                if head || status == 204 || status == 304 { return Response(status: status, headers: headers, body: []) }
                if let n = headers["content-length"].flatMap(Int.init) {
                    while buffer.count < n { if !fill() { return nil } }
                    let body = Array(buffer[0..<n])
                    buffer.removeFirst(n)
                    return Response(status: status, headers: headers, body: body)
                }
                if headers["transfer-encoding"] == "chunked" {
                    var body: [UInt8] = []
                    while true {
                        guard let line = readLine() else { return nil }
                        let size = Int(line.split(separator: ";")[0], radix: 16) ?? -1
                        if size < 0 { return nil }
                        if size == 0 { _ = readLine(); return Response(status: status, headers: headers, body: body) }
                        while buffer.count < size + 2 { if !fill() { return nil } }
                        body += buffer[0..<size]
                        buffer.removeFirst(size + 2)
                    }
                }
                while fill() {}
                let body = buffer
                buffer = []
                return Response(status: status, headers: headers, body: body)
            }
            if !fill() { return nil }
        }
    }

    public func readLine() -> String? {
        while true {
            if let i = (0..<max(0, buffer.count - 1)).first(where: { buffer[$0] == 13 && buffer[$0 + 1] == 10 }) {
                let s = String(decoding: buffer[0..<i], as: UTF8.self)
                buffer.removeFirst(i + 2)
                return s
            }
            if !fill() { return nil }
        }
    }

    public func findHeadEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { return i }
        return nil
    }

    /// Whether the server closed the connection (read returns 0) within the timeout.
    public func isClosedByPeer() -> Bool {
        while true {
            var tmp = [UInt8](repeating: 0, count: 4096)
            let n = tmp.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return true }
            if n < 0 { return false }
        }
    }
}

