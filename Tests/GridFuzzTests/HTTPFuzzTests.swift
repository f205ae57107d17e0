import Foundation
import GridHTTP
import GridSystem
import GridTestSupport
import GridWire
import XCTest

/// The HTTP parser under generated and damaged requests (at least 15,000 in the suite;
/// `tools/fuzz.sh` runs it as long as it runs the service fuzzer): every input either
/// parses or is refused with a status, whole or split at random places alike; then a
/// live server is sent a few hundred damaged requests over sockets and must still answer.
final class HTTPFuzzTests: XCTestCase {
    typealias RNG = SplitMix64

    static func generate(_ r: inout RNG) -> [UInt8] {
        func pick<T>(_ a: [T]) -> T { a[Int.random(in: 0..<a.count, using: &r)] }
        let method = pick(["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "GET", "PUT", "G@T", ""])
        let target = pick(["/", "/uri", "/uri/URI%3ACHK%3Aab", "/uri?t=mkdir&format=MDMF", "/%zz", "/%", "*", "/a?b=%ff%fe", "/" + String(repeating: "x", count: Int.random(in: 0...300, using: &r))])
        let version = pick(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 ", "http/1.1"])
        var head = "\(method) \(target) \(version)\r\n"
        if Int.random(in: 0..<10, using: &r) > 0 { head += "Host: x\r\n" }
        var body: [UInt8] = []
        switch Int.random(in: 0..<5, using: &r) {
        case 0:
            let n = Int.random(in: 0...64, using: &r)
            head += "Content-Length: \(pick(["\(n)", "\(n), \(n)", "-1", "18446744073709551616", "0x10", " \(n) "]))\r\n"
            body = Array(repeating: 0x61, count: n)
        case 1:
            head += "Transfer-Encoding: \(pick(["chunked", "Chunked", "gzip, chunked", "chunked, chunked"]))\r\n"
            for _ in 0..<Int.random(in: 0...3, using: &r) {
                let n = Int.random(in: 0...20, using: &r)
                body += Array((pick([String(n, radix: 16), String(n, radix: 16) + ";x=y", "ffffffffffffffffff", "", "-1"]) + "\r\n").utf8)
                body += Array(repeating: 0x62, count: n) + (Bool.random(using: &r) ? [13, 10] : [10])
            }
            body += Array(pick(["0\r\n\r\n", "0\r\nT: v\r\n\r\n", "0\r\n"]).utf8)
        case 2:
            head += "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"
        default:
            break
        }
        for _ in 0..<Int.random(in: 0...2, using: &r) {
            head += pick(["Expect: 100-continue\r\n", "Connection: close\r\n", "Connection: keep-alive\r\n", " folded\r\n", "NoColon\r\n",
                          "X: \u{7f}\r\n", "Range: bytes=0-1\r\n", ": empty\r\n", "A:b\r\n"])
        }
        return Array((head + "\r\n").utf8) + body
    }

    static func mutate(_ b: inout [UInt8], _ r: inout RNG) {
        guard !b.isEmpty else { return }
        for _ in 0..<Int.random(in: 0...3, using: &r) {
            let i = Int.random(in: 0..<b.count, using: &r)
            switch Int.random(in: 0..<3, using: &r) {
            case 0: b[i] = UInt8.random(in: 0...255, using: &r)
            case 1: b.insert(pick([13, 10, 0, 58, 32, 255], &r), at: i)
            default: b.remove(at: i)
            }
            if b.isEmpty { return }
        }
    }

    static func pick(_ a: [UInt8], _ r: inout RNG) -> UInt8 { a[Int.random(in: 0..<a.count, using: &r)] }

    /// Parses `bytes` in pieces of the given sizes; returns the events or the refusal's status.
    static func run(_ bytes: [UInt8], pieces: [Int]) -> Result<[HTTPRequestParser.Event], HTTPParseError> {
        var p = HTTPRequestParser()
        var events: [HTTPRequestParser.Event] = []
        var at = 0
        var pieceIndex = 0
        while at < bytes.count {
            let n = min(bytes.count - at, max(1, pieces[pieceIndex % pieces.count]))
            pieceIndex += 1
            p.append(Array(bytes[at..<at + n]))
            at += n
            do {
                while let e = try p.next() {
                    events.append(e)
                    if case .end = e { p.reset() }  // pipelining: the next request
                }
            } catch let e as HTTPParseError {
                return .failure(e)
            } catch {
                return .failure(HTTPParseError(0, "\(error)"))
            }
        }
        return .success(events)
    }

    static func body(_ events: [HTTPRequestParser.Event]) -> [UInt8] {
        events.flatMap { e -> [UInt8] in if case let .body(b) = e { return b }; return [] }
    }

    func testHTTPParserSurvivesFuzzedRequests() throws {
        let env = ProcessInfo.processInfo.environment
        var rng = RNG(state: env["GRID_FUZZ_SEED"].flatMap(UInt64.init) ?? 20261203)
        let seconds = env["GRID_FUZZ_SECONDS"].flatMap(Double.init) ?? 0
        let minimum = 15_000
        let start = monotonicNow()
        var n = 0, parsed = 0
        var statuses: [Int: Int] = [:]
        while n < minimum || monotonicNow() - start < seconds {
            var b = Self.generate(&rng)
            if Int.random(in: 0..<3, using: &rng) == 0 { Self.mutate(&b, &rng) }
            if Int.random(in: 0..<8, using: &rng) == 0 { b += Self.generate(&rng) }  // two pipelined requests
            let whole = Self.run(b, pieces: [b.count])
            let split = Self.run(b, pieces: (0..<4).map { _ in Int.random(in: 1...9, using: &rng) })
            switch (whole, split) {
            case let (.success(a), .success(c)):
                parsed += 1
                XCTAssertEqual(Self.body(a), Self.body(c), "one body whether the bytes come whole or in pieces")
            case let (.failure(a), .failure(c)):
                XCTAssertEqual(a.status, c.status, "the same refusal whole and split: \(String(decoding: b, as: UTF8.self).debugDescription)")
                XCTAssertTrue([400, 413, 414, 431, 501, 505].contains(a.status), "\(a.status) \(a.message)")
                statuses[a.status, default: 0] += 1
            default:
                XCTFail("whole and split disagree on \(String(decoding: b, as: UTF8.self).debugDescription): \(whole) vs \(split)")
            }
            _ = URLCoding.query(String(decoding: b.prefix(200), as: UTF8.self))
            n += 1
        }
        print("fuzz: http parser: \(n) requests in \(String(format: "%.1f", monotonicNow() - start)) s, \(parsed) parsed, refused: "
              + statuses.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        XCTAssertGreaterThan(parsed, n / 20)
        XCTAssertGreaterThan(statuses[400] ?? 0, n / 10)
    }

    struct Answer: HTTPHandler {
        func handle(_ req: HTTPRequest, _ resp: HTTPResponse) async {
            let n = (try? await req.readWholeBody(limit: 1 << 16))?.count ?? -1
            await resp.send(status: 200, text: "\(n)")
        }
    }

    /// Damaged requests over real sockets: the server answers or hangs up, never traps,
    /// and still serves a good request after every one.
    func testHTTPServerSurvivesDamagedRequestsOnTheWire() throws {
        let loop = try EventLoop(name: "http-fuzz")
        defer { loop.shutdown() }
        var config = HTTPServerConfig()
        config.headTimeout = 1
        let server = HTTPServer(loop: loop, handler: Answer(), config: config)
        defer { server.stop() }
        try server.listen(host: "127.0.0.1", port: 0)
        var rng = RNG(state: 7)
        var answered = 0
        for _ in 0..<300 {
            var b = Self.generate(&rng)
            Self.mutate(&b, &rng)
            let c = try RawHTTPClient(port: server.port, timeout: 3)
            c.send(b)
            // Half-closed: a complete request is still answered, anything else ends now.
            shutdown(c.fd, Int32(SHUT_WR))
            if c.response() != nil { answered += 1 }
        }
        XCTAssertGreaterThan(answered, 100)
        let ok = try RawHTTPClient(port: server.port)
        XCTAssertEqual(ok.request("PUT", "/x", body: Array("abc".utf8))?.text, "3\n")
    }
}
