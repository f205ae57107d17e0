import Foundation
import GridClient
import GridCrypto
import GridDirectory
import GridFormat
import GridImmutable
import GridMutable
import GridNode
import GridSystem

/// The client library (Tahoe's `IClient` and `nodemaker`): every operation on files and
/// directories a client can make, by capability or by path. The command line and the web
/// gateway call this and only print; nothing here prints.
public final class GridFilesystem: Sendable {
    public let nodeDirectory: String
    public let settings: ClientSettings
    public let pool: ServerPool
    public let coding: CodingOptions
    public let mutableFiles: MutableFileClient

    /// The largest directory read into memory (a directory of 100,000 children is ~30 MB).
    public static let maxDirectoryBytes: UInt64 = 1 << 30
    /// How many times a directory change is made again after another writer's change.
    public static let directoryRetries = 40

    public init(nodeDirectory: String?, coding: CodingOptions = CodingOptions()) throws {
        let dir = ClientNode.resolveDirectory(nodeDirectory)
        self.nodeDirectory = dir
        settings = try ClientNode.load(directory: dir)
        // The server cache's authentication key: from a secret only this node reads, for
        // this one purpose.
        let cacheKey = try HMACSHA256.authenticationCode(key: settings.leaseSecret, data: Array("grid: servers.cache authentication v1".utf8))
        pool = try ServerPool(introducers: settings.introducers, cachePath: ClientNode.serverCachePath(directory: dir), cacheKey: cacheKey)
        self.coding = coding
        mutableFiles = MutableFileClient(pool: pool, settings: settings, coding: coding)
    }

    public func shutdown() { pool.shutdown() }

    public func aliases() throws -> Aliases { try Aliases(nodeDirectory: nodeDirectory) }

    public var keyPool: KeyPool { KeyPool(directory: ClientNode.keyPoolPath(directory: nodeDirectory)) }

    public var catalog: Catalog { get throws { try Catalog(path: ClientNode.catalogPath(directory: nodeDirectory)) } }

    /// An uploader that knows what this client stored before (its catalog): a file stored
    /// already is asked about before any of its shares are sent.
    var uploader: Uploader {
        let path = ClientNode.catalogPath(directory: nodeDirectory)
        return Uploader(pool: pool, settings: settings, coding: coding) { key in
            (try? Catalog(path: path).holds(chkKey: key)) ?? false
        }
    }

    // MARK: Files

    /// Uploads an immutable file (CHK, or LIT for ≤ 55 bytes) and records it in the catalog.
    public func upload(_ source: any RandomAccessSource & Sendable, name: String, convergenceKey: [UInt8]? = nil,
                       progress: (@Sendable (TransferProgress) -> Void)? = nil) async throws -> UploadResult {
        let r = try await uploader.upload(source: source, convergenceKey: convergenceKey, progress: progress)
        try catalog.add(r.capability, name: name)
        return r
    }

    /// Creates a mutable file (a key from the pool when there is one) and records it.
    public func createMutableFile(_ source: any RandomAccessSource & Sendable, format: MutableFormat, name: String) async throws -> MutableFileClient.WriteResult {
        let key = keyPool.take()
        let r: MutableFileClient.WriteResult
        if format == .mdmf && source.size >= UInt64(MutableFileClient.stageThreshold) {
            guard source.size <= MutableFileClient.maxStreamingSize else {
                throw GridError(.usage, "mutable files are limited to \(MutableFileClient.maxStreamingSize) bytes (this one is \(source.size))")
            }
            r = try await mutableFiles.createMDMF(source: source, privateKey: key)
        } else {
            r = try await mutableFiles.create(try readWhole(source), format: format, privateKey: key)
        }
        try catalog.add([(.mutable(r.capability), source.size, name)])
        return r
    }

    /// The hasher of an immutable file's convergent key, for bytes hashed as they arrive.
    public func convergenceHasher(forSize size: UInt64) throws -> TaggedHasher {
        try Uploader(pool: pool, settings: settings, coding: coding).convergenceHasher(forSize: size)
    }

    /// What a download did.
    public enum Downloaded: Sendable {
        case immutable(DownloadResult)
        case mutable(size: UInt64, bytes: UInt64, sequenceNumber: UInt64, format: MutableFormat, seconds: Double)
    }

    /// Writes bytes [offset, offset+length) of a file to `sink`, every block checked.
    /// `sized` is told the file's size before the first byte is written (a web response's
    /// headers need it); what it throws ends the download.
    public func download(_ cap: AnyCapability, to sink: PlaintextSink, offset: UInt64 = 0, length: UInt64? = nil,
                         sized: ((UInt64) throws -> Void)? = nil,
                         progress: (@Sendable (TransferProgress) -> Void)? = nil) async throws -> Downloaded {
        switch cap {
        case let .immutable(c):
            try sized?(c.fileSize)
            return .immutable(try await Downloader(pool: pool, coding: coding).download(c, to: sink, offset: offset, length: length, progress: progress))
        case let .mutable(m):
            let t0 = monotonicNow()
            if m.access == .verify { throw GridError(.usage, "a verify capability cannot read the file; give its read capability") }
            if m.format == .mdmf {
                let count = Locked<UInt64>(0)
                let told = Locked<Bool>(false)
                // Another writer replacing the shares while the first k are chosen is a
                // conflict before anything was told or written: read the new version.
                var attempt = 0
                while true {
                    attempt += 1
                    do {
                        let r = try await mutableFiles.readMDMF(m, offset: offset, length: length, firstServersFirst: true, sized: { size in
                            told.mutate { $0 = true }
                            try sized?(size)
                        }) { bytes in
                            try sink.write(bytes)
                            count.mutate { $0 += UInt64(bytes.count) }
                        }
                        return .mutable(size: r.size, bytes: count.value, sequenceNumber: r.sequenceNumber, format: .mdmf, seconds: monotonicNow() - t0)
                    } catch let e as GridError where e.errorClass == .conflict && !told.value && count.value == 0 && attempt < 4 {
                        try await Task.sleep(nanoseconds: UInt64(attempt) * 200_000_000)
                    }
                }
            }
            let got = try await mutableFiles.read(m)
            try sized?(UInt64(got.data.count))
            let start = Int(min(UInt64(got.data.count), offset))
            let end = length.map { Int(min(UInt64(got.data.count), UInt64(start) + $0)) } ?? got.data.count
            try got.data[start..<end].withUnsafeBytes { try sink.write($0) }
            return .mutable(size: UInt64(got.data.count), bytes: UInt64(end - start), sequenceNumber: got.sequenceNumber, format: .sdmf,
                            seconds: monotonicNow() - t0)
        case .directory:
            throw GridError(.usage, "this is a directory; list it with `grid ls`, or copy it out with `grid cp -r`")
        case let .unknown(u):
            throw GridError(.incompatible, "this version of grid does not know the kind of '\((u.writeString ?? u.readString ?? "").prefix(24))…'" + (u.reason.map { ": \($0)" } ?? ""))
        }
    }

    /// The whole contents of a file, up to `limit` bytes.
    public func read(_ cap: AnyCapability, limit: UInt64) async throws -> [UInt8] {
        if let size = cap.fileSize, size > limit { throw GridError(.usage, "\(size) bytes is more than \(limit) allowed here") }
        let sink = MemoryPlaintextSink()
        _ = try await download(cap, to: sink)
        guard UInt64(sink.bytes.count) <= limit else { throw GridError(.usage, "\(sink.bytes.count) bytes is more than \(limit) allowed here") }
        return sink.bytes
    }

    // MARK: Checking and repairing

    /// Checks a file or a directory's own file (not its children: see `deepCheck`).
    public func check(_ cap: AnyCapability, verify: Bool, addLease: Bool) async throws -> CheckResult {
        let checker = Checker(pool: pool, settings: settings, coding: coding)
        switch cap.storedFile {
        case let .immutable(c): return try await checker.check(c, verify: verify, addLease: addLease)
        case let .mutable(m): return try await checker.check(m, verify: verify, addLease: addLease)
        case .directory, .unknown: throw GridError(.incompatible, "cannot check '\(cap.kindName)': grid does not know how it is stored")
        }
    }

    public func repair(_ cap: AnyCapability, verify: Bool) async throws -> RepairResult {
        let repairer = Repairer(checker: Checker(pool: pool, settings: settings, coding: coding))
        switch cap.storedFile {
        case let .immutable(c): return try await repairer.repair(c, verify: verify)
        case let .mutable(m): return try await repairer.repair(m)
        case .directory, .unknown: throw GridError(.incompatible, "cannot repair '\(cap.kindName)': grid does not know how it is stored")
        }
    }

    // MARK: Directories

    /// A directory's children, read and checked (every block and signature) from the grid.
    public func contents(of dir: DirectoryCapability) async throws -> DirectoryContents {
        try await contents(of: dir, census: nil)
    }

    /// What `MutableFileClient.newestVersion` says of a mutable file.
    typealias NewestVersion = (sequenceNumber: UInt64, rootHash: [UInt8], shares: Int, needed: Int)
    /// The newest version of a mutable file, asked for ahead of need (`resolve`).
    typealias VersionCensus = Task<NewestVersion?, Error>

    /// `census`: that directory's version census, already under way.
    func contents(of dir: DirectoryCapability, census: VersionCensus?) async throws -> DirectoryContents {
        guard !dir.isVerifyOnly else { throw GridError(.usage, "a verify capability can check a directory but not list it; give its read capability") }
        if case let .mutable(m) = dir.file, let newest = try await newestVersion(m, census: census) {
            // A cheap census first: the version cached is still the newest, so no fetch.
            let cache = DirectoryCache(nodeDirectory: nodeDirectory)
            if newest.needed >= 1, newest.shares >= newest.needed,
               let data = cache.lookup(m.storageIndex, sequenceNumber: newest.sequenceNumber, rootHash: newest.rootHash) {
                return try DirectoryContents.unpack(data, mutable: true, writekey: dir.writekey)
            }
            let (data, seq) = try await readMutable(m)
            if seq == newest.sequenceNumber { cache.store(m.storageIndex, sequenceNumber: seq, rootHash: newest.rootHash, data: data) }
            return try DirectoryContents.unpack(data, mutable: true, writekey: dir.writekey)
        }
        let data = try await read(dir.fileCapability, limit: Self.maxDirectoryBytes)
        return try DirectoryContents.unpack(data, mutable: dir.isMutable, writekey: dir.writekey)
    }

    func newestVersion(_ m: MutableCapability, census: VersionCensus?) async throws -> NewestVersion? {
        if let census { return try await census.value }
        return try await mutableFiles.newestVersion(m)
    }

    /// A mutable file's newest version, whole, checked, with its sequence number.
    func readMutable(_ m: MutableCapability) async throws -> ([UInt8], UInt64) {
        if m.format == .mdmf {
            let out = Locked<[UInt8]>([])
            let r = try await mutableFiles.readMDMF(m) { bytes in out.value.append(contentsOf: bytes) }
            return (out.value, r.sequenceNumber)
        }
        let r = try await mutableFiles.read(m)
        return (r.data, r.sequenceNumber)
    }

    /// Creates a mutable directory holding `entries` (SDMF, Tahoe's default, or MDMF).
    public func createDirectory(format: MutableFormat = .sdmf, entries: [DirectoryEntry] = []) async throws -> DirectoryCapability {
        let key = try keyPool.take() ?? RSAPrivateKey(bits: 2048)
        let cap = MutableCapability(format: format, privateKey: key)
        var contents = DirectoryContents(mutable: true, writekey: cap.writekey)
        for e in entries { contents.set(e) }
        let r = try await mutableFiles.create(try contents.pack(), format: format, privateKey: key)
        return DirectoryCapability(.mutable(r.capability))
    }

    /// Creates an immutable directory (DIR2-LIT for ≤ 55 packed bytes, else DIR2-CHK
    /// with the client's convergence secret, so the same children give the same cap).
    public func createImmutableDirectory(entries: [DirectoryEntry]) async throws -> DirectoryCapability {
        var contents = DirectoryContents(mutable: false, writekey: nil)
        for e in entries { contents.set(e) }
        let packed = try contents.pack()
        if packed.count <= Capability.literalThreshold { return DirectoryCapability(.lit(LITCapability(data: packed))) }
        let r = try await uploader.upload(source: MemorySource(packed))
        guard case let .chk(c) = r.capability else { throw GridError(.internal, "an immutable directory of \(packed.count) bytes came back as a literal") }
        return DirectoryCapability(.chk(c))
    }

    /// Changes a mutable directory: `change` is applied to its newest contents and the
    /// result written as the next version; when another writer changed it first, the
    /// change is made again on top of theirs (nothing either wrote is lost). `change` is
    /// told whether this is the first attempt (a child already gone on a retry was removed
    /// by this change's own earlier attempt or by another writer).
    @discardableResult
    public func modify(_ dir: DirectoryCapability, retries: Int = directoryRetries,
                       _ change: @escaping @Sendable (inout DirectoryContents, _ firstAttempt: Bool) throws -> Void) async throws -> MutableFileClient.WriteResult {
        guard case let .mutable(m) = dir.file, let writekey = m.writekey else {
            throw GridError(.denied, dir.isMutable ? "this directory was opened by its read-only capability and cannot be changed"
                                                   : "an immutable directory cannot be changed")
        }
        return try await mutableFiles.update(m, .modify { bytes, first in
            var c = try DirectoryContents.unpack(bytes, mutable: true, writekey: writekey)
            try change(&c, first)
            return try c.pack()
        }, retries: retries)
    }

    /// Tahoe's `update_metadata`: new metadata replaces the old except the `tahoe` key;
    /// `tahoe.linkcrtime` is kept (or taken from an old `ctime`, else now) and
    /// `tahoe.linkmotime` set to now.
    public static func linkMetadata(old: JSONValue?, new: JSONValue?, now: Double) -> JSONValue {
        var md = old ?? .object([])
        let oldCtime = md["ctime"]
        if let new {
            var n = new.removing("tahoe")
            if let t = md["tahoe"] { n = n.setting("tahoe", t) }
            md = n
        }
        var sys = md["tahoe"] ?? .object([])
        if sys.objectPairs == nil { sys = .object([]) }
        if sys["linkcrtime"] == nil { sys = sys.setting("linkcrtime", oldCtime ?? .double(now)) }
        sys = sys.setting("linkmotime", .double(now))
        return md.setting("tahoe", sys)
    }

    public static func now() -> Double { wallClock() }

    /// What may be replaced by a link (Tahoe's `replace=` argument).
    public enum Replace: String, Sendable {
        case always = "true", never = "false", onlyFiles = "only-files"
    }

    /// Links many children into one directory in one write (one publish for many names).
    /// Returns, per name, whether it was new.
    @discardableResult
    public func link(_ dir: DirectoryCapability, _ children: [(name: String, capability: AnyCapability, metadata: JSONValue?)],
                     replace: Replace = .always) async throws -> [String: Bool] {
        for c in children { try Self.checkName(c.name) }
        let created = Locked<[String: Bool]>([:])
        try await modify(dir) { contents, _ in
            let now = Self.now()
            var made: [String: Bool] = [:]
            for c in children {
                let old = try contents.entry(named: c.name)
                if let old {
                    switch replace {
                    case .never: throw GridError(.conflict, "there is already a child named '\(old.name)'")
                    case .onlyFiles where old.capability.isDirectory:
                        throw GridError(.conflict, "there is already a directory named '\(old.name)'")
                    default: break
                    }
                }
                let md = Self.linkMetadata(old: old?.metadata, new: c.metadata, now: now)
                contents.set(DirectoryEntry(name: c.name, capability: c.capability, metadata: md))
                made[Dirnode.normalize(c.name)] = old == nil
            }
            created.value = made
        }
        return created.value
    }

    /// A name a directory may hold: not empty, no '/', at most 1 KiB... Tahoe refuses '/'.
    public static func checkName(_ name: String) throws {
        guard !name.isEmpty else { throw GridError(.usage, "a child's name cannot be empty") }
        guard !name.contains("/") else { throw GridError(.usage, "a child's name cannot contain '/': '\(name)'") }
        guard name.utf8.count <= 4096 else { throw GridError(.usage, "a child's name is limited to 4096 bytes") }
    }

    // MARK: Paths

    /// The capability a path starts from: an alias's directory or a given capability.
    public func root(_ p: GridPath) throws -> AnyCapability {
        switch p.root {
        case let .alias(a): return .directory(try aliases().directory(a))
        case let .capability(c): return try AnyCapability(parsing: c)
        }
    }

    /// What a path names.
    public struct Resolved: Sendable {
        public var capability: AnyCapability
        /// The directory holding it, and its name there (nil at a path's root).
        public var parent: DirectoryCapability?
        public var name: String?
        public var metadata: JSONValue?
        /// Its version census, started ahead (`resolve(_:listing:)`).
        var census: VersionCensus?
    }

    /// The children of the directory `r` names (which must be one), using the census
    /// `resolve(_:listing: true)` started for it.
    public func contents(of r: Resolved) async throws -> DirectoryContents {
        guard case let .directory(d) = r.capability else { throw GridError(.usage, "not a directory") }
        return try await contents(of: d, census: r.census)
    }

    /// Walks a path from its root, a directory at a time.
    /// With `listing`, the census of the directory the path ends at starts too (when the
    /// cache says it is one), for `contents(of: Resolved)`.
    public func resolve(_ p: GridPath, listing: Bool = false) async throws -> Resolved {
        var r = Resolved(capability: try root(p))
        var ahead = censusAhead(from: r.capability, along: p.components, last: listing)
        defer { for t in ahead.values { t.cancel() } }
        var walked: [String] = []
        for name in p.components {
            guard case let .directory(d) = r.capability else {
                throw GridError(.usage, "'\(walked.joined(separator: "/"))' is a file, not a directory, so it has no child '\(name)'")
            }
            let contents = try await contents(of: d, census: d.storageIndex.flatMap { ahead[$0] })
            guard let e = try contents.entry(named: name) else {
                throw GridError(.notFound, "No such child: '\((walked + [name]).joined(separator: "/"))' (in \(p.text))")
            }
            r = Resolved(capability: e.capability, parent: d, name: e.name, metadata: e.metadata)
            walked.append(name)
        }
        if case let .directory(d) = r.capability, let si = d.storageIndex { r.census = ahead.removeValue(forKey: si) }
        return r
    }

    /// Starts the version census of every mutable directory along `components` that the
    /// directory cache can name (each from its parent's contents as last read), all at
    /// once: a path then costs one round trip, not one per level. The walk uses a census
    /// only for the directory it was asked about, whatever led to it, so a guess that is
    /// out of date costs a wasted census, never a wrong answer.
    /// With `last`, the directory the path ends at too.
    func censusAhead(from start: AnyCapability, along components: [String], last: Bool) -> [[UInt8]: VersionCensus] {
        let cache = DirectoryCache(nodeDirectory: nodeDirectory)
        var out: [[UInt8]: VersionCensus] = [:]
        var cap = start
        for i in 0...min(components.count, 8) {
            guard i < components.count || last, case let .directory(d) = cap, case let .mutable(m) = d.file, !d.isVerifyOnly,
                  out[m.storageIndex] == nil else { break }
            let files = mutableFiles
            out[m.storageIndex] = Task { try await files.newestVersion(m) }
            guard i < components.count, let data = cache.lastKnown(m.storageIndex),
                  let child = try? DirectoryContents.unpack(data, mutable: true, writekey: d.writekey).entry(named: components[i]) else { break }
            cap = child.capability
        }
        return out
    }

    /// The directory at `p`, made (with any missing parents, `format`) when absent.
    public func ensureDirectory(_ p: GridPath, format: MutableFormat = .sdmf) async throws -> DirectoryCapability {
        var cap = try root(p)
        for (i, name) in p.components.enumerated() {
            guard case let .directory(d) = cap else {
                throw GridError(.usage, "'\(p.components[..<i].joined(separator: "/"))' is a file, not a directory")
            }
            if let e = try await contents(of: d).entry(named: name) {
                cap = e.capability
                continue
            }
            let made = try await createDirectory(format: format)
            // Another writer may have made the same name meanwhile: theirs wins, ours is dropped.
            let winner = Locked<AnyCapability>(.directory(made))
            try await modify(d) { c, _ in
                if let e = try c.entry(named: name) { winner.value = e.capability; return }
                c.set(DirectoryEntry(name: name, capability: .directory(made), metadata: Self.linkMetadata(old: nil, new: nil, now: Self.now())))
            }
            cap = winner.value
        }
        guard case let .directory(d) = cap else { throw GridError(.usage, "\(p.text) is a file, not a directory") }
        return d
    }

    /// Links `cap` at path `p` (its parents made as needed); returns whether the name was new.
    @discardableResult
    public func link(at p: GridPath, _ cap: AnyCapability, replace: Replace = .always, metadata: JSONValue? = nil) async throws -> Bool {
        guard let (parentPath, name) = p.parent else {
            throw GridError(.usage, "\(p.text) names a root; give a name inside it (e.g. \(p.text.hasSuffix(":") ? p.text : p.text + "/")NAME)")
        }
        let parent = try await ensureDirectory(parentPath)
        return try await link(parent, [(name, cap, metadata)], replace: replace).values.first ?? true
    }

    /// Links `cap` at `p`; when `p` names an existing directory, inside it as `name` (what
    /// `ln` and `cp` do), deciding within the one write to `p`'s parent (no extra read).
    /// Returns where it was linked and whether the name was new there.
    public func link(at p: GridPath, _ cap: AnyCapability, orInsideAs name: String?) async throws -> (path: GridPath, created: Bool) {
        guard let (parentPath, last) = p.parent else {
            guard let name, case let .directory(d) = try root(p) else { throw GridError(.usage, "\(p.text) names a root; give a name inside it") }
            return (p.appending(name), try await link(d, [(name, cap, nil)]).values.first ?? true)
        }
        try Self.checkName(last)
        let parent = try await ensureDirectory(parentPath)
        let created = Locked(true)
        do {
            try await modify(parent) { c, _ in
                let old = try c.entry(named: last)
                if let old, name != nil, case let .directory(d) = old.capability { throw LinkInside(directory: d) }
                c.set(DirectoryEntry(name: last, capability: cap, metadata: Self.linkMetadata(old: old?.metadata, new: nil, now: Self.now())))
                created.value = old == nil
            }
            return (p, created.value)
        } catch let inside as LinkInside {
            return (p.appending(name!), try await link(inside.directory, [(name!, cap, nil)]).values.first ?? true)
        }
    }

    /// Thrown out of a change to say the name is a directory to link into instead.
    struct LinkInside: Error { let directory: DirectoryCapability }

    /// Removes the name at `p` (the child itself stays on the grid); returns what it named.
    @discardableResult
    public func unlink(_ p: GridPath) async throws -> DirectoryEntry {
        guard let (parentPath, name) = p.parent else { throw GridError(.usage, "\(p.text) is a root; there is nothing to unlink it from") }
        guard case let .directory(parent) = try await resolve(parentPath).capability else {
            throw GridError(.usage, "\(parentPath.text) is a file, not a directory")
        }
        let removed = Locked<DirectoryEntry?>(nil)
        try await modify(parent) { c, first in
            if let e = try c.remove(name) { removed.value = e; return }
            // Gone on a retry: this change's own first write landed, or another writer removed it.
            if first || removed.value == nil { throw GridError(.notFound, "No such child: '\(name)' in \(parentPath.text)") }
        }
        return removed.value!
    }

    /// Moves (renames) a link: within one directory in one write; across directories by
    /// linking at the destination first, then unlinking the source (never neither).
    public func move(from: GridPath, to: GridPath, replace: Replace = .always) async throws {
        let src = try await resolve(from)
        guard let srcParent = src.parent, let srcName = src.name else { throw GridError(.usage, "\(from.text) is a root; it cannot be moved") }
        var dest = to
        // Moving onto an existing directory puts it inside, as mv does.
        if let existing = try? await resolve(to), case .directory = existing.capability {
            dest = to.appending(srcName)
        }
        guard let (destParentPath, destName) = dest.parent else { throw GridError(.usage, "\(to.text) names a root; give a name") }
        try Self.checkName(destName)
        let destParent = try await ensureDirectory(destParentPath)
        if destParent == srcParent {
            if Dirnode.normalize(destName) == srcName { return }
            try await modify(srcParent) { c, first in
                guard let e = try c.entry(named: srcName) else {
                    if first { throw GridError(.notFound, "No such child: '\(srcName)'") }
                    return
                }
                if let old = try c.entry(named: destName) {
                    if replace == .never || (replace == .onlyFiles && old.capability.isDirectory) {
                        throw GridError(.conflict, "there is already a child named '\(old.name)'")
                    }
                }
                try c.remove(srcName)
                c.set(DirectoryEntry(name: destName, capability: e.capability,
                                     metadata: Self.linkMetadata(old: e.metadata, new: nil, now: Self.now())))
            }
            return
        }
        try await link(destParent, [(destName, src.capability, src.metadata?.removing("tahoe"))], replace: replace)
        try await modify(srcParent) { c, _ in
            // Only the link that was moved: if another writer relinked the name meanwhile, theirs stays.
            if let e = try c.entry(named: srcName), e.capability == src.capability { try c.remove(srcName) }
        }
    }

    /// Makes a directory at `p` (parents as needed; an existing one is an error), or an
    /// unlinked one when `p` is nil.
    public func mkdir(_ p: GridPath?, format: MutableFormat = .sdmf) async throws -> DirectoryCapability {
        guard let p else { return try await createDirectory(format: format) }
        guard let (parentPath, name) = p.parent else { throw GridError(.usage, "\(p.text) is a root; give a name to make inside it") }
        try Self.checkName(name)
        let parent = try await ensureDirectory(parentPath, format: format)
        if let e = try await contents(of: parent).entry(named: name) {
            throw GridError(.conflict, "\(p.text) already exists (a \(e.capability.isDirectory ? "directory" : "file"))")
        }
        let made = try await createDirectory(format: format)
        try await link(parent, [(name, .directory(made), nil)], replace: .never)
        return made
    }
}

/// Reads a source whole (at most 1 GiB).
public func readWhole(_ source: any RandomAccessSource) throws -> [UInt8] {
    guard source.size <= 1 << 30 else {
        throw GridError(.usage, "\(source.size) bytes is more than is held in memory (1 GiB) for an SDMF file or an --offset write; make large files MDMF (the default) and replace them whole")
    }
    var out = [UInt8](repeating: 0, count: Int(source.size))
    var at = 0
    try out.withUnsafeMutableBytes { buf in
        while at < buf.count {
            let n = try source.read(at: UInt64(at), into: UnsafeMutableRawBufferPointer(rebasing: buf[at...]))
            if n == 0 { break }
            at += n
        }
    }
    guard at == out.count else { throw GridError(.io, "the source ended after \(at) of \(out.count) bytes") }
    return out
}
