import Foundation
import GridFormat
import GridImmutable
import GridSystem
import GridWire

/// How `grid maintain` works through a catalog.
public struct MaintainOptions: Sendable {
    /// Add or renew this client's lease on every share found.
    public var renewLeases = true
    /// Every file is verified at least once per this many seconds (0: never verify).
    public var verifyPeriod: Double = 30 * 86400
    /// The expected time between runs (the cron schedule): sizes each run's share of
    /// verification, and a lease that expires sooner than this is a warning.
    public var interval: Double = 86400
    /// A server unseen for longer than this counts as lost; before that, the shares it
    /// held at the last census count as temporarily unavailable, not missing.
    public var grace: Double = 86400
    /// Repair when the good shares (or the servers holding distinct ones) fall to
    /// k + margin. nil: half the redundancy, rounded up (7 for 3-of-10).
    public var repairMargin: Int?
    public var repair = true
    /// Stop starting new work after this many seconds; the next run resumes.
    public var maxTime: Double?
    /// Census at most this many files per run (the least recently checked); the next run resumes.
    public var maxFiles: Int?
    /// Stop starting verifications and repairs after reading this many bytes.
    public var maxBytes: UInt64?
    /// Average bytes per second read by verification and repair (nil: no limit).
    public var rateLimit: Double?
    /// Files per census_batch call.
    public var batchSize = 1000
    /// How long a server may take over one census batch before it counts as not answering.
    public var batchTimeout: Double = 30
    public init() {}

    /// The repair threshold for a k-of-n file.
    public func threshold(needed k: Int, total n: Int) -> Int {
        k + (repairMargin ?? max(1, (n - k + 1) / 2))
    }
}

/// What one run of `grid maintain` found and did.
public struct MaintainReport: Sendable {
    public enum Status: String, Sendable {
        /// Every file was censused.
        case complete
        /// A budget (--max-time, --max-bytes) ran out; the next run resumes.
        case budget
    }

    /// A file that needs a person's attention (or got a repair).
    public struct Problem: Sendable {
        public enum Level: Int, Sendable, Comparable {
            case warning = 1, critical = 2
            public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        }
        public var capability: String
        public var level: Level
        public var what: String
    }

    public var run: Int64 = 0
    public var status = Status.complete
    public var files = 0
    public var censused = 0
    public var healthy = 0
    public var degraded = 0
    public var unrecoverable = 0
    /// Files whose standing counted shares on servers in their grace period.
    public var waitingOnGrace = 0
    public var leasesRenewed = 0
    public var verified = 0
    public var verifiedBytes: UInt64 = 0
    public var corruptShares = 0
    public var repaired = 0
    public var repairFailed = 0
    public var bytesRead: UInt64 = 0
    /// Fraction of the catalog's bytes verified within the verify period.
    public var coverage = 0.0
    public var serversAnswered = 0
    public var serversSilent: [String] = []
    /// The earliest lease expiration seen (Unix seconds).
    public var earliestLease: UInt64?
    public var problems: [Problem] = []
    public var seconds = 0.0
    /// Seconds spent in each step: servers (waiting for the server list), census, repair, verify.
    public var phases: [String: Double] = [:]

    /// The Nagios status: 0 all healthy; 1 warning; 2 critical.
    public var exitCode: Int { problems.map(\.level.rawValue).max() ?? 0 }
}

/// `grid maintain`: keeps a catalog of files alive. Per run: a batched census of every
/// file (least recently checked first) that also renews leases; repairs of the files
/// whose good shares have fallen to the repair threshold, most endangered first; then
/// verification of the least recently verified files, enough to cover every file once
/// per verify period. Results and standing go to a `MaintenanceLog`.
public final class Maintainer: Sendable {
    let pool: ServerPool
    let settings: ClientSettings
    let coding: CodingOptions
    let log: MaintenanceLog
    let options: MaintainOptions
    let clock: @Sendable () -> UInt64

    public init(pool: ServerPool, settings: ClientSettings, coding: CodingOptions = CodingOptions(), log: MaintenanceLog,
                options: MaintainOptions, clock: @escaping @Sendable () -> UInt64 = { wallClockSeconds() }) {
        (self.pool, self.settings, self.coding, self.log, self.options, self.clock) = (pool, settings, coding, log, options, clock)
    }

    /// One file's census standing.
    struct Standing {
        var verifier: CHKVerifierCapability
        var present: [String: Set<Int>]
        var pending: [String: Set<Int>]
        var leaseExpires: UInt64?
        var distinctNow: Int { Set(present.values.flatMap { $0 }).count }
        var all: [String: Set<Int>] { present.merging(pending) { a, b in a.union(b) } }
        var verdictNow: Verdict { Maintainer.verdict(present, verifier, happy: 0) }
    }

    static func verdict(_ h: [String: Set<Int>], _ v: CHKVerifierCapability, happy: Int) -> Verdict {
        Verdict(holdings: h, needed: v.needed, total: v.total, happy: happy)
    }

    /// The smaller of distinct shares and servers-of-happiness: how many servers the file
    /// can lose (plus k) before it is gone, the measure compared with the threshold.
    static func strength(_ h: [String: Set<Int>]) -> Int {
        min(Set(h.values.flatMap { $0 }).count, Placement.happiness(h))
    }

    public func run(files entries: [(capability: String, size: UInt64)],
                    progress: @Sendable (String) -> Void = { _ in }) async throws -> MaintainReport {
        let started = monotonicNow()
        var report = MaintainReport()
        let now = clock()
        report.run = try log.beginRun(at: now)
        report.files = entries.count
        let states = try log.files(registering: entries)
        let happy = settings.encoding.happy
        let deadline = options.maxTime.map { started + $0 }
        func outOfTime() -> Bool { deadline.map { monotonicNow() >= $0 } ?? false }
        // How long one file's census, verification or repair may take: what is left of the
        // budget and 30 s more (10 minutes without a budget). Every call inside has its
        // own timeout, but a file needs several, one after another; this bounds the sum.
        func itemLimit() -> Double { deadline.map { max(0, $0 - monotonicNow()) + 30 } ?? 600 }
        func outOfBytes() -> Bool { options.maxBytes.map { report.bytesRead >= $0 } ?? false }

        // Parse; literal files hold their data in the capability and need nothing.
        var byCap: [String: (state: MaintenanceLog.FileState, cap: Capability)] = [:]
        var literal: [(state: MaintenanceLog.FileState, result: MaintenanceLog.FileResult)] = []
        var mutableFiles: [(state: MaintenanceLog.FileState, cap: MutableCapability)] = []
        for s in states {
            if case let .mutable(m)? = try? AnyCapability(parsing: s.capability) {
                mutableFiles.append((s, m))
                continue
            }
            do {
                let cap = try Capability(parsing: s.capability)
                if case .lit = cap {
                    report.healthy += 1
                    report.censused += 1
                    literal.append((s, .init(capability: s.capability, action: "census", verdict: Verdict.healthy.rawValue)))
                    continue
                }
                byCap[s.capability] = (s, cap)
            } catch {
                report.problems.append(.init(capability: s.capability, level: .critical, what: "not a capability grid can check: \(error)"))
            }
        }

        if !literal.isEmpty { try log.recordCensus(run: report.run, literal, at: now) }

        // Servers: the ones announced now, and when each was last seen.
        var mark = monotonicNow()
        func phase(_ name: String) { let t = monotonicNow(); report.phases[name, default: 0] += t - mark; mark = t }
        phase("setup")
        let seen = try log.servers()
        let expected = seen.values.filter { Double($0.lastSeen) + options.grace > Double(now) }.count
        let want = max(expected, settings.encoding.total)
        let known = await pool.waitForServers(enough: want, minimum: want, settle: 1.5, timeout: 15)
        if known.isEmpty && !(byCap.isEmpty && mutableFiles.isEmpty) { throw pool.noServersError() }

        phase("servers")
        // 1. Census (and lease renewal), least recently checked first, in batches.
        let order = Array(byCap.values.sorted { ($0.state.lastChecked ?? 0, $0.state.capability) < ($1.state.lastChecked ?? 0, $1.state.capability) }
            .prefix(options.maxFiles ?? Int.max))
        var standings: [String: Standing] = [:]
        var silent: [ServerRef: String] = [:]
        var answered = Set<String>()
        var index = 0
        while index < order.count {
            if outOfTime() { report.status = .budget; break }
            let batch = order[index..<min(order.count, index + options.batchSize)]
            index += batch.count
            let verifiers: [CHKVerifierCapability] = batch.map {
                switch $0.cap {
                case let .chk(c): return c.verifier
                case let .chkVerifier(v): return v
                case .lit: fatalError("literal files were set aside")
                }
            }
            let ask = known.filter { silent[$0] == nil }
            let got = await pool.censusBatch(storageIndexes: verifiers.map(\.storageIndex), servers: ask,
                                             leaseSecret: options.renewLeases ? settings.leaseSecret : nil, timeout: options.batchTimeout)
            for (s, why) in got.failed { silent[s] = why }
            let at = clock()
            try log.markSeen(got.answers.keys.map { ($0.nodeID, $0.nickname) }, at: at)
            let answeredNow = Set(got.answers.keys.map(\.nodeID))
            answered.formUnion(answeredNow)
            var rows: [(state: MaintenanceLog.FileState, result: MaintenanceLog.FileResult)] = []
            for (i, entry) in batch.enumerated() {
                var present: [String: Set<Int>] = [:]
                var expires: UInt64?
                for (s, holdings) in got.answers {
                    let h = holdings[i]
                    guard !h.shares.isEmpty else { continue }
                    present[s.nodeID] = Set(h.shares.keys)
                    if h.leaseExpiration > 0 {
                        report.leasesRenewed += h.shares.count
                        expires = min(expires ?? UInt64.max, UInt64(h.leaseExpiration))
                    }
                }
                // Shares on servers that did not answer but were seen within the grace period.
                var pending: [String: Set<Int>] = [:]
                for (node, shares) in entry.state.holdings where !answeredNow.contains(node) {
                    if let last = seen[node]?.lastSeen, Double(last) + options.grace > Double(at) { pending[node] = shares }
                }
                let st = Standing(verifier: verifiers[i], present: present, pending: pending, leaseExpires: expires)
                standings[entry.state.capability] = st
                var state = entry.state
                state.holdings = st.all
                state.leaseExpires = expires
                let verdict = Self.verdict(present, verifiers[i], happy: happy)
                rows.append((state, MaintenanceLog.FileResult(
                    capability: state.capability, action: "census", verdict: verdict.rawValue, shares: st.distinctNow,
                    servers: present.count, happiness: Placement.happiness(present),
                    pending: Set(pending.values.flatMap { $0 }).subtracting(present.values.flatMap { $0 }).count,
                    leaseExpires: expires)))
                report.censused += 1
                switch verdict {
                case .healthy: report.healthy += 1
                case .degraded: report.degraded += 1
                case .unrecoverable: report.unrecoverable += 1
                }
                if let e = expires, Double(e) < Double(at) + options.interval {
                    report.problems.append(.init(capability: state.capability, level: .warning,
                        what: "a lease expires in \(Int(Double(e) - Double(at))) s, before the next run is due (the servers' lease duration is shorter than --interval)"))
                }
                report.earliestLease = expires.map { min(report.earliestLease ?? UInt64.max, $0) } ?? report.earliestLease
            }
            try log.recordCensus(run: report.run, rows, at: at)
            progress("census: \(report.censused) of \(report.files) files")
        }
        phase("census")
        report.serversAnswered = answered.count
        report.serversSilent = silent.keys.map(\.nickname).sorted()

        // 2. Repair what has fallen to the threshold, most endangered first.
        var endangered: [(cap: String, margin: Int)] = []
        for (cap, st) in standings {
            let v = st.verifier
            let all = st.all
            let strength = Self.strength(all)
            let belowNow = Self.verdict(st.present, v, happy: happy)
            let allVerdict = Self.verdict(all, v, happy: happy)
            if !st.pending.isEmpty && belowNow != .healthy { report.waitingOnGrace += 1 }
            if allVerdict == .unrecoverable {
                report.problems.append(.init(capability: cap, level: .critical,
                    what: "unrecoverable: \(Set(all.values.flatMap { $0 }).count) of the \(v.needed) shares needed can be found"))
            } else if allVerdict != .healthy && strength <= options.threshold(needed: v.needed, total: v.total) {
                endangered.append((cap, strength - v.needed))
            } else if belowNow != .healthy {
                let waiting = st.pending.isEmpty ? "" : " (\(st.pending.count) server(s) holding shares are unreachable but within their grace period)"
                report.problems.append(.init(capability: cap, level: .warning,
                    what: "\(belowNow.rawValue): \(st.distinctNow) of \(v.total) shares on \(st.present.count) servers, happiness \(Placement.happiness(st.present)), above the repair threshold\(waiting)"))
            }
        }
        endangered.sort { ($0.margin, $0.cap) < ($1.margin, $1.cap) }
        let repairer = Repairer(checker: Checker(pool: pool, settings: settings, coding: coding))
        var repairedCaps = Set<String>()
        var verifiedNow = Set<String>()
        for (capText, _) in endangered {
            guard let (state, cap) = byCap[capText] else { continue }
            let v = standings[capText]!.verifier
            let threshold = options.threshold(needed: v.needed, total: v.total)
            guard options.repair, case .chk = cap, !outOfTime(), !outOfBytes() else {
                let why = !options.repair ? "repair is off" : (cap.isVerifyOnly ? "only a verify capability is known (repair needs the read capability)"
                                                                                 : "the run's budget is spent; the next run will repair it")
                report.problems.append(.init(capability: capText, level: .critical,
                    what: "below the repair threshold (\(threshold) shares) and not repaired: \(why)"))
                try log.record(run: report.run, .init(capability: capText, action: "repair", verdict: "skipped", error: why), verified: false, at: clock())
                continue
            }
            progress("repair: \(capText.prefix(40))…")
            let t0 = monotonicNow()
            do {
                // The census found what is missing; the download checks what it reads (the
                // scheduled verification finds rot elsewhere).
                let r = try await withTimeLimit(itemLimit(), "repairing \(capText.prefix(40))…") { try await repairer.repair(cap, verify: false) }
                report.bytesRead += state.size * 2
                try await pace(bytes: state.size * 2, since: t0)
                let strength = Self.strength(r.after.shares.reduce(into: [String: Set<Int>]()) { acc, e in for s in e.value { acc[s, default: []].insert(e.key) } })
                let still = r.after.verdict != .healthy && strength <= threshold
                report.repaired += r.placed.isEmpty ? 0 : 1
                repairedCaps.insert(capText)
                report.problems.append(.init(capability: capText, level: still ? .critical : .warning,
                    what: "repaired: placed \(r.placed.values.map(\.count).reduce(0, +)) share(s); now \(r.after.verdict.rawValue), \(r.after.shares.count) of \(v.total) shares, happiness \(r.after.happiness)"
                        + (still ? "; STILL below the repair threshold" : "")))
                try recordRepair(r, capText, run: report.run, verified: false)
            } catch {
                try recordRepairFailure(error, capText, &report)
            }
        }

        phase("repair")
        // 3. Verify the least recently verified files: at least the overdue ones, and this
        // run's share of the catalog (interval / period of its bytes).
        if options.verifyPeriod > 0 {
            let totalBytes = byCap.values.reduce(UInt64(0)) { $0 + $1.state.size }
            let quota = UInt64(Double(totalBytes) * min(1, options.interval / options.verifyPeriod))
            let overdueBefore = Double(now) - options.verifyPeriod
            let candidates = byCap.values.filter { !repairedCaps.contains($0.state.capability) && standings[$0.state.capability] != nil }
                .sorted { ($0.state.lastVerified ?? 0, $0.state.capability) < ($1.state.lastVerified ?? 0, $1.state.capability) }
            var spent: UInt64 = 0
            let checker = Checker(pool: pool, settings: settings, coding: coding)
            for (state, cap) in candidates {
                let overdue = Double(state.lastVerified ?? 0) <= overdueBefore
                if !overdue && spent >= quota { break }
                if outOfTime() || outOfBytes() { report.status = .budget; break }
                if standings[state.capability]!.verdictNow == .unrecoverable { continue }
                progress("verify: \(state.capability.prefix(40))…")
                let t0 = monotonicNow()
                do {
                    let r = try await withTimeLimit(itemLimit(), "verifying \(state.capability.prefix(40))…") { try await checker.check(cap, verify: true) }
                    let read = state.size * UInt64(max(1, r.total)) / UInt64(max(1, r.needed))
                    spent += state.size
                    report.bytesRead += read
                    report.verifiedBytes += state.size
                    report.verified += 1
                    verifiedNow.insert(state.capability)
                    report.corruptShares += r.corrupt.count
                    try log.record(run: report.run, .init(
                        capability: state.capability, action: "verify", verdict: r.verdict.rawValue, shares: r.shares.count,
                        servers: r.servers, happiness: r.happiness,
                        corrupt: r.corrupt.map { "\($0.share)@\($0.server): \($0.reason)" }.joined(separator: "; ")),
                        verified: true, at: clock())
                    try await pace(bytes: read, since: t0)
                    if r.verdict != .healthy && (!r.corrupt.isEmpty || r.decoded == false) {
                        // Damage cost the file a share: replace it now, while we know of it.
                        // (A bad copy of a share that has a good copy elsewhere is reported
                        // to its server, and counted, but leaves the file healthy.)
                        if options.repair, case .chk = cap {
                            let rr = try await withTimeLimit(itemLimit(), "repairing \(state.capability.prefix(40))…") { try await repairer.repair(cap, verified: r) }
                            report.repaired += rr.placed.isEmpty ? 0 : 1
                            report.problems.append(.init(capability: state.capability, level: rr.after.verdict == .unrecoverable ? .critical : .warning,
                                what: "verify found \(r.corrupt.count) corrupt share(s) (reported to their servers); repaired: now \(rr.after.verdict.rawValue)"))
                            try log.record(run: report.run, .init(
                                capability: state.capability, action: "repair", verdict: rr.after.verdict.rawValue, shares: rr.after.shares.count,
                                servers: rr.after.servers, happiness: rr.after.happiness,
                                placed: rr.placed.sorted { $0.key < $1.key }.map { "\($0.key)@" + $0.value.joined(separator: "+") }.joined(separator: ",")),
                                verified: true, at: clock())
                        } else {
                            report.problems.append(.init(capability: state.capability, level: .warning,
                                what: "verify found \(r.corrupt.count) corrupt share(s) (reported to their servers); not repaired (\(options.repair ? "verify capability only" : "repair is off"))"))
                        }
                    }
                } catch {
                    report.problems.append(.init(capability: state.capability, level: .warning, what: "verify failed: \(error)"))
                    try log.record(run: report.run, .init(capability: state.capability, action: "verify", verdict: "failed", error: "\(error)"),
                                   verified: false, at: clock())
                }
            }
            // Coverage: the bytes verified within the period, after this run.
            let covered = byCap.values.filter { verifiedNow.contains($0.state.capability) || Double($0.state.lastVerified ?? 0) > overdueBefore }
                .reduce(UInt64(0)) { $0 + $1.state.size }
            report.coverage = totalBytes == 0 ? 1 : Double(covered) / Double(totalBytes)
        }
        phase("verify")
        try await maintainMutable(mutableFiles, &report, now: now, outOfTime: outOfTime, itemLimit: itemLimit, progress: progress)
        phase("mutable")
        if report.censused < report.files { report.status = .budget }
        report.seconds = monotonicNow() - started
        try log.finishRun(report.run, status: report.status.rawValue, exitCode: report.exitCode, summary: Self.summary(report), at: clock())
        return report
    }

    /// Mutable files, one at a time, least recently checked first: a census by version
    /// with lease renewal (verifying every share when the file's verification is due);
    /// a repair when the file's version has fallen to the repair threshold or a share of
    /// it was found corrupt, if the write capability is known (servers take mutable shares
    /// only with the file's write enabler).
    func maintainMutable(_ files: [(state: MaintenanceLog.FileState, cap: MutableCapability)], _ report: inout MaintainReport, now: UInt64,
                         outOfTime: () -> Bool, itemLimit: () -> Double, progress: @Sendable (String) -> Void) async throws {
        let checker = Checker(pool: pool, settings: settings, coding: coding)
        let repairer = Repairer(checker: checker)
        let ordered = files.sorted { ($0.state.lastChecked ?? 0, $0.state.capability) < ($1.state.lastChecked ?? 0, $1.state.capability) }
            .prefix(options.maxFiles ?? Int.max)
        for (state, cap) in ordered {
            if outOfTime() { report.status = .budget; break }
            let capText = state.capability
            let due = options.verifyPeriod > 0 && Double(state.lastVerified ?? 0) <= Double(now) - options.verifyPeriod
            progress("mutable: \(capText.prefix(40))…")
            let t0 = monotonicNow()
            do {
                let renew = options.renewLeases
                let r = try await withTimeLimit(itemLimit(), "checking \(capText.prefix(40))…") { try await checker.check(cap, verify: due, addLease: renew) }
                report.censused += 1
                report.leasesRenewed += r.leasesRenewed
                var holdings: [String: Set<Int>] = [:]
                for (n, ids) in r.shares { for id in ids { holdings[id, default: []].insert(n) } }
                var st = state
                st.holdings = holdings
                let result = MaintenanceLog.FileResult(capability: capText, action: due ? "verify" : "census", verdict: r.verdict.rawValue,
                                                       shares: r.shares.count, servers: r.servers, happiness: r.happiness,
                                                       corrupt: r.corrupt.map { "\($0.share)@\($0.server): \($0.reason)" }.joined(separator: "; "))
                try log.recordCensus(run: report.run, [(st, result)], at: clock())
                if due {
                    try log.record(run: report.run, result, verified: true, at: clock())
                    report.verified += 1
                    report.verifiedBytes += state.size
                    report.bytesRead += state.size * UInt64(max(1, r.total)) / UInt64(max(1, r.needed))
                    report.corruptShares += r.corrupt.count
                    try await pace(bytes: state.size * UInt64(max(1, r.total)) / UInt64(max(1, r.needed)), since: t0)
                }
                switch r.verdict {
                case .healthy: report.healthy += 1
                case .degraded: report.degraded += 1
                case .unrecoverable: report.unrecoverable += 1
                }
                let threshold = options.threshold(needed: r.needed, total: r.total)
                let strength = Self.strength(holdings)
                let stale = r.staleShares > 0 ? ", \(r.staleShares) stale share(s) of other versions" : ""
                if r.verdict == .unrecoverable {
                    report.problems.append(.init(capability: capText, level: .critical,
                        what: "unrecoverable: \(r.shares.count) of the \(r.needed) shares needed of the file's version can be found"))
                } else if r.verdict != .healthy && (strength <= threshold || !r.corrupt.isEmpty) {
                    guard options.repair, cap.writekey != nil, !outOfTime() else {
                        let why = !options.repair ? "repair is off" : cap.writekey == nil ? "only a read-only or verify capability is known (repairing a mutable file needs its write capability)"
                            : "the run's budget is spent; the next run will repair it"
                        report.problems.append(.init(capability: capText, level: .critical,
                            what: "below the repair threshold (\(threshold) shares) and not repaired: \(why)"))
                        try log.record(run: report.run, .init(capability: capText, action: "repair", verdict: "skipped", error: why), verified: false, at: clock())
                        continue
                    }
                    do {
                        let rr = try await withTimeLimit(itemLimit(), "repairing \(capText.prefix(40))…") { try await repairer.repair(cap) }
                        report.repaired += rr.placed.isEmpty ? 0 : 1
                        report.problems.append(.init(capability: capText, level: rr.after.verdict == .healthy ? .warning : .critical,
                            what: "repaired: placed \(rr.placed.values.map(\.count).reduce(0, +)) share(s); now \(rr.after.verdict.rawValue), \(rr.after.shares.count) of \(rr.after.total) shares, happiness \(rr.after.happiness)"))
                        try recordRepair(rr, capText, run: report.run, verified: true)
                    } catch {
                        try recordRepairFailure(error, capText, &report)
                    }
                } else if r.verdict != .healthy {
                    report.problems.append(.init(capability: capText, level: .warning,
                        what: "\(r.verdict.rawValue): \(r.shares.count) of \(r.total) shares of the file's version on \(r.servers) servers, happiness \(r.happiness)\(stale), above the repair threshold"))
                }
            } catch {
                report.problems.append(.init(capability: capText, level: .warning, what: "check failed: \(error)"))
                try log.record(run: report.run, .init(capability: capText, action: "census", verdict: "failed", error: "\(error)"), verified: false, at: clock())
            }
        }
    }

    /// Records a repair in the maintenance log.
    func recordRepair(_ r: RepairResult, _ capText: String, run: Int64, verified: Bool) throws {
        try log.record(run: run, .init(
            capability: capText, action: "repair", verdict: r.after.verdict.rawValue, shares: r.after.shares.count,
            servers: r.after.servers, happiness: r.after.happiness,
            corrupt: r.before.corrupt.map { "\($0.share)@\($0.server)" }.joined(separator: ","),
            placed: r.placed.sorted { $0.key < $1.key }.map { "\($0.key)@" + $0.value.joined(separator: "+") }.joined(separator: ",")),
            verified: verified, at: clock())
    }

    /// Counts, reports and records a repair that failed.
    func recordRepairFailure(_ error: Error, _ capText: String, _ report: inout MaintainReport) throws {
        report.repairFailed += 1
        report.problems.append(.init(capability: capText, level: .critical, what: "repair failed: \(error)"))
        try log.record(run: report.run, .init(capability: capText, action: "repair", verdict: "failed", error: "\(error)"), verified: false, at: clock())
    }

    /// Sleeps as long as it takes for `bytes` read since `t0` to stay under the rate limit.
    func pace(bytes: UInt64, since t0: Double) async throws {
        guard let limit = options.rateLimit, limit > 0 else { return }
        let wait = Double(bytes) / limit - (monotonicNow() - t0)
        if wait > 0 { try await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
    }

    /// One line for the runs table and `--report`.
    public static func summary(_ r: MaintainReport) -> String {
        "\(r.censused)/\(r.files) checked: \(r.healthy) healthy, \(r.degraded) degraded, \(r.unrecoverable) unrecoverable; "
            + "\(r.repaired) repaired\(r.repairFailed > 0 ? " (\(r.repairFailed) failed)" : ""); \(r.verified) verified "
            + "(\(r.corruptShares) corrupt shares); coverage \(Int((r.coverage * 100).rounded()))%; "
            + "\(r.leasesRenewed) leases renewed; \(String(format: "%.1f", r.seconds)) s"
    }
}

/// The result of `op`, or an `.unavailable` error once `seconds` have passed, whichever
/// comes first. On time-out `op` is cancelled and left to end on its own: the caller goes
/// on at once (a cron job's budget is a promise, whatever one server or one file does).
func withTimeLimit<T: Sendable>(_ seconds: Double, _ what: String, _ op: @escaping @Sendable () async throws -> T) async throws -> T {
    let race = TimeLimitRace<T>()
    return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, Error>) in
        race.lock.lock()
        race.cont = cont
        race.tasks = [
            Task { do { race.finish(.success(try await op())) } catch { race.finish(.failure(error)) } },
            Task {
                try? await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
                if !Task.isCancelled {
                    race.finish(.failure(GridError(.unavailable, "\(what) did not finish within \(Int(seconds)) s; given up for this run")))
                }
            },
        ]
        race.lock.unlock()
    }
}

/// The state `withTimeLimit` shares between its operation, its timer and its caller.
private final class TimeLimitRace<T: Sendable>: @unchecked Sendable {
    let lock = NSLock()
    var cont: CheckedContinuation<T, Error>?
    var tasks: [Task<Void, Never>] = []
    func finish(_ r: Result<T, Error>) {
        lock.lock()
        let c = cont
        cont = nil
        let others = tasks
        lock.unlock()
        guard let c else { return }
        for t in others { t.cancel() }
        c.resume(with: r)
    }
}
