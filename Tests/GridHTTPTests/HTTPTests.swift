import Foundation
import GridHTTP
import GridMetrics
import GridSystem
import GridWire
import GridTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Echoes what it was sent: method, target, body length and SHA-256-free checksum; the
/// body itself for /echo; streams N bytes for /bytes?n=; waits for /slow.
struct EchoHandler: HTTPHandler {
    func handle(_ req: HTTPRequest, _ resp: HTTPResponse) async {
        do {
            switch req.head.rawPath {
            case "/echo":
                let body = try await req.readWholeBody(limit: 1 << 20)
                await resp.send(status: 200, contentType: "application/octet-stream", body: body)
            case "/count":
                var n = 0
                var sum: UInt64 = 0
                while let c = try await req.readBody() {
                    n += c.count
                    for b in c { sum = sum &* 31 &+ UInt64(b) }
                }
                await resp.send(status: 200, text: "\(n) \(sum)")
            case "/discard":
                var n = 0
                while let c = try await req.readBody() { n += c.count }
                await resp.send(status: 200, text: "\(n)")
            case "/bytes":
                let n = Int(req.argument("n") ?? "0") ?? 0
                let chunked = req.argument("chunked") == "1"
                try await resp.start(status: 200, contentLength: chunked ? nil : UInt64(n))
                var left = n
                var i = 0
                while left > 0 {
                    let k = min(left, 100_000)
                    try await resp.write((0..<k).map { UInt8(truncatingIfNeeded: $0 &+ i) })
                    left -= k
                    i += k
                }
            case "/slow":
                try await Task.sleep(nanoseconds: 1_500_000_000)
                await resp.send(status: 200, text: "late")
            case "/none":
                return  // no response: the server answers 500
            default:
                await resp.send(status: 404, text: "no \(req.head.rawPath)")
            }
        } catch {
            await resp.send(status: 500, text: "\(error)")
        }
    }
}

final class HTTPParserTests: XCTestCase {
    func parse(_ s: String) throws -> (HTTPRequestHead?, [UInt8], Bool) {
        var p = HTTPRequestParser()
        p.append(Array(s.utf8))
        var head: HTTPRequestHead?
        var body: [UInt8] = []
        var ended = false
        while let e = try p.next() {
            switch e {
            case .head: head = p.head
            case let .body(b): body += b
            case .end: ended = true
            }
        }
        return (head, body, ended)
    }

    func status(_ s: String) -> Int? {
        do { _ = try parse(s); return nil } catch let e as HTTPParseError { return e.status } catch { return -1 }
    }

    func testRequestsThatParse() throws {
        var (h, body, ended) = try parse("GET /uri/URI%3ALIT%3Anb?t=json&x=a+b HTTP/1.1\r\nHost: x\r\nX-Thing:  v  \r\n\r\n")
        XCTAssertEqual(h?.method, "GET")
        XCTAssertEqual(h?.rawPath, "/uri/URI%3ALIT%3Anb")
        XCTAssertEqual(h?.rawQuery, "t=json&x=a+b")
        XCTAssertEqual(h?.header("x-thing"), "v")
        XCTAssertEqual(h?.keepAlive, true)
        XCTAssertTrue(ended)
        XCTAssertEqual(URLCoding.query("t=json&x=a+b%2F")?.map { $0.1 }, ["json", "a b/"])
        (h, body, ended) = try parse("PUT /uri HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhelloEXTRA")
        XCTAssertEqual(body, Array("hello".utf8))
        XCTAssertEqual(h?.keepAlive, false)
        (h, body, ended) = try parse("PUT /uri HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
        XCTAssertEqual(String(decoding: body, as: UTF8.self), "hello world")
        XCTAssertTrue(ended)
        XCTAssertNil(h?.contentLength)
        (h, _, _) = try parse("GET / HTTP/1.0\r\n\r\n")
        XCTAssertEqual(h?.keepAlive, false, "HTTP/1.0 closes unless asked")
    }

    func testMalformedRequestsAreRefusedWithTheirStatus() {
        XCTAssertEqual(status("GET / HTTP/1.1\r\n\r\n"), 400, "no Host")
        XCTAssertEqual(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505)
        XCTAssertEqual(status("GET / FOO\r\nHost: x\r\n\r\n"), 400)
        XCTAssertEqual(status("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400, "two spaces")
        XCTAssertEqual(status("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400, "absolute form is not served")
        XCTAssertEqual(status("GET / HTTP/1.1\nHost: x\n\n"), 400, "bare LF, refused at once")
        XCTAssertEqual(status("GET / HTTP/1.1\r\nHost: x\r\nBad\r\n\r\n"), 400, "header without colon")
        XCTAssertEqual(status("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"), 400, "obsolete line folding")
        XCTAssertEqual(status("GET / HTTP/1.1\r\nHost: x\r\nA: b\u{1}c\r\n\r\n"), 400, "control character")
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400, "CL and TE: smuggling")
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"), 501)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n"), 400, "chunk size overflow")
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n"), 400, "chunk without CRLF")
        XCTAssertEqual(status("GET / HTTP/1.1\r\nHost: x\r\n" + String(repeating: "A: b\r\n", count: 101) + "\r\n"), 431)
        XCTAssertEqual(status("GET /" + String(repeating: "a", count: 70_000) + " HTTP/1.1\r\n"), 431)
        XCTAssertEqual(status("GET /" + String(repeating: "a", count: 20_000) + " HTTP/1.1\r\nHost: x\r\n\r\n"), 414)
        var limits = HTTPLimits()
        limits.maxBodyBytes = 10
        var p = HTTPRequestParser(limits: limits)
        p.append(Array("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n".utf8))
        XCTAssertThrowsError(try p.next()) { XCTAssertEqual(($0 as? HTTPParseError)?.status, 413) }
    }

    /// Random and mutated requests: the parser throws or parses, never traps, and a
    /// request split at any byte parses as it does whole.
    func testFuzzedRequestsNeverTrap() throws {
        let seeds = ["GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
                     "PUT /uri HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                     "POST /uri?t=mkdir HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"]
        var rng = SystemRandomNumberGenerator()
        var parsed = 0, refused = 0
        for i in 0..<4000 {
            var b = Array(seeds[i % seeds.count].utf8)
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 1: b.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...b.count, using: &rng))
                case 2: if b.count > 1 { b.remove(at: Int.random(in: 0..<b.count, using: &rng)) }
                default: b.insert(contentsOf: Array(["\r\n", ":", "0", "chunked", "\r\n\r\n", "Content-Length: 9"][Int.random(in: 0..<6, using: &rng)].utf8),
                                  at: Int.random(in: 0...b.count, using: &rng))
                }
            }
            var whole = HTTPRequestParser()
            whole.append(b)
            var events: [HTTPRequestParser.Event] = []
            var failed = false
            do { while let e = try whole.next() { events.append(e) } } catch { failed = true }
            failed ? (refused += 1) : (parsed += 1)
            // Byte at a time: the same outcome.
            var split = HTTPRequestParser()
            var splitEvents: [HTTPRequestParser.Event] = []
            var splitFailed = false
            for byte in b where !splitFailed {
                split.append([byte])
                do { while let e = try split.next() { splitEvents.append(e) } } catch { splitFailed = true }
            }
            XCTAssertEqual(failed, splitFailed, "request \(i): \(String(decoding: b, as: UTF8.self).debugDescription)")
            if !failed && !splitFailed {
                func flatten(_ ev: [HTTPRequestParser.Event]) -> [UInt8] {
                    ev.flatMap { e -> [UInt8] in if case let .body(x) = e { return x }; return [] }
                }
                XCTAssertEqual(flatten(events), flatten(splitEvents))
            }
        }
        XCTAssertGreaterThan(parsed, 50)
        XCTAssertGreaterThan(refused, 500)
    }
}

final class HTTPServerTests: XCTestCase {
    var loop: EventLoop!
    var server: HTTPServer!
    var metrics = MetricsRegistry()

    func start(_ configure: (inout HTTPServerConfig) -> Void = { _ in }) throws {
        loop = try EventLoop(name: "http-test")
        var c = HTTPServerConfig()
        c.metrics = metrics
        configure(&c)
        server = HTTPServer(loop: loop, handler: EchoHandler(), config: c)
        try server.listen(host: "127.0.0.1", port: 0)
    }

    override func tearDown() {
        server?.stop()
        loop?.shutdown()
    }

    func testKeepAlivePipeliningHeadAndChunkedBothWays() throws {
        try start()
        let c = try RawHTTPClient(port: server.port)
        c.send("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        var r = c.response()
        XCTAssertEqual(r?.status, 200)
        XCTAssertEqual(r?.text, "hello")
        // Two pipelined requests on the same connection, answered in order.
        c.send("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcPUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n")
        XCTAssertEqual(c.response()?.text, "abc")
        XCTAssertEqual(c.response()?.text, "xyz")
        // A response of unknown length is chunked.
        c.send("GET /bytes?n=250000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response()
        XCTAssertEqual(r?.headers["transfer-encoding"], "chunked")
        XCTAssertEqual(r?.body.count, 250_000)
        XCTAssertEqual(r?.body.prefix(3), [0, 1, 2])
        // HEAD: the headers of GET, no body.
        c.send("HEAD /bytes?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response(head: true)
        XCTAssertEqual(r?.headers["content-length"], "1000")
        // Still in step: the next request on the connection works.
        c.send("GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = c.response()
        XCTAssertEqual(r?.status, 404)
        XCTAssertEqual(r?.headers["connection"], "close")
        XCTAssertTrue(c.isClosedByPeer())
        XCTAssertEqual(metrics.value("grid_http_requests_total", labels: [("method", "PUT"), ("code", "200")]), 3)
    }

    func testExpectContinueIsAnsweredBeforeTheBodyIsSent() throws {
        try start()
        let c = try RawHTTPClient(port: server.port)
        c.send("PUT /count HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        XCTAssertEqual(c.readLine(), "HTTP/1.1 100 Continue", "answered at once, before any body byte")
        XCTAssertEqual(c.readLine(), "")
        c.send("abcd")
        XCTAssertEqual(c.response()?.text.split(separator: " ").first, "4")
    }

    func testBadRequestsGetTheirStatusAndTheConnectionCloses() throws {
        try start()
        for (raw, want) in [("GET / HTTP/1.1\r\n\r\n", 400), ("GET / HTTP/3\r\nHost: x\r\n\r\n", 505),
                            ("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
                            ("\u{0}\u{1}\u{2} garbage\r\n\r\n", 400)] {
            let c = try RawHTTPClient(port: server.port)
            c.send(raw)
            let r = c.response()
            XCTAssertEqual(r?.status, want, raw.debugDescription)
            XCTAssertTrue(c.isClosedByPeer(), raw.debugDescription)
        }
        // A handler that writes no response: 500, and the server goes on.
        let c = try RawHTTPClient(port: server.port)
        c.send("GET /none HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(c.response()?.status, 500)
        c.send("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        XCTAssertEqual(c.response()?.text, "ok")
    }

    func testSlowAndIdleClientsAreCutOffAndTheBoundOnRequestsHolds() throws {
        try start { c in
            c.headTimeout = 1
            c.idleTimeout = 1.5
            c.maxConcurrentRequests = 2
        }
        // Half a request head, then nothing: 408 after the head timeout.
        let slow = try RawHTTPClient(port: server.port)
        slow.send("GET / HTTP/1.1\r\nHo")
        let t0 = monotonicNow()
        XCTAssertEqual(slow.response()?.status, 408)
        XCTAssertLessThan(monotonicNow() - t0, 6)
        // An idle keep-alive connection is closed.
        let idle = try RawHTTPClient(port: server.port)
        idle.send("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
        XCTAssertEqual(idle.response()?.text, "z")
        XCTAssertTrue(idle.isClosedByPeer())
        // Two slow requests in progress: a third is refused at once with 503.
        let a = try RawHTTPClient(port: server.port), b = try RawHTTPClient(port: server.port)
        a.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        b.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        Thread.sleep(forTimeInterval: 0.3)
        let c = try RawHTTPClient(port: server.port)
        c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(c.response()?.status, 503)
        XCTAssertEqual(a.response()?.text, "late\n")
        XCTAssertEqual(b.response()?.text, "late\n")
    }

    /// Regression: a reader always a chunk behind kept every chunk it had read (a 1 GiB
    /// PUT held 1 GiB). The body streams through in bounded memory.
    func testAStreamedBodyIsNotRetained() throws {
        func residentBytes() -> Int {
            let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        try start()
        let c = try RawHTTPClient(port: server.port)
        let block = [UInt8](repeating: 7, count: 1 << 20)
        let total = 96 << 20
        let before = residentBytes()
        c.send("PUT /discard HTTP/1.1\r\nHost: x\r\nContent-Length: \(total)\r\n\r\n")
        for _ in 0..<(total >> 20) { c.send(block) }
        XCTAssertEqual(c.response()?.text, "\(total)\n")
        let grown = residentBytes() - before
        XCTAssertLessThan(grown, 32 << 20, "the server kept \(grown >> 20) MiB of a \(total >> 20) MiB body")
    }

    /// A body far larger than the server's buffers streams through: the handler sees
    /// every byte, in order, and the server's memory does not grow with it.
    func testLargeBodiesStreamBothWays() throws {
        try start()
        let c = try RawHTTPClient(port: server.port)
        let total = 12 << 20
        c.send("PUT /count HTTP/1.1\r\nHost: x\r\nContent-Length: \(total)\r\n\r\n")
        var sum: UInt64 = 0
        let block = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 * 7) }
        for _ in 0..<(total >> 20) {
            c.send(block)
            for b in block { sum = sum &* 31 &+ UInt64(b) }
        }
        XCTAssertEqual(c.response()?.text, "\(total) \(sum)\n")
        c.send("GET /bytes?n=\(total) HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.response()
        XCTAssertEqual(r?.body.count, total)
    }
}
