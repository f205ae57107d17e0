@testable import GridClient
import GridFormat
import XCTest

/// How much a download keeps in flight, and over how many shares, as the round trip grows.
final class WindowTests: XCTestCase {
    func cap(size: UInt64, k: Int = 3) -> CHKCapability {
        CHKCapability(key: [UInt8](repeating: 1, count: 16), uebHash: [UInt8](repeating: 2, count: 32), needed: k, total: 10, size: size)
    }

    func testDownloadWindowGrowsWithTheRoundTrip() {
        let big = cap(size: 128 << 20)
        func plan(_ latencies: [Double], shares: Int = 10) -> [Int] {
            let p = Downloader.window(4, chk: big, latencies: latencies, shares: shares)
            return [p.readahead, p.width]
        }
        // Loopback: 4 segments from k shares, as always.
        XCTAssertEqual(plan(Array(repeating: 0.0005, count: 10)), [4, 3])
        // 20 ms: 8 MB in flight, over k connections of ~3 MiB.
        XCTAssertEqual(plan(Array(repeating: 0.02, count: 10)), [7, 3])
        // 80 ms: 32 MB in flight (30 segments), over 11 connections' worth: all 10 shares.
        XCTAssertEqual(plan(Array(repeating: 0.08, count: 10)), [30, 10])
        XCTAssertEqual(plan(Array(repeating: 0.04, count: 10)), [15, 6])
        // ...but never more shares than the census found.
        XCTAssertEqual(plan(Array(repeating: 0.08, count: 5), shares: 5), [30, 5])
        // The k-th fastest server sets the round trip (slow stragglers are not read first).
        XCTAssertEqual(plan([0.001, 0.001, 0.08] + Array(repeating: 5, count: 7)), [30, 10])
        // At most 64 MiB in flight; no census answers: the minimum.
        XCTAssertEqual(plan(Array(repeating: 2.0, count: 10)), [64, 10])
        XCTAssertEqual(plan([]), [4, 3])
        // A small file's segments are small: more of them, at most 256; and it is read
        // from no more connections than its bytes need (k for anything up to ~9 MiB).
        XCTAssertEqual(plan(Array(repeating: 0.08, count: 10)) , [30, 10])
        let small = Downloader.window(4, chk: cap(size: 3000), latencies: Array(repeating: 0.08, count: 10), shares: 10)
        XCTAssertEqual([small.readahead, small.width], [256, 3])
        XCTAssertEqual(Downloader.window(4, chk: cap(size: 1 << 20), latencies: Array(repeating: 0.08, count: 10), shares: 10).width, 3)
        XCTAssertEqual(Downloader.window(4, chk: cap(size: 16 << 20), latencies: Array(repeating: 0.08, count: 10), shares: 10).width, 6)
    }
}
