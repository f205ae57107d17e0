import ArgumentParser
import Foundation
import GridClient
import GridFilesystem
import GridFormat
import GridSystem

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check files on the grid: which shares survive where, and with --verify whether they are intact.",
        discussion: """
            For each capability (read or verify capability: URI:CHK-Verifier: is enough), asks \
            every known server at once which shares it holds and gives a verdict: healthy (all \
            n shares, on at least `happy` distinct servers), degraded (recoverable, but short of \
            that), or unrecoverable (fewer than k distinct good shares). Servers that do not \
            answer within a few seconds are named; their shares count as missing.

            Mutable files (URI:MDMF..., URI:SSK... and their -RO and -Verifier forms): the \
            census sorts shares by version; the file's version is the newest with k shares, and \
            shares of any other version are stale (the file is then at best degraded).

            --verify also reads every share and checks every hash in it (mutable files: every \
            signature too), rebuilds the ciphertext of an immutable file from k good shares and \
            checks it against its hash tree, and reports each corrupt share to the server \
            holding it. --add-lease adds or renews this client's lease on \
            every share found. --json prints one JSON object per file, one per line.

            Example: grid check --verify URI:CHK-Verifier:...

            Exit status: 0 every file healthy; 1 some file degraded; 2 some file unrecoverable \
            (the Nagios convention, for monitoring); otherwise as for every command:
            \(ExitStatus.help)
            """)

    @Argument(help: "Capabilities to check.") var capabilities: [String]
    @Flag(help: "Read every share and check every hash; report corrupt shares to their servers.") var verify = false
    @Flag(name: .customLong("add-lease"), help: "Add or renew this client's lease on every share found.") var addLease = false
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print one JSON object per file.") var json = false

    func run() throws {
        try forEachFile(capabilities, nodeDir: nodeDir) { session, cap in
            let (verify, addLease) = (self.verify, self.addLease)
            let r = try blockingAwait { try await session.check(cap, verify: verify, addLease: addLease) }
            FileHandleStdout.write((json ? try jsonLine(r) : text(r)) + "\n")
            return r.verdict
        }
    }

    func name(_ id: String, _ r: CheckResult) -> String { r.nicknames[id] ?? String(id.prefix(12)) }

    func text(_ r: CheckResult) -> String {
        if r.total == 0 { return "\(r.capability.prefix(40))…: healthy (a literal file: the data is in the capability)" }
        var lines = ["\(r.capability.prefix(60))…: \(r.verdict.rawValue)",
                     "  shares: \(r.shares.count) of \(r.total) (need \(r.needed)) on \(r.servers) servers, happiness \(r.happiness) (happy \(r.happy))"]
        if let seq = r.sequenceNumber { lines.append("  version: sequence number \(seq)" + (r.staleShares > 0 ? "; \(r.staleShares) shares of other versions (stale)" : "")) }
        let missing = (0..<r.total).filter { r.shares[$0] == nil }
        if !missing.isEmpty { lines.append("  missing shares: " + missing.map(String.init).joined(separator: ", ")) }
        for n in r.shares.keys.sorted() { lines.append("  share \(n): " + r.shares[n]!.map { name($0, r) }.joined(separator: ", ")) }
        if !r.unanswered.isEmpty { lines.append("  did not answer: " + r.unanswered.map { name($0, r) }.joined(separator: ", ")) }
        for c in r.corrupt { lines.append("  corrupt: share \(c.share) on \(name(c.server, r)): \(c.reason) (reported to the server)") }
        if let d = r.decoded { lines.append("  ciphertext rebuilt from \(r.needed) shares: " + (d ? "matches its hash tree" : "DOES NOT match its hash tree")) }
        if addLease { lines.append("  leases added or renewed on \(r.leasesRenewed) shares") }
        return lines.joined(separator: "\n")
    }

    func jsonLine(_ r: CheckResult) throws -> String { try jsonText(Reports.Check(r, addLease: addLease)) }
}

/// Runs `body` for each capability with one client session; the exit status is that of
/// the worst verdict (0 healthy, 1 degraded, 2 unrecoverable: the Nagios convention).
func forEachFile(_ capabilities: [String], nodeDir: String?, _ body: (GridFilesystem, AnyCapability) throws -> Verdict) throws {
    let worst = try reportingErrors { () -> Verdict in
        // A directory is checked as the file holding its entries (deep-check walks its children).
        let caps = try capabilities.map { try AnyCapability(parsing: $0) }
        let session = try GridFilesystem(nodeDirectory: nodeDir, coding: try codingOptionsFromEnvironment())
        defer { session.shutdown() }
        var worst = Verdict.healthy
        for cap in caps {
            let v = try body(session, cap)
            if v == .unrecoverable || (v == .degraded && worst == .healthy) { worst = v }
        }
        return worst
    }
    switch worst {
    case .healthy: return
    case .degraded: throw ExitCode(1)
    case .unrecoverable: throw ExitCode(2)
    }
}
