#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What kind of failure an error is. Code that must react to a failure (the downloader
/// choosing another share, a verifier reporting a share, the CLI choosing an exit status)
/// branches on this, never on an error's text.
public enum ErrorClass: String, Sendable, CaseIterable {
    /// The caller asked for something malformed or impossible (a bad option, a bad capability).
    case usage
    /// No such file, share, bucket or node.
    case notFound
    /// Data failed a hash or a structural check: it is not what it claims to be.
    case corrupt
    /// Well-formed but of a version, format or parameter set this program does not handle.
    case incompatible
    /// A server is gone, timed out or refused; too few servers or shares could be reached.
    case unavailable
    /// Someone else holds the thing: a differing rewrite, a node already running.
    case conflict
    /// The disk, or the space a server keeps in reserve, is full.
    case noSpace
    /// A wrong secret, a wrong key, or no permission.
    case denied
    /// A local I/O failure of any other kind.
    case io
    /// A bug in this program.
    case `internal`
}

/// An error that says which class of failure it is. Every error type of grid conforms;
/// its `description` is one line for people.
public protocol ClassifiedError: Error, CustomStringConvertible, Sendable {
    var errorClass: ErrorClass { get }
}

/// An error whose description is one stored sentence.
public protocol MessageError: ClassifiedError {
    var message: String { get }
}

extension MessageError {
    public var description: String { message }
}

extension Error {
    /// The class of any error: a `ClassifiedError`'s own, `.internal` for anything else.
    public var errorClass: ErrorClass { (self as? any ClassifiedError)?.errorClass ?? .internal }
}

/// An error fully described by its class and one sentence: what most modules throw when
/// no caller needs more structure than the class (a bad capability string, a node
/// directory that is not one, too few servers for an upload).
public struct GridError: MessageError, Equatable {
    public let errorClass: ErrorClass
    public let message: String
    public init(_ errorClass: ErrorClass, _ message: String) { (self.errorClass, self.message) = (errorClass, message) }
}

/// A failed system call: which operation, on what, and the errno it set (read at once).
public struct SystemError: ClassifiedError, Equatable {
    /// A verb: "open", "read", "write", "rename", ...
    public let operation: String
    /// The file or object the call was about.
    public let path: String
    public let code: Int32

    public init(_ operation: String, _ path: String, errno code: Int32) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    public var errorClass: ErrorClass {
        switch code {
        case ENOENT, ENOTDIR: return .notFound
        case ENOSPC, EDQUOT: return .noSpace
        case EACCES, EPERM, EROFS: return .denied
        case EEXIST, EWOULDBLOCK: return .conflict
        case ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, EPIPE: return .unavailable
        default: return .io
        }
    }

    public var reason: String { String(cString: strerror(code)) }
    public var description: String { "cannot \(operation) \(path): \(reason)" }
}

/// Runs a system call until it does anything but fail with EINTR (the one place that
/// retries EINTR). Returns the call's result and, when it is negative, the errno it set,
/// read before anything else can change it. For calls whose failures the caller handles
/// itself (EAGAIN on a non-blocking socket).
@inline(__always)
public func retryingInterrupts<T: BinaryInteger>(_ call: () -> T) -> (result: T, errno: Int32) {
    while true {
        let r = call()
        if r >= 0 { return (r, 0) }
        let e = errno
        if e != EINTR { return (r, e) }
    }
}

/// Runs a system call (retrying EINTR) and throws a `SystemError` for `operation` on
/// `path` when it fails.
@inline(__always)
@discardableResult
public func systemCall<T: BinaryInteger>(_ operation: String, _ path: @autoclosure () -> String, _ call: () -> T) throws -> T {
    let (r, e) = retryingInterrupts(call)
    if r < 0 { throw SystemError(operation, path(), errno: e) }
    return r
}
