import Dispatch
import GridMetrics
import GridSystem
import GridWire
import Synchronization

public struct HTTPServerConfig: Sendable {
    public var limits = HTTPLimits()
    public var maxConnections = 256
    /// Requests being handled at once; more are answered 503 at once.
    public var maxConcurrentRequests = 32
    /// A request head must arrive within this long of its first byte.
    public var headTimeout = 30.0
    /// A keep-alive connection with no request for this long is closed.
    public var idleTimeout = 75.0
    /// A transfer that moves no byte in either direction for this long is cut off.
    public var stallTimeout = 120.0
    /// Request body bytes buffered for a handler before the socket stops being read.
    public var bodyBufferBytes = 4 << 20
    /// Response bytes queued before a handler's write waits.
    public var outputHighWater = 1 << 20
    /// Threads the handlers run on (a handler may block one in a synchronous write).
    public var handlerThreads = 16
    public var serverName = "grid"
    public var metrics: MetricsRegistry?
    public init() {}
}

/// What serves requests. Runs on the server's handler threads; it may read the body and
/// must write a response (if it returns without one, the server answers 500).
public protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest, _ response: HTTPResponse) async
}

/// A strict HTTP/1.1 server (keep-alive, pipelining in order, HEAD, `Expect:
/// 100-continue`, `Content-Length` and chunked bodies both ways, timeouts for slow and
/// idle clients, a bound on requests in progress) on GridWire's event loop and plain
/// TCP transport. Bodies stream: a handler reads the request body as it arrives and its
/// writes wait while the client is slower, so memory stays bounded whatever the size.
public final class HTTPServer: @unchecked Sendable {
    public let loop: EventLoop
    let config: HTTPServerConfig
    let handler: HTTPHandler
    let listener: TCPListener
    let executor: PoolExecutor
    let meter = ByteMeter()
    // Loop-thread state.
    var connections: [ObjectIdentifier: HTTPConnection] = [:]
    var active = 0
    var stopped = false

    public var port: UInt16 { listener.port }

    public init(loop: EventLoop, handler: HTTPHandler, config: HTTPServerConfig = HTTPServerConfig()) {
        self.loop = loop
        self.handler = handler
        self.config = config
        listener = TCPListener(loop: loop)
        executor = PoolExecutor(threads: config.handlerThreads)
        if let m = config.metrics {
            let meter = self.meter
            m.declare("grid_http_requests_total", .counter, help: "HTTP requests answered, by method and status code.")
            m.declare("grid_http_request_duration_seconds", .histogram, help: "Time from a request's head to the end of its response, by method.")
            meter.report(to: m, prefix: "grid_http", kind: "HTTP")
        }
    }

    /// Starts listening; returns the bound port.
    @discardableResult
    public func listen(host: String, port: UInt16) throws -> UInt16 {
        let bound = try listener.listen(host: host, port: port) { [weak self] fd, peer in self?.accepted(fd, peer: peer) }
        loop.execute { [self] in scheduleSweep() }
        return bound
    }

    /// Stops accepting and closes every connection.
    public func stop() {
        let done = DispatchSemaphore(value: 0)
        loop.execute { [self] in
            stopped = true
            listener.close()
            for c in connections.values { c.conn.close(nil) }
            done.signal()
        }
        done.wait()
        executor.workers.stop()
    }

    func accepted(_ fd: Int32, peer: String) {
        let conn = Connection.acceptedPlain(loop: loop, fd: fd, peerName: peer)
        guard connections.count < config.maxConnections, !stopped else {
            conn.start(handshakeTimeout: 1)
            conn.sendNow(Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
            conn.close(nil)
            return
        }
        conn.meter = meter
        conn.lowWater = config.outputHighWater / 2
        meter.open.add(1, ordering: .relaxed)
        let hc = HTTPConnection(server: self, conn: conn)
        connections[ObjectIdentifier(hc)] = hc
        conn.onData = { [unowned hc] bytes in hc.received(bytes) }
        conn.onReadEOF = { [unowned hc] in hc.peerFinishedSending() }
        conn.onReadBatchEnd = { [unowned hc] in hc.pump() }
        conn.onClose = { [weak self, meter] reason in
            meter.open.subtract(1, ordering: .relaxed)
            guard let self else { return }
            if let hc = self.connections.removeValue(forKey: ObjectIdentifier(hc)) { hc.closed(reason) }
        }
        conn.start(handshakeTimeout: config.headTimeout)
    }

    func scheduleSweep() {
        loop.schedule(after: 1) { [weak self] in
            guard let self, !self.stopped else { return }
            let now = monotonicNow()
            for c in Array(self.connections.values) { c.sweep(now: now) }
            self.scheduleSweep()
        }
    }

    func record(method: String, status: Int, seconds: Double) {
        guard let m = config.metrics else { return }
        m.add("grid_http_requests_total", labels: [("method", method), ("code", String(status))])
        m.observe("grid_http_request_duration_seconds", seconds, labels: [("method", method)])
    }
}

/// One client's connection: reads requests one at a time, runs each one's handler and
/// writes its response, then the next. Loop thread only.
final class HTTPConnection {
    unowned let server: HTTPServer
    let conn: Connection
    var parser: HTTPRequestParser
    var exchange: Exchange?
    var closing = false
    /// The client shut down its sending side: answer what was asked, then close.
    var peerDone = false
    /// When the current request's first byte came (head timeout) or the last response ended (idle).
    var phaseStart = monotonicNow()
    var lastProgress = monotonicNow()

    init(server: HTTPServer, conn: Connection) {
        self.server = server
        self.conn = conn
        parser = HTTPRequestParser(limits: server.config.limits)
        conn.onDrained = { [unowned self] in self.drained() }
    }

    func received(_ bytes: UnsafeRawBufferPointer) {
        lastProgress = monotonicNow()
        if exchange == nil && parser.isIdle { phaseStart = lastProgress }
        parser.append(bytes)
        // Body bytes are handed on in batches (at the end of a burst of reads, or each
        // MiB): fewer, larger pieces for the handler; a head is parsed at once.
        if exchange == nil || parser.buffered >= 1 << 20 { pump() }
    }

    /// Returns whether to keep the connection for the response in progress.
    func peerFinishedSending() -> Bool {
        peerDone = true
        if let ex = exchange {
            if !ex.bodyEnded { ex.deliverError(HTTPParseError(400, "the client stopped sending in the middle of the body")) }
            return true
        }
        pump()
        return exchange != nil
    }

    /// Moves parser events along: a new request's head, or body bytes to a handler with room.
    func pump() {
        while !closing && conn.isOpen {
            if let ex = exchange {
                guard !ex.bodyEnded else {
                    // The next request (pipelined) waits until this response is written.
                    if parser.buffered > server.config.limits.maxHeadBytes { conn.pauseReading() }
                    return
                }
                guard ex.queuedBytes < server.config.bodyBufferBytes else {
                    conn.pauseReading()
                    return
                }
            }
            let event: HTTPRequestParser.Event?
            do {
                event = try parser.next()
            } catch let e as HTTPParseError {
                fail(e)
                return
            } catch {
                fail(HTTPParseError(400, "\(error)"))
                return
            }
            guard let event else {
                conn.resumeReading()
                return
            }
            switch event {
            case .head:
                startRequest(parser.head!)
            case let .body(bytes):
                exchange?.deliver(bytes)
            case .end:
                exchange?.deliverEnd()
            }
        }
    }

    func startRequest(_ head: HTTPRequestHead) {
        guard server.active < server.config.maxConcurrentRequests else {
            respondNow(503, "too many requests in progress; try again shortly", close: true)
            return
        }
        let ex = Exchange(connection: self, head: head)
        exchange = ex
        server.active += 1
        if head.expectsContinue && head.contentLength != 0 {
            conn.send(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8))
        }
        let request = HTTPRequest(head: head, peer: conn.peerName, exchange: ex)
        let response = HTTPResponse(exchange: ex, isHead: head.method == "HEAD", minorVersion: head.minorVersion)
        let handler = server.handler
        Task(executorPreference: server.executor) {
            await handler.handle(request, response)
            await response.finish()
        }
    }

    /// The handler's response is written: the next request, or the end.
    func finished(_ ex: Exchange) {
        guard exchange === ex else { return }
        server.active -= 1
        server.record(method: ex.head.method, status: ex.status, seconds: monotonicNow() - ex.started)
        exchange = nil
        // A body the handler did not read to its end leaves the stream unframed: close.
        let reusable = ex.head.keepAlive && ex.keepAlive && parser.isDone && !peerDone
        if !reusable {
            closeWhenWritten()
            return
        }
        parser.reset()
        phaseStart = monotonicNow()
        pump()
    }

    func fail(_ e: HTTPParseError) {
        if let ex = exchange {
            // Mid-body: the handler's reads fail; the response cannot be trusted to frame.
            ex.deliverError(e)
            closing = true
            conn.close(nil)
            return
        }
        respondNow(e.status, e.message, close: true)
    }

    /// A response from the server itself (errors before a handler runs).
    func respondNow(_ status: Int, _ message: String, close: Bool) {
        let body = Array((message + "\n").utf8)
        var head = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.count)\r\n"
        if close { head += "Connection: close\r\n" }
        conn.send(Array((head + "\r\n").utf8) + body)
        server.record(method: parser.head?.method ?? "-", status: status, seconds: 0)
        if close { closeWhenWritten() }
    }

    func closeWhenWritten() {
        closing = true
        conn.pauseReading()
        if conn.pendingOutput == 0 { conn.close(nil) }
    }

    func drained() {
        lastProgress = monotonicNow()
        if closing && conn.pendingOutput == 0 {
            conn.close(nil)
            return
        }
        exchange?.writableAgain()
    }

    func closed(_ reason: WireError?) {
        if let ex = exchange {
            server.active -= 1
            exchange = nil
            ex.connectionClosed()
        }
    }

    func sweep(now: Double) {
        let c = server.config
        if let ex = exchange {
            if ex.isWaiting && now - lastProgress > c.stallTimeout {
                conn.close(WireError(.timeout, "no progress for \(Int(c.stallTimeout)) s"))
            }
            return
        }
        if closing {
            if now - lastProgress > c.stallTimeout { conn.close(nil) }
            return
        }
        if parser.isIdle {
            if now - phaseStart > c.idleTimeout { conn.close(nil) }
        } else if now - phaseStart > c.headTimeout {
            respondNow(408, "the request head did not arrive within \(Int(c.headTimeout)) s", close: true)
        }
    }
}

/// One request and its response, between the loop (which owns every field) and the
/// handler's task (which asks the loop through `execute`).
final class Exchange: @unchecked Sendable {
    /// Nil once the connection is gone (a handler may outlive it).
    weak var connection: HTTPConnection?
    let loop: EventLoop
    let highWater: Int
    let head: HTTPRequestHead
    let started = monotonicNow()
    // Body (loop thread).
    var chunks: [[UInt8]] = []
    var chunkStart = 0
    var queuedBytes = 0
    var bodyEnded = false
    var bodyError: Error?
    var reader: CheckedContinuation<[UInt8]?, Error>?
    // Response (loop thread).
    var status = 0
    var keepAlive = true
    var writer: (@Sendable (Error?) -> Void)?
    var closedError: Error?

    init(connection: HTTPConnection, head: HTTPRequestHead) {
        self.connection = connection
        loop = connection.server.loop
        highWater = connection.server.config.outputHighWater
        self.head = head
    }

    var isWaiting: Bool { reader != nil || writer != nil }

    func deliver(_ bytes: [UInt8]) {
        if let r = reader {
            reader = nil
            r.resume(returning: bytes)
            return
        }
        chunks.append(bytes)
        queuedBytes += bytes.count
    }

    func deliverEnd() {
        bodyEnded = true
        if let r = reader, chunkStart == chunks.count {
            reader = nil
            r.resume(returning: nil)
        }
    }

    func deliverError(_ e: Error) {
        bodyError = e
        if let r = reader {
            reader = nil
            r.resume(throwing: e)
        }
    }

    func connectionClosed() {
        let e = HTTPClosedError()
        closedError = e
        if let r = reader {
            reader = nil
            r.resume(throwing: e)
        }
        if let w = writer {
            writer = nil
            w(e)
        }
    }

    /// Loop thread: the next body chunk for a waiting reader.
    func read(_ cont: CheckedContinuation<[UInt8]?, Error>) {
        if chunkStart < chunks.count {
            // Taken out of the queue (not just skipped): a reader that is always one chunk
            // behind must not keep every chunk it has read alive.
            let c = chunks[chunkStart]
            chunks[chunkStart] = []
            chunkStart += 1
            queuedBytes -= c.count
            if chunkStart == chunks.count {
                chunks.removeAll(keepingCapacity: true)
                chunkStart = 0
            } else if chunkStart >= 64 {
                chunks.removeFirst(chunkStart)
                chunkStart = 0
            }
            cont.resume(returning: c)
            connection?.pump()  // room again: read more of the socket
            return
        }
        if bodyEnded { cont.resume(returning: nil); return }
        if let e = bodyError ?? closedError { cont.resume(throwing: e); return }
        guard let connection else { cont.resume(throwing: HTTPClosedError()); return }
        reader = cont
        connection.pump()
    }

    /// Loop thread: queue bytes; `done` is called when the writer may go on.
    func write(_ bytes: [UInt8], done: @escaping @Sendable (Error?) -> Void) {
        if let e = closedError { done(e); return }
        guard let conn = connection?.conn, conn.isOpen else { done(HTTPClosedError()); return }
        if !bytes.isEmpty { conn.send(bytes) }
        if conn.pendingOutput <= highWater {
            done(nil)
        } else {
            writer = done
        }
    }

    func writableAgain() {
        if let w = writer {
            writer = nil
            w(nil)
        }
    }
}

public struct HTTPClosedError: Error, CustomStringConvertible {
    public var description: String { "the HTTP client closed the connection" }
}

/// A request as a handler sees it: the head, the decoded path and query, and the body.
public final class HTTPRequest: @unchecked Sendable {
    public let head: HTTPRequestHead
    public let peer: String
    let exchange: Exchange
    /// The query's pairs, decoded (nil when an escape in it is malformed).
    public let query: [(String, String)]?

    init(head: HTTPRequestHead, peer: String, exchange: Exchange) {
        self.head = head
        self.peer = peer
        self.exchange = exchange
        query = URLCoding.query(head.rawQuery)
    }

    public var method: String { head.method }

    /// The last value of a query argument.
    public func argument(_ name: String) -> String? { query?.last { $0.0 == name }?.1 }

    /// The next piece of the body, or nil at its end.
    public func readBody() async throws -> [UInt8]? {
        let ex = exchange
        return try await withCheckedThrowingContinuation { cont in
            ex.loop.execute { ex.read(cont) }
        }
    }

    /// The whole body, which must be at most `limit` bytes.
    public func readWholeBody(limit: Int) async throws -> [UInt8] {
        if let n = head.contentLength, n > UInt64(limit) { throw HTTPParseError(413, "request body larger than \(limit) bytes") }
        var out: [UInt8] = []
        while let c = try await readBody() {
            out += c
            if out.count > limit { throw HTTPParseError(413, "request body larger than \(limit) bytes") }
        }
        return out
    }
}

/// A response being written: the status line and headers once, then the body (known
/// length, or chunked when it is not known and the client speaks HTTP/1.1).
public final class HTTPResponse: @unchecked Sendable {
    let exchange: Exchange
    let isHead: Bool
    let minorVersion: Int
    let state = Mutex<(started: Bool, chunked: Bool, finished: Bool, remaining: UInt64?)>((false, false, false, nil))

    init(exchange: Exchange, isHead: Bool, minorVersion: Int) {
        self.exchange = exchange
        self.isHead = isHead
        self.minorVersion = minorVersion
    }

    public var isStarted: Bool { state.withLock { $0.started } }

    /// Sends the status line and headers. `contentLength` nil: the length is not known
    /// (chunked, or for HTTP/1.0 the end of the connection).
    public func start(status: Int, headers: [(String, String)] = [], contentLength: UInt64?) async throws {
        let (bytes, closeAfter) = head(status: status, headers: headers, contentLength: contentLength)
        let ex = exchange
        try await send(bytes) { ex.status = status; if closeAfter { ex.keepAlive = false } }
    }

    /// `start` from synchronous code on a handler thread (a download's size callback).
    public func startBlocking(status: Int, headers: [(String, String)] = [], contentLength: UInt64?) throws {
        let (bytes, closeAfter) = head(status: status, headers: headers, contentLength: contentLength)
        let ex = exchange
        try sendBlocking(bytes) { ex.status = status; if closeAfter { ex.keepAlive = false } }
    }

    func head(status: Int, headers: [(String, String)], contentLength: UInt64?) -> ([UInt8], Bool) {
        let chunked = contentLength == nil && minorVersion >= 1 && !isHead && status != 204 && status != 304
        let closeAfter = contentLength == nil && !chunked && !isHead
        var text = "HTTP/1.1 \(status) \(Self.reason(status))\r\n"
        for (k, v) in headers {
            // Values come from code, but never let a stray CR/LF split a header.
            text += "\(k): \(v.filter { $0 != "\r" && $0 != "\n" })\r\n"
        }
        if let n = contentLength { text += "Content-Length: \(n)\r\n" }
        if chunked { text += "Transfer-Encoding: chunked\r\n" }
        if closeAfter || !exchange.head.keepAlive { text += "Connection: close\r\n" }
        text += "\r\n"
        state.withLock { $0 = (true, chunked, false, contentLength) }
        return (Array(text.utf8), closeAfter)
    }

    /// Cuts the connection: the only way to tell a client that a response already
    /// started (its length promised) will not be completed.
    public func abort() {
        state.withLock { $0.finished = true }
        let ex = exchange
        ex.loop.execute {
            ex.keepAlive = false
            ex.connection?.conn.close(WireError(.connectionLost, "response aborted"))
        }
    }

    /// Writes body bytes; waits while the client is behind.
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty, !isHead else { return }
        try await send(frame(bytes)) {}
    }

    /// The same from synchronous code running on a handler thread (a download's sink).
    public func writeBlocking(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0, !isHead else { return }
        try sendBlocking(frame(Array(bytes))) {}
    }

    func sendBlocking(_ bytes: [UInt8], onLoop: @escaping @Sendable () -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        let failure = Mutex<Error?>(nil)
        let ex = exchange
        ex.loop.execute {
            onLoop()
            ex.write(bytes) { e in
                failure.withLock { $0 = e }
                done.signal()
            }
        }
        done.wait()
        if let e = failure.withLock({ $0 }) { throw e }
    }

    func frame(_ bytes: [UInt8]) -> [UInt8] {
        let chunked = state.withLock { s -> Bool in
            if let r = s.remaining { s.remaining = r >= UInt64(bytes.count) ? r - UInt64(bytes.count) : 0 }
            return s.chunked
        }
        guard chunked else { return bytes }
        return Array((String(bytes.count, radix: 16) + "\r\n").utf8) + bytes + [13, 10]
    }

    func send(_ bytes: [UInt8], onLoop: @escaping @Sendable () -> Void) async throws {
        let ex = exchange
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, Error>) in
            ex.loop.execute {
                onLoop()
                ex.write(bytes) { e in
                    if let e { cont.resume(throwing: e) } else { cont.resume() }
                }
            }
        }
    }

    /// A whole response at once.
    public func send(status: Int, contentType: String = "text/plain; charset=utf-8", headers: [(String, String)] = [], body: [UInt8]) async {
        do {
            try await start(status: status, headers: [("Content-Type", contentType)] + headers, contentLength: UInt64(body.count))
            try await write(body)
        } catch {}
    }

    public func send(status: Int, text: String) async {
        await send(status: status, body: Array((text.hasSuffix("\n") ? text : text + "\n").utf8))
    }

    /// Ends the response (the server calls it after the handler returns).
    func finish() async {
        let (started, chunked, finished) = state.withLock { s -> (Bool, Bool, Bool) in
            let r = (s.started, s.chunked, s.finished)
            s.finished = true
            return r
        }
        if finished { return }
        if !started {
            await send(status: 500, text: "the server did not answer this request")
            state.withLock { $0.finished = true }
        } else if chunked {
            try? await send(Array("0\r\n\r\n".utf8)) {}
        }
        let ex = exchange
        let incomplete = state.withLock { ($0.remaining ?? 0) > 0 } && !isHead
        ex.loop.execute {
            if incomplete { ex.keepAlive = false }
            ex.connection?.finished(ex)
        }
    }

    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 206: return "Partial Content"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 400: return "Bad Request"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 416: return "Range Not Satisfiable"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 503: return "Service Unavailable"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(status)"
        }
    }
}

/// Runs handler tasks (and the tasks they start) on a fixed pool of threads, so a
/// handler blocked in a synchronous write holds one of these, never Swift's shared pool.
final class PoolExecutor: TaskExecutor, @unchecked Sendable {
    let workers: WorkerPool

    init(threads: Int) { workers = WorkerPool(threads: threads, name: "grid-http") }

    func enqueue(_ job: consuming ExecutorJob) {
        let j = UnownedJob(job)
        let ex = asUnownedTaskExecutor()
        workers.submit { j.runSynchronously(on: ex) }
    }
}
