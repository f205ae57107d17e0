import ArgumentParser
import Foundation
import GridClient
import GridFilesystem
import GridFormat
import GridNode
import GridSystem
import GridWire

struct Maintain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maintain",
        abstract: "Keep stored files alive: census, lease renewal, verification and repair (the cron job).",
        discussion: """
            Works through this client's catalog (and/or --manifest FILE) in four steps:
              1. census: asks every server about a batch of files per call and, unless \
            --no-renew, adds or renews this client's lease on every share found;
              2. repair: files whose good shares (or the distinct servers holding them) have \
            fallen to the repair threshold, k + --repair-margin, are rebuilt and their shares \
            placed again, most endangered first. A server unseen for less than --grace still \
            counts for the shares it held, so a reboot does not start a storm of repairs;
              3. verify: the least recently verified files are read and every hash checked \
            (corrupt shares are reported to their servers and replaced), enough each run to \
            verify every file once per --verify-period;
              4. record: every result goes to NODEDIR/maintain.sqlite; --report summarises it.

            --max-time, --max-files and --max-bytes bound a run; the next run starts with the files checked \
            least recently, so a large catalog is covered across runs. --rate-limit paces \
            verification and repair reads. Only one run per node directory at a time.

            Server-side lease expiry is safe only with this running more often than the \
            servers' lease duration (31 days by default); a lease that would expire before \
            the next run (--interval) is a warning.

            Examples:
              grid maintain                               (from cron, daily)
              grid maintain --max-time 30m --metrics-file /var/lib/node_exporter/grid.prom
              grid maintain --manifest caps.txt --no-catalog --json
              grid maintain --report

            Exit status (the Nagios convention): 0 every file healthy; 1 warning (a file was \
            repaired, is degraded above the threshold, waits on a server in its grace period, \
            or a lease expires before the next run); 2 critical (a file is unrecoverable, or \
            below the threshold and not repaired); 3 the run itself failed (already running, no \
            servers reachable, an unreadable node directory or database); 64 usage error (a bad \
            option or argument).
            """)

    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Option(help: "Also maintain the capabilities in FILE (one per line).") var manifest: String?
    @Flag(name: .customLong("no-catalog"), help: "Maintain only the --manifest capabilities (and the aliases' trees).") var noCatalog = false
    @Flag(name: .customLong("no-aliases"), help: "Do not walk the trees of the aliases.") var noAliases = false
    @Flag(name: .customLong("no-renew"), help: "Do not add or renew leases (nor warn of leases about to expire).") var noRenew = false
    @Flag(name: .customLong("no-repair"), help: "Report files below the threshold; do not repair them.") var noRepair = false
    @Option(name: .customLong("verify-period"), help: "Verify every file at least once per this long (0: never).") var verifyPeriod = "30d"
    @Option(help: "How often this job runs (sizes each run's verification; lease warnings).") var interval = "24h"
    @Option(help: "How long an unseen server's shares still count before they are lost.") var grace = "24h"
    @Option(name: .customLong("repair-margin"), help: "Repair at k + this many good shares (default: half of n-k, rounded up).") var repairMargin: Int?
    @Option(name: .customLong("max-time"), help: "Start no new work after this long (e.g. 30m).") var maxTime: String?
    @Option(name: .customLong("max-files"), help: "Check at most this many files (the least recently checked).") var maxFiles: Int?
    @Option(name: .customLong("max-bytes"), help: "Start no new verification or repair after reading this much (e.g. 50G).") var maxBytes: String?
    @Option(name: .customLong("rate-limit"), help: "Average read rate for verification and repair, per second (e.g. 20M).") var rateLimit: String?
    @Option(help: "Files per census call to each server.") var batch = 1000
    @Option(name: .customLong("metrics-file"), help: "Write the run's figures here in Prometheus text format.") var metricsFile: String?
    @Flag(help: "Print the history of runs and the files needing attention (exit status: the last run's); do nothing else.") var report = false
    @Option(help: "Runs shown by --report.") var runs = 10
    @Flag(help: "Print the result as one JSON object.") var json = false
    @Flag(name: .shortAndLong, help: "Print only the status line and problems (no progress).") var quiet = false

    func run() throws {
        let started = wallClockSeconds()
        do {
            let code = try reportingErrors(monitoring: true) { try runChecked() }
            if code != 0 { throw ExitCode(Int32(code)) }
        } catch let e as ExitCode {
            if e.rawValue == ExitStatus.runFailed, let metricsFile {
                try? writeMetrics(metricsFile, nil, exitCode: Int(ExitStatus.runFailed), at: started)
            }
            throw e
        }
    }

    func options() throws -> MaintainOptions {
        var o = MaintainOptions()
        o.renewLeases = !noRenew
        o.repair = !noRepair
        o.verifyPeriod = try parseDuration(verifyPeriod)
        o.interval = try parseDuration(interval)
        o.grace = try parseDuration(grace)
        guard o.interval > 0 else { throw GridError(.usage, "--interval must be more than 0") }
        if let m = repairMargin {
            guard m >= 0 && m < 256 else { throw GridError(.usage, "--repair-margin must be 0..255") }
            o.repairMargin = m
        }
        o.maxTime = try maxTime.map(parseDuration)
        o.maxBytes = try maxBytes.map(parseSize)
        if let n = maxFiles {
            guard n >= 1 else { throw GridError(.usage, "--max-files must be at least 1") }
            o.maxFiles = n
        }
        o.rateLimit = try rateLimit.map { Double(try parseSize($0)) }
        guard batch >= 1 && batch <= 2048 else { throw GridError(.usage, "--batch must be 1..2048") }
        o.batchSize = batch
        return o
    }

    func runChecked() throws -> Int {
        let dir = ClientNode.resolveDirectory(nodeDir)
        let settings = try ClientNode.load(directory: dir)
        let opts = try options()
        let log = try MaintenanceLog(path: ClientNode.maintainLogPath(directory: dir))
        if report { return try printReport(log) }
        let lock = try NodeLock(directory: dir, name: "maintain.lock", busy: "grid maintain is already running for \(dir)")
        defer { withExtendedLifetime(lock) {} }

        var files: [(capability: String, size: UInt64)] = []
        var seen = Set<String>()
        if !noCatalog {
            for e in try Catalog(path: ClientNode.catalogPath(directory: dir)).entries() where seen.insert(e.capability).inserted {
                files.append((e.capability, e.size))
            }
        }
        if let manifest {
            for text in try readManifest(manifest) {
                // A directory is kept alive as the file holding its entries.
                let cap = try AnyCapability(parsing: text).storedFile
                if seen.insert(cap.description).inserted { files.append((cap.description, cap.fileSize ?? 0)) }
            }
        } else if noCatalog && noAliases {
            throw GridError(.usage, "--no-catalog needs --manifest FILE or the aliases")
        }

        let fs = try GridFilesystem(nodeDirectory: dir, coding: try codingOptionsFromEnvironment())
        defer { fs.shutdown() }
        let pool = fs.pool
        if !noAliases {
            // Everything reachable from every alias, each object once.
            let aliases = try fs.aliases()
            let reached = Locked<[(capability: String, size: UInt64)]>([])
            let unreadable = Locked<[String]>([])
            for (name, _) in aliases.entries {
                let root = AnyCapability.directory(try aliases.directory(name))
                try blockingAwait {
                    try await fs.walk(root, visit: { r in
                        let cap = r.capability.storedFile
                        if !cap.isUnknown { reached.value.append((cap.description, cap.fileSize ?? 0)) }
                    }, failed: { path, error in unreadable.value.append("\(name):\(path.joined(separator: "/")): \(error)") })
                }
            }
            for f in reached.value where seen.insert(f.capability).inserted { files.append(f) }
            for u in unreadable.value { FileHandleStderr.write("grid maintain: cannot read directory \(u); its own file is still checked\n") }
        }
        let maintainer = Maintainer(pool: pool, settings: settings, coding: try codingOptionsFromEnvironment(), log: log, options: opts)
        let verbose = !quiet && !json && isatty(2) != 0
        let box = UncheckedBox(files)
        let r = try blockingAwait {
            try await maintainer.run(files: box.value) { line in
                if verbose { FileHandleStderr.write("\r\u{1b}[K" + line) }
            }
        }
        if verbose { FileHandleStderr.write("\r\u{1b}[K") }
        if let metricsFile { try writeMetrics(metricsFile, r, exitCode: r.exitCode, at: wallClockSeconds()) }
        FileHandleStdout.write((json ? try runJSON(r) : text(r, opts)) + "\n")
        return r.exitCode
    }

    static func statusWord(_ code: Int) -> String { ["OK", "WARNING", "CRITICAL", "UNKNOWN"][min(3, max(0, code))] }

    func text(_ r: MaintainReport, _ o: MaintainOptions) -> String {
        var lines = ["\(Self.statusWord(r.exitCode)) - grid maintain: " + Maintainer.summary(r)
            + (r.status == .budget ? " (budget reached: \(r.files - r.censused) files left for the next run)" : "")]
        if !quiet {
            lines.append("  servers: \(r.serversAnswered) answered" + (r.serversSilent.isEmpty ? "" : "; silent: " + r.serversSilent.joined(separator: ", ")))
            if let e = r.earliestLease {
                lines.append("  earliest lease expiry: " + Date(timeIntervalSince1970: Double(e)).formatted(.iso8601))
            }
            if o.verifyPeriod > 0 {
                lines.append("  verified \(humanBytes(r.verifiedBytes)) this run; \(Int((r.coverage * 100).rounded()))% of the catalog's bytes verified within the last \(durationText(o.verifyPeriod))")
            }
        }
        for p in r.problems.sorted(by: { ($0.level.rawValue, $0.capability) > ($1.level.rawValue, $1.capability) }) {
            lines.append("\(p.level == .critical ? "CRITICAL" : "WARNING") \(p.capability.prefix(60))…: \(p.what)")
        }
        return lines.joined(separator: "\n")
    }

    func runJSON(_ r: MaintainReport) throws -> String { try jsonText(Reports.MaintainRun(r)) }

    func writeMetrics(_ path: String, _ r: MaintainReport?, exitCode: Int, at time: UInt64) throws {
        var m: [(String, String, String)] = [
            ("grid_maintain_last_run_timestamp_seconds", "", "\(time)"),
            ("grid_maintain_exit_code", "", "\(exitCode)"),
        ]
        if let r {
            m += [
                ("grid_maintain_files", "{verdict=\"healthy\"}", "\(r.healthy)"),
                ("grid_maintain_files", "{verdict=\"degraded\"}", "\(r.degraded)"),
                ("grid_maintain_files", "{verdict=\"unrecoverable\"}", "\(r.unrecoverable)"),
                ("grid_maintain_files", "{verdict=\"unchecked\"}", "\(r.files - r.censused)"),
                ("grid_maintain_run_duration_seconds", "", String(format: "%.3f", r.seconds)),
                ("grid_maintain_repaired_files", "", "\(r.repaired)"),
                ("grid_maintain_repair_failures", "", "\(r.repairFailed)"),
                ("grid_maintain_verified_files", "", "\(r.verified)"),
                ("grid_maintain_verified_bytes", "", "\(r.verifiedBytes)"),
                ("grid_maintain_corrupt_shares", "", "\(r.corruptShares)"),
                ("grid_maintain_verify_coverage_ratio", "", String(format: "%.4f", r.coverage)),
                ("grid_maintain_leases_renewed", "", "\(r.leasesRenewed)"),
                ("grid_maintain_servers_answered", "", "\(r.serversAnswered)"),
                ("grid_maintain_servers_silent", "", "\(r.serversSilent.count)"),
            ]
            if let e = r.earliestLease { m.append(("grid_maintain_earliest_lease_expiry_timestamp_seconds", "", "\(e)")) }
        }
        var text = ""
        var typed = Set<String>()
        for (name, labels, value) in m {
            if typed.insert(name).inserted { text += "# TYPE \(name) gauge\n" }
            text += "\(name)\(labels) \(value)\n"
        }
        // node_exporter must never read half a file: write beside it, then rename.
        let tmp = path + ".tmp"
        let f = try FileDescriptor(path: tmp, [.readWrite, .create, .truncate], permissions: 0o644)
        try f.write(Array(text.utf8))
        try f.sync()
        try FileSystem.rename(tmp, to: path)
    }

    func printReport(_ log: MaintenanceLog) throws -> Int {
        let runs = try log.runs(limit: self.runs)
        let files = try log.allFiles()
        let byVerdict = Dictionary(grouping: files, by: { $0.verdict ?? "never checked" }).mapValues(\.count)
        let attention = files.filter { $0.verdict != nil && $0.verdict != "healthy" }
        if json {
            try printJSON(Reports.MaintainHistory(runs: runs, files: byVerdict, attention: attention))
        } else {
            var lines = ["files: " + byVerdict.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")]
            for r in runs {
                let when = Date(timeIntervalSince1970: Double(r.started)).formatted(.iso8601)
                lines.append("run \(r.id) \(when) \(r.status) exit \(r.exitCode): \(r.summary)")
            }
            for f in attention { lines.append("\(f.verdict ?? "") \(f.capability)") }
            FileHandleStdout.write(lines.joined(separator: "\n") + "\n")
        }
        return runs.first?.exitCode ?? 0
    }
}

/// "30 days", "12 hours", "90 s".
func durationText(_ s: Double) -> String {
    if s >= 86400 && s.truncatingRemainder(dividingBy: 86400) == 0 { return "\(Int(s / 86400)) day\(s == 86400 ? "" : "s")" }
    if s >= 3600 && s.truncatingRemainder(dividingBy: 3600) == 0 { return "\(Int(s / 3600)) hour\(s == 3600 ? "" : "s")" }
    return "\(Int(s)) s"
}
