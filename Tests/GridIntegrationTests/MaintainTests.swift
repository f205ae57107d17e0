import Foundation
import GridClient
import GridFormat
import GridSystem
import GridTestSupport
import XCTest

/// `grid maintain` as cron runs it, against real daemons on 127.0.0.1.
extension ClientCLITests {
    /// Runs `grid maintain --json ARGS`; returns the exit status and the JSON report.
    func maintain(_ node: String, _ args: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> (Int32, [String: Any], String) {
        let (st, out, err) = try run(["maintain", "--node-dir", node, "--json"] + args)
        let obj = (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: Any] ?? [:]
        if st != 3 { XCTAssertFalse(obj.isEmpty, "maintain printed no JSON: \(err)", file: file, line: line) }
        return (st, obj, err)
    }

    func problems(_ r: [String: Any]) -> [String] { (r["problems"] as? [[String: Any]] ?? []).map { "\($0["level"] ?? ""): \($0["what"] ?? "")" } }

    /// Stopped servers: within the grace period their shares still count (a warning, no
    /// repair); after it, the files are repaired onto the other servers and come back
    /// healthy; a file that loses too many servers is critical.
    func testMaintainWaitsOutTheGracePeriodThenRepairs() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let a = pseudoRandom(30_000, seed: 91), b = pseudoRandom(12_345, seed: 92)
        let (node, capA) = try uploadedFile(grid, "maint", a)
        var (st, out, err) = try run(["upload", "--node-dir", node, "-"], stdin: b)
        XCTAssertEqual(st, 0, err)
        let capB = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        // A literal file in the catalog needs nothing.
        (st, _, err) = try run(["upload", "--node-dir", node, "-"], stdin: Array("tiny".utf8))
        XCTAssertEqual(st, 0, err)

        var (mst, r, merr) = try maintain(node)
        XCTAssertEqual(mst, 0, "\(r) \(merr)")
        XCTAssertEqual(r["files"] as? Int, 3)
        XCTAssertEqual(r["healthy"] as? Int, 3)
        XCTAssertEqual(r["leases_renewed"] as? Int, 20, "10 shares of each of 2 files")
        XCTAssertEqual(r["verified"] as? Int, 2, "never-verified files are overdue")
        XCTAssertEqual(r["coverage"] as? Double, 1)

        // Stop the servers holding shares 0, 1 and 2 of file A.
        for s in grid.servers.prefix(3) { s.stop() }
        (mst, r, merr) = try maintain(node, ["--verify-period", "0"])
        XCTAssertEqual(mst, 1, "degraded, waiting on the grace period: \(r) \(merr)")
        XCTAssertEqual(r["repaired"] as? Int, 0, "no repair within the grace period")
        XCTAssertEqual(r["degraded"] as? Int, 2)
        XCTAssertEqual(r["waiting_on_grace"] as? Int, 2)
        XCTAssertEqual((r["servers_silent"] as? [String])?.count, 3, "\(r)")
        XCTAssertTrue(problems(r).allSatisfy { $0.contains("grace period") }, "\(problems(r))")

        // After the grace period the shares count as lost: both files fall to 7 (the
        // threshold for 3-of-10) and are repaired onto the 7 servers left.
        (mst, r, merr) = try maintain(node, ["--verify-period", "0", "--grace", "0"])
        XCTAssertEqual(mst, 1, "repaired is a warning: \(r) \(merr)")
        XCTAssertEqual(r["repaired"] as? Int, 2, "\(problems(r))")
        for cap in [capA, capB] {
            let (cst, cout, cerr) = try run(["check", "--node-dir", node, "--json", "--verify", cap])
            XCTAssertEqual(cst, 0, "healthy after repair: \(String(decoding: cout, as: UTF8.self)) \(cerr)")
        }
        (mst, r, merr) = try maintain(node, ["--verify-period", "0", "--grace", "0"])
        XCTAssertEqual(mst, 0, "\(r) \(merr)")
        try assertReadsBack(node, capA, a)
        try assertReadsBack(node, capB, b)

        // Six more servers gone: 1 left, holding at most 2 shares of each, fewer than k = 3: critical.
        for s in grid.servers[3..<9] { s.stop() }
        (mst, r, merr) = try maintain(node, ["--verify-period", "0", "--grace", "0"])
        XCTAssertEqual(mst, 2, "\(r) \(merr)")
        XCTAssertEqual(r["unrecoverable"] as? Int, 2)
        XCTAssertTrue(problems(r).contains { $0.hasPrefix("critical: unrecoverable") }, "\(problems(r))")

        // The history is in SQLite; --report summarises it.
        let (rst, rout, rerr) = try run(["maintain", "--node-dir", node, "--report"])
        XCTAssertEqual(rst, 2, "the last run's status: \(rerr)")
        let text = String(decoding: rout, as: UTF8.self)
        XCTAssertTrue(text.contains("run 5 "), text)
        XCTAssertTrue(text.contains("2 unrecoverable"), text)
    }

    /// A share damaged on a server's disk: the run that verifies the file names it, the
    /// server gets an advisory, the share is replaced and the file verifies again.
    func testMaintainVerifiesAndReplacesACorruptShare() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let data = pseudoRandom(40_000, seed: 93)
        let (node, cap) = try uploadedFile(grid, "maint", data)
        guard case let .chk(chk) = try Capability(parsing: cap) else { return XCTFail("not CHK") }
        let si = Base32.encode(chk.storageIndex)
        let holder = try XCTUnwrap(grid.servers.first { FileSystem.exists($0.directory + "/storage/shares/\(si.prefix(2))/\(si)/4") })
        let f = try FileDescriptor(path: holder.directory + "/storage/shares/\(si.prefix(2))/\(si)/4", .readWrite)
        let at: UInt64 = 12 + 0x24 + 100
        try f.write(at: at, [try f.read(at: at, count: 1)[0] ^ 0x01])

        var (st, r, err) = try maintain(node)
        XCTAssertEqual(st, 1, "corruption found and repaired: \(r) \(err)")
        XCTAssertEqual(r["corrupt_shares"] as? Int, 1)
        XCTAssertEqual(r["repaired"] as? Int, 1, "\(problems(r))")
        XCTAssertEqual(try FileSystem.list(holder.directory + "/storage/corruption-advisories").count, 1, "reported to its server")
        let (cst, cout, cerr) = try run(["check", "--node-dir", node, "--json", "--verify", cap])
        let c = (try? JSONSerialization.jsonObject(with: Data(cout))) as? [String: Any] ?? [:]
        XCTAssertEqual(cst, 0, "\(c) \(cerr)")
        XCTAssertEqual((c["shares"] as? [String: [String]])?.count, 10)
        // Verified this run: the next run within the period has nothing overdue.
        (st, r, err) = try maintain(node, ["--interval", "1h"])
        XCTAssertEqual(st, 0, "\(r) \(err)")
        try assertReadsBack(node, cap, data)
    }

    /// Mutable files in the catalog: `grid maintain` renews their leases, verifies them
    /// when due, and repairs one whose version has fallen to the threshold (it has the write
    /// capability); a read-only capability in a manifest is reported, not repaired.
    func testMaintainKeepsMutableFilesAlive() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let (node, _) = try uploadedFile(grid, "mmaint", pseudoRandom(100, seed: 1))
        let data = pseudoRandom(200_000, seed: 95)
        var (st, out, err) = try run(["upload", "--node-dir", node, "--mutable", "-"], stdin: data)
        XCTAssertEqual(st, 0, err)
        let cap = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        (st, out, _) = try run(["caps", "--json", cap])
        let caps = (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: String] ?? [:]
        let (ro, si) = (caps["read"]!, caps["storage_index"]!)
        (st, out, err) = try run(["list", "--node-dir", node])
        XCTAssertTrue(String(decoding: out, as: UTF8.self).contains(cap), "grid upload --mutable records the file in the catalog")

        var (mst, r, merr) = try maintain(node)
        XCTAssertEqual(mst, 0, "\(problems(r)) \(merr)")
        XCTAssertGreaterThanOrEqual(r["leases_renewed"] as? Int ?? 0, 10, "\(r)")
        XCTAssertGreaterThanOrEqual(r["verified"] as? Int ?? 0, 2, "both files verified on their first run: \(r)")

        // Four of ten shares lost: 6 left, at the repair threshold (7) for 3-of-10.
        for n in 0..<4 {
            let path = try XCTUnwrap(grid.servers.map { $0.directory + "/storage/shares/\(si.prefix(2))/\(si)/\(n)" }.first { FileSystem.exists($0) })
            try FileSystem.remove(path)
        }
        let manifest = grid.root + "/ro-manifest"
        try FileSystem.writeFileAtomically(manifest, Array((ro + "\n").utf8))
        (mst, r, merr) = try maintain(node, ["--no-catalog", "--manifest", manifest])
        XCTAssertEqual(mst, 2, "read-only: below the threshold and not repairable: \(problems(r)) \(merr)")
        XCTAssertTrue(problems(r).contains { $0.contains("needs its write capability") }, "\(problems(r))")
        (mst, r, merr) = try maintain(node)
        XCTAssertEqual(r["repaired"] as? Int, 1, "\(problems(r)) \(merr)")
        let (cst, cout, cerr) = try run(["check", "--node-dir", node, "--json", "--verify", ro])
        let c = (try? JSONSerialization.jsonObject(with: Data(cout))) as? [String: Any] ?? [:]
        XCTAssertEqual(cst, 0, "\(c) \(cerr)")
        try assertReadsBack(node, ro, data)
    }

    /// Servers with a short lease duration and expiry on: files whose leases are renewed
    /// by `grid maintain` survive past the duration; the others are deleted.
    func testLeasesExpireUnlessMaintained() throws {
        let grid = try TestGrid(servers: 5, storage: ["lease_duration": "8s", "expire": "true", "expire_interval": "1s"])
        defer { grid.shutdown() }
        let kept = pseudoRandom(20_000, seed: 94), dropped = pseudoRandom(20_000, seed: 95)
        let small = ["--needed", "2", "--happy", "3", "--total", "5"]
        let (node, keptCap) = try uploadedFile(grid, "kept", kept, encoding: small)
        XCTAssertTrue(keptCap.hasPrefix("URI:CHK:"), keptCap)
        let (other, droppedCap) = try uploadedFile(grid, "dropped", dropped, encoding: small)
        XCTAssertTrue(droppedCap.hasPrefix("URI:CHK:"), droppedCap)
        // A third client keeps its file by uploading it again (that renews its leases).
        let again = pseudoRandom(20_000, seed: 98)
        let (reNode, reCap) = try uploadedFile(grid, "reupload", again, encoding: small)
        // Renew every 2 s for 14 s: well past the 8 s lease.
        let until = monotonicNow() + 14
        while monotonicNow() < until {
            let (st, r, err) = try maintain(node, ["--verify-period", "0", "--interval", "2s"])
            XCTAssertEqual(st, 0, "\(r) \(err)")
            let (ust, uout, uerr) = try run(["upload", "--node-dir", reNode, "-"], stdin: again)
            XCTAssertEqual(ust, 0, uerr)
            XCTAssertEqual(String(decoding: uout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), reCap)
            Thread.sleep(forTimeInterval: 2)
        }
        try assertReadsBack(node, keptCap, kept)
        try assertReadsBack(reNode, reCap, again)
        let (st, _, err) = try run(["download", "--node-dir", other, droppedCap])
        XCTAssertNotEqual(st, 0, "the unmaintained file expired")
        XCTAssertTrue(err.contains("share"), err)
        // A lease shorter than the interval between runs is a warning.
        let (wst, r, werr) = try maintain(node, ["--verify-period", "0", "--interval", "1d"])
        XCTAssertEqual(wst, 1, "\(r) \(werr)")
        XCTAssertTrue(problems(r).contains { $0.contains("lease expires") }, "\(problems(r))")
    }

    /// A budget stops a run part-way; the next run starts with the files left over. Two
    /// runs at once: the second exits 3, "already running".
    func testMaintainBudgetResumesAndRunsNeverOverlap() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let (node, _) = try uploadedFile(grid, "maint", pseudoRandom(200_000, seed: 96))
        for i in 0..<4 {
            let (st, _, err) = try run(["upload", "--node-dir", node, "-"], stdin: pseudoRandom(5_000 + i, seed: 97 + UInt64(i)))
            XCTAssertEqual(st, 0, err)
        }
        var (st, r, err) = try maintain(node, ["--verify-period", "0", "--max-files", "3"])
        XCTAssertEqual(st, 0, "\(r) \(err)")
        XCTAssertEqual(r["status"] as? String, "budget")
        XCTAssertEqual(r["checked"] as? Int, 3)
        let log = try MaintenanceLog(path: node + "/maintain.sqlite")
        var states = try log.allFiles()
        XCTAssertEqual(states.filter { $0.lastChecked != nil }.count, 3)
        // The next run takes the 2 never checked first.
        let unchecked = Set(states.filter { $0.lastChecked == nil }.map(\.capability))
        (st, r, err) = try maintain(node, ["--verify-period", "0", "--max-files", "2"])
        XCTAssertEqual(st, 0, "\(r) \(err)")
        states = try log.allFiles()
        XCTAssertTrue(states.filter { unchecked.contains($0.capability) }.allSatisfy { $0.lastChecked != nil }, "resumed where the last run stopped")

        // A slow run (verification paced to 100 kB/s: the 200 kB file takes seconds)...
        let slow = Process()
        slow.executableURL = URL(fileURLWithPath: gridExecutable())
        slow.arguments = ["maintain", "--node-dir", node, "--rate-limit", "100k", "-q"]
        slow.standardOutput = FileHandle.nullDevice
        slow.standardError = FileHandle.nullDevice
        try slow.run()
        // ...holds the lock once its pid is in the lock file.
        let deadline = monotonicNow() + 20
        func holder() -> String {
            String(decoding: ((try? FileSystem.readFile(node + "/maintain.lock")) ?? nil) ?? [], as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        while monotonicNow() < deadline && holder() != "\(slow.processIdentifier)" { Thread.sleep(forTimeInterval: 0.05) }
        (st, r, err) = try maintain(node)
        XCTAssertEqual(st, 3, "a second run at once: \(err)")
        XCTAssertTrue(err.contains("already running"), err)
        slow.waitUntilExit()
        XCTAssertEqual(slow.terminationStatus, 0)
        // The metrics file for node_exporter.
        let prom = grid.root + "/grid.prom"
        (st, r, err) = try maintain(node, ["--metrics-file", prom])
        XCTAssertEqual(st, 0, "\(r) \(err)")
        let text = String(decoding: try XCTUnwrap(FileSystem.readFile(prom)), as: UTF8.self)
        XCTAssertTrue(text.contains("grid_maintain_files{verdict=\"healthy\"} 5"), text)
        XCTAssertTrue(text.contains("grid_maintain_exit_code 0"), text)

        // A byte budget: with every file overdue (a 1 s period), the first verification
        // spends it and the run stops there.
        Thread.sleep(forTimeInterval: 1.1)
        (st, r, err) = try maintain(node, ["--max-bytes", "1", "--verify-period", "1s"])
        XCTAssertEqual(st, 0, "\(r) \(err)")
        XCTAssertEqual(r["verified"] as? Int, 1)
        XCTAssertEqual(r["status"] as? String, "budget")
    }
}
