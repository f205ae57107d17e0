import Foundation
import GridCrypto
import GridFormat
import GridProtocol
import GridSystem
import GridTestSupport
import Synchronization
import XCTest

@testable import GridStorage

final class TestClock: @unchecked Sendable {
    let now = Mutex<UInt64>(1_700_000_000)
    func advance(_ s: UInt64) { now.withLock { $0 += s } }
    var closure: @Sendable () -> UInt64 { { [self] in now.withLock { $0 } } }
}

func tempDir(_ name: String) -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("grid-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

let nodeID20 = [UInt8](repeating: 0xab, count: 20)

final class StorageBackendTests: XCTestCase {
    var dir: String!
    var clock: TestClock!

    override func setUp() {
        dir = tempDir("storage")
        clock = TestClock()
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func backend(reserved: UInt64 = 0, expire: Bool = true) throws -> StorageBackend {
        var c = StorageConfig(nodeDirectory: dir)
        c.reservedSpace = reserved
        c.expireLeases = expire
        return try StorageBackend(config: c, containerNodeID: nodeID20, clock: clock.closure)
    }

    let si = [UInt8](repeating: 7, count: 16)
    let renew = [UInt8](repeating: 1, count: 32), cancel = [UInt8](repeating: 2, count: 32)

    func upload(_ b: StorageBackend, shares: [Int], data: [UInt8]) throws {
        let a = try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: shares, allocatedSize: UInt64(data.count))
        for (_, w) in a.writers {
            try w.write(offset: 0, data: Array(data.prefix(100)))
            try w.write(offset: 100, data: Array(data.dropFirst(100)))
            try w.close()
        }
    }

    func testNothingVisibleUntilClose() throws {
        let b = try backend()
        let data = pseudoRandom(1000, seed: 1)
        let a = try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: [0, 1], allocatedSize: 1000)
        XCTAssertEqual(a.writers.keys.sorted(), [0, 1])
        try a.writers[0]!.write(offset: 0, data: data)
        XCTAssertEqual(try b.getBuckets(si), [:], "a share being written is invisible")
        XCTAssertThrowsError(try b.read(si: si, shnum: 0, offset: 0, length: 10))
        try a.writers[0]!.close()
        XCTAssertEqual(try b.getBuckets(si), [0: 1000])
        XCTAssertEqual(try b.read(si: si, shnum: 0, offset: 0, length: 1000), data)
        XCTAssertEqual(try b.read(si: si, shnum: 0, offset: 990, length: 10), Array(data[990...]))
        a.writers[1]!.abort()
        XCTAssertEqual(try b.getBuckets(si), [0: 1000])
        // A second allocation reports the held share and opens only the missing one.
        let again = try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: [0, 1], allocatedSize: 1000)
        XCTAssertEqual(again.alreadyHave, [0])
        XCTAssertEqual(again.writers.keys.sorted(), [1])
        again.writers[1]!.abort()
    }

    func testContainerLayoutIsTahoes() throws {
        let b = try backend()
        let data = pseudoRandom(300, seed: 2)
        try upload(b, shares: [3], data: data)
        let path = b.sharePath(si, 3)
        let b32 = Base32.encode(si)
        XCTAssertTrue(path.hasSuffix("/storage/shares/\(b32.prefix(2))/\(b32)/3"), path)
        let file = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(file.count, 12 + 300 + 72)
        XCTAssertEqual(Array(file[0..<12]), [0, 0, 0, 2, 0, 0, 1, 0x2c, 0, 0, 0, 1])  // v2, 300 bytes, 1 lease
        XCTAssertEqual(Array(file[12..<312]), data)
        let lease = Array(file[312...])
        XCTAssertEqual(Array(lease[4..<36]), BLAKE2b.hash(renew), "renew secret stored BLAKE2b-hashed")
        XCTAssertEqual(Array(lease[36..<68]), BLAKE2b.hash(cancel))
        XCTAssertEqual(readBE(lease[68..<72]), clock.now.withLock { $0 } + 31 * 24 * 3600)
    }

    func testWriteChecks() throws {
        let b = try backend()
        let a = try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: [0], allocatedSize: 100)
        let w = a.writers[0]!
        XCTAssertThrowsError(try w.write(offset: 90, data: [UInt8](repeating: 1, count: 11))) { XCTAssertTrue("\($0)".contains("exceeds the allocated size 100")) }
        try w.write(offset: 0, data: [1, 2, 3, 4])
        try w.write(offset: 2, data: [3, 4, 5])  // overlaps with the same bytes: fine
        XCTAssertThrowsError(try w.write(offset: 1, data: [9])) { e in
            XCTAssertEqual(e as? StorageError, .conflict("write at offset 1 of share 0 differs from data already written there"))
        }
        // A bucket that refused a write is never closed into a share.
        XCTAssertThrowsError(try w.close()) { e in
            XCTAssertEqual(e.errorClass, .conflict)
            XCTAssertTrue("\(e)".contains("an earlier write was refused"), "\(e)")
        }
        XCTAssertEqual(try b.getBuckets(si), [:])
        XCTAssertThrowsError(try w.write(offset: 10, data: [1]))
        XCTAssertThrowsError(try w.close())
        let good = try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: [0], allocatedSize: 100).writers[0]!
        try good.write(offset: 0, data: [UInt8](repeating: 3, count: 100))
        try good.close()
        XCTAssertEqual(try b.getBuckets(si), [0: 100])
        XCTAssertThrowsError(try b.read(si: si, shnum: 0, offset: 99, length: 2)) { XCTAssertTrue("\($0)".contains("past the end")) }
        XCTAssertThrowsError(try b.read(si: si, shnum: 5, offset: 0, length: 1)) { XCTAssertTrue("\($0)".contains("no share 5")) }
    }

    func testRestartDiscardsIncoming() throws {
        do {
            let b = try backend()
            let a = try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: [0], allocatedSize: 50)
            try a.writers[0]!.write(offset: 0, data: [1, 2, 3])
            // No close, no abort: as if the process died.
        }
        XCTAssertFalse((try FileSystem.list(dir + "/storage/shares/incoming")).isEmpty)
        let b2 = try backend()
        XCTAssertEqual((try FileSystem.list(dir + "/storage/shares/incoming")), [])
        XCTAssertEqual(try b2.getBuckets(si), [:])
    }

    func testLeasesRenewCancelAndWrongSecrets() throws {
        let b = try backend()
        try upload(b, shares: [0, 1], data: pseudoRandom(500, seed: 3))
        let renew2 = [UInt8](repeating: 3, count: 32), cancel2 = [UInt8](repeating: 4, count: 32)
        try b.addLease(si: si, renewSecret: renew2, cancelSecret: cancel2)
        let f = try FileDescriptor(path: b.sharePath(si, 0))
        XCTAssertEqual(try ImmutableContainer.inspect(f).1.count, 2)
        let wrong = [UInt8](repeating: 9, count: 32)
        XCTAssertThrowsError(try b.renewLease(si: si, renewSecret: wrong)) { XCTAssertTrue("\($0)".contains("renew secret")) }
        XCTAssertThrowsError(try b.cancelLease(si: si, cancelSecret: wrong)) { XCTAssertTrue("\($0)".contains("cancel secret")) }
        clock.advance(1000)
        try b.renewLease(si: si, renewSecret: renew)
        try b.cancelLease(si: si, cancelSecret: cancel)
        XCTAssertEqual(try b.getBuckets(si).count, 2, "one lease is left")
        try b.cancelLease(si: si, cancelSecret: cancel2)
        XCTAssertEqual(try b.getBuckets(si), [:], "a share without leases is deleted")
        XCTAssertThrowsError(try b.addLease(si: si, renewSecret: renew, cancelSecret: cancel)) { XCTAssertTrue("\($0)".contains("no shares")) }
        XCTAssertEqual(try b.stats().immutableShares, 0)
    }

    func testExpiry() throws {
        let b = try backend()
        try upload(b, shares: [0], data: pseudoRandom(200, seed: 4))
        let other = [UInt8](repeating: 8, count: 16)
        let a = try b.allocate(si: other, renewSecret: renew, cancelSecret: cancel, shares: [0], allocatedSize: 10)
        try a.writers[0]!.write(offset: 0, data: [UInt8](repeating: 5, count: 10))
        try a.writers[0]!.close()
        XCTAssertEqual(try b.expireLeases(), 0)
        clock.advance(20 * 24 * 3600)
        try b.renewLease(si: other, renewSecret: renew)  // renewed on day 20: lives to day 51
        clock.advance(15 * 24 * 3600)  // day 35: the first has expired
        XCTAssertEqual(try b.expireLeases(), 1)
        XCTAssertEqual(try b.getBuckets(si), [:])
        XCTAssertEqual(try b.getBuckets(other), [0: 10])
        XCTAssertEqual(try b.stats().immutableShares, 1)
    }

    /// census_batch: lists what is held, renews an existing lease in place (file and index:
    /// the expirer then keeps the share), adds a new client's lease, and skips what is not held.
    func testCensusBatchRenewsInPlaceAndAddsLeases() throws {
        let b = try backend()
        try upload(b, shares: [0, 3], data: pseudoRandom(300, seed: 5))
        let absent = [UInt8](repeating: 9, count: 16)
        var got = try b.census([(si, renew, cancel), (absent, renew, cancel)], renew: false)
        XCTAssertEqual(got.map(\.shares), [[0: 300, 3: 300], [:]])
        XCTAssertEqual(got.map(\.leaseExpiration), [0, 0], "nothing renewed")
        clock.advance(20 * 24 * 3600)
        got = try b.census([(si, renew, cancel), (absent, renew, cancel)], renew: true)
        let day51 = UInt32(clock.now.withLock { $0 } + 31 * 24 * 3600)
        XCTAssertEqual(got.map(\.leaseExpiration), [day51, 0])
        for n in [0, 3] {
            let leases = try ImmutableContainer.inspect(try FileDescriptor(path: b.sharePath(si, n))).1
            XCTAssertEqual(leases.map(\.expiration), [day51], "the one lease extended in place")
        }
        // Another client's secrets add a second lease.
        let renew2 = [UInt8](repeating: 3, count: 32), cancel2 = [UInt8](repeating: 4, count: 32)
        _ = try b.census([(si, renew2, cancel2)], renew: true)
        XCTAssertEqual(try ImmutableContainer.inspect(try FileDescriptor(path: b.sharePath(si, 0))).1.count, 2)
        try b.cancelLease(si: si, cancelSecret: cancel2)
        // Day 35: the upload's lease (day 31) would have expired; the index has day 51.
        clock.advance(15 * 24 * 3600)
        XCTAssertEqual(try b.expireLeases(), 0)
        XCTAssertEqual(try b.getBuckets(si).count, 2)
        clock.advance(20 * 24 * 3600)  // day 55
        XCTAssertEqual(try b.expireLeases(), 2)
        XCTAssertThrowsError(try b.census([(Array(si.prefix(15)), renew, cancel)], renew: true), "a short storage index")
    }

    func testReservedSpaceRefusesCleanly() throws {
        let b = try backend(reserved: UInt64.max / 4)
        XCTAssertThrowsError(try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: [0, 1], allocatedSize: 1000)) { e in
            guard case let .noSpace(m) = e as? StorageError else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("not enough space"), m)
        }
        XCTAssertEqual((try FileSystem.list(dir + "/storage/shares/incoming")), [], "nothing half-written")
        // Open allocations count against the space too.
        let b2 = try backend()
        let free = b2.space().available
        XCTAssertThrowsError(try b2.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: [0], allocatedSize: free + 1))
    }

    func testIndexRebuiltFromShares() throws {
        do {
            let b = try backend()
            try upload(b, shares: [0, 1, 2], data: pseudoRandom(100, seed: 5))
        }
        unlink(dir + "/storage/index.sqlite")
        unlink(dir + "/storage/index.sqlite-wal")
        unlink(dir + "/storage/index.sqlite-shm")
        let b = try backend()
        XCTAssertEqual(try b.stats().immutableShares, 3)
        clock.advance(40 * 24 * 3600)
        XCTAssertEqual(try b.expireLeases(), 3, "rebuilt leases expire as usual")
    }

    // MARK: Mutable slots

    let we = [UInt8](repeating: 0x77, count: 32)

    func write(_ b: StorageBackend, _ writes: [Int: SlotUpdate], we: [UInt8]? = nil, readv: [Range<UInt64>] = []) throws -> (Bool, [Int: [[UInt8]]]) {
        try b.slotTestvAndReadvAndWritev(si: si, writeEnabler: we ?? self.we, renewSecret: renew, cancelSecret: cancel, writes: writes, readv: readv)
    }

    func testSlotWritesAndReads() throws {
        let b = try backend()
        // Creating: a missing share reads as empty, so "eq empty" passes.
        let (ok, reads) = try write(b, [0: SlotUpdate(tests: [SlotTest(0..<3, .equal, [])],
                                                      writes: [(offset: 0, data: Array("hello".utf8))]),
                                        1: SlotUpdate(writes: [(offset: 2, data: [9])])])
        XCTAssertTrue(ok)
        XCTAssertEqual(reads, [:])
        XCTAssertEqual(try b.slotReadv(si: si, shares: [], readv: [0..<10]),
                       [0: [Array("hello".utf8)], 1: [[0, 0, 9]]])
        XCTAssertEqual(try b.slotReadv(si: si, shares: [1], readv: [1..<2, 50..<55]),
                       [1: [[0], []]])
        // Reads return the state before the writes.
        let (ok2, before) = try write(b, [0: SlotUpdate(writes: [(offset: 0, data: Array("J".utf8))])],
                                      readv: [0..<5])
        XCTAssertTrue(ok2)
        XCTAssertEqual(before[0], [Array("hello".utf8)])
        XCTAssertEqual(try b.slotReadv(si: si, shares: [0], readv: [0..<5])[0], [Array("Jello".utf8)])
        XCTAssertEqual(try b.stats().mutableShares, 2)
    }

    func testAllTestsMustPassBeforeAnyWrite() throws {
        let b = try backend()
        _ = try write(b, [0: SlotUpdate(writes: [(offset: 0, data: [5, 5])]), 1: SlotUpdate(writes: [(offset: 0, data: [6])])])
        let (ok, reads) = try write(b, [
            0: SlotUpdate(tests: [SlotTest(0..<2, .equal, [5, 5])], writes: [(offset: 0, data: [1, 1])]),
            1: SlotUpdate(tests: [SlotTest(0..<1, .equal, [7])], writes: [(offset: 0, data: [2])]),
        ], readv: [0..<2])
        XCTAssertFalse(ok)
        XCTAssertEqual(reads, [0: [[5, 5]], 1: [[6]]])
        XCTAssertEqual(try b.slotReadv(si: si, shares: [], readv: [0..<2]), [0: [[5, 5]], 1: [[6]]], "nothing written")
    }

    func testOperators() throws {
        let b = try backend()
        _ = try write(b, [0: SlotUpdate(writes: [(offset: 0, data: [5])])])
        let cases: [(SlotComparison, [UInt8], Bool)] = [
            (.lessThan, [6], true), (.lessThan, [5], false), (.lessOrEqual, [5], true), (.lessOrEqual, [4], false),
            (.equal, [5], true), (.equal, [4], false), (.notEqual, [4], true), (.notEqual, [5], false),
            (.greaterOrEqual, [5], true), (.greaterOrEqual, [6], false), (.greaterThan, [4], true), (.greaterThan, [5], false),
        ]
        for (op, specimen, expect) in cases {
            let (ok, _) = try write(b, [0: SlotUpdate(tests: [SlotTest(0..<1, op, specimen)])])
            XCTAssertEqual(ok, expect, "\(op) \(specimen)")
        }
    }

    /// Partial changes are made in place through the redo journal: a complete journal left
    /// by a crash is replayed at start, a torn or damaged one is discarded, and a partial
    /// write over a share with extra leases keeps them.
    func testSlotJournalReplayAndDamage() throws {
        var b = try backend()
        let old = pseudoRandom(50_000, seed: 3)
        XCTAssertTrue(try write(b, [1: SlotUpdate(writes: [(offset: 0, data: old)])]).0)
        for i in 0..<5 {  // extra leases (past the four header slots) must survive in-place changes
            _ = try b.slotTestvAndReadvAndWritev(si: si, writeEnabler: we, renewSecret: [UInt8](repeating: UInt8(60 + i), count: 32),
                                                 cancelSecret: cancel, writes: [1: SlotUpdate()], readv: [])
        }
        // Grow past the old end (over the old trailer) and write in the middle.
        var expected = old + [UInt8](repeating: 0, count: 10_000)
        expected.replaceSubrange(100..<200, with: [UInt8](repeating: 0xAA, count: 100))
        expected.replaceSubrange(59_000..<60_000, with: [UInt8](repeating: 0xBB, count: 1000))
        XCTAssertTrue(try write(b, [1: SlotUpdate(writes: [(offset: 100, data: [UInt8](repeating: 0xAA, count: 100)),
                                                         (offset: 59_000, data: [UInt8](repeating: 0xBB, count: 1000))])]).0)
        XCTAssertEqual(try b.slotReadv(si: si, shares: [1], readv: [0..<100_000])[1]?.first, expected)
        XCTAssertEqual(try FileSystem.list(b.journalDir), [], "no journal is left once a change is done")
        let path = b.sharePath(si, 1)
        XCTAssertEqual(try MutableContainer(parsing: try XCTUnwrap(FileSystem.readFile(path, maxSize: 1 << 20)), path: path).leases.count, 6)

        // A journal a crash left: replayed when the server starts (twice is the same as once).
        let target = String(path.dropFirst(b.root.count + 1))
        let journal = SlotJournal(target: target, extents: [.zeros(offset: 468 + 10, length: 20), .bytes(offset: 468 + 40_000, data: [1, 2, 3])],
                                  newSize: UInt64(try FileDescriptor(path: path).size()))
        let encoded = journal.encoded()
        XCTAssertEqual(SlotJournal(decoding: encoded), journal)
        expected.replaceSubrange(10..<30, with: [UInt8](repeating: 0, count: 20))
        expected.replaceSubrange(40_000..<40_003, with: [1, 2, 3])
        for _ in 0..<2 {
            try FileSystem.writeFileAtomically(b.journalPath(si, 1), encoded)
            b = try backend()
            XCTAssertEqual(b.recoveredJournals, 1)
            XCTAssertEqual(try b.slotReadv(si: si, shares: [1], readv: [0..<100_000])[1]?.first, expected)
            XCTAssertEqual(try FileSystem.list(b.journalDir), [])
        }
        // Torn or damaged journals mean the change never began: discarded, share unchanged.
        for cut in [0, 1, 20, encoded.count / 2, encoded.count - 1] {
            XCTAssertNil(SlotJournal(decoding: Array(encoded.prefix(cut))), "cut at \(cut)")
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var bad = encoded
            bad[Int.random(in: 0..<bad.count, using: &rng)] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            XCTAssertNil(SlotJournal(decoding: bad))
        }
        let other = SlotJournal(target: target, extents: [.bytes(offset: 468, data: [9, 9, 9])], newSize: journal.newSize).encoded()
        try FileSystem.writeFileAtomically(b.journalPath(si, 1), Array(other.dropLast(5)))
        b = try backend()
        XCTAssertEqual(b.recoveredJournals, 1)
        XCTAssertEqual(try b.slotReadv(si: si, shares: [1], readv: [0..<100_000])[1]?.first, expected)
        // A journal naming a file outside shares/ is refused as damage.
        XCTAssertNil(SlotJournal(decoding: SlotJournal(target: "shares/../../etc/passwd", extents: [], newSize: 0).encoded()))
        XCTAssertNil(SlotJournal(decoding: SlotJournal(target: "index.sqlite", extents: [], newSize: 0).encoded()))
    }

    /// Staged data becomes the share whole when a test-and-write names it; data staged by a
    /// writer that never finished is dropped after an hour, and a failed test drops it too.
    func testStagedSharesAreSwappedInWholeOrDropped() throws {
        let b = try backend()
        let id = [UInt8](repeating: 4, count: 16), other = [UInt8](repeating: 5, count: 16)
        let data = pseudoRandom(3 << 20, seed: 8)
        for at in stride(from: 0, to: data.count, by: 1 << 20) {
            try b.slotStage(si: si, writeEnabler: we, share: 0, id: id, offset: UInt64(at), data: Array(data[at..<(at + (1 << 20))]))
        }
        // Nothing is visible until the test-and-write.
        XCTAssertEqual(try b.slotReadv(si: si, shares: [], readv: [0..<10]), [:])
        XCTAssertThrowsError(try write(b, [0: SlotUpdate(staged: (id: other, length: 10))]), "an id nothing was staged under")
        XCTAssertTrue(try write(b, [0: SlotUpdate(tests: [SlotTest(0..<1, .equal, [])], staged: (id: id, length: UInt64(data.count)))]).0)
        XCTAssertEqual(try b.slotReadv(si: si, shares: [0], readv: [0..<UInt64(data.count)])[0]?.first, Array(data.prefix(b.config.maxReadLength)))
        XCTAssertEqual(try FileSystem.list(b.stagingDir), [], "the staged file became the share")
        // A failed test drops the request's staged data.
        try b.slotStage(si: si, writeEnabler: we, share: 0, id: other, offset: 0, data: [1, 2, 3])
        XCTAssertFalse(try write(b, [0: SlotUpdate(tests: [SlotTest(0..<1, .equal, [])], staged: (id: other, length: 3))]).0)
        XCTAssertEqual(try FileSystem.list(b.stagingDir), [])
        // The wrong write enabler cannot stage for an existing slot.
        XCTAssertThrowsError(try b.slotStage(si: si, writeEnabler: [UInt8](repeating: 9, count: 32), share: 0, id: id, offset: 0, data: [1]))
        // Abandoned staged data goes after an hour (file times are real: so is the clock here).
        clock.now.withLock { $0 = wallClockSeconds() }
        try b.slotStage(si: si, writeEnabler: we, share: 1, id: id, offset: 0, data: [1])
        XCTAssertEqual(b.dropStaleStaging(olderThan: 3600), 0)
        clock.advance(3601)
        XCTAssertEqual(b.dropStaleStaging(olderThan: 3600), 1)
    }

    func testNewLengthGrowsBeforeAndShrinksAfter() throws {
        let b = try backend()
        _ = try write(b, [0: SlotUpdate(writes: [(offset: 0, data: [1, 2, 3, 4, 5, 6])])])
        _ = try write(b, [0: SlotUpdate(writes: [(offset: 0, data: [9])], newLength: 3)])
        XCTAssertEqual(try b.slotReadv(si: si, shares: [0], readv: [0..<100])[0], [[9, 2, 3]])
        _ = try write(b, [0: SlotUpdate(newLength: 5)])
        XCTAssertEqual(try b.slotReadv(si: si, shares: [0], readv: [0..<100])[0], [[9, 2, 3, 0, 0]])
        _ = try write(b, [0: SlotUpdate(newLength: 0)])
        XCTAssertEqual(try b.slotReadv(si: si, shares: [], readv: [0..<1]), [:], "new length 0 deletes the share")
    }

    func testWrongWriteEnablerNamesTheRecorder() throws {
        let b = try backend()
        _ = try write(b, [0: SlotUpdate(writes: [(offset: 0, data: [1])])])
        XCTAssertThrowsError(try write(b, [0: SlotUpdate(writes: [(offset: 0, data: [2])])], we: [UInt8](repeating: 1, count: 32))) { e in
            guard case let .badSecret(m) = e as? StorageError else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("The write enabler was recorded by nodeid '\(Base32.encode(nodeID20))' (this server)"), m)
        }
        XCTAssertEqual(try b.slotReadv(si: si, shares: [0], readv: [0..<1])[0], [[1]])
    }

    func testMutableContainerLayout() throws {
        let doc = try Fixtures.json("sdmf-container.json") as! [String: Any]
        XCTAssertEqual(hex(MutableContainer.magic), doc["magic_hex"] as! String, "Tahoe's v2 mutable container magic")
        let b = try backend()
        _ = try write(b, [2: SlotUpdate(writes: [(offset: 0, data: [1, 2, 3])])])
        let file = Array(try Data(contentsOf: URL(fileURLWithPath: b.sharePath(si, 2))))
        XCTAssertEqual(Array(file[0..<32]), MutableContainer.magic)
        XCTAssertEqual(Array(file[32..<52]), nodeID20)
        XCTAssertEqual(Array(file[52..<84]), we)
        XCTAssertEqual(readBE(file[84..<92]), 3)
        XCTAssertEqual(readBE(file[92..<100]), 468 + 3)
        XCTAssertEqual(Array(file[468..<471]), [1, 2, 3])
        XCTAssertEqual(file.count, 471 + 4)
        XCTAssertEqual(Array(file[(100 + 8)..<(100 + 40)]), BLAKE2b.hash(renew))
        // Five leases: four in the header slots, the fifth after the data.
        for i in 0..<4 {
            _ = try b.slotTestvAndReadvAndWritev(si: si, writeEnabler: we, renewSecret: [UInt8](repeating: UInt8(50 + i), count: 32),
                                                 cancelSecret: cancel, writes: [2: SlotUpdate()], readv: [])
        }
        let f2 = Array(try Data(contentsOf: URL(fileURLWithPath: b.sharePath(si, 2))))
        XCTAssertEqual(readBE(f2[471..<475]), 1)
        XCTAssertEqual(f2.count, 475 + 92)
        XCTAssertEqual(try MutableContainer(parsing: f2, path: "x").leases.count, 5)
    }

    /// Small shares take whole blocks: the space check counts blocks, so it cannot accept
    /// shares the disk then has no room for.
    func testSpaceIsCountedInWholeBlocks() throws {
        guard FileSystem.exists("/dev/shm") else { throw XCTSkip("needs a tmpfs with steady free space") }
        dir = "/dev/shm/grid-space-\(CurrentProcess.id)"
        let probe = try backend()
        let block = probe.blockSize
        let free = probe.space().free
        // Leave 64 blocks available: 100 one-hundred-byte shares take 100 blocks (18 KiB of
        // bytes, but 100 blocks of disk) and must be refused; 30 fit.
        let b = try backend(reserved: free - 64 * block)
        XCTAssertThrowsError(try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: Array(0..<100), allocatedSize: 100)) {
            XCTAssertEqual($0.errorClass, .noSpace, "\($0)")
        }
        let ok = try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: Array(0..<30), allocatedSize: 100)
        XCTAssertEqual(ok.writers.count, 30)
        for w in ok.writers.values { w.abort() }
    }

    func testCorruptionAdvisory() throws {
        let b = try backend()
        try b.adviseCorruptShare(mutable: false, si: si, shnum: 4, reason: "block 3 hash mismatch")
        let files = (try FileSystem.list(dir + "/storage/corruption-advisories"))
        XCTAssertEqual(files.count, 1)
        let text = try String(contentsOfFile: dir + "/storage/corruption-advisories/" + files[0], encoding: .utf8)
        XCTAssertTrue(text.contains("block 3 hash mismatch"))
        XCTAssertTrue(text.contains("share number: 4"))
        // A second report of the same share in the same second is a record of its own.
        try b.adviseCorruptShare(mutable: false, si: si, shnum: 4, reason: "block 5 hash mismatch")
        XCTAssertEqual(try FileSystem.list(dir + "/storage/corruption-advisories").count, 2)
    }
}

/// Which storage requests the RPC server must run in arrival order: a bucket writer's
/// write, close and abort, keyed by its handle; nothing else.
final class StorageOrderingTests: XCTestCase {
    func testBucketRequestsAreOrderedByTheirHandle() throws {
        let dir = tempDir("ordering")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let service = StorageService(backend: try StorageBackend(config: StorageConfig(nodeDirectory: dir), containerNodeID: nodeID20))
        func key(_ m: StorageMethod, _ body: [UInt8]) -> UInt64? {
            service.orderingKey(method: m.rawValue, frameBody: [0, 0] + body, offset: 2)
        }
        let handle: [UInt8] = [0, 0, 0, 0, 0, 0, 0x12, 0x34]
        XCTAssertEqual(key(.bucketWrite, BucketWriteRequest(bucket: 0x1234, offset: 9, data: [1, 2]).encoded()), 0x1234)
        XCTAssertEqual(key(.bucketClose, handle), 0x1234)
        XCTAssertEqual(key(.bucketAbort, handle), 0x1234)
        XCTAssertNil(key(.bucketClose, [1, 2, 3]), "too short: no key (the handler refuses it)")
        XCTAssertNil(key(.getBuckets, [UInt8](repeating: 0, count: 16)))
        XCTAssertNil(key(.allocateBuckets, handle + handle))
        XCTAssertNil(service.orderingKey(method: 999, frameBody: [0, 0] + handle, offset: 2))
    }
}
