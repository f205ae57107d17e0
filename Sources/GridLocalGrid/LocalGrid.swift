import Foundation
import GridClient
import GridNode
import GridProtocol
import GridSystem
import GridWire


/// One daemon process, `grid introducer run DIR` or `grid storage run DIR`, logging to
/// DIR/daemon.log.
public final class DaemonProcess: @unchecked Sendable {
    public let kind: String
    public let directory: String
    public let logPath: String
    public private(set) var process: Process?

    public init(kind: String, directory: String) {
        self.kind = kind
        self.directory = directory
        logPath = directory + "/daemon.log"
    }

    /// The port it listens on, from its grid.conf.
    public var port: UInt16 {
        let conf = (try? readSecretFile(directory + "/grid.conf")) ?? ""
        let line = conf.split(separator: "\n").first { $0.hasPrefix("listen") } ?? ""
        return UInt16(line.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") ?? 0
    }

    /// The port of its /metrics endpoint (0: none configured).
    public var metricsPort: UInt16 {
        let conf = (try? readSecretFile(directory + "/grid.conf")) ?? ""
        let line = conf.split(separator: "\n").first { $0.hasPrefix("metrics") } ?? ""
        return UInt16(line.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") ?? 0
    }

    public var isRunning: Bool { process?.isRunning ?? false }
    public var pid: Int32? { process?.processIdentifier }

    /// Starts the daemon from `executable` and waits until its port accepts connections
    /// (or it exits, or `timeout` passes: both errors, with the end of its log).
    /// `environment` is added to this process's own.
    public func start(executable: String, timeout: Double = 15, environment: [String: String] = [:]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = [kind, "run", directory]
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        let logFile = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        logFile.seekToEndOfFile()
        p.standardOutput = logFile
        p.standardError = logFile
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch {
            throw GridError(.internal, "cannot start \(executable) \(kind) run \(directory): \(error)")
        }
        process = p
        let port = self.port
        let deadline = monotonicNow() + timeout
        while monotonicNow() < deadline {
            if canConnect(port: port) { return }
            guard p.isRunning else {
                throw GridError(.unavailable, "\(kind) daemon in \(directory) exited: \(log(tail: 3))")
            }
            CurrentProcess.sleep(seconds: 0.02)
        }
        throw GridError(.unavailable, "\(kind) daemon in \(directory) did not listen on port \(port) within \(Int(timeout)) s")
    }

    /// Sends `signal` without waiting.
    public func signal(_ signal: Int32) {
        if let p = process, p.isRunning { CurrentProcess.send(signal, to: p.processIdentifier) }
    }

    /// Sends `signal` and waits for the process to exit (SIGKILL after `timeout` s); returns its status.
    @discardableResult
    public func stop(_ signal: Int32 = ProcessSignal.terminate, timeout: Double = 5) -> Int32 {
        guard let p = process, p.isRunning else { return process?.terminationStatus ?? 0 }
        CurrentProcess.send(signal, to: p.processIdentifier)
        let deadline = monotonicNow() + timeout
        while p.isRunning && monotonicNow() < deadline { CurrentProcess.sleep(seconds: 0.01) }
        if p.isRunning { CurrentProcess.send(ProcessSignal.kill, to: p.processIdentifier) }
        p.waitUntilExit()
        return p.terminationStatus
    }

    /// The last `n` lines of its log.
    public func log(tail n: Int) -> String {
        let s = (try? FileSystem.readFile(logPath, maxSize: 64 << 20)).map { String(decoding: $0 ?? [], as: UTF8.self) } ?? ""
        return s.split(separator: "\n").suffix(n).joined(separator: " | ")
    }

    /// CPU seconds it has used so far.
    public var cpuSeconds: Double { pid.map(CurrentProcess.cpuSeconds(of:)) ?? 0 }

    /// Where a detached daemon's process id is kept.
    public var pidPath: String { directory + "/daemon.pid" }

    /// Lets the daemon outlive this process: records its pid in DIR/daemon.pid and forgets it.
    public func detach() throws {
        guard let pid else { return }
        try writeSecretFile(pidPath, "\(pid)\n")
        process = nil
    }

    /// The pid of a detached daemon that is still running, from DIR/daemon.pid.
    public var detachedPID: Int32? {
        guard let text = try? readSecretFile(pidPath), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
              pid > 0, CurrentProcess.isAlive(pid) else { return nil }
        return pid
    }

    deinit { if let p = process, p.isRunning { CurrentProcess.send(ProcessSignal.kill, to: p.processIdentifier); p.waitUntilExit() } }
}

/// A grid on 127.0.0.1 for demos, benchmarks, development and tests: an introducer and N
/// storage servers, each a real daemon process with its own node directory under `root`,
/// and a client node directory (`root/client`). The one launcher `grid demo`, `grid bench
/// grid`, `grid local-grid` (tools/local-grid.sh) and the integration tests share.
public final class LocalGrid: @unchecked Sendable {
    public struct Options: Sendable {
        public var servers = 10
        public var encoding = ClientEncoding()
        public var reservedSpace = "0"
        /// Storage servers are called PREFIX0, PREFIX1, ...
        public var nicknamePrefix = "storage"
        /// Overrides of the introducer's `expiry` and the servers' `announce_interval`.
        public var introducerExpiry: String?
        public var announceInterval: String?
        /// Other `[storage]` settings for every server (e.g. lease_duration, expire).
        public var storageSettings: [String: String] = [:]
        /// Give the introducer and every server a /metrics endpoint on a free loopback port.
        public var metrics = false
        /// The `location` server i announces, given the port it listens on (default: that
        /// port on 127.0.0.1); e.g. the address of a delay proxy in front of it.
        public var announce: (@Sendable (_ server: Int, _ port: UInt16) throws -> String)?
        public init(servers: Int = 10, encoding: ClientEncoding = ClientEncoding()) {
            self.servers = servers
            self.encoding = encoding
        }
    }

    public let root: String
    public let executable: String
    public let introducer: DaemonProcess
    public private(set) var servers: [DaemonProcess] = []
    public let address: IntroducerAddress
    public var clientDirectory: String { root + "/client" }

    /// Creates whatever node directories under `root` are missing, then starts the
    /// introducer and every storage server and waits until each listens. `stop()` stops
    /// whatever started, even when this throws half-way.
    public init(root: String, executable: String, options: Options) throws {
        self.root = root
        self.executable = executable
        try FileSystem.makeDirectories(root)
        let introDir = root + "/introducer"
        if FileSystem.exists(introDir + "/grid.conf") {
            address = try IntroducerNode.address(directory: introDir)
        } else {
            address = try IntroducerNode.create(directory: introDir, host: "127.0.0.1", port: nil, location: nil)
            if let e = options.introducerExpiry { try Self.setConfig(introDir, "expiry", e) }
            if options.metrics { try Self.addNodeSetting(introDir, "metrics", "127.0.0.1:\(try pickFreePort(host: "127.0.0.1"))") }
        }
        introducer = DaemonProcess(kind: "introducer", directory: introDir)
        for i in 0..<options.servers {
            let dir = root + "/storage\(i)"
            if !FileSystem.exists(dir + "/grid.conf") {
                _ = try StorageNode.create(directory: dir, introducer: address, nickname: "\(options.nicknamePrefix)\(i)",
                                           host: "127.0.0.1", port: nil, location: nil, reservedSpace: options.reservedSpace)
                if let a = options.announceInterval { try Self.setConfig(dir, "announce_interval", a) }
                for (k, v) in options.storageSettings.sorted(by: { $0.key < $1.key }) { try Self.setConfig(dir, k, v) }
                if options.metrics { try Self.addNodeSetting(dir, "metrics", "127.0.0.1:\(try pickFreePort(host: "127.0.0.1"))") }
                if let announce = options.announce {
                    try Self.setConfig(dir, "location", try announce(i, DaemonProcess(kind: "storage", directory: dir).port))
                }
            }
            servers.append(DaemonProcess(kind: "storage", directory: dir))
        }
        if !FileSystem.exists(clientDirectory + "/grid.conf") {
            try ClientNode.create(directory: clientDirectory, introducer: address, encoding: options.encoding,
                                  nickname: "local-client")
        }
        do {
            try introducer.start(executable: executable)
            for s in servers { try s.start(executable: executable) }
        } catch {
            stop()
            throw error
        }
    }

    /// A new temporary directory for a throwaway grid.
    public static func temporaryRoot(prefix: String) throws -> String {
        try FileSystem.makeTemporaryDirectory(prefix: prefix)
    }

    /// Sets `key = value` in the grid.conf of the node in `directory`.
    public static func setConfig(_ directory: String, _ key: String, _ value: String) throws {
        let path = directory + "/grid.conf"
        let text = try readSecretFile(path) ?? ""
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasPrefix(key + " =") ? "\(key) = \(value)" : String(line)
        }
        try writeSecretFile(path, lines.joined(separator: "\n"))
    }

    /// Adds `key = value` to the [node] section of the grid.conf in `directory`.
    public static func addNodeSetting(_ directory: String, _ key: String, _ value: String) throws {
        let path = directory + "/grid.conf"
        let text = try readSecretFile(path) ?? ""
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let i = lines.firstIndex(of: "[node]") else { throw GridError(.corrupt, "\(path) has no [node] section") }
        lines.insert("\(key) = \(value)", at: i + 1)
        try writeSecretFile(path, lines.joined(separator: "\n"))
    }

    /// Waits until `pool` sees every storage server announced; returns the seconds it took.
    public func waitUntilAnnounced(_ pool: ServerPool, timeout: Double = 60) async throws -> Double {
        let t0 = monotonicNow()
        let known = await pool.waitForServers(count: servers.count, timeout: timeout)
        guard known.count == servers.count else {
            throw GridError(.unavailable,
                "only \(known.count) of \(servers.count) servers announced themselves within \(Int(timeout)) s; see the daemon.log files in \(root)")
        }
        return monotonicNow() - t0
    }

    /// Stops every daemon (SIGTERM, then SIGKILL after 5 s) and waits for them.
    public func stop() {
        for s in servers { s.signal(ProcessSignal.terminate) }
        for s in servers { s.stop() }
        introducer.stop()
    }

    /// Leaves every daemon running after this process exits (see `DaemonProcess.detach`).
    public func detach() throws {
        try introducer.detach()
        for s in servers { try s.detach() }
    }

    /// The daemons of a grid under `root` started earlier and detached, by node directory
    /// name, with their pid when running.
    public static func detachedDaemons(root: String) throws -> [(name: String, daemon: DaemonProcess, pid: Int32?)] {
        try FileSystem.list(root).sorted { a, b in
            // introducer first, then storage0, storage1, ... in numeric order
            let na = Int(a.drop { !$0.isNumber }) ?? -1, nb = Int(b.drop { !$0.isNumber }) ?? -1
            return (a.hasPrefix("storage") ? 1 : 0, na) < (b.hasPrefix("storage") ? 1 : 0, nb)
        }.compactMap { name in
            guard name == "introducer" || name.hasPrefix("storage"), FileSystem.exists("\(root)/\(name)/grid.conf") else { return nil }
            let d = DaemonProcess(kind: name == "introducer" ? "introducer" : "storage", directory: "\(root)/\(name)")
            return (name, d, d.detachedPID)
        }
    }

    /// Stops the detached daemons under `root` (SIGTERM, then SIGKILL after `timeout` s);
    /// returns the names of those it stopped.
    @discardableResult
    public static func stopDetached(root: String, timeout: Double = 5) throws -> [String] {
        let running = try detachedDaemons(root: root).filter { $0.pid != nil }
        for r in running { CurrentProcess.send(ProcessSignal.terminate, to: r.pid!) }
        let deadline = monotonicNow() + timeout
        for r in running {
            while CurrentProcess.isAlive(r.pid!) && monotonicNow() < deadline { CurrentProcess.sleep(seconds: 0.05) }
            if CurrentProcess.isAlive(r.pid!) { CurrentProcess.send(ProcessSignal.kill, to: r.pid!) }
            try? FileSystem.remove(r.daemon.pidPath)
        }
        return running.map(\.name)
    }

    /// CPU seconds used so far by all the daemons together.
    public var daemonsCPUSeconds: Double { servers.reduce(introducer.cpuSeconds) { $0 + $1.cpuSeconds } }
}
