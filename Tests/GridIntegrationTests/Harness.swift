import Foundation
import GridCrypto
import GridIntroducer
import GridProtocol
import GridWire
import XCTest

/// The grid binary built next to the test bundle.
func gridExecutable() -> String {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for dir in [bundle, bundle.deletingLastPathComponent()] {
        let c = dir.appendingPathComponent("grid").path
        if FileManager.default.isExecutableFile(atPath: c) { return c }
    }
    return bundle.appendingPathComponent("grid").path
}

/// Runs `grid ARGS` to completion; returns (status, stdout).
@discardableResult
func runGrid(_ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: gridExecutable())
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// A daemon process (`grid storage run DIR` or `grid introducer run DIR`).
final class Daemon: @unchecked Sendable {
    let args: [String]
    let directory: String
    var process: Process?
    let logPath: String

    init(_ kind: String, directory: String) {
        args = [kind, "run", directory]
        self.directory = directory
        logPath = directory + "/daemon.log"
    }

    var port: UInt16 {
        let conf = (try? String(contentsOfFile: directory + "/grid.conf", encoding: .utf8)) ?? ""
        let line = conf.split(separator: "\n").first { $0.hasPrefix("listen") } ?? ""
        return UInt16(line.split(separator: ":").last ?? "") ?? 0
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: gridExecutable())
        p.arguments = args
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let logFile = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        logFile.seekToEndOfFile()
        p.standardOutput = logFile
        p.standardError = logFile
        try p.run()
        process = p
        // Ready when the port accepts connections.
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if canConnect(port: port) { return }
            guard p.isRunning else { throw WireError(.internal, "daemon exited: \(self.log(tail: 5))") }
            usleep(20_000)
        }
        throw WireError(.timeout, "daemon did not start listening on port \(port)")
    }

    func log(tail n: Int) -> String {
        let s = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return s.split(separator: "\n").suffix(n).joined(separator: "\n")
    }

    var isRunning: Bool { process?.isRunning ?? false }

    /// Sends `signal` and waits for the process to exit; returns its status.
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM) -> Int32 {
        guard let p = process, p.isRunning else { return process?.terminationStatus ?? 0 }
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
        return p.terminationStatus
    }

    deinit { if let p = process, p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
}

func canConnect(port: UInt16) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = port.bigEndian
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr)
    return withUnsafePointer(to: &a) { connect(fd, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_in>.size)) } == 0
}

/// An introducer and N storage servers on 127.0.0.1 in a temporary directory.
final class LocalGrid: @unchecked Sendable {
    let root: String
    let introducer: Daemon
    var servers: [Daemon] = []
    let address: IntroducerAddress
    let loop: EventLoop
    let tls: TLSContext

    init(servers n: Int, reserved: String = "0", introducerExpiry: String? = nil, announceInterval: String? = nil) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("grid-it-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let (st, out) = try runGrid(["introducer", "create", root + "/introducer"])
        guard st == 0, let last = out.split(separator: "\n").last else { throw WireError(.internal, "introducer create failed") }
        address = try IntroducerAddress(parsing: String(last))
        if let e = introducerExpiry { try Self.edit(root + "/introducer/grid.conf", "expiry", e) }
        introducer = Daemon("introducer", directory: root + "/introducer")
        try introducer.start()
        for i in 0..<n {
            let dir = root + "/storage\(i)"
            let (s, _) = try runGrid(["storage", "create", dir, "--introducer", address.description, "--nickname", "server\(i)", "--reserved-space", reserved])
            guard s == 0 else { throw WireError(.internal, "storage create failed") }
            if let a = announceInterval { try Self.edit(dir + "/grid.conf", "announce_interval", a) }
            let d = Daemon("storage", directory: dir)
            try d.start()
            servers.append(d)
        }
        loop = try EventLoop(name: "test-client")
        tls = try TLSContext.client()
    }

    /// Sets `key = value` in a grid.conf.
    static func edit(_ path: String, _ key: String, _ value: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasPrefix(key + " =") ? "\(key) = \(value)" : String(line)
        }
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    func subscriber() -> IntroducerSubscriber {
        var cfg = RPCClientConfig()
        cfg.connectTimeout = 5
        return IntroducerSubscriber(introducer: address, loop: loop, tls: tls, config: cfg)
    }

    /// A storage client for server `i`, its key pinned from its announcement.
    func storageClient(_ i: Int, via announcements: [String: Announcement]) async throws -> StorageClient {
        let nick = "server\(i)"
        guard let a = announcements.values.first(where: { $0.nickname == nick }) else {
            throw WireError(.notFound, "\(nick) has not announced")
        }
        let (host, port) = try splitHostPort(a.addresses[0])
        return StorageClient(try await RPCClient.connect(loop: loop, host: host, port: port, serverKey: a.publicKey,
                                                         service: storageServiceName, tls: tls))
    }

    func shutdown() {
        for s in servers { s.stop() }
        introducer.stop()
        loop.shutdown()
        try? FileManager.default.removeItem(atPath: root)
    }
}
