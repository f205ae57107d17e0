import Foundation
import GridCrypto
import GridFormat
import GridWire
import GridTestSupport
import GridSystem
import XCTest

/// `grid client create`, `grid upload` and `grid download` as a user runs them.
final class ClientCLITests: XCTestCase {
    func run(_ args: [String], stdin: [UInt8]? = nil, env: [String: String] = [:]) throws -> (Int32, [UInt8], String) {
        try runGridCLI(args, stdin: stdin, env: env)
    }

    func testUploadDownloadFromTheCommandLine() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let node = grid.root + "/cli-client"
        var (st, out, err) = try run(["client", "create", node, "--introducer", grid.address.description, "--segment-size", "4096"])
        XCTAssertEqual(st, 0, err)
        for f in ["grid.conf", "private/convergence", "private/lease.secret", "private/node.key"] {
            let mode = (try FileManager.default.attributesOfItem(atPath: node + "/" + f)[.posixPermissions] as? Int) ?? 0
            XCTAssertEqual(mode & 0o077, 0, "\(f) is private")
        }

        let data = pseudoRandom(20_000, seed: 8)
        let file = grid.root + "/in.bin"
        try Data(data).write(to: URL(fileURLWithPath: file))
        (st, out, err) = try run(["upload", "--node-dir", node, file])
        XCTAssertEqual(st, 0, err)
        let cap = String(decoding: out, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(cap.hasPrefix("URI:CHK:"), cap)
        XCTAssertEqual(err, "", "silent when stderr is not a terminal")

        // The same capability as `grid debug encode` with this node's convergence secret and segment size.
        let conv = try String(contentsOfFile: node + "/private/convergence", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let secretHex = (Base32.decode(conv) ?? []).map { String(format: "%02x", $0) }.joined()
        let (est, eout, _) = try run(["debug", "encode", "--convergence-secret", secretHex, "--segment-size", "4096", file, grid.root + "/enc"])
        XCTAssertEqual(est, 0)
        XCTAssertEqual(String(decoding: eout, as: UTF8.self).split(separator: "\n").last.map(String.init), cap)

        // stdin upload, GRID_NODE_DIR, --json.
        (st, out, err) = try run(["upload", "--json", "-"], stdin: data, env: ["GRID_NODE_DIR": node])
        XCTAssertEqual(st, 0, err)
        let json = try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any]
        XCTAssertEqual(json?["cap"] as? String, cap)
        XCTAssertEqual(json?["size"] as? Int, data.count)
        XCTAssertEqual(json?["shares_already_present"] as? Int, 10)
        XCTAssertEqual((json?["shares"] as? [String: Any])?.count, 10)
        // This node stored it before (its catalog says so): asked first, nothing sent, not
        // in one flight with the census.
        XCTAssertEqual(json?["bytes_sent"] as? Int, 0)
        XCTAssertEqual(json?["one_flight"] as? Bool, false)

        // Download to stdout, to a file, and a range.
        try assertReadsBack(node, cap, data)
        // A well-formed capability no server knows: say so, and suggest checking it.
        let k = cap.index(cap.startIndex, offsetBy: "URI:CHK:".count)
        let unknown = cap.replacingCharacters(in: k...k, with: cap[k] == "a" ? "b" : "a")
        (st, _, err) = try run(["download", "--node-dir", node, unknown])
        XCTAssertEqual(st, 66, err)
        XCTAssertTrue(err.contains("None of the 10 servers has any share") && err.contains("Check the capability"), err)
        // The target is checked before anything is fetched; -o - is stdout.
        (st, _, err) = try run(["download", "--node-dir", node, cap, "-o", grid.root])
        XCTAssertEqual(st, 64, err)
        XCTAssertTrue(err.contains("is a directory"), err)
        (st, out, err) = try run(["download", "--node-dir", node, cap, "-o", "-"])
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(out, data, "-o - writes to stdout")
        XCTAssertFalse(FileManager.default.fileExists(atPath: FileManager.default.currentDirectoryPath + "/-"))

        // Anything that is not a regular file is read to its end (it used to upload an
        // empty LIT file and say it worked): /dev/stdin, a FIFO, a process substitution.
        (st, out, err) = try run(["upload", "--node-dir", node, "/dev/stdin"], stdin: data)
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), cap, "/dev/stdin")
        let fifo = grid.root + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let feeder = Thread {
            if let h = FileHandle(forWritingAtPath: fifo) { h.write(Data(data)); try? h.close() }
        }
        feeder.start()
        (st, out, err) = try run(["upload", "--node-dir", node, fifo])
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), cap, "a FIFO")
        let sub = Process()
        sub.executableURL = URL(fileURLWithPath: "/bin/bash")
        sub.arguments = ["-c", "'\(gridExecutable())' upload --node-dir '\(node)' <(cat '\(file)')"]
        let subOut = Pipe()
        sub.standardOutput = subOut
        try sub.run()
        let subData = subOut.fileHandleForReading.readDataToEndOfFile()
        sub.waitUntilExit()
        XCTAssertEqual(sub.terminationStatus, 0)
        XCTAssertEqual(String(decoding: subData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), cap, "<(cat file)")
        (st, _, err) = try run(["upload", "--node-dir", node, grid.root])
        XCTAssertEqual(st, 64, "a directory: \(err)")

        // GRID_SIMD reaches upload and download: the portable kernel gives the same bytes;
        // a path that does not exist is a usage error before anything is sent.
        (st, out, err) = try run(["download", "--node-dir", node, cap], env: ["GRID_SIMD": "portable"])
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(out, data)
        (st, out, err) = try run(["upload", "--node-dir", node, "-"], stdin: data, env: ["GRID_SIMD": "portable"])
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), cap)
        (st, _, err) = try run(["download", "--node-dir", node, cap], env: ["GRID_SIMD": "quantum"])
        XCTAssertEqual(st, 64, err)
        XCTAssertTrue(err.contains("GRID_SIMD=quantum"), err)
        let dest = grid.root + "/out.bin"
        (st, out, err) = try run(["download", "--node-dir", node, cap, "-o", dest, "--json"])
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: dest))), data)
        let dj = try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any]
        XCTAssertEqual(dj?["bytes"] as? Int, data.count)
        (st, out, err) = try run(["download", "--node-dir", node, cap, "--offset", "4095", "--length", "4098"])
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(out, Array(data[4095..<(4095 + 4098)]))

        // A LIT capability needs no servers.
        (st, out, err) = try run(["upload", "--node-dir", node, "-"], stdin: Array("tiny".utf8))
        let lit = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(lit.hasPrefix("URI:LIT:"), lit)
        (st, out, err) = try run(["download", "--node-dir", node, lit])
        XCTAssertEqual(out, Array("tiny".utf8))

        // Errors: one line, the exit status of their class, and no partial output file.
        let bad = grid.root + "/bad.bin"
        (st, out, err) = try run(["download", "--node-dir", node, "URI:CHK:xyz", "-o", bad])
        XCTAssertEqual(st, 64, "a malformed capability is a usage error")
        XCTAssertTrue(err.hasPrefix("grid: error:"), err)
        XCTAssertEqual(err.split(separator: "\n").count, 1, err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: bad))
        (st, _, err) = try run(["upload", "--node-dir", node, grid.root + "/missing"])
        XCTAssertEqual(st, 66, "no such file")
        XCTAssertTrue(err.contains("missing"), err)
        (st, _, err) = try run(["upload", "--node-dir", grid.root + "/nonode", file])
        XCTAssertEqual(st, 66, "no such node")
        XCTAssertTrue(err.contains("client create") || err.contains("not a grid node"), err)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: grid.root).filter { $0.contains("grid-partial") }
        XCTAssertEqual(leftovers, [])
    }
}

final class UnsafeBox<T>: @unchecked Sendable {
    var value: T
    init(_ v: T) { value = v }
}

extension ClientCLITests {
    /// `grid local-grid` leaves real daemons running between commands; share files taken
    /// straight from the servers' storage directories can be dumped (container, leases)
    /// and decoded offline.
    func testLocalGridCommandAndServerShareFiles() throws {
        let root = try FileSystem.makeTemporaryDirectory(prefix: "grid-lg")
        defer { FileSystem.removeTree(root) }
        let dir = root + "/g"
        var (st, out, err) = try run(["local-grid", "start", "--servers", "3", "--dir", dir])
        defer { _ = try? run(["local-grid", "stop", "--dir", dir]) }
        XCTAssertEqual(st, 0, err)
        (st, out, err) = try run(["local-grid", "status", "--dir", dir])
        let status = String(decoding: out, as: UTF8.self)
        XCTAssertEqual(status.components(separatedBy: "running (pid").count - 1, 4, status)
        (st, _, err) = try run(["local-grid", "start", "--dir", dir])
        XCTAssertEqual(st, 75, "already running: \(err)")

        let data = pseudoRandom(20_000, seed: 11)
        (st, out, err) = try run(["upload", "-"], stdin: data, env: ["GRID_NODE_DIR": dir + "/client"])
        XCTAssertEqual(st, 0, err)
        let cap = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)

        // Every share file on the servers, copied by share number.
        let collected = root + "/shares"
        try FileSystem.makeDirectory(collected)
        var first: String?
        for i in 0..<3 {
            let shares = dir + "/storage\(i)/storage/shares"
            for prefix in try FileSystem.list(shares) where prefix != "incoming" {
                for si in try FileSystem.list(shares + "/" + prefix) {
                    for n in try FileSystem.list(shares + "/" + prefix + "/" + si) {
                        let path = shares + "/" + prefix + "/" + si + "/" + n
                        first = first ?? path
                        try FileManager.default.copyItem(atPath: path, toPath: collected + "/" + n)
                    }
                }
            }
        }
        XCTAssertEqual(try FileSystem.list(collected).count, 10)
        (st, out, err) = try run(["debug", "dump-share", try XCTUnwrap(first)])
        XCTAssertEqual(st, 0, err)
        let dump = String(decoding: out, as: UTF8.self)
        for want in ["container: immutable, version 2", "leases: 1", "needed_shares: 3", "total_shares: 10", "size: 20000"] {
            XCTAssertTrue(dump.contains(want), "dump-share lacks '\(want)':\n\(dump)")
        }
        (st, out, err) = try run(["debug", "decode", cap, collected])
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(out, data, "decoded from the servers' share files")

        (st, out, err) = try run(["local-grid", "stop", "--dir", dir])
        XCTAssertEqual(st, 0, err)
        XCTAssertTrue(String(decoding: out, as: UTF8.self).contains("stopped 4 daemons"))
        (st, out, _) = try run(["local-grid", "status", "--dir", dir])
        XCTAssertFalse(String(decoding: out, as: UTF8.self).contains("running"))
    }
}

extension ClientCLITests {
    /// When no server list can be had, the client says why, at once for a refusal that
    /// waiting cannot mend: a wrong secret, the wrong introducer key, nothing listening.
    func testNoIntroducerSaysWhy() throws {
        let grid = try TestGrid(servers: 1)
        defer { grid.shutdown() }
        let good = grid.address.description
        let secret = String(good[good.index(after: good.lastIndex(of: "/")!)...])
        let wrongSecret = good.replacingOccurrences(of: secret, with: Base32.encode([UInt8](repeating: 0x42, count: 20)))
        let key = String(good.dropFirst("grid://".count).prefix { $0 != "@" })
        let wrongKey = good.replacingOccurrences(of: key, with: NodeIdentity.nodeID(for: Ed25519PrivateKey().publicKey))
        let port = try pickFreePort(host: "127.0.0.1")
        let nobody = good.replacingOccurrences(of: ":\(grid.address.port)/", with: ":\(port)/")
        let cases: [(String, Int32, String)] = [
            (wrongSecret, 77, "refused this node's secret"),
            (wrongKey, 77, "is not the introducer named in grid.conf"),
            (nobody, 69, "cannot reach the introducer at 127.0.0.1:\(port)"),
        ]
        for (i, (address, status, fragment)) in cases.enumerated() {
            let node = grid.root + "/why\(i)"
            var (st, _, err) = try run(["client", "create", node, "--introducer", address])
            XCTAssertEqual(st, 0, err)
            let t0 = monotonicNow()
            (st, _, err) = try run(["upload", "--node-dir", node, "-"], stdin: pseudoRandom(1000, seed: 1))
            XCTAssertEqual(st, status, err)
            XCTAssertTrue(err.contains(fragment), err)
            XCTAssertLessThan(monotonicNow() - t0, 9, "said so without waiting out the 10 s list timeout: \(err)")
        }
        // The introducer says whom it turned away, and why (never the secret itself).
        let log = grid.introducer.log(tail: 200)
        XCTAssertTrue(log.contains("refused a connection from 127.0.0.1") && log.contains("wrong secret"), log)
        XCTAssertFalse(log.contains(Base32.encode([UInt8](repeating: 0x42, count: 20))), "no secret in the log")
    }
}

extension ClientCLITests {
    /// The client keeps the last confirmed server list (signed) in its node directory and
    /// starts from it: with the introducer down, uploads and downloads still work (they
    /// failed with "Only 0 storage servers are known" before).
    func testClientWorksFromItsServerCacheWhileTheIntroducerIsDown() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let node = grid.root + "/cached-client"
        var (st, out, err) = try run(["client", "create", node, "--introducer", grid.address.description])
        XCTAssertEqual(st, 0, err)
        (st, _, err) = try run(["upload", "--node-dir", node, "-"], stdin: pseudoRandom(5000, seed: 1))
        XCTAssertEqual(st, 0, err)
        XCTAssertTrue(FileSystem.exists(node + "/servers.cache"), "the list was kept")
        XCTAssertEqual(grid.introducer.stop(ProcessSignal.terminate), 0)
        let data = pseudoRandom(300_000, seed: 2)
        (st, out, err) = try run(["upload", "--node-dir", node, "-"], stdin: data)
        XCTAssertEqual(st, 0, "upload with the introducer down: \(err)")
        let cap = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        try assertReadsBack(node, cap, data)
    }
}

extension ClientCLITests {
    /// Several introducers in a client's grid.conf: all are asked and their lists merged,
    /// so one that is down (listed first here) does not stop the client.
    func testSeveralIntroducersOneDown() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let good = grid.address.description
        let port = try pickFreePort(host: "127.0.0.1")
        let dead = good.replacingOccurrences(of: ":\(grid.address.port)/", with: ":\(port)/")
        let node = grid.root + "/two-introducers"
        var (st, out, err) = try run(["client", "create", node, "--introducer", good])
        XCTAssertEqual(st, 0, err)
        let conf = node + "/grid.conf"
        let text = try String(contentsOfFile: conf, encoding: .utf8)
        try text.replacingOccurrences(of: "address = " + good, with: "address = \(dead), \(good)")
            .write(toFile: conf, atomically: true, encoding: .utf8)
        let data = pseudoRandom(100_000, seed: 5)
        (st, out, err) = try run(["upload", "--node-dir", node, "-"], stdin: data)
        XCTAssertEqual(st, 0, err)
        let cap = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        try assertReadsBack(node, cap, data)
    }
}

extension ClientCLITests {
    /// `grid download CAP` through `node` gives `data` back.
    func assertReadsBack(_ node: String, _ cap: String, _ data: [UInt8], line: UInt = #line) throws {
        let (st, out, err) = try run(["download", "--node-dir", node, cap])
        XCTAssertEqual(st, 0, err, line: line)
        XCTAssertTrue(out == data, "the bytes read back differ", line: line)
    }

    /// A new client node NAME on `grid` (4 KiB segments) that has uploaded `data`.
    func uploadedFile(_ grid: TestGrid, _ name: String, _ data: [UInt8], encoding: [String] = []) throws -> (node: String, cap: String) {
        let node = grid.root + "/" + name
        var (st, out, err) = try run(["client", "create", node, "--introducer", grid.address.description, "--segment-size", "4096"] + encoding)
        XCTAssertEqual(st, 0, err)
        (st, out, err) = try run(["upload", "--node-dir", node, "-"], stdin: data)
        XCTAssertEqual(st, 0, err)
        return (node, String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// `grid check`: a census with a verdict and the Nagios exit codes; `--verify` (from a
    /// verify capability alone) names a share damaged on a server's disk and reports it;
    /// `--add-lease` adds this client's lease to every share.
    func testCheckVerifyAndAddLease() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let (node, cap) = try uploadedFile(grid, "checker", pseudoRandom(20_000, seed: 9))
        var (st, out, err): (Int32, [UInt8], String)
        guard case let .chk(chk) = try Capability(parsing: cap) else { return XCTFail(cap) }
        let verifyCap = chk.verifier.string
        func check(_ extra: [String], _ c: String = cap) throws -> (Int32, [String: Any]) {
            let (st, out, err) = try run(["check", "--node-dir", node, "--json"] + extra + [c])
            let obj = (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: Any] ?? [:]
            XCTAssertFalse(obj.isEmpty, "check printed no JSON: \(err)")
            return (st, obj)
        }
        var (cst, r) = try check([])
        XCTAssertEqual(cst, 0)
        XCTAssertEqual(r["verdict"] as? String, "healthy")
        XCTAssertEqual(r["shares_found"] as? Int, 10)
        (cst, r) = try check(["--verify"], verifyCap)
        XCTAssertEqual(cst, 0, "\(r)")
        XCTAssertEqual(r["ciphertext_verified"] as? Bool, true)

        // Damage share 0 where a server keeps it: a flipped byte in its first block.
        let si = Base32.encode(chk.storageIndex)
        let holder = try XCTUnwrap(grid.servers.first { FileSystem.exists($0.directory + "/storage/shares/\(si.prefix(2))/\(si)/0") })
        let path = holder.directory + "/storage/shares/\(si.prefix(2))/\(si)/0"
        let f = try FileDescriptor(path: path, .readWrite)
        let at: UInt64 = 12 + 0x24 + 10
        let byte = try f.read(at: at, count: 1)[0]
        try f.write(at: at, [byte ^ 0xff])
        (cst, r) = try check(["--verify"], verifyCap)
        XCTAssertEqual(cst, 1, "one share bad: degraded, \(r)")
        XCTAssertEqual(r["verdict"] as? String, "degraded")
        let corrupt = r["corrupt"] as? [[String: Any]] ?? []
        XCTAssertEqual(corrupt.map { $0["share"] as? Int }, [0], "\(corrupt)")
        XCTAssertTrue((corrupt.first?["reason"] as? String ?? "").contains("block 0"), "\(corrupt)")
        XCTAssertEqual(try FileSystem.list(holder.directory + "/storage/corruption-advisories").count, 1, "reported to its server")

        // A second client adds its lease to every share.
        let other = grid.root + "/other"
        (st, _, err) = try run(["client", "create", other, "--introducer", grid.address.description])
        XCTAssertEqual(st, 0, err)
        (st, out, err) = try run(["check", "--node-dir", other, "--add-lease", "--json", cap])
        let lr = (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: Any] ?? [:]
        XCTAssertEqual(lr["leases_renewed"] as? Int, 10, err)
        (st, out, err) = try run(["debug", "dump-share", path])
        XCTAssertTrue(String(decoding: out, as: UTF8.self).contains("leases: 2"), String(decoding: out, as: UTF8.self))

        // Servers gone: degraded, then unrecoverable.
        for i in 0..<3 { grid.servers[i].stop(ProcessSignal.kill) }
        (cst, r) = try check([])
        XCTAssertEqual(cst, 1, "\(r)")
        XCTAssertEqual(r["verdict"] as? String, "degraded")
        for i in 3..<9 { grid.servers[i].stop(ProcessSignal.kill) }
        (cst, r) = try check([])
        XCTAssertEqual(cst, 2, "\(r)")
        XCTAssertEqual(r["verdict"] as? String, "unrecoverable")
    }
}

extension ClientCLITests {
    /// `grid repair`: shares lost with their servers, and a share damaged on disk, are
    /// rebuilt and placed elsewhere; the file is healthy again and reads back.
    func testRepairLostAndCorruptShares() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let data = pseudoRandom(30_000, seed: 12)
        let (node, cap) = try uploadedFile(grid, "repairer", data)
        func json(_ args: [String]) throws -> (Int32, [String: Any]) {
            let (st, out, err) = try run(args + ["--node-dir", node, "--json", cap])
            let obj = (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: Any] ?? [:]
            XCTAssertFalse(obj.isEmpty, "\(args): no JSON: \(err)")
            return (st, obj)
        }
        // Three servers gone: degraded; repair places their shares on the others.
        for i in 0..<3 { grid.servers[i].stop(ProcessSignal.kill) }
        var (rst, r) = try json(["check"])
        XCTAssertEqual(rst, 1)
        XCTAssertEqual(r["shares_found"] as? Int, 7)
        (rst, r) = try json(["repair"])
        XCTAssertEqual(rst, 0, "\(r)")
        XCTAssertEqual(r["before"] as? String, "degraded")
        XCTAssertEqual(r["after"] as? String, "healthy")
        XCTAssertEqual((r["placed"] as? [String: Any])?.count, 3, "\(r)")
        (rst, r) = try json(["check", "--verify"])
        XCTAssertEqual(rst, 0, "\(r)")
        XCTAssertEqual(r["shares_found"] as? Int, 10)

        // A share damaged on disk: verify names it, repair places a good copy elsewhere.
        guard case let .chk(chk) = try Capability(parsing: cap) else { return XCTFail(cap) }
        let si = Base32.encode(chk.storageIndex)
        let holder = try XCTUnwrap(grid.servers[3...].first { FileSystem.exists($0.directory + "/storage/shares/\(si.prefix(2))/\(si)/5") })
        let f = try FileDescriptor(path: holder.directory + "/storage/shares/\(si.prefix(2))/\(si)/5", .readWrite)
        let at: UInt64 = 12 + 0x24 + 3
        try f.write(at: at, [try f.read(at: at, count: 1)[0] ^ 0x01])
        // A census alone (--no-verify, Tahoe's repair) sees all 10 shares and does nothing.
        (rst, r) = try json(["repair", "--no-verify"])
        XCTAssertEqual(rst, 0, "\(r)")
        XCTAssertEqual(r["before"] as? String, "healthy")
        XCTAssertEqual((r["placed"] as? [String: Any])?.count, 0, "\(r)")
        (rst, r) = try json(["repair"])
        XCTAssertEqual(rst, 0, "\(r)")
        XCTAssertEqual(r["before"] as? String, "degraded")
        XCTAssertEqual((r["placed"] as? [String: Any])?.keys.sorted(), ["5"], "\(r)")
        try assertReadsBack(node, cap, data)
    }
}

extension ClientCLITests {
    /// Every upload lands in the client's catalog; `grid catalog add` brings in more
    /// (refusing a manifest with a malformed line whole); `grid list` shows them.
    func testCatalogOfUploads() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let (node, cap) = try uploadedFile(grid, "cataloguer", pseudoRandom(10_000, seed: 3))
        func list() throws -> [[String: Any]] {
            let (st, out, err) = try run(["list", "--node-dir", node, "--json"])
            XCTAssertEqual(st, 0, err)
            return (try? JSONSerialization.jsonObject(with: Data(out))) as? [[String: Any]] ?? []
        }
        var entries = try list()
        XCTAssertEqual(entries.map { $0["cap"] as? String }, [cap])
        XCTAssertEqual(entries.first?["name"] as? String, "-")
        XCTAssertEqual(entries.first?["size"] as? Int, 10_000)
        let manifest = grid.root + "/caps.txt"
        let lit = "URI:LIT:" + Base32.encode(Array("hello".utf8))
        try "# from elsewhere\n\(lit)\n\nURI:CHK:broken\n".write(toFile: manifest, atomically: true, encoding: .utf8)
        var (st, _, err) = try run(["catalog", "add", "--node-dir", node, "--manifest", manifest])
        XCTAssertEqual(st, 64, err)
        XCTAssertEqual(try list().count, 1, "nothing added from a manifest with a bad line")
        try "# from elsewhere\n\(lit)\n".write(toFile: manifest, atomically: true, encoding: .utf8)
        (st, _, err) = try run(["catalog", "add", "--node-dir", node, "--manifest", manifest, "--name", "old backups"])
        XCTAssertEqual(st, 0, err)
        entries = try list()
        XCTAssertEqual(Set(entries.compactMap { $0["cap"] as? String }), [cap, lit])
        XCTAssertEqual(entries.first { $0["cap"] as? String == lit }?["name"] as? String, "old backups")
    }
}

extension ClientCLITests {
    /// Shares clumped on two servers are not healthy (happiness 2 < 7), and repair spreads
    /// copies onto servers that hold none until happiness is met.
    /// Found by the netgrid soak (seed 59): a client that knows fewer servers than `total`
    /// waited the server list's settle time (0.5 s for a check) in every call, because it
    /// counted quiet from each call's start. 12 files checked in one command on a 4-server
    /// grid took at least 12 × 0.5 s; the list is quiet after the first, so now the rest
    /// do not wait (a bound with a wide margin, not a speed target).
    func testOneCommandWaitsForTheServerListOnce() throws {
        let grid = try TestGrid(servers: 4)
        defer { grid.shutdown() }
        let node = grid.root + "/few"
        var (st, out, err) = try run(["client", "create", node, "--introducer", grid.address.description, "--happy", "4"])
        XCTAssertEqual(st, 0, err)
        var caps: [String] = []
        for i in 0..<12 {
            (st, out, err) = try run(["upload", "--node-dir", node, "-"], stdin: pseudoRandom(2_000, seed: UInt64(100 + i)))
            XCTAssertEqual(st, 0, err)
            caps.append(String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let t0 = monotonicNow()
        (st, out, err) = try run(["check", "--node-dir", node] + caps)
        let took = monotonicNow() - t0
        XCTAssertTrue(st == 0 || st == 1, "healthy or degraded, not failed: \(st) \(err)")
        XCTAssertLessThan(took, 12 * 0.5, "every check waited for servers that will not come")
    }

    func testRepairSpreadsClumpedShares() throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        for i in 2..<10 { grid.servers[i].stop(ProcessSignal.kill) }
        // A client content with 2 servers uploads while only two run: all 10 shares on them.
        let clumper = grid.root + "/clumper"
        var (st, out, err) = try run(["client", "create", clumper, "--introducer", grid.address.description, "--happy", "2"])
        XCTAssertEqual(st, 0, err)
        let data = pseudoRandom(40_000, seed: 4)
        (st, out, err) = try run(["upload", "--node-dir", clumper, "-"], stdin: data)
        XCTAssertEqual(st, 0, err)
        let cap = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        for i in 2..<10 { try grid.servers[i].start() }
        // A client that wants 7 distinct servers sees it degraded, and repairs it.
        let careful = grid.root + "/careful"
        (st, _, err) = try run(["client", "create", careful, "--introducer", grid.address.description])
        XCTAssertEqual(st, 0, err)
        (st, out, err) = try run(["check", "--node-dir", careful, "--json", cap])
        XCTAssertEqual(st, 1, err)
        var r = (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: Any] ?? [:]
        XCTAssertEqual(r["happiness"] as? Int, 2, "\(r)")
        XCTAssertEqual(r["shares_found"] as? Int, 10, "\(r)")
        (st, out, err) = try run(["repair", "--node-dir", careful, "--json", cap])
        XCTAssertEqual(st, 0, err)
        r = (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: Any] ?? [:]
        XCTAssertEqual(r["after"] as? String, "healthy", "\(r)")
        XCTAssertGreaterThanOrEqual(r["happiness_after"] as? Int ?? 0, 7, "\(r)")
        try assertReadsBack(careful, cap, data)
    }
}
