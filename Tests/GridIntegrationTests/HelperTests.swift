import Foundation
import GridCrypto
import GridFormat
import GridImmutable
import GridLocalGrid
import GridProtocol
import GridSystem
import GridTestSupport
import GridWire
import Synchronization
import XCTest

/// `grid helper`: a real helper daemon between real clients and real storage servers.
final class HelperTests: XCTestCase {
    func run(_ args: [String], stdin: [UInt8]? = nil) throws -> (Int32, [UInt8], String) { try runGridCLI(args, stdin: stdin) }

    func json(_ bytes: [UInt8]) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    /// A helper node on `grid`, running; returns it and its address.
    func startHelper(_ grid: TestGrid) throws -> (DaemonProcess, String) {
        let dir = grid.root + "/helper"
        let (st, out, err) = try run(["helper", "create", dir, "--introducer", grid.address.description])
        XCTAssertEqual(st, 0, err)
        let address = try XCTUnwrap(String(decoding: out, as: UTF8.self).split(separator: "\n").last.map(String.init))
        XCTAssertTrue(address.hasPrefix("grid://v0-"), address)
        let helper = DaemonProcess(kind: "helper", directory: dir)
        try helper.start()
        return (helper, address)
    }

    func client(_ grid: TestGrid, _ name: String, helper: String?) throws -> String {
        let node = grid.root + "/" + name
        let (st, _, err) = try run(["client", "create", node, "--introducer", grid.address.description,
                                    "--needed", "2", "--happy", "3", "--total", "5"] + (helper.map { ["--helper", $0] } ?? []))
        XCTAssertEqual(st, 0, err)
        return node
    }

    func upload(_ node: String, _ data: [UInt8], line: UInt = #line) throws -> [String: Any] {
        let (st, out, err) = try run(["upload", "--node-dir", node, "--json", "-"], stdin: data)
        XCTAssertEqual(st, 0, err, line: line)
        return try json(out)
    }

    func assertReadsBack(_ node: String, _ cap: String, _ data: [UInt8], line: UInt = #line) throws {
        let (st, out, err) = try run(["download", "--node-dir", node, cap])
        XCTAssertEqual(st, 0, err, line: line)
        XCTAssertTrue(out == data, "the bytes read back differ", line: line)
    }

    /// The client sends the ciphertext once (not n/k times), gets the capability a direct
    /// upload makes, and sends nothing for a file stored already; with the helper down it
    /// uploads directly and says so.
    func testUploadsThroughTheHelper() throws {
        let grid = try TestGrid(servers: 5)
        defer { grid.shutdown() }
        let (helper, address) = try startHelper(grid)
        defer { _ = helper.stop() }
        let viaHelper = try client(grid, "c1", helper: address)
        let data = pseudoRandom(300_000, seed: 41)

        let r = try upload(viaHelper, data)
        let cap = try XCTUnwrap(r["cap"] as? String)
        XCTAssertEqual(r["helper"] as? String, "127.0.0.1:\(helper.port)")
        XCTAssertEqual(r["bytes_sent"] as? Int, data.count, "ciphertext once, not n/k times")
        XCTAssertGreaterThanOrEqual(r["happiness"] as? Int ?? 0, 3)
        XCTAssertEqual((r["shares"] as? [String: Any])?.count, 5)
        // Any client reads it back; shares sit on the servers, not on the helper.
        let reader = try client(grid, "reader", helper: nil)
        try assertReadsBack(reader, cap, data)
        XCTAssertTrue((try FileSystem.list(grid.root + "/helper/incoming")).isEmpty, "the helper keeps nothing after placing the shares")

        // Again through the helper: stored already, nothing sent.
        let again = try upload(viaHelper, data)
        XCTAssertEqual(again["cap"] as? String, cap)
        XCTAssertEqual(again["bytes_sent"] as? Int, 0)

        // The same node uploading directly makes the same capability (the helper's shares
        // are the ones a direct upload makes: all five are found; with one flight off the
        // census comes first, so none is sent).
        let conf = viaHelper + "/grid.conf"
        let original = try String(contentsOfFile: conf, encoding: .utf8)
        try original.split(separator: "\n").filter { !$0.hasPrefix("helper") }.joined(separator: "\n")
            .replacingOccurrences(of: "[client]", with: "[client]\none_flight_max = 0")
            .write(toFile: conf, atomically: true, encoding: .utf8)
        let direct = try upload(viaHelper, data)
        XCTAssertEqual(direct["cap"] as? String, cap)
        XCTAssertEqual(direct["shares_already_present"] as? Int, 5)
        XCTAssertEqual(direct["bytes_sent"] as? Int, 0)
        XCTAssertNil(direct["helper"] as? String)
        try original.write(toFile: conf, atomically: true, encoding: .utf8)

        // The helper stopped: the upload goes directly, with a note.
        XCTAssertEqual(helper.stop(), 0)
        let other = pseudoRandom(200_000, seed: 42)
        let (st, out, err) = try run(["upload", "--node-dir", viaHelper, "--json", "-"], stdin: other)
        XCTAssertEqual(st, 0, err)
        XCTAssertTrue(err.contains("note: the upload helper at 127.0.0.1:") && err.contains("uploaded directly"), err)
        let fallback = try json(out)
        XCTAssertNotNil(fallback["helper_problem"] as? String)
        XCTAssertGreaterThan(fallback["bytes_sent"] as? Int ?? 0, other.count * 2, "n/k times the file went to the servers")
        try assertReadsBack(reader, try XCTUnwrap(fallback["cap"] as? String), other)
    }

    /// An upload cut off part-way resumes where the helper's recorded copy ends, across a
    /// helper restart: only the rest is sent, and the file reads back whole.
    func testInterruptedUploadResumesAfterAHelperRestart() async throws {
        let grid = try TestGrid(servers: 5)
        defer { grid.shutdown() }
        let (helper, address) = try startHelper(grid)
        defer { _ = helper.stop() }
        let node = try client(grid, "c1", helper: address)
        let size = 20 << 20
        let data = pseudoRandom(size, seed: 43)

        // The first 12 MiB of this file's ciphertext, as the client would send them.
        let secretText = try XCTUnwrap(try readSecretFile(node + "/private/convergence"))
        let secret = try XCTUnwrap(Base32.decode(secretText.trimmingCharacters(in: .whitespacesAndNewlines)))
        let params = EncodingParameters(needed: 2, happy: 3, total: 5)
        let key = try CHKEncoder(parameters: params).convergenceKey(source: MemorySource(data), secret: secret)
        let si = TahoeHash.storageIndex(forKey: key)
        let ciphertext = try AESCTR(key: key).process(data)
        let addr = try IntroducerAddress(parsing: address)
        let rpc = try await RPCClient.connect(loop: grid.loop, host: addr.host, port: addr.port, serverKey: addr.publicKey,
                                              service: helperServiceName, secret: addr.secret, tls: grid.tls)
        let uploadSecret = helperUploadSecret(key: key)
        let start = try await rpc.call(HelperStartRequest(storageIndex: si, uploadSecret: uploadSecret, size: UInt64(size),
                                                          encoding: HelperEncoding(needed: 2, happy: 3, total: 5, maxSegmentSize: 1 << 20)))
        XCTAssertFalse(start.alreadyStored)
        XCTAssertEqual(start.have, 0)
        for i in 0..<12 {
            let piece = Array(ciphertext[(i << 20)..<((i + 1) << 20)])
            let r = try await rpc.call(HelperAppendRequest(storageIndex: si, uploadSecret: uploadSecret, offset: UInt64(i << 20), data: piece))
            XCTAssertEqual(r.have, UInt64((i + 1) << 20))
        }
        // Hostile arguments are refused, and the upload goes on: data from one without the
        // key's upload secret, an append past the end, a finish with bytes missing.
        do {
            _ = try await rpc.call(HelperAppendRequest(storageIndex: si, uploadSecret: SecureRandom.bytes(32), offset: 0, data: [1, 2, 3]))
            XCTFail("an append with another upload secret was taken")
        } catch let e as WireError { XCTAssertEqual(e.code, .badSecret) }
        do {
            _ = try await rpc.call(HelperAppendRequest(storageIndex: si, uploadSecret: uploadSecret, offset: UInt64.max - 10, data: [1, 2, 3]))
            XCTFail("an append past the end was taken")
        } catch let e as WireError { XCTAssertEqual(e.code, .badRequest) }
        do {
            _ = try await rpc.call(HelperFinishRequest(storageIndex: si, uploadSecret: uploadSecret))
            XCTFail("finish with bytes missing was taken")
        } catch let e as WireError { XCTAssertEqual(e.code, .badRequest) }
        // Someone without the key (another upload secret) cannot take the upload over.
        do {
            _ = try await rpc.call(HelperStartRequest(storageIndex: si, uploadSecret: SecureRandom.bytes(32), size: UInt64(size),
                                                      encoding: HelperEncoding(needed: 2, happy: 3, total: 5, maxSegmentSize: 1 << 20)))
            XCTFail("another secret took over an upload in use")
        } catch let e as WireError { XCTAssertEqual(e.code, .badSecret) }
        rpc.close()

        // The helper restarts: it kept what it had recorded (every 8 MiB, after a sync).
        XCTAssertEqual(helper.stop(), 0)
        try helper.start()
        let r = try upload(node, data)
        XCTAssertEqual(r["resumed_from"] as? Int, 8 << 20)
        XCTAssertEqual(r["bytes_sent"] as? Int, size - (8 << 20))
        try assertReadsBack(node, try XCTUnwrap(r["cap"] as? String), data)
    }

    /// Two uploads of the same file through the helper at once (the same key, so the same
    /// upload): both end with the capability through the helper, neither falls back to a
    /// direct upload (one that finds the file being encoded waits for it).
    func testTheSameFileTwiceAtOnceThroughTheHelper() throws {
        let grid = try TestGrid(servers: 5)
        defer { grid.shutdown() }
        let (helper, address) = try startHelper(grid)
        defer { _ = helper.stop() }
        let node = try client(grid, "c1", helper: address)
        let data = pseudoRandom(12 << 20, seed: 45)
        let results = Mutex<[[String: String]]>([])
        let group = DispatchGroup()
        for _ in 0..<2 {
            group.enter()
            Thread {
                defer { group.leave() }
                guard let (st, out, err) = try? runGridCLI(["upload", "--node-dir", node, "--json", "-"], stdin: data) else { return }
                XCTAssertEqual(st, 0, err)
                if let r = (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: Any] {
                    let cap = r["cap"] as? String ?? "", via = r["helper"] as? String ?? "", problem = r["helper_problem"] as? String ?? ""
                    results.withLock { $0.append(["cap": cap, "helper": via, "helper_problem": problem]) }
                }
            }.start()
        }
        group.wait()
        let rs = results.withLock { $0 }
        XCTAssertEqual(rs.count, 2)
        XCTAssertEqual(Set(rs.compactMap { $0["cap"] }).count, 1, "one capability")
        for r in rs {
            XCTAssertNotEqual(r["helper"], "", "\(r)")
            XCTAssertEqual(r["helper_problem"], "", "\(r)")
        }
        try assertReadsBack(node, try XCTUnwrap(rs.first?["cap"]), data)
    }

    /// A client holding a wrong helper secret is refused at HELLO and uploads directly.
    func testWrongHelperSecretFallsBackToADirectUpload() throws {
        let grid = try TestGrid(servers: 5)
        defer { grid.shutdown() }
        let (helper, address) = try startHelper(grid)
        defer { _ = helper.stop() }
        var wrong = try IntroducerAddress(parsing: address)
        wrong.secret = SecureRandom.bytes(20)
        let node = try client(grid, "c1", helper: wrong.description)
        let data = pseudoRandom(100_000, seed: 44)
        let (st, out, err) = try run(["upload", "--node-dir", node, "-"], stdin: data)
        XCTAssertEqual(st, 0, err)
        XCTAssertTrue(err.contains("note: the upload helper"), err)
        try assertReadsBack(node, String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), data)
    }
}
