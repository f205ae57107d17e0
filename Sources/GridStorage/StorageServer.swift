import Foundation
import GridCrypto
import GridDatabase
import GridFormat
import GridSystem
import Synchronization


/// Storage server settings.
public struct StorageConfig: Sendable {
    /// The node directory; shares live in `<nodeDirectory>/storage`.
    public var nodeDirectory: String
    /// Space kept free on the disk; allocations that would cross it are refused.
    public var reservedSpace: UInt64 = 0
    /// How long a new or renewed lease lasts.
    public var leaseDuration: UInt32 = 31 * 24 * 3600
    /// Whether the expirer deletes shares whose leases have all expired.
    public var expireLeases = false
    /// Largest mutable share accepted.
    public var maxMutableShareSize: UInt64 = 4 << 30
    /// A failpoint for crash tests (GRID_CRASH_POINT in the daemon's environment): the
    /// server kills itself there, as kill -9 would.
    public var crashPoint: CrashPoint?
    /// Largest single read of a share (and largest slot read-vector element) answered.
    public var maxReadLength = 8 << 20
    public init(nodeDirectory: String) { self.nodeDirectory = nodeDirectory }
}

/// Where a storage server may be made to die, for crash tests.
public enum CrashPoint: String, Sendable {
    /// A slot change's journal is on disk; nothing of the change is in the share yet.
    case afterSlotJournal = "after-slot-journal"
    /// A slot change is half in the share (its first extent written).
    case duringSlotChange = "during-slot-change"
}

/// The share store: immutable buckets, mutable slots, leases, space accounting.
/// Thread-safe; the RPC service calls it from several worker threads.
public final class StorageBackend: @unchecked Sendable {
    public let config: StorageConfig
    /// Share data bytes written by immutable bucket writers since start (metrics).
    public let immutableBytesWritten = Atomic<UInt64>(0)
    /// The 20-byte id this node writes into mutable containers (write-enabler owner, lease node id).
    public let containerNodeID: [UInt8]
    let root: String
    let sharesDir: String
    let incomingDir: String
    let advisoriesDir: String
    /// Redo journals of slot changes in progress (SlotJournal).
    let journalDir: String
    /// Shares' next contents sent ahead in pieces (slot_stage), until a test-and-write
    /// takes them; emptied at every start.
    let stagingDir: String
    /// How many journals the start replayed or discarded (a crash interrupted their changes).
    public private(set) var recoveredJournals = 0
    let db: Database
    let clock: @Sendable () -> UInt64
    /// Open bucket writers: allocated bytes not yet committed, keyed by (si, shnum).
    let pending = Mutex<[String: UInt64]>([:])
    let locks: [StripeLock] = (0..<64).map { _ in StripeLock() }
    /// The filesystem's block: a share file takes whole blocks, so space is counted in them.
    let blockSize: UInt64

    public init(config: StorageConfig, containerNodeID: [UInt8], clock: @escaping @Sendable () -> UInt64 = { wallClockSeconds() }) throws {
        precondition(containerNodeID.count == 20)
        self.config = config
        self.containerNodeID = containerNodeID
        self.clock = clock
        root = config.nodeDirectory + "/storage"
        sharesDir = root + "/shares"
        incomingDir = sharesDir + "/incoming"
        advisoriesDir = root + "/corruption-advisories"
        journalDir = root + "/journal"
        stagingDir = root + "/staging"
        // Anything in incoming/ is an upload that never closed (a crash, a kill -9): discard it.
        FileSystem.removeTree(incomingDir)
        FileSystem.removeTree(root + "/staging")
        for d in [root, sharesDir, incomingDir, advisoriesDir, journalDir, root + "/staging"] { try FileSystem.makeDirectories(d) }
        blockSize = try FileSystem.blockSize(root)
        let dbPath = root + "/index.sqlite"
        let fresh = !FileSystem.exists(dbPath)
        db = try Database(path: dbPath)
        try db.exec("""
            CREATE TABLE IF NOT EXISTS shares(si BLOB NOT NULL, shnum INTEGER NOT NULL, mutable INTEGER NOT NULL,
                                              size INTEGER NOT NULL, PRIMARY KEY(si, shnum));
            CREATE TABLE IF NOT EXISTS leases(si BLOB NOT NULL, shnum INTEGER NOT NULL, renew BLOB NOT NULL,
                                              expiration INTEGER NOT NULL, PRIMARY KEY(si, shnum, renew));
            CREATE INDEX IF NOT EXISTS leases_by_expiration ON leases(expiration);
            """)
        if fresh { try rebuildIndex() }
        recoveredJournals = try replayJournals()
    }

    func lock(_ si: [UInt8]) -> StripeLock { locks[Int(si[0] ^ si[15]) & 63] }

    func siString(_ si: [UInt8]) -> String { Base32.encode(si) }

    func bucketDir(_ si: [UInt8]) -> String {
        let s = siString(si)
        return "\(sharesDir)/\(s.prefix(2))/\(s)"
    }

    func sharePath(_ si: [UInt8], _ shnum: Int) -> String { "\(bucketDir(si))/\(shnum)" }

    func checkSI(_ si: [UInt8]) throws {
        guard si.count == 16 else { throw StorageError.badRequest("storage index must be 16 bytes") }
    }

    // MARK: Space

    public struct Space: Sendable {
        public var free: UInt64       // bytes the filesystem has for us
        public var available: UInt64  // free minus reserved minus open allocations
        public var pending: UInt64
    }

    public func space() -> Space {
        space(pending: pending.withLock { $0 })
    }

    /// Space given the open allocations `pend` (callers holding the `pending` lock pass it in).
    func space(pending pend: [String: UInt64]) -> Space {
        let free: UInt64 = (try? FileSystem.availableSpace(root)) ?? 0
        let committed = pend.values.reduce(0, +)
        let avail = free > config.reservedSpace + committed ? free - config.reservedSpace - committed : 0
        return Space(free: free, available: avail, pending: committed)
    }

    // MARK: Immutable

    /// Shares of `si` that are complete, with their data lengths.
    public func getBuckets(_ si: [UInt8]) throws -> [Int: UInt64] {
        try checkSI(si)
        var out: [Int: UInt64] = [:]
        for n in try shareFiles(si) {
            guard let f = try? FileDescriptor(path: sharePath(si, n)) else { continue }
            let head = (try? f.read(at: 0, count: 32)) ?? []
            if MutableContainer.isMutable(head) { continue }
            if let (len, _) = try? ImmutableContainer.inspect(f) { out[n] = len }
        }
        return out
    }

    public struct Allocation {
        public var alreadyHave: [Int]
        public var writers: [Int: BucketWriter]
        /// Shares another upload is writing right now: ask again later.
        public var inProgress: [Int]
    }

    /// Opens bucket writers for the shares not already held. Adds (or renews) the lease on
    /// shares already held. Refuses the whole call when the space is not there.
    public func allocate(si: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8], shares: [Int], allocatedSize: UInt64) throws -> Allocation {
        try checkSI(si)
        guard shares.allSatisfy({ $0 >= 0 && $0 < 256 }) else { throw StorageError.badRequest("share numbers must be 0..255") }
        guard allocatedSize <= 1 << 44 else { throw StorageError.badRequest("allocated size \(allocatedSize) is too large") }
        return try lock(si).withLock { _ in
            let have = try getBuckets(si)
            let already = shares.filter { have[$0] != nil }
            // A share number held as a mutable share is neither held nor ours to write.
            let otherKind = Set(try shareFiles(si)).subtracting(have.keys)
            if !already.isEmpty {
                _ = try? addOrRenewLeaseLocked(si: si, renewSecret: renewSecret, cancelSecret: cancelSecret)
            }
            let wanted = Array(Set(shares.filter { have[$0] == nil && !otherKind.contains($0) })).sorted()
            let expiration = newExpiration()
            var writers: [Int: BucketWriter] = [:]
            var inProgress: [Int] = []
            try pending.withLock { pend in
                // Someone else is uploading these right now: neither held nor ours to write.
                let free = wanted.filter { pend["\(siString(si))/\($0)"] == nil }
                inProgress = wanted.filter { pend["\(siString(si))/\($0)"] != nil }
                // Whole blocks: a share of 1 byte still takes a block (and its file a few more
                // for metadata, which the reserve covers).
                let perShare = onDisk(allocatedSize + ImmutableContainer.headerSize + ImmutableContainer.leaseSize)
                let need = UInt64(free.count) * perShare
                let avail = space(pending: pend).available
                if need > avail {
                    throw StorageError.noSpace(
                        "not enough space: \(free.count) share(s) of \(allocatedSize) bytes need \(need) bytes, "
                            + "\(avail) are available (\(config.reservedSpace) reserved)")
                }
                for n in free {
                    let w = try BucketWriter(backend: self, si: si, shnum: n, allocatedSize: allocatedSize,
                                             lease: Lease(renewSecret: renewSecret, cancelSecret: cancelSecret, expiration: expiration))
                    pend["\(siString(si))/\(n)"] = perShare
                    writers[n] = w
                }
            }
            return Allocation(alreadyHave: already.sorted(), writers: writers, inProgress: inProgress)
        }
    }

    /// `bytes` rounded up to whole filesystem blocks.
    func onDisk(_ bytes: UInt64) -> UInt64 { (bytes + blockSize - 1) / blockSize * blockSize }

    func writerFinished(_ w: BucketWriter) {
        _ = pending.withLock { $0.removeValue(forKey: "\(siString(w.si))/\(w.shnum)") }
    }

    /// Reads `length` bytes at `offset` of a complete immutable share.
    public func read(si: [UInt8], shnum: Int, offset: UInt64, length: Int) throws -> [UInt8] {
        try checkSI(si)
        guard length >= 0, length <= config.maxReadLength else {
            throw StorageError.badRequest("read of \(length) bytes exceeds the \(config.maxReadLength)-byte limit")
        }
        let f: FileDescriptor
        do { f = try FileDescriptor(path: sharePath(si, shnum)) } catch {
            throw StorageError.notFound("no share \(shnum) of storage index \(siString(si))")
        }
        if MutableContainer.isMutable(try f.read(at: 0, count: 32)) {
            throw StorageError.notFound("share \(shnum) of storage index \(siString(si)) is mutable; read it with slot_readv")
        }
        let (len, _) = try ImmutableContainer.inspect(f)
        guard offset <= len, UInt64(length) <= len - offset else {
            throw StorageError.badRequest("read of \(length) bytes at offset \(offset) runs past the end of share \(shnum) (\(len) bytes)")
        }
        return try f.read(at: ImmutableContainer.headerSize + offset, count: length)
    }

    // MARK: Leases

    /// Every share file of `si` (immutable and mutable).
    func shareFiles(_ si: [UInt8]) throws -> [Int] {
        try FileSystem.list(bucketDir(si)).compactMap { n in Int(n).flatMap { String($0) == n && $0 >= 0 && $0 < 256 ? $0 : nil } }.sorted()
    }

    /// Applies `change` to the leases of every share of `si`; returns how many shares it touched.
    func updateLeases(_ si: [UInt8], _ change: ([Lease]) -> [Lease]?) throws -> Int {
        var touched = 0
        for n in try shareFiles(si) {
            let path = sharePath(si, n)
            let f = try FileDescriptor(path: path, .readWrite)
            let head = try f.read(at: 0, count: 32)
            if MutableContainer.isMutable(head) {
                try replayJournal(si, n)
                var c = try MutableContainer(reading: f, path: path)
                guard let new = change(c.leases) else { continue }
                touched += 1
                if new.isEmpty {
                    try deleteShare(si, n)
                } else {
                    c.leases = new
                    try writeLeases(si, n, f, c)
                    try indexShare(si, n, mutable: true, size: c.dataLength, leases: new)
                }
            } else {
                let (len, leases) = try ImmutableContainer.inspect(f)
                guard let new = change(leases) else { continue }
                touched += 1
                if new.isEmpty {
                    try deleteShare(si, n)
                } else {
                    try ImmutableContainer.writeLeases(f, dataLength: len, new)
                    try f.sync()
                    try indexShare(si, n, mutable: false, size: len, leases: new)
                }
            }
        }
        return touched
    }

    func newExpiration() -> UInt32 { UInt32(min(UInt64(UInt32.max), clock() + UInt64(config.leaseDuration))) }

    func addOrRenewLeaseLocked(si: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8]) throws -> Int {
        let rh = Lease.hashSecret(renewSecret)
        let exp = newExpiration()
        return try updateLeases(si) { addingOrRenewing($0, renewHash: rh, renewSecret: renewSecret, cancelSecret: cancelSecret, expiration: exp) }
    }

    /// `leases` with the one carrying this renew secret extended to `expiration`, or a new
    /// lease with these secrets added.
    func addingOrRenewing(_ leases: [Lease], renewHash rh: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8],
                          expiration exp: UInt32) -> [Lease] {
        var l = leases
        if let i = l.firstIndex(where: { constantTimeEqual($0.renewHash, rh) }) {
            l[i].expiration = max(l[i].expiration, exp)
        } else {
            l.append(Lease(renewSecret: renewSecret, cancelSecret: cancelSecret, expiration: exp, nodeID: containerNodeID))
        }
        return l
    }

    /// Adds a lease to every share of `si`, or renews the one with this renew secret.
    public func addLease(si: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8]) throws {
        try checkSI(si)
        let n = try lock(si).withLock { _ in try addOrRenewLeaseLocked(si: si, renewSecret: renewSecret, cancelSecret: cancelSecret) }
        if n == 0 { throw StorageError.notFound("no shares of storage index \(siString(si)) are held here") }
    }

    /// One storage index of a census batch: the complete immutable shares held, and this
    /// client's lease expiration after renewal (0 when not renewed or nothing is held).
    public struct CensusEntry: Sendable {
        public var shares: [Int: UInt64]
        public var leaseExpiration: UInt32
    }

    /// Which shares of each storage index are held; with `renew`, adds or renews the lease
    /// (renew secret, cancel secret) on the shares of each one held. Each share file is
    /// opened once; renewing an existing lease rewrites only its 4-byte expiration. All
    /// renewals are flushed with one filesystem sync and indexed in one transaction before
    /// returning.
    public func census(_ entries: [(si: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8])], renew: Bool) throws -> [CensusEntry] {
        for e in entries { try checkSI(e.si) }
        let exp = newExpiration()
        var full: [(si: [UInt8], share: Int, mutable: Bool, size: UInt64, leases: [Lease])] = []
        var extended: [(si: [UInt8], share: Int, renewHash: [UInt8])] = []
        var out: [CensusEntry] = []
        out.reserveCapacity(entries.count)
        for e in entries {
            let rh = renew ? Lease.hashSecret(e.renewSecret) : []
            var shares: [Int: UInt64] = [:]
            try lock(e.si).withLock { _ in
                for n in (try? shareFiles(e.si)) ?? [] {
                    guard let f = try? FileDescriptor(path: sharePath(e.si, n), renew ? .readWrite : []),
                          let head = try? f.read(at: 0, count: 32), !MutableContainer.isMutable(head),
                          let (len, leases) = try? ImmutableContainer.inspect(f) else { continue }
                    shares[n] = len
                    guard renew else { continue }
                    if let i = leases.firstIndex(where: { constantTimeEqual($0.renewHash, rh) }), ImmutableContainer.version(head) == 2 {
                        if leases[i].expiration < exp {
                            try ImmutableContainer.setExpiration(f, dataLength: len, index: i, exp)
                            extended.append((e.si, n, rh))
                        }
                    } else {
                        let l = addingOrRenewing(leases, renewHash: rh, renewSecret: e.renewSecret, cancelSecret: e.cancelSecret, expiration: exp)
                        try ImmutableContainer.writeLeases(f, dataLength: len, l)
                        full.append((e.si, n, false, len, l))
                    }
                }
            }
            out.append(CensusEntry(shares: shares, leaseExpiration: renew && !shares.isEmpty ? exp : 0))
        }
        if !full.isEmpty || !extended.isEmpty {
            try FileSystem.syncFilesystem(sharesDir)
            try db.transaction {
                try indexShares(full, inTransaction: true)
                for (si, n, rh) in extended {
                    try db.query("UPDATE leases SET expiration = ? WHERE si = ? AND shnum = ? AND renew = ?",
                                 [.int(Int64(exp)), .blob(si), .int(Int64(n)), .blob(rh)])
                }
            }
        }
        return out
    }

    /// Renews the leases that carry this renew secret; refuses when none does.
    public func renewLease(si: [UInt8], renewSecret: [UInt8]) throws {
        try checkSI(si)
        let rh = Lease.hashSecret(renewSecret)
        let exp = newExpiration()
        let n = try lock(si).withLock { _ in
            try updateLeases(si) { leases in
                guard leases.contains(where: { constantTimeEqual($0.renewHash, rh) }) else { return nil }
                return leases.map { l in
                    var l = l
                    if constantTimeEqual(l.renewHash, rh) { l.expiration = max(l.expiration, exp) }
                    return l
                }
            }
        }
        if n == 0 {
            if try shareFiles(si).isEmpty { throw StorageError.notFound("no shares of storage index \(siString(si)) are held here") }
            throw StorageError.badSecret("no lease on storage index \(siString(si)) has that renew secret")
        }
    }

    /// Removes the leases that carry this cancel secret; a share left without leases is deleted.
    public func cancelLease(si: [UInt8], cancelSecret: [UInt8]) throws {
        try checkSI(si)
        let ch = Lease.hashSecret(cancelSecret)
        let n = try lock(si).withLock { _ in
            try updateLeases(si) { leases in
                guard leases.contains(where: { constantTimeEqual($0.cancelHash, ch) }) else { return nil }
                return leases.filter { !constantTimeEqual($0.cancelHash, ch) }
            }
        }
        if n == 0 {
            if try shareFiles(si).isEmpty { throw StorageError.notFound("no shares of storage index \(siString(si)) are held here") }
            throw StorageError.badSecret("no lease on storage index \(siString(si)) has that cancel secret")
        }
    }

    // MARK: Mutable slots

    /// One mutable share of a slot, open: its header and leases in memory, its data on disk.
    struct SlotShare {
        var container: MutableContainer
        let file: FileDescriptor
        let path: String

        /// The bytes of the data in `r`, clipped to the data.
        func read(_ r: Range<UInt64>) throws -> [UInt8] {
            let end = min(r.upperBound, container.dataLength)
            guard r.lowerBound < end else { return [] }
            return try file.read(at: UInt64(MutableContainer.dataOffset) + r.lowerBound, count: Int(end - r.lowerBound))
        }

        func clippedCount(_ r: Range<UInt64>) -> UInt64 {
            let end = min(r.upperBound, container.dataLength)
            return r.lowerBound < end ? end - r.lowerBound : 0
        }
    }

    /// The mutable shares of `si` (caller holds the storage index's lock). A journal left
    /// by a crash is replayed first (see SlotJournal).
    func loadSlot(_ si: [UInt8], forWriting: Bool = false) throws -> [Int: SlotShare] {
        var out: [Int: SlotShare] = [:]
        for n in try shareFiles(si) {
            let path = sharePath(si, n)
            try replayJournal(si, n)
            guard let f = try? FileDescriptor(path: path, forWriting ? .readWrite : []) else { continue }
            // Look at the magic first: an immutable share of the same storage index may be
            // gigabytes, and is none of a slot's business.
            guard MutableContainer.isMutable(try f.read(at: 0, count: 32)) else { continue }
            out[n] = SlotShare(container: try MutableContainer(reading: f, path: path), file: f, path: path)
        }
        return out
    }

    /// The reads of `readv` from each share of `slot` (all, or those in `shares`). The
    /// whole answer is at most `maxReadLength` bytes: a request for more is refused
    /// before anything is read, so one request cannot make the server allocate gigabytes.
    func read(_ slot: [Int: SlotShare], shares: [Int] = [], _ readv: [Range<UInt64>]) throws -> [Int: [[UInt8]]] {
        let chosen = slot.filter { shares.isEmpty || shares.contains($0.key) }
        var total: UInt64 = 0
        for (_, c) in chosen { for r in readv { total += c.clippedCount(r) } }
        guard total <= UInt64(config.maxReadLength) else {
            throw StorageError.badRequest("the read vectors ask for \(total) bytes; one reply carries at most \(config.maxReadLength)")
        }
        return try chosen.mapValues { c in try readv.map { try c.read($0) } }
    }

    /// Share number → the id that recorded its write enabler, for each mutable share held.
    public func slotWriteEnablerOwners(si: [UInt8]) throws -> [Int: [UInt8]] {
        try checkSI(si)
        return try lock(si).withLock { _ in try loadSlot(si).mapValues { $0.container.writeEnablerNodeID } }
    }

    public func slotReadv(si: [UInt8], shares: [Int], readv: [Range<UInt64>]) throws -> [Int: [[UInt8]]] {
        try checkSI(si)
        return try lock(si).withLock { _ in try read(try loadSlot(si), shares: shares, readv) }
    }

    /// Tahoe's slot_testv_and_readv_and_writev: every test of every share must pass before
    /// any write is applied; the reads see the state before the writes. A share written
    /// whole is replaced by a new file (written, synced, renamed over the old); a share
    /// changed in part is changed in place through a redo journal; either way a crash
    /// leaves it entirely old or entirely new.
    public func slotTestvAndReadvAndWritev(si: [UInt8], writeEnabler: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8],
                                           writes: [Int: SlotUpdate], readv: [Range<UInt64>]) throws -> (Bool, [Int: [[UInt8]]]) {
        try checkSI(si)
        guard writeEnabler.count == 32 else { throw StorageError.badRequest("write enabler must be 32 bytes") }
        guard writes.keys.allSatisfy({ $0 >= 0 && $0 < 256 }) else { throw StorageError.badRequest("share numbers must be 0..255") }
        return try lock(si).withLock { _ in
            let slot = try loadSlot(si, forWriting: !writes.isEmpty)
            // Never write a slot share over an immutable share of the same number.
            for n in try shareFiles(si) where slot[n] == nil && writes[n] != nil {
                throw StorageError.conflict("share \(n) of storage index \(siString(si)) is immutable; a slot write cannot replace it")
            }
            // The write enabler must match every existing share's.
            for (_, s) in slot where !constantTimeEqual(s.container.writeEnabler, writeEnabler) {
                let who = Base32.encode(s.container.writeEnablerNodeID)
                let mine = s.container.writeEnablerNodeID == containerNodeID ? " (this server)" : ""
                throw StorageError.badSecret("The write enabler was recorded by nodeid '\(who)'\(mine).")
            }
            let reads = try read(slot, readv)
            for (n, w) in writes {
                for t in w.tests {
                    let have = try slot[n]?.read(t.range) ?? []
                    if !t.comparison.holds(have[...], t.specimen[...]) {
                        // The writer will send its next attempt afresh: its staged data goes.
                        for (m, u) in writes { if let st = u.staged { try? FileSystem.remove(stagingPath(si, m, st.id)) } }
                        return (false, reads)
                    }
                }
            }
            // Check sizes before touching anything.
            for (n, w) in writes {
                let old = slot[n]?.container.dataLength ?? 0
                var end = old
                for d in w.writes {
                    // Offsets arrive from the wire: add with a check, never trap.
                    let (dEnd, overflow) = d.offset.addingReportingOverflow(UInt64(d.data.count))
                    guard !overflow else {
                        throw StorageError.badRequest("write of \(d.data.count) bytes at offset \(d.offset) of share \(n) runs past 2^64")
                    }
                    end = max(end, dEnd)
                }
                if let nl = w.newLength { end = max(end, nl) }
                if let st = w.staged {
                    guard w.writes.isEmpty, w.newLength == nil else {
                        throw StorageError.badRequest("share \(n): staged data comes without write vectors or a new length")
                    }
                    end = st.length
                    let size = (try? FileDescriptor(path: stagingPath(si, n, st.id)).size()) ?? 0
                    guard st.length <= config.maxMutableShareSize, size >= UInt64(MutableContainer.dataOffset) + st.length else {
                        throw StorageError.notFound("share \(n): no staged data of \(st.length) bytes under that staging id")
                    }
                }
                guard end <= config.maxMutableShareSize else {
                    throw StorageError.badRequest("share \(n) would grow to \(end) bytes; the limit is \(config.maxMutableShareSize)")
                }
                let growth = end > old ? end - old : 0
                if growth > space().available {
                    throw StorageError.noSpace("not enough space to grow share \(n) by \(growth) bytes")
                }
            }
            let exp = newExpiration()
            let rh = Lease.hashSecret(renewSecret)
            for (n, w) in writes.sorted(by: { $0.key < $1.key }) {
                if w.newLength == 0 {
                    if slot[n] != nil { try deleteShare(si, n) }
                    continue
                }
                var c = slot[n]?.container ?? MutableContainer(writeEnablerNodeID: containerNodeID, writeEnabler: writeEnabler)
                try FileSystem.makeDirectories(bucketDir(si))
                if let st = w.staged {
                    // The staged file becomes the share: header and trailer written into it,
                    // synced, renamed over the old share.
                    c.dataLength = st.length
                    c.leases = addingOrRenewing(c.leases, renewHash: rh, renewSecret: renewSecret, cancelSecret: cancelSecret, expiration: exp)
                    let path = stagingPath(si, n, st.id)
                    let f = try FileDescriptor(path: path, .readWrite)
                    try f.write(at: 0, c.header())
                    try f.write(at: c.extraOffset, c.trailer())
                    try f.truncate(to: c.fileSize)
                    try f.sync()
                    try FileSystem.rename(path, to: sharePath(si, n))
                    try FileSystem.syncDirectory(bucketDir(si))
                    try indexShare(si, n, mutable: true, size: c.dataLength, leases: c.leases)
                    continue
                }
                let oldLength = c.dataLength, oldSize = slot[n] == nil ? 0 : c.fileSize
                // The data's new length: grown by newLength before the writes, cut by it after.
                var length = oldLength
                if let nl = w.newLength, nl > length { length = nl }
                for d in w.writes { length = max(length, d.offset + UInt64(d.data.count)) }
                if let nl = w.newLength, nl < length { length = nl }
                c.dataLength = length
                c.leases = addingOrRenewing(c.leases, renewHash: rh, renewSecret: renewSecret, cancelSecret: cancelSecret, expiration: exp)
                let data = w.writes.compactMap { d -> (offset: UInt64, data: [UInt8])? in
                    guard d.offset < length else { return nil }
                    return (d.offset, d.offset + UInt64(d.data.count) > length ? Array(d.data.prefix(Int(length - d.offset))) : d.data)
                }
                if let whole = data.last(where: { $0.offset == 0 && UInt64($0.data.count) == length }), slot[n] == nil || data.count == 1 {
                    // Written whole (a new share, or every byte replaced): a new file, renamed over.
                    var bytes = whole.data
                    for d in data where d.offset != 0 || d.data.count != whole.data.count {
                        bytes.replaceSubrange(Int(d.offset)..<(Int(d.offset) + d.data.count), with: d.data)
                    }
                    try replaceFile(sharePath(si, n), c.serialized(data: bytes))
                } else if slot[n] == nil {
                    // A new share written in parts: zeros where nothing was written.
                    var bytes = [UInt8](repeating: 0, count: Int(length))
                    for d in data { bytes.replaceSubrange(Int(d.offset)..<(Int(d.offset) + d.data.count), with: d.data) }
                    try replaceFile(sharePath(si, n), c.serialized(data: bytes))
                } else {
                    // Changed in part: in place, through the journal. Bytes past the old data
                    // (the old trailer) become zeros before the writes land on them.
                    let base = UInt64(MutableContainer.dataOffset)
                    var extents: [SlotJournal.Extent] = []
                    if length > oldLength, base + oldLength < oldSize {
                        extents.append(.zeros(offset: base + oldLength, length: min(oldSize, base + length) - (base + oldLength)))
                    }
                    for d in data { extents.append(.bytes(offset: base + d.offset, data: d.data)) }
                    extents.append(.bytes(offset: 0, data: c.header()))
                    extents.append(.bytes(offset: c.extraOffset, data: c.trailer()))
                    try changeInPlace(si, n, slot[n]!.file, extents: extents, newSize: c.fileSize)
                }
                try indexShare(si, n, mutable: true, size: c.dataLength, leases: c.leases)
            }
            return (true, reads)
        }
    }

    // MARK: Staged shares

    func stagingPath(_ si: [UInt8], _ n: Int, _ id: [UInt8]) -> String {
        "\(stagingDir)/\(siString(si))-\(n)-\(id.map { String(format: "%02x", $0) }.joined())"
    }

    /// Keeps bytes `offset..<offset+data.count` of share `n`'s next data under staging id
    /// `id`, apart from the share, until a test-and-write takes them (or the server restarts).
    public func slotStage(si: [UInt8], writeEnabler: [UInt8], share n: Int, id: [UInt8], offset: UInt64, data: [UInt8]) throws {
        try checkSI(si)
        guard writeEnabler.count == 32, id.count == 16, n >= 0, n < 256 else {
            throw StorageError.badRequest("staging needs a 32-byte write enabler, a 16-byte id and a share number 0..255")
        }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(data.count))
        guard !overflow, end <= config.maxMutableShareSize else {
            throw StorageError.badRequest("staged data would reach byte \(overflow ? "2^64" : "\(end)"); a mutable share holds at most \(config.maxMutableShareSize)")
        }
        try lock(si).withLock { _ in
            // Only the holder of the write enabler may stage for an existing slot.
            let slot = try loadSlot(si)
            for (_, s) in slot where !constantTimeEqual(s.container.writeEnabler, writeEnabler) {
                throw StorageError.badSecret("The write enabler was recorded by nodeid '\(Base32.encode(s.container.writeEnablerNodeID))'.")
            }
            let path = stagingPath(si, n, id)
            let f = try FileDescriptor(path: path, [.readWrite, .create])
            let before = try f.size(), after = UInt64(MutableContainer.dataOffset) + end
            if after > before, after - before > space().available {
                throw StorageError.noSpace("not enough space to stage \(data.count) more bytes of share \(n)")
            }
            try f.write(at: UInt64(MutableContainer.dataOffset) + offset, data)
        }
    }

    /// Drops staged data no test-and-write has taken for `age` seconds (a writer that
    /// died half way); returns how many staged shares went.
    @discardableResult
    public func dropStaleStaging(olderThan age: UInt64 = 3600) -> Int {
        // File times come from the kernel's unshifted clock: take this process's test
        // offset (GRID_CLOCK_OFFSET) back out of the lease clock before comparing.
        let now = UInt64(clamping: Int64(clamping: clock()) &- WallClock.offset)
        var dropped = 0
        for name in (try? FileSystem.list(stagingDir)) ?? [] {
            let path = stagingDir + "/" + name
            guard let st = try? FileSystem.status(path), st.modified + age < now else { continue }
            if (try? FileSystem.remove(path)) != nil { dropped += 1 }
        }
        return dropped
    }

    // MARK: Slot journal

    func journalPath(_ si: [UInt8], _ n: Int) -> String { "\(journalDir)/\(siString(si))-\(n)" }

    /// Applies `extents` to share `n` of `si` (open as `f`) through the redo journal.
    func changeInPlace(_ si: [UInt8], _ n: Int, _ f: FileDescriptor, extents: [SlotJournal.Extent], newSize: UInt64) throws {
        let target = String(sharePath(si, n).dropFirst(root.count + 1))
        let journal = SlotJournal(target: target, extents: extents, newSize: newSize)
        let jpath = journalPath(si, n)
        do {
            let j = try FileDescriptor(path: jpath, .replace)
            try j.write(at: 0, journal.encoded())
            try j.sync()
            try FileSystem.syncDirectory(journalDir)
        } catch {
            try? FileSystem.remove(jpath)
            throw error
        }
        if config.crashPoint == .afterSlotJournal { CurrentProcess.killSelf() }
        try journal.apply(to: f, crashAfterFirstExtent: config.crashPoint == .duringSlotChange)
        try FileSystem.remove(jpath)
        try FileSystem.syncDirectory(journalDir)
    }

    /// Replays (or, when incomplete, discards) the journal of share `n` of `si`, if any.
    func replayJournal(_ si: [UInt8], _ n: Int) throws {
        let jpath = journalPath(si, n)
        guard FileSystem.exists(jpath) else { return }
        try replayJournal(at: jpath)
    }

    func replayJournal(at jpath: String) throws {
        let bytes = try FileSystem.readFile(jpath, maxSize: Int(config.maxMutableShareSize) + (1 << 20)) ?? []
        if let journal = SlotJournal(decoding: bytes), let f = try? FileDescriptor(path: root + "/" + journal.target, .readWrite),
           MutableContainer.isMutable(try f.read(at: 0, count: 32)) {
            try journal.apply(to: f)
            // The index follows the share (the crash may have come before it was updated).
            let parts = journal.target.split(separator: "/")
            if parts.count == 4, let si = Base32.decode(String(parts[2])), si.count == 16, let n = Int(parts[3]),
               let c = try? MutableContainer(reading: f, path: journal.target) {
                try indexShare(si, n, mutable: true, size: c.dataLength, leases: c.leases)
            }
        }
        try FileSystem.remove(jpath)
        try FileSystem.syncDirectory(journalDir)
    }

    /// At start: every journal a crash left is replayed or discarded.
    func replayJournals() throws -> Int {
        let names = try FileSystem.list(journalDir)
        for name in names { try replayJournal(at: journalDir + "/" + name) }
        return names.count
    }

    /// Rewrites the leases of the mutable share at `path` (open as `f`), in place.
    func writeLeases(_ si: [UInt8], _ n: Int, _ f: FileDescriptor, _ c: MutableContainer) throws {
        try changeInPlace(si, n, f, extents: [.bytes(offset: 0, data: c.header()), .bytes(offset: c.extraOffset, data: c.trailer())],
                          newSize: c.fileSize)
    }

    // MARK: Files and index

    /// Writes `bytes` to a temporary file, syncs it and renames it over `path`.
    func replaceFile(_ path: String, _ bytes: [UInt8]) throws {
        let tmp = path + ".new"
        do {
            let f = try FileDescriptor(path: tmp, .replace)
            try f.write(at: 0, bytes)
            try f.sync()
            try FileSystem.rename(tmp, to: path)
        } catch {
            try? FileSystem.remove(tmp)
            throw error
        }
        try FileSystem.syncDirectory(FileSystem.directoryName(path))
    }

    func deleteShare(_ si: [UInt8], _ n: Int) throws {
        try FileSystem.remove(sharePath(si, n))
        let dir = bucketDir(si)
        if FileSystem.removeDirectoryIfEmpty(dir) {
            FileSystem.removeDirectoryIfEmpty(FileSystem.directoryName(dir))  // the prefix directory, if now empty
        }
        try db.transaction {
            try db.query("DELETE FROM shares WHERE si = ? AND shnum = ?", [.blob(si), .int(Int64(n))])
            try db.query("DELETE FROM leases WHERE si = ? AND shnum = ?", [.blob(si), .int(Int64(n))])
        }
    }

    func indexShare(_ si: [UInt8], _ n: Int, mutable: Bool, size: UInt64, leases: [Lease]) throws {
        try indexShares([(si, n, mutable, size, leases)])
    }

    /// Records shares and their leases in the index, in one transaction (or in the
    /// caller's, `inTransaction`).
    func indexShares(_ rows: [(si: [UInt8], share: Int, mutable: Bool, size: UInt64, leases: [Lease])], inTransaction: Bool = false) throws {
        if !inTransaction { return try db.transaction { try indexShares(rows, inTransaction: true) } }
        do {
            for (si, n, mutable, size, leases) in rows {
                try db.query("INSERT OR REPLACE INTO shares(si, shnum, mutable, size) VALUES (?, ?, ?, ?)",
                             [.blob(si), .int(Int64(n)), .int(mutable ? 1 : 0), .int(Int64(size))])
                try db.query("DELETE FROM leases WHERE si = ? AND shnum = ?", [.blob(si), .int(Int64(n))])
                for l in leases {
                    try db.query("INSERT OR REPLACE INTO leases(si, shnum, renew, expiration) VALUES (?, ?, ?, ?)",
                                 [.blob(si), .int(Int64(n)), .blob(l.renewHash), .int(Int64(l.expiration))])
                }
            }
        }
    }

    /// Walks the share directory and rebuilds the index (a Tahoe storage directory served
    /// for the first time, or a lost index). Cost: one pass over the shares.
    @discardableResult
    public func rebuildIndex() throws -> Int {
        // The files are the truth: forget the old index, then index every share found.
        try db.transaction {
            try db.query("DELETE FROM shares")
            try db.query("DELETE FROM leases")
        }
        var indexed = 0
        for prefix in try FileSystem.list(sharesDir) where prefix != "incoming" {
            for siName in try FileSystem.list(sharesDir + "/" + prefix) {
                guard let si = Base32.decode(siName), si.count == 16 else { continue }
                for n in try shareFiles(si) {
                    let path = sharePath(si, n)
                    guard let f = try? FileDescriptor(path: path) else { continue }
                    let head = (try? f.read(at: 0, count: 32)) ?? []
                    if MutableContainer.isMutable(head), let c = try? MutableContainer(reading: f, path: path) {
                        try indexShare(si, n, mutable: true, size: c.dataLength, leases: c.leases)
                        indexed += 1
                    } else if let (len, leases) = try? ImmutableContainer.inspect(f) {
                        try indexShare(si, n, mutable: false, size: len, leases: leases)
                        indexed += 1
                    }
                }
            }
        }
        return indexed
    }

    // MARK: Expiry, advisories, stats

    /// Removes leases that expired before now and deletes shares left without any. The work
    /// is proportional to the expired leases (an index on expiration finds them), not to
    /// the shares held. Returns the number of shares deleted.
    @discardableResult
    public func expireLeases(batch: Int = 1000) throws -> Int {
        let now = clock()
        var deleted = 0
        while true {
            let rows = try db.lock.withLock { _ in
                try db.query("SELECT DISTINCT si, shnum FROM leases WHERE expiration < ? LIMIT ?", [.int(Int64(now)), .int(Int64(batch))])
            }
            if rows.isEmpty { break }
            for row in rows {
                guard let si = row[0].blob, let n = row[1].int else { continue }
                try lock(si).withLock { _ in
                    let path = sharePath(si, Int(n))
                    guard let f = try? FileDescriptor(path: path, .readWrite) else {
                        try db.transaction { try db.query("DELETE FROM leases WHERE si = ? AND shnum = ?", [.blob(si), .int(n)]) }
                        return
                    }
                    let head = try f.read(at: 0, count: 32)
                    // The container is the truth: re-read its leases before deleting anything.
                    if MutableContainer.isMutable(head) {
                        try replayJournal(si, Int(n))
                        var c = try MutableContainer(reading: f, path: path)
                        c.leases = c.leases.filter { UInt64($0.expiration) >= now }
                        if c.leases.isEmpty { try deleteShare(si, Int(n)); deleted += 1 } else {
                            try writeLeases(si, Int(n), f, c)
                            try indexShare(si, Int(n), mutable: true, size: c.dataLength, leases: c.leases)
                        }
                    } else {
                        let (len, leases) = try ImmutableContainer.inspect(f)
                        let live = leases.filter { UInt64($0.expiration) >= now }
                        if live.isEmpty { try deleteShare(si, Int(n)); deleted += 1 } else {
                            try ImmutableContainer.writeLeases(f, dataLength: len, live)
                            try indexShare(si, Int(n), mutable: false, size: len, leases: live)
                        }
                    }
                }
            }
        }
        return deleted
    }

    /// Records a client's report that a share is corrupt.
    public func adviseCorruptShare(mutable: Bool, si: [UInt8], shnum: Int, reason: String) throws {
        try checkSI(si)
        // Each report is its own file: two reports in the same second must not overwrite
        // each other (the random suffix, and O_EXCL, see to that).
        let name = "\(clock())--\(siString(si))-\(shnum)--\(Hex.encode(SecureRandom.bytes(4)))"
        let text = "storage index: \(siString(si))\nshare number: \(shnum)\ntype: \(mutable ? "mutable" : "immutable")\nreason: \(reason.prefix(1000))\n"
        let f = try FileDescriptor(path: advisoriesDir + "/" + name, [.write, .create, .exclusive])
        try f.write(at: 0, Array(text.utf8))
    }

    public struct Stats: Sendable {
        public var immutableShares: UInt64
        public var mutableShares: UInt64
        public var usedBytes: UInt64
    }

    /// Leases in the index and the earliest expiry among them (Unix time; nil: none).
    public func leaseStats() throws -> (count: UInt64, earliestExpiry: UInt64?) {
        let rows = try db.lock.withLock { _ in try db.query("SELECT COUNT(*), MIN(expiration) FROM leases") }
        guard let r = rows.first else { return (0, nil) }
        return (UInt64(r[0].int ?? 0), r[1].int.map { UInt64($0) })
    }

    /// The filesystem holding the shares: its size and what it has free for us.
    public func diskTotals() -> (total: UInt64, free: UInt64) {
        ((try? FileSystem.totalSpace(root)) ?? 0, (try? FileSystem.availableSpace(root)) ?? 0)
    }

    public func stats() throws -> Stats {
        let rows = try db.lock.withLock { _ in
            try db.query("SELECT mutable, COUNT(*), COALESCE(SUM(size), 0) FROM shares GROUP BY mutable")
        }
        var s = Stats(immutableShares: 0, mutableShares: 0, usedBytes: 0)
        for r in rows {
            let count = UInt64(r[1].int ?? 0), size = UInt64(r[2].int ?? 0)
            if r[0].int == 1 { s.mutableShares = count } else { s.immutableShares = count }
            s.usedBytes += size
        }
        return s
    }
}

/// Writes one immutable share. The share lives under `incoming/` until `close`, so readers
/// never see a partial share, and a crash leaves nothing behind that survives a restart.
public final class BucketWriter: @unchecked Sendable {
    unowned let backend: StorageBackend
    public let si: [UInt8]
    public let shnum: Int
    public let allocatedSize: UInt64
    let lease: Lease
    let incomingPath: String
    let file: FileDescriptor
    /// Byte ranges written so far.
    var written = ByteRanges()
    /// Bytes written since a background flush was last asked for.
    var unflushed: UInt64 = 0
    /// Why a write was refused (past the allocation, or different bytes over written
    /// ones): such a bucket is never closed into a share, since a close may arrive right
    /// behind its writes without the client having seen their replies (protocol 2).
    var refused: String?
    let state = Mutex<Int>(0)  // 0 open, 1 closed, 2 aborted; guards the vars above too

    init(backend: StorageBackend, si: [UInt8], shnum: Int, allocatedSize: UInt64, lease: Lease) throws {
        self.backend = backend
        self.si = si
        self.shnum = shnum
        self.allocatedSize = allocatedSize
        self.lease = lease
        let s = backend.siString(si)
        let dir = "\(backend.incomingDir)/\(s.prefix(2))/\(s)"
        try FileSystem.makeDirectories(dir)
        incomingPath = "\(dir)/\(shnum)"
        file = try FileDescriptor(path: incomingPath, [.readWrite, .create, .truncate])
        try file.write(at: 0, ImmutableContainer.header(allocatedSize: allocatedSize, leaseCount: 0))
    }

    /// Writes `data` at `offset` of the share data. Rewriting a range with the same bytes
    /// is allowed (a retried write); with different bytes it is a conflict.
    public func write(offset: UInt64, data: [UInt8]) throws {
        try data.withUnsafeBytes { try write(offset: offset, data: $0) }
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) throws {
        try state.withLock { st in
            guard st == 0 else { throw StorageError.badRequest("bucket writer for share \(shnum) is \(st == 1 ? "closed" : "aborted")") }
            // Offsets arrive from the wire: add with a check, never trap.
            let (end, overflow) = offset.addingReportingOverflow(UInt64(data.count))
            guard !overflow, end <= allocatedSize else {
                let why = "write of \(data.count) bytes at offset \(offset) exceeds the allocated size \(allocatedSize) of share \(shnum)"
                refused = why
                throw StorageError.badRequest(why)
            }
            for w in written.ranges where w.lowerBound < end && offset < w.upperBound {
                let lo = max(w.lowerBound, offset), hi = min(w.upperBound, end)
                let existing = try file.read(at: ImmutableContainer.headerSize + lo, count: Int(hi - lo))
                if !existing.elementsEqual(data[Int(lo - offset)..<Int(hi - offset)]) {
                    let why = "write at offset \(offset) of share \(shnum) differs from data already written there"
                    refused = why
                    throw StorageError.conflict(why)
                }
            }
            do {
                try file.write(at: ImmutableContainer.headerSize + offset, data)
            } catch {
                abortLocked(&st)
                throw error
            }
            unflushed += UInt64(data.count)
            backend.immutableBytesWritten.add(UInt64(data.count), ordering: .relaxed)
            if unflushed >= 4 << 20 {
                // Off the request path (sync_file_range here blocked a write up to 43 ms
                // when the device queue was full): close's fsync then finds little to do.
                file.flushInBackground()
                unflushed = 0
            }
            written.insert(offset..<end)
        }
    }

    /// Adds the lease, syncs, and moves the share into place.
    public func close() throws {
        try state.withLock { st in
            guard st == 0 else { throw StorageError.badRequest("bucket writer for share \(shnum) is already \(st == 1 ? "closed" : "aborted")") }
            if let refused {
                abortLocked(&st)
                throw StorageError.conflict("share \(shnum) was not closed: an earlier write was refused (\(refused)); the partial share was discarded")
            }
            do {
                try ImmutableContainer.writeLeases(file, dataLength: allocatedSize, [lease])
                try file.sync()
                let dir = backend.bucketDir(si)
                try FileSystem.makeDirectories(dir)
                try FileSystem.rename(incomingPath, to: backend.sharePath(si, shnum))
                try FileSystem.syncDirectory(dir)
                st = 1
                backend.writerFinished(self)
                cleanIncomingDirs()
                try backend.indexShare(si, shnum, mutable: false, size: allocatedSize, leases: [lease])
            } catch {
                if st == 0 { abortLocked(&st) }
                throw error
            }
        }
    }

    /// Discards the partial share.
    public func abort() {
        state.withLock { st in if st == 0 { abortLocked(&st) } }
    }

    func abortLocked(_ st: inout Int) {
        st = 2
        try? FileSystem.remove(incomingPath)
        cleanIncomingDirs()
        backend.writerFinished(self)
    }

    func cleanIncomingDirs() {
        let dir = FileSystem.directoryName(incomingPath)
        if FileSystem.removeDirectoryIfEmpty(dir) { FileSystem.removeDirectoryIfEmpty(FileSystem.directoryName(dir)) }
    }
}

/// One of the locks that serialise work on a storage index (striped by index).
final class StripeLock: @unchecked Sendable {
    let l = NSLock()
    func withLock<R>(_ body: (inout Void) throws -> R) rethrows -> R {
        l.lock()
        defer { l.unlock() }
        var unit: Void = ()
        return try body(&unit)
    }
}
