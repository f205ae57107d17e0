@testable import GridClient
import GridSystem
import XCTest

/// `withTimeLimit`: how `grid maintain` keeps its budget whatever one file's work does.
final class TimeLimitTests: XCTestCase {
    func testResultWithinTheLimit() async throws {
        let v = try await withTimeLimit(5, "a quick step") { 42 }
        XCTAssertEqual(v, 42)
        do {
            _ = try await withTimeLimit(5, "a failing step") { () async throws -> Int in throw GridError(.corrupt, "bad share") }
            XCTFail("the operation's own error must come through")
        } catch let e as GridError {
            XCTAssertEqual(e.errorClass, .corrupt)
        }
    }

    /// An operation that never ends (a continuation nobody resumes: the shape of a lost
    /// reply) gives way at the limit, with an error that says what was given up.
    func testAnOperationThatNeverEndsIsGivenUp() async throws {
        let t0 = monotonicNow()
        do {
            _ = try await withTimeLimit(0.3, "verifying URI:CHK:abc…") { () async throws -> Int in
                await withCheckedContinuation { (_: CheckedContinuation<Void, Never>) in }
                return 1
            }
            XCTFail("must time out")
        } catch let e as GridError {
            XCTAssertEqual(e.errorClass, .unavailable)
            XCTAssertTrue(e.description.contains("verifying URI:CHK:abc") && e.description.contains("given up"), e.description)
        }
        XCTAssertLessThan(monotonicNow() - t0, 20, "the limit held")
    }
}
