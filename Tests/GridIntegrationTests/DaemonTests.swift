import Foundation
import GridCrypto
import GridFormat
import GridIntroducer
import GridProtocol
import GridTestSupport
import GridWire
import GridSystem
import Synchronization
import XCTest

/// Real `grid introducer run` and `grid storage run` processes on 127.0.0.1, driven
/// through real sockets.
final class DaemonTests: XCTestCase {
    let si = Array(SHA256.hash(Array("integration".utf8)).prefix(16))
    let renew = [UInt8](repeating: 1, count: 32), cancel = [UInt8](repeating: 2, count: 32)

    func expectError(_ code: WireError.Code, _ fragment: String = "", _ body: () async throws -> Void, line: UInt = #line) async {
        do {
            try await body()
            XCTFail("expected \(code)", line: line)
        } catch let e as WireError {
            XCTAssertEqual(e.code, code, e.message, line: line)
            if !fragment.isEmpty { XCTAssertTrue(e.message.contains(fragment), "'\(e.message)' lacks '\(fragment)'", line: line) }
        } catch {
            XCTFail("\(error)", line: line)
        }
    }

    /// Runs `body` with a one-server grid, a subscriber and a storage client; then stops them.
    func withOneServer(_ body: (TestGrid, IntroducerSubscriber, StorageClient) async throws -> Void) async throws {
        let grid = try TestGrid(servers: 1)
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let s = try await grid.storageClient(0, via: await sub.waitForServers(1, timeout: 15))
        defer { s.rpc.close() }
        try await body(grid, sub, s)
    }

    /// An introducer's list that repeats the bytes a client seeded from its cache is not
    /// checked again (an Ed25519 verification per server and per command); an announcement
    /// whose bytes differ (here a damaged cached one, refused at seeding) is.
    func testSeededAnnouncementsAreNotCheckedTwice() async throws {
        let grid = try TestGrid(servers: 3)
        defer { grid.shutdown() }
        func confirmed(_ sub: IntroducerSubscriber) async throws -> [SignedAnnouncement] {
            for _ in 0..<200 {
                if let list = sub.confirmedSigned, list.count == 3 { return list }
                try await Task.sleep(nanoseconds: 25_000_000)
            }
            throw WireError(.timeout, "the introducer's list did not arrive")
        }
        let first = grid.subscriber()
        let list = try await confirmed(first)
        first.stop()
        var cached = list
        cached[0].signature[5] ^= 1
        let second = grid.subscriber()
        defer { second.stop() }
        second.seed(cached)
        XCTAssertEqual(second.current.count, 2, "the damaged announcement is refused")
        XCTAssertEqual(second.signatureChecks, 3)
        let again = try await confirmed(second)
        XCTAssertEqual(Set(again.map(\.signature)), Set(list.map(\.signature)))
        XCTAssertEqual(second.current.count, 3)
        XCTAssertEqual(second.signatureChecks, 4, "only the announcement that differed from the seeded bytes is checked again")
    }

    /// Sends everything before awaiting any reply: `first` (e.g. the allocation), then
    /// `data`'s writes to bucket `h` (last piece first, so a close that overtook them would
    /// find the share incomplete), `extra`, and the close. Returns every reply after
    /// `first`'s, in the order they came.
    func pushAndClose(_ s: StorageClient, _ h: UInt64, _ data: [UInt8], piece: Int, extra: (UInt64, [UInt8])? = nil,
                      first: (() -> Void)? = nil) async -> [Result<Void, Error>] {
        await withCheckedContinuation { (cont: CheckedContinuation<[Result<Void, Error>], Never>) in
            let results = Mutex<[Result<Void, Error>]>([])
            let expected = data.count / piece + (extra == nil ? 1 : 2)
            @Sendable func record(_ r: Result<Void, Error>) {
                let all = results.withLock { $0.append(r); return $0 }
                if all.count == expected { cont.resume(returning: all) }
            }
            first?()
            for off in stride(from: data.count - piece, through: 0, by: -piece) {
                data.withUnsafeBytes { d in
                    s.write(bucket: h, offset: UInt64(off), data: UnsafeRawBufferPointer(rebasing: d[off..<(off + piece)])) { e in
                        record(e.map { .failure($0) } ?? .success(()))
                    }
                }
            }
            if let (off, bytes) = extra {
                bytes.withUnsafeBytes { b in
                    s.write(bucket: h, offset: off, data: b) { e in record(e.map { .failure($0) } ?? .success(())) }
                }
            }
            s.close(bucket: h) { e in record(e.map { .failure($0) } ?? .success(())) }
        }
    }

    static func failures(_ results: [Result<Void, Error>]) -> [Error] {
        results.compactMap { if case let .failure(e) = $0 { return e } else { return nil } }
    }

    /// Protocol 3: an allocation under client-named handles, its writes and its close, all
    /// sent before any reply, give a whole share (the server runs a group's requests in
    /// order); a share the server already holds gets no writer, so writes to its name fail
    /// and leave it as it was; a name still open on the connection cannot be taken again.
    func testNamedBucketsAreWrittenInTheAllocationsFlight() async throws {
        try await withOneServer { _, _, s in
            XCTAssertEqual(s.rpc.protocolVersion, Hello.namedBucketsVersion)
            let size = 1 << 20, piece = 64 << 10
            let data = pseudoRandom(size, seed: 37)
            func named(_ group: UInt32, _ shares: [Int]) -> AllocateNamedRequest {
                AllocateNamedRequest(group: group, allocation: AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel,
                                                                               shareNumbers: shares, allocatedSize: UInt64(size)))
            }
            let answer = Mutex<Result<AllocateResponse, Error>?>(nil)
            // Ninety more buckets make the allocation slow (each is a file), so writes that
            // overtook it would find no bucket; they are aborted afterwards.
            let first = named(7, [0, 1] + Array(10..<100))
            for sh in [1, 0] {
                let results = await pushAndClose(s, first.handles[sh]!, data, piece: piece, first: sh == 0 ? nil : {
                    s.allocate(first) { r in answer.withLock { $0 = r } }
                })
                XCTAssertEqual(Self.failures(results).count, 0, "share \(sh): \(results)")
            }
            guard case let .success(resp)? = answer.withLock({ $0 }) else { return XCTFail("\(String(describing: answer.withLock { $0 }))") }
            XCTAssertEqual(resp.writers, first.handles)
            XCTAssertEqual(resp.writers[1], NamedBucket.handle(group: 7, share: 1))
            for sh in 10..<100 { try await s.abort(bucket: first.handles[sh]!) }
            do { let held = try await s.getBuckets(storageIndex: si); XCTAssertEqual(held, [0: UInt64(size), 1: UInt64(size)]) }
            for sh in [0, 1] {
                let back = try await s.read(storageIndex: si, share: sh, offset: 0, length: size)
                XCTAssertEqual(back, data, "share \(sh)")
            }
            // Share 0 is held: no writer for it, and writes to its name are refused.
            let again = named(8, [0, 2])
            let other = pseudoRandom(size, seed: 38)
            let refused = await pushAndClose(s, again.handles[0]!, other, piece: piece, first: {
                s.allocate(again) { r in answer.withLock { $0 = r } }
            })
            XCTAssertEqual(Self.failures(refused).compactMap { ($0 as? WireError)?.code }, Array(repeating: .notFound, count: size / piece + 1))
            guard case let .success(resp2)? = answer.withLock({ $0 }) else { return XCTFail("no answer") }
            XCTAssertEqual(resp2.alreadyHave, [0])
            XCTAssertEqual(resp2.writers, [2: NamedBucket.handle(group: 8, share: 2)])
            let got = try await s.read(storageIndex: si, share: 0, offset: 0, length: size)
            XCTAssertTrue(got == data, "share 0 untouched")
            // Group 8's share 2 is still open: its name cannot be taken again.
            await expectError(.conflict, "still open") { _ = try await s.call(named(8, [2])) }
            try await s.abort(bucket: NamedBucket.handle(group: 8, share: 2))
            do { let held = try await s.getBuckets(storageIndex: si); XCTAssertEqual(held, [0: UInt64(size), 1: UInt64(size)]) }
        }
    }

    /// Protocol 2: a bucket's close sent right behind its writes, without waiting for
    /// their replies, runs after them (the server orders a bucket's requests), so the
    /// share is whole; a close behind a refused write is refused and leaves no share.
    func testCloseRightBehindItsWritesRunsAfterThem() async throws {
        try await withOneServer { _, _, s in
            XCTAssertGreaterThanOrEqual(s.rpc.protocolVersion, Hello.orderedBucketsVersion)
            let size = 2 << 20, piece = 64 << 10
            let data = pseudoRandom(size, seed: 31)
            let alloc = try await s.allocateBuckets(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel,
                                                                    shareNumbers: [0, 1, 2], allocatedSize: UInt64(size)))
            for sh in [0, 1] {
                let results = await pushAndClose(s, alloc.writers[sh]!, data, piece: piece)
                XCTAssertEqual(results.filter { if case .failure = $0 { return true } else { return false } }.count, 0, "share \(sh): \(results)")
            }
            let held = try await s.getBuckets(storageIndex: si)
            XCTAssertEqual(held, [0: UInt64(size), 1: UInt64(size)])
            for sh in [0, 1] {
                var back: [UInt8] = []
                for off in stride(from: 0, to: size, by: 1 << 19) {
                    back += try await s.read(storageIndex: si, share: sh, offset: UInt64(off), length: 1 << 19)
                }
                XCTAssertEqual(back, data, "share \(sh)")
            }
            // A write past the allocation is refused, and so is the close behind it.
            let results = await pushAndClose(s, alloc.writers[2]!, data, piece: piece, extra: (UInt64(size - 1), [1, 2]))
            let failures = results.compactMap { r -> WireError? in if case let .failure(e) = r { return e as? WireError } else { return nil } }
            XCTAssertEqual(failures.map(\.code).sorted { $0.rawValue < $1.rawValue }, [.badRequest, .conflict].sorted { $0.rawValue < $1.rawValue }, "\(results)")
            XCTAssertTrue(failures.contains { $0.message.contains("an earlier write was refused") }, "\(failures)")
            let after = try await s.getBuckets(storageIndex: si)
            XCTAssertEqual(after, [0: UInt64(size), 1: UInt64(size)], "no share 2 after a refused write")
        }
    }

    func testServersAnnounceAndImmutableCallsWork() async throws {
        let grid = try TestGrid(servers: 3)
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let seen = await sub.waitForServers(3, timeout: 15)
        XCTAssertEqual(Set(seen.values.map(\.nickname)), ["server0", "server1", "server2"])
        let s = try await grid.storageClient(0, via: seen)

        let v = try await s.getVersion()
        XCTAssertEqual(v.protocolVersion, Hello.currentVersion)
        XCTAssertGreaterThan(v.availableSpace, 0)
        XCTAssertEqual(v.immutableShares, 0)

        let data = pseudoRandom(5000, seed: 9)
        let alloc = try await s.allocateBuckets(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel, shareNumbers: [0, 1, 2], allocatedSize: 5000))
        XCTAssertEqual(alloc.alreadyHave, [])
        XCTAssertEqual(alloc.writers.keys.sorted(), [0, 1, 2])
        // Many writes in flight at once on one connection.
        try await withThrowingTaskGroup(of: Void.self) { g in
            for (_, h) in alloc.writers {
                for off in stride(from: 0, to: 5000, by: 500) {
                    g.addTask { try await s.write(bucket: h, offset: UInt64(off), data: Array(data[off..<(off + 500)])) }
                }
            }
            try await g.waitForAll()
        }
        let none = try await s.getBuckets(storageIndex: si)
        XCTAssertEqual(none, [:], "nothing is visible before close")
        for (_, h) in alloc.writers where h != alloc.writers[2] { try await s.close(bucket: h) }
        try await s.abort(bucket: alloc.writers[2]!)
        let buckets = try await s.getBuckets(storageIndex: si)
        XCTAssertEqual(buckets, [0: 5000, 1: 5000])
        let back = try await s.read(storageIndex: si, share: 1, offset: 1000, length: 2000)
        XCTAssertEqual(back, Array(data[1000..<3000]))
        let again = try await s.allocateBuckets(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel, shareNumbers: [0, 1, 2], allocatedSize: 5000))
        XCTAssertEqual(again.alreadyHave, [0, 1])
        XCTAssertEqual(again.writers.keys.sorted(), [2])
        let h2 = again.writers[2]!

        // Error paths, each a clear error on a connection that keeps working.
        await expectError(.badRequest, "exceeds the allocated size") { try await s.write(bucket: h2, offset: 4999, data: [1, 2]) }
        try await s.write(bucket: h2, offset: 0, data: [1, 2, 3])
        await expectError(.conflict, "differs") { try await s.write(bucket: h2, offset: 1, data: [9]) }
        await expectError(.notFound, "no open bucket writer") { try await s.write(bucket: 999_999, offset: 0, data: [1]) }
        await expectError(.badRequest, "past the end") { _ = try await s.read(storageIndex: si, share: 0, offset: 4990, length: 20) }
        await expectError(.notFound, "no share 7") { _ = try await s.read(storageIndex: si, share: 7, offset: 0, length: 1) }
        await expectError(.unknownMethod) { _ = try await s.rpc.call(200, []) }
        await expectError(.badFrame) { _ = try await s.rpc.call(StorageMethod.allocateBuckets.rawValue, [1, 2, 3]) }
        try await s.abort(bucket: h2)

        // Leases: a wrong secret is refused; a right one works.
        let wrong = [UInt8](repeating: 0xee, count: 32)
        await expectError(.badSecret, "renew secret") { try await s.renewLease(storageIndex: si, renewSecret: wrong) }
        await expectError(.badSecret, "cancel secret") { try await s.cancelLease(storageIndex: si, cancelSecret: wrong) }
        try await s.renewLease(storageIndex: si, renewSecret: renew)
        try await s.addLease(storageIndex: si, renewSecret: wrong, cancelSecret: wrong)
        try await s.cancelLease(storageIndex: si, cancelSecret: cancel)
        let stillThere = try await s.getBuckets(storageIndex: si)
        XCTAssertEqual(stillThere.count, 2, "the other lease keeps the shares")
        // Two reports of one share at once: two records (they overwrote each other before).
        try await s.adviseCorruptShare(mutable: false, storageIndex: si, share: 0, reason: "test advisory")
        try await s.adviseCorruptShare(mutable: false, storageIndex: si, share: 0, reason: "test advisory again")
        let advisories = try FileManager.default.contentsOfDirectory(atPath: grid.servers[0].directory + "/storage/corruption-advisories")
        XCTAssertEqual(advisories.count, 2)
        let v2 = try await s.getVersion()
        XCTAssertEqual(v2.immutableShares, 2)
        XCTAssertEqual(v2.usedSpace, 10_000)
        s.rpc.close()
    }

    func testMutableSlotsAndWriteEnabler() async throws {
        let grid = try TestGrid(servers: 1)
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let s = try await grid.storageClient(0, via: await sub.waitForServers(1, timeout: 15))
        let we = [UInt8](repeating: 5, count: 32)
        func req(_ writes: [Int: ShareWrite], we: [UInt8], readv: [ReadVector] = []) -> SlotWriteRequest {
            SlotWriteRequest(storageIndex: si, writeEnabler: we, renewSecret: renew, cancelSecret: cancel, writes: writes, readVector: readv)
        }
        let (ok, _) = try await s.slotTestvAndReadvAndWritev(req([0: ShareWrite(tests: [TestVector(offset: 0, length: 1, op: .eq, specimen: [])],
                                                                                 writes: [WriteVector(offset: 0, data: Array("v1".utf8))])], we: we))
        XCTAssertTrue(ok)
        let (ok2, old) = try await s.slotTestvAndReadvAndWritev(req([0: ShareWrite(tests: [TestVector(offset: 0, length: 2, op: .eq, specimen: Array("v0".utf8))],
                                                                                  writes: [WriteVector(offset: 0, data: Array("v2".utf8))])],
                                                                    we: we, readv: [ReadVector(offset: 0, length: 2)]))
        XCTAssertFalse(ok2)
        XCTAssertEqual(old[0], [Array("v1".utf8)])
        let reads = try await s.slotReadv(SlotReadRequest(storageIndex: si, shareNumbers: [], readVector: [ReadVector(offset: 0, length: 10)]))
        XCTAssertEqual(reads, [0: [Array("v1".utf8)]])
        let serverKey = await sub.waitForServers(1, timeout: 5).values.first!.publicKey
        let recorder = Base32.encode(Array(SHA256.hash(serverKey.bytes).prefix(20)))
        await expectError(.badSecret, "recorded by nodeid '\(recorder)'") {
            _ = try await s.slotTestvAndReadvAndWritev(req([0: ShareWrite(writes: [WriteVector(offset: 0, data: [0])])], we: [UInt8](repeating: 6, count: 32)))
        }
        s.rpc.close()
    }

    /// Offsets and lengths at the edges of 64-bit arithmetic, and requests that mix the
    /// two kinds of share, are refused with a protocol error; the daemon keeps serving.
    /// (Each of these crashed, stalled or destroyed data before.)
    func testHostileOffsetsAndKindsAreRefusedNotFatal() async throws {
        try await withOneServer { grid, sub, s in
            let alloc = try await s.allocateBuckets(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel,
                                                                    shareNumbers: [0, 1], allocatedSize: 100))
            let h = try XCTUnwrap(alloc.writers[0]), hostile = try XCTUnwrap(alloc.writers[1])
            await expectError(.badRequest, "exceeds the allocated size") { try await s.write(bucket: hostile, offset: UInt64.max, data: [1]) }
            await expectError(.badRequest, "exceeds the allocated size") { try await s.write(bucket: hostile, offset: UInt64.max - 1, data: [1, 2, 3]) }
            try await s.write(bucket: hostile, offset: 0, data: [UInt8](repeating: 7, count: 100))
            // A bucket that refused a write is never closed into a share (protocol 2 lets a
            // close arrive before the client has seen its writes' replies).
            await expectError(.conflict, "an earlier write was refused") { try await s.close(bucket: hostile) }
            try await s.write(bucket: h, offset: 0, data: [UInt8](repeating: 7, count: 100))
            try await s.close(bucket: h)
            let held = try await s.getBuckets(storageIndex: si)
            XCTAssertEqual(held, [0: 100])
            await expectError(.badRequest) { _ = try await s.read(storageIndex: si, share: 0, offset: UInt64.max, length: 10) }

            let slot = Array(SHA256.hash(Array("slot".utf8)).prefix(16)), we = [UInt8](repeating: 5, count: 32)
            func write(_ w: ShareWrite, readv: [ReadVector] = [], si: [UInt8]? = nil) async throws -> (Bool, [Int: [[UInt8]]]) {
                try await s.slotTestvAndReadvAndWritev(SlotWriteRequest(storageIndex: si ?? slot, writeEnabler: we, renewSecret: renew,
                                                                        cancelSecret: cancel, writes: [0: w], readVector: readv))
            }
            await expectError(.badRequest, "runs past 2^64") { _ = try await write(ShareWrite(writes: [WriteVector(offset: UInt64.max, data: [1])])) }
            await expectError(.badRequest) { _ = try await write(ShareWrite(newLength: UInt64.max)) }
            _ = try await write(ShareWrite(writes: [WriteVector(offset: 0, data: [UInt8](repeating: 1, count: 9000))]))
            // Read ranges that overflow mean "to the end"; tests with them compare, never trap.
            let (ok, reads) = try await write(ShareWrite(tests: [TestVector(offset: UInt64.max, length: UInt64.max, op: .eq, specimen: [])]),
                                              readv: [ReadVector(offset: 10, length: UInt64.max), ReadVector(offset: UInt64.max, length: 1)])
            XCTAssertTrue(ok)
            XCTAssertEqual(reads[0]?.map(\.count), [8990, 0])
            // A reply may not ask the server for gigabytes.
            await expectError(.badRequest, "one reply carries at most") {
                _ = try await s.slotReadv(SlotReadRequest(storageIndex: slot, shareNumbers: [],
                                                          readVector: Array(repeating: ReadVector(offset: 0, length: 9000), count: 1024)))
            }
            // An immutable share is not a slot's, and a slot's share is not a bucket's.
            await expectError(.conflict, "immutable") { _ = try await write(ShareWrite(writes: [WriteVector(offset: 0, data: [1])]), si: si) }
            await expectError(.notFound, "mutable") { _ = try await s.read(storageIndex: slot, share: 0, offset: 0, length: 1) }
            let again = try await s.allocateBuckets(AllocateRequest(storageIndex: slot, renewSecret: renew, cancelSecret: cancel,
                                                                    shareNumbers: [0], allocatedSize: 10))
            XCTAssertEqual(again.writers.count, 0, "no writer may replace a mutable share")
            let intact = try await s.read(storageIndex: si, share: 0, offset: 0, length: 100)
            XCTAssertEqual(intact, [UInt8](repeating: 7, count: 100))
            XCTAssertTrue(grid.servers[0].isRunning, grid.servers[0].log(tail: 10))
            _ = try await s.getVersion()
            s.rpc.close()
        }
    }

    /// A node directory serves one daemon at a time, of its own kind: a second `grid storage
    /// run` on a live node changes nothing (it used to wipe the live server's uploads in
    /// progress), and no daemon runs on another kind of node.
    func testNodeDirectoriesAreLockedAndTyped() async throws {
        try await withOneServer { grid, sub, s in
            let alloc = try await s.allocateBuckets(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel,
                                                                    shareNumbers: [3], allocatedSize: 1000))
            let h = try XCTUnwrap(alloc.writers[3])
            try await s.write(bucket: h, offset: 0, data: [UInt8](repeating: 9, count: 500))
            let dir = grid.servers[0].directory
            let (st, err) = try runGridErrors(["storage", "run", dir])
            XCTAssertEqual(st, 75, err)
            XCTAssertTrue(err.contains("already in use") && err.contains("pid \(grid.servers[0].pid!)"), err)
            // The first server's upload in progress is intact: it finishes and reads back.
            try await s.write(bucket: h, offset: 500, data: [UInt8](repeating: 9, count: 500))
            try await s.close(bucket: h)
            let back = try await s.read(storageIndex: si, share: 3, offset: 0, length: 1000)
            XCTAssertEqual(back, [UInt8](repeating: 9, count: 1000))
            s.rpc.close()
            // Each daemon only on its own kind of node.
            let (st2, err2) = try runGridErrors(["introducer", "run", dir])
            XCTAssertEqual(st2, 64, err2)
            XCTAssertTrue(err2.contains("is a storage node, not an introducer node"), err2)
            let client = grid.root + "/client"
            _ = try runGrid(["client", "create", client, "--introducer", grid.address.description])
            let (st3, err3) = try runGridErrors(["storage", "run", client])
            XCTAssertEqual(st3, 64, err3)
            XCTAssertTrue(err3.contains("is a client node, not a storage node"), err3)
            XCTAssertFalse(FileSystem.exists(client + "/storage"), "nothing was created in the client's directory")
        }
    }

    /// A share copied into a stopped server's storage directory by hand counts (for space,
    /// stats and lease expiry) once `grid storage reindex` has run.
    func testReindexPicksUpCopiedShares() async throws {
        let grid = try TestGrid(servers: 2)
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let announced = await sub.waitForServers(2, timeout: 15)
        let s0 = try await grid.storageClient(0, via: announced)
        let alloc = try await s0.allocateBuckets(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel,
                                                                 shareNumbers: [0], allocatedSize: 1000))
        try await s0.write(bucket: try XCTUnwrap(alloc.writers[0]), offset: 0, data: [UInt8](repeating: 3, count: 1000))
        try await s0.close(bucket: alloc.writers[0]!)
        s0.rpc.close()
        XCTAssertEqual(grid.servers[1].stop(), 0)
        let name = Base32.encode(si)
        let from = grid.servers[0].directory + "/storage/shares/\(name.prefix(2))/\(name)/0"
        let toDir = grid.servers[1].directory + "/storage/shares/\(name.prefix(2))/\(name)"
        try FileSystem.makeDirectories(toDir)
        try FileManager.default.copyItem(atPath: from, toPath: toDir + "/0")
        let (st, out) = try runGrid(["storage", "reindex", grid.servers[1].directory])
        XCTAssertEqual(st, 0)
        XCTAssertTrue(out.contains("indexed 1 share"), out)
        try grid.servers[1].start()
        let s1 = try await grid.storageClient(1, via: announced)
        let v = try await s1.getVersion()
        XCTAssertEqual(v.immutableShares, 1, "the copied share is indexed")
        XCTAssertEqual(v.usedSpace, 1000)
        s1.rpc.close()
    }

    /// An upload cut off by a lost connection, a clean shutdown, or kill -9 leaves no
    /// partial share visible, and the server comes back without leftovers.
    func testInterruptedUploadsLeaveNothingBehind() async throws {
        let grid = try TestGrid(servers: 1)
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let server = grid.servers[0]
        for how in ["disconnect", "SIGTERM", "SIGKILL"] {
            let s = try await grid.storageClient(0, via: await sub.waitForServers(1, timeout: 15))
            let a = try await s.allocateBuckets(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel, shareNumbers: [4], allocatedSize: 100_000))
            try await s.write(bucket: a.writers[4]!, offset: 0, data: pseudoRandom(60_000, seed: 1))
            switch how {
            case "disconnect":
                s.rpc.close()
                try await Task.sleep(nanoseconds: 300_000_000)
            case "SIGTERM":
                XCTAssertEqual(server.stop(SIGTERM), 0, "a clean shutdown exits 0")
                try server.start()
            default:
                server.stop(SIGKILL)
                try server.start()
            }
            let incoming = server.directory + "/storage/shares/incoming"
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: incoming), [], "\(how): incoming is empty")
            let s2 = try await grid.storageClient(0, via: sub.current)
            let held = try await s2.getBuckets(storageIndex: si)
            XCTAssertEqual(held, [:], "\(how): no partial share is visible")
            // And the server still works.
            let a2 = try await s2.allocateBuckets(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel, shareNumbers: [4], allocatedSize: 3))
            try await s2.write(bucket: a2.writers[4]!, offset: 0, data: [1, 2, 3])
            try await s2.abort(bucket: a2.writers[4]!)
            s2.rpc.close()
        }
    }

    /// A server that stops announcing is dropped by the introducer and the subscribers hear of it.
    func testSilentServersExpire() async throws {
        let grid = try TestGrid(servers: 2, introducerExpiry: "2s", announceInterval: "0.4s")
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let initial = await sub.waitForServers(2, timeout: 15)
        XCTAssertEqual(initial.count, 2)
        grid.servers[1].stop(SIGKILL)
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline && sub.current.count != 1 { try await Task.sleep(nanoseconds: 100_000_000) }
        XCTAssertEqual(sub.current.values.map(\.nickname), ["server0"], "server1 expired, server0 keeps re-announcing")
    }

    /// Servers whose wall clocks are hours off (GRID_CLOCK_OFFSET; the monotonic clock is
    /// untouched) keep re-announcing and stay in the set past the introducer's expiry,
    /// including one restarted 7 hours behind its earlier announcements.
    func testServersWithSkewedClocksStayAnnounced() async throws {
        let grid = try TestGrid(servers: 3, introducerExpiry: "2s", announceInterval: "0.4s")
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let initial = await sub.waitForServers(3, timeout: 15)
        XCTAssertEqual(initial.count, 3)
        for (i, offset) in [(1, "-25200"), (2, "25200")] {
            XCTAssertEqual(grid.servers[i].stop(SIGTERM), 0)
            try grid.servers[i].start(environment: ["GRID_CLOCK_OFFSET": offset])
        }
        // Three expiry periods: a server whose announcer's timer never fired would be gone.
        let until = monotonicNow() + 6
        var minimum = 3
        while monotonicNow() < until {
            minimum = min(minimum, sub.current.count)
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        XCTAssertEqual(Set(sub.current.values.map(\.nickname)), ["server0", "server1", "server2"])
        XCTAssertGreaterThanOrEqual(minimum, 2, "at most the restarting server drops out, briefly")
        XCTAssertTrue(grid.servers[1].log(tail: 40).contains("wall clock shifted by -25200 s"))
        XCTAssertFalse(grid.servers[0].log(tail: 40).contains("wall clock shifted"))
    }

    func testIntroducerRestart() async throws {
        let grid = try TestGrid(servers: 2)
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let before = await sub.waitForServers(2, timeout: 15)
        XCTAssertEqual(before.count, 2)
        XCTAssertEqual(grid.introducer.stop(SIGTERM), 0)
        try await Task.sleep(nanoseconds: 500_000_000)
        try grid.introducer.start()
        // The introducer kept nothing on disk: the set comes back from re-announcements,
        // and the subscriber reconnects by itself.
        let deadline = Date().addingTimeInterval(30)
        var after: [String: Announcement] = [:]
        while Date() < deadline {
            after = sub.current
            if sub.isConnected && after.count == 2 { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        XCTAssertTrue(sub.isConnected)
        XCTAssertEqual(Set(after.keys), Set(before.keys))
    }

    func testIntroducerRefusesBadSignaturesAndWrongSecrets() async throws {
        let grid = try TestGrid(servers: 0)
        defer { grid.shutdown() }
        let c = try await RPCClient.connect(loop: grid.loop, host: grid.address.host, port: grid.address.port, serverKey: grid.address.publicKey,
                                            service: introducerServiceName, secret: grid.address.secret, tls: grid.tls)
        let real = Ed25519PrivateKey(), forger = Ed25519PrivateKey()
        // Claims to be `real` but is signed by `forger`.
        let a = Announcement(publicKey: real.publicKey, nickname: "evil", addresses: ["127.0.0.1:1"], availableSpace: 1, sequence: 1)
        let forged = SignedAnnouncement(payload: a.payload(), signature: try forger.sign(Array("grid-announcement-v1\n".utf8) + a.payload()))
        await expectError(.badSecret, "bad signature") { _ = try await c.call(IntroducerMethod.announce.rawValue, forged.encoded()) }
        let list = try await c.call(SubscribeRequest()).announcements
        XCTAssertEqual(list.count, 0, "the forged announcement was dropped")
        // A genuine one is accepted and listed.
        _ = try await c.call(IntroducerMethod.announce.rawValue, try a.signed(with: real).encoded())
        let list2 = try await c.call(SubscribeRequest()).announcements
        XCTAssertEqual(try list2.map { try $0.verified().nickname }, ["evil"])
        c.close()
        await expectError(.notAuthorized, "wrong secret") {
            _ = try await RPCClient.connect(loop: grid.loop, host: grid.address.host, port: grid.address.port, serverKey: grid.address.publicKey,
                                            service: introducerServiceName, secret: [UInt8](repeating: 0, count: 20), tls: grid.tls)
        }
        await expectError(.pinMismatch, "not the expected") {
            _ = try await RPCClient.connect(loop: grid.loop, host: grid.address.host, port: grid.address.port, serverKey: forger.publicKey,
                                            service: introducerServiceName, secret: grid.address.secret, tls: grid.tls)
        }
    }

    /// Thousands of random and mutated frames against a running storage server and
    /// introducer: both stay up and keep serving a well-formed client.
    func testDaemonsSurviveGarbage() async throws {
        let grid = try TestGrid(servers: 1)
        defer { grid.shutdown() }
        let sub = grid.subscriber()
        defer { sub.stop() }
        let seen = await sub.waitForServers(1, timeout: 15)
        let storagePort = grid.servers[0].port
        var rng: UInt64 = 0xfeed
        func rand(_ n: Int) -> Int { rng = rng &* 6364136223846793005 &+ 1442695040888963407; return Int((rng >> 33) % UInt64(n)) }
        func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(rand(256)) } }
        var frames = 0
        for (port, service, secret) in [(storagePort, storageServiceName, [UInt8]()), (grid.address.port, introducerServiceName, grid.address.secret)] {
            // Plain TCP garbage (not even TLS).
            for _ in 0..<20 {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var a = sockaddr_in()
                a.sin_family = sa_family_t(AF_INET)
                a.sin_port = port.bigEndian
                inet_pton(AF_INET, "127.0.0.1", &a.sin_addr)
                _ = withUnsafePointer(to: &a) { connect(fd, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_in>.size)) }
                let junk = randomBytes(1 + rand(2000))
                _ = junk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(fd)
            }
            // After a proper HELLO: requests with random methods and bodies, mutated valid requests,
            // and frames with lying lengths or types, on a handful of connections.
            for _ in 0..<10 {
                let c = try await RPCClient.connect(loop: grid.loop, host: "127.0.0.1", port: port,
                                                    serverKey: port == storagePort ? seen.values.first!.publicKey : grid.address.publicKey,
                                                    service: service, secret: secret, tls: grid.tls)
                for _ in 0..<200 {
                    let method = UInt16(rand(20))
                    var body = randomBytes(rand(300))
                    if rand(3) == 0 {
                        body = AllocateRequest(storageIndex: randomBytes(16), renewSecret: randomBytes(32), cancelSecret: randomBytes(32),
                                               shareNumbers: [rand(256)], allocatedSize: UInt64(rand(100))).encoded()
                        body[rand(body.count)] ^= UInt8(1 + rand(255))
                    }
                    _ = try? await c.call(method, body, timeout: 10)
                    frames += 1
                }
                c.close()
            }
        }
        XCTAssertGreaterThanOrEqual(frames, 4000)
        XCTAssertTrue(grid.servers[0].isRunning, grid.servers[0].log(tail: 10))
        XCTAssertTrue(grid.introducer.isRunning, grid.introducer.log(tail: 10))
        let s = try await grid.storageClient(0, via: seen)
        let v = try await s.getVersion()
        XCTAssertEqual(v.protocolVersion, Hello.currentVersion)
        s.rpc.close()
    }
}
