import ArgumentParser
import Foundation
import GridClient
import GridFilesystem
import GridFormat
import GridSystem

struct Repair: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Rebuild the missing or corrupt shares of files and place them on servers.",
        discussion: """
            For each read capability: checks every share (as `grid check --verify`; with \
            --no-verify only asks the servers what they hold, as Tahoe's repair does), and if the \
            file is not healthy, rebuilds it from any k good shares, encodes again only what is \
            missing (the new shares are identical to the lost ones) and places those shares on \
            servers that do not hold a bad copy, then checks again. Existing shares are never \
            removed; a failed placement leaves nothing half-written. --json prints one JSON \
            object per file.

            A mutable file (its write capability: servers take mutable shares only with the \
            file's write enabler) is always verified first; its version is then written again \
            over every missing, stale or corrupt share (byte for byte the same shares).

            Example: grid repair URI:CHK:...

            Exit status: 0 every file healthy afterwards; 1 some file still degraded; 2 some \
            file unrecoverable; otherwise as for every command:
            \(ExitStatus.help)
            """)

    @Argument(help: "Read capabilities of the files to repair (write capabilities for mutable files).") var capabilities: [String]
    @Flag(name: .customLong("no-verify"), help: "Decide what is missing by a census only (faster; corrupt shares not read are not found).") var noVerify = false
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print one JSON object per file.") var json = false

    func run() throws {
        try forEachFile(capabilities, nodeDir: nodeDir) { session, cap in
            let verify = !noVerify
            let r = try blockingAwait { try await session.repair(cap, verify: verify) }
            let v = r.after.verdict
            let placed = r.placed.keys.sorted()
            if json {
                try printJSON(Reports.Repair(cap.description, r))
            } else if placed.isEmpty {
                FileHandleStdout.write("\(cap.description.prefix(60))…: \(r.before.verdict.rawValue), nothing to place\n")
            } else {
                let to = placed.map { n in "\(n) → " + r.placed[n]!.map { r.after.nicknames[$0] ?? String($0.prefix(12)) }.joined(separator: ", ") }
                FileHandleStdout.write("\(cap.description.prefix(60))…: \(r.before.verdict.rawValue) → \(v.rawValue); placed share "
                    + to.joined(separator: "; ") + "\n")
            }
            return v
        }
    }
}
