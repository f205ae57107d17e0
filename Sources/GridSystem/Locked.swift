import Foundation

/// A value shared between tasks or with a @Sendable closure, read and changed under a lock.
public final class Locked<T>: @unchecked Sendable {
    let lock = NSLock()
    var _value: T
    public init(_ v: T) { _value = v }
    public var value: T {
        get { lock.lock(); defer { lock.unlock() }; return _value }
        set { lock.lock(); _value = newValue; lock.unlock() }
    }
    /// Changes the value under the lock (a read-modify-write no other task can split).
    public func mutate<R>(_ body: (inout T) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&_value)
    }
}
