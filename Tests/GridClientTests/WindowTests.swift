@testable import GridClient
import GridFormat
import XCTest

/// How much a transfer keeps in flight per server as the round trip grows.
final class WindowTests: XCTestCase {
    func cap(size: UInt64, k: Int = 3) -> CHKCapability {
        CHKCapability(key: [UInt8](repeating: 1, count: 16), uebHash: [UInt8](repeating: 2, count: 32), needed: k, total: 10, size: size)
    }

    func testReadAheadGrowsWithTheRoundTrip() {
        let big = cap(size: 128 << 20)
        // Loopback: the minimum.
        XCTAssertEqual(Downloader.readahead(4, chk: big, latencies: Array(repeating: 0.0005, count: 10)), 4)
        // 80 ms: ~5.1 MB per share's connection, in blocks of 1 MiB / 3.
        XCTAssertEqual(Downloader.readahead(4, chk: big, latencies: Array(repeating: 0.08, count: 10)), 14)
        // The k-th fastest server sets it (slow stragglers are not read).
        XCTAssertEqual(Downloader.readahead(4, chk: big, latencies: [0.001, 0.001, 0.08] + Array(repeating: 5, count: 7)), 14)
        // At most 8 MiB in flight, and no census: the minimum.
        XCTAssertEqual(Downloader.readahead(4, chk: big, latencies: Array(repeating: 2.0, count: 10)), (8 << 20) / ((1 << 20) / 3))
        XCTAssertEqual(Downloader.readahead(4, chk: big, latencies: []), 4)
        // A small file's blocks are small: more of them, at most 256.
        XCTAssertEqual(Downloader.readahead(4, chk: cap(size: 3000), latencies: Array(repeating: 0.08, count: 10)), 256)
    }
}
