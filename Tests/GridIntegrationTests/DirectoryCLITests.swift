import Foundation
import GridCrypto
import GridTestSupport
import GridSystem
import XCTest

/// Directories from the command line, as a user runs them, against real daemons.
final class DirectoryCLITests: XCTestCase {
    var grid: TestGrid!
    var node = ""

    override func setUpWithError() throws {
        grid = try TestGrid(servers: 10)
        node = grid.root + "/dir-client"
        let (st, _, err) = try runGridCLI(["client", "create", node, "--introducer", grid.address.description, "--segment-size", "4096"])
        XCTAssertEqual(st, 0, err)
    }

    override func tearDown() { grid?.shutdown() }

    @discardableResult
    func grid(_ args: String..., status: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let (st, out, err) = try runGridCLI(args, env: ["GRID_NODE_DIR": node])
        XCTAssertEqual(st, status, "grid \(args.joined(separator: " ")): \(err)", file: file, line: line)
        return String(decoding: out, as: UTF8.self) + (status == 0 ? "" : err)
    }

    /// The bytes `grid download ARGS` writes.
    func download(_ args: String..., file: StaticString = #filePath, line: UInt = #line) throws -> [UInt8] {
        let (st, out, err) = try runGridCLI(["download"] + args, env: ["GRID_NODE_DIR": node])
        XCTAssertEqual(st, 0, err, file: file, line: line)
        return out
    }

    func write(_ path: String, _ bytes: [UInt8]) throws {
        try FileSystem.makeDirectories(FileSystem.directoryName(path), permissions: 0o755)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    func testAliasesPathsAndTreeCommands() throws {
        try grid("create-alias", "home")
        // Tahoe's aliases file format.
        let aliases = try String(contentsOfFile: node + "/private/aliases", encoding: .utf8)
        XCTAssertTrue(aliases.hasPrefix("home: URI:DIR2:"), aliases)
        XCTAssertTrue(try grid("create-alias", "home", status: 75).contains("already exists"))
        XCTAssertTrue(try grid("add-alias", "bad:name", "URI:DIR2-LIT:", status: 64).contains("colons"))
        let list = try JSONSerialization.jsonObject(with: Data(try grid("list-aliases", "--json").utf8)) as! [String: [String: String]]
        XCTAssertTrue(list["home"]!["readwrite"]!.hasPrefix("URI:DIR2:"))
        XCTAssertTrue(list["home"]!["readonly"]!.hasPrefix("URI:DIR2-RO:"))

        // upload into a path (parents made), ls, download by path.
        let small = Array("hello\n".utf8), big = pseudoRandom(50_000, seed: 3)
        try write(grid.root + "/small.txt", small)
        try write(grid.root + "/big.bin", big)
        let litCap = try grid("upload", grid.root + "/small.txt", "home:docs/small.txt").trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(litCap.hasPrefix("URI:LIT:"))
        let chkCap = try grid("upload", grid.root + "/big.bin", "home:docs/big.bin").trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(chkCap.hasPrefix("URI:CHK:"))
        XCTAssertEqual(try grid("ls", "home:"), "docs\n")
        XCTAssertEqual(try grid("ls", "home:docs"), "big.bin\nsmall.txt\n")
        let long = try grid("ls", "-l", "home:docs")
        XCTAssertTrue(long.contains("-r-- 50000 "), long)
        XCTAssertTrue(try download("home:docs/big.bin") == big)
        _ = try grid("download", "home:docs/nope", status: 66)

        // Tahoe's ?t=json shape.
        let js = try JSONSerialization.jsonObject(with: Data(try grid("ls", "--json", "home:docs").utf8)) as! [Any]
        XCTAssertEqual(js[0] as? String, "dirnode")
        let d = js[1] as! [String: Any]
        XCTAssertEqual(d["mutable"] as? Bool, true)
        XCTAssertTrue((d["rw_uri"] as! String).hasPrefix("URI:DIR2:"))
        let kids = d["children"] as! [String: [Any]]
        let bigInfo = kids["big.bin"]![1] as! [String: Any]
        XCTAssertEqual(kids["big.bin"]![0] as? String, "filenode")
        XCTAssertEqual(bigInfo["ro_uri"] as? String, chkCap)
        XCTAssertEqual(bigInfo["size"] as? Int, 50_000)
        XCTAssertEqual(bigInfo["format"] as? String, "CHK")
        XCTAssertTrue((bigInfo["verify_uri"] as! String).hasPrefix("URI:CHK-Verifier:"))
        let md = bigInfo["metadata"] as! [String: Any]
        let tahoe = md["tahoe"] as! [String: Double]
        XCTAssertEqual(tahoe["linkcrtime"]!, Date().timeIntervalSince1970, accuracy: 600)

        // Mutable files link too; mkdir; ln; mv within and across directories; rm.
        let mcap = try grid("upload", "--mutable", grid.root + "/small.txt", "home:notes").trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(mcap.hasPrefix("URI:MDMF:"))
        XCTAssertTrue(try grid("ls", "-l", "home:").contains("-rw- ? "))
        let sub = try grid("mkdir", "home:archive/2026").trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(sub.hasPrefix("URI:DIR2:"))
        _ = try grid("mkdir", "home:archive/2026", status: 75)
        try grid("ln", "home:docs/big.bin", "home:archive/2026")
        XCTAssertEqual(try grid("ls", "home:archive/2026"), "big.bin\n")
        try grid("mv", "home:docs/small.txt", "home:docs/renamed.txt")
        XCTAssertEqual(try grid("ls", "home:docs"), "big.bin\nrenamed.txt\n")
        try grid("mv", "home:docs/renamed.txt", "home:archive/")
        XCTAssertEqual(try grid("ls", "home:docs"), "big.bin\n")
        XCTAssertEqual(try grid("ls", "home:archive"), "2026\nrenamed.txt\n")
        try grid("rm", "home:docs/big.bin")
        XCTAssertEqual(try grid("ls", "home:docs"), "")
        XCTAssertTrue(try download("home:archive/2026/big.bin") == big, "still linked elsewhere")
        _ = try grid("rm", "home:docs/big.bin", status: 66)
        // A directory capability as a path root, and a read-only view refuses changes.
        let ro = list["home"]!["readonly"]!
        XCTAssertEqual(try grid("ls", ro + "/archive"), "2026\nrenamed.txt\n")
        XCTAssertTrue(try grid("mkdir", ro + "/x", status: 77).contains("read-only"))
        let roInfo = try JSONSerialization.jsonObject(with: Data(try grid("ls", "--json", ro).utf8)) as! [Any]
        for (_, kid) in (roInfo[1] as! [String: Any])["children"] as! [String: [Any]] {
            XCTAssertNil((kid[1] as! [String: Any])["rw_uri"], "a read-only view sees no write capabilities")
        }

        // manifest, stats, deep-check.
        let manifest = try grid("manifest", "home:").split(separator: "\n").map(String.init)
        XCTAssertEqual(manifest.count, 7, manifest.joined(separator: "\n"))  // home docs archive 2026 big.bin renamed notes
        XCTAssertTrue(manifest.contains("\(chkCap) archive/2026/big.bin"))
        XCTAssertTrue(manifest[0].hasSuffix(" ") && manifest[0].hasPrefix("URI:DIR2:"))
        let stats = try JSONSerialization.jsonObject(with: Data(try grid("stats", "--json", "home:").utf8)) as! [String: Any]
        XCTAssertEqual(stats["count-directories"] as? Int, 4)
        XCTAssertEqual(stats["count-immutable-files"] as? Int, 1)
        XCTAssertEqual(stats["count-literal-files"] as? Int, 1)
        XCTAssertEqual(stats["count-mutable-files"] as? Int, 1)
        XCTAssertTrue(try grid("deep-check", "--add-lease", "home:").contains("done: 7 objects checked, 7 healthy, 0 unhealthy"))
        XCTAssertTrue(try grid("deep-check", "--verify", "home:").contains("7 healthy"))
        // Shares lost on 4 servers: degraded (exit 1), then repaired (exit 0).
        for i in 0..<4 { try grid.servers[i].stop() }
        let out = try grid("deep-check", "home:", status: 1)
        XCTAssertTrue(out.contains("unhealthy"), out)
    }

    func testCopyTreesBothWays() throws {
        try grid("create-alias", "home")
        let src = grid.root + "/tree"
        var files: [String: [UInt8]] = [:]
        for i in 0..<40 {
            let rel = "d\(i % 4)/\(i % 3 == 0 ? "deep/" : "")f\(i).bin"
            files[rel] = pseudoRandom(i * 300 + 1, seed: UInt64(i))
            try write(src + "/" + rel, files[rel]!)
        }
        try write(src + "/café-\u{301}.txt", Array("nfd name".utf8))
        try grid("cp", "-r", src, "home:backup")
        XCTAssertEqual(try grid("ls", "home:backup/tree"), "café-́.txt\nd0\nd1\nd2\nd3\n".precomposedStringWithCanonicalMapping)
        // Directories need -r; copying again merges.
        _ = try grid("cp", src, "home:backup", status: 64)
        try write(src + "/d0/new.txt", Array("new".utf8))
        try grid("cp", "-r", src, "home:backup")
        XCTAssertTrue(try grid("ls", "home:backup/tree/d0").contains("new.txt"))
        // Out again: the same tree.
        let out = grid.root + "/restored"
        try grid("cp", "-r", "home:backup/tree", out)
        for (rel, bytes) in files { XCTAssertTrue(try Array(Data(contentsOf: URL(fileURLWithPath: out + "/tree/" + rel))) == bytes, rel) }
        XCTAssertEqual(try Array(Data(contentsOf: URL(fileURLWithPath: out + "/tree/d0/new.txt"))), Array("new".utf8))
        // One file to a file name, both ways; grid to grid links by capability.
        try grid("cp", src + "/d1/f1.bin", "home:one.bin")
        try grid("cp", "home:one.bin", out + "/one.bin")
        XCTAssertTrue(try Array(Data(contentsOf: URL(fileURLWithPath: out + "/one.bin"))) == files["d1/f1.bin"]!)
        try grid("cp", "-r", "home:backup/tree/d2", "home:copy")
        let a = try grid("ls", "--uri", "home:backup/tree/d2"), b = try grid("ls", "--uri", "home:copy/d2")
        XCTAssertEqual(a.split(separator: "\n").filter { !$0.contains("URI:DIR2") }, b.split(separator: "\n").filter { !$0.contains("URI:DIR2") })
    }

    /// A directory read once is not fetched again while it is the newest version (a
    /// census of share headers says so); a change by another client is seen at once.
    func testDirectoryCacheFollowsVersions() throws {
        try grid("create-alias", "home")
        let src = grid.root + "/many"
        for i in 0..<40 { try write(src + "/n\(i).txt", Array("x\(i)".utf8)) }
        try grid("cp", "-r", src, "home:")
        XCTAssertEqual(try grid("ls", "home:many").split(separator: "\n").count, 40)
        let info = try JSONSerialization.jsonObject(with: Data(try grid("ls", "--json", "home:").utf8)) as! [Any]
        let dircap = (((info[1] as! [String: Any])["children"] as! [String: [Any]])["many"]![1] as! [String: Any])["rw_uri"] as! String
        let caps = try JSONSerialization.jsonObject(with: Data(try grid("caps", "--json", dircap).utf8)) as! [String: String]
        let cacheFile = node + "/private/dircache/" + caps["storage_index"]!
        XCTAssertTrue(FileSystem.exists(cacheFile), "kept after the first read")
        XCTAssertEqual(try FileSystem.status(cacheFile)?.permissions, 0o600)
        // Proof the cache is what a second read uses: the same version's header over other
        // (empty) contents, with their hash, is believed.
        let original = try Array(Data(contentsOf: URL(fileURLWithPath: cacheFile)))
        try Data(Array(original[0..<40]) + SHA256.hash([])).write(to: URL(fileURLWithPath: cacheFile))
        XCTAssertEqual(try grid("ls", "home:many"), "")
        // A cache file that fails its hash is ignored.
        try Data(Array(original[0..<40]) + [UInt8](repeating: 0, count: 32) + [1, 2, 3]).write(to: URL(fileURLWithPath: cacheFile))
        XCTAssertEqual(try grid("ls", "home:many").split(separator: "\n").count, 40)
        // Another client node changes the directory: the next read here sees it.
        let other = grid.root + "/other-client"
        var (st, _, err) = try runGridCLI(["client", "create", other, "--introducer", grid.address.description])
        XCTAssertEqual(st, 0, err)
        (st, _, err) = try runGridCLI(["ln", "URI:LIT:nbswy3dpbi", dircap + "/added-elsewhere"], env: ["GRID_NODE_DIR": other])
        XCTAssertEqual(st, 0, err)
        let after = try grid("ls", "home:many").split(separator: "\n")
        XCTAssertEqual(after.count, 41)
        XCTAssertTrue(after.contains("added-elsewhere"))
        // A path is read ahead from the cache (every directory along it asked for its
        // version at once): when the other node replaces home:many by another directory,
        // the guess is out of date, and the listing is still the new directory's.
        let rootcap = (info[1] as! [String: Any])["rw_uri"] as! String
        (st, _, err) = try runGridCLI(["rm", rootcap + "/many"], env: ["GRID_NODE_DIR": other])
        XCTAssertEqual(st, 0, err)
        (st, _, err) = try runGridCLI(["mkdir", rootcap + "/many"], env: ["GRID_NODE_DIR": other])
        XCTAssertEqual(st, 0, err)
        (st, _, err) = try runGridCLI(["ln", "URI:LIT:nbswy3dpbi", rootcap + "/many/fresh"], env: ["GRID_NODE_DIR": other])
        XCTAssertEqual(st, 0, err)
        XCTAssertEqual(try grid("ls", "home:many"), "fresh\n")
        XCTAssertEqual(try grid("ls", "home:many/fresh"), "fresh\n")
    }

    /// Eight writers adding 25 names each to one directory at once: every name is there.
    func testConcurrentWritersLoseNothing() throws {
        try grid("create-alias", "home")
        let dircap = try grid("mkdir", "home:shared").trimmingCharacters(in: .whitespacesAndNewlines)
        let lit = "URI:LIT:nbswy3dpbi"
        let failures = UnsafeBox<[String]>([])
        let lock = NSLock()
        let node = self.node
        let threads = (0..<8).map { w in
            Thread {
                for i in 0..<25 {
                    do {
                        let (st, _, err) = try runGridCLI(["ln", lit, dircap + "/w\(w)-\(i)"], env: ["GRID_NODE_DIR": node])
                        if st != 0 { lock.lock(); failures.value.append("w\(w)-\(i): \(err)"); lock.unlock() }
                    } catch {
                        lock.lock(); failures.value.append("\(error)"); lock.unlock()
                    }
                }
            }
        }
        threads.forEach { $0.start() }
        let deadline = Date().addingTimeInterval(300)
        while threads.contains(where: { !$0.isFinished }) && Date() < deadline { usleep(50_000) }
        XCTAssertEqual(failures.value, [])
        let names = Set(try grid("ls", dircap).split(separator: "\n").map(String.init))
        XCTAssertEqual(names.count, 200)
        for w in 0..<8 { for i in 0..<25 { XCTAssertTrue(names.contains("w\(w)-\(i)"), "w\(w)-\(i)") } }
    }
}
