import Foundation
import GridSystem
import GridTestSupport
import GridWire
import XCTest

/// tools/delayproxy.py, the userspace stand-in for netem that the latency benchmarks put
/// in front of every storage server: servers announce the proxy's address (`location`),
/// clients reach them only through it, and it adds the round-trip time and limits the
/// bandwidth it was told to.
final class DelayProxyTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testGridThroughDelayProxies() throws {
        let servers = 4
        let proxyPorts = try (0..<servers).map { _ in try pickFreePort(host: "127.0.0.1") }
        let grid = try TestGrid(servers: servers, announce: { i, _ in "127.0.0.1:\(proxyPorts[i])" })
        defer { grid.shutdown() }
        let rttMs = 40.0, upMbit = 16.0
        let stats = grid.root + "/proxy-stats.json"
        let mappings = (0..<servers).map { "127.0.0.1:\(proxyPorts[$0])=127.0.0.1:\(grid.servers[$0].port)" }
        let proxy = try startProxy(["--rtt-ms", "\(rttMs)", "--up-mbit", "\(upMbit)", "--stats", stats] + mappings)
        defer { if proxy.isRunning { proxy.terminate(); proxy.waitUntilExit() } }

        let node = grid.root + "/proxied-client"
        var (st, out, err) = try runGridCLI(["client", "create", node, "--introducer", grid.address.description,
                                            "--needed", "2", "--happy", "3", "--total", "4"])
        XCTAssertEqual(st, 0, err)

        // Every server answers through its proxy, a round trip no shorter than the one added.
        (st, out, err) = try runGridCLI(["status", "--json", "--node-dir", node])
        XCTAssertEqual(st, 0, err)
        let status = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any])
        let rows = try XCTUnwrap(status["servers"] as? [[String: Any]])
        XCTAssertEqual(rows.count, servers)
        for row in rows {
            XCTAssertEqual(row["connected"] as? Bool, true, "\(row)")
            XCTAssertGreaterThanOrEqual(row["rtt_ms"] as? Double ?? 0, rttMs, "\(row)")
        }

        // An upload pays the shared uplink: 1 MiB at 2-of-4 is 2 MiB of shares, which take at
        // least 2 MiB × 8 / 16 Mbit/s ≈ 1.05 s on the proxy's link, whatever the machine's speed.
        let data = pseudoRandom(1 << 20, seed: 16)
        let file = grid.root + "/in.bin"
        try Data(data).write(to: URL(fileURLWithPath: file))
        let t0 = monotonicNow()
        (st, out, err) = try runGridCLI(["upload", "--node-dir", node, file])
        let upSeconds = monotonicNow() - t0
        XCTAssertEqual(st, 0, err)
        let cap = String(decoding: out, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertGreaterThanOrEqual(upSeconds, Double(2 << 20) * 8 / (upMbit * 1e6) * 0.95)
        (st, out, err) = try runGridCLI(["download", "--node-dir", node, cap])
        XCTAssertEqual(st, 0, err)
        XCTAssertTrue(out == data, "the file read back through the proxies differs")

        // The proxy carried every share: each mapping saw at least its share's bytes go up.
        proxy.terminate()
        proxy.waitUntilExit()
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: stats))) as? [String: Any])
        let carried = try XCTUnwrap(report["mappings"] as? [String: [String: Int]])
        XCTAssertEqual(carried.count, servers)
        for (name, c) in carried {
            XCTAssertGreaterThan(c["up_bytes"] ?? 0, (1 << 20) / 2, "\(name): \(c)")
            XCTAssertGreaterThan(c["down_bytes"] ?? 0, 0, "\(name): \(c)")
        }
    }

    /// Over a slow shared uplink every server's writes wait their turn in the client's own
    /// queue for longer than the stall timeout (2 s); that is not a stall. (Each server
    /// was dropped as stalled, and the upload failed, until the patience took the drain
    /// time of the bytes ahead into account.)
    func testSlowUplinkIsNotTakenForStalledServers() throws {
        let servers = 5
        let proxyPorts = try (0..<servers).map { _ in try pickFreePort(host: "127.0.0.1") }
        let grid = try TestGrid(servers: servers, announce: { i, _ in "127.0.0.1:\(proxyPorts[i])" })
        defer { grid.shutdown() }
        let upMbit = 8.0
        let mappings = (0..<servers).map { "127.0.0.1:\(proxyPorts[$0])=127.0.0.1:\(grid.servers[$0].port)" }
        let proxy = try startProxy(["--rtt-ms", "20", "--up-mbit", "\(upMbit)"] + mappings)
        defer { if proxy.isRunning { proxy.terminate(); proxy.waitUntilExit() } }
        let node = grid.root + "/slow-client"
        var (st, out, err) = try runGridCLI(["client", "create", node, "--introducer", grid.address.description,
                                            "--needed", "2", "--happy", "5", "--total", "5"])
        XCTAssertEqual(st, 0, err)
        // 2 MiB at 2-of-5: 5 MiB of shares, about 5.2 s on an 8 Mbit/s link.
        let data = pseudoRandom(2 << 20, seed: 17)
        let t0 = monotonicNow()
        (st, out, err) = try runGridCLI(["upload", "--node-dir", node, "--json", "-"], stdin: data)
        let seconds = monotonicNow() - t0
        XCTAssertEqual(st, 0, err)
        XCTAssertGreaterThanOrEqual(seconds, Double(5 << 20) * 8 / (upMbit * 1e6) * 0.95, "the link was the bottleneck")
        let r = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any])
        XCTAssertEqual(r["happiness"] as? Int, 5, "no server was dropped: \(r)")
        (st, out, err) = try runGridCLI(["download", "--node-dir", node, try XCTUnwrap(r["cap"] as? String)])
        XCTAssertEqual(st, 0, err)
        XCTAssertTrue(out == data, "the file read back differs")
    }

    func testProxyRefusesBadArguments() throws {
        for bad in [["127.0.0.1:1"], ["--rtt-ms", "-1", "127.0.0.1:1=127.0.0.1:2"], ["127.0.0.1:0=127.0.0.1:2"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", Self.repo.appendingPathComponent("tools/delayproxy.py").path] + bad
            p.standardOutput = FileHandle.nullDevice
            let err = Pipe()
            p.standardError = err
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 2, "\(bad): \(text)")
            XCTAssertTrue(text.contains("error:"), text)
        }
    }

    /// Starts the proxy and waits for its "ready" line.
    func startProxy(_ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", Self.repo.appendingPathComponent("tools/delayproxy.py").path] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.standardError
        try p.run()
        let line = out.fileHandleForReading.availableData
        guard String(decoding: line, as: UTF8.self).hasPrefix("ready") else {
            p.terminate()
            throw GridError(.unavailable, "delayproxy did not start: \(String(decoding: line, as: UTF8.self))")
        }
        return p
    }
}
