import Foundation
import GridSystem
import XCTest

/// The fuzzer in the test suite: a bounded run of at least 20,000 requests (a few
/// seconds). `tools/fuzz.sh` runs the same code for as long as asked
/// (GRID_FUZZ_SECONDS) and with other seeds (GRID_FUZZ_SEED).
final class ServiceFuzzTests: XCTestCase {
    func testServicesSurviveFuzzedRequests() throws {
        let env = ProcessInfo.processInfo.environment
        let seed = env["GRID_FUZZ_SEED"].flatMap(UInt64.init) ?? 20261122
        let seconds = env["GRID_FUZZ_SECONDS"].flatMap(Double.init) ?? 0
        let minimum = env["GRID_FUZZ_REQUESTS"].flatMap(Int.init) ?? 20_000
        // tmpfs when there is one: the services fsync often, the disk need not be real.
        let base = FileSystem.exists("/dev/shm") ? "/dev/shm" : FileSystem.temporaryDirectory
        let root = base + "/grid-fuzz-\(CurrentProcess.id)-\(seed)"
        try FileSystem.makeDirectories(root)
        defer { FileSystem.removeTree(root) }
        let fuzzer = try ServiceFuzzer(seed: seed, root: root)
        let start = monotonicNow()
        var decoderRuns = 0
        while fuzzer.requests < minimum || monotonicNow() - start < seconds {
            fuzzer.step()
            if fuzzer.requests % 4 == 0 {
                fuzzer.decoderStep()
                decoderRuns += 1
            }
        }
        let elapsed = monotonicNow() - start
        let codes = fuzzer.errorCodes.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        print("fuzz: seed \(seed), \(fuzzer.requests) requests (\(decoderRuns) straight to decoders) in \(String(format: "%.1f", elapsed)) s; "
              + "\(fuzzer.replies) answered, errors: \(codes)")
        print("fuzz: per method: " + fuzzer.perMethod.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        if !fuzzer.slow.isEmpty { print("fuzz: slow requests: " + fuzzer.slow.prefix(20).joined(separator: "; ")) }
        XCTAssertEqual(fuzzer.unexpected, [], "only WireErrors may leave a service, and replies must decode")
        XCTAssertGreaterThanOrEqual(fuzzer.requests, minimum)
        // The run must reach past the decoders: real work was done, and refused.
        XCTAssertGreaterThan(fuzzer.replies, fuzzer.requests / 10, "most requests never got past decoding")
        XCTAssertGreaterThan(fuzzer.errorCodes[.badRequest] ?? 0, 0)
        XCTAssertEqual(fuzzer.errorCodes[.internal] ?? 0, 0, "internal errors are bugs: \(fuzzer.internalErrors)")
    }
}
