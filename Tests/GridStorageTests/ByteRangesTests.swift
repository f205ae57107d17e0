import GridSystem
import XCTest

/// ByteRanges: pieces in any order, overlapping or touching, merged; the gap-free prefix.
final class ByteRangesTests: XCTestCase {
    func testPiecesInAnyOrderMerge() {
        var r = ByteRanges()
        r.insert(10..<20)
        r.insert(30..<40)
        XCTAssertEqual(r.ranges, [10..<20, 30..<40])
        XCTAssertEqual(r.prefix, 0)
        r.insert(0..<5)
        XCTAssertEqual(r.prefix, 5)
        r.insert(5..<10)  // touching on both sides
        XCTAssertEqual(r.ranges, [0..<20, 30..<40])
        r.insert(15..<35)  // overlapping two
        XCTAssertEqual(r.ranges, [0..<40])
        XCTAssertEqual(r.prefix, 40)
        r.insert(50..<50)  // empty: nothing
        XCTAssertEqual(r.ranges, [0..<40])
        r.insert(45..<50)
        r.insert(42..<43)
        XCTAssertEqual(r.ranges, [0..<40, 42..<43, 45..<50])
    }
}
