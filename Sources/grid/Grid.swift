import ArgumentParser
import Foundation
import GridClient
import GridCodec
import GridFormat
import GridImmutable
import GridNode
import GridSystem
import GridWire

@main
struct Grid: ParsableCommand {
    /// ArgumentParser's main, except for the very end: the process leaves with `_exit`
    /// (CurrentProcess.exitNow) once the command has finished, so that no global
    /// destructor runs under a thread still at work.
    static func main() {
        CurrentProcess.keepBlockBuffersOnHeap()
        // Most commands open TLS connections; help and the version never do (the thread
        // would only take a core from them).
        let args = CommandLine.arguments.dropFirst()
        if !args.isEmpty && !args.contains(where: { ["--help", "-h", "--version", "help"].contains($0) }) {
            TLSContext.warmUpInBackground()
        }
        var code: Int32 = 0
        do {
            try checkHelpTopic()
            var command = try parseAsRoot(nil)
            try command.run()
        } catch {
            let exit = exitCode(for: error)
            let message = fullMessage(for: error)
            if !message.isEmpty {
                if exit == .success { FileHandleStdout.write(message + "\n") } else { FileHandleStderr.write(message + "\n") }
            }
            code = exit.rawValue
        }
        CurrentProcess.exitNow(code)
    }

    /// `grid help NAME...` for a command that does not exist is a usage error (exit 64),
    /// not the root help with success.
    static func checkHelpTopic() throws {
        let args = Array(CommandLine.arguments.dropFirst())
        guard args.first == "help", args.count > 1 else { return }
        var level: [ParsableCommand.Type] = configuration.subcommands
        var walked: [String] = []
        for name in args.dropFirst() where !name.hasPrefix("-") {
            guard let next = level.first(where: { $0._commandName == name }) else {
                let known = level.map { $0._commandName }.sorted().joined(separator: ", ")
                throw ValidationError("no command '\((walked + [name]).joined(separator: " "))'" + (known.isEmpty ? "" : "; commands here: \(known)"))
            }
            walked.append(name)
            level = next.configuration.subcommands
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "grid",
        abstract: "An erasure-coded, encrypted storage grid compatible with Tahoe-LAFS 1.20 formats.",
        discussion: """
            \(ExitStatus.help)

            Environment: GRID_SIMD=portable|ssse3|avx2|gfni forces a Reed-Solomon kernel \
            (default: the fastest this CPU supports).
            """,
        version: gridVersion,
        subcommands: [Upload.self, Download.self, Update.self, Caps.self, CreateAlias.self, AddAlias.self, ListAliases.self, Ls.self, Mkdir.self, Cp.self, Ln.self, Mv.self, Rm.self, Manifest.self, Stats.self, DeepCheck.self, Backup.self, Restore.self, Check.self, Repair.self, Maintain.self, List.self, CatalogCommand.self, ClientCommand.self, Demo.self, LocalGridCommand.self, GatewayCommand.self, StatusCommand.self, IntroducerCommand.self,
                      StorageCommand.self, HelperCommand.self, Debug.self, Bench.self])
}

enum FileHandleStderr {
    static func write(_ s: String) { try? FileDescriptor.standardError.write(Array(s.utf8)) }
}

enum FileHandleStdout {
    static func write(_ s: String) { try? FileDescriptor.standardOutput.write(Array(s.utf8)) }
}

/// Transfer options with the SIMD path from GRID_SIMD.
func codingOptionsFromEnvironment() throws -> CodingOptions { CodingOptions(simdPath: try simdPathFromEnvironment()) }

/// The SIMD path from GRID_SIMD, or the best one; a bad value is a usage error.
func simdPathFromEnvironment() throws -> SIMDPath {
    var env: [String: String] = [:]
    if let v = ProcessInfo.processInfo.environment[SIMDPath.environmentVariable] { env[SIMDPath.environmentVariable] = v }
    return try SIMDPath.fromEnvironment(env)
}
