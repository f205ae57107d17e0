import ArgumentParser
import CEpoll
import GridCodec
import GridFormat
import GridImmutable

#if canImport(Glibc)
import Glibc
#endif

@main
struct Grid: ParsableCommand {
    static func main() {
        // Shares move in blocks of a few hundred KiB. By default glibc serves each such
        // buffer with a fresh mmap, so every block costs page faults and zeroing; keeping
        // them on the heap lets freed buffers be reused.
        _ = mallopt(M_MMAP_THRESHOLD, 64 << 20)
        _ = mallopt(M_TRIM_THRESHOLD, 128 << 20)
        Grid.main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "grid",
        abstract: "An erasure-coded, encrypted storage grid compatible with Tahoe-LAFS 1.20 formats.",
        discussion: """
            Exit status: 0 on success, 1 when the work failed (bad or corrupt input, \
            unreadable files, not enough good shares), 64 for a usage error.

            Environment: GRID_SIMD=portable|ssse3|avx2|gfni forces a Reed-Solomon kernel \
            (default: the fastest this CPU supports).
            """,
        subcommands: [Upload.self, Download.self, ClientCommand.self, Demo.self, IntroducerCommand.self, StorageCommand.self, Debug.self, Bench.self])
}

/// Prints a one-line error to stderr and returns the exit code to throw.
func failure(_ message: String) -> ExitCode {
    FileHandleStderr.write("grid: error: \(message)\n")
    return ExitCode(1)
}

enum FileHandleStderr {
    static func write(_ s: String) {
        var bytes = Array(s.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

enum FileHandleStdout {
    static func write(_ s: String) {
        var bytes = Array(s.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(1, $0.baseAddress, $0.count) }
    }
}

/// The SIMD path from GRID_SIMD, or the best one; a bad value is a one-line error.
func simdPathFromEnvironment() throws -> SIMDPath {
    var env: [String: String] = [:]
    if let v = getenv(SIMDPath.environmentVariable) { env[SIMDPath.environmentVariable] = String(cString: v) }
    do { return try SIMDPath.fromEnvironment(env) } catch { throw failure("\(error)") }
}

/// Runs `body`, turning any thrown error into a one-line message and exit status 1.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        throw failure("\(error)")
    }
}
