import Dispatch
#if os(Linux)
import CEpoll
#endif

#if canImport(Glibc)
import Glibc
#endif

/// Seconds on a clock that never jumps (CLOCK_MONOTONIC): for timeouts and durations.
public func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Seconds since the Unix epoch as this process sees it: the system's real-time clock
/// plus `WallClock.offset`. Every wall-clock read in grid (lease expiry, announcement
/// sequence numbers, directory timestamps, status pages) goes through here, so a test
/// can give one daemon a wrong clock without touching the system's.
public func wallClock() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9 + Double(WallClock.offset)
}

/// The real time the kernel stamps files with: `wallClock()` without `WallClock.offset`.
/// Compare file modification times with this, never with the shifted clock.
public func fileClock() -> Double { wallClock() - Double(WallClock.offset) }

/// `wallClock()` in whole seconds (0 before the epoch).
public func wallClockSeconds() -> UInt64 { UInt64(max(0, wallClock().rounded(.down))) }

/// A fault-injection aid: `GRID_CLOCK_OFFSET=<seconds>` (signed, at most ten years either
/// way) shifts this process's wall clock. The monotonic clock, which every timeout and
/// timer uses, is not shifted. tools/netgrid.py runs skewed servers with it; a daemon
/// started with an offset says so in its log.
public enum WallClock {
    public static let offset: Int64 = parse(CurrentProcess.environment("GRID_CLOCK_OFFSET"))

    /// The offset `text` names, or 0 when it is absent or not a whole number of seconds
    /// within ten years.
    public static func parse(_ text: String?) -> Int64 {
        guard let text, let v = Int64(text),
              v.magnitude <= 10 * 366 * 86_400 else { return 0 }
        return v
    }
}

/// Facts about, and settings of, the running process.
public enum CurrentProcess {
    public static var id: Int32 { getpid() }

    /// Blocks until SIGINT or SIGTERM arrives; returns which.
    public static func waitForTerminationSignal() -> Int32 {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sem = DispatchSemaphore(value: 0)
        let got = SignalBox()
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler { got.value = sig; sem.signal() }
            src.resume()
            sources.append(src)
        }
        sem.wait()
        for s in sources { s.cancel() }
        return got.value
    }

    /// Raises the open-file limit to the hard limit, so a server can hold many connections.
    public static func raiseFileLimit() {
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        }
    }

    /// Shares move in blocks of a few hundred KiB. By default glibc serves each such
    /// buffer with a fresh mmap, so every block costs page faults and zeroing; keeping
    /// them on the heap lets freed buffers be reused.
    public static func keepBlockBuffersOnHeap() {
        #if os(Linux)
        _ = mallopt(M_MMAP_THRESHOLD, 64 << 20)
        _ = mallopt(M_TRIM_THRESHOLD, 128 << 20)
        #endif
    }

    /// At most `n` malloc arenas. A process with many threads that each allocate and free
    /// large buffers (the gateway's handler threads) otherwise keeps one arena's worth of
    /// freed memory per thread: a 1 GiB GET peaked at 80 MB with glibc's default, 41 MB with 2.
    public static func limitMallocArenas(_ n: Int32) {
        #if os(Linux)
        _ = mallopt(M_ARENA_MAX, n)
        #endif
    }

    /// Writes to a peer that has gone must be an error (EPIPE), not a signal that kills us.
    public static func ignoreBrokenPipes() { signal(SIGPIPE, SIG_IGN) }

    /// Peak resident set size, in bytes.
    public static var peakResidentBytes: UInt64 {
        var ru = rusage()
        getrusage(RUSAGE_SELF.rawValue, &ru)
        return UInt64(ru.ru_maxrss) * 1024
    }

    /// CPU seconds (user + system) used so far.
    public static var cpuSeconds: Double {
        var ru = rusage()
        getrusage(RUSAGE_SELF.rawValue, &ru)
        return Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6
            + Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
    }

    /// CPU seconds (user + system) used so far by process `pid`, from /proc; 0 if unknown.
    public static func cpuSeconds(of pid: Int32) -> Double {
        guard let bytes = try? FileSystem.readFile("/proc/\(pid)/stat") else { return 0 }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Sends `signal` to process `pid`; false when there is no such process.
    @discardableResult
    public static func send(_ signal: Int32, to pid: Int32) -> Bool { kill(pid, signal) == 0 }

    /// Whether process `pid` exists.
    public static func isAlive(_ pid: Int32) -> Bool { kill(pid, 0) == 0 || errno == EPERM }

    /// Sleeps this thread.
    public static func sleep(seconds: Double) { usleep(UInt32(max(0, seconds) * 1e6)) }

    /// An environment variable, nil when unset or empty.
    public static func environment(_ name: String) -> String? {
        guard let v = getenv(name), v[0] != 0 else { return nil }
        return String(cString: v)
    }

    /// Ends the process with `code` once its work is done: output flushed, then `_exit`,
    /// without running global destructors while event-loop and worker threads may still
    /// be using what they would tear down (that race made a finished command crash with
    /// SIGSEGV now and then).
    public static func exitNow(_ code: Int32) -> Never {
        fflush(nil)  // every C stream (Swift's print goes through stdout's buffer)
        _exit(code)
    }

    /// Ends this process at once, as `kill -9` would (crash tests' failpoints).
    public static func killSelf() -> Never {
        kill(getpid(), SIGKILL)
        _exit(137)
    }
}

final class SignalBox: @unchecked Sendable { var value: Int32 = 0 }

/// The signals grid sends to its daemons.
public enum ProcessSignal {
    public static let terminate = SIGTERM
    public static let kill = SIGKILL
    public static let interrupt = SIGINT
    public static let stop = SIGSTOP
    public static let resume = SIGCONT
}
