import CEpoll
import Dispatch
import GridSystem

#if canImport(Glibc)
import Glibc
#endif

/// A listening TCP socket on an event loop: accepts every pending connection when the
/// socket is readable and hands each one (non-blocking, close-on-exec, TCP_NODELAY) to
/// `onAccept` on the loop thread. The RPC server and the HTTP server both use it.
public final class TCPListener: EventHandler, @unchecked Sendable {
    public let loop: EventLoop
    public private(set) var port: UInt16 = 0
    var fd: Int32 = -1
    /// Called on the loop thread with each accepted socket and the peer's address.
    var onAccept: ((Int32, String) -> Void)?

    public init(loop: EventLoop) { self.loop = loop }

    /// Listens on host:port (0: a free port) and starts accepting; returns the bound port.
    public func listen(host: String, port: UInt16, onAccept: @escaping (Int32, String) -> Void) throws -> UInt16 {
        let (fd, bound) = try listenSocket(host: host, port: port)
        self.fd = fd
        self.port = bound
        self.onAccept = onAccept
        let done = DispatchSemaphore(value: 0)
        loop.execute { [self] in
            loop.register(fd, self, events: epollIn)
            done.signal()
        }
        done.wait()
        return bound
    }

    public var isListening: Bool { fd >= 0 }

    /// Stops accepting (loop thread).
    public func close() {
        guard fd >= 0 else { return }
        loop.unregister(fd)
        Glibc.close(fd)
        fd = -1
        onAccept = nil
    }

    public func handleEvents(_ events: UInt32) {
        while fd >= 0 {
            var ss = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let (cfd, _) = retryingInterrupts {
                withUnsafeMutablePointer(to: &ss) {
                    accept(fd, UnsafeMutableRawPointer($0).assumingMemoryBound(to: sockaddr.self), &len)
                }
            }
            if cfd < 0 { return }  // EAGAIN, or out of descriptors: try again on the next event
            setNonBlocking(cfd)
            _ = fcntl(cfd, F_SETFD, FD_CLOEXEC)
            setSocketOptions(cfd)
            onAccept?(cfd, Self.describe(&ss))
        }
    }

    static func describe(_ ss: inout sockaddr_storage) -> String {
        var host = [CChar](repeating: 0, count: 64)
        var serv = [CChar](repeating: 0, count: 16)
        let len = socklen_t(ss.ss_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &ss) {
            getnameinfo(UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), len, &host, 64, &serv, 16,
                        NI_NUMERICHOST | NI_NUMERICSERV)
        }
        return "\(cString(host)):\(cString(serv))"
    }
}
