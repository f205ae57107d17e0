import ArgumentParser
import Foundation
import GridClient
import GridFilesystem
import GridFormat
import GridNode
import GridSystem

struct Manifest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manifest",
        abstract: "List everything reachable from a directory: one 'CAP PATH' line per object (Tahoe's manifest).",
        discussion: """
            Each object appears once (by its verify capability), the root first with an empty \
            path. --storage-index and --verify-cap print those instead; --json prints one JSON \
            array of {"path", "cap", "verifycap", "storage_index"}. `grid maintain --manifest` \
            and `grid catalog add --manifest` read these lines.

            Example: grid manifest home: > home.manifest

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "Where to start (default: tahoe:).") var path: String = ""
    @Flag(name: .customLong("storage-index"), help: "Print only storage indexes.") var storageIndex = false
    @Flag(name: .customLong("verify-cap"), help: "Print only verify capabilities.") var verifyCap = false
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON array.") var json = false

    struct Line: Codable, Sendable {
        var path: String
        var cap: String
        var verifycap: String?
        var storage_index: String?
    }

    func run() throws {
        try reportingErrors {
            let p = try GridPath(parsing: path)
            let (storageIndex, verifyCap, json) = (self.storageIndex, self.verifyCap, self.json)
            let lines = Locked<[Line]>([])
            let problems = Locked<[String]>([])
            try withFilesystem(nodeDir) { fs in
                let root = try await fs.resolve(p).capability
                try await fs.walk(root, visit: { r in
                    let line = Line(path: r.path.joined(separator: "/"), cap: r.capability.string, verifycap: r.capability.verifier?.string,
                                    storage_index: r.capability.storageIndex.map(Base32.encode))
                    if json { lines.value.append(line); return }
                    if storageIndex { if let si = line.storage_index { FileHandleStdout.write(si + "\n") } }
                    else if verifyCap { if let v = line.verifycap { FileHandleStdout.write(v + "\n") } }
                    else { FileHandleStdout.write("\(line.cap) \(line.path)\n") }
                }, failed: { path, error in problems.value.append("\(path.joined(separator: "/")): \(error)") })
            }
            if json { try printJSON(lines.value, pretty: true) }
            for pr in problems.value { FileHandleStderr.write("grid: cannot read directory \(pr)\n") }
            if !problems.value.isEmpty { throw ExitCode(ExitStatus.code(for: .unavailable)) }
        }
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Count and size everything reachable from a directory (Tahoe's deep stats).",
        discussion: """
            Prints Tahoe's counts and total sizes and the file size histogram (two buckets per \
            decade); --json prints Tahoe's JSON keys (count-files, size-immutable-files, \
            size-files-histogram, ...).

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "Where to start (default: tahoe:).") var path: String = ""
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let p = try GridPath(parsing: path)
            let s = try withFilesystem(nodeDir) { fs in try await fs.deepStats(try await fs.resolve(p).capability) }
            if json { try printJSON(s, pretty: true); return }
            let rows: [(String, UInt64)] = [
                ("count-immutable-files", UInt64(s.countImmutableFiles)), ("count-mutable-files", UInt64(s.countMutableFiles)),
                ("count-literal-files", UInt64(s.countLiteralFiles)), ("count-files", UInt64(s.countFiles)),
                ("count-directories", UInt64(s.countDirectories)), ("size-immutable-files", s.sizeImmutableFiles),
                ("size-literal-files", s.sizeLiteralFiles), ("size-directories", s.sizeDirectories),
                ("largest-directory", UInt64(s.largestDirectory)), ("largest-immutable-file", s.largestImmutableFile),
            ]
            let width = rows.map(\.0.count).max()!
            FileHandleStdout.write("Counts and Total Sizes:\n")
            for (k, v) in rows {
                let key = String(repeating: " ", count: width - k.count) + k
                FileHandleStdout.write(!k.hasPrefix("count-") && v > 1000 ? "\(key): \(v)    \(abbreviateBoth(v))\n" : "\(key): \(v)\n")
            }
            let h = s.sizeFilesHistogram
            if !h.isEmpty {
                FileHandleStdout.write("Size Histogram:\n")
                let maxLen = h.map { String($0[1]).count }.max()!
                let countLen = h.map { String($0[2]).count }.max()!
                var prevMax: UInt64?
                for b in h {
                    if let pm = prevMax, b[0] != pm + 1 { FileHandleStdout.write(String(repeating: " ", count: maxLen - 1) + "...\n") }
                    prevMax = b[1]
                    let lo = String(b[0]), hi = String(b[1]), c = String(b[2])
                    FileHandleStdout.write(String(repeating: " ", count: maxLen - lo.count) + lo + "-" + hi + String(repeating: " ", count: maxLen - hi.count)
                        + " : " + c + String(repeating: " ", count: countLen - c.count) + "    " + abbreviateBoth(b[1]) + "\n")
                }
            }
        }
    }

    /// Tahoe's abbreviate_space_both: "(1.23 MB, 1.17 MiB)".
    func abbreviateBoth(_ s: UInt64) -> String {
        func abbreviate(_ s: UInt64, _ si: Bool) -> String {
            if s < 1024 { return "\(s) B" }
            let u = si ? 1000.0 : 1024.0
            let suffix = si ? "B" : "iB"
            var v = Double(s) / u
            for p in ["k", "M", "G", "T", "P"] {
                if v < u { return String(format: "%.2f %@%@", v, p as NSString, suffix as NSString) }
                v /= u
            }
            return String(format: "%.2f E%@", v, suffix as NSString)
        }
        return "(\(abbreviate(s, true)), \(abbreviate(s, false)))"
    }
}

struct DeepCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deep-check",
        abstract: "Check (and with --repair, repair) everything reachable from a directory.",
        discussion: """
            Immutable files are counted in batches on every server at once (one call per \
            server per 500 files, leases renewed in the same call with --add-lease), as `grid \
            maintain` does; directories and mutable files are checked a few at a time. \
            --verify reads every share of every object and checks every hash (and signature). \
            --repair rebuilds what is not healthy. Prints Tahoe's summary, and each unhealthy \
            object; --json prints one JSON object.

            Unlike Tahoe's, this command's exit status says how things stand: 0 everything \
            healthy (after repairs), 1 something degraded, 2 something unrecoverable or a \
            directory that could not be read; otherwise as for every command:
            \(ExitStatus.help)

            Example (cron): grid deep-check --add-lease --repair home:

            \(pathHelp)

            \(nodeDirHelp)
            """)
    @Argument(help: "Where to start (default: tahoe:).") var path: String = ""
    @Flag(help: "Read and check every share.") var verify = false
    @Flag(help: "Repair what is not healthy.") var repair = false
    @Flag(name: .customLong("add-lease"), help: "Add or renew this client's lease on every share.") var addLease = false
    @Flag(name: .shortAndLong, help: "Print every object's verdict.") var verbose = false
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON object.") var json = false

    func run() throws {
        let worst = try reportingErrors { () -> Verdict in
            let p = try GridPath(parsing: path)
            let (verify, repair, addLease, verbose, json) = (self.verify, self.repair, self.addLease, self.verbose, self.json)
            let r = try withFilesystem(nodeDir) { fs in
                try await fs.deepCheck(try await fs.resolve(p).capability, verify: verify, repair: repair, addLease: addLease) { item in
                    if verbose && !json { FileHandleStdout.write("'\(item.path)': \(item.verdict)\(item.afterRepair.map { " -> \($0) after repair" } ?? "")\n") }
                }
            }
            if json { try printJSON(r, pretty: true); return r.worst }
            if !verbose {
                for u in r.unhealthy {
                    FileHandleStdout.write("'\(u.path)': \(u.verdict)" + (u.problem.map { " (\($0))" } ?? "")
                        + (u.afterRepair.map { " -> \($0) after repair" } ?? "") + "\n")
                }
            }
            let unhealthy = r.checked - r.healthy
            if repair {
                let after = r.unhealthy.filter { ($0.afterRepair ?? $0.verdict) != "healthy" }.count
                FileHandleStdout.write("done: \(r.checked) objects checked\n pre-repair: \(r.healthy) healthy, \(unhealthy) unhealthy\n"
                    + " \(r.repairsAttempted) repairs attempted, \(r.repairsSucceeded) successful, \(r.repairsAttempted - r.repairsSucceeded) failed\n"
                    + " post-repair: \(r.checked - after) healthy, \(after) unhealthy\n")
            } else {
                FileHandleStdout.write("done: \(r.checked) objects checked, \(r.healthy) healthy, \(unhealthy) unhealthy\n")
            }
            return r.worst
        }
        switch worst {
        case .healthy: return
        case .degraded: throw ExitCode(1)
        case .unrecoverable: throw ExitCode(2)
        }
    }
}
