import GridCrypto
import GridProtocol
import GridSystem
import GridWire

/// What the servers hold of one storage index: the answer of each server asked, and who
/// did not answer. Uploads, downloads and (later) the checker and repairer all start here.
public struct ShareCensus: Sendable {
    /// One server's answer.
    public struct Answer: Sendable {
        public let server: ServerRef
        public let client: StorageClient
        /// Share number → share data length.
        public let shares: [Int: UInt64]
        /// Seconds the server took to answer.
        public let latency: Double
        /// Bytes of one of the shares, when the census asked for them (`Peek`).
        public var peek: SharePeek? = nil
    }

    /// Bytes of one share to ask a server for with the census (get_buckets_peek, servers
    /// of protocol 3): the first `prefix` and the last `suffix` bytes of share `share`.
    public struct Peek: Sendable {
        public var share: Int
        public var prefix: UInt32
        public var suffix: UInt32
        public init(share: Int, prefix: UInt32, suffix: UInt32) { (self.share, self.prefix, self.suffix) = (share, prefix, suffix) }
    }

    /// Answers, fastest server first.
    public var answers: [Answer]
    /// Servers that could not be reached or refused, with why.
    public var failed: [ServerRef: String]
    /// Servers still silent when the census stopped waiting.
    public var unanswered: [ServerRef]
    /// Servers not asked (a staged census that found enough among the first).
    public var unasked: [ServerRef] = []

    /// Server → the shares it holds (servers holding none are left out).
    public var holdings: [ServerRef: Set<Int>] {
        var out: [ServerRef: Set<Int>] = [:]
        for a in answers where !a.shares.isEmpty { out[a.server] = Set(a.shares.keys) }
        return out
    }

    /// Servers that answered, with their connections.
    public var clients: [ServerRef: StorageClient] {
        Dictionary(answers.map { ($0.server, $0.client) }, uniquingKeysWith: { a, _ in a })
    }
}

extension ServerPool {
    /// Asks every server in `servers` at once which shares of `storageIndex` it holds.
    ///
    /// Waits for every answer, at most `deadline` seconds; or, with `enough`, stops once
    /// that many distinct shares are known and the others have had `grace` seconds more.
    /// `peeks`: servers also asked for bytes of one share each (those announcing protocol 3).
    /// `firstStage` (with `enough`): only the first that many servers are asked at first;
    /// the others only when those answer without `enough` distinct shares, or are slow
    /// (three times the first answer's time, at least 0.3 s). Those never asked are
    /// `unasked` in the result.
    public func census(storageIndex si: [UInt8], servers: [ServerRef], enough: Int? = nil, grace: Double = 0.25,
                       deadline: Double = 15, peeks: [ServerRef: ShareCensus.Peek] = [:], firstStage: Int? = nil) async -> ShareCensus {
        enum Event: Sendable { case answer(ShareCensus.Answer), failed(ServerRef, String), tick }
        let (stream, cont) = AsyncStream.makeStream(of: Event.self)
        let started = monotonicNow()
        func ask(_ s: ServerRef) {
            Task { [self] in
                do {
                    let c = try await client(for: s)
                    let t0 = monotonicNow()
                    if let p = peeks[s], s.announcement.protocolVersion >= Hello.peekVersion {
                        do {
                            let r = try await c.getBucketsPeek(GetBucketsPeekRequest(storageIndex: si, share: p.share, prefix: p.prefix, suffix: p.suffix))
                            cont.yield(.answer(ShareCensus.Answer(server: s, client: c, shares: r.shares, latency: monotonicNow() - t0, peek: r.peek)))
                            return
                        } catch let e as WireError where e.code == .unknownMethod {
                            // Announced version 3 but an older server answers: ask as before.
                        }
                    }
                    let held = try await c.getBuckets(storageIndex: si)
                    cont.yield(.answer(ShareCensus.Answer(server: s, client: c, shares: held, latency: monotonicNow() - t0)))
                } catch {
                    cont.yield(.failed(s, "\(error)"))
                }
            }
        }
        let staged = enough != nil ? min(servers.count, max(1, firstStage ?? servers.count)) : servers.count
        var asked = staged
        var widenAt = started + 0.3
        for s in servers.prefix(staged) { ask(s) }
        Task {
            // Ticks let the loop below notice its deadlines.
            while monotonicNow() - started < deadline {
                try? await Task.sleep(nanoseconds: 100_000_000)
                cont.yield(.tick)
            }
            cont.finish()
        }
        var answers: [ShareCensus.Answer] = []
        var failed: [ServerRef: String] = [:]
        var enoughAt: Double?
        for await event in stream {
            switch event {
            case let .answer(a):
                if answers.isEmpty { widenAt = max(widenAt, started + 3 * (monotonicNow() - started)) }
                answers.append(a)
            case let .failed(s, why): failed[s] = why
            case .tick: break
            }
            let distinct = Set(answers.flatMap(\.shares.keys)).count
            if asked < servers.count, let enough, distinct < enough,
               answers.count + failed.count >= asked || monotonicNow() >= widenAt {
                for s in servers[asked...] { ask(s) }
                asked = servers.count
            }
            if answers.count + failed.count >= asked {
                if asked == servers.count || distinct >= enough ?? 0 { break }
            }
            if let enough, distinct >= enough {
                let now = monotonicNow()
                if enoughAt == nil { enoughAt = now }
                if now - enoughAt! > grace { break }
            }
        }
        cont.finish()
        let heard = Set(answers.map(\.server)).union(failed.keys)
        return ShareCensus(answers: answers.sorted { $0.latency < $1.latency }, failed: failed,
                           unanswered: servers.prefix(asked).filter { !heard.contains($0) }, unasked: Array(servers[asked...]))
    }
}

/// What every server said about a batch of files (`ServerPool.censusBatch`).
public struct BatchCensus: Sendable {
    /// Server → one holding per storage index asked, in order.
    public var answers: [ServerRef: [CensusBatchResponse.Holding]]
    /// Servers that failed or did not answer in time, with why.
    public var failed: [ServerRef: String]
}

extension ServerPool {
    /// Asks every server in `servers` at once about all of `storageIndexes` in one call
    /// each (census_batch); with `leaseSecret`, each server also adds or renews this
    /// client's lease on what it holds. A server that does not answer within `timeout`
    /// is reported as failed.
    public func censusBatch(storageIndexes: [[UInt8]], servers: [ServerRef], leaseSecret: [UInt8]?,
                            timeout: Double) async -> BatchCensus {
        let roots = leaseSecret.map { secret in storageIndexes.map { LeaseSecrets(leaseSecret: secret, storageIndex: $0) } }
        return await withTaskGroup(of: (ServerRef, Result<[CensusBatchResponse.Holding], Error>).self) { group in
            for s in servers {
                group.addTask { [self] in
                    do {
                        let c = try await client(for: s)
                        var entries: [CensusBatchRequest.Entry] = []
                        entries.reserveCapacity(storageIndexes.count)
                        for (i, si) in storageIndexes.enumerated() {
                            if let roots {
                                entries.append(.init(storageIndex: si, renewSecret: roots[i].renew(on: s), cancelSecret: roots[i].cancel(on: s)))
                            } else {
                                entries.append(.init(storageIndex: si))
                            }
                        }
                        return (s, .success(try await c.census(entries, renew: roots != nil, timeout: timeout)))
                    } catch {
                        return (s, .failure(error))
                    }
                }
            }
            var out = BatchCensus(answers: [:], failed: [:])
            for await (s, r) in group {
                switch r {
                case let .success(h): out.answers[s] = h
                case let .failure(e): out.failed[s] = "\(e)"
                }
            }
            return out
        }
    }

    /// Adds (or renews) this client's lease on every share `census` found, on every
    /// server holding one; returns how many shares now carry it.
    func renewLeases(_ si: [UInt8], _ census: ShareCensus, leaseSecret: [UInt8], timeout: Double) async -> Int {
        let secrets = LeaseSecrets(leaseSecret: leaseSecret, storageIndex: si)
        return await withTaskGroup(of: Int.self) { group in
            for a in census.answers where !a.shares.isEmpty {
                group.addTask {
                    let req = AddLeaseRequest(
                        storageIndex: si,
                        renewSecret: secrets.renew(on: a.server), cancelSecret: secrets.cancel(on: a.server))
                    return (try? await a.client.call(req, timeout: timeout)) != nil ? a.shares.count : 0
                }
            }
            var n = 0
            for await c in group { n += c }
            return n
        }
    }
}

/// The lease secrets this client uses for one file on each server (Tahoe's chain: client
/// secret → file secret → per-server bucket secret).
struct LeaseSecrets: Sendable {
    let renewRoot: [UInt8]
    let cancelRoot: [UInt8]

    init(leaseSecret: [UInt8], storageIndex: [UInt8]) {
        renewRoot = TahoeHash.fileRenewalSecret(clientRenewal: TahoeHash.clientRenewalSecret(leaseSecret), storageIndex: storageIndex)
        cancelRoot = TahoeHash.fileCancelSecret(clientCancel: TahoeHash.clientCancelSecret(leaseSecret), storageIndex: storageIndex)
    }

    func renew(on s: ServerRef) -> [UInt8] { TahoeHash.bucketRenewalSecret(fileRenewal: renewRoot, serverID: s.permutationSeed) }
    func cancel(on s: ServerRef) -> [UInt8] { TahoeHash.bucketCancelSecret(fileCancel: cancelRoot, serverID: s.permutationSeed) }
}

extension ShareCensus {
    /// A reader for every share every server answered with, fastest server first.
    /// `stallTimeout` gives each reader's deadline from its server's census latency.
    func readers(storageIndex: [UInt8], stallTimeout: (Double) -> Double) -> [RemoteShareReader] {
        answers.flatMap { a in
            a.shares.sorted { $0.key < $1.key }.map { share in
                let peeked = a.peek.flatMap { p in p.share == share.key ? [(UInt64(0), p.prefix), (p.suffixOffset, p.suffix)] : nil }
                return RemoteShareReader(server: a.server, client: a.client, storageIndex: storageIndex, shareNumber: share.key,
                                         size: share.value, stallTimeout: stallTimeout(a.latency), latency: a.latency,
                                         preloaded: (peeked ?? []).filter { !$0.1.isEmpty })
            }
        }
    }
}

/// One open bucket writer on one server.
struct BucketHandle: Sendable {
    let server: ServerRef
    let client: StorageClient
    let bucket: UInt64
    let share: Int
}

/// Places share numbers on servers for one storage index: plans by servers-of-happiness
/// over the permuted list (existing holdings first), asks the servers to allocate, and
/// re-plans around servers that refuse or fail. Holds the lease secrets for the file.
struct BucketAllocator {
    let storageIndex: [UInt8]
    let shareSize: UInt64
    let secrets: LeaseSecrets
    /// Reachable servers, in permuted order.
    let reachable: [ServerRef]
    let clients: [ServerRef: StorageClient]
    /// Server → shares it holds or has accepted.
    private(set) var holdings: [ServerRef: Set<Int>]
    /// Servers that may still be asked to take shares.
    private(set) var writable: Set<ServerRef>
    /// Buckets opened by the last `place` or `placeAgain`.
    private(set) var handles: [BucketHandle] = []
    /// Why servers took fewer shares than asked.
    private(set) var refused: [String] = []
    /// Shares another upload of the same file is writing on each server: counted in
    /// `holdings` until `awaitOthers` sees them finished, or takes them back.
    private(set) var inProgress: [ServerRef: Set<Int>] = [:]
    /// Every (server, share) found being written by another upload.
    private(set) var writtenByOthers: Set<String> = []

    /// Seconds an allocation may take before its server counts as refusing.
    let callTimeout: Double

    init(storageIndex: [UInt8], shareSize: UInt64, leaseSecret: [UInt8], census: ShareCensus, servers: [ServerRef],
         callTimeout: Double = 8) {
        self.callTimeout = callTimeout
        self.storageIndex = storageIndex
        self.shareSize = shareSize
        secrets = LeaseSecrets(leaseSecret: leaseSecret, storageIndex: storageIndex)
        clients = census.clients
        reachable = servers.filter { census.clients[$0] != nil }
        holdings = census.holdings
        writable = Set(reachable.filter { $0.announcement.availableSpace >= shareSize })
    }

    var happiness: Int { Placement.happiness(holdings) }
    var storedShares: Set<Int> { Set(holdings.values.flatMap { $0 }) }

    /// Plans and allocates shares 0..<total until nothing more can be placed.
    mutating func place(total: Int) async {
        for _ in 0..<(2 * total + 2) {
            let plan = Placement.plan(servers: reachable, existing: holdings, writable: writable, total: total)
            if plan.isEmpty { break }
            await allocate(plan)
        }
    }

    /// After servers failed (`drop`), places the shares no surviving server holds; returns
    /// the buckets opened for them.
    mutating func placeAgain(total: Int) async -> [BucketHandle] {
        handles = []
        let plan = Placement.plan(servers: reachable.filter { writable.contains($0) || holdings[$0] != nil },
                                  existing: holdings, writable: writable, total: total)
        if !plan.isEmpty { await allocate(plan) }
        return handles
    }

    /// When shares are clumped on too few servers: asks writable servers that hold no
    /// share (in permuted order) to take one share each that no other server is credited
    /// with in a maximum matching, until happiness reaches `happy`. Returns the new buckets.
    mutating func spread(happy: Int) async -> [BucketHandle] {
        handles = []
        var spare = Set(holdings.values.flatMap { $0 }).subtracting(Placement.matching(holdings).keys).sorted()
        let need = happy - happiness
        guard need > 0, !spare.isEmpty else { return [] }
        var plan: [ServerRef: [Int]] = [:]
        for s in reachable where writable.contains(s) && (holdings[s] ?? []).isEmpty && plan.count < need && !spare.isEmpty {
            plan[s] = [spare.removeFirst()]
        }
        if !plan.isEmpty { await allocate(plan) }
        return handles
    }

    /// Treats these copies as not there (they failed verification), and never asks their
    /// servers for new shares (each still holds its bad copy, which would answer for it).
    mutating func setAside(_ copies: [(share: Int, server: String)]) {
        for c in copies {
            guard let s = holdings.keys.first(where: { $0.nodeID == c.server }) else { continue }
            holdings[s]?.remove(c.share)
            writable.remove(s)
        }
    }

    /// Forgets servers that failed: what they held no longer counts, and they are not asked again.
    mutating func drop(_ failed: Set<ServerRef>) {
        holdings = holdings.filter { !failed.contains($0.key) }
        inProgress = inProgress.filter { !failed.contains($0.key) }
        writable.subtract(failed)
    }

    /// Waits (asking again every `poll` seconds, at most `timeout`) for the shares other
    /// uploads were writing: each ends held (fine), offered to us (the other upload gave
    /// up: returned, to be pushed), or, at the deadline, no longer counted.
    mutating func awaitOthers(timeout: Double, poll: Double = 0.2) async -> [BucketHandle] {
        handles = []
        let deadline = monotonicNow() + timeout
        while !inProgress.isEmpty && monotonicNow() < deadline {
            try? await Task.sleep(nanoseconds: UInt64(poll * 1e9))
            let plan = inProgress.mapValues { $0.sorted() }
            inProgress = [:]
            await allocate(plan)
        }
        for (s, shares) in inProgress { holdings[s]?.subtract(shares) }
        inProgress = [:]
        return handles
    }

    typealias Answers = [(ServerRef, Result<AllocateResponse, Error>)]

    /// Asks each server in `plan` to allocate its shares, all at once; `client` gives each
    /// server's connection (opening it if need be).
    static func ask(_ plan: [ServerRef: [Int]], storageIndex si: [UInt8], shareSize size: UInt64, secrets: LeaseSecrets,
                    timeout: Double, client: @escaping @Sendable (ServerRef) async throws -> StorageClient) async -> Answers {
        await withTaskGroup(of: (ServerRef, Result<AllocateResponse, Error>).self) { group in
            for (s, shares) in plan {
                group.addTask {
                    let req = AllocateRequest(
                        storageIndex: si,
                        renewSecret: secrets.renew(on: s), cancelSecret: secrets.cancel(on: s),
                        shareNumbers: shares, allocatedSize: size)
                    do { return (s, .success(try await client(s).call(req, timeout: timeout))) } catch { return (s, .failure(error)) }
                }
            }
            var out: Answers = []
            for await a in group { out.append(a) }
            return out
        }
    }

    /// Asks each server in `plan` to allocate its shares, all at once.
    mutating func allocate(_ plan: [ServerRef: [Int]]) async {
        let clients = clients
        let answers = await Self.ask(plan, storageIndex: storageIndex, shareSize: shareSize, secrets: secrets,
                                     timeout: callTimeout) { clients[$0]! }
        absorb(plan, answers)
    }

    /// Takes in the servers' answers to `plan` (from `allocate`, or asked before the census
    /// under `Uploader.store`'s speculation).
    mutating func absorb(_ plan: [ServerRef: [Int]], _ answers: Answers) {
        for (s, r) in answers {
            switch r {
            case let .success(resp):
                holdings[s, default: []].formUnion(resp.alreadyHave)
                // Another upload of this file is writing these: placed, if it finishes.
                holdings[s, default: []].formUnion(resp.inProgress)
                if !resp.inProgress.isEmpty { inProgress[s, default: []].formUnion(resp.inProgress) }
                for sh in resp.inProgress { writtenByOthers.insert("\(s.nodeID)/\(sh)") }
                for (share, bucket) in resp.writers {
                    holdings[s, default: []].insert(share)
                    handles.append(BucketHandle(server: s, client: clients[s]!, bucket: bucket, share: share))
                }
                let got = Set(resp.alreadyHave).union(resp.writers.keys).union(resp.inProgress)
                if !Set(plan[s]!).isSubset(of: got) {
                    writable.remove(s)
                    refused.append("\(s.nickname) accepted only \(got.count) of \(plan[s]!.count) shares")
                }
            case let .failure(e):
                writable.remove(s)
                refused.append("\(s.nickname): \(e)")
            }
        }
    }
}
