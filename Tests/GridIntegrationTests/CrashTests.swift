import Foundation
import GridCrypto
import GridFormat
import GridProtocol
import GridSystem
import GridTestSupport
import GridWire
import XCTest

/// A storage server killed (as kill -9 does) in the middle of changing a mutable share
/// leaves that share entirely old or entirely new once it starts again: never a mix.
final class CrashTests: XCTestCase {
    static let si = Array(SHA256.hash(Array("crash".utf8)).prefix(16))
    static let we = [UInt8](repeating: 9, count: 32)
    static let renew = [UInt8](repeating: 1, count: 32), cancel = [UInt8](repeating: 2, count: 32)
    var si: [UInt8] { Self.si }
    static let shareLength = 300_000
    /// Three regions a change writes: a version is visible in all three or in none.
    static let regions: [Range<Int>] = [1_000..<5_000, 150_000..<160_000, 290_000..<300_000]

    static func write(_ s: StorageClient, version v: UInt8, whole: Bool = false) async throws -> Bool {
        let writes: [WriteVector] = whole
            ? [WriteVector(offset: 0, data: [UInt8](repeating: v, count: Self.shareLength))]
            : Self.regions.map { WriteVector(offset: UInt64($0.lowerBound), data: [UInt8](repeating: v, count: $0.count)) }
        let req = SlotWriteRequest(storageIndex: Self.si, writeEnabler: Self.we, renewSecret: Self.renew, cancelSecret: Self.cancel,
                                   writes: [0: ShareWrite(tests: [], writes: writes)], readVector: [])
        return try await s.slotTestvAndReadvAndWritev(req).0
    }

    /// The version each region holds (reading the share in pieces).
    func versions(_ s: StorageClient) async throws -> [UInt8] {
        var out: [UInt8] = []
        for r in Self.regions {
            let got = try await s.slotReadv(SlotReadRequest(storageIndex: si, shareNumbers: [0],
                                                            readVector: [ReadVector(offset: UInt64(r.lowerBound), length: UInt64(r.count))]))
            let bytes = try XCTUnwrap(got[0]?.first)
            XCTAssertEqual(bytes.count, r.count)
            XCTAssertEqual(Set(bytes).count, 1, "region \(r) holds one version, not a mix")
            out.append(bytes.first ?? 0)
        }
        return out
    }

    func journals(_ grid: TestGrid) -> [String] {
        (try? FileSystem.list(grid.servers[0].directory + "/storage/journal")) ?? []
    }

    func testKilledDuringAMutableChangeLeavesItOldOrNew() async throws {
        let grid = try TestGrid(servers: 1)
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let announced = await sub.waitForServers(1, timeout: 15)
        var s = try await grid.storageClient(0, via: announced)
        let ok = try await Self.write(s, version: 1, whole: true)
        XCTAssertTrue(ok)
        var got = try await versions(s)
        XCTAssertEqual(got, [1, 1, 1])

        // Failpoints: killed with the journal on disk but nothing applied, then with the
        // first region applied and the rest not. Each time the restart finishes the change.
        for (point, version) in [("after-slot-journal", UInt8(2)), ("during-slot-change", UInt8(3))] {
            s.rpc.close()
            grid.servers[0].stop()
            try grid.servers[0].start(environment: ["GRID_CRASH_POINT": point])
            s = try await grid.storageClient(0, via: announced)
            do {
                _ = try await Self.write(s, version: version)
                XCTFail("\(point): the server should have died")
            } catch {}
            s.rpc.close()
            _ = grid.servers[0].stop()
            XCTAssertEqual(journals(grid).count, 1, "\(point): the change's journal is on disk")
            if point == "during-slot-change" {
                // The proof that the test bites: the share file itself is half changed.
                let file = try XCTUnwrap(FileSystem.readFile(grid.servers[0].directory + "/storage/shares/\(Base32.encode(si).prefix(2))/\(Base32.encode(si))/0", maxSize: 1 << 20))
                let at = 468 + Self.regions[0].lowerBound, late = 468 + Self.regions[2].lowerBound
                XCTAssertEqual(file[at], version)
                XCTAssertEqual(file[late], version - 1)
            }
            try grid.servers[0].start()
            s = try await grid.storageClient(0, via: announced)
            got = try await versions(s)
            XCTAssertEqual(got, [version, version, version], "\(point): the change was finished at start")
            XCTAssertEqual(journals(grid), [], "\(point): the journal is gone")
            XCTAssertTrue(grid.servers[0].log(tail: 40).contains("a crash interrupted"), grid.servers[0].log(tail: 5))
        }

        // A journal cut short (the crash came while it was being written) is discarded: the
        // share keeps the version it had.
        s.rpc.close()
        grid.servers[0].stop()
        try grid.servers[0].start(environment: ["GRID_CRASH_POINT": "after-slot-journal"])
        s = try await grid.storageClient(0, via: announced)
        _ = try? await Self.write(s, version: 4)
        s.rpc.close()
        _ = grid.servers[0].stop()
        let jpath = grid.servers[0].directory + "/storage/journal/" + (try XCTUnwrap(journals(grid).first))
        let full = try XCTUnwrap(FileSystem.readFile(jpath, maxSize: 1 << 20))
        try FileSystem.writeFileAtomically(jpath, Array(full.prefix(full.count - 100)))
        try grid.servers[0].start()
        s = try await grid.storageClient(0, via: announced)
        got = try await versions(s)
        XCTAssertEqual(got, [3, 3, 3], "a torn journal changes nothing")
        XCTAssertEqual(journals(grid), [])

        // Real kill -9 at random moments while a writer changes the share as fast as it can.
        var version: UInt8 = 10
        for round in 0..<4 {
            let writer = Task { [s] () -> UInt8 in
                var last: UInt8 = 0
                for v in UInt8(10 + round * 40)..<UInt8(50 + round * 40) {
                    guard (try? await CrashTests.write(s, version: v)) == true else { break }
                    last = v
                }
                return last
            }
            try await Task.sleep(nanoseconds: UInt64.random(in: 5_000_000...60_000_000))
            grid.servers[0].signal(ProcessSignal.kill)
            let lastAcknowledged = await writer.value
            s.rpc.close()
            _ = grid.servers[0].stop()
            try grid.servers[0].start()
            s = try await grid.storageClient(0, via: announced)
            let v = try await versions(s)
            XCTAssertEqual(Set(v).count, 1, "round \(round): one version in every region: \(v)")
            // What the server acknowledged survives (it synced before answering); at most
            // the one write in flight when it died may have landed as well.
            if lastAcknowledged > 0 {
                XCTAssertTrue(v[0] == lastAcknowledged || v[0] == lastAcknowledged + 1, "round \(round): \(v[0]) after \(lastAcknowledged)")
            }
            version = v[0]
            print("kill -9 round \(round): last acknowledged version \(lastAcknowledged), after restart \(v[0])")
        }
        XCTAssertGreaterThanOrEqual(version, 10)
        s.rpc.close()
    }
}
