import ArgumentParser
import GridSystem


/// The one place errors become what a person sees: one line on stderr, and an exit status
/// chosen by the error's class (the values of BSD's sysexits.h, so scripts and cron jobs
/// can tell "fix your command" from "try again later" from "the data is damaged").
enum ExitStatus {
    static func code(for errorClass: ErrorClass) -> Int32 {
        switch errorClass {
        case .usage: return 64        // EX_USAGE
        case .corrupt: return 65      // EX_DATAERR
        case .notFound: return 66     // EX_NOINPUT
        case .unavailable: return 69  // EX_UNAVAILABLE
        case .internal: return 70     // EX_SOFTWARE
        case .noSpace: return 73      // EX_CANTCREAT
        case .io: return 74           // EX_IOERR
        case .conflict: return 75     // EX_TEMPFAIL
        case .incompatible: return 76 // EX_PROTOCOL
        case .denied: return 77       // EX_NOPERM
        }
    }

    static let help = """
        Exit status: 0 success; 64 usage error (a bad option, argument or capability); \
        65 corrupt data (a share or file failed its hashes); 66 not found (no such file, \
        node or share); 69 unavailable (too few servers or shares could be reached); \
        70 internal error; 73 no space; 74 local I/O error; 75 busy or conflicting (try \
        again later); 76 incompatible version or format; 77 permission or secret refused.
        """

    /// Nagios's UNKNOWN: what `grid maintain` exits with when the run itself failed.
    static let runFailed: Int32 = 3

    /// Prints `error` as one line and returns the exit code to throw (`runFailed` for a
    /// monitoring command, whose codes 0-2 speak of the files, not of the command, unless
    /// it is a usage error).
    static func report(_ error: Error, monitoring: Bool = false) -> ExitCode {
        let text = "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
        FileHandleStderr.write("grid: error: \(text)\n")
        // A usage error is 64 for every command; anything else that stops a monitoring
        // run is its UNKNOWN.
        return ExitCode(monitoring && error.errorClass != .usage ? runFailed : code(for: error.errorClass))
    }
}

/// Runs `body`, turning any thrown error into a one-line message and its exit status.
/// ArgumentParser's own errors (bad options, --help) pass through: it prints them itself
/// and exits 64 or 0.
func reportingErrors<T>(monitoring: Bool = false, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as ExitCode {
        throw e
    } catch let e as ValidationError {
        throw e
    } catch let e as CleanExit {
        throw e
    } catch {
        throw ExitStatus.report(error, monitoring: monitoring)
    }
}
