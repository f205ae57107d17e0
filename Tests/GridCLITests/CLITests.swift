import Foundation
import GridCrypto
import GridTestSupport
import XCTest

/// Runs the real `grid` executable, as a user would.
struct GridRun {
    let status: Int32
    let stdout: String
    let stderr: String
    let stdoutBytes: Data
}

func gridBinary() -> URL {
    // The test bundle sits next to the products of the same build.
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for dir in [bundle, bundle.deletingLastPathComponent()] {
        let candidate = dir.appendingPathComponent("grid")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    }
    return bundle.appendingPathComponent("grid")
}

@discardableResult
func grid(_ args: [String], env: [String: String] = [:], stdin: Data? = nil) throws -> GridRun {
    let p = Process()
    p.executableURL = gridBinary()
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    // Capture into files, not pipes: nothing can block however much the child prints.
    let tmp = FileManager.default.temporaryDirectory
    let outURL = tmp.appendingPathComponent("grid-out-\(UUID().uuidString)")
    let errURL = tmp.appendingPathComponent("grid-err-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: outURL.path, contents: nil)
    FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }
    let outHandle = try FileHandle(forWritingTo: outURL), errHandle = try FileHandle(forWritingTo: errURL)
    p.standardOutput = outHandle
    p.standardError = errHandle
    p.standardInput = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    try outHandle.close()
    try errHandle.close()
    let o = try Data(contentsOf: outURL), e = try Data(contentsOf: errURL)
    return GridRun(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self), stdoutBytes: o)
}

final class CLITests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("grid-cli-\(getpid())-\(name.hashValue)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: gridBinary().path), "grid binary not found at \(gridBinary().path)")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func write(_ name: String, _ bytes: [UInt8]) -> String {
        FileManager.default.createFile(atPath: path(name), contents: Data(bytes))
        return path(name)
    }

    /// A Tahoe vector through the command line: the same capability, then the same bytes back.
    func testEncodeMatchesTahoeAndDecodes() throws {
        let doc = try Fixtures.json("chk.json") as! [String: Any]
        let c = (doc["cases"] as! [[String: Any]]).first { ($0["size"] as! Int) == 131073 && ($0["n"] as! Int) == 10 }!
        let data = content(seed: "tahoe-chk", length: 131073)
        let file = write("in", data)
        let r = try grid(["debug", "encode", "--convergence-secret", c["convergence_secret_hex"] as! String,
                          "--needed", "\(c["k"]!)", "--total", "\(c["n"]!)", "--segment-size", "\(c["max_segment_size"]!)",
                          file, path("shares")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let cap = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertEqual(cap, c["cap"] as! String)
        for s in c["shares"] as! [[String: Any]] {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path("shares/\(s["shnum"]!)"))))
            XCTAssertEqual(sha256hex(bytes), s["share_data_sha256"] as! String)
        }
        // Decode with 7 of 10 shares gone, to a file and to stdout.
        for i in [0, 1, 2, 4, 5, 7, 9] { try FileManager.default.removeItem(atPath: path("shares/\(i)")) }
        let d = try grid(["debug", "decode", cap, path("shares"), "-o", path("out")])
        XCTAssertEqual(d.status, 0, d.stderr)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: path("out")))), data)
        let s = try grid(["debug", "decode", cap, path("shares")])
        XCTAssertEqual(s.status, 0)
        XCTAssertEqual(Array(s.stdoutBytes), data)
        // Every SIMD path gives the same capability.
        for p in ["portable", "ssse3", "avx2", "gfni"] {
            let e = try grid(["debug", "encode", "--convergence-secret", c["convergence_secret_hex"] as! String,
                              "--segment-size", "\(c["max_segment_size"]!)", file, path("s-\(p)")], env: ["GRID_SIMD": p])
            if e.status == 0 { XCTAssertEqual(e.stdout.trimmingCharacters(in: .whitespacesAndNewlines), cap, p) }
            else { XCTAssertTrue(e.stderr.contains("not supported by this CPU"), e.stderr) }
        }
    }

    func testLiteralFiles() throws {
        let file = write("small", Array("hello, grid".utf8))
        let r = try grid(["debug", "encode", "--convergence-secret", "00", file, path("none")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("URI:LIT:"))
        let d = try grid(["debug", "decode", r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)])
        XCTAssertEqual(d.stdout, "hello, grid")
    }

    func testDumpShare() throws {
        let file = write("in", pseudoRandom(5000, seed: 3))
        let r = try grid(["debug", "encode", "--convergence-secret", "aa", "--needed", "2", "--total", "4", file, path("sh")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let d = try grid(["debug", "dump-share", path("sh/3")])
        XCTAssertEqual(d.status, 0, d.stderr)
        for want in ["version: 1", "block size: 2500", "needed_shares: 2", "total_shares: 4", "size: 5000",
                     "codec_params: 5000-2-4", "share hash chain: "] {
            XCTAssertTrue(d.stdout.contains(want), "dump-share output lacks '\(want)':\n\(d.stdout)")
        }
    }

    /// Bad input: one line on stderr, the exit status of its class, no crash, no partial output file.
    func testErrorsAreOneLineWithTheirClassExitStatus() throws {
        let file = write("in", pseudoRandom(5000, seed: 4))
        let enc = try grid(["debug", "encode", "--convergence-secret", "aa", file, path("sh")])
        let cap = enc.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        for i in 0..<8 { try FileManager.default.removeItem(atPath: path("sh/\(i)")) }
        // Each failure exits with the status of its class (sysexits.h: 64 usage, 65 corrupt
        // data, 66 not found, 69 unavailable).
        let cases: [([String], String, Int32)] = [
            (["debug", "encode", "--convergence-secret", "zz", file, path("o1")], "hex", 64),
            (["debug", "encode", "--convergence-secret", "aa", "--needed", "11", "--total", "10", file, path("o2")], "k=11", 64),
            (["debug", "encode", "--convergence-secret", "aa", "--total", "300", file, path("o3")], "n=300", 64),
            (["debug", "encode", "--convergence-secret", "aa", "--segment-size", "0", file, path("o4")], "segment size", 64),
            (["debug", "encode", "--convergence-secret", "aa", path("missing"), path("o5")], "No such file", 66),
            (["debug", "encode", "--convergence-secret", "aa", path("."), path("o5")], "not a regular file", 64),
            (["debug", "decode", "URI:CHK:nonsense", path("sh")], "bad capability", 64),
            (["debug", "decode", cap, path("sh"), "-o", path("out")], "need 3, have 2", 69),
            (["debug", "decode", cap, path("nodir")], "nodir", 66),
            (["debug", "dump-share", file], "share header", 65),
        ]
        for (args, fragment, status) in cases {
            let r = try grid(args)
            XCTAssertEqual(r.status, status, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(fragment), "\(args): '\(r.stderr)' lacks '\(fragment)'")
            XCTAssertEqual(r.stderr.filter { $0 == "\n" }.count, 1, "one line: \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("Fatal"), r.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out")), "a failed decode must leave no output file")
        let bad = try grid(["debug", "encode", "--convergence-secret", "aa", file, path("o6")], env: ["GRID_SIMD": "quantum"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("GRID_SIMD=quantum"), bad.stderr)
    }

    /// Every command documents its exit codes, usage errors as 64.
    func testEveryCommandsHelpListsExitCodes() throws {
        let commands: [[String]] = [
            [], ["upload"], ["download"], ["update"], ["caps"], ["check"], ["repair"], ["maintain"], ["list"], ["catalog"], ["catalog", "add"], ["client"], ["client", "create"], ["demo"],
            ["local-grid"], ["local-grid", "start"], ["local-grid", "stop"], ["local-grid", "status"],
            ["introducer"], ["introducer", "create"], ["introducer", "run"],
            ["storage"], ["storage", "create"], ["storage", "run"], ["storage", "reindex"],
            ["debug"], ["debug", "encode"], ["debug", "decode"], ["debug", "dump-share"],
            ["bench"], ["bench", "codec"], ["bench", "chk"], ["bench", "grid"], ["bench", "maintain"], ["bench", "connections"], ["bench", "sha"], ["bench", "stall"],
            ["create-alias"], ["add-alias"], ["list-aliases"], ["ls"], ["mkdir"], ["cp"], ["ln"], ["mv"], ["rm"], ["unlink"],
            ["manifest"], ["stats"], ["deep-check"], ["backup"], ["restore"],
        ]
        for c in commands {
            let r = try grid(c + ["--help"])
            XCTAssertEqual(r.status, 0, "\(c): \(r.stderr)")
            XCTAssertTrue(r.stdout.contains("Exit status") && r.stdout.contains("64 usage error"), "\(c) --help:\n\(r.stdout)")
        }
        let bad = try grid(["upload", "--no-such-option"])
        XCTAssertEqual(bad.status, 64, "an unknown option is a usage error")
    }

    func testHelpExplains() throws {
        let r = try grid(["debug", "encode", "--help"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("--convergence-secret"))
        XCTAssertTrue(r.stdout.contains("12-byte"), r.stdout)
        let top = try grid(["--help"])
        XCTAssertTrue(top.stdout.contains("Exit status"))
        // What a newcomer types first.
        let version = try grid(["--version"])
        XCTAssertEqual(version.status, 0, version.stderr)
        XCTAssertTrue(version.stdout.hasPrefix("grid/"), version.stdout)
        let known = try grid(["help", "upload"])
        XCTAssertEqual(known.status, 0, known.stderr)
        XCTAssertTrue(known.stdout.contains("capability"), known.stdout)
        for missing in [["help", "nonexist"], ["help", "storage", "nonexist"]] {
            let r = try grid(missing)
            XCTAssertEqual(r.status, 64, "\(missing): \(r.stdout)")
            XCTAssertTrue(r.stderr.contains("no command '\(missing.dropFirst().joined(separator: " "))'"), r.stderr)
        }
    }

    /// tools/install.sh into a staging root: the binary where the systemd units expect it
    /// (and the units rewritten to point at it), the state directory, and a binary that runs.
    func testInstallScriptInAFreshDirectory() throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path
        let stage = dir.path + "/stage"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [repo + "/tools/install.sh", "--root", stage, "--binary", gridBinary().path, "--systemd", "--prefix", "/opt/grid"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, text)
        let installed = stage + "/opt/grid/bin/grid"
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: installed), text)
        let r = try runProcess(installed, ["--version"])
        XCTAssertTrue(r.hasPrefix("grid/"), r)
        let unit = try String(contentsOfFile: stage + "/etc/systemd/system/grid-storage@.service", encoding: .utf8)
        XCTAssertTrue(unit.contains("ExecStart=/opt/grid/bin/grid storage run"), unit)
        XCTAssertTrue(FileManager.default.fileExists(atPath: stage + "/etc/systemd/system/grid-gateway.service"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: stage + "/var/lib/grid"))
    }

    func testBenchCodecJSON() throws {
        let r = try grid(["bench", "codec", "--json", "--shapes", "3:7", "--shards", "4096", "--reps", "1", "--min-time", "0.001"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        XCTAssertFalse(rows.isEmpty)
        for row in rows {
            XCTAssertNotNil(["portable", "ssse3", "avx2", "gfni"].firstIndex(of: row["path"] as! String))
            XCTAssertEqual(row["k"] as? Int, 3)
            XCTAssertEqual(row["m"] as? Int, 7)
            XCTAssertEqual(row["shard_bytes"] as? Int, 4096)
            XCTAssertGreaterThan(row["encode_gbps"] as! Double, 0)
            XCTAssertGreaterThan(row["decode_gbps"] as! Double, 0)
        }
    }

    /// `bench grid --json` through real daemons: MB/s, CPU seconds per round, and the CPU
    /// per GiB medians and busy cores that issue 16's targets are stated in.
    func testBenchGridJSON() throws {
        let r = try grid(["bench", "grid", "--json", "--size", "2MiB", "--rounds", "1", "--servers", "4", "--happy", "4", "--total", "4"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(o["size"] as? Int, 2 << 20)
        XCTAssertGreaterThan(o["upload_median_mb_s"] as! Double, 0)
        let rounds = try XCTUnwrap(o["cpu_seconds"] as? [[String: Double]])
        XCTAssertEqual(rounds.count, 1)
        let perGiB = try XCTUnwrap(o["cpu_seconds_per_gib"] as? [String: Double])
        // One round: the median is that round's CPU over the file's size in GiB.
        XCTAssertEqual(perGiB["upload_client"]!, rounds[0]["upload_client"]! * 512, accuracy: 1e-9)
        XCTAssertEqual(perGiB["download_servers"]!, rounds[0]["download_servers"]! * 512, accuracy: 1e-9)
        XCTAssertGreaterThan(perGiB["upload_client"]!, 0)
        // (No upper bound: the daemons' CPU comes from /proc in 10 ms ticks, coarse beside
        // a 2 MiB upload's wall time.)
        XCTAssertGreaterThan(try XCTUnwrap(o["upload_cores_busy_median"] as? Double), 0)
    }

    func testBenchSHAJSON() throws {
        let r = try grid(["bench", "sha", "--json", "--shapes", "3:1000,16:4096", "--reps", "1", "--min-time", "0.001"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        // Every fast path this CPU has, for each shape.
        let paths = SHA256Path.allCases.filter { $0.isSupported && $0 != .portable }.map(\.rawValue)
        XCTAssertEqual(rows.map { $0["path"] as! String }, paths + paths)
        XCTAssertEqual(rows.map { $0["messages"] as! Int }, Array(repeating: 3, count: paths.count) + Array(repeating: 16, count: paths.count))
        for row in rows { XCTAssertGreaterThan(row["gbps"] as! Double, 0) }
        XCTAssertEqual(try grid(["bench", "sha", "--shapes", "0:10"]).status, 64)
        XCTAssertEqual(try grid(["bench", "sha", "--paths", "sha3"]).status, 64)
    }

    func testBenchCHKJSON() throws {
        let r = try grid(["bench", "chk", "--json", "--size-mib", "2", "--runs", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        XCTAssertEqual(Set(rows.map { $0["op"] as! String }), ["encode", "decode-systematic", "decode-worst"])
        for row in rows { XCTAssertGreaterThan(row["mbps"] as! Double, 0) }
    }
}

final class DaemonCLITests: XCTestCase {
    func testBenchConnectionsKeepsThreadsFixed() throws {
        let r = try grid(["bench", "connections", "--count", "60", "--idle", "0.5", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let row = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(row["open_after_idle"] as? Int, 60)
        XCTAssertEqual(row["server_threads_after"] as? Int, row["server_threads_before"] as? Int, "no thread per connection")
    }

    func testCreateCommandsCheckTheirInput() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("grid-create-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let intro = try grid(["introducer", "create", dir + "/intro"])
        XCTAssertEqual(intro.status, 0, intro.stderr)
        let addr = String(intro.stdout.split(separator: "\n").last!)
        XCTAssertTrue(addr.hasPrefix("grid://v0-"), addr)
        // The secret-bearing files are private.
        for f in ["/intro/private/node.key", "/intro/private/introducer.secret", "/intro/grid.conf"] {
            let mode = (try FileManager.default.attributesOfItem(atPath: dir + f)[.posixPermissions] as! NSNumber).intValue
            XCTAssertEqual(mode, 0o600, f)
        }
        let again = try grid(["introducer", "create", dir + "/intro"])
        XCTAssertEqual(again.status, 75, "conflict: a node is already there")
        XCTAssertTrue(again.stderr.contains("already holds a node"), again.stderr)
        let bad = try grid(["storage", "create", dir + "/s", "--introducer", "pb://nonsense"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("bad introducer address"), bad.stderr)
        let badSize = try grid(["storage", "create", dir + "/s", "--introducer", addr, "--reserved-space", "lots"])
        XCTAssertEqual(badSize.status, 64)
        XCTAssertTrue(badSize.stderr.contains("bad size"), badSize.stderr)
        let ok = try grid(["storage", "create", dir + "/s", "--introducer", addr, "--reserved-space", "2GiB"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let notNode = try grid(["storage", "run", dir + "/nowhere"])
        XCTAssertEqual(notNode.status, 66)
        XCTAssertTrue(notNode.stderr.contains("not a grid node directory"), notNode.stderr)
    }
}

/// grid.conf: typos are errors naming file and line, documented defaults hold, the
/// samples in grid-config/ are valid, and listen addresses are understood.
final class ConfigCLITests: XCTestCase {
    var dir = ""
    override func setUp() {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("grid-conf-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func append(_ path: String, _ text: String) throws {
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        h.seekToEndOfFile()
        h.write(Data(text.utf8))
        try h.close()
    }

    func lineCount(_ path: String) throws -> Int { try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).count }

    func testTyposInEveryKindOfNodeAreErrorsWithFileAndLine() throws {
        let intro = try grid(["introducer", "create", dir + "/intro"])
        XCTAssertEqual(intro.status, 0, intro.stderr)
        let addr = String(intro.stdout.split(separator: "\n").last!)
        XCTAssertEqual(try grid(["storage", "create", dir + "/s", "--introducer", addr]).status, 0)
        XCTAssertEqual(try grid(["client", "create", dir + "/c", "--introducer", addr]).status, 0)
        let cases: [(node: String, text: String, run: [String], fragment: String)] = [
            ("/s", "\n[storage]\nreserverd_space = 5G\n", ["storage", "run", dir + "/s"], "has no key 'reserverd_space'"),
            ("/s", "\n[storrage]\nexpire = true\n", ["storage", "run", dir + "/s"], "has no [storrage] section"),
            ("/intro", "\n[introducer]\nexpiri = 10s\n", ["introducer", "run", dir + "/intro"], "has no key 'expiri'"),
            ("/c", "\n[client]\nhapy = 5\n", ["upload", "--node-dir", dir + "/c", "-"], "has no key 'hapy'"),
            ("/c", "\n[clients]\nhappy = 5\n", ["upload", "--node-dir", dir + "/c", "-"], "has no [clients] section"),
        ]
        for c in cases {
            let conf = dir + c.node + "/grid.conf"
            let original = try String(contentsOfFile: conf, encoding: .utf8)
            try append(conf, c.text)
            let line = try lineCount(conf) - 1  // the typo is on the last line written
            let r = try grid(c.run, stdin: Data("hello".utf8))
            XCTAssertEqual(r.status, 64, "\(c.text): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(c.fragment), "\(c.text): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("grid.conf:\(line)") || r.stderr.contains("grid.conf:\(line - 1)"), "names the line: \(r.stderr)")
            try original.write(toFile: conf, atomically: true, encoding: .utf8)
        }
    }

    /// What `create` writes is exactly what each kind of node reads: every key of the
    /// schema is written (so every key is exercised by the daemons the tests start) and
    /// nothing else.
    func testCreatedConfigsHoldEveryKeyOfTheirKind() throws {
        let intro = try grid(["introducer", "create", dir + "/i"])
        let addr = String(intro.stdout.split(separator: "\n").last!)
        XCTAssertEqual(try grid(["storage", "create", dir + "/s", "--introducer", addr]).status, 0)
        XCTAssertEqual(try grid(["client", "create", dir + "/c", "--introducer", addr]).status, 0)
        let expected: [String: Set<String>] = [
            "i": ["node.type", "node.listen", "node.location", "introducer.expiry"],
            "s": ["node.type", "node.nickname", "node.listen", "node.location", "storage.reserved_space", "storage.lease_duration",
                  "storage.expire", "storage.expire_interval", "storage.announce_interval", "introducer.address"],
            "c": ["node.type", "node.nickname", "introducer.address", "client.needed", "client.happy", "client.total", "client.segment_size"],
        ]
        for (node, keys) in expected {
            var section = "", found = Set<String>()
            for line in try String(contentsOfFile: dir + "/" + node + "/grid.conf", encoding: .utf8).split(separator: "\n") {
                let t = line.trimmingCharacters(in: .whitespaces)
                if t.hasPrefix("#") || t.isEmpty { continue }
                if t.hasPrefix("[") { section = String(t.dropFirst().dropLast()); continue }
                found.insert(section + "." + t.split(separator: "=")[0].trimmingCharacters(in: .whitespaces))
            }
            XCTAssertEqual(found, keys, node)
        }
    }

    func testSampleConfigsAreValid() throws {
        let samples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../grid-config").standardized.path
        for (file, command) in [("storage.grid.conf", ["storage", "run"]), ("introducer.grid.conf", ["introducer", "run"])] {
            let node = dir + "/" + file
            try FileManager.default.createDirectory(atPath: node + "/private", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: samples + "/" + file, toPath: node + "/grid.conf")
            let text = try String(contentsOfFile: node + "/grid.conf", encoding: .utf8)
            XCTAssertFalse(text.contains("expire = true"), "a sample must not expire leases nothing renews yet")
            // The schema accepts the sample; what fails next is the missing key or address, not the config.
            let r = try grid(command + [node])
            XCTAssertFalse(r.stderr.contains("has no key") || r.stderr.contains("section"), "\(file): \(r.stderr)")
        }
    }

    func testListenAddresses() throws {
        let intro = try grid(["introducer", "create", dir + "/intro", "--listen", "127.0.0.1:43987"])
        XCTAssertEqual(intro.status, 0, intro.stderr)
        let conf = try String(contentsOfFile: dir + "/intro/grid.conf", encoding: .utf8)
        XCTAssertTrue(conf.contains("listen = 127.0.0.1:43987\n"), conf)
        XCTAssertTrue(String(intro.stdout.split(separator: "\n").last!).contains("@127.0.0.1:43987/"), intro.stdout)
        let addr = String(intro.stdout.split(separator: "\n").last!)
        let all = try grid(["storage", "create", dir + "/s", "--introducer", addr, "--listen", "0.0.0.0"])
        XCTAssertEqual(all.status, 64, all.stderr)
        XCTAssertTrue(all.stderr.contains("--location"), all.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/s"), "nothing created")
        let clash = try grid(["storage", "create", dir + "/s", "--introducer", addr, "--listen", "127.0.0.1:4000", "--port", "4001"])
        XCTAssertEqual(clash.status, 64, clash.stderr)
        let ok = try grid(["storage", "create", dir + "/s", "--introducer", addr, "--listen", "0.0.0.0", "--location", "storage.example:4001", "--port", "4001"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
    }
}

/// Runs an executable; returns its stdout.
func runProcess(_ path: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let d = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: d, as: UTF8.self)
}
