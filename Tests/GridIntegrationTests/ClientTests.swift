import Dispatch
import Foundation
import GridClient
import GridCrypto
import GridFormat
import GridImmutable
import GridLocalGrid
import GridProtocol
import GridTestSupport
import GridWire
import GridSystem
import XCTest

/// Uploads and downloads through real storage daemons and a real introducer on 127.0.0.1.
final class ClientTests: XCTestCase {
    let secret = Array("grid client tests convergence!!!".utf8)

    func settings(_ grid: TestGrid, needed: Int = 3, happy: Int = 7, total: Int = 10, segment: Int = 1 << 20) -> ClientSettings {
        ClientSettings(introducer: grid.address,
                       encoding: ClientEncoding(needed: needed, happy: happy, total: total, maxSegmentSize: segment),
                       convergenceSecret: secret, leaseSecret: Array(repeating: 7, count: 32))
    }

    func pool(_ grid: TestGrid, servers: Int) async throws -> ServerPool {
        var cfg = RPCClientConfig()
        cfg.connectTimeout = 3
        cfg.callTimeout = 20
        let p = try ServerPool(introducer: grid.address, rpcConfig: cfg)
        let known = await p.waitForServers(count: servers, timeout: 30)
        XCTAssertEqual(known.count, servers, "all servers announced")
        return p
    }

    /// What `grid debug encode` produces for the same input: the capability and share data.
    func offline(_ data: [UInt8], _ s: ClientSettings) throws -> (Capability, [[UInt8]]) {
        let e = s.encoding
        let enc = try CHKEncoder(parameters: EncodingParameters(needed: e.needed, happy: e.happy, total: e.total, maxSegmentSize: e.maxSegmentSize))
        let sink = MemoryShareSink(shares: e.total)
        let r = try enc.encode(source: MemorySource(data), convergenceSecret: s.convergenceSecret, sink: sink)
        return (r.capability, sink.shares)
    }

    func download(_ d: Downloader, _ cap: Capability, offset: UInt64 = 0, length: UInt64? = nil) async throws -> [UInt8] {
        let sink = MemoryPlaintextSink()
        _ = try await d.download(cap, to: sink, offset: offset, length: length)
        return sink.bytes
    }

    func testSizesAndSegmentEdgesRoundTripWithTahoeCapabilities() async throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let p = try await pool(grid, servers: 10)
        defer { p.shutdown() }
        let s = settings(grid, segment: 3000)  // a multiple of k: segments are exactly 3000 bytes
        let up = Uploader(pool: p, settings: s, window: 64 << 10)
        let down = Downloader(pool: p)
        let seg = 3000
        let sizes = [0, 1, 55, 56, seg - 1, seg, seg + 1, 2 * seg - 1, 2 * seg, 2 * seg + 1, 10 * seg + 7]
        for size in sizes {
            let data = pseudoRandom(size, seed: UInt64(size) + 1)
            let r = try await up.upload(source: MemorySource(data))
            let (cap, shares) = try offline(data, s)
            XCTAssertEqual(r.capability, cap, "size \(size): same capability as grid debug encode")
            if size <= 55 {
                guard case .lit = r.capability else { return XCTFail("size \(size) should be LIT") }
                XCTAssertTrue(r.placement.isEmpty)
            } else {
                XCTAssertEqual(Set(r.placement.keys), Set(0..<10), "size \(size): every share placed")
                XCTAssertGreaterThanOrEqual(r.happiness, 7)
                // The servers hold exactly Tahoe's share bytes.
                if size == 2 * seg + 1, case let .chk(c) = r.capability {
                    let sub = grid.subscriber()
                    defer { sub.stop() }
                    let ann = await sub.waitForServers(10, timeout: 10)
                    for i in 0..<10 {
                        let sc = try await grid.storageClient(i, via: ann)
                        for (share, length) in try await sc.getBuckets(storageIndex: c.storageIndex) {
                            let got = try await sc.read(storageIndex: c.storageIndex, share: share, offset: 0, length: shares[share].count)
                            XCTAssertEqual(got, shares[share], "share \(share) on server\(i)")
                            XCTAssertEqual(length, UInt64(shares[share].count), "allocated exactly the share's size")
                        }
                        sc.rpc.close()
                    }
                }
            }
            let back = try await download(down, r.capability)
            XCTAssertEqual(back, data, "size \(size) round trip")
        }
    }

    func testRangesAtSegmentEdgesFetchOnlyWhatTheyNeed() async throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let p = try await pool(grid, servers: 10)
        defer { p.shutdown() }
        let seg = 3000
        let data = pseudoRandom(7 * seg + 123, seed: 99)
        let r = try await Uploader(pool: p, settings: settings(grid, segment: seg)).upload(source: MemorySource(data))
        let down = Downloader(pool: p)
        let ranges: [(Int, Int?)] = [(0, 1), (seg - 1, 2), (seg, seg), (seg - 1, seg + 2), (2 * seg + 5, 3 * seg),
                                     (data.count - 1, 1), (data.count - 10, nil), (0, nil), (data.count, nil), (5, 0)]
        for (off, len) in ranges {
            let got = try await download(down, r.capability, offset: UInt64(off), length: len.map(UInt64.init))
            let end = len.map { min(data.count, off + $0) } ?? data.count
            XCTAssertEqual(got, Array(data[off..<end]), "range \(off)+\(len.map(String.init) ?? "rest")")
        }
        do {
            _ = try await download(down, r.capability, offset: UInt64(data.count + 1))
            XCTFail("an offset past the end must fail")
        } catch {
            XCTAssertTrue("\(error)".contains("past the end"), "\(error)")
        }
    }

    func testDownloadSurvivesStoppedServersAndReportsCorruptShares() async throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let p = try await pool(grid, servers: 10)
        defer { p.shutdown() }
        let data = pseudoRandom(50_000, seed: 5)
        let r = try await Uploader(pool: p, settings: settings(grid, segment: 8192)).upload(source: MemorySource(data))
        guard case let .chk(cap) = r.capability else { return XCTFail("expected CHK") }

        // Corrupt share 0 (a block in the middle) where it lies on disk.
        let si = Base32.encode(cap.storageIndex)
        var corrupted: String?
        for i in 0..<10 {
            let path = "\(grid.root)/storage\(i)/storage/shares/\(si.prefix(2))/\(si)/0"
            if FileManager.default.fileExists(atPath: path) {
                let fh = try FileHandle(forUpdating: URL(fileURLWithPath: path))
                try fh.seek(toOffset: 12 + 0x44 + 100)
                try fh.write(contentsOf: Data(repeating: 0xEE, count: 16))
                try fh.close()
                corrupted = "server\(i)"
            }
        }
        XCTAssertNotNil(corrupted)
        let down = Downloader(pool: p)
        let sink = MemoryPlaintextSink()
        let res = try await down.download(r.capability, to: sink)
        XCTAssertEqual(sink.bytes, data, "the download switched away from the corrupt share")
        XCTAssertEqual(res.badShares.map(\.share), [0])
        XCTAssertEqual(res.badShares.first?.server, corrupted)
        XCTAssertEqual(res.corruptionReports, 1)
        XCTAssertNil(res.sharesUsed[0])
        let idx = Int(corrupted!.dropFirst(6))!
        let advisories = try FileManager.default.contentsOfDirectory(atPath: "\(grid.root)/storage\(idx)/storage/corruption-advisories")
        XCTAssertEqual(advisories.count, 1, "the server holding the corrupt share was told")

        // Stop n-k = 7 servers (the corrupt one among them): the 3 left still rebuild the file.
        let keep = (0..<10).filter { $0 != idx }.suffix(3)
        for i in 0..<10 where !keep.contains(i) { grid.servers[i].stop(SIGKILL) }
        let got = try await download(down, r.capability)
        XCTAssertEqual(got, data, "three servers are enough")
        // One more and the file is unavailable, with a plain message.
        grid.servers[keep.first!].stop(SIGKILL)
        do {
            _ = try await download(down, r.capability)
            XCTFail("two shares cannot rebuild a 3-of-10 file")
        } catch {
            XCTAssertTrue("\(error)".contains("needed") || "\(error)".contains("not enough"), "\(error)")
        }
    }

    func testServerKilledMidUploadIsReplaced() async throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let p = try await pool(grid, servers: 10)
        defer { p.shutdown() }
        let data = pseudoRandom(3 << 20, seed: 11)
        let killed = Atomic(false)
        let victim = grid.servers[4]
        let up = Uploader(pool: p, settings: settings(grid, segment: 64 << 10), window: 256 << 10)
        let r = try await up.upload(source: MemorySource(data)) { prog in
            if prog.phase == .uploading && prog.done > UInt64(data.count / 4) && !killed.value {
                killed.value = true
                victim.stop(SIGKILL)
            }
        }
        XCTAssertTrue(killed.value)
        XCTAssertEqual(Set(r.placement.keys), Set(0..<10), "the lost share was placed again")
        XCTAssertGreaterThanOrEqual(r.happiness, 7)
        let victimHeld = r.nicknames.filter { $0.value == "server4" }.keys
        for (_, ids) in r.placement { XCTAssertTrue(Set(ids).isDisjoint(with: victimHeld), "nothing counted on the dead server") }
        let got = try await download(Downloader(pool: p), r.capability)
        XCTAssertEqual(got, data)
    }

    func testUploadStopsCleanlyWhenHappinessIsLost() async throws {
        let grid = try TestGrid(servers: 8)
        defer { grid.shutdown() }
        let p = try await pool(grid, servers: 8)
        defer { p.shutdown() }
        let data = pseudoRandom(2 << 20, seed: 12)
        let killed = Atomic(false)
        let up = Uploader(pool: p, settings: settings(grid, segment: 64 << 10), window: 256 << 10)
        do {
            _ = try await up.upload(source: MemorySource(data)) { prog in
                if prog.phase == .uploading && prog.done > UInt64(data.count / 4) && !killed.value {
                    killed.value = true
                    grid.servers[0].stop(SIGKILL)
                    grid.servers[1].stop(SIGKILL)
                }
            }
            XCTFail("6 servers cannot satisfy happy = 7")
        } catch {
            XCTAssertTrue("\(error)".contains("happy"), "\(error)")
        }
        // Nothing half-written is visible on the servers that are left.
        let si = try TahoeHash.storageIndex(forKey: CHKEncoder(parameters: EncodingParameters(needed: 3, happy: 7, total: 10, maxSegmentSize: 64 << 10))
            .convergenceKey(source: MemorySource(data), secret: secret))
        let sub = grid.subscriber()
        defer { sub.stop() }
        let ann = await sub.waitForServers(6, timeout: 10)
        for i in 2..<8 {
            let sc = try await grid.storageClient(i, via: ann)
            let held = try await sc.getBuckets(storageIndex: si)
            XCTAssertEqual(held, [:], "server\(i) keeps no share of the failed upload")
            sc.rpc.close()
        }
    }

    func testNotEnoughServersGivesAPlainMessageAndDedupFindsShares() async throws {
        let grid = try TestGrid(servers: 4)
        defer { grid.shutdown() }
        let p = try await pool(grid, servers: 4)
        defer { p.shutdown() }
        let data = pseudoRandom(10_000, seed: 3)
        do {
            _ = try await Uploader(pool: p, settings: settings(grid)).upload(source: MemorySource(data))
            XCTFail("4 servers cannot satisfy happy = 7")
        } catch {
            let m = "\(error)"
            XCTAssertTrue(m.contains("4") && m.contains("happy"), m)
            XCTAssertLessThan(m.count, 400, "one or two sentences, not a wall of text: \(m)")
        }
        // With happy = 4 the same grid works; a second upload finds every share in place.
        let s = settings(grid, happy: 4)
        let first = try await Uploader(pool: p, settings: s).upload(source: MemorySource(data))
        XCTAssertEqual(first.happiness, 4)
        XCTAssertEqual(first.sharesAlreadyPresent, 0)
        XCTAssertTrue(first.oneFlight, "a small new file goes in the census's flight")
        // Small enough for one flight: the shares go out before the census says they are
        // there; the servers refuse them (counted as sent), and nothing changes.
        let second = try await Uploader(pool: p, settings: s).upload(source: MemorySource(data))
        XCTAssertEqual(second.capability, first.capability)
        XCTAssertEqual(second.sharesAlreadyPresent, 10)
        XCTAssertFalse(second.oneFlight)
        XCTAssertGreaterThan(second.bytesSent, 0)
        XCTAssertLessThanOrEqual(second.bytesSent, first.bytesSent)
        // With one flight off, the census comes first and nothing is sent again.
        var careful = s
        careful.oneFlightMaxBytes = 0
        let third = try await Uploader(pool: p, settings: careful).upload(source: MemorySource(data))
        XCTAssertEqual(third.capability, first.capability)
        XCTAssertEqual(third.sharesAlreadyPresent, 10)
        XCTAssertEqual(third.bytesSent, 0, "nothing is sent again")
        XCTAssertFalse(third.oneFlight)
        let got = try await download(Downloader(pool: p), first.capability)
        XCTAssertTrue(got == data)
    }

    /// A small new file: allocation, writes and closes in one flight with the census
    /// (protocol 3), one share on each of the ten servers, byte for byte what the offline
    /// encoder makes; two clients racing to upload the same small file both succeed.
    func testSmallNewFilesGoInOneFlight() async throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let p = try await pool(grid, servers: 10)
        defer { p.shutdown() }
        let s = settings(grid, segment: 128 << 10)
        let data = pseudoRandom(1 << 20, seed: 41)
        let r = try await Uploader(pool: p, settings: s).upload(source: MemorySource(data))
        XCTAssertTrue(r.oneFlight)
        XCTAssertEqual(r.happiness, 10)
        XCTAssertEqual(r.placement.count, 10)
        XCTAssertEqual(Set(r.placement.values.flatMap { $0 }).count, 10)
        let (cap, shares) = try offline(data, s)
        XCTAssertEqual(r.capability, cap)
        XCTAssertEqual(r.bytesSent, UInt64(shares.reduce(0) { $0 + $1.count }))
        let got = try await download(Downloader(pool: p), r.capability)
        XCTAssertTrue(got == data)
        // A fresh client reads it from the k servers holding shares 0..k-1 (their shares came
        // whole with the census) and connects to no other.
        let reader = try await pool(grid, servers: 10)
        defer { reader.shutdown() }
        let fresh = try await download(Downloader(pool: reader), r.capability)
        XCTAssertTrue(fresh == data)
        XCTAssertEqual(reader.statuses().filter(\.connected).count, 3, "\(reader.statuses().map { ($0.server.nickname, $0.connected) })")
        // Over the limit: the census first, as before.
        let big = pseudoRandom(2 << 20, seed: 42)
        let rb = try await Uploader(pool: p, settings: s).upload(source: MemorySource(big))
        XCTAssertFalse(rb.oneFlight)
        XCTAssertEqual(rb.happiness, 10)
        let gotBig = try await download(Downloader(pool: p), rb.capability)
        XCTAssertTrue(gotBig == big)
        // Two clients, one small file, at once: one of them finds the other's buckets
        // (in progress or held) and falls back; both end with the same good capability.
        for round in 0..<3 {
            let (p1, p2) = (try await pool(grid, servers: 10), try await pool(grid, servers: 10))
            defer { p1.shutdown(); p2.shutdown() }
            var s2 = s
            s2.leaseSecret = Array(repeating: 9, count: 32)
            let bytes = pseudoRandom(300_000, seed: UInt64(50 + round))
            async let a = Uploader(pool: p1, settings: s).upload(source: MemorySource(bytes))
            async let b = Uploader(pool: p2, settings: s2).upload(source: MemorySource(bytes))
            let (r1, r2) = try await (a, b)
            XCTAssertEqual(r1.capability, r2.capability, "round \(round)")
            XCTAssertGreaterThanOrEqual(min(r1.happiness, r2.happiness), 7, "round \(round)")
            let got = try await download(Downloader(pool: p2), r1.capability)
            XCTAssertTrue(got == bytes, "round \(round)")
        }
    }
}

extension ClientTests {
    /// Two clients upload the same file at the same moment (same convergence secret, so
    /// the same storage index, each with its own lease secret): the server tells each
    /// which shares the other is writing, each waits for those, and both succeed with the
    /// same capability. (The second used to fail with "start more servers".)
    func testTwoClientsUploadingTheSameFileAtOnce() async throws {
        let grid = try TestGrid(servers: 10)
        defer { grid.shutdown() }
        let data = pseudoRandom(3 << 20, seed: 21)
        var waited = 0
        for round in 0..<3 {
            let (p1, p2) = (try await pool(grid, servers: 10), try await pool(grid, servers: 10))
            defer { p1.shutdown(); p2.shutdown() }
            var s2 = settings(grid)
            s2.leaseSecret = Array(repeating: 9, count: 32)
            let bytes = data + [UInt8(round)]
            let up1 = Uploader(pool: p1, settings: settings(grid), window: 256 << 10)
            let up2 = Uploader(pool: p2, settings: s2, window: 256 << 10)
            async let a = up1.upload(source: MemorySource(bytes))
            async let b = up2.upload(source: MemorySource(bytes))
            let (r1, r2) = try await (a, b)
            XCTAssertEqual(r1.capability, r2.capability, "round \(round)")
            XCTAssertGreaterThanOrEqual(min(r1.happiness, r2.happiness), 7, "round \(round)")
            let got = try await download(Downloader(pool: p1), r1.capability)
            XCTAssertTrue(got == bytes, "round \(round): every byte verifies")
            waited += r1.sharesWrittenByOthers + r2.sharesWrittenByOthers
        }
        XCTAssertGreaterThan(waited, 0, "the uploads really did race for the same shares")
    }
}

extension ClientTests {
    /// A server stopped with SIGSTOP mid-transfer (alive to TCP, silent to everything)
    /// no longer holds a transfer up for the 45 s liveness timeout: the upload drops it
    /// after its stall timeout and re-places its shares, the download reads around it.
    /// (Figures: `grid bench stall`. The bound here is only "no long stall".)
    func testStoppedServersDoNotStallTransfers() async throws {
        let grid = try TestGrid(servers: 10)
        defer { for s in grid.servers { s.signal(ProcessSignal.resume) }; grid.shutdown() }
        let p = try await pool(grid, servers: 10)
        defer { p.shutdown() }
        let data = pseudoRandom(8 << 20, seed: 31)
        let coding = CodingOptions(stallTimeout: 1.0)
        let up = Uploader(pool: p, settings: settings(grid, segment: 256 << 10), window: 1 << 20, coding: coding)
        // Stop a server a third of the way through the push (decided by the upload's own
        // progress, so it is mid-transfer however fast the machine is).
        let victim = grid.servers[3]
        let stoppedOnce = Atomic(false)
        var t = monotonicNow()
        let r = try await up.upload(source: MemorySource(data)) { p in
            if p.phase == .uploading && p.done > p.total / 3 && !stoppedOnce.value {
                stoppedOnce.value = true
                victim.signal(ProcessSignal.stop)
            }
        }
        let upSeconds = monotonicNow() - t
        XCTAssertTrue(stoppedOnce.value, "the server was stopped mid-upload")
        XCTAssertLessThan(upSeconds, 20, "the upload waited out the stopped server")
        XCTAssertGreaterThanOrEqual(r.happiness, 7)
        victim.signal(ProcessSignal.resume)
        // A server stopped before the upload: the census does not wait for it either.
        victim.signal(ProcessSignal.stop)
        t = monotonicNow()
        let r2 = try await up.upload(source: MemorySource(data + [1]))
        XCTAssertLessThan(monotonicNow() - t, 20, "the census waited out the stopped server")
        XCTAssertGreaterThanOrEqual(r2.happiness, 7)
        victim.signal(ProcessSignal.resume)
        // Download with the server holding share 0 stopped.
        let holder = try XCTUnwrap(r.placement[0]?.first)
        let nick = try XCTUnwrap(r.nicknames[holder])
        let stopped = try XCTUnwrap(grid.servers.first { $0.directory.hasSuffix("/" + nick.replacingOccurrences(of: "server", with: "storage")) })
        stopped.signal(ProcessSignal.stop)
        t = monotonicNow()
        let got = try await download(Downloader(pool: p, coding: coding), r.capability)
        XCTAssertLessThan(monotonicNow() - t, 20, "the download waited out the stopped server")
        XCTAssertTrue(got == data, "every byte verifies")
        stopped.signal(ProcessSignal.resume)
    }
}

/// A flag shared with a progress callback.
final class Atomic<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return v }
        set { lock.lock(); v = newValue; lock.unlock() }
    }
    func withLock<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&v) }
}
