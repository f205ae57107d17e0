import ArgumentParser
import Foundation
import GridLocalGrid
import GridNode
import GridProtocol
import GridWire
import GridSystem

struct BenchConnections: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connections",
        abstract: "Hold many idle TLS client connections to a real storage server and measure its threads and memory.",
        discussion: """
            Starts an introducer and a storage server (this grid binary, as separate processes, \
            through the same launcher as `grid demo`) in a temporary directory, opens --count client connections to the storage server \
            (TLS handshake and HELLO done), leaves them idle, and reads the server's thread \
            count and resident memory from /proc before and after. It then times get_version \
            calls on one more connection while the others stay open. Everything is stopped at the end.

            \(ExitStatus.help)
            """)

    @Option(help: "Idle connections to open.") var count: Int = 1000
    @Option(help: "Seconds to stay idle before measuring.") var idle: Double = 3
    @Flag(help: "Print JSON.") var json = false

    struct ProcStatus { var rssKiB: Int; var threads: Int }

    static func status(_ pid: Int32) -> ProcStatus {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            let value = line.dropFirst(name.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? ""
            return Int(value) ?? 0
        }
        return ProcStatus(rssKiB: field("VmRSS"), threads: field("Threads"))
    }

    func run() throws {
        try reportingErrors {
            CurrentProcess.raiseFileLimit()
            let root = try LocalGrid.temporaryRoot(prefix: "grid-bench-conn")
            defer { FileSystem.removeTree(root) }
            let grid = try LocalGrid(root: root, executable: FileSystem.currentExecutable(), options: LocalGrid.Options(servers: 1))
            defer { grid.stop() }
            try measure(grid.servers[0])
        }
    }

    func measure(_ server: DaemonProcess) throws {
        let conf = try NodeConfig.load(directory: server.directory)
        let (host, port) = try splitHostPort(conf["node", "listen"]!)
        let key = try NodeIdentity.loadOrCreate(path: server.directory + "/private/node.key").publicKey
        let serverPID = server.pid!
        let loop = try EventLoop(name: "bench-loop")
        defer { loop.shutdown() }
        let tls = try TLSContext.client()
        let target = count, idleSeconds = idle
        let measured: (ProcStatus, ProcStatus, Double, Double, Double, Int)
        measured = try blockingAwait {
            // Wait for the server to answer.
            var probe: RPCClient?
            for _ in 0..<200 where probe == nil {
                probe = try? await RPCClient.connect(loop: loop, host: host, port: port, serverKey: key, service: storageServiceName, tls: tls)
                if probe == nil { try await Task.sleep(nanoseconds: 50_000_000) }
            }
            guard let first = probe else { throw GridError(.unavailable, "the storage server did not answer") }
            try await Task.sleep(nanoseconds: 500_000_000)
            let before = Self.status(serverPID)
            var clients: [RPCClient] = []
            let t0 = monotonicNow()
            while clients.count < target {
                let batch = min(100, target - clients.count)
                let opened = try await withThrowingTaskGroup(of: RPCClient.self) { g in
                    for _ in 0..<batch {
                        g.addTask { try await RPCClient.connect(loop: loop, host: host, port: port, serverKey: key, service: storageServiceName, tls: tls) }
                    }
                    var out: [RPCClient] = []
                    for try await c in g { out.append(c) }
                    return out
                }
                clients += opened
            }
            let connectSeconds = monotonicNow() - t0
            try await Task.sleep(nanoseconds: UInt64(idleSeconds * 1e9))
            let after = Self.status(serverPID)
            var lat: [Double] = []
            let s = StorageClient(first)
            for _ in 0..<200 {
                let t = monotonicNow()
                _ = try await s.getVersion()
                lat.append((monotonicNow() - t) * 1e6)
            }
            lat.sort()
            let alive = clients.filter { !$0.isClosed }.count
            for c in clients { c.close() }
            first.close()
            return (before, after, connectSeconds, lat[lat.count / 2], lat[lat.count * 99 / 100], alive)
        }
        let (before, after, secs, p50, p99, alive) = measured
        let perConn = Double(after.rssKiB - before.rssKiB) / Double(max(1, count))
        if json {
            FileHandleStdout.write("""
                {"connections": \(count), "open_after_idle": \(alive), "connect_seconds": \(fmt(secs, 3)), \
                "server_threads_before": \(before.threads), "server_threads_after": \(after.threads), \
                "server_rss_kib_before": \(before.rssKiB), "server_rss_kib_after": \(after.rssKiB), \
                "rss_kib_per_connection": \(fmt(perConn, 1)), "get_version_us_p50": \(fmt(p50, 0)), "get_version_us_p99": \(fmt(p99, 0))}

                """)
        } else {
            FileHandleStdout.write("""
                idle connections opened:   \(count) in \(fmt(secs, 2)) s (\(alive) still open after \(fmt(idleSeconds, 1)) s idle)
                server threads:            \(before.threads) before, \(after.threads) with \(count) connections
                server resident memory:    \(before.rssKiB) KiB before, \(after.rssKiB) KiB after (\(fmt(perConn, 1)) KiB per connection)
                get_version latency:       p50 \(fmt(p50, 0)) us, p99 \(fmt(p99, 0)) us with all connections open

                """)
        }
    }
}
