import ArgumentParser
import GridCrypto
import GridSystem

/// SHA-256 over many independent messages of one length (Tahoe's block hashes), per path:
/// the figure to compare with ../shared/anchors' sha256mb_bench on the same machine.
struct BenchSHA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sha",
        abstract: "SHA-256 throughput over many equal-length messages, per path (GB/s of message bytes, one core).",
        discussion: """
            Each call computes Tahoe's tagged block hash (SHA256d of a tag and the block) of \
            N messages of BYTES each, as the CHK encoder does for the blocks of its segments: \
            openssl one message after another, shani2 two at a time interleaved on the SHA \
            extensions, avx512 sixteen at a time in AVX-512 lanes (N below 16 leaves lanes \
            empty), portable plain C. The defaults are the shapes of ../shared/anchors \
            (sha256mb_bench 3x44032, 10x44032, 16x131072) plus 16x44032, the encoder's batch.

            Examples:
              grid bench sha
              grid bench sha --paths shani2,avx512 --shapes 16:43691 --json

            \(ExitStatus.help)
            """)

    @Option(help: "Comma-separated paths (default: every fast path this CPU supports; portable only when named).")
    var paths: String?

    @Option(help: "Comma-separated N:BYTES shapes (N messages of BYTES each per call).")
    var shapes: String = "3:44032,10:44032,16:44032,16:131072"

    @Option(help: "Repetitions per figure (the median is reported).")
    var reps: Int = 5

    @Option(name: .customLong("min-time"), help: "Minimum seconds per repetition.")
    var minTime: Double = 0.1

    @Flag(help: "Print one JSON array instead of a table.")
    var json = false

    func run() throws {
        try reportingErrors {
            let chosen: [SHA256Path] = try chosenPaths(paths, default: SHA256Path.allCases.filter { $0.isSupported && $0 != .portable })
            let shapeList = try integerPairs(shapes, help: "use N:BYTES with 1 <= N <= 4096 and 1 <= BYTES <= 64 MiB") { n, bytes in
                (1...4096).contains(n) && (1...(64 << 20)).contains(bytes)
            }
            guard reps >= 1, minTime > 0 else { throw GridError(.usage, "--reps must be at least 1 and --min-time above 0") }
            if !json {
                FileHandleStdout.write("SHA-256 paths here: \(SHA256Path.allCases.filter(\.isSupported).map(\.rawValue).joined(separator: ", ")); the encoder uses \(SHA256Path.current)\n")
                FileHandleStdout.write("path        N    bytes    GB/s\n")
            }
            var rows: [String] = []
            for (n, bytes) in shapeList {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: n * bytes, alignment: 64)
                defer { buffer.deallocate() }
                for i in 0..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: i &* 131 &+ (i >> 11)) }
                let messages = (0..<n).map { UnsafeRawBufferPointer(rebasing: buffer[($0 * bytes)..<(($0 + 1) * bytes)]) }
                for path in chosen {
                    let rate = measure(bytesPerCall: n * bytes, reps: reps, minSeconds: minTime) {
                        _ = TahoeHash.taggedSameLength(TahoeTag.block, messages, path: path)
                    }
                    if json {
                        rows.append("{\"path\": \"\(path)\", \"messages\": \(n), \"bytes\": \(bytes), \"gbps\": \(fmt(rate))}")
                    } else {
                        FileHandleStdout.write(pad(path.rawValue, 9) + lpad("\(n)", 4) + lpad("\(bytes)", 9) + lpad(fmt(rate), 8) + "\n")
                    }
                }
            }
            if json { FileHandleStdout.write("[\n  " + rows.joined(separator: ",\n  ") + "\n]\n") }
        }
    }
}
