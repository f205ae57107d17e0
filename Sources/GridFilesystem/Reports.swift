import GridClient
import GridFormat
import GridImmutable

/// The JSON results of the file commands (`--json`), as Codable types: the one place
/// their keys are spelled. The keys are those grid has always printed, so scripts keep
/// working.
public enum Reports {
    /// `grid upload --json` of an immutable file.
    public struct Upload: Codable, Sendable {
        public var cap: String
        public var size: UInt64
        public var storage_index: String?
        public var happiness: Int
        public var shares_already_present: Int
        public var shares_written_by_others: Int
        public var bytes_sent: UInt64
        public var timings: [String: Double]
        public var servers: [String: String]
        public var shares: [String: [String]]
        public var path: String?
        /// The upload helper (host:port) used, when one was.
        public var helper: String?
        /// Ciphertext bytes the helper held already from an interrupted upload.
        public var resumed_from: UInt64?
        /// Why the configured helper was not used.
        public var helper_problem: String?
        /// The shares went in one flight with the census (allocation, writes, closes).
        public var one_flight: Bool?

        public init(_ r: UploadResult, path: String?) {
            cap = r.capability.description
            size = r.size
            if case let .chk(c) = r.capability { storage_index = Base32.encode(c.storageIndex) }
            happiness = r.happiness
            shares_already_present = r.sharesAlreadyPresent
            shares_written_by_others = r.sharesWrittenByOthers
            bytes_sent = r.bytesSent
            timings = ["hash": r.hashSeconds, "push": r.pushSeconds, "total": r.totalSeconds]
            servers = r.nicknames
            shares = Dictionary(uniqueKeysWithValues: r.placement.map { ("\($0.key)", $0.value) })
            self.path = path
            helper = r.helper
            resumed_from = r.helper == nil ? nil : r.resumedFrom
            helper_problem = r.helperProblem
            one_flight = r.helper == nil ? r.oneFlight : nil
        }
    }

    /// `grid upload --mutable --json` and `grid update --json`.
    public struct MutableWrite: Codable, Sendable {
        public var cap: String
        public var readonly_cap: String
        public var verify_cap: String
        public var format: String
        public var sequence_number: UInt64
        public var storage_index: String
        public var shares: [String: [String]]
        public var conflicts_retried: Int
        public var path: String?

        public init(_ r: MutableFileClient.WriteResult, path: String? = nil) {
            cap = r.capability.string
            readonly_cap = r.capability.readOnly?.string ?? ""
            verify_cap = r.capability.verifier.string
            format = r.capability.format.rawValue
            sequence_number = r.sequenceNumber
            storage_index = Base32.encode(r.capability.storageIndex)
            shares = Dictionary(uniqueKeysWithValues: r.placement.map { ("\($0.key)", $0.value) })
            conflicts_retried = r.retries
            self.path = path
        }
    }

    /// `grid download --json`.
    public struct Download: Codable, Sendable {
        public struct BadShare: Codable, Sendable {
            public var share: Int
            public var server: String
            public var `class`: String
            public var reason: String
        }
        public var size: UInt64
        public var bytes: UInt64
        public var seconds: Double
        public var shares: [String: String]?
        public var servers: [String: String]?
        public var bad_shares: [BadShare]?
        public var corruption_reports: Int?
        public var sequence_number: UInt64?
        public var format: String?

        public init(_ d: GridFilesystem.Downloaded) {
            switch d {
            case let .immutable(r):
                (size, bytes, seconds) = (r.fileSize, r.bytesWritten, r.seconds)
                shares = Dictionary(uniqueKeysWithValues: r.sharesUsed.map { ("\($0.key)", $0.value) })
                servers = r.nicknames
                bad_shares = r.badShares.map { BadShare(share: $0.share, server: $0.server, class: $0.failure.errorClass.rawValue, reason: "\($0.failure)") }
                corruption_reports = r.corruptionReports
            case let .mutable(s, b, seq, f, secs):
                (size, bytes, seconds, sequence_number, format) = (s, b, secs, seq, f.rawValue)
            }
        }
    }

    /// `grid caps --json`: the capabilities a capability gives.
    public struct Caps: Codable, Sendable {
        public var write: String?
        public var read: String?
        public var verify: String?
        public var storage_index: String?
        public var kind: String

        public init(_ c: AnyCapability) {
            write = c.writeString
            read = c.readString
            verify = c.verifier?.string
            storage_index = c.storageIndex.map(Base32.encode)
            kind = c.kindName
        }

        /// In order, for the text form.
        public var lines: [(String, String)] {
            [("write", write), ("read", read), ("verify", verify), ("storage_index", storage_index)].compactMap { k, v in v.map { (k, $0) } }
        }
    }

    /// `grid check --json`: one per file.
    public struct Check: Codable, Sendable {
        public struct Corrupt: Codable, Sendable {
            public var share: Int
            public var server: String
            public var reason: String
        }
        public var cap: String
        public var verdict: String
        public var needed: Int
        public var total: Int
        public var happy: Int
        public var shares_found: Int
        public var servers: Int
        public var happiness: Int
        public var shares: [String: [String]]
        public var missing: [Int]
        public var unanswered: [String]
        public var nicknames: [String: String]
        public var corrupt: [Corrupt]
        public var storage_index: String?
        public var ciphertext_verified: Bool?
        public var sequence_number: UInt64?
        public var stale_shares: Int?
        public var leases_renewed: Int?

        public init(_ r: CheckResult, addLease: Bool) {
            cap = r.capability
            verdict = r.verdict.rawValue
            (needed, total, happy) = (r.needed, r.total, r.happy)
            shares_found = r.shares.count
            servers = r.servers
            happiness = r.happiness
            shares = Dictionary(uniqueKeysWithValues: r.shares.map { ("\($0.key)", $0.value) })
            missing = (0..<r.total).filter { r.shares[$0] == nil }
            unanswered = r.unanswered
            nicknames = r.nicknames
            corrupt = r.corrupt.map { Corrupt(share: $0.share, server: $0.server, reason: $0.reason) }
            if !r.storageIndex.isEmpty { storage_index = Base32.encode(r.storageIndex) }
            ciphertext_verified = r.decoded
            if let seq = r.sequenceNumber { sequence_number = seq; stale_shares = r.staleShares }
            if addLease { leases_renewed = r.leasesRenewed }
        }
    }

    /// `grid repair --json`: one per file.
    public struct Repair: Codable, Sendable {
        public var cap: String
        public var before: String
        public var after: String
        public var placed: [String: [String]]
        public var shares_found_after: Int
        public var happiness_after: Int

        public init(_ cap: String, _ r: RepairResult) {
            self.cap = cap
            before = r.before.verdict.rawValue
            after = r.after.verdict.rawValue
            placed = Dictionary(uniqueKeysWithValues: r.placed.map { ("\($0.key)", $0.value) })
            shares_found_after = r.after.shares.count
            happiness_after = r.after.happiness
        }
    }

    /// `grid list --json`: the catalog.
    public struct CatalogEntry: Codable, Sendable {
        public var cap: String
        public var size: UInt64
        public var name: String
        public var added: UInt64
        public init(_ e: Catalog.Entry) { (cap, size, name, added) = (e.capability, e.size, e.name, e.added) }
    }
}

extension Reports {
    /// `grid maintain --json`: one run.
    public struct MaintainRun: Codable, Sendable {
        public struct Problem: Codable, Sendable {
            public var cap: String
            public var level: String
            public var what: String
        }
        public var run: Int64
        public var status: String
        public var exit_code: Int
        public var files: Int
        public var checked: Int
        public var healthy: Int
        public var degraded: Int
        public var unrecoverable: Int
        public var waiting_on_grace: Int
        public var leases_renewed: Int
        public var verified: Int
        public var verified_bytes: UInt64
        public var corrupt_shares: Int
        public var repaired: Int
        public var repair_failed: Int
        public var bytes_read: UInt64
        public var coverage: Double
        public var servers_answered: Int
        public var servers_silent: [String]
        public var seconds: Double
        public var phase_seconds: [String: Double]
        public var problems: [Problem]
        public var earliest_lease_expiry: UInt64?

        public init(_ r: MaintainReport) {
            (run, status, exit_code, files, checked) = (r.run, r.status.rawValue, r.exitCode, r.files, r.censused)
            (healthy, degraded, unrecoverable, waiting_on_grace) = (r.healthy, r.degraded, r.unrecoverable, r.waitingOnGrace)
            (leases_renewed, verified, verified_bytes, corrupt_shares) = (r.leasesRenewed, r.verified, r.verifiedBytes, r.corruptShares)
            (repaired, repair_failed, bytes_read, coverage) = (r.repaired, r.repairFailed, r.bytesRead, r.coverage)
            (servers_answered, servers_silent, seconds, phase_seconds) = (r.serversAnswered, r.serversSilent, r.seconds, r.phases)
            problems = r.problems.map { Problem(cap: $0.capability, level: $0.level == .critical ? "critical" : "warning", what: $0.what) }
            earliest_lease_expiry = r.earliestLease
        }
    }

    /// `grid maintain --report --json`: the history and what needs attention.
    public struct MaintainHistory: Codable, Sendable {
        public struct Run: Codable, Sendable {
            public var id: Int64
            public var started: UInt64
            public var finished: UInt64
            public var status: String
            public var exit_code: Int
            public var summary: String
        }
        public struct Attention: Codable, Sendable {
            public var cap: String
            public var verdict: String
            public var last_checked: UInt64
        }
        public var runs: [Run]
        public var files: [String: Int]
        public var attention: [Attention]

        public init(runs: [MaintenanceLog.Run], files: [String: Int], attention: [MaintenanceLog.FileState]) {
            self.runs = runs.map { Run(id: $0.id, started: $0.started, finished: $0.finished ?? 0, status: $0.status, exit_code: $0.exitCode, summary: $0.summary) }
            self.files = files
            self.attention = attention.map { Attention(cap: $0.capability, verdict: $0.verdict ?? "", last_checked: $0.lastChecked ?? 0) }
        }
    }
}
