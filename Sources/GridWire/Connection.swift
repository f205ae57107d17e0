import GridMetrics
import COpenSSL
import GridCrypto

import CEpoll

#if canImport(Glibc)
import Glibc
import GridSystem
import Synchronization
#endif

// Linux epoll event bits (<sys/epoll.h>; the Swift Glibc module does not export them).
let epollIn: UInt32 = 0x001
let epollOut: UInt32 = 0x004
let epollErrBit: UInt32 = 0x008
let epollHup: UInt32 = 0x010
let epollRdHup: UInt32 = 0x2000
let epollErr = epollErrBit | epollHup | epollRdHup

/// Bytes received and sent by a set of connections.
public final class ByteMeter: Sendable {
    public let received = Atomic<UInt64>(0)
    public let sent = Atomic<UInt64>(0)
    public let open = Atomic<Int>(0)
    public init() {}

    /// Reports this meter at each scrape as `PREFIX_received_bytes_total`,
    /// `PREFIX_sent_bytes_total` and `PREFIX_open_connections`.
    public func report(to m: MetricsRegistry, prefix: String, kind: String) {
        m.collect { [self] in
            [MetricsRegistry.Sample("\(prefix)_received_bytes_total", .counter, help: "Bytes received on \(kind) connections.",
                                    value: Double(received.load(ordering: .relaxed))),
             MetricsRegistry.Sample("\(prefix)_sent_bytes_total", .counter, help: "Bytes sent on \(kind) connections.",
                                    value: Double(sent.load(ordering: .relaxed))),
             MetricsRegistry.Sample("\(prefix)_open_connections", help: "\(kind) connections open now.",
                                    value: Double(open.load(ordering: .relaxed)))]
        }
    }
}

/// A C string held in a fixed buffer.
func cString(_ buf: [CChar]) -> String {
    String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The transport: one byte stream on a non-blocking socket, TLS or plain TCP, driven by
/// an EventLoop. Loop thread only. It knows nothing of what the bytes mean: the RPC's
/// frames (`FramedStream`) and HTTP (GridHTTP) are layers on top of it.
///
/// States: TCP connecting (clients) → TLS handshake → open → closed. Clients check
/// the server's key against the pinned one when the handshake ends, before any byte.
/// Plain connections (`tls: nil`, for HTTP on loopback) have no handshake.
public final class Connection: EventHandler, @unchecked Sendable {
    enum State { case connecting, handshaking, open, closed }

    let loop: EventLoop
    let fd: Int32
    let ssl: OpaquePointer?
    let isClient: Bool
    let expectedKey: Ed25519PublicKey?
    public let peerName: String
    private(set) var state: State
    var out: [UInt8] = []
    var outStart = 0
    var readPaused = false
    var registeredEvents: UInt32 = 0
    /// Monotonic time of the last bytes received.
    var lastReceived = monotonicNow()
    var handshakeTimer: UInt64?

    /// Called once when the connection is ready for frames (after the pin check).
    var onOpen: (() -> Void)?
    /// Called with the bytes received (valid only during the call), unless paused.
    public var onData: ((UnsafeRawBufferPointer) -> Void)?
    /// The TLS suite the handshake settled on (empty before it, or without TLS).
    public private(set) var tlsSuite = ""
    /// Called when what is queued falls to `lowWater` bytes or below (for writers that wait on it).
    public var onDrained: (() -> Void)?
    public var lowWater = 0
    /// Called once when the connection closes, with the reason (nil: closed by us, cleanly).
    public var onClose: ((WireError?) -> Void)?
    /// Plain connections: called when the peer has shut down its sending side. Returning
    /// true keeps the connection open for writing (an HTTP client that half-closes after
    /// its request still gets the response); otherwise it closes.
    public var onReadEOF: (() -> Bool)?
    /// Called when a burst of reads has taken everything the socket had (it would block):
    /// a reader that batches what `onData` gave it handles the batch here.
    public var onReadBatchEnd: (() -> Void)?
    var readEOF = false
    /// Counts the bytes received and sent (after TLS), for metrics; shared by a server's connections.
    public var meter: ByteMeter?

    init(loop: EventLoop, fd: Int32, tls: TLSContext?, isClient: Bool, connecting: Bool,
         expectedKey: Ed25519PublicKey?, peerName: String) throws {
        self.loop = loop
        self.fd = fd
        self.isClient = isClient
        self.expectedKey = expectedKey
        self.peerName = peerName
        ssl = try tls.map { try $0.makeSSL(fd: fd) }
        state = connecting ? .connecting : (tls == nil ? .open : .handshaking)
    }

    /// A plain TCP connection accepted by a `TCPListener` (HTTP), open at once.
    public static func acceptedPlain(loop: EventLoop, fd: Int32, peerName: String) -> Connection {
        // Cannot throw without TLS.
        try! Connection(loop: loop, fd: fd, tls: nil, isClient: false, connecting: false, expectedKey: nil, peerName: peerName)
    }

    deinit {
        if let ssl { SSL_free(ssl) }
    }

    public var isOpen: Bool { state == .open }
    /// Bytes queued and not yet taken by the socket.
    public var pendingOutput: Int { out.count - outStart }

    /// Registers with the loop and starts connecting or handshaking. `handshakeTimeout`
    /// bounds how long a connection may take to become open.
    public func start(handshakeTimeout: Double) {
        registeredEvents = state == .connecting ? epollOut : epollIn
        loop.register(fd, self, events: registeredEvents | epollErr)
        if state == .open { return }
        handshakeTimer = loop.schedule(after: handshakeTimeout) { [weak self] in
            guard let self, self.state != .open else { return }
            self.close(WireError(.timeout, "connection to \(self.peerName) timed out before it was ready"))
        }
        if state == .handshaking { handshake() }
    }

    func setEvents(_ e: UInt32) {
        guard state != .closed, e != registeredEvents else { return }
        registeredEvents = e
        loop.modify(fd, events: e | epollErr)
    }

    func handleEvents(_ events: UInt32) {
        switch state {
        case .connecting:
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 || events & (epollErrBit | epollHup) != 0 {
                close(WireError(.unreachable, "cannot connect to \(peerName): \(String(cString: strerror(err == 0 ? ECONNREFUSED : err)))"))
                return
            }
            if ssl == nil {
                state = .open
                if let t = handshakeTimer { loop.cancel(t); handshakeTimer = nil }
                setEvents(epollIn | (out.count > outStart ? epollOut : 0))
                onOpen?()
                onOpen = nil
                return
            }
            state = .handshaking
            handshake()
        case .handshaking:
            handshake()
        case .open:
            if events & epollIn != 0 || events & epollErr != 0 { readAvailable() }
            if state == .open && events & epollOut != 0 { flush() }
        case .closed:
            break
        }
    }

    func handshake() {
        guard let ssl else { return }
        ERR_clear_error()
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            if isClient {
                guard let key = TLSContext.peerKey(ssl) else {
                    close(WireError(.pinMismatch, "\(peerName) presented no Ed25519 key"))
                    return
                }
                if let want = expectedKey, key != want {
                    close(WireError(.pinMismatch, "\(peerName) has node id \(NodeIdentity.nodeID(for: key)), not the expected \(NodeIdentity.nodeID(for: want))"))
                    return
                }
            }
            state = .open
            if let suite = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_get_name(suite) { tlsSuite = String(cString: name) }
            if let t = handshakeTimer { loop.cancel(t); handshakeTimer = nil }
            setEvents(epollIn | (out.count > outStart ? epollOut : 0))
            onOpen?()
            onOpen = nil
            if state == .open { readAvailable() }
            return
        }
        switch SSL_get_error(ssl, r) {
        case SSL_ERROR_WANT_READ: setEvents(epollIn)
        case SSL_ERROR_WANT_WRITE: setEvents(epollOut)
        default:
            close(opensslFailure("TLS handshake with \(peerName) failed"))
        }
    }

    func opensslFailure(_ what: String) -> WireError {
        let e = opensslError(what)
        return WireError(.connectionLost, e.message)
    }

    /// Reads everything OpenSSL and the socket have, handing it to `onData`, unless paused.
    func readAvailable() {
        guard state == .open else { return }
        let buf = loop.readBuffer
        while state == .open && !readPaused {
            guard let ssl else {
                let (n, e) = retryingInterrupts { Glibc.read(fd, buf.baseAddress, buf.count) }
                if n > 0 {
                    received(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                    continue
                }
                if n == 0 {
                    if let keep = onReadEOF, keep() {
                        readEOF = true
                        readPaused = true
                        setEvents(registeredEvents & ~epollIn)
                    } else {
                        close(WireError(.connectionLost, "\(peerName) closed the connection"))
                    }
                } else if e == EAGAIN || e == EWOULDBLOCK {
                    onReadBatchEnd?()
                } else {
                    close(WireError(.connectionLost, "connection to \(peerName) lost: \(String(cString: strerror(e)))"))
                }
                return
            }
            ERR_clear_error()
            let n = SSL_read(ssl, buf.baseAddress, Int32(buf.count))
            if n > 0 {
                received(UnsafeRawBufferPointer(rebasing: buf[0..<Int(n)]))
                continue
            }
            let err = SSL_get_error(ssl, n)
            switch err {
            case SSL_ERROR_WANT_READ:
                onReadBatchEnd?()
                return
            case SSL_ERROR_WANT_WRITE:
                setEvents(registeredEvents | epollOut)
                return
            case SSL_ERROR_ZERO_RETURN:
                close(WireError(.connectionLost, "\(peerName) closed the connection"))
                return
            default:
                close(opensslFailure("connection to \(peerName) lost"))
                return
            }
        }
    }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        lastReceived = monotonicNow()
        meter?.received.add(UInt64(bytes.count), ordering: .relaxed)
        onData?(bytes)
    }

    /// Stops reading (backpressure) until `resumeReading`.
    public func pauseReading() {
        guard !readPaused else { return }
        readPaused = true
        setEvents(registeredEvents & ~epollIn)
    }

    public func resumeReading() {
        guard readPaused, state == .open, !readEOF else { return }
        readPaused = false
        setEvents(registeredEvents | epollIn)
        readAvailable()  // OpenSSL may hold decrypted bytes the socket will not signal again
    }

    /// Sends bytes. When nothing is queued they go straight to the socket from `bytes`
    /// (no copy); only what the socket does not take is queued.
    public func send(_ bytes: [UInt8]) { send(encoded: bytes) }

    public func send(encoded bytes: [UInt8]) {
        guard state != .closed else { return }
        if state != .open || outStart < out.count {
            out += bytes
            if state == .open { flush() }
            return
        }
        let (written, stop) = bytes.withUnsafeBytes { tlsWrite($0) }
        switch stop {
        case .done:
            onDrained?()
            return
        case .failed:
            close(writeFailure())
        case .wantWrite, .wantRead:
            // SSL_write must be retried with the same bytes: queue the rest for flush().
            out.removeAll(keepingCapacity: true)
            outStart = 0
            out += bytes[written...]
            flush()
        }
    }

    enum WriteStop { case done, wantWrite, wantRead, failed }

    /// Writes longer than this (more than one TLS record) are corked.
    static let corkAbove = 16 << 10

    /// Writes as much of `bytes` as TLS takes now; returns how much and why it stopped.
    func tlsWrite(_ bytes: UnsafeRawBufferPointer) -> (Int, WriteStop) {
        var done = 0
        defer { meter?.sent.add(UInt64(done), ordering: .relaxed) }
        guard let ssl else {
            while done < bytes.count {
                let (n, e) = retryingInterrupts { Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done) }
                if n > 0 { done += n; continue }
                if e == EAGAIN || e == EWOULDBLOCK { return (done, .wantWrite) }
                lastWriteErrno = e
                return (done, .failed)
            }
            return (done, .done)
        }
        // A large write leaves as 16 KiB TLS records, one write(2) each; corked, the kernel
        // sends them in full-sized segments (fewer packets to send and to receive) and the
        // last partial one when uncorked.
        let cork = bytes.count > Self.corkAbove
        if cork { setCork(fd, true) }
        defer { if cork { setCork(fd, false) } }
        while done < bytes.count {
            ERR_clear_error()
            let n = SSL_write(ssl, bytes.baseAddress! + done, Int32(min(bytes.count - done, 1 << 20)))
            if n > 0 {
                done += Int(n)
                continue
            }
            switch SSL_get_error(ssl, n) {
            case SSL_ERROR_WANT_WRITE: return (done, .wantWrite)
            case SSL_ERROR_WANT_READ: return (done, .wantRead)
            default: return (done, .failed)
            }
        }
        return (done, .done)
    }

    var lastWriteErrno: Int32 = 0

    func writeFailure() -> WireError {
        if ssl == nil { return WireError(.connectionLost, "cannot write to \(peerName): \(String(cString: strerror(lastWriteErrno)))") }
        return opensslFailure("cannot write to \(peerName)")
    }

    /// Best-effort immediate write (used just before closing).
    public func sendNow(_ bytes: [UInt8]) {
        out += bytes
        flush()
    }

    func flush() {
        if outStart < out.count {
            let (written, stop) = out.withUnsafeBytes { tlsWrite(UnsafeRawBufferPointer(rebasing: $0[outStart...])) }
            outStart += written
            switch stop {
            case .done:
                break
            case .wantWrite:
                setEvents(registeredEvents | epollOut)
                if written > 0 && out.count - outStart <= lowWater { onDrained?() }
                return
            case .wantRead:
                setEvents(registeredEvents | epollIn)
                return
            case .failed:
                close(writeFailure())
                return
            }
        }
        out.removeAll(keepingCapacity: out.capacity <= 1 << 16)
        outStart = 0
        if registeredEvents & epollOut != 0 { setEvents(registeredEvents & ~epollOut) }
        onDrained?()
    }

    public func close(_ reason: WireError?) {
        guard state != .closed else { return }
        let wasOpen = state == .open
        state = .closed
        if let t = handshakeTimer { loop.cancel(t) }
        if wasOpen, let ssl {
            ERR_clear_error()
            SSL_shutdown(ssl)
        }
        loop.unregister(fd)
        Glibc.close(fd)
        out = []
        onData = nil
        onDrained = nil
        onReadEOF = nil
        onReadBatchEnd = nil
        onOpen = nil
        let cb = onClose
        onClose = nil
        cb?(reason)
    }
}

// MARK: Sockets

/// Resolves host:port (numeric or name) to socket addresses, IPv4 first.
func resolve(host: String, port: UInt16) throws -> [(Int32, [UInt8])] {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_family = AF_UNSPEC
    var res: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(host, String(port), &hints, &res)
    guard rc == 0, let first = res else {
        throw WireError(.unreachable, "cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
    }
    defer { freeaddrinfo(first) }
    var out: [(Int32, [UInt8])] = []
    var p: UnsafeMutablePointer<addrinfo>? = first
    while let a = p {
        let bytes = Array(UnsafeRawBufferPointer(start: a.pointee.ai_addr, count: Int(a.pointee.ai_addrlen)))
        out.append((a.pointee.ai_family, bytes))
        p = a.pointee.ai_next
    }
    return out.sorted { $0.0 == AF_INET && $1.0 != AF_INET }
}

func setNonBlocking(_ fd: Int32) {
    let flags = fcntl(fd, F_GETFL)
    _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
}

/// TCP_CORK on or off: while on, the kernel sends only full segments; off sends the rest.
func setCork(_ fd: Int32, _ on: Bool) {
    var v: Int32 = on ? 1 : 0
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_CORK, &v, socklen_t(4))
}

func setSocketOptions(_ fd: Int32) {
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(4))
}

/// Starts a non-blocking connect; returns the socket.
func startConnect(host: String, port: UInt16) throws -> Int32 {
    var lastError = "no address"
    for (family, addr) in try resolve(host: host, port: port) {
        let (fd, e) = retryingInterrupts { socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        if fd < 0 { lastError = SystemError("open", "a socket", errno: e).reason; continue }
        setNonBlocking(fd)
        setSocketOptions(fd)
        // Not retried on EINTR: a non-blocking connect goes on by itself (a retry would say EALREADY).
        let rc = addr.withUnsafeBytes { connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(addr.count)) }
        let ce = rc == 0 ? 0 : errno
        if rc == 0 || ce == EINPROGRESS || ce == EINTR { return fd }
        lastError = SystemError("connect", "\(host):\(port)", errno: ce).reason
        Glibc.close(fd)
    }
    throw WireError(.unreachable, "cannot connect to \(host):\(port): \(lastError)")
}

/// Whether something accepts TCP connections on host:port right now (a blocking connect).
public func canConnect(host: String = "127.0.0.1", port: UInt16) -> Bool {
    guard port != 0, let addresses = try? resolve(host: host, port: port) else { return false }
    for (family, addr) in addresses {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { continue }
        defer { Glibc.close(fd) }
        let rc = addr.withUnsafeBytes { connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(addr.count)) }
        if rc == 0 { return true }
    }
    return false
}

/// A TCP port on `host` that is free now (for configs written before a daemon starts).
/// A port free now on `host`, for a daemon that is created now and started a little later
/// and must keep its port across restarts. It is chosen below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), so that no outgoing connection made in between (by
/// this or any process) can take it as its local port; the kernel's own choice (port 0)
/// only when that range leaves no room. A port is never handed out twice by one process
/// (the kernel may offer a port just closed again, and two daemons created one after the
/// other would then both be given it).
public func pickFreePort(host: String) throws -> UInt16 {
    let h = host == "localhost" ? "127.0.0.1" : host
    let range = (try? FileSystem.readFile("/proc/sys/net/ipv4/ip_local_port_range", maxSize: 64))
        .flatMap { $0 }.map { String(decoding: $0, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) } }
    let ephemeralLow = range?.first ?? 32768
    if ephemeralLow > 12_000 {
        for _ in 0..<64 {
            let candidate = UInt16(Int.random(in: 10_000..<ephemeralLow))
            guard portsHandedOut.withLock({ !$0.contains(candidate) }),
                  let (fd, port) = try? listenSocket(host: h, port: candidate) else { continue }
            Glibc.close(fd)
            portsHandedOut.withLock { _ = $0.insert(port) }
            return port
        }
    }
    for _ in 0..<64 {
        let (fd, port) = try listenSocket(host: h, port: 0)
        Glibc.close(fd)
        if portsHandedOut.withLock({ $0.insert(port).inserted }) { return port }
    }
    throw WireError(.unreachable, "no free port on \(host) that this process has not handed out already")
}

private let portsHandedOut = Mutex<Set<UInt16>>([])

/// A listening socket on host:port (port 0 picks a free one).
func listenSocket(host: String, port: UInt16, backlog: Int32 = 1024) throws -> (Int32, UInt16) {
    var lastError = "no address"
    for (family, addr) in try resolve(host: host, port: port) {
        let (fd, e) = retryingInterrupts { socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        if fd < 0 { lastError = SystemError("open", "a socket", errno: e).reason; continue }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(4))
        let ok = addr.withUnsafeBytes { bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(addr.count)) } == 0
            && listen(fd, backlog) == 0
        if !ok {
            lastError = SystemError("listen on", "\(host):\(port)", errno: errno).reason
            Glibc.close(fd)
            continue
        }
        setNonBlocking(fd)
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) { getsockname(fd, UnsafeMutableRawPointer($0).assumingMemoryBound(to: sockaddr.self), &len) }
        let bound: UInt16 = withUnsafePointer(to: &ss) { p in
            family == AF_INET6
                ? UInt16(bigEndian: UnsafeRawPointer(p).assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_port)
                : UInt16(bigEndian: UnsafeRawPointer(p).assumingMemoryBound(to: sockaddr_in.self).pointee.sin_port)
        }
        return (fd, bound)
    }
    throw WireError(.unreachable, "cannot listen on \(host):\(port): \(lastError)")
}
