import GridClient
import GridDirectory
import GridFormat
import GridSystem

/// Everything reachable from a directory (Tahoe's `deep_traverse`): each object once
/// (by its verify capability; literal files every time), directories read several at a
/// time, memory bounded by the directories waiting to be read, not by the tree.
extension GridFilesystem {
    public struct Reached: Sendable {
        public var path: [String]
        public var capability: AnyCapability
        /// For directories: their children count and packed size.
        public var children: Int?
        public var directoryBytes: Int?
    }

    /// How many directories are read at once.
    public static let traversalParallelism = 8

    /// Calls `visit` for the root and everything below it. A directory that cannot be
    /// read is reported to `failed` and the walk goes on.
    public func walk(_ root: AnyCapability, visit: @escaping @Sendable (Reached) async throws -> Void,
                     failed: @escaping @Sendable ([String], Error) -> Void = { _, _ in }) async throws {
        var found = Set<String>()
        if let v = root.verifier?.string { found.insert(v) }
        guard case let .directory(rootDir) = root else {
            try await visit(Reached(path: [], capability: root))
            return
        }
        var queue: [Pending] = [Pending(dir: rootDir, path: [])]
        try await withThrowingTaskGroup(of: DirectoryRead.self) { group in
            var inFlight = 0
            while true {
                while inFlight < Self.traversalParallelism, !queue.isEmpty {
                    let next = queue.removeFirst()
                    inFlight += 1
                    group.addTask {
                        do { return DirectoryRead(pending: next, contents: try await self.contents(of: next.dir), error: nil) }
                        catch { return DirectoryRead(pending: next, contents: nil, error: error) }
                    }
                }
                guard let read = try await group.next() else { break }
                inFlight -= 1
                let path = read.pending.path
                guard let contents = read.contents else {
                    failed(path, read.error ?? GridError(.internal, "no contents and no error"))
                    try await visit(Reached(path: path, capability: .directory(read.pending.dir)))
                    continue
                }
                try await visit(Reached(path: path, capability: .directory(read.pending.dir), children: contents.count,
                                        directoryBytes: contents.unpackedByteCount))
                var subdirs: [Pending] = []
                for e in try contents.entries() {
                    let childPath = path + [e.name]
                    if !e.capability.isUnknown, let v = e.capability.verifier?.string {
                        if found.contains(v) { continue }
                        found.insert(v)
                    }
                    if case let .directory(d) = e.capability { subdirs.append(Pending(dir: d, path: childPath)) }
                    else { try await visit(Reached(path: childPath, capability: e.capability)) }
                }
                // Depth first: the children go ahead of what waits, so the queue stays short.
                queue.insert(contentsOf: subdirs, at: 0)
            }
        }
    }

    struct Pending: Sendable {
        let dir: DirectoryCapability
        let path: [String]
    }

    struct DirectoryRead: Sendable {
        let pending: Pending
        let contents: DirectoryContents?
        let error: (any Error)?
    }

    /// Tahoe's deep stats.
    public struct DeepStats: Codable, Sendable {
        public var countImmutableFiles = 0, countMutableFiles = 0, countLiteralFiles = 0, countFiles = 0
        public var countDirectories = 0, countUnknown = 0
        public var sizeImmutableFiles: UInt64 = 0, sizeLiteralFiles: UInt64 = 0, sizeDirectories: UInt64 = 0
        public var largestDirectory = 0, largestDirectoryChildren = 0
        public var largestImmutableFile: UInt64 = 0
        /// [min, max, count] per bucket (two per decade, as Tahoe's).
        public var sizeFilesHistogram: [[UInt64]] = []
        var histogram: [UInt64: UInt64] = [:]

        enum CodingKeys: String, CodingKey {
            case countImmutableFiles = "count-immutable-files", countMutableFiles = "count-mutable-files"
            case countLiteralFiles = "count-literal-files", countFiles = "count-files", countDirectories = "count-directories"
            case countUnknown = "count-unknown", sizeImmutableFiles = "size-immutable-files", sizeLiteralFiles = "size-literal-files"
            case sizeDirectories = "size-directories", largestDirectory = "largest-directory"
            case largestDirectoryChildren = "largest-directory-children", largestImmutableFile = "largest-immutable-file"
            case sizeFilesHistogram = "size-files-histogram"
        }

        public init() {}

        /// Tahoe's buckets: (0,0), (1,3), (4,10), (11,31), (32,100) ... upper bounds by √10.
        static func bucket(_ size: UInt64) -> (UInt64, UInt64) {
            if size == 0 { return (0, 0) }
            var (lo, hi): (UInt64, UInt64) = (1, 3)
            while size > hi {
                lo = hi + 1
                var p = 1.0
                while p < Double(lo) { p *= 10.0.squareRoot() }
                hi = UInt64(p)
            }
            return (lo, hi)
        }

        public mutating func add(_ r: Reached) {
            switch r.capability {
            case .unknown: countUnknown += 1
            case .directory:
                countDirectories += 1
                if let b = r.directoryBytes { sizeDirectories += UInt64(b); largestDirectory = max(largestDirectory, b) }
                if let c = r.children { largestDirectoryChildren = max(largestDirectoryChildren, c) }
            case .mutable:
                countFiles += 1
                countMutableFiles += 1
            case let .immutable(c):
                countFiles += 1
                let size = c.fileSize
                let (lo, _) = Self.bucket(size)
                histogram[lo, default: 0] += 1
                if case .lit = c { countLiteralFiles += 1; sizeLiteralFiles += size }
                else { countImmutableFiles += 1; sizeImmutableFiles += size; largestImmutableFile = max(largestImmutableFile, size) }
            }
            sizeFilesHistogram = histogram.keys.sorted().map { [$0, Self.bucket($0).1, histogram[$0]!] }
        }
    }

    public func deepStats(_ root: AnyCapability) async throws -> DeepStats {
        let stats = Locked(DeepStats())
        try await walk(root) { r in stats.mutate { $0.add(r) } }
        return stats.value
    }

    // MARK: deep-check

    public struct DeepCheckItem: Codable, Sendable {
        public var path: String
        public var capability: String
        public var verdict: String
        public var sharesFound: Int
        public var needed: Int
        public var total: Int
        /// After a repair: the verdict then.
        public var afterRepair: String?
        public var problem: String?

        enum CodingKeys: String, CodingKey {
            case path, capability = "cap", verdict, sharesFound = "shares_found", needed, total
            case afterRepair = "after_repair", problem
        }
    }

    public struct DeepCheckReport: Codable, Sendable {
        public var checked = 0, healthy = 0, degraded = 0, unrecoverable = 0
        public var repairsAttempted = 0, repairsSucceeded = 0
        public var unhealthy: [DeepCheckItem] = []
        enum CodingKeys: String, CodingKey {
            case checked = "count-objects-checked", healthy = "count-objects-healthy", degraded = "count-objects-degraded"
            case unrecoverable = "count-objects-unrecoverable", repairsAttempted = "count-repairs-attempted"
            case repairsSucceeded = "count-repairs-successful", unhealthy = "list-unhealthy-files"
        }
        public init() {}
        /// The worst verdict (after repairs).
        public var worst: Verdict {
            let after = unhealthy.map { Verdict(rawValue: $0.afterRepair ?? $0.verdict) ?? .unrecoverable }
            if after.contains(.unrecoverable) { return .unrecoverable }
            return after.contains(.degraded) ? .degraded : .healthy
        }
    }

    /// Checks everything reachable from `root`. Immutable files are counted in batches
    /// across all servers at once (one census call per server per batch, leases renewed in
    /// the same call with `addLease`), as `grid maintain` does; mutable files and
    /// directories are checked a few at a time; `verify` reads and checks every share of
    /// every object; `repair` repairs what is not healthy.
    public func deepCheck(_ root: AnyCapability, verify: Bool, repair: Bool, addLease: Bool,
                          each: @escaping @Sendable (DeepCheckItem) -> Void = { _ in }) async throws -> DeepCheckReport {
        let report = Locked(DeepCheckReport())
        let batchSize = 500
        let pending = Locked<[(String, CHKCapability)]>([])
        @Sendable func record(_ item: DeepCheckItem, _ v: Verdict) async {
            var item = item
            var repaired = false
            if v != .healthy && repair {
                if let cap = try? AnyCapability(parsing: item.capability), let r = try? await self.repair(cap, verify: verify) {
                    item.afterRepair = r.after.verdict.rawValue
                    repaired = r.after.verdict == .healthy
                } else {
                    item.afterRepair = v.rawValue
                }
            }
            let done = item
            report.mutate { rep in
                if v != .healthy && repair { rep.repairsAttempted += 1 }
                if repaired { rep.repairsSucceeded += 1 }
                rep.checked += 1
                switch v {
                case .healthy: rep.healthy += 1
                case .degraded: rep.degraded += 1
                case .unrecoverable: rep.unrecoverable += 1
                }
                if v != .healthy { rep.unhealthy.append(done) }
            }
            each(item)
        }
        @Sendable func flush() async {
            let batch = pending.value
            pending.value = []
            guard !batch.isEmpty else { return }
            let servers = await pool.waitForServers(enough: settings.encoding.total, minimum: 1)
            let census = await pool.censusBatch(storageIndexes: batch.map { $0.1.storageIndex }, servers: servers,
                                                leaseSecret: addLease ? settings.leaseSecret : nil, timeout: 30)
            for (i, (path, cap)) in batch.enumerated() {
                var holdings: [String: Set<Int>] = [:]
                for (s, answers) in census.answers where i < answers.count {
                    let shares = Set(answers[i].shares.keys)
                    if !shares.isEmpty { holdings[s.nodeID] = shares }
                }
                let v = Verdict(holdings: holdings, needed: cap.needed, total: cap.total, happy: settings.encoding.happy)
                await record(DeepCheckItem(path: path, capability: cap.string, verdict: v.rawValue,
                                           sharesFound: Set(holdings.values.flatMap { $0 }).count, needed: cap.needed, total: cap.total), v)
            }
        }
        // Objects checked one by one (mutable ones, and everything with --verify): listed
        // during the walk, checked a few at a time after it.
        let individual = Locked<[(String, AnyCapability)]>([])
        try await walk(root, visit: { r in
            let path = r.path.joined(separator: "/")
            switch r.capability.storedFile {
            case .immutable(.lit):
                await record(DeepCheckItem(path: path, capability: r.capability.string, verdict: "healthy", sharesFound: 0, needed: 0, total: 0), .healthy)
            case let .immutable(.chk(c)) where !verify:
                pending.value.append((path, c))
                if pending.value.count >= batchSize { await flush() }
            case .unknown, .directory:
                break
            default:
                individual.value.append((path, r.capability))
            }
        }, failed: { path, error in
            report.mutate {
                $0.unhealthy.append(DeepCheckItem(path: path.joined(separator: "/"), capability: "", verdict: "unrecoverable", sharesFound: 0,
                                                  needed: 0, total: 0, problem: "cannot read this directory: \(error)"))
            }
        })
        let work = individual.value
        try await concurrently(work, limit: Self.traversalParallelism, { (path: String, cap: AnyCapability) in
            do {
                let res = try await self.check(cap, verify: verify, addLease: addLease)
                await record(DeepCheckItem(path: path, capability: cap.string, verdict: res.verdict.rawValue, sharesFound: res.shares.count,
                                           needed: res.needed, total: res.total), res.verdict)
            } catch {
                await record(DeepCheckItem(path: path, capability: cap.string, verdict: "unrecoverable", sharesFound: 0,
                                           needed: 0, total: 0, problem: "\(error)"), .unrecoverable)
            }
        }, done: { _ in })
        await flush()
        return report.value
    }
}
