import Foundation
import GridClient
import GridDirectory
import GridFormat
import GridImmutable
import GridSystem

/// Whole trees in and out of the grid (`grid cp -r`): files moved in parallel, each
/// directory written once with all its children.
extension GridFilesystem {
    public struct CopyStats: Codable, Sendable {
        public var files = 0
        public var directories = 0
        public var bytes: UInt64 = 0
        /// Symlinks, sockets, devices and unknown children: not copied, named here.
        public var skipped: [String] = []
        public static var empty: CopyStats { CopyStats() }
    }

    /// How many files move at once.
    public static let copyParallelism = 4

    /// Uploads the regular file at `path` (immutable); its capability.
    public func uploadLocalFile(_ path: String) async throws -> (AnyCapability, UInt64) {
        let source = try FileSource(file: try FileDescriptor(path: path), name: path)
        let r = try await uploader.upload(source: source)
        return (.immutable(r.capability), r.size)
    }

    /// Copies the local directory `local` into the grid: into `existing` (merged: names
    /// there are replaced, subdirectories entered, others kept) or, when nil, as a new
    /// directory. Returns the directory's capability.
    public func copyIn(_ local: String, into existing: DirectoryCapability?, format: MutableFormat = .sdmf,
                       progress: (@Sendable (CopyStats) -> Void)? = nil) async throws -> (DirectoryCapability, CopyStats) {
        let stats = Locked(CopyStats.empty)
        let cap = try await copyIn(local, into: existing, format: format, stats: stats, progress: progress)
        // One catalog transaction for the whole tree.
        return (cap, stats.value)
    }

    func copyIn(_ local: String, into existing: DirectoryCapability?, format: MutableFormat, stats: Locked<CopyStats>,
                progress: (@Sendable (CopyStats) -> Void)?) async throws -> DirectoryCapability {
        let names = try FileSystem.list(local).sorted()
        var existingContents: DirectoryContents?
        if let existing { existingContents = try await contents(of: existing) }
        var files: [String] = []
        var dirs: [String] = []
        for name in names {
            let path = local + "/" + name
            guard let st = try FileSystem.status(path, followLinks: false) else { continue }
            switch st.kind {
            case .regular: files.append(name)
            case .directory: dirs.append(name)
            default: stats.mutate { $0.skipped.append(path) }
            }
        }
        // Files, a few at a time.
        var children: [(name: String, capability: AnyCapability, metadata: JSONValue?)] = []
        try await concurrently(files, limit: Self.copyParallelism, { name in
            let (cap, size) = try await self.uploadLocalFile(local + "/" + name)
            return (name, cap, size)
        }, done: { (name: String, cap: AnyCapability, size: UInt64) in
            children.append((name, cap, nil))
            stats.mutate { $0.files += 1 }
            stats.mutate { $0.bytes += size }
            progress?(stats.value)
        })
        // Subdirectories: entered when they exist there already, else made whole.
        for name in dirs {
            let into: DirectoryCapability?
            if let e = try existingContents?.entry(named: name), case let .directory(d) = e.capability, !d.isReadOnly { into = d } else { into = nil }
            let sub = try await copyIn(local + "/" + name, into: into, format: format, stats: stats, progress: progress)
            if into == nil { children.append((name, .directory(sub), nil)) }
        }
        stats.mutate { $0.directories += 1 }
        progress?(stats.value)
        try? catalog.add(children.compactMap { c in
            guard case let .immutable(cap) = c.capability else { return nil }
            return (cap, local + "/" + c.name)
        })
        if let existing {
            if !children.isEmpty { try await link(existing, children) }
            return existing
        }
        let now = Self.now()
        return try await createDirectory(format: format, entries: children.map {
            DirectoryEntry(name: $0.name, capability: $0.capability, metadata: Self.linkMetadata(old: nil, new: $0.metadata, now: now))
        })
    }

    /// Writes the file `cap` to the local `path` (under a temporary name, renamed when
    /// complete and verified).
    public func downloadToFile(_ cap: AnyCapability, path: String) async throws -> UInt64 {
        let temp = path + ".grid-partial-\(CurrentProcess.id)"
        let sink = try FileDescriptorSink(path: temp)
        do {
            let r = try await download(cap, to: sink)
            try sink.sync()
            try FileSystem.rename(temp, to: path)
            switch r {
            case let .immutable(d): return d.bytesWritten
            case let .mutable(_, bytes, _, _, _): return bytes
            }
        } catch {
            try? FileSystem.remove(temp)
            throw error
        }
    }

    /// Copies a grid directory into the local directory `local` (made if missing).
    public func copyOut(_ dir: DirectoryCapability, to local: String, progress: (@Sendable (CopyStats) -> Void)? = nil) async throws -> CopyStats {
        let stats = Locked(CopyStats.empty)
        try await copyOut(dir, to: local, stats: stats, progress: progress)
        return stats.value
    }

    func copyOut(_ dir: DirectoryCapability, to local: String, stats: Locked<CopyStats>, progress: (@Sendable (CopyStats) -> Void)?) async throws {
        try FileSystem.makeDirectories(local, permissions: 0o755)
        let entries = try await contents(of: dir).entries()
        let files = entries.filter { if case .immutable = $0.capability { return true }; if case .mutable = $0.capability { return true }; return false }
        try await downloadFiles(files, into: local) { bytes in
            stats.mutate { $0.files += 1 }
            stats.mutate { $0.bytes += bytes }
            progress?(stats.value)
        }
        for e in entries {
            switch e.capability {
            case let .directory(d):
                try await copyOut(d, to: local + "/" + Self.localName(e.name), stats: stats, progress: progress)
            case .unknown: stats.mutate { $0.skipped.append(local + "/" + e.name) }
            default: break
            }
        }
        stats.mutate { $0.directories += 1 }
    }

    /// Downloads each file entry into `local` (under its local name), a few at a time.
    func downloadFiles(_ files: [DirectoryEntry], into local: String, done: (UInt64) throws -> Void) async throws {
        try await concurrently(files, limit: Self.copyParallelism, { e in
            try await self.downloadToFile(e.capability, path: local + "/" + Self.localName(e.name))
        }, done: done)
    }

    /// A child's name as a local file name: names that cannot be one are refused.
    static func localName(_ name: String) -> String {
        name == "." || name == ".." || name.contains("/") || name.contains("\0") ? "_" + name.replacingOccurrences(of: "/", with: "_") : name
    }

    /// Copies a grid directory to a new grid directory: files linked by capability
    /// (immutable files are shared, nothing is copied), subdirectories copied the same way.
    public func copyWithin(_ dir: DirectoryCapability, format: MutableFormat = .sdmf) async throws -> DirectoryCapability {
        var entries: [DirectoryEntry] = []
        for e in try await contents(of: dir).entries() {
            if case let .directory(d) = e.capability {
                entries.append(DirectoryEntry(name: e.name, capability: .directory(try await copyWithin(d, format: format)), metadata: e.metadata))
            } else {
                entries.append(e)
            }
        }
        return try await createDirectory(format: format, entries: entries)
    }
}

/// Runs `body` on every item, at most `limit` at a time; `done` sees each result as it
/// arrives, on the calling task (so it may change the caller's state). The first error
/// thrown stops the rest.
public func concurrently<T: Sendable, R: Sendable>(_ items: [T], limit: Int, _ body: @escaping @Sendable (T) async throws -> R,
                                            done: (R) throws -> Void = { _ in }) async throws {
    try await withThrowingTaskGroup(of: R.self) { group in
        var next = 0
        while next < min(limit, items.count) {
            let item = items[next]
            next += 1
            group.addTask { try await body(item) }
        }
        while let r = try await group.next() {
            try done(r)
            if next < items.count {
                let item = items[next]
                next += 1
                group.addTask { try await body(item) }
            }
        }
    }
}
