import CSQLite
import GridSystem
import Synchronization

/// A failed SQLite call: what was being done and SQLite's message.
public struct DatabaseError: ClassifiedError, Equatable {
    public let message: String
    /// SQLite's primary result code.
    public let code: Int32
    public var errorClass: ErrorClass {
        switch code {
        case SQLITE_FULL: return .noSpace
        case SQLITE_CORRUPT, SQLITE_NOTADB: return .corrupt
        case SQLITE_BUSY, SQLITE_LOCKED: return .conflict
        case SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH: return .denied
        case SQLITE_CANTOPEN: return .notFound
        default: return .io
        }
    }
    public var description: String { message }
}

/// A small wrapper over SQLite's C API: one connection, used under a lock. The storage
/// server keeps its lease index in one; clients will keep catalogs and check results.
public final class Database: @unchecked Sendable {
    let db: OpaquePointer
    public let lock = Mutex<Void>(())
    public let path: String

    public enum Value {
        case int(Int64)
        case blob([UInt8])
        case text(String)
        case double(Double)
        case null
    }

    /// Opens (creating) a database; `readOnly` opens an existing one for reading only and
    /// changes nothing in it (no journal-mode switch), e.g. to watch another process's.
    public init(path: String, readOnly: Bool = false) throws {
        self.path = path
        var handle: OpaquePointer?
        let flags = readOnly ? SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let h = handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "error \(rc)"
            if let h = handle { sqlite3_close(h) }
            throw DatabaseError(message: "cannot open database \(path): \(msg)", code: rc & 0xff)
        }
        db = h
        sqlite3_busy_timeout(db, 5000)
        if readOnly { return }
        try exec("PRAGMA journal_mode=WAL")
        try exec("PRAGMA synchronous=NORMAL")
    }

    /// Prepared statements by SQL text, reused (reset between uses): preparing costs more
    /// than running the small statements the stores issue by the thousand.
    private let statements = Mutex<[String: Statement]>([:])
    /// A prepared statement, used by one caller at a time (taken out of the cache while in use).
    private struct Statement: @unchecked Sendable { let handle: OpaquePointer }

    deinit {
        statements.withLock { for (_, s) in $0 { sqlite3_finalize(s.handle) } }
        sqlite3_close(db)
    }

    /// Takes the cached statement for `sql` (prepared on first use); give it back with `release`.
    private func statement(_ sql: String) throws -> OpaquePointer {
        if let s = statements.withLock({ $0.removeValue(forKey: sql) }) { return s.handle }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK, let s = stmt else { throw error("prepare \(sql)") }
        return s
    }

    private func release(_ s: OpaquePointer, _ sql: String) {
        sqlite3_reset(s)
        sqlite3_clear_bindings(s)
        let kept = statements.withLock { cache -> Bool in
            if cache[sql] == nil && cache.count < 64 { cache[sql] = Statement(handle: s); return true }
            return false
        }
        if !kept { sqlite3_finalize(s) }
    }

    func error(_ what: String) -> DatabaseError {
        DatabaseError(message: "database \(path): \(what): \(String(cString: sqlite3_errmsg(db)))",
                      code: sqlite3_errcode(db) & 0xff)
    }

    public func exec(_ sql: String) throws {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw error(sql) }
    }

    /// Runs one statement with parameters; returns every row.
    @discardableResult
    public func query(_ sql: String, _ params: [Value] = []) throws -> [[Value]] {
        let s = try statement(sql)
        defer { release(s, sql) }
        for (i, p) in params.enumerated() {
            let idx = Int32(i + 1)
            switch p {
            case let .int(v): sqlite3_bind_int64(s, idx, v)
            case let .blob(b): _ = b.withUnsafeBytes { sqlite3_bind_blob(s, idx, $0.baseAddress, Int32(b.count), grid_sqlite_transient()) }
            case let .text(t): sqlite3_bind_text(s, idx, t, -1, grid_sqlite_transient())
            case let .double(d): sqlite3_bind_double(s, idx, d)
            case .null: sqlite3_bind_null(s, idx)
            }
        }
        var rows: [[Value]] = []
        while true {
            let rc = sqlite3_step(s)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error("step \(sql)") }
            var row: [Value] = []
            for c in 0..<sqlite3_column_count(s) {
                switch sqlite3_column_type(s, c) {
                case SQLITE_INTEGER: row.append(.int(sqlite3_column_int64(s, c)))
                case SQLITE_FLOAT: row.append(.double(sqlite3_column_double(s, c)))
                case SQLITE_TEXT: row.append(.text(sqlite3_column_text(s, c).map { String(cString: $0) } ?? ""))
                case SQLITE_BLOB:
                    let n = Int(sqlite3_column_bytes(s, c))
                    if let p = sqlite3_column_blob(s, c) {
                        row.append(.blob(Array(UnsafeRawBufferPointer(start: p, count: n))))
                    } else { row.append(.blob([])) }
                default: row.append(.null)
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// Runs `body` in a transaction under the connection lock.
    @discardableResult
    public func transaction<R>(_ body: () throws -> R) throws -> R {
        try lock.withLock { _ in
            try exec("BEGIN IMMEDIATE")
            do {
                let r = try body()
                try exec("COMMIT")
                return r
            } catch {
                try? exec("ROLLBACK")
                throw error
            }
        }
    }
}

extension Database.Value {
    public var int: Int64? {
        if case let .int(v) = self { return v }
        if case let .double(d) = self, d.isFinite, abs(d) < 9e18 { return Int64(d) }
        return nil
    }
    public var double: Double? {
        if case let .double(d) = self { return d }
        if case let .int(v) = self { return Double(v) }
        return nil
    }
    public var blob: [UInt8]? { if case let .blob(b) = self { return b }; return nil }
    public var text: String? { if case let .text(t) = self { return t }; return nil }
}
