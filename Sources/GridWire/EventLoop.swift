import Foundation
import Synchronization

import CEpoll
import GridSystem

#if canImport(Glibc)
import Glibc
#endif

/// Something the event loop calls when its file descriptor is ready.
protocol EventHandler: AnyObject {
    func handleEvents(_ events: UInt32)
}

/// One thread running epoll over many sockets, plus timers.
///
/// Everything registered with the loop (connections, listeners, timers) is touched only
/// on the loop thread; other threads hand work over with `execute`, which wakes the loop
/// through an eventfd. This is why one loop can hold thousands of idle connections with
/// one thread and a few kilobytes each.
public final class EventLoop: @unchecked Sendable {
    let epfd: Int32
    let wakeFD: Int32
    var handlers: [Int32: EventHandler] = [:]
    let tasks = Mutex<[@Sendable () -> Void]>([])
    var timers = TimerHeap()
    var running = true
    var thread: Thread?
    let threadStarted = DispatchSemaphore(value: 0)
    let stopped = DispatchSemaphore(value: 0)

    /// Scratch space for TLS reads; only the loop thread touches it.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 64)

    public init(name: String = "grid-loop") throws {
        CurrentProcess.ignoreBrokenPipes()  // a peer closing mid-write must not kill the process
        epfd = try systemCall("create", "an epoll instance") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        wakeFD = try systemCall("create", "an eventfd") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
        var ev = epoll_event(events: epollIn, data: epoll_data_t(fd: wakeFD))
        epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &ev)
        let t = Thread { [self] in self.run() }
        t.name = name
        thread = t
        t.start()
        threadStarted.wait()
    }

    deinit { readBuffer.deallocate() }

    /// Runs `task` on the loop thread, soon.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        tasks.withLock { $0.append(task) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Stops the loop and waits for its thread to exit. Registered handlers are dropped.
    public func shutdown() {
        execute { [self] in running = false }
        stopped.wait()
    }

    // MARK: Loop thread only

    func register(_ fd: Int32, _ handler: EventHandler, events: UInt32) {
        handlers[fd] = handler
        var ev = epoll_event(events: events, data: epoll_data_t(fd: fd))
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)
    }

    func modify(_ fd: Int32, events: UInt32) {
        var ev = epoll_event(events: events, data: epoll_data_t(fd: fd))
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev)
    }

    func unregister(_ fd: Int32) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
        handlers[fd] = nil
    }

    /// Calls `action` on the loop thread after `seconds`; returns an id for `cancel`.
    @discardableResult
    public func schedule(after seconds: Double, _ action: @escaping () -> Void) -> UInt64 {
        timers.add(deadline: monotonicNow() + seconds, action)
    }

    public func cancel(_ timer: UInt64) { timers.cancel(timer) }

    func run() {
        threadStarted.signal()
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        while running {
            let wait = timers.nextDeadline.map { max(0, Int32(min(60_000, ($0 - monotonicNow()) * 1000 + 1))) } ?? 60_000
            let (n, _) = retryingInterrupts {
                events.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, Int32($0.count), wait) }
            }
            if n < 0 { break }
            if n > 0 {
                for i in 0..<Int(n) {
                    let fd = events[i].data.fd
                    if fd == wakeFD {
                        var v: UInt64 = 0
                        _ = read(wakeFD, &v, 8)
                        continue
                    }
                    handlers[fd]?.handleEvents(events[i].events)
                }
            }
            let pending = tasks.withLock { t -> [@Sendable () -> Void] in
                let all = t
                t.removeAll(keepingCapacity: true)
                return all
            }
            for task in pending { task() }
            for action in timers.popExpired(now: monotonicNow()) { action() }
        }
        for fd in handlers.keys { epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil) }
        handlers.removeAll()
        close(epfd)
        close(wakeFD)
        stopped.signal()
    }
}

/// A min-heap of timers with lazy cancellation.
struct TimerHeap {
    struct Entry { let deadline: Double; let id: UInt64 }
    var heap: [Entry] = []
    var actions: [UInt64: () -> Void] = [:]
    var nextID: UInt64 = 1

    var nextDeadline: Double? {
        heap.first?.deadline
    }

    mutating func add(deadline: Double, _ action: @escaping () -> Void) -> UInt64 {
        let id = nextID
        nextID += 1
        actions[id] = action
        heap.append(Entry(deadline: deadline, id: id))
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if heap[p].deadline <= heap[i].deadline { break }
            heap.swapAt(p, i)
            i = p
        }
        return id
    }

    mutating func cancel(_ id: UInt64) { actions[id] = nil }

    mutating func popMin() -> Entry? {
        guard !heap.isEmpty else { return nil }
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && heap[l].deadline < heap[m].deadline { m = l }
                if r < heap.count && heap[r].deadline < heap[m].deadline { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return top
    }

    mutating func popExpired(now: Double) -> [() -> Void] {
        var out: [() -> Void] = []
        while let top = heap.first, top.deadline <= now {
            _ = popMin()
            if let a = actions.removeValue(forKey: top.id) { out.append(a) }
        }
        // Drop cancelled entries at the top so nextDeadline stays meaningful.
        while let top = heap.first, actions[top.id] == nil { _ = popMin() }
        return out
    }
}

/// A fixed set of threads running submitted jobs: bounded threads whatever the load.
public final class WorkerPool: @unchecked Sendable {
    let queue = Mutex<[@Sendable () -> Void]>([])
    let available = DispatchSemaphore(value: 0)
    let count: Int

    public init(threads: Int, name: String) {
        count = threads
        for i in 0..<threads {
            let t = Thread { [self] in
                while true {
                    available.wait()
                    guard let job = queue.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { return }
                    job()
                }
            }
            t.name = "\(name)-\(i)"
            t.start()
        }
    }

    public func submit(_ job: @escaping @Sendable () -> Void) {
        queue.withLock { $0.append(job) }
        available.signal()
    }

    /// Lets the threads exit once the queue is empty.
    public func stop() {
        for _ in 0..<count { available.signal() }
    }
}
