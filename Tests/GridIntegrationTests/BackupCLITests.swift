import Foundation
import GridDatabase
import GridNode
import GridTestSupport
import GridSystem
import XCTest

/// `grid backup` and `grid restore` as a user runs them, against real daemons.
final class BackupCLITests: XCTestCase {
    var grid: TestGrid!
    var node = ""

    override func setUpWithError() throws {
        grid = try TestGrid(servers: 10)
        node = grid.root + "/backup-client"
        let (st, _, err) = try runGridCLI(["client", "create", node, "--introducer", grid.address.description])
        XCTAssertEqual(st, 0, err)
        let (st2, _, err2) = try runGridCLI(["create-alias", "home"], env: ["GRID_NODE_DIR": node])
        XCTAssertEqual(st2, 0, err2)
    }

    override func tearDown() { grid?.shutdown() }

    func backup(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let (st, out, err) = try runGridCLI(["backup", "--json"] + args, env: ["GRID_NODE_DIR": node])
        XCTAssertEqual(st, 0, err, file: file, line: line)
        return (try? JSONSerialization.jsonObject(with: Data(out)) as? [String: Any]) ?? [:]
    }

    func write(_ path: String, _ bytes: [UInt8]) throws {
        try FileSystem.makeDirectories(FileSystem.directoryName(path), permissions: 0o755)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    func testBackupRerunChangesAndRestore() throws {
        let src = grid.root + "/home"
        for i in 0..<30 { try write(src + "/d\(i % 3)/sub/f\(i).bin", pseudoRandom(200 + i * 700, seed: UInt64(i))) }
        try write(src + "/top.txt", Array("top\n".utf8))
        try FileSystem.setPermissions(src + "/top.txt", 0o640)
        try FileSystem.makeSymlink(src + "/link", target: "top.txt")
        try write(src + "/.git/HEAD", Array("ref\n".utf8))
        try FileSystem.setTimes(src + "/d1/sub/f1.bin", modified: (1_600_000_000, 123_456_000))

        var r = try backup(["--exclude-vcs", src, "home:backups"])
        XCTAssertEqual(r["files_uploaded"] as? Int, 31)
        XCTAssertEqual(r["symlinks"] as? Int, 1)
        // Unchanged: nothing uploaded.
        r = try backup(["--exclude-vcs", src, "home:backups"])
        XCTAssertEqual(r["files_uploaded"] as? Int, 0)
        XCTAssertEqual(r["files_reused"] as? Int, 31)
        XCTAssertEqual(r["bytes_uploaded"] as? Int, 0)
        XCTAssertEqual(r["directories_created"] as? Int, 0)
        // chmod and touch: new metadata, no upload; a changed file: exactly that one.
        try FileSystem.setPermissions(src + "/d0/sub/f0.bin", 0o600)
        try FileSystem.setTimes(src + "/d2/sub/f2.bin", modified: (1_700_000_000, 0))
        try write(src + "/d0/sub/f3.bin", pseudoRandom(999, seed: 77))
        r = try backup(["--exclude-vcs", src, "home:backups"])
        XCTAssertEqual(r["files_uploaded"] as? Int, 1)
        XCTAssertEqual(r["files_unchanged_by_hash"] as? Int, 2)
        let archives = try runGridCLI(["ls", "home:backups/Archives"], env: ["GRID_NODE_DIR": node])
        // Three snapshots; two identical ones made within the same second share one name.
        let names = String(decoding: archives.1, as: UTF8.self).split(separator: "\n")
        XCTAssertTrue((2...3).contains(names.count), "\(names)")

        // Restore the latest: same bytes, modes, mtimes (to Tahoe's float precision), symlink.
        let out = grid.root + "/restored"
        let (st, _, err) = try runGridCLI(["restore", "home:backups/Latest", out], env: ["GRID_NODE_DIR": node])
        XCTAssertEqual(st, 0, err)
        let diff = Process()
        diff.executableURL = URL(fileURLWithPath: "/usr/bin/diff")
        diff.arguments = ["-r", "--no-dereference", "-x", ".git", src, out]
        try diff.run()
        diff.waitUntilExit()
        XCTAssertEqual(diff.terminationStatus, 0, "diff -r finds the trees identical")
        XCTAssertEqual(try FileSystem.readSymlink(out + "/link"), "top.txt")
        XCTAssertEqual(try FileSystem.status(out + "/top.txt")?.permissions, 0o640)
        XCTAssertEqual(try FileSystem.status(out + "/d0/sub/f0.bin")?.permissions, 0o600)
        let m = try FileSystem.status(out + "/d1/sub/f1.bin")!.mtime
        XCTAssertEqual(m.seconds, 1_600_000_000)
        XCTAssertEqual(Double(m.nanoseconds), 123_456_000, accuracy: 1000)
        XCTAssertEqual(try FileSystem.status(out + "/d2/sub/f2.bin")!.mtime.seconds, 1_700_000_000)
        XCTAssertFalse(FileSystem.exists(out + "/.git"))

        // One backup at a time.
        let lock = try NodeLock(directory: node, name: "backup.lock")
        let (busy, _, busyErr) = try runGridCLI(["backup", src, "home:backups"], env: ["GRID_NODE_DIR": node])
        XCTAssertEqual(busy, 75, busyErr)
        withExtendedLifetime(lock) {}
    }

    /// kill -9 in the middle of a backup; the next run uploads only what was not yet recorded.
    func testBackupResumesAfterKill() throws {
        let src = grid.root + "/big"
        let total = 60
        for i in 0..<total { try write(src + "/d\(i % 4)/f\(i).bin", pseudoRandom(150_000 + i, seed: UInt64(1000 + i))) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: gridExecutable())
        p.arguments = ["backup", src, "home:big"]
        p.environment = ProcessInfo.processInfo.environment.merging(["GRID_NODE_DIR": node]) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let dbPath = node + "/private/backupdb.sqlite"
        var recorded = 0
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && p.isRunning {
            if FileSystem.exists(dbPath), let db = try? Database(path: dbPath, readOnly: true),
               let n = try? db.query("SELECT count(*) FROM local_files").first?.first?.int { recorded = Int(n) }
            if recorded >= 5 { break }
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let db = try Database(path: dbPath)
        let before = Int(try db.query("SELECT count(*) FROM local_files").first?.first?.int ?? 0)
        XCTAssertGreaterThanOrEqual(before, 5)
        XCTAssertLessThan(before, total, "killed before the end (else this test proves nothing)")
        let r = try backup([src, "home:big"])
        XCTAssertEqual(r["files_uploaded"] as? Int, total - before, "only what the killed run had not recorded")
        XCTAssertEqual(r["files_reused"] as? Int, before)
        // And the result is complete.
        let out = grid.root + "/big-restored"
        let (st, _, err) = try runGridCLI(["restore", "home:big/Latest", out], env: ["GRID_NODE_DIR": node])
        XCTAssertEqual(st, 0, err)
        for i in 0..<total {
            XCTAssertTrue(try Array(Data(contentsOf: URL(fileURLWithPath: out + "/d\(i % 4)/f\(i).bin"))) == pseudoRandom(150_000 + i, seed: UInt64(1000 + i)))
        }
    }
}

