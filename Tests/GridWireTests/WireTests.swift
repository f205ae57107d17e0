import Foundation
import GridCrypto
import GridTestSupport
import Synchronization
import GridSystem
import XCTest

@testable import GridWire

final class FrameTests: XCTestCase {
    func testRoundTripAndSplitDelivery() throws {
        let frames = [Frame(.request, id: 7, body: [0, 1, 2, 3]), Frame(.ping), Frame(.response, id: 9, body: pseudoRandom(70_000, seed: 1))]
        let bytes = frames.flatMap { $0.encoded() }
        var p = FrameParser()
        var got: [Frame] = []
        // One byte at a time: frames must come out whole and in order.
        for b in bytes {
            [b].withUnsafeBytes { p.append($0) }
            while let f = try p.next() { got.append(f) }
        }
        XCTAssertEqual(got, frames)
        XCTAssertEqual(p.bufferedBytes, 0)
    }

    func testRandomSplitsGiveTheSameFrames() throws {
        // Bodies of every kind of size: empty, small, one beyond the reserve limit (grown as
        // it arrives), cut at random points into pieces of 1 byte to 300 KiB.
        let frames = [
            Frame(.ping), Frame(.request, id: 1, body: [9]),
            Frame(.response, id: 2, body: pseudoRandom(FrameParser.reserveLimit + 12_345, seed: 2)),
            Frame(.pong), Frame(.notify, id: 3, body: pseudoRandom(40_000, seed: 3)), Frame(.error, id: 4, body: [1, 2]),
        ]
        let bytes = frames.flatMap { $0.encoded() }
        var rng = SplitMix64(state: 16)  // seeded: a failing split can be replayed
        for _ in 0..<20 {
            var p = FrameParser()
            var got: [Frame] = []
            var at = 0
            while at < bytes.count {
                let n = min(bytes.count - at, Int.random(in: 1...(Bool.random(using: &rng) ? 20 : 300_000), using: &rng))
                bytes[at..<(at + n)].withUnsafeBytes { p.append($0) }
                at += n
                while let f = try p.next() { got.append(f) }
            }
            XCTAssertEqual(got, frames)
            XCTAssertEqual(p.bufferedBytes, 0)
        }
    }

    func testADeclaredBodyIsReservedOnlyUpToTheLimit() throws {
        // A 9-byte header claiming a 16 MiB body reserves at most reserveLimit, and frames
        // before a malformed one are still handed out before the error.
        var p = FrameParser()
        var bytes = Frame(.ping).encoded()
        var w = WireWriter()
        Frame.writeHeader(&w, type: .request, id: 5, bodyLength: 16 << 20)
        bytes += w.bytes
        bytes.withUnsafeBytes { p.append($0) }
        XCTAssertEqual(try p.next(), Frame(.ping))
        XCTAssertNil(try p.next())
        XCTAssertLessThanOrEqual(p.body.capacity, FrameParser.reserveLimit * 2)
        XCTAssertEqual(p.bufferedBytes, Frame.headerSize)
        var q = FrameParser()
        (Frame(.pong).encoded() + [0, 0, 0, 5, 99, 0, 0, 0, 0]).withUnsafeBytes { q.append($0) }
        XCTAssertEqual(try q.next(), Frame(.pong))
        XCTAssertThrowsError(try q.next()) { XCTAssertEqual(($0 as? WireError)?.code, .badFrame) }
    }

    func testHugeDeclaredLengthIsRefusedBeforeBuffering() {
        var p = FrameParser()
        [0xff, 0xff, 0xff, 0xf0, 3].withUnsafeBytes { p.append($0) }
        XCTAssertThrowsError(try p.next()) { XCTAssertEqual(($0 as? WireError)?.code, .tooLarge) }
    }

    func testBadTypesAndLengths() {
        var p = FrameParser()
        [0, 0, 0, 5, 99, 0, 0, 0, 0].withUnsafeBytes { p.append($0) }
        XCTAssertThrowsError(try p.next()) { XCTAssertEqual(($0 as? WireError)?.code, .badFrame) }
        var q = FrameParser()
        [0, 0, 0, 2, 3, 0].withUnsafeBytes { q.append($0) }
        XCTAssertThrowsError(try q.next())
    }

    func testReaderRefusesLiesAndLeftovers() {
        var w = WireWriter()
        w.u32(1_000_000)  // a list claiming a million elements in a 4-byte message
        var r = WireReader(w.bytes)
        XCTAssertThrowsError(try r.list("items", minElementSize: 4) { try $0.u32() })
        var w2 = WireWriter()
        w2.data([1, 2, 3])
        w2.u8(9)
        var r2 = WireReader(w2.bytes)
        XCTAssertEqual(try r2.data(), [1, 2, 3])
        XCTAssertThrowsError(try r2.finish())
        var r3 = WireReader([0, 0, 0, 9, 1])
        XCTAssertThrowsError(try r3.data())
        var r4 = WireReader([2])
        XCTAssertThrowsError(try r4.bool())
    }

    func testHelloNegotiation() throws {
        let h = Hello(service: "storage", secret: [1, 2])
        XCTAssertEqual(try Hello(parsing: h.encoded()), h)
        XCTAssertEqual(h.negotiate(), Hello.currentVersion)
        XCTAssertNil(Hello(service: "x", minVersion: 50, maxVersion: 60).negotiate())
        // A client of version 1 (which waits for its writes' replies) is still served.
        XCTAssertEqual(Hello(service: "x", minVersion: 1, maxVersion: 1).negotiate(), 1)
        XCTAssertThrowsError(try Hello(parsing: Array("NOPE".utf8) + h.encoded().dropFirst(4)))
    }

    func testNodeIDs() {
        let id = NodeIdentity(key: Ed25519PrivateKey())
        XCTAssertTrue(id.nodeID.hasPrefix("v0-"))
        XCTAssertEqual(NodeIdentity.publicKey(fromNodeID: id.nodeID), id.publicKey)
        XCTAssertNil(NodeIdentity.publicKey(fromNodeID: "v0-abc"))
        XCTAssertNil(NodeIdentity.publicKey(fromNodeID: "v1-" + id.nodeID.dropFirst(3)))
    }
}

/// Echoes, sleeps, fails, and records ended sessions.
final class TestService: RPCService, @unchecked Sendable {
    let serviceName: String
    let secret: [UInt8]
    let ended = Mutex<[UInt64]>([])

    init(name: String = "test", secret: [UInt8] = []) {
        serviceName = name
        self.secret = secret
    }

    func authorize(secret: [UInt8]) -> Bool { secret == self.secret }

    func handle(method: UInt16, body: [UInt8], session: RPCSession) throws -> [UInt8] {
        switch method {
        case 1: return body                                    // echo
        case 2:                                                // sleep N ms, then echo
            var r = WireReader(body)
            usleep(UInt32(try r.u32()) * 1000)
            return body
        case 3: throw WireError(.conflict, "you asked for a conflict")
        case 4:                                                // push a notification back
            session.notify(method: 77, body: body)
            return []
        case 5:                                                // u64 key, u32 sleep ms, u32 seq: logged when done
            var r = WireReader(body)
            let key = try r.u64(), ms = try r.u32(), seq = try r.u32()
            usleep(ms * 1000)
            done.withLock { $0.append("\(key):\(seq)") }
            return []
        default: throw WireError(.unknownMethod, "no method \(method)")
        }
    }

    func sessionEnded(_ session: RPCSession) { ended.withLock { $0.append(session.id) } }

    /// Method 5's requests, in the order they finished.
    let done = Mutex<[String]>([])

    func orderingKey(method: UInt16, frameBody: [UInt8], offset: Int) -> UInt64? {
        guard method == 5 else { return nil }
        var r = WireReader(frameBody, offset: offset)
        return try? r.u64()
    }
}

final class RPCTests: XCTestCase {
    var loop: EventLoop!
    var server: RPCServer!
    var service: TestService!
    var identity: NodeIdentity!
    var tls: TLSContext!

    override func setUpWithError() throws {
        loop = try EventLoop(name: "test-loop")
        identity = NodeIdentity(key: Ed25519PrivateKey())
        service = TestService()
        server = try RPCServer(identity: identity, services: [service, TestService(name: "locked", secret: [9, 9])], loop: loop)
        try server.listen(host: "127.0.0.1", port: 0)
        tls = try TLSContext.client()
    }

    override func tearDown() {
        server.stop()
        loop.shutdown()
    }

    func connect(service: String = "test", secret: [UInt8] = [], key: Ed25519PublicKey? = nil,
                 config: RPCClientConfig = RPCClientConfig(), onNotify: (@Sendable (UInt16, [UInt8]) -> Void)? = nil) async throws -> RPCClient {
        try await RPCClient.connect(loop: loop, host: "127.0.0.1", port: server.port, serverKey: key ?? identity.publicKey,
                                    service: service, secret: secret, tls: tls, config: config, onNotify: onNotify)
    }

    func testEchoAndErrors() async throws {
        let c = try await connect()
        let big = pseudoRandom(3 << 20, seed: 2)
        let echoed = try await c.call(1, big)
        XCTAssertEqual(echoed, big)
        do {
            _ = try await c.call(3, [])
            XCTFail("expected an error")
        } catch let e as WireError {
            XCTAssertEqual(e.code, .conflict)
            XCTAssertEqual(e.message, "you asked for a conflict")
        }
        do {
            _ = try await c.call(999, [])
            XCTFail("expected an error")
        } catch let e as WireError { XCTAssertEqual(e.code, .unknownMethod) }
        // The connection survives errors.
        let again = try await c.call(1, [5])
        XCTAssertEqual(again, [5])
        c.close()
    }

    /// Many calls in flight on one connection; replies arrive out of order and still match.
    func testMultiplexedCallsOutOfOrder() async throws {
        let c = try await connect()
        let t0 = monotonicNow()
        try await withThrowingTaskGroup(of: Void.self) { g in
            for i in 0..<40 {
                g.addTask {
                    var w = WireWriter()
                    w.u32(UInt32((40 - i) * 5))  // later calls finish sooner
                    w.u32(UInt32(i))
                    let reply = try await c.call(2, w.bytes)
                    XCTAssertEqual(reply, w.bytes)
                }
            }
            try await g.waitForAll()
        }
        // 40 calls sleeping 5..200 ms on 4 workers: far less than the 4.1 s they would take one by one.
        XCTAssertLessThan(monotonicNow() - t0, 3.0)
        c.close()
    }

    /// Requests with one ordering key run in the order they arrived, however long each
    /// takes; other requests (another key) run beside them. The client learns the version.
    func testRequestsWithOneOrderingKeyRunInArrivalOrder() async throws {
        let c = try await connect()
        XCTAssertEqual(c.protocolVersion, Hello.currentVersion)
        XCTAssertEqual(c.tlsSuite, "TLS_AES_128_GCM_SHA256")  // the first of TLSContext.cipherSuites
        XCTAssertGreaterThanOrEqual(c.protocolVersion, Hello.orderedBucketsVersion)
        func body(_ key: UInt64, _ ms: UInt32, _ seq: UInt32) -> [UInt8] {
            var w = WireWriter()
            w.u64(key); w.u32(ms); w.u32(seq)
            return w.bytes
        }
        // Key 7: a slow first request, then fast and slow ones; key 8: one fast request.
        let sleeps: [UInt32] = [150, 0, 40, 0, 0, 20]
        try await withThrowingTaskGroup(of: Void.self) { g in
            for (seq, ms) in sleeps.enumerated() {
                let b = body(7, ms, UInt32(seq))
                g.addTask { _ = try await c.call(5, b) }
                try await Task.sleep(nanoseconds: 2_000_000)  // sent in this order
            }
            let b = body(8, 0, 0)
            g.addTask { _ = try await c.call(5, b) }
            try await g.waitForAll()
        }
        let log = service.done.withLock { $0 }
        XCTAssertEqual(log.filter { $0.hasPrefix("7:") }, (0..<sleeps.count).map { "7:\($0)" })
        // Key 8 did not wait behind key 7's slow first request.
        XCTAssertLessThan(log.firstIndex(of: "8:0")!, log.firstIndex(of: "7:0")!)
        c.close()
    }

    /// Requests still waiting on an ordering key when their connection goes are dropped,
    /// not run for nobody (their frames are freed at once).
    func testWaitingOrderedRequestsAreDroppedWhenTheConnectionCloses() async throws {
        let c = try await connect()
        for seq in 0..<6 {
            var w = WireWriter()
            w.u64(9); w.u32(seq == 0 ? 300 : 0); w.u32(UInt32(seq))
            c.call(5, w.bytes) { _ in }
        }
        try await Task.sleep(nanoseconds: 100_000_000)  // the first is running, five wait
        c.close()
        try await Task.sleep(nanoseconds: 600_000_000)
        XCTAssertEqual(service.done.withLock { $0.filter { $0.hasPrefix("9:") } }, ["9:0"])
    }

    func testPinnedKeyMismatchIsRefused() async throws {
        let other = Ed25519PrivateKey().publicKey
        do {
            _ = try await connect(key: other)
            XCTFail("a server with another key must be refused")
        } catch let e as WireError {
            XCTAssertEqual(e.code, .pinMismatch)
            XCTAssertTrue(e.message.contains(identity.nodeID), e.message)
        }
    }

    func testServiceAndSecretChecks() async throws {
        for (svc, secret, fragment) in [("nope", [UInt8](), "no 'nope' service"), ("locked", [1], "wrong secret"), ("locked", [], "wrong secret")] {
            do {
                _ = try await connect(service: svc, secret: secret)
                XCTFail("\(svc) should be refused")
            } catch let e as WireError {
                XCTAssertEqual(e.code, .notAuthorized)
                XCTAssertTrue(e.message.contains(fragment), e.message)
            }
        }
        let ok = try await connect(service: "locked", secret: [9, 9])
        let r = try await ok.call(1, [1])
        XCTAssertEqual(r, [1])
        ok.close()
    }

    /// A pipelined HELLO: the first call goes out behind it, without waiting for HELLO_OK,
    /// and is answered; a refused HELLO fails that call with the server's reason.
    func testPipelinedHello() async throws {
        for (svc, secret, fragment) in [("nope", [UInt8](), "no 'nope' service"), ("locked", [1], "wrong secret")] {
            let c = try await RPCClient.connect(loop: loop, host: "127.0.0.1", port: server.port, serverKey: identity.publicKey,
                                                service: svc, secret: secret, tls: tls, pipelineHello: true)
            do {
                _ = try await c.call(1, [1])
                XCTFail("\(svc) should be refused")
            } catch let e as WireError {
                XCTAssertEqual(e.code, .notAuthorized, "\(e)")
                XCTAssertTrue(e.message.contains(fragment), e.message)
            }
            c.close()
        }
        let ok = try await RPCClient.connect(loop: loop, host: "127.0.0.1", port: server.port, serverKey: identity.publicKey,
                                             service: "locked", secret: [9, 9], tls: tls, pipelineHello: true)
        let big = pseudoRandom(100_000, seed: 5)
        async let a = ok.call(1, [1])
        async let b = ok.call(1, big)
        let (ra, rb) = try await (a, b)
        XCTAssertEqual(ra, [1])
        XCTAssertEqual(rb, big)
        ok.close()
    }

    func testCallTimeout() async throws {
        var cfg = RPCClientConfig()
        cfg.callTimeout = 0.2
        let c = try await connect(config: cfg)
        var w = WireWriter()
        w.u32(1000)
        do {
            _ = try await c.call(2, w.bytes)
            XCTFail("expected a timeout")
        } catch let e as WireError { XCTAssertEqual(e.code, .timeout) }
        c.close()
    }

    func testUnreachableServer() async throws {
        // A port nobody listens on.
        let (fd, port) = try listenSocket(host: "127.0.0.1", port: 0)
        close(fd)
        do {
            _ = try await RPCClient.connect(loop: loop, host: "127.0.0.1", port: port, serverKey: identity.publicKey,
                                            service: "test", tls: tls)
            XCTFail("expected a connection error")
        } catch let e as WireError { XCTAssertEqual(e.code, .unreachable, e.message) }
    }

    func testSessionEndsWhenClientLeaves() async throws {
        let c = try await connect()
        _ = try await c.call(1, [1])
        c.close()
        for _ in 0..<100 where service.ended.withLock({ $0.isEmpty }) { try await Task.sleep(nanoseconds: 20_000_000) }
        XCTAssertEqual(service.ended.withLock { $0.count }, 1)
    }

    func testNotifications() async throws {
        let got = Mutex<[(UInt16, [UInt8])]>([])
        let c = try await connect(onNotify: { m, b in got.withLock { $0.append((m, b)) } })
        _ = try await c.call(4, [4, 2])
        for _ in 0..<100 where got.withLock({ $0.isEmpty }) { try await Task.sleep(nanoseconds: 10_000_000) }
        XCTAssertEqual(got.withLock { $0.first?.0 }, 77)
        XCTAssertEqual(got.withLock { $0.first?.1 }, [4, 2])
        c.close()
    }

    /// Garbage after the handshake: the server answers with an error and hangs up on that
    /// client only; other clients keep working.
    func testMalformedFramesDoNotHurtTheServer() async throws {
        let good = try await connect()
        var rng: UInt64 = 12345
        for round in 0..<60 {
            let raw = try await RawTLSClient.connect(loop: loop, port: server.port, tls: tls)
            var bytes: [UInt8]
            switch round % 6 {
            case 0: bytes = [0xff, 0xff, 0xff, 0xff]                                 // absurd length
            case 1: bytes = Frame(.request, id: 1, body: [0, 1]).encoded()           // request before HELLO
            case 2: bytes = Frame(.hello, body: [1, 2, 3]).encoded()                 // bad HELLO
            case 3: bytes = Hello(service: "test").encoded()                          // HELLO without a frame header
            case 4: bytes = Frame(.hello, body: Hello(service: "test").encoded()).encoded() + [0, 0, 0, 5, 42, 0, 0, 0, 0]  // unknown type
            default:
                bytes = (0..<(1 + Int(rng % 300))).map { _ in rng = rng &* 6364136223846793005 &+ 1; return UInt8(truncatingIfNeeded: rng >> 33) }
            }
            raw.send(bytes)
            let hungUp = await raw.waitClosed(timeout: 5)
            if round % 6 != 5 { XCTAssertTrue(hungUp, "round \(round): the server must close a connection that sent garbage") }
            let r = try await good.call(1, [UInt8(round)])
            XCTAssertEqual(r, [UInt8(round)])
        }
        good.close()
    }
}

/// A TLS connection that sends arbitrary bytes (for hostile-input tests).
final class RawTLSClient: @unchecked Sendable {
    let loop: EventLoop
    var conn: Connection?
    let closed = DispatchSemaphore(value: 0)

    init(loop: EventLoop) { self.loop = loop }

    static func connect(loop: EventLoop, port: UInt16, tls: TLSContext) async throws -> RawTLSClient {
        let c = RawTLSClient(loop: loop)
        let fd = try startConnect(host: "127.0.0.1", port: port)
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, Error>) in
            loop.execute {
                do {
                    let conn = try Connection(loop: loop, fd: fd, tls: tls, isClient: true, connecting: true,
                                              expectedKey: nil, peerName: "raw")
                    c.conn = conn
                    var done = false
                    conn.onOpen = { done = true; cont.resume() }
                    FrameReceiver(conn).onFrame = { _ in }
                    conn.onClose = { e in
                        c.closed.signal()
                        if !done { done = true; cont.resume(throwing: e ?? WireError(.connectionLost, "closed")) }
                    }
                    conn.start(handshakeTimeout: 5)
                } catch { cont.resume(throwing: error) }
            }
        }
        return c
    }

    func send(_ bytes: [UInt8]) {
        loop.execute { [self] in
            guard let conn else { return }
            conn.out += bytes
            conn.flush()
        }
    }

    func waitClosed(timeout: Double) async -> Bool {
        let sem = closed
        return await withCheckedContinuation { cont in
            DispatchQueue.global().async { cont.resume(returning: sem.wait(timeout: .now() + timeout) == .success) }
        }
    }
}
