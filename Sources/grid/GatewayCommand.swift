import ArgumentParser
import Foundation
import GridClient
import GridFilesystem
import GridGateway
import GridHTTP
import GridMetrics
import GridNode
import GridProtocol
import GridSystem
import GridWire

struct GatewayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Serve Tahoe's web API and a status page for a client node (the stock tahoe CLI, browsers, scripts).",
        discussion: """
            Serves Tahoe-LAFS 1.20's web API (PUT /uri, GET /uri/CAP/path, ?t=json, \
            t=mkdir, t=check, t=stream-manifest, t=stream-deep-check, ...) and a status page \
            at / for the client node, and writes NODEDIR/node.url. The stock `tahoe` CLI \
            then works against this grid: give it a node directory holding only that node.url \
            and an empty private/ (tahoe -d DIR ls, tahoe -d DIR put FILE, ...).

            It listens on 127.0.0.1 unless told otherwise. Anything else needs \
            --allow-remote: a capability is the whole authority over a file or directory, \
            and whoever reaches this port can use every capability they know, and upload as \
            this node. Put it behind something that authenticates before exposing it.

            [gateway] listen = HOST:PORT in the node's grid.conf sets the default address; \
            [node] metrics = HOST:PORT serves Prometheus metrics at /metrics.

            Examples:
              grid gateway                                   # ~/.grid/client on 127.0.0.1:3456
              grid gateway --node-dir /srv/grid/client --listen 127.0.0.1:8080
              mkdir -p t/private && cp /srv/grid/client/node.url t/ && tahoe -d t ls URI:DIR2:...

            \(ExitStatus.help)
            """)

    @Option(help: "The client node directory (default: $GRID_NODE_DIR or ~/.grid/client).") var nodeDir: String?
    @Option(help: "HOST:PORT to listen on (default: [gateway] listen in grid.conf, else 127.0.0.1:3456; port 0 picks one).") var listen: String?
    @Flag(help: "Allow listening on an address other than loopback (see above: anyone who reaches it can use every capability they know).")
    var allowRemote = false
    @Option(help: "HOST:PORT for Prometheus metrics (default: [node] metrics in grid.conf; off when neither is set).") var metrics: String?

    func run() throws {
        try reportingErrors {
            CurrentProcess.limitMallocArenas(2)
            let dir = ClientNode.resolveDirectory(nodeDir)
            let conf = try NodeConfig.load(directory: dir, expecting: .client)
            let lock = try NodeLock(directory: dir, name: "gateway.lock", busy: "a gateway is already serving \(dir)")
            defer { withExtendedLifetime(lock) {} }
            let address = listen ?? conf["gateway", "listen"] ?? "127.0.0.1:3456"
            let (host, port) = try splitHostPort(address)
            let remoteAllowed = allowRemote || ["true", "yes", "1", "on"].contains((conf["gateway", "allow_remote"] ?? "").lowercased())
            if !Self.isLoopback(host) && !remoteAllowed {
                throw GridError(.usage, "\(address) is not a loopback address; whoever reaches the gateway can use every capability they know. "
                    + "Pass --allow-remote (or [gateway] allow_remote = true) if that is what you want")
            }
            let fs = try GridFilesystem(nodeDirectory: dir, coding: try codingOptionsFromEnvironment())
            defer { fs.shutdown() }
            fs.pool.keepConnected()
            let logger = makeLogger("gateway")
            // One event loop for both: the client's RPC connections to the servers and the HTTP clients.
            let loop = fs.pool.loop
            let registry = MetricsRegistry()
            var hc = HTTPServerConfig()
            hc.metrics = registry
            let server = HTTPServer(loop: loop, handler: Gateway(fs: fs, metrics: registry, log: { logger.info("\($0)") }), config: hc)
            let bound = try server.listen(host: host, port: port)
            let url = "http://\(joinHostPort(host, bound))/"
            try FileSystem.writeFileAtomically(dir + "/node.url", Array((url + "\n").utf8), permissions: 0o644)
            var metricsConf = conf
            if let metrics { metricsConf["node", "metrics"] = metrics }
            let metricsServer = try startMetricsEndpoint(metricsConf, registry: registry, kind: "gateway", loop: loop, logger: logger)
            logger.info("gateway for \(dir) at \(url) (node.url written)")
            let sig = CurrentProcess.waitForTerminationSignal()
            logger.info("signal \(sig): shutting down")
            metricsServer?.stop()
            server.stop()
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the introducer connection and every known storage server, with round-trip times.",
        discussion: """
            The same servers table as the gateway's status page, for people without a \
            browser: each server the introducer lists, whether it can be reached now, the \
            time of one PING/PONG round trip (Tahoe's measure_peer_response_time), its \
            available space and version. --json prints one object.

            Exit status: 0 when every known server answered; 69 when none did (or none is \
            known); 1 when some did not.

            Examples:
              grid status
              grid status --json | jq '.servers[] | select(.connected == false)'
            """)

    @Option(help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print JSON.") var json = false

    struct Row: Codable {
        var nickname: String
        var nodeid: String
        var addresses: [String]
        var connected: Bool
        var rtt_ms: Double?
        var available_space: UInt64
        var version: String
        var error: String?
    }

    struct Report: Codable {
        var introducer_connected: Bool
        var introducer_problem: String?
        var encoding: String
        var servers: [Row]
    }

    func run() throws {
        try reportingErrors {
            let report = try withFilesystem(nodeDir) { fs -> Report in
                let e = fs.settings.encoding
                let known = await fs.pool.waitForServers(enough: e.total, minimum: 1, timeout: 8)
                let rows = Locked<[Row]>([])
                await withTaskGroup(of: Void.self) { g in
                    for s in known {
                        g.addTask {
                            let a = s.announcement
                            var row = Row(nickname: a.nickname, nodeid: s.nodeID, addresses: a.addresses, connected: false, rtt_ms: nil,
                                          available_space: a.availableSpace, version: "grid-protocol/\(a.protocolVersion)", error: nil)
                            do {
                                let c = try await fs.pool.client(for: s)
                                let v = try await c.getVersion()  // also warms the connection up
                                row.version = v.applicationVersion
                                row.available_space = v.availableSpace
                                row.rtt_ms = (try await c.rpc.measureRoundTrip()) * 1000
                                row.connected = true
                            } catch {
                                row.error = "\(error)"
                            }
                            let done = row
                            rows.mutate { $0.append(done) }
                        }
                    }
                }
                return Report(introducer_connected: fs.pool.introducerConnected, introducer_problem: fs.pool.introducerProblem,
                              encoding: "\(e.needed)-of-\(e.total), happy \(e.happy)",
                              servers: rows.value.sorted { ($0.nickname, $0.nodeid) < ($1.nickname, $1.nodeid) })
            }
            if json {
                try printJSON(report)
            } else {
                var out = "introducer: " + (report.introducer_connected ? "connected" : "not connected" + (report.introducer_problem.map { " (\($0))" } ?? "")) + "\n"
                out += "encoding: \(report.encoding)\n"
                let up = report.servers.filter(\.connected).count
                out += "storage servers: \(up) of \(report.servers.count) reachable\n\n"
                let nameWidth = max(8, report.servers.map(\.nickname.count).max() ?? 0)
                out += "NICKNAME".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  STATE        RTT       AVAILABLE   NODE ID\n"
                for r in report.servers {
                    let state = r.connected ? "connected  " : "unreachable"
                    let rtt = r.rtt_ms.map { String(format: "%7.2f ms", $0) } ?? "        -"
                    let space = String(format: "%9.1f GB", Double(r.available_space) / 1e9)
                    out += r.nickname.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  \(state)  \(rtt)  \(space)  \(r.nodeid)\n"
                    if let e = r.error { out += "    \(e)\n" }
                }
                FileHandleStdout.write(out)
            }
            let up = report.servers.filter(\.connected).count
            if up == 0 { throw ExitCode(69) }
            if up < report.servers.count { throw ExitCode(1) }
        }
    }
}
