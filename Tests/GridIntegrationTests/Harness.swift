import Dispatch
import Foundation
import GridCrypto
import GridIntroducer
import GridLocalGrid
import GridProtocol
import GridWire
import GridSystem
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

/// Runs `grid ARGS` to completion; returns (status, stderr).
func runGridErrors(_ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: gridExecutable())
    p.arguments = args
    let err = Pipe()
    p.standardOutput = FileHandle.nullDevice
    p.standardError = err
    try p.run()
    let data = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
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

extension DaemonProcess {
    /// Starts the daemon from the grid binary under test.
    func start(environment: [String: String] = [:]) throws { try start(executable: gridExecutable(), environment: environment) }
}

/// An introducer and N storage servers on 127.0.0.1 in a temporary directory (the shared
/// launcher, `GridLocalGrid.LocalGrid`), plus a client event loop for talking to them.
final class TestGrid: @unchecked Sendable {
    let grid: LocalGrid
    let loop: EventLoop
    let tls: TLSContext
    var root: String { grid.root }
    var introducer: DaemonProcess { grid.introducer }
    var servers: [DaemonProcess] { grid.servers }
    var address: IntroducerAddress { grid.address }

    init(servers n: Int, reserved: String = "0", introducerExpiry: String? = nil, announceInterval: String? = nil,
         storage: [String: String] = [:], metrics: Bool = false,
         announce: (@Sendable (_ server: Int, _ port: UInt16) throws -> String)? = nil) throws {
        var options = LocalGrid.Options(servers: n)
        options.announce = announce
        options.metrics = metrics
        options.reservedSpace = reserved
        options.nicknamePrefix = "server"
        options.introducerExpiry = introducerExpiry
        options.announceInterval = announceInterval
        options.storageSettings = storage
        grid = try LocalGrid(root: try LocalGrid.temporaryRoot(prefix: "grid-it"), executable: gridExecutable(), options: options)
        loop = try EventLoop(name: "test-client")
        tls = try TLSContext.client()
        if n > 0 { try waitUntilAnnounced(n) }
    }

    /// Blocks until the introducer has every server's announcement, so a test's first
    /// upload sees the whole grid however slowly the daemons came up on a loaded machine.
    private func waitUntilAnnounced(_ n: Int, timeout: Double = 45) throws {
        let sub = subscriber()
        defer { sub.stop() }
        let seen = Atomic<Set<String>>([])
        let done = DispatchSemaphore(value: 0)
        Task { seen.value = Set(await sub.waitForServers(n, timeout: timeout).values.map(\.nickname)); done.signal() }
        done.wait()
        guard seen.value.count >= n else {
            // Say which servers are missing and what their logs say.
            let missing = servers.enumerated().filter { !seen.value.contains("server\($0.offset)") }
                .map { "server\($0.offset) (running: \($0.element.isRunning)): \($0.element.log(tail: 6))" }
            let introLog = introducer.log(tail: 6)
            shutdown()
            throw GridError(.unavailable, "only \(seen.value.count) of \(n) servers announced within \(Int(timeout)) s; "
                + missing.joined(separator: "; ") + "; introducer: " + introLog)
        }
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
        grid.stop()
        loop.shutdown()
        FileSystem.removeTree(root)
    }
}

    /// Runs `grid ARGS` with `stdin`; returns (status, stdout, stderr).
func runGridCLI(_ args: [String], stdin: [UInt8]? = nil, env: [String: String] = [:]) throws -> (Int32, [UInt8], String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: gridExecutable())
    p.arguments = args
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    p.environment = e
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try p.run()
    let writer = Thread {
        if let stdin { inp.fileHandleForWriting.write(Data(stdin)) }
        try? inp.fileHandleForWriting.close()
    }
    writer.start()
    let errData = UnsafeBox<Data>(Data())
    let errReader = Thread { errData.value = err.fileHandleForReading.readDataToEndOfFile() }
    errReader.start()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    while errReader.isExecuting || !errReader.isFinished { usleep(1000) }
    return (p.terminationStatus, Array(o), String(decoding: errData.value, as: UTF8.self))
}

