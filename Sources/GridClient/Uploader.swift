import Foundation
import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridProtocol
import GridSystem
import GridWire
import Synchronization

/// Uploads immutable files: convergent key, server selection by servers-of-happiness over
/// Tahoe's permuted list, then one streaming pass that encodes segment i+1 while the
/// blocks of segment i are still on the wire.
public final class Uploader: Sendable {
    let pool: ServerPool
    let settings: ClientSettings
    /// Share bytes allowed in flight across all servers; bounds memory with the segment buffers.
    let window: Int
    let coding: CodingOptions
    /// How long to wait for shares another upload of the same file is writing.
    let othersTimeout = 120.0

    /// Whether uploads go through `settings.helper` when one is set (a repair never does:
    /// it re-creates chosen shares, not a whole file).
    let useHelper: Bool

    /// Whether this client stored a file under a convergent key before (its catalog): such
    /// a file is likely there still, so its shares do not go in one flight with the census.
    let storedBefore: (@Sendable ([UInt8]) -> Bool)?

    public init(pool: ServerPool, settings: ClientSettings, window: Int = 8 << 20, coding: CodingOptions = CodingOptions(),
                useHelper: Bool = true, storedBefore: (@Sendable ([UInt8]) -> Bool)? = nil) {
        (self.pool, self.settings, self.window, self.coding, self.useHelper) = (pool, settings, window, coding, useHelper)
        self.storedBefore = storedBefore
    }

    var parameters: EncodingParameters { settings.encoding.parameters }

    /// The hasher of the convergent key for a file of `size` bytes (update it with every
    /// byte, in order; `finalize()` is the key `upload(source:convergenceKey:)` takes).
    public func convergenceHasher(forSize size: UInt64) throws -> TaggedHasher {
        let encoder = try CHKEncoder(parameters: parameters, threads: 1, simdPath: coding.simdPath)
        return TahoeHash.convergenceHasher(secret: settings.convergenceSecret, k: parameters.needed, n: parameters.total,
                                           segmentSize: encoder.segmentSize(forSize: size))
    }

    /// `convergenceKey`: the key when the caller already computed it (`convergenceHasher`
    /// over the same bytes, e.g. while they arrived), which saves the first pass.
    public func upload(source: RandomAccessSource & Sendable, convergenceKey known: [UInt8]? = nil,
                       progress: (@Sendable (TransferProgress) -> Void)? = nil) async throws -> UploadResult {
        let start = monotonicNow()
        let encoder = try CHKEncoder(parameters: parameters, threads: coding.threads, simdPath: coding.simdPath)
        let size = source.size
        if size <= UInt64(Capability.literalThreshold) {
            let r = try encoder.encode(source: source, convergenceSecret: settings.convergenceSecret, sink: DiscardShareSink())
            return UploadResult(capability: r.capability, size: size, placement: [:], nicknames: [:], happiness: 0,
                                sharesAlreadyPresent: 0, bytesSent: 0, hashSeconds: 0, pushSeconds: 0,
                                totalSeconds: monotonicNow() - start)
        }
        let secret = settings.convergenceSecret
        let box = UncheckedBox(encoder)
        let key: [UInt8]
        if let known {
            key = known
        } else {
            key = try await onThread("grid-hash") { try box.value.convergenceKey(source: source, secret: secret) }
        }
        progress?(TransferProgress(phase: .hashing, done: size, total: size))
        let hashSeconds = monotonicNow() - start
        var helperProblem: String?
        if useHelper, let helper = settings.helper {
            do {
                let o = try await HelperUpload(helper: helper, pool: pool, parameters: parameters)
                    .upload(source: source, key: key, progress: progress)
                var placement: [Int: [String]] = [:]
                for p in o.response?.placement ?? [] { placement[p.share, default: []].append(p.server) }
                for sh in placement.keys { placement[sh]!.sort() }
                let end = monotonicNow()
                return UploadResult(capability: .chk(o.capability), size: size, placement: placement, nicknames: [:],
                                    happiness: o.response?.happiness ?? 0,
                                    sharesAlreadyPresent: o.alreadyStored ? parameters.total : (o.response?.sharesAlreadyPresent ?? 0),
                                    bytesSent: o.bytesSent, hashSeconds: hashSeconds, pushSeconds: end - start - hashSeconds,
                                    totalSeconds: end - start, helper: "\(helper.host):\(helper.port)", resumedFrom: o.resumedFrom)
            } catch let e as GridError where e.errorClass == .corrupt {
                throw e  // the helper misreported the file: not something to paper over
            } catch where error is WireError || error is GridError {
                // The helper's failures (not the source's): upload directly.
                helperProblem = "the upload helper at \(helper.host):\(helper.port) failed (\(error)); uploaded directly instead"
            }
        }
        let si = TahoeHash.storageIndex(forKey: key)
        let stored = try await store(source: source, storageIndex: si, input: .plaintext(key: key),
                                     oneFlight: !(storedBefore?(key) ?? false), progress: progress)
        let cap = CHKCapability(key: key, uebHash: stored.uriExtension.hash, needed: parameters.needed,
                                total: parameters.total, size: size)
        let end = monotonicNow()
        return UploadResult(capability: .chk(cap), size: size, placement: stored.placement, nicknames: stored.nicknames,
                            happiness: stored.happiness, sharesAlreadyPresent: stored.sharesAlreadyPresent,
                            sharesWrittenByOthers: stored.sharesWrittenByOthers, bytesSent: stored.bytesSent,
                            hashSeconds: hashSeconds, pushSeconds: stored.pushSeconds, totalSeconds: end - start,
                            helperProblem: helperProblem, oneFlight: stored.oneFlight)
    }

    /// What the encoder reads: plaintext with its key, or ciphertext (an upload helper's
    /// input; the shares are the same bytes).
    public enum Input: Sendable {
        case plaintext(key: [UInt8])
        case ciphertext
    }

    /// Where one file's shares ended up.
    public struct StoredShares: Sendable {
        public var uriExtension: URIExtension
        /// Share number → node ids of the servers holding it.
        public var placement: [Int: [String]]
        public var nicknames: [String: String]
        public var happiness: Int
        public var sharesAlreadyPresent: Int
        public var sharesWrittenByOthers: Int
        public var bytesSent: UInt64
        public var pushSeconds: Double
        /// The shares were allocated, written and closed in the census's flight.
        public var oneFlight: Bool = false
    }

    /// Places the shares of a file that is already ciphertext under `storageIndex` (which
    /// only the key holder can compute): what an upload helper does with what a client sent.
    public func storeCiphertext(source: RandomAccessSource & Sendable, storageIndex: [UInt8],
                                progress: (@Sendable (TransferProgress) -> Void)? = nil) async throws -> StoredShares {
        guard source.size > UInt64(Capability.literalThreshold) else {
            throw GridError(.usage, "a file of \(source.size) bytes is a literal capability; it has no shares to store")
        }
        return try await store(source: source, storageIndex: storageIndex, input: .ciphertext, progress: progress)
    }

    /// The URI extension block of a file of `size` bytes stored whole already (every
    /// share number, on servers reaching happiness), nil otherwise. The block is read from
    /// a share and kept only if k shares of distinct numbers, on the servers, check against
    /// it (header, share hash chain, block hash tree): a corrupt or lying server cannot
    /// pass off a block that the stored shares do not match. The uploader's leases on the
    /// shares are renewed. An upload helper asks this before taking any ciphertext.
    public func storedURIExtension(storageIndex si: [UInt8], size: UInt64) async -> [UInt8]? {
        let k = parameters.needed, n = parameters.total
        let known = await pool.waitForServers(enough: n, minimum: parameters.happy)
        guard known.count >= parameters.happy else { return nil }
        let census = await pool.census(storageIndex: si, servers: permutedServers(known, storageIndex: si),
                                       deadline: max(3, 2 * coding.stallTimeout))
        let holdings = census.holdings
        guard Set(holdings.values.flatMap { $0 }).count >= n, Placement.happiness(holdings) >= parameters.happy else { return nil }
        let stall = coding.stallTimeout
        let readers = census.readers(storageIndex: si, stallTimeout: { _ in stall })
        let box = UncheckedBox(readers)
        let checked = try? await onThread("grid-ueb") { () -> [UInt8]? in
            for candidate in box.value.prefix(3) {
                guard let ueb = try? CHKShareValidator.readHeader(candidate).1 else { continue }
                let verifier = CHKVerifierCapability(storageIndex: si, uebHash: TahoeHash.uriExtensionHash(ueb),
                                                     needed: k, total: n, size: size)
                let validator = CHKShareValidator(verifier)
                guard let shape = try? validator.fileShape(from: candidate) else { continue }
                var good: Set<Int> = []
                for r in box.value where !good.contains(r.shareNumber) && good.count < k {
                    if (try? validator.validate(r, shape: shape)) != nil { good.insert(r.shareNumber) }
                }
                if good.count >= k { return ueb }
            }
            return nil
        }
        guard let ueb = checked ?? nil else { return nil }
        _ = await pool.renewLeases(si, census, leaseSecret: settings.leaseSecret, timeout: 4 * coding.stallTimeout)
        return ueb
    }

    /// Census, placement by servers-of-happiness, the encode-and-push pass (and up to two
    /// more for shares lost on the way), lease renewal of shares already there.
    func store(source: RandomAccessSource & Sendable, storageIndex si: [UInt8], input: Input, oneFlight: Bool = true,
               progress: (@Sendable (TransferProgress) -> Void)?) async throws -> StoredShares {
        let n = parameters.total, happy = parameters.happy
        let size = source.size
        let encoder = try CHKEncoder(parameters: parameters, threads: coding.threads, simdPath: coding.simdPath)
        let shareSize = try encoder.shareSize(forSize: size)

        // Servers, in this file's permuted order; ask each what it already holds.
        let known = await pool.waitForServers(enough: n, minimum: happy)
        if known.isEmpty { throw pool.noServersError() }
        if known.count < happy {
            throw GridError(.unavailable,
                "Only \(known.count) storage server\(known.count == 1 ? " is" : "s are") known to the introducer, "
                    + "but this upload needs \(happy) (happy = \(happy)). Start more servers, or lower 'happy' in the client's grid.conf.")
        }
        let permuted = permutedServers(known, storageIndex: si)
        // Most uploads are of new files, whose census finds nothing: the plan made without
        // it is then the plan made with it. Ask for those buckets while the census runs (one
        // round trip fewer); anything found, or any server silent, and they are aborted
        // and the upload plans from the census as usual.
        let guess = Placement.plan(servers: permuted, existing: [:],
                                   writable: Set(permuted.filter { $0.announcement.availableSpace >= shareSize }), total: n)
        let pool = pool
        let secrets = LeaseSecrets(leaseSecret: settings.leaseSecret, storageIndex: si)
        let census: ShareCensus
        var allocator: BucketAllocator
        // A small file to servers that take named buckets goes whole in the census's
        // flight: allocation, writes and closes (one round trip fewer again).
        var eager: (pushed: PushResult?, answers: BucketAllocator.Answers, handles: [BucketHandle], wire: UInt64)?
        let speculation: BucketAllocator.Answers
        if oneFlight, shareSize * UInt64(n) <= settings.oneFlightMaxBytes, Placement.happiness(guess.mapValues { Set($0) }) >= happy,
           guess.keys.allSatisfy({ $0.announcement.protocolVersion >= Hello.namedBucketsVersion }) {
            async let asked = pool.census(storageIndex: si, servers: permuted, deadline: max(3, 2 * coding.stallTimeout))
            eager = await pushEagerly(guess, encoder: encoder, source: source, input: input, storageIndex: si, shareSize: shareSize,
                                      secrets: secrets, happy: happy) { done in progress?(TransferProgress(phase: .uploading, done: done, total: size)) }
            census = await asked
            speculation = eager?.answers ?? []
        } else {
            async let guessed = BucketAllocator.ask(guess, storageIndex: si, shareSize: shareSize, secrets: secrets,
                                                    timeout: 4 * coding.stallTimeout) { try await pool.client(for: $0) }
            // A server that does not answer soon is left out (a stopped server must not hold everyone up).
            census = await pool.census(storageIndex: si, servers: permuted, deadline: max(3, 2 * coding.stallTimeout))
            speculation = await guessed
        }
        // The census's median answer time: the round trip (it errs long: it may include connecting).
        let latencies = census.answers.map(\.latency).sorted()
        let roundTrip = latencies.isEmpty ? 0 : latencies[latencies.count / 2]

        // Allocate, re-planning around servers that refuse, until nothing more can be placed.
        allocator = BucketAllocator(storageIndex: si, shareSize: shareSize, leaseSecret: settings.leaseSecret,
                                    census: census, servers: permuted, callTimeout: 4 * coding.stallTimeout)
        let clients = census.clients
        // The eager push's own shares may already show in the census: only they may.
        let foreign = census.holdings.filter { s, held in eager == nil || !held.isSubset(of: Set(guess[s] ?? [])) }
        let clean = foreign.isEmpty && census.failed.isEmpty && census.unanswered.isEmpty
            && speculation.allSatisfy { s, r in
                guard clients[s] != nil, case let .success(resp) = r else { return false }
                return resp.alreadyHave.isEmpty && resp.inProgress.isEmpty && Set(resp.writers.keys) == Set(guess[s] ?? [])
            }
            && (eager.map { $0.pushed?.failedServers.isEmpty ?? false } ?? true)
        let present = clean ? 0 : census.holdings.values.reduce(0) { $0 + $1.count }
        var earlySent: UInt64 = 0
        if clean {
            allocator.absorb(guess, speculation)
        } else {
            var opened: [BucketHandle] = eager?.handles ?? []
            for (s, r) in speculation where eager == nil {
                guard case let .success(resp) = r, let c = try? await pool.client(for: s) else { continue }
                for (share, bucket) in resp.writers { opened.append(BucketHandle(server: s, client: c, bucket: bucket, share: share)) }
            }
            // (A bucket the eager push closed is a share now: aborting it does nothing, and
            // the allocations below find it as already there.)
            await abortAll(opened)
            earlySent = eager?.wire ?? 0  // refused or not, they were sent
            eager = nil
        }
        await allocator.place(total: n)
        if allocator.happiness < happy {
            await abortAll(allocator.handles)
            throw happinessError(found: known.count, reachable: allocator.reachable.count, happiness: allocator.happiness,
                                 happy: happy, refused: allocator.refused)
        }

        // Encode and push. A server that fails is dropped; the upload goes on while
        // happiness holds, and its shares are placed again afterwards (encoding just those).
        let pushStart = monotonicNow()
        var sent: UInt64 = earlySent
        var failed: [ServerRef: String] = [:]
        var ueb: URIExtension?
        var handles = allocator.handles
        for round in 0..<3 {
            let phase: TransferProgress.Phase = round == 0 ? .uploading : .repairing
            let pushed: PushResult
            if round == 0, let early = eager?.pushed {
                pushed = early  // done already, in the census's flight
            } else {
                pushed = try await pushShares(encoder: encoder, source: source, input: input, handles: handles,
                                              holdings: allocator.holdings, happy: happy, roundTrip: roundTrip) { done in
                    progress?(TransferProgress(phase: phase, done: done, total: size))
                }
            }
            if ueb == nil { ueb = pushed.uriExtension }
            sent += pushed.bytesSent
            for (s, why) in pushed.failedServers { failed[s] = why }
            allocator.drop(Set(failed.keys))
            // Shares another upload of this same file was writing: wait for them to be held.
            handles = await allocator.awaitOthers(timeout: othersTimeout)
            if (allocator.storedShares.count == n && handles.isEmpty) || round == 2 {
                await abortAll(handles)
                break
            }
            // Place the lost shares on other servers and push just those.
            handles += await allocator.placeAgain(total: n)
            if handles.isEmpty { break }
        }
        let finalHappiness = allocator.happiness
        if finalHappiness < happy {
            throw GridError(.unavailable,
                "The upload lost servers on the way (\(failed.keys.map(\.nickname).sorted().joined(separator: ", "))) "
                    + "and its shares now sit on only \(finalHappiness) distinct servers, fewer than happy = \(happy). "
                    + "Start more servers and upload again.")
        }
        guard let ueb else { throw GridError(.internal, "no URI extension block after encoding") }
        var placement: [Int: [String]] = [:]
        var nicknames: [String: String] = [:]
        for (s, shares) in allocator.holdings {
            nicknames[s.nodeID] = s.nickname
            for sh in shares { placement[sh, default: []].append(s.nodeID) }
        }
        for sh in placement.keys { placement[sh]!.sort() }
        // Uploading a file that is already stored renews this client's lease on the
        // shares that were there (as Tahoe does), whether or not the plan touched them.
        if present > 0 {
            _ = await pool.renewLeases(si, census, leaseSecret: settings.leaseSecret, timeout: 4 * coding.stallTimeout)
        }
        return StoredShares(uriExtension: ueb, placement: placement, nicknames: nicknames, happiness: finalHappiness,
                            sharesAlreadyPresent: present, sharesWrittenByOthers: allocator.writtenByOthers.count,
                            bytesSent: sent, pushSeconds: monotonicNow() - pushStart,
                            oneFlight: eager != nil)
    }

    /// Group numbers for named buckets: unique per connection, so per process.
    static let groups = Atomic<UInt32>(UInt32.random(in: 0...UInt32.max))

    /// Allocates `plan`'s buckets under names and pushes the whole file to them without
    /// waiting for the allocations' answers; each server runs the allocation, the writes
    /// and the close in the order sent. Returns the push (nil when it failed) and the
    /// allocations' answers; nil when a planned server could not be reached (nothing was
    /// sent then).
    func pushEagerly(_ plan: [ServerRef: [Int]], encoder: CHKEncoder, source: RandomAccessSource & Sendable, input: Input,
                     storageIndex si: [UInt8], shareSize: UInt64, secrets: LeaseSecrets, happy: Int,
                     progress: @escaping @Sendable (UInt64) -> Void) async
        -> (pushed: PushResult?, answers: BucketAllocator.Answers, handles: [BucketHandle], wire: UInt64)? {
        let pool = pool
        let clients = await withTaskGroup(of: (ServerRef, StorageClient?).self) { group in
            for s in plan.keys { group.addTask { (s, try? await pool.client(for: s)) } }
            var out: [ServerRef: StorageClient] = [:]
            for await (s, c) in group { if let c { out[s] = c } }
            return out
        }
        guard clients.count == plan.count else { return nil }
        let group = Self.groups.add(1, ordering: .relaxed).oldValue
        let (stream, answered) = AsyncStream.makeStream(of: (ServerRef, Result<AllocateResponse, Error>).self)
        var handles: [BucketHandle] = []
        for (s, shares) in plan {
            let req = AllocateNamedRequest(group: group, allocation: AllocateRequest(
                storageIndex: si, renewSecret: secrets.renew(on: s), cancelSecret: secrets.cancel(on: s),
                shareNumbers: shares, allocatedSize: shareSize))
            clients[s]!.allocate(req, timeout: 4 * coding.stallTimeout) { answered.yield((s, $0)) }
            for (share, bucket) in req.handles { handles.append(BucketHandle(server: s, client: clients[s]!, bucket: bucket, share: share)) }
        }
        let sink = NetworkShareSink(handles: handles, window: window, holdings: plan.mapValues { Set($0) }, happy: happy,
                                    stallTimeout: coding.stallTimeout, orderedCloses: true)
        let pushed = try? await pushShares(encoder: encoder, source: source, input: input, progress: progress, sink: sink)
        var answers: BucketAllocator.Answers = []
        for await a in stream {
            answers.append(a)
            if answers.count == plan.count { break }
        }
        return (pushed, answers, handles, sink.withLock { $0.bytesOnWire })
    }

    /// What one push of shares did.
    struct PushResult {
        var uriExtension: URIExtension
        var bytesSent: UInt64
        /// Servers that failed during the push or at close, with why.
        var failedServers: [ServerRef: String]
    }

    /// Encodes the file and pushes the blocks of the shares `handles` cover (only those:
    /// the others are computed and dropped, identical bytes by construction), then closes
    /// every bucket that survived. Throws, after aborting every bucket, when the servers
    /// that fail leave fewer than `happy` distinct servers.
    func pushShares(encoder: CHKEncoder, source: RandomAccessSource & Sendable, input: Input, handles: [BucketHandle],
                    holdings: [ServerRef: Set<Int>], happy: Int, roundTrip: Double = 0,
                    progress: @escaping @Sendable (UInt64) -> Void) async throws -> PushResult {
        try await pushShares(encoder: encoder, source: source, input: input, progress: progress,
                             sink: NetworkShareSink(handles: handles, window: window, holdings: holdings, happy: happy,
                                                    stallTimeout: coding.stallTimeout, roundTrip: roundTrip))
    }

    func pushShares(encoder: CHKEncoder, source: RandomAccessSource & Sendable, input: Input,
                    progress: @escaping @Sendable (UInt64) -> Void, sink: NetworkShareSink) async throws -> PushResult {
        let r: URIExtension
        do {
            r = try await encodeAndPush(encoder: encoder, source: source, input: input, sink: sink, progress: progress)
        } catch {
            // Nothing half-written stays behind: abort every bucket this push opened.
            await abortAll(sink.liveHandles)
            throw error
        }
        var failed = sink.failedServers
        // Close every bucket that survived and was not closed behind its writes already;
        // a close that fails is a failed server too.
        let (closeFailures, unclosed) = sink.closeOutcome()
        for (s, why) in closeFailures { failed[s] = why }
        for (s, why) in await closeAll(unclosed) { failed[s] = why }
        if let e = sink.fatal {
            await abortAll(sink.liveHandles)
            throw e
        }
        return PushResult(uriExtension: r, bytesSent: sink.bytesSent, failedServers: failed)
    }

    func encodeAndPush(encoder: CHKEncoder, source: RandomAccessSource & Sendable, input: Input, sink: NetworkShareSink,
                       progress: @escaping @Sendable (UInt64) -> Void) async throws -> URIExtension {
        let box = UncheckedBox((encoder, sink))
        return try await onThread("grid-upload") {
            switch input {
            case let .plaintext(key):
                guard case let .chk(_, ueb) = try box.value.0.encode(source: source, key: key, sink: box.value.1, progress: progress) else {
                    throw GridError(.internal, "a CHK upload encoded as a literal")
                }
                return ueb
            case .ciphertext:
                return try box.value.0.encodeCiphertext(source: source, sink: box.value.1, progress: progress)
            }
        }
    }

    func closeAll(_ handles: [BucketHandle]) async -> [(ServerRef, String)] {
        let timeout = 4 * coding.stallTimeout
        return await withTaskGroup(of: (ServerRef, String)?.self) { group in
            for h in handles {
                group.addTask {
                    do {
                        try await h.client.close(bucket: h.bucket, timeout: timeout)
                        return nil
                    } catch { return (h.server, "closing share \(h.share): \(error)") }
                }
            }
            var out: [(ServerRef, String)] = []
            for await f in group { if let f { out.append(f) } }
            return out
        }
    }

    func abortAll(_ handles: [BucketHandle]) async {
        let timeout = 4 * coding.stallTimeout
        await withTaskGroup(of: Void.self) { group in
            for h in handles { group.addTask { _ = try? await h.client.call(BucketAbortRequest(bucket: h.bucket), timeout: timeout) } }
        }
    }

    func happinessError(found: Int, reachable: Int, happiness: Int, happy: Int, refused: [String]) -> GridError {
        var m = "Found \(found) storage server\(found == 1 ? "" : "s") (\(reachable) reachable), but shares could be placed "
            + "on only \(happiness) distinct server\(happiness == 1 ? "" : "s"); this upload needs \(happy) (happy = \(happy), k = \(parameters.needed))."
        if !refused.isEmpty { m += " Refused: " + refused.prefix(3).joined(separator: "; ") + (refused.count > 3 ? "; ..." : "") + "." }
        m += " Start more servers, free space on them, or lower 'happy' in the client's grid.conf."
        return GridError(.unavailable, m)
    }
}

/// The encoder's sink for an upload: each write becomes an RPC to the servers holding
/// that share's bucket, sent at once (the encoder goes on with the next segment) while
/// at most `window` bytes are in flight. A failed server is dropped with its shares; when
/// what remains can no longer reach happiness, the next write throws and the encoder stops.
final class NetworkShareSink: ShareSink, @unchecked Sendable {
    let cond = NSCondition()
    var byShare: [Int: [BucketHandle]] = [:]
    var handles: [BucketHandle]
    /// Bytes in flight to each server, and when each of its outstanding writes was sent
    /// (oldest first: a server answers its writes in order).
    var inFlight: [ServerRef: Int] = [:]
    var sentAt: [ServerRef: [(at: Double, ahead: Int, answeredBefore: UInt64)]] = [:]
    /// A write unanswered this long drops its server however slow the link is.
    var hardStallTimeout: Double { max(60, 15 * stallTimeout) }
    /// Each server's own budget of bytes in flight: a stuck server holds only its own.
    let perServer: Int
    var holdings: [ServerRef: Set<Int>]
    let happy: Int
    /// A server whose oldest write has been unanswered this long is dropped (its shares are
    /// placed elsewhere afterwards, while happiness holds).
    let stallTimeout: Double
    var failedServers: [ServerRef: String] = [:]
    var fatal: GridError?
    var bytesSent: UInt64 = 0
    /// Bytes handed to the connections, answered or not.
    var bytesOnWire: UInt64 = 0
    /// Buckets closed right behind their writes (`finish`): nil while the close is
    /// unanswered, then "" when it succeeded or why it failed.
    var earlyCloses: [BucketKey: String?] = [:]
    struct BucketKey: Hashable {
        let server: ServerRef
        let bucket: UInt64
    }
    let closeTimeout: Double
    /// Close every bucket right behind its writes, whatever version the server has said
    /// so far (named buckets: only a server that orders them has them).
    let orderedCloses: Bool

    /// `roundTrip`: a long one raises each server's budget to about RTT × 64 MB/s (at most
    /// 8 MiB), so a distant server is written at its link's speed, not a budget per round trip.
    init(handles: [BucketHandle], window: Int, holdings: [ServerRef: Set<Int>], happy: Int, stallTimeout: Double,
         roundTrip: Double = 0, orderedCloses: Bool = false) {
        self.handles = handles
        self.orderedCloses = orderedCloses
        self.holdings = holdings
        self.happy = happy
        self.stallTimeout = stallTimeout
        closeTimeout = 4 * stallTimeout
        let servers = Set(handles.map(\.server)).count
        perServer = max(1 << 20, window / max(1, servers) * 2, min(8 << 20, Int(roundTrip * 64e6)))
        for h in handles { byShare[h.share, default: []].append(h) }
    }

    func withLock<T>(_ body: (NetworkShareSink) -> T) -> T {
        cond.lock()
        defer { cond.unlock() }
        return body(self)
    }

    var liveHandles: [BucketHandle] {
        cond.lock()
        defer { cond.unlock() }
        return handles.filter { failedServers[$0.server] == nil }
    }

    /// Drops servers that fell behind: the oldest write unanswered for `stallTimeout`
    /// while the servers together have since answered 1.5 times the bytes that were in
    /// flight when it was sent (`ahead`, itself included): the queue it waited behind has
    /// drained and it has not. (A frozen server lets the others answer about 1.8 times:
    /// their share of the queue, then the writes sent until its own budget fills.) Over a
    /// slow uplink every server's writes wait their turn in the client's own queue; that
    /// is not a stall (a bare "oldest write older than 2 s" dropped healthy servers until
    /// the upload failed, 10 Mbit/s to 10 servers). When nothing is answered at all,
    /// `hardStallTimeout`. Under the lock.
    func dropStalled() {
        let now = monotonicNow()
        for (s, writes) in sentAt where failedServers[s] == nil {
            guard let oldest = writes.first, now - oldest.at > stallTimeout else { continue }
            let drainedSince = bytesSent &- oldest.answeredBefore
            if drainedSince >= 3 * UInt64(oldest.ahead) / 2 || now - oldest.at > hardStallTimeout {
                serverFailed(s, "no answer for \(String(format: "%.1f", now - oldest.at)) s")
            }
        }
    }

    func write(share: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) throws {
        cond.lock()
        defer { cond.unlock() }
        while true {
            if let fatal { throw fatal }
            let targets = (byShare[share] ?? []).filter { failedServers[$0.server] == nil }
            if targets.isEmpty { return }
            // Wait only while a live target is over its own budget; check for stalls meanwhile.
            let full = targets.contains { (inFlight[$0.server] ?? 0) > 0 && (inFlight[$0.server] ?? 0) + bytes.count > perServer }
            if !full {
                send(bytes, share: share, offset: offset, to: targets)
                return
            }
            _ = cond.wait(until: Date(timeIntervalSinceNow: 0.1))
            dropStalled()
        }
    }

    /// Under the lock: one bucket_write per target, accounted per server.
    func send(_ bytes: UnsafeRawBufferPointer, share: Int, offset: UInt64, to targets: [BucketHandle]) {
        let now = monotonicNow(), count = bytes.count
        for h in targets {
            bytesOnWire += UInt64(count)
            inFlight[h.server, default: 0] += count
            let ahead = inFlight.filter { failedServers[$0.key] == nil }.reduce(0) { $0 + $1.value }
            sentAt[h.server, default: []].append((at: now, ahead: ahead, answeredBefore: bytesSent))
            h.client.write(bucket: h.bucket, offset: offset, data: bytes) { [self] error in
                cond.lock()
                inFlight[h.server, default: 0] -= count
                if !(sentAt[h.server]?.isEmpty ?? true) { sentAt[h.server]!.removeFirst() }
                if let error { serverFailed(h.server, "\(error)") } else { bytesSent += UInt64(count) }
                cond.broadcast()
                cond.unlock()
            }
        }
    }

    /// Under the lock.
    func serverFailed(_ s: ServerRef, _ why: String) {
        guard failedServers[s] == nil else { return }
        failedServers[s] = why
        holdings[s] = nil
        let h = Placement.happiness(holdings)
        if h < happy {
            fatal = GridError(.unavailable,
                "Storage server \(s.nickname) failed during the upload (\(why)); the shares left reach only "
                    + "\(h) distinct servers, fewer than happy = \(happy), so the upload was stopped and its buckets aborted.")
        }
    }

    /// Closes the buckets of servers that run a bucket's requests in order (protocol 2)
    /// right behind their writes, without waiting for the writes' replies (one round trip
    /// fewer; a server refuses to close a bucket one of whose writes it refused); then
    /// waits for every live server's writes and those closes to be answered (dropping
    /// servers whose writes stall). The other buckets are closed afterwards (`closeAll`).
    func finish() throws {
        cond.lock()
        defer { cond.unlock() }
        for h in handles where failedServers[h.server] == nil
            && (orderedCloses || h.client.rpc.protocolVersion >= Hello.orderedBucketsVersion) {
            let key = BucketKey(server: h.server, bucket: h.bucket)
            guard earlyCloses[key] == nil else { continue }
            earlyCloses[key] = .some(nil)
            h.client.close(bucket: h.bucket, timeout: closeTimeout) { [self] error in
                cond.lock()
                earlyCloses[key] = error.map { "closing share \(h.share): \($0)" } ?? ""
                cond.broadcast()
                cond.unlock()
            }
        }
        func waiting() -> Bool {
            inFlight.contains(where: { $0.value > 0 && failedServers[$0.key] == nil })
                || earlyCloses.contains(where: { $0.value == nil && failedServers[$0.key.server] == nil })
        }
        while fatal == nil && waiting() {
            _ = cond.wait(until: Date(timeIntervalSinceNow: 0.1))
            dropStalled()
        }
        if let f = fatal { throw f }
    }

    /// After `finish`: the early closes that failed (by server), and the live buckets
    /// still to be closed.
    func closeOutcome() -> (failures: [(ServerRef, String)], unclosed: [BucketHandle]) {
        cond.lock()
        defer { cond.unlock() }
        var failures: [(ServerRef, String)] = []
        var unclosed: [BucketHandle] = []
        for h in handles where failedServers[h.server] == nil {
            switch earlyCloses[BucketKey(server: h.server, bucket: h.bucket)] {
            case .some(.some(let why)) where !why.isEmpty: failures.append((h.server, why))
            case .some(.some): break  // closed
            default: unclosed.append(h)
            }
        }
        return (failures, unclosed)
    }
}
