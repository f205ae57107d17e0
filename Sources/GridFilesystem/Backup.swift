import Foundation
import GridClient
import GridCrypto
import GridDatabase
import GridDirectory
import GridFormat
import GridImmutable
import GridNode
import GridSystem

/// Tahoe's backup database (`NODEDIR/private/backupdb.sqlite`, schema version 2): which
/// local file (absolute path, size, integer mtime and ctime) was uploaded as which
/// capability, and which immutable directory was made for which contents. A Tahoe
/// user's database works as it is. grid adds one table of its own beside Tahoe's
/// (`grid_file_hashes`: the SHA-256 of each file uploaded), so a file whose timestamps
/// changed but whose bytes did not (chmod, touch) is recognized without an upload.
public final class BackupDB: @unchecked Sendable {
    let db: Database
    public let path: String

    public static let schema = """
        CREATE TABLE version (version INTEGER);
        CREATE TABLE local_files (path VARCHAR(1024) PRIMARY KEY, size INTEGER, mtime NUMBER, ctime NUMBER, fileid INTEGER);
        CREATE TABLE caps (fileid INTEGER PRIMARY KEY AUTOINCREMENT, filecap VARCHAR(256) UNIQUE);
        CREATE TABLE last_upload (fileid INTEGER PRIMARY KEY, last_uploaded TIMESTAMP, last_checked TIMESTAMP);
        CREATE TABLE directories (dirhash varchar(256) PRIMARY KEY, dircap varchar(256), last_uploaded TIMESTAMP, last_checked TIMESTAMP);
        INSERT INTO version (version) VALUES (2);
        """

    public init(path: String) throws {
        self.path = path
        db = try Database(path: path)
        let tables = Set(try db.query("SELECT name FROM sqlite_master WHERE type='table'").compactMap { $0.first?.text })
        if !tables.contains("version") {
            try db.transaction { try db.exec(Self.schema) }
        } else {
            let v = try db.query("SELECT version FROM version").first?.first?.int ?? 0
            if v == 1 {
                try db.transaction {
                    try db.exec("CREATE TABLE directories (dirhash varchar(256) PRIMARY KEY, dircap varchar(256), last_uploaded TIMESTAMP, last_checked TIMESTAMP); UPDATE version SET version=2;")
                }
            } else if v != 2 {
                throw GridError(.incompatible, "\(path) is a backup database of version \(v); this grid knows versions 1 and 2")
            }
        }
        try db.exec("CREATE TABLE IF NOT EXISTS grid_file_hashes (filecap VARCHAR(256) PRIMARY KEY, sha256 TEXT NOT NULL)")
    }

    /// The recorded upload of `path`: its capability, whether its size and timestamps
    /// still match, and its content hash if grid recorded one.
    public func lookup(path: String, size: UInt64, mtime: Int64, ctime: Int64) throws -> (cap: String, unchanged: Bool, sha256: String?)? {
        let rows = try db.lock.withLock { _ in
            try db.query("""
                SELECT l.size, l.mtime, l.ctime, c.filecap, h.sha256 FROM local_files l JOIN caps c ON c.fileid = l.fileid
                JOIN last_upload u ON u.fileid = l.fileid LEFT JOIN grid_file_hashes h ON h.filecap = c.filecap WHERE l.path = ?
                """, [.text(path)])
        }
        guard let r = rows.first, let cap = r[3].text else { return nil }
        let unchanged = r[0].int == Int64(size) && r[1].int == mtime && r[2].int == ctime
        return (cap, unchanged, r[4].text)
    }

    public func didUpload(path: String, size: UInt64, mtime: Int64, ctime: Int64, cap: String, sha256: String?) throws {
        let now = wallClock()
        try db.transaction {
            try db.query("INSERT OR IGNORE INTO caps (filecap) VALUES (?)", [.text(cap)])
            guard let id = try db.query("SELECT fileid FROM caps WHERE filecap = ?", [.text(cap)]).first?.first?.int else {
                throw GridError(.internal, "backupdb: no fileid for a capability just inserted")
            }
            try db.query("INSERT OR REPLACE INTO last_upload VALUES (?, ?, ?)", [.int(id), .double(now), .double(now)])
            try db.query("INSERT OR REPLACE INTO local_files VALUES (?, ?, ?, ?, ?)",
                         [.text(path), .int(Int64(size)), .int(mtime), .int(ctime), .int(id)])
            if let sha256 { try db.query("INSERT OR REPLACE INTO grid_file_hashes VALUES (?, ?)", [.text(cap), .text(sha256)]) }
        }
    }

    public func directory(_ dirhash: String) throws -> String? {
        try db.lock.withLock { _ in try db.query("SELECT dircap FROM directories WHERE dirhash = ?", [.text(dirhash)]) }.first?.first?.text
    }

    public func didCreateDirectory(_ dirhash: String, cap: String) throws {
        let now = wallClock()
        try db.transaction {
            try db.query("REPLACE INTO directories VALUES (?, ?, ?, ?)", [.text(dirhash), .text(cap), .double(now), .double(now)])
        }
    }

    /// Tahoe's `backupdb_dirhash`, over names, capabilities and (grid) metadata.
    public static func dirhash(_ entries: [(name: String, cap: String, metadata: String)]) -> String {
        var data: [UInt8] = []
        for e in entries.sorted(by: { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }) {
            data += Netstring.encode(Array(e.name.utf8)) + Netstring.encode(Array(e.cap.utf8)) + Netstring.encode(Array(e.metadata.utf8))
        }
        return Base32.encode(TahoeHash.tagged("allmydata_backupdb_dirhash_v1", data))
    }
}

extension GridFilesystem {
    public struct BackupOptions: Sendable {
        public var excludes: [String] = []
        public var ignoreTimestamps = false
        public init() {}
        /// Tahoe's --exclude-vcs patterns.
        public static let vcsPatterns = ["CVS", "RCS", "SCCS", ".git", ".gitignore", ".cvsignore", ".svn", ".arch-ids", "{arch}",
                                         "=RELEASE-ID", "=meta-update", "=update", ".bzr", ".bzrignore", ".bzrtags", ".hg", ".hgignore", "_darcs"]
    }

    public struct BackupReport: Codable, Sendable {
        public var filesUploaded = 0, filesReused = 0, filesSkipped = 0
        public var directoriesCreated = 0, directoriesReused = 0, directoriesSkipped = 0
        /// Files whose timestamps changed but whose bytes did not (recognized by hash).
        public var filesUnchangedByHash = 0
        public var symlinks = 0
        public var bytesUploaded: UInt64 = 0
        public var skipped: [String] = []
        public var archive = ""
        public var dircap = ""
        public var seconds = 0.0
        public static var empty: BackupReport { BackupReport() }

        enum CodingKeys: String, CodingKey {
            case filesUploaded = "files_uploaded", filesReused = "files_reused", filesSkipped = "files_skipped"
            case directoriesCreated = "directories_created", directoriesReused = "directories_reused"
            case directoriesSkipped = "directories_skipped", filesUnchangedByHash = "files_unchanged_by_hash", symlinks
            case bytesUploaded = "bytes_uploaded", skipped, archive, dircap, seconds
        }
    }

    /// Tahoe's `get_local_metadata`: ctime and mtime as Python's float seconds, then
    /// st_mode, st_ino, st_dev, st_uid, st_gid.
    static func localMetadata(_ st: FileStatus) -> JSONValue {
        func seconds(_ t: (seconds: Int64, nanoseconds: Int64)) -> Double { Double(t.seconds) + Double(t.nanoseconds) * 1e-9 }
        return .object([
            ("ctime", .double(seconds(st.ctime))), ("mtime", .double(seconds(st.mtime))),
            ("st_mode", .int(String(st.mode))), ("st_ino", .int(String(st.inode))), ("st_dev", .int(String(st.device))),
            ("st_uid", .int(String(st.uid))), ("st_gid", .int(String(st.gid))),
        ])
    }

    static func excluded(_ name: String, _ patterns: [String]) -> Bool {
        patterns.contains { fnmatch($0, name, 0) == 0 }
    }

    /// Tahoe's backup: `local` as a tree of immutable directories, linked as
    /// `TO/Archives/<UTC time>` and `TO/Latest`. Files and directories the backup
    /// database knows unchanged are reused; each upload is recorded as soon as it is done,
    /// so a backup killed half way resumes without uploading anything twice.
    public func backup(from local: String, to target: GridPath, options: BackupOptions = BackupOptions(),
                       progress: (@Sendable (BackupReport) -> Void)? = nil) async throws -> BackupReport {
        let t0 = monotonicNow()
        let lock = try NodeLock(directory: nodeDirectory, name: "backup.lock", busy: "another grid backup is running for \(nodeDirectory)")
        defer { withExtendedLifetime(lock) {} }
        let root = FileSystem.absolute(local).trimmingSlashesAtEnd()
        guard let st = try FileSystem.status(root), st.kind == .directory else {
            throw GridError(.notFound, "\(local) is not a directory")
        }
        let db = try BackupDB(path: nodeDirectory + "/private/backupdb.sqlite")
        let archives = try await ensureDirectory(target.appending("Archives"))
        let report = Locked(BackupReport.empty)
        let cap = try await backupDirectory(root, db: db, options: options, report: report, progress: progress)
        let now = Date(timeIntervalSince1970: wallClock())
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'_'HH:mm:ss'Z'"
        let stamp = f.string(from: now)
        // Two backups within one second: the later gets a suffix instead of replacing the
        // earlier's link (Tahoe replaces it).
        let chosen = Locked(stamp)
        try await modify(archives) { c, _ in
            var name = stamp
            var n = 1
            while let e = try c.entry(named: name), e.capability != .directory(cap) {
                n += 1
                name = "\(stamp)-\(n)"
            }
            chosen.value = name
            c.set(DirectoryEntry(name: name, capability: .directory(cap), metadata: Self.linkMetadata(old: nil, new: nil, now: Self.now())))
        }
        let name = chosen.value
        try await link(at: target.appending("Latest"), .directory(cap))
        var r = report.value
        r.archive = target.appending("Archives").appending(name).text
        r.dircap = cap.string
        r.seconds = monotonicNow() - t0
        return r
    }

    func backupDirectory(_ path: String, db: BackupDB, options: BackupOptions, report: Locked<BackupReport>,
                         progress: (@Sendable (BackupReport) -> Void)?) async throws -> DirectoryCapability {
        let names = try FileSystem.list(path).filter { !Self.excluded($0, options.excludes) }.sorted()
        var files: [(String, FileStatus)] = []
        var dirs: [(String, FileStatus)] = []
        var entries: [DirectoryEntry] = []
        for name in names {
            let p = path + "/" + name
            guard let st = try FileSystem.status(p, followLinks: false) else { continue }
            switch st.kind {
            case .regular: files.append((name, st))
            case .directory: dirs.append((name, st))
            case .symbolicLink:
                // Recorded (Tahoe skips them): a file holding the link's target, whose
                // st_mode says it is a symlink.
                let target = try FileSystem.readSymlink(p)
                let r = try await uploader.upload(source: MemorySource(Array(target.utf8)))
                entries.append(DirectoryEntry(name: name, capability: .immutable(r.capability), metadata: Self.localMetadata(st)))
                report.mutate { $0.symlinks += 1 }
            default:
                report.mutate { $0.skipped.append(p) }
                report.mutate { $0.filesSkipped += 1 }
            }
        }
        try await concurrently(files, limit: Self.copyParallelism, { (name: String, st: FileStatus) in
            try await self.backupFile(path + "/" + name, name: name, st, db: db, options: options, report: report)
        }, done: { (e: DirectoryEntry?) in
            if let e { entries.append(e) }
            progress?(report.value)
        })
        for (name, _) in dirs {
            let sub = try await backupDirectory(path + "/" + name, db: db, options: options, report: report, progress: progress)
            // The directory's own metadata, as Tahoe records it (stat after its contents were read).
            guard let st = try FileSystem.status(path + "/" + name) else { continue }
            entries.append(DirectoryEntry(name: name, capability: .directory(sub), metadata: Self.localMetadata(st)))
        }
        let hash = BackupDB.dirhash(entries.map { ($0.name, $0.capability.string, $0.metadata.pythonText) })
        if let known = try db.directory(hash), case let .directory(d)? = try? AnyCapability(parsing: known) {
            report.mutate { $0.directoriesReused += 1 }
            progress?(report.value)
            return d
        }
        let cap = try await createImmutableDirectory(entries: entries)
        try db.didCreateDirectory(hash, cap: cap.string)
        report.mutate { $0.directoriesCreated += 1 }
        progress?(report.value)
        return cap
    }

    func backupFile(_ path: String, name: String, _ st: FileStatus, db: BackupDB, options: BackupOptions,
                    report: Locked<BackupReport>) async throws -> DirectoryEntry? {
        let metadata = Self.localMetadata(st)
        let known = try db.lookup(path: path, size: st.size, mtime: st.mtime.seconds, ctime: st.ctime.seconds)
        if let known, known.unchanged, !options.ignoreTimestamps, let cap = try? AnyCapability(parsing: known.cap) {
            report.mutate { $0.filesReused += 1 }
            return DirectoryEntry(name: name, capability: cap, metadata: metadata)
        }
        let file: FileDescriptor
        do { file = try FileDescriptor(path: path) } catch {
            report.mutate { $0.skipped.append(path) }
            report.mutate { $0.filesSkipped += 1 }
            return nil
        }
        let source = try FileSource(file: file, name: path)
        let sha = try Self.sha256(source)
        // Timestamps changed, bytes did not (chmod, touch): the same capability, new metadata.
        if let known, known.sha256 == sha, let cap = try? AnyCapability(parsing: known.cap) {
            try db.didUpload(path: path, size: st.size, mtime: st.mtime.seconds, ctime: st.ctime.seconds, cap: known.cap, sha256: sha)
            report.mutate { $0.filesReused += 1 }
            report.mutate { $0.filesUnchangedByHash += 1 }
            return DirectoryEntry(name: name, capability: cap, metadata: metadata)
        }
        let r = try await uploader.upload(source: source)
        try db.didUpload(path: path, size: st.size, mtime: st.mtime.seconds, ctime: st.ctime.seconds, cap: r.capability.description, sha256: sha)
        report.mutate { $0.filesUploaded += 1 }
        report.mutate { $0.bytesUploaded += r.size }
        return DirectoryEntry(name: name, capability: .immutable(r.capability), metadata: metadata)
    }

    static func sha256(_ source: any RandomAccessSource) throws -> String {
        let h = SHA256()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        var at: UInt64 = 0
        while at < source.size {
            let n = try source.read(at: at, into: buf)
            if n == 0 { break }
            h.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            at += UInt64(n)
        }
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    public struct RestoreReport: Codable, Sendable {
        public var files = 0, directories = 0, symlinks = 0
        public var bytes: UInt64 = 0
        public var skipped: [String] = []
        public static var empty: RestoreReport { RestoreReport() }
    }

    /// Writes a backed-up tree to `local` (made; it must not exist or be empty): files,
    /// directories and symlinks, with the modes and modification times the backup recorded.
    public func restore(_ dir: DirectoryCapability, to local: String, progress: (@Sendable (RestoreReport) -> Void)? = nil) async throws -> RestoreReport {
        if let st = try FileSystem.status(local) {
            guard st.kind == .directory, try FileSystem.list(local).isEmpty else {
                throw GridError(.conflict, "\(local) exists and is not an empty directory; restore into a new one")
            }
        }
        try FileSystem.makeDirectories(local, permissions: 0o755)
        let report = Locked(RestoreReport.empty)
        try await restoreDirectory(dir, to: local, report: report, progress: progress)
        return report.value
    }

    func restoreDirectory(_ dir: DirectoryCapability, to local: String, report: Locked<RestoreReport>,
                          progress: (@Sendable (RestoreReport) -> Void)?) async throws {
        let entries = try await contents(of: dir).entries()
        func mode(_ e: DirectoryEntry) -> UInt32? { e.metadata["st_mode"]?.intValue.map { UInt32(truncatingIfNeeded: $0) } }
        func isSymlink(_ e: DirectoryEntry) -> Bool { (mode(e) ?? 0) & UInt32(S_IFMT) == UInt32(S_IFLNK) }
        let files = entries.filter { !$0.capability.isDirectory && !$0.capability.isUnknown && !isSymlink($0) }
        try await downloadFiles(files, into: local) { n in
            report.mutate { $0.files += 1 }
            report.mutate { $0.bytes += n }
            progress?(report.value)
        }
        for e in entries {
            let p = local + "/" + Self.localName(e.name)
            if isSymlink(e) {
                let target = String(decoding: try await read(e.capability, limit: 1 << 20), as: UTF8.self)
                try FileSystem.makeSymlink(p, target: target)
                report.mutate { $0.symlinks += 1 }
            } else if case let .directory(d) = e.capability {
                try FileSystem.makeDirectories(p, permissions: 0o755)
                try await restoreDirectory(d, to: p, report: report, progress: progress)
                report.mutate { $0.directories += 1 }
            } else if e.capability.isUnknown {
                report.mutate { $0.skipped.append(p) }
                continue
            }
            // Mode and mtime, once the contents are in place (a directory's mtime last).
            if let m = mode(e), !isSymlink(e) { try FileSystem.setPermissions(p, m & 0o7777) }
            if let mt = e.metadata["mtime"]?.doubleValue {
                let s = mt.rounded(.down)
                try FileSystem.setTimes(p, modified: (Int64(s), Int64(((mt - s) * 1e9).rounded())))
            }
        }
    }
}

extension String {
    /// The path without trailing slashes ("/" stays "/").
    public func trimmingSlashesAtEnd() -> String {
        var s = Substring(self)
        while s.count > 1 && s.last == "/" { s.removeLast() }
        return String(s)
    }
}
