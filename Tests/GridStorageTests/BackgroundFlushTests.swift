#if canImport(Glibc)
import Glibc
#endif
@testable import GridSystem
import GridTestSupport
import XCTest

/// Flushes on the background thread: an error it meets is not lost, and shares written
/// across many flushes close whole.
final class BackgroundFlushTests: XCTestCase {
    /// Linux reports a failed fsync once: a later one on the same descriptor may succeed.
    /// Here the background flush meets EBADF on a descriptor number that is then made
    /// valid, so fsync alone would succeed; `sync()` must still fail.
    func testAnErrorMetInTheBackgroundIsThrownBySync() throws {
        let dir = try FileSystem.makeTemporaryDirectory(prefix: "flush")
        defer { try? FileSystem.removeTree(dir) }
        let real = try FileDescriptor(path: dir + "/f", .replace)
        try real.write([1, 2, 3])
        // A high number, closed: fdatasync fails with EBADF, and nothing else opened
        // meanwhile takes it (the kernel hands out the lowest free number).
        let number: Int32 = 900
        XCTAssertEqual(dup2(real.rawValue, number), number)
        close(number)
        let f = FileDescriptor(adopting: number, name: dir + "/f", owned: false)
        f.flushInBackground()
        var waited = 0
        while f.deferredSyncError.value == nil && waited < 500 {
            usleep(10_000)
            waited += 1
        }
        let recorded = try XCTUnwrap(f.deferredSyncError.value, "the background flush recorded nothing in 5 s")
        XCTAssertEqual(recorded.code, EBADF)
        XCTAssertEqual(dup2(real.rawValue, number), number)  // the number is valid again
        defer { close(number) }
        XCTAssertEqual(fsync(number), 0, "fsync alone now succeeds")
        XCTAssertThrowsError(try f.sync()) { XCTAssertEqual(($0 as? SystemError)?.code, EBADF) }
        try real.sync()  // another descriptor of the same file has nothing to report
    }

    /// A `sync()` while a background flush of the same descriptor is under way waits for
    /// it: the flush's fdatasync may have taken the error (Linux reports it once), and the
    /// sync's own fsync would then succeed. Here the flush meets EBADF and is held before
    /// recording it; the number is made valid meanwhile, so only waiting finds the error.
    func testSyncWaitsForAFlushUnderWay() throws {
        let dir = try FileSystem.makeTemporaryDirectory(prefix: "flush-race")
        defer { FileSystem.removeTree(dir) }
        let real = try FileDescriptor(path: dir + "/f", .replace)
        let number: Int32 = 901
        XCTAssertEqual(dup2(real.rawValue, number), number)
        close(number)
        let f = FileDescriptor(adopting: number, name: dir + "/f", owned: false)
        let flushed = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        BackgroundFlusher.afterFlush.value = { flushed.signal(); _ = release.wait(timeout: .now() + 10) }
        defer { BackgroundFlusher.afterFlush.value = nil }
        f.flushInBackground()
        XCTAssertEqual(flushed.wait(timeout: .now() + 10), .success, "the flush did not run")
        XCTAssertEqual(dup2(real.rawValue, number), number)  // valid again: fsync alone succeeds
        defer { close(number) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { release.signal() }
        XCTAssertThrowsError(try f.sync()) { XCTAssertEqual(($0 as? SystemError)?.code, EBADF) }
    }
}

extension StorageBackendTests {
    /// A share of 9 MiB written in 1 MiB pieces asks for a background flush twice while
    /// its writes go on; it closes whole and reads back byte for byte.
    func testAShareWrittenAcrossBackgroundFlushesClosesWhole() throws {
        let flusher = BackgroundFlusher.shared
        let requestsBefore = flusher.cond.withLock { flusher.requests }
        let b = try backend()
        let size = 9 << 20
        let data = pseudoRandom(size, seed: 9)
        let a = try b.allocate(si: si, renewSecret: renew, cancelSecret: cancel, shares: [3], allocatedSize: UInt64(size))
        let w = try XCTUnwrap(a.writers[3])
        for off in stride(from: 0, to: size, by: 1 << 20) {
            try w.write(offset: UInt64(off), data: Array(data[off..<(off + (1 << 20))]))
        }
        XCTAssertGreaterThanOrEqual(flusher.cond.withLock { flusher.requests } - requestsBefore, 2, "a flush asked for at 4 and 8 MiB")
        try w.close()
        XCTAssertEqual(try b.getBuckets(si), [3: UInt64(size)])
        for off in stride(from: 0, to: size, by: 3 << 20) {  // reads are limited to 8 MiB
            XCTAssertEqual(try b.read(si: si, shnum: 3, offset: UInt64(off), length: 3 << 20), Array(data[off..<(off + (3 << 20))]))
        }
    }
}
