import GridDatabase
import GridFormat
import GridSystem

/// What a client has stored: every upload's capability with its size, name and time, in
/// SQLite in the client's node directory (`catalog.sqlite`). The checker and `grid
/// maintain` walk it; `grid list` shows it.
public final class Catalog: Sendable {
    public struct Entry: Sendable, Equatable {
        public var capability: String
        public var size: UInt64
        /// The path or name it was uploaded as ("-" for stdin), or where it came from.
        public var name: String
        /// Unix seconds.
        public var added: UInt64
    }

    let db: Database

    public init(path: String) throws {
        db = try Database(path: path)
        try db.exec("""
            CREATE TABLE IF NOT EXISTS files(cap TEXT PRIMARY KEY, size INTEGER NOT NULL, name TEXT NOT NULL,
                                             added INTEGER NOT NULL);
            """)
    }

    /// Records a file (again: the newest name and time win).
    public func add(_ cap: Capability, name: String, at time: UInt64 = wallClockSeconds()) throws {
        try add([(cap, name)], at: time)
    }

    /// Records many files in one transaction.
    public func add(_ files: [(cap: Capability, name: String)], at time: UInt64 = wallClockSeconds()) throws {
        try add(files.map { (.immutable($0.cap), $0.cap.fileSize, $0.name) }, at: time)
    }

    /// Records files of any kind; `size` is what the capability says for immutable files,
    /// the size written (or 0, unknown) for mutable ones.
    public func add(_ files: [(cap: AnyCapability, size: UInt64, name: String)], at time: UInt64 = wallClockSeconds()) throws {
        try db.transaction {
            for (cap, size, name) in files {
                try db.query("INSERT OR REPLACE INTO files(cap, size, name, added) VALUES (?, ?, ?, ?)",
                             [.text(cap.description), .int(Int64(size)), .text(name), .int(Int64(time))])
            }
        }
    }

    /// Every file, oldest first.
    /// Whether this client stored an immutable file under the convergent key `key`
    /// (its capability starts `URI:CHK:<key>:`).
    public func holds(chkKey key: [UInt8]) throws -> Bool {
        // Every text starting with the prefix sorts between it and the prefix with its
        // last ':' raised to ';'.
        let prefix = "URI:CHK:\(Base32.encode(key))"
        return try db.lock.withLock { _ in
            !(try db.query("SELECT 1 FROM files WHERE cap >= ? AND cap < ? LIMIT 1", [.text(prefix + ":"), .text(prefix + ";")])).isEmpty
        }
    }

    public func entries() throws -> [Entry] {
        try db.lock.withLock { _ in
            try db.query("SELECT cap, size, name, added FROM files ORDER BY added, cap")
        }.map { r in
            Entry(capability: r[0].text ?? "", size: UInt64(r[1].int ?? 0), name: r[2].text ?? "", added: UInt64(r[3].int ?? 0))
        }
    }
}
