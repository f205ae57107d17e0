import ArgumentParser
import Foundation
import GridClient
import GridCrypto
import GridNode
import GridProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The path of the running `grid` executable (daemons are started from it).
func selfExecutable() -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    if n > 0 { return string(fromCString: buf) }
    return CommandLine.arguments[0]
}

/// A throwaway grid on 127.0.0.1: an introducer and `servers` storage servers, each a real
/// `grid ... run` process with its own node directory under `root`, plus a client node.
final class LocalGridProcesses {
    let root: String
    let clientDirectory: String
    var processes: [(String, Process)] = []

    init(root: String) {
        self.root = root
        clientDirectory = root + "/client"
    }

    /// Creates the node directories and starts the daemons; `stop()` stops whatever started,
    /// even when this throws half-way.
    func launch(servers: Int, encoding: ClientEncoding, reservedSpace: String = "0") throws {
        let exe = selfExecutable()
        let introducer = try IntroducerNode.create(directory: root + "/introducer", host: "127.0.0.1", port: nil, location: nil)
        try start(exe, ["introducer", "run", root + "/introducer"], name: "introducer")
        for i in 0..<servers {
            let dir = root + "/storage\(i)"
            _ = try StorageNode.create(directory: dir, introducer: introducer, nickname: "storage\(i)", host: "127.0.0.1",
                                       port: nil, location: nil, reservedSpace: reservedSpace)
            try start(exe, ["storage", "run", dir], name: "storage\(i)")
        }
        try ClientNode.create(directory: clientDirectory, introducer: introducer, encoding: encoding, nickname: "local-client")
    }

    func start(_ exe: String, _ args: [String], name: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let logPath = args.last! + "/daemon.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
        let log = FileHandle(forWritingAtPath: logPath)
        p.standardOutput = log
        p.standardError = log
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw ClientError("cannot start \(exe) \(args.joined(separator: " ")): \(error)") }
        processes.append((name, p))
    }

    /// Stops every daemon (SIGTERM, then SIGKILL after 5 s) and waits for them.
    func stop() {
        for (_, p) in processes where p.isRunning { kill(p.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(5)
        for (_, p) in processes {
            while p.isRunning && Date() < deadline { usleep(20_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
        processes.removeAll()
    }

    func storageProcess(_ i: Int) -> Process? { processes.first { $0.0 == "storage\(i)" }?.1 }
}

/// Runs `body` with a throwaway local grid of `servers` storage daemons in a new
/// temporary directory and a client pool that sees all of them (`body` also gets how long
/// they took to announce themselves); then stops the daemons and removes the directory
/// (unless `keep`). `started`/`stopped` report the directory.
func withLocalGrid<T>(prefix: String, servers: Int, encoding: ClientEncoding, keep: Bool = false,
                      started: (String) -> Void = { _ in }, stopped: (String) -> Void = { _ in },
                      _ body: (LocalGridProcesses, ClientSettings, ServerPool, Double) throws -> T) throws -> T {
    let root = try makeTemporaryDirectory(prefix)
    started(root)
    let grid = LocalGridProcesses(root: root)
    defer {
        grid.stop()
        if !keep { try? FileManager.default.removeItem(atPath: root) }
        stopped(root)
    }
    try grid.launch(servers: servers, encoding: encoding)
    let settings = try ClientNode.load(directory: grid.clientDirectory)
    let pool = try ServerPool(introducer: settings.introducer)
    defer { pool.shutdown() }
    let t0 = Date()
    let known = try blockingAwait { await pool.waitForServers(enough: servers, minimum: servers, timeout: 60) }
    guard known.count == servers else {
        throw ClientError("only \(known.count) of \(servers) servers announced themselves within 60 s; see the daemon.log files in \(root) (keep it with --keep)")
    }
    return try body(grid, settings, pool, Date().timeIntervalSince(t0))
}

/// The options of commands that start a local grid (`grid demo`, `grid bench grid`).
struct LocalGridOptions: ParsableArguments {
    @Option(help: "Storage servers to start.") var servers: Int = 10
    @Option(help: "Shares needed (k).") var needed: Int = 3
    @Option(help: "Servers of happiness.") var happy: Int = 7
    @Option(help: "Shares made (n).") var total: Int = 10

    var encoding: ClientEncoding { ClientEncoding(needed: needed, happy: happy, total: total) }
}

/// mkdtemp under $TMPDIR (or /tmp).
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let dir = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
    var template = Array("\(dir)/\(prefix)-XXXXXX".utf8CString)
    guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
        throw ClientError("cannot create a temporary directory in \(dir): \(String(cString: strerror(errno)))")
    }
    return string(fromCString: template)
}

/// The text of a NUL-terminated C buffer (mkstemp/mkdtemp templates, readlink results).
func string(fromCString buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Writes `size` pseudo-random bytes (a fast xorshift stream seeded by `seed`) to `path`,
/// 1 MiB at a time.
func writeSampleFile(_ path: String, size: UInt64, seed: UInt64) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw ClientError("cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var state = seed | 1
    var buf = [UInt64](repeating: 0, count: 1 << 17)
    var left = size
    while left > 0 {
        for i in 0..<buf.count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            buf[i] = state
        }
        let n = Int(min(left, UInt64(buf.count * 8)))
        let w = buf.withUnsafeBytes { write(fd, $0.baseAddress, n) }
        guard w == n else { throw ClientError("cannot write \(path): \(String(cString: strerror(errno)))") }
        left -= UInt64(n)
    }
}

/// SHA-256 of a file, streamed.
func sha256(file path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ClientError("cannot open \(path)") }
    defer { close(fd) }
    let h = SHA256()
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    defer { buf.deallocate() }
    while true {
        let r = read(fd, buf.baseAddress, buf.count)
        if r <= 0 { break }
        h.update(UnsafeRawBufferPointer(rebasing: buf[0..<r]))
    }
    return h.finalize()
}

/// Peak resident set size of this process, in bytes.
func peakRSS() -> UInt64 {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return UInt64(ru.ru_maxrss) * 1024
}

/// CPU seconds (user + system) used so far by this process.
func selfCPUSeconds() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6 + Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
}

/// CPU seconds (user + system) used so far by process `pid`, from /proc.
func processCPUSeconds(_ pid: Int32) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return 0 }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

extension LocalGridProcesses {
    /// CPU seconds used so far by all the daemons together.
    var daemonsCPUSeconds: Double { processes.reduce(0) { $0 + processCPUSeconds($1.1.processIdentifier) } }
}
