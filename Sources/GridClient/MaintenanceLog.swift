import GridDatabase
import GridFormat
import GridSystem

/// What `grid maintain` remembers between runs, in SQLite (NODEDIR/maintain.sqlite):
/// each file's last census and verification, when each server was last seen, and every
/// run with its per-file results. The one owner of that schema (docs/operations.md).
public final class MaintenanceLog: Sendable {
    /// One file's standing as of its last census.
    public struct FileState: Sendable, Equatable {
        public var capability: String
        public var size: UInt64
        /// Unix seconds; nil when never done.
        public var lastChecked: UInt64?
        public var lastVerified: UInt64?
        public var verdict: String?
        /// Node id → share numbers it held at the last census (the shares a server in its
        /// grace period is still credited with).
        public var holdings: [String: Set<Int>]
        public var leaseExpires: UInt64?
    }

    /// One file's result in one run.
    public struct FileResult: Sendable {
        public var capability: String
        /// census, verify or repair.
        public var action: String
        public var verdict: String
        public var shares: Int
        public var servers: Int
        public var happiness: Int
        /// Shares credited to servers in their grace period (not answering, not yet lost).
        public var pending: Int
        public var corrupt: String
        public var placed: String
        public var leaseExpires: UInt64?
        public var error: String
        public init(capability: String, action: String, verdict: String, shares: Int = 0, servers: Int = 0, happiness: Int = 0,
                    pending: Int = 0, corrupt: String = "", placed: String = "", leaseExpires: UInt64? = nil, error: String = "") {
            (self.capability, self.action, self.verdict, self.shares, self.servers, self.happiness) = (capability, action, verdict, shares, servers, happiness)
            (self.pending, self.corrupt, self.placed, self.leaseExpires, self.error) = (pending, corrupt, placed, leaseExpires, error)
        }
    }

    /// One run, as `--report` shows it.
    public struct Run: Sendable {
        public var id: Int64
        public var started: UInt64
        public var finished: UInt64?
        public var status: String
        public var exitCode: Int
        public var summary: String
    }

    let db: Database

    public init(path: String) throws {
        db = try Database(path: path)
        try db.exec("""
            CREATE TABLE IF NOT EXISTS files(cap TEXT PRIMARY KEY, size INTEGER NOT NULL, last_checked INTEGER,
                                             last_verified INTEGER, verdict TEXT, holdings TEXT NOT NULL DEFAULT '',
                                             lease_expires INTEGER);
            CREATE TABLE IF NOT EXISTS servers(node_id TEXT PRIMARY KEY, nickname TEXT NOT NULL, last_seen INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY AUTOINCREMENT, started INTEGER NOT NULL, finished INTEGER,
                                            status TEXT NOT NULL, exit_code INTEGER NOT NULL DEFAULT 3,
                                            summary TEXT NOT NULL DEFAULT '');
            CREATE TABLE IF NOT EXISTS results(run INTEGER NOT NULL, cap TEXT NOT NULL, action TEXT NOT NULL,
                                               verdict TEXT NOT NULL, shares INTEGER NOT NULL, servers INTEGER NOT NULL,
                                               happiness INTEGER NOT NULL, pending INTEGER NOT NULL, corrupt TEXT NOT NULL,
                                               placed TEXT NOT NULL, lease_expires INTEGER, error TEXT NOT NULL,
                                               at INTEGER NOT NULL);
            CREATE INDEX IF NOT EXISTS results_by_run ON results(run);
            CREATE INDEX IF NOT EXISTS results_by_cap ON results(cap);
            """)
    }

    // MARK: Holdings as text ("nodeid=0,3;nodeid=1"): encoded and decoded here only.

    static func encode(_ h: [String: Set<Int>]) -> String {
        h.filter { !$0.value.isEmpty }.sorted { $0.key < $1.key }
            .map { "\($0.key)=" + $0.value.sorted().map(String.init).joined(separator: ",") }.joined(separator: ";")
    }

    static func decode(_ s: String) -> [String: Set<Int>] {
        var out: [String: Set<Int>] = [:]
        for part in s.split(separator: ";") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { continue }
            let shares = kv[1].split(separator: ",").compactMap { Int($0) }.filter { $0 >= 0 && $0 < 256 }
            if !shares.isEmpty { out[String(kv[0])] = Set(shares) }
        }
        return out
    }

    // MARK: Files

    /// Makes sure every file has a row (new ones never checked); returns every file's state.
    public func files(registering entries: [(capability: String, size: UInt64)]) throws -> [FileState] {
        try db.transaction {
            for e in entries {
                try db.query("INSERT OR IGNORE INTO files(cap, size) VALUES (?, ?)", [.text(e.capability), .int(Int64(e.size))])
            }
        }
        let wanted = Set(entries.map(\.capability))
        return try allFiles().filter { wanted.contains($0.capability) }
    }

    /// Every file ever maintained, with its standing.
    public func allFiles() throws -> [FileState] {
        try db.lock.withLock { _ in
            try db.query("SELECT cap, size, last_checked, last_verified, verdict, holdings, lease_expires FROM files")
        }.map { r in
            FileState(capability: r[0].text ?? "", size: UInt64(max(0, r[1].int ?? 0)), lastChecked: r[2].int.map { UInt64(max(0, $0)) },
                      lastVerified: r[3].int.map { UInt64(max(0, $0)) }, verdict: r[4].text,
                      holdings: Self.decode(r[5].text ?? ""), leaseExpires: r[6].int.map { UInt64(max(0, $0)) })
        }
    }

    /// Records a batch of census results (and each file's new standing) in one transaction.
    public func recordCensus(run: Int64, _ rows: [(state: FileState, result: FileResult)], at now: UInt64) throws {
        try db.transaction {
            for (s, r) in rows {
                try db.query("UPDATE files SET last_checked = ?, verdict = ?, holdings = ?, lease_expires = ? WHERE cap = ?",
                             [.int(Int64(now)), .text(r.verdict), .text(Self.encode(s.holdings)),
                              s.leaseExpires.map { .int(Int64($0)) } ?? .null, .text(s.capability)])
                try insert(run, r, now)
            }
        }
    }

    /// Records a verification or repair of one file.
    public func record(run: Int64, _ r: FileResult, verified: Bool, at now: UInt64) throws {
        try db.transaction {
            if verified {
                try db.query("UPDATE files SET last_verified = ?, verdict = ? WHERE cap = ?", [.int(Int64(now)), .text(r.verdict), .text(r.capability)])
            } else {
                try db.query("UPDATE files SET verdict = ? WHERE cap = ?", [.text(r.verdict), .text(r.capability)])
            }
            try insert(run, r, now)
        }
    }

    func insert(_ run: Int64, _ r: FileResult, _ now: UInt64) throws {
        try db.query("""
            INSERT INTO results(run, cap, action, verdict, shares, servers, happiness, pending, corrupt, placed, lease_expires, error, at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, [.int(run), .text(r.capability), .text(r.action), .text(r.verdict), .int(Int64(r.shares)), .int(Int64(r.servers)),
                  .int(Int64(r.happiness)), .int(Int64(r.pending)), .text(r.corrupt), .text(r.placed),
                  r.leaseExpires.map { .int(Int64($0)) } ?? .null, .text(r.error), .int(Int64(now))])
    }

    // MARK: Servers

    /// Node id → (nickname, last seen).
    public func servers() throws -> [String: (nickname: String, lastSeen: UInt64)] {
        var out: [String: (nickname: String, lastSeen: UInt64)] = [:]
        for r in try db.lock.withLock({ _ in try db.query("SELECT node_id, nickname, last_seen FROM servers") }) {
            if let id = r[0].text { out[id] = (r[1].text ?? "", UInt64(max(0, r[2].int ?? 0))) }
        }
        return out
    }

    public func markSeen(_ servers: [(nodeID: String, nickname: String)], at now: UInt64) throws {
        try db.transaction {
            for s in servers {
                try db.query("INSERT OR REPLACE INTO servers(node_id, nickname, last_seen) VALUES (?, ?, ?)",
                             [.text(s.nodeID), .text(s.nickname), .int(Int64(now))])
            }
        }
    }

    // MARK: Runs

    public func beginRun(at now: UInt64) throws -> Int64 {
        try db.transaction {
            try db.query("INSERT INTO runs(started, status) VALUES (?, 'running')", [.int(Int64(now))])
            return try db.query("SELECT last_insert_rowid()").first?[0].int ?? 0
        }
    }

    public func finishRun(_ id: Int64, status: String, exitCode: Int, summary: String, at now: UInt64) throws {
        try db.transaction {
            try db.query("UPDATE runs SET finished = ?, status = ?, exit_code = ?, summary = ? WHERE id = ?",
                         [.int(Int64(now)), .text(status), .int(Int64(exitCode)), .text(summary), .int(id)])
            // Census rows are kept for the last 60 runs; verifications and repairs for good.
            try db.query("DELETE FROM results WHERE action = 'census' AND run <= ?", [.int(id - 60)])
        }
    }

    /// The latest runs, newest first.
    public func runs(limit: Int) throws -> [Run] {
        try db.lock.withLock { _ in
            try db.query("SELECT id, started, finished, status, exit_code, summary FROM runs ORDER BY id DESC LIMIT ?", [.int(Int64(limit))])
        }.map { r in
            Run(id: r[0].int ?? 0, started: UInt64(max(0, r[1].int ?? 0)), finished: r[2].int.map { UInt64(max(0, $0)) },
                status: r[3].text ?? "", exitCode: Int(r[4].int ?? 3), summary: r[5].text ?? "")
        }
    }

    /// Every result of one run.
    public func results(run: Int64) throws -> [FileResult] {
        try db.lock.withLock { _ in
            try db.query("""
                SELECT cap, action, verdict, shares, servers, happiness, pending, corrupt, placed, lease_expires, error
                FROM results WHERE run = ? ORDER BY rowid
                """, [.int(run)])
        }.map { r in
            FileResult(capability: r[0].text ?? "", action: r[1].text ?? "", verdict: r[2].text ?? "", shares: Int(r[3].int ?? 0),
                       servers: Int(r[4].int ?? 0), happiness: Int(r[5].int ?? 0), pending: Int(r[6].int ?? 0),
                       corrupt: r[7].text ?? "", placed: r[8].text ?? "", leaseExpires: r[9].int.map { UInt64(max(0, $0)) },
                       error: r[10].text ?? "")
        }
    }
}
