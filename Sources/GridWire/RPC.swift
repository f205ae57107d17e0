import GridMetrics
import Foundation
import GridCrypto
import Synchronization

#if canImport(Glibc)
import Glibc
import GridSystem
#endif

/// A service a server offers (storage, introducer). Handlers run on worker threads.
public protocol RPCService: AnyObject, Sendable {
    /// The name clients ask for in HELLO.
    var serviceName: String { get }
    /// Whether a client presenting `secret` in HELLO may use the service.
    func authorize(secret: [UInt8]) -> Bool
    /// Answers one request; a thrown WireError becomes an ERROR frame.
    func handle(method: UInt16, body: [UInt8], session: RPCSession) throws -> [UInt8]
    /// The same, with the arguments at `frameBody[offset...]`: lets a service read large
    /// arguments in place instead of from a copy. By default it copies and calls the above.
    func handle(method: UInt16, frameBody: [UInt8], offset: Int, session: RPCSession) throws -> [UInt8]
    /// The session's connection is gone; release what it held (e.g. abort open bucket writers).
    func sessionEnded(_ session: RPCSession)
    /// The name of a method, for metrics labels.
    func methodName(_ method: UInt16) -> String
    /// Requests of one connection that return the same key run one after another in the
    /// order they arrived (others run at once, on any worker): e.g. a bucket's writes and
    /// its close, so a client may send the close without waiting for the writes' replies
    /// (protocol version 2). Called on the event loop thread: it must be cheap. Default: nil.
    func orderingKey(method: UInt16, frameBody: [UInt8], offset: Int) -> UInt64?
}

extension RPCService {
    /// Unknown by default: a label must never take values a client chooses.
    public func methodName(_ method: UInt16) -> String { "unknown" }

    public func orderingKey(method: UInt16, frameBody: [UInt8], offset: Int) -> UInt64? { nil }

    public func handle(method: UInt16, frameBody: [UInt8], offset: Int, session: RPCSession) throws -> [UInt8] {
        try handle(method: method, body: Array(frameBody[offset...]), session: session)
    }
}

/// One client connection as a service sees it.
public final class RPCSession: @unchecked Sendable {
    public let id: UInt64
    public let peer: String
    weak var server: RPCServer?
    let endedFlag = Atomic<Bool>(false)

    /// Whether the connection is gone: set before the service's `sessionEnded` is called,
    /// so a request still being handled when the peer vanished can tell (a resource it
    /// would tie to the session must then be released at once).
    public var isEnded: Bool { endedFlag.load(ordering: .acquiring) }

    init(id: UInt64, peer: String, server: RPCServer) {
        self.id = id
        self.peer = peer
        self.server = server
    }

    /// A session with no connection behind it, for driving a service directly (tests,
    /// fuzzing): notifications to it go nowhere.
    public init(id: UInt64, peer: String) {
        self.id = id
        self.peer = peer
        server = nil
    }

    /// Sends an unsolicited NOTIFY frame to this client (e.g. introducer updates).
    public func notify(method: UInt16, body: [UInt8]) {
        server?.notify(session: id, method: method, body: body)
    }
}

/// Server limits and timings.
public struct RPCServerConfig: Sendable {
    public var maxConnections = 4096
    /// Requests one connection may have in progress before we stop reading from it.
    public var maxInFlightPerConnection = 64
    public var handshakeTimeout = 10.0
    /// A connection that sends nothing (not even PING) for this long is closed.
    public var idleTimeout = 120.0
    public var workerThreads = 4
    /// Told of each connection refused at HELLO (peer and reason; never a secret).
    public var logRefusal: (@Sendable (String) -> Void)?
    /// Where requests, errors, latencies, bytes and connections are counted (nil: nowhere).
    public var metrics: MetricsRegistry?
    public init() {}
}

/// Accepts TLS connections and serves RPC services over them.
public final class RPCServer: @unchecked Sendable {
    public let loop: EventLoop
    let tls: TLSContext
    let services: [String: RPCService]
    let config: RPCServerConfig
    let workers: WorkerPool
    public private(set) var port: UInt16 = 0
    public let identity: NodeIdentity
    // Loop-thread state.
    var connections: [UInt64: ServerConn] = [:]
    var nextSession: UInt64 = 1

    final class ServerConn {
        let conn: Connection
        let session: RPCSession
        var service: RPCService?
        var inFlight = 0
        /// Ordering keys with a request running, and the requests waiting behind it
        /// (`RPCService.orderingKey`). Loop thread only; bounded by inFlight.
        var ordered: [UInt64: [@Sendable () -> Void]] = [:]
        init(conn: Connection, session: RPCSession) {
            self.conn = conn
            self.session = session
        }
    }

    let listener: TCPListener

    public init(identity: NodeIdentity, services: [RPCService], loop: EventLoop, config: RPCServerConfig = RPCServerConfig()) throws {
        self.identity = identity
        self.loop = loop
        self.config = config
        tls = try TLSContext.server(identity: identity)
        var map: [String: RPCService] = [:]
        for s in services { map[s.serviceName] = s }
        self.services = map
        workers = WorkerPool(threads: config.workerThreads, name: "grid-worker")
        listener = TCPListener(loop: loop)
        if let m = config.metrics {
            let meter = self.meter
            m.declare("grid_rpc_requests_total", .counter, help: "RPC requests answered, by service and method.")
            m.declare("grid_rpc_errors_total", .counter, help: "RPC requests answered with an error, by service, method and error code.")
            m.declare("grid_rpc_request_duration_seconds", .histogram, help: "Time from a request's arrival to its reply, by service and method.")
            meter.report(to: m, prefix: "grid_rpc", kind: "RPC (inside TLS)")
        }
    }

    /// Bytes and connections of every connection this server accepted.
    public let meter = ByteMeter()

    /// Starts listening; returns the bound port.
    @discardableResult
    public func listen(host: String, port: UInt16) throws -> UInt16 {
        let bound = try listener.listen(host: host, port: port) { [weak self] fd, peer in self?.accepted(fd, peer: peer) }
        self.port = bound
        loop.execute { [self] in scheduleIdleCheck() }
        return bound
    }

    /// Stops accepting and closes every connection.
    public func stop() {
        let done = DispatchSemaphore(value: 0)
        loop.execute { [self] in
            listener.close()
            for c in connections.values { c.conn.close(nil) }
            done.signal()
        }
        done.wait()
        workers.stop()
    }

    func scheduleIdleCheck() {
        loop.schedule(after: min(30, config.idleTimeout / 2)) { [weak self] in
            guard let self, self.listener.isListening else { return }
            let now = monotonicNow()
            for c in self.connections.values where now - c.conn.lastReceived > self.config.idleTimeout {
                c.conn.close(WireError(.timeout, "idle for \(Int(self.config.idleTimeout)) s"))
            }
            self.scheduleIdleCheck()
        }
    }

    func accepted(_ fd: Int32, peer: String) {
        if connections.count >= config.maxConnections {
            close(fd)
            return
        }
        guard let conn = try? Connection(loop: loop, fd: fd, tls: tls, isClient: false, connecting: false,
                                         expectedKey: nil, peerName: peer) else {
            close(fd)
            return
        }
        let id = nextSession
        nextSession += 1
        conn.meter = meter
        meter.open.add(1, ordering: .relaxed)
        let sc = ServerConn(conn: conn, session: RPCSession(id: id, peer: peer, server: self))
        connections[id] = sc
        FrameReceiver(conn).onFrame = { [weak self, weak sc] (frame: Frame) in
            guard let self, let sc else { return }
            self.received(frame, on: sc)
        }
        conn.onClose = { [weak self, meter] (_: WireError?) in
            meter.open.subtract(1, ordering: .relaxed)
            guard let self, let sc = self.connections.removeValue(forKey: id) else { return }
            // Requests still waiting on an ordering key will not run; their jobs hold the
            // connection (a cycle) and their frames: let both go.
            sc.ordered.removeAll()
            sc.session.endedFlag.store(true, ordering: .releasing)
            if let service = sc.service {
                let session = sc.session
                self.workers.submit { service.sessionEnded(session) }
            }
        }
        conn.start(handshakeTimeout: config.handshakeTimeout)
    }

    func received(_ frame: Frame, on sc: ServerConn) {
        let conn = sc.conn
        guard let service = sc.service else {
            // The first frame must be HELLO.
            guard frame.type == .hello else {
                refuse(conn, WireError(.badFrame, "expected HELLO as the first frame"))
                return
            }
            do {
                let hello = try Hello(parsing: frame.body)
                guard let version = hello.negotiate() else {
                    throw WireError(.versionMismatch, "no common protocol version (client speaks \(hello.minVersion)-\(hello.maxVersion), server \(Hello.minVersion)-\(Hello.currentVersion))")
                }
                guard let s = services[hello.service] else {
                    throw WireError(.notAuthorized, "this node offers no '\(hello.service)' service")
                }
                guard s.authorize(secret: hello.secret) else {
                    throw WireError(.notAuthorized, "wrong secret for the '\(hello.service)' service")
                }
                sc.service = s
                var w = WireWriter()
                w.u16(version)
                conn.send(Frame(.helloOK, body: w.bytes))
            } catch let e as WireError {
                config.logRefusal?("refused a connection from \(sc.session.peer): \(e.message)")
                refuse(conn, e)
            } catch {
                config.logRefusal?("refused a connection from \(sc.session.peer): \(error)")
                refuse(conn, WireError(.badFrame, "\(error)"))
            }
            return
        }
        switch frame.type {
        case .request:
            guard frame.body.count >= 2 else {
                conn.send(Frame.error(id: frame.id, WireError(.badFrame, "request without a method")))
                return
            }
            let method = UInt16(frame.body[0]) << 8 | UInt16(frame.body[1])
            let body = frame.body
            let id = frame.id
            let session = sc.session
            sc.inFlight += 1
            if sc.inFlight >= config.maxInFlightPerConnection { conn.pauseReading() }
            let box = UncheckedBox(sc)
            let metrics = config.metrics
            let started = monotonicNow()
            let key = service.orderingKey(method: method, frameBody: body, offset: 2)
            let job: @Sendable () -> Void = { [loop, workers] in
                let reply: Frame
                var failure: WireError?
                do {
                    reply = Frame(.response, id: id, body: try service.handle(method: method, frameBody: body, offset: 2, session: session))
                } catch let e as WireError {
                    reply = Frame.error(id: id, e)
                    failure = e
                } catch {
                    let e = WireError(.internal, "\(error)")
                    reply = Frame.error(id: id, e)
                    failure = e
                }
                if let metrics {
                    let labels = [("service", service.serviceName), ("method", service.methodName(method))]
                    metrics.add("grid_rpc_requests_total", labels: labels)
                    metrics.observe("grid_rpc_request_duration_seconds", monotonicNow() - started, labels: labels)
                    if let failure { metrics.add("grid_rpc_errors_total", labels: labels + [("code", "\(failure.code)")]) }
                }
                loop.execute {
                    let sc = box.value
                    sc.conn.send(reply)
                    sc.inFlight -= 1
                    if sc.inFlight < self.config.maxInFlightPerConnection / 2 { sc.conn.resumeReading() }
                    // The next request waiting on the same key, if any, runs now.
                    if let key, let waiting = sc.ordered[key] {
                        if waiting.isEmpty {
                            sc.ordered[key] = nil
                        } else {
                            sc.ordered[key] = Array(waiting.dropFirst())
                            workers.submit(waiting[0])
                        }
                    }
                }
            }
            if let key {
                if sc.ordered[key] != nil {
                    sc.ordered[key]!.append(job)
                    return
                }
                sc.ordered[key] = []
            }
            workers.submit(job)
        case .ping:
            conn.send(Frame(.pong, id: frame.id))
        case .pong:
            break
        default:
            refuse(conn, WireError(.badFrame, "unexpected frame type \(frame.type) from a client"))
        }
    }

    func refuse(_ conn: Connection, _ e: WireError) {
        conn.sendNow(Frame.error(id: 0, e))
        conn.close(e)
    }

    func notify(session: UInt64, method: UInt16, body: [UInt8]) {
        loop.execute { [self] in
            guard let sc = connections[session] else { return }
            var w = WireWriter(capacity: body.count + 2)
            w.u16(method)
            w.fixed(body)
            sc.conn.send(Frame(.notify, body: w.bytes))
        }
    }

}

/// An encoded frame handed to the loop thread, which patches in the request id.
final class FrameBox: @unchecked Sendable {
    var bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
}

/// Carries a value across a concurrency boundary the caller has made safe (a
/// loop-confined reference back to its loop; a sink handed to the one thread that uses it).
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

/// Client timings.
public struct RPCClientConfig: Sendable {
    public var connectTimeout = 10.0
    public var callTimeout = 60.0
    /// Send a PING when nothing has arrived for this long...
    public var pingInterval = 15.0
    /// ...and give up on the peer when nothing has arrived for this long.
    public var deadAfter = 45.0
    public init() {}
}

/// A connection to one server's service. Calls are multiplexed: many can be in flight
/// and replies come back in any order, matched by request id.
public final class RPCClient: @unchecked Sendable {
    public let loop: EventLoop
    public let peer: String
    public let serverKey: Ed25519PublicKey
    let config: RPCClientConfig
    // Loop-thread state.
    var conn: Connection?
    var nextID: UInt32 = 1
    var pending: [UInt32: (@Sendable (Result<[UInt8], Error>) -> Void, UInt64)] = [:]
    var closeWaiters: [CheckedContinuation<WireError, Never>] = []
    var closedReason: WireError?
    let closedFlag = Atomic<Bool>(false)
    var onNotify: (@Sendable (UInt16, [UInt8]) -> Void)?
    /// Wall-clock time (ms since 1970) of the last frame received, for status pages.
    public let lastReceivedMillis = Atomic<Int64>(0)
    let negotiated = Atomic<UInt16>(0)
    /// The protocol version the server chose in HELLO_OK; 0 until it has answered (with
    /// a pipelined HELLO, a reply to any later request means it has).
    public var protocolVersion: UInt16 { negotiated.load(ordering: .acquiring) }
    let suite = Mutex<String>("")
    /// The TLS suite of the connection (set once it is open).
    public var tlsSuite: String { suite.withLock { $0 } }
    var pings: [UInt32: CheckedContinuation<Void, Error>] = [:]
    var nextPing: UInt32 = 1

    init(loop: EventLoop, peer: String, serverKey: Ed25519PublicKey, config: RPCClientConfig) {
        self.loop = loop
        self.peer = peer
        self.serverKey = serverKey
        self.config = config
    }

    /// Connects, checks the server's key against `serverKey`, and says HELLO.
    ///
    /// With `pipelineHello` the client is returned once the TLS handshake is done and
    /// HELLO is sent, without waiting a round trip for HELLO_OK: requests follow HELLO in
    /// the same stream, and the server handles HELLO before any frame behind it. If the server then refuses
    /// HELLO (no such service, no common version, a wrong secret) the connection closes
    /// with its reason and every call on it fails with that reason.
    public static func connect(
        loop: EventLoop, host: String, port: UInt16, serverKey: Ed25519PublicKey, service: String,
        secret: [UInt8] = [], tls: TLSContext, config: RPCClientConfig = RPCClientConfig(),
        pipelineHello: Bool = false,
        onNotify: (@Sendable (UInt16, [UInt8]) -> Void)? = nil
    ) async throws -> RPCClient {
        let peer = "\(host):\(port)"
        let client = RPCClient(loop: loop, peer: peer, serverKey: serverKey, config: config)
        client.onNotify = onNotify
        let fd = try startConnect(host: host, port: port)
        let hello = Hello(service: service, secret: secret)
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, Error>) in
            loop.execute {
                let conn: Connection
                do {
                    conn = try Connection(loop: loop, fd: fd, tls: tls, isClient: true, connecting: true,
                                          expectedKey: serverKey, peerName: peer)
                } catch {
                    Glibc.close(fd)
                    cont.resume(throwing: error)
                    return
                }
                client.conn = conn
                var settled = false
                var answered = false
                conn.onOpen = {
                    client.suite.withLock { $0 = conn.tlsSuite }
                    conn.send(Frame(.hello, body: hello.encoded()))
                    if pipelineHello {
                        settled = true
                        client.schedulePing()
                        cont.resume()
                    }
                }
                let frames = FrameReceiver(conn)
                frames.onFrame = { frame in
                    guard !answered else { return client.received(frame) }
                    switch frame.type {
                    case .helloOK:
                        // The server's choice must be a version this client speaks.
                        var r = WireReader(frame.body)
                        guard let v = try? r.u16(), (Hello.minVersion...Hello.currentVersion).contains(v) else {
                            conn.close(WireError(.versionMismatch, "\(peer) chose a protocol version this client does not speak"))
                            return
                        }
                        answered = true
                        client.negotiated.store(v, ordering: .releasing)
                        guard !settled else { return }
                        settled = true
                        client.schedulePing()
                        cont.resume()
                    case .error:
                        // onClose reports the server's reason to the caller.
                        conn.close(Frame.parseError(frame.body))
                    default:
                        conn.close(WireError(.badFrame, "\(peer) answered HELLO with \(frame.type)"))
                    }
                }
                conn.onClose = { reason in
                    let r = reason ?? WireError(.connectionLost, "connection to \(peer) closed")
                    if !settled {
                        settled = true
                        cont.resume(throwing: r)
                    }
                    client.closed(r)
                }
                conn.start(handshakeTimeout: config.connectTimeout)
            }
        }
        return client
    }

    public var isClosed: Bool { closedFlag.load(ordering: .acquiring) }

    /// Sends a typed request and decodes its reply.
    public func call<R: RPCRequest>(_ request: R, timeout: Double? = nil) async throws -> R.Response {
        try R.Response(decoding: try await call(R.method.rawValue, request.encoded(), timeout: timeout))
    }

    /// Callback form of the typed call; the completion runs on the event loop thread and
    /// must not block.
    public func call<R: RPCRequest>(_ request: R, completion: @escaping @Sendable (Result<R.Response, Error>) -> Void) {
        call(R.method.rawValue, request.encoded()) { r in
            completion(r.flatMap { body in Result { try R.Response(decoding: body) } })
        }
    }

    /// Calls `method` with `body`; returns the response body or throws the server's error.
    public func call(_ method: UInt16, _ body: [UInt8], timeout: Double? = nil) async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { cont in
            call(method, body, timeout: timeout) { cont.resume(with: $0) }
        }
    }

    /// Calls `method` with `body` and returns at once; `completion` runs on the event loop
    /// thread with the response body or the error (it must not block). This is for
    /// threads that stream many calls without an async context (uploads, downloads).
    public func call(_ method: UInt16, _ body: [UInt8], timeout: Double? = nil,
                     completion: @escaping @Sendable (Result<[UInt8], Error>) -> Void) {
        call(method, bodySize: body.count, timeout: timeout, encode: { $0.fixed(body) }, completion: completion)
    }

    /// Like `call(_:_:timeout:completion:)`, with the body written by `encode` (exactly
    /// `bodySize` bytes) straight into the frame: one copy of a large body, made before
    /// this returns, so `encode` may read memory the caller reuses afterwards.
    public func call(_ method: UInt16, bodySize: Int, timeout: Double? = nil, encode: (inout WireWriter) -> Void,
                     completion: @escaping @Sendable (Result<[UInt8], Error>) -> Void) {
        var w = WireWriter(capacity: Frame.headerSize + 2 + bodySize)
        Frame.writeHeader(&w, type: .request, id: 0, bodyLength: 2 + bodySize)  // the id is set on the loop thread
        w.u16(method)
        encode(&w)
        precondition(w.bytes.count == Frame.headerSize + 2 + bodySize, "encode wrote the wrong number of bytes")
        let frame = FrameBox(w.bytes)
        let limit = timeout ?? config.callTimeout
        loop.execute { [self] in
            guard let conn, conn.state == .open else {
                completion(.failure(closedReason ?? WireError(.connectionLost, "not connected to \(peer)")))
                return
            }
            let id = nextID
            nextID = nextID == UInt32.max ? 1 : nextID + 1
            let timer = loop.schedule(after: limit) { [self] in
                if let (c, _) = pending.removeValue(forKey: id) {
                    c(.failure(WireError(.timeout, "call to \(peer) timed out after \(limit) s")))
                }
            }
            pending[id] = (completion, timer)
            frame.bytes[5] = UInt8(id >> 24)
            frame.bytes[6] = UInt8(id >> 16 & 0xff)
            frame.bytes[7] = UInt8(id >> 8 & 0xff)
            frame.bytes[8] = UInt8(id & 0xff)
            conn.send(encoded: frame.bytes)
            frame.bytes = []
        }
    }

    /// Closes the connection; pending calls fail.
    public func close() {
        loop.execute { [self] in conn?.close(WireError(.connectionLost, "connection to \(peer) closed by us")) }
    }

    /// Waits until the connection is closed and returns why.
    public func waitClosed() async -> WireError {
        await withCheckedContinuation { cont in
            loop.execute { [self] in
                if let r = closedReason { cont.resume(returning: r) } else { closeWaiters.append(cont) }
            }
        }
    }

    /// One PING answered by a PONG: the round-trip time in seconds (Tahoe's
    /// `measure_peer_response_time`), at most `timeout`.
    public func measureRoundTrip(timeout: Double = 5) async throws -> Double {
        let start = monotonicNow()
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, Error>) in
            loop.execute { [self] in
                guard let conn, conn.isOpen else {
                    cont.resume(throwing: closedReason ?? WireError(.connectionLost, "connection to \(peer) is closed"))
                    return
                }
                let id = nextPing
                nextPing = nextPing == UInt32.max ? 1 : nextPing + 1
                pings[id] = cont
                loop.schedule(after: timeout) { [self] in
                    pings.removeValue(forKey: id)?.resume(throwing: WireError(.timeout, "\(peer) did not answer a ping within \(timeout) s"))
                }
                conn.send(Frame(.ping, id: id))
            }
        }
        return monotonicNow() - start
    }

    func received(_ frame: Frame) {
        lastReceivedMillis.store(Int64(wallClock() * 1000), ordering: .relaxed)
        switch frame.type {
        case .response, .error:
            guard let (cont, timer) = pending.removeValue(forKey: frame.id) else {
                if frame.type == .error && frame.id == 0 { conn?.close(Frame.parseError(frame.body)) }
                return  // a late reply to a call that timed out
            }
            loop.cancel(timer)
            cont(frame.type == .response ? .success(frame.body) : .failure(Frame.parseError(frame.body)))
        case .notify:
            guard frame.body.count >= 2 else { return }
            onNotify?(UInt16(frame.body[0]) << 8 | UInt16(frame.body[1]), Array(frame.body[2...]))
        case .ping:
            conn?.send(Frame(.pong, id: frame.id))
        case .pong:
            if frame.id != 0 { pings.removeValue(forKey: frame.id)?.resume() }
        default:
            conn?.close(WireError(.badFrame, "unexpected frame \(frame.type) from \(peer)"))
        }
    }

    func schedulePing() {
        loop.schedule(after: config.pingInterval / 3) { [weak self] in
            guard let self, let conn = self.conn, conn.state == .open else { return }
            let quiet = monotonicNow() - conn.lastReceived
            if quiet > self.config.deadAfter {
                conn.close(WireError(.timeout, "\(self.peer) stopped responding"))
                return
            }
            if quiet > self.config.pingInterval { conn.send(Frame(.ping)) }
            self.schedulePing()
        }
    }

    func closed(_ reason: WireError) {
        closedReason = reason
        closedFlag.store(true, ordering: .releasing)
        for (_, (cont, timer)) in pending {
            loop.cancel(timer)
            cont(.failure(reason))
        }
        pending.removeAll()
        for (_, p) in pings { p.resume(throwing: reason) }
        pings.removeAll()
        for w in closeWaiters { w.resume(returning: reason) }
        closeWaiters.removeAll()
        conn = nil
    }
}

/// Keeps a connection to one server up: reconnects after failures with a short jittered
/// backoff (0.5 s doubling to 4 s, each wait ±25%), and runs `onConnect` after each
/// (re)connection. A restarted introducer is thus found again within seconds.
public final class PersistentClient: @unchecked Sendable {
    let current = Mutex<RPCClient?>(nil)
    let stopped = Atomic<Bool>(false)
    var task: Task<Void, Never>?
    public let description: String

    public init(
        loop: EventLoop, host: String, port: UInt16, serverKey: Ed25519PublicKey, service: String,
        secret: [UInt8] = [], tls: TLSContext, config: RPCClientConfig = RPCClientConfig(),
        onNotify: (@Sendable (UInt16, [UInt8]) -> Void)? = nil,
        onConnect: @escaping @Sendable (RPCClient) async -> Void,
        onDisconnect: (@Sendable (WireError) -> Void)? = nil
    ) {
        description = "\(host):\(port)"
        task = Task { [self] in
            var backoff = 0.5
            while !self.stopped.load(ordering: .relaxed) {
                do {
                    let c = try await RPCClient.connect(loop: loop, host: host, port: port, serverKey: serverKey,
                                                        service: service, secret: secret, tls: tls, config: config,
                                                        onNotify: onNotify)
                    self.current.withLock { $0 = c }
                    backoff = 0.5
                    await onConnect(c)
                    let why = await c.waitClosed()
                    self.current.withLock { $0 = nil }
                    onDisconnect?(why)
                } catch {
                    onDisconnect?((error as? WireError) ?? WireError(.unreachable, "\(error)"))
                }
                if self.stopped.load(ordering: .relaxed) { break }
                try? await Task.sleep(nanoseconds: UInt64(backoff * Double.random(in: 0.75...1.25) * 1e9))
                backoff = min(Self.maxBackoff, backoff * 2)
            }
        }
    }

    /// The longest wait between reconnection attempts.
    public static let maxBackoff = 4.0

    /// The connected client, if any.
    public var client: RPCClient? { current.withLock { $0 } }

    public func stop() {
        stopped.store(true, ordering: .relaxed)
        task?.cancel()
        current.withLock { $0?.close() }
    }
}
