import Foundation
import GridCrypto
import GridFormat
import GridImmutable
import GridProtocol
import GridSystem
import GridWire
import Synchronization

/// Progress of a long operation: which phase, bytes done of total.
public struct TransferProgress: Sendable {
    public enum Phase: String, Sendable { case hashing, uploading, repairing, downloading }
    public var phase: Phase
    public var done: UInt64
    public var total: UInt64
}

/// What an upload did.
public struct UploadResult: Sendable {
    public var capability: Capability
    public var size: UInt64
    /// Share number → node ids of the servers holding it after the upload.
    public var placement: [Int: [String]]
    /// Node id → nickname, for every server in `placement`.
    public var nicknames: [String: String]
    /// Distinct servers holding distinct shares (see `Placement.happiness`).
    public var happiness: Int
    /// Shares that servers already held (convergent deduplication).
    public var sharesAlreadyPresent: Int
    /// Share bytes sent over the network.
    public var bytesSent: UInt64
    public var hashSeconds: Double
    public var pushSeconds: Double
    public var totalSeconds: Double
}

/// One open bucket writer on one server.
struct BucketHandle: Sendable {
    let server: ServerRef
    let client: StorageClient
    let bucket: UInt64
    let share: Int
}

/// Uploads immutable files: convergent key, server selection by servers-of-happiness over
/// Tahoe's permuted list, then one streaming pass that encodes segment i+1 while the
/// blocks of segment i are still on the wire.
public final class Uploader: Sendable {
    let pool: ServerPool
    let settings: ClientSettings
    /// Share bytes allowed in flight across all servers; bounds memory with the segment buffers.
    let window: Int
    let threads: Int

    public init(pool: ServerPool, settings: ClientSettings, window: Int = 8 << 20, threads: Int = 2) {
        self.pool = pool
        self.settings = settings
        self.window = window
        self.threads = threads
    }

    var parameters: EncodingParameters { settings.encoding.parameters }

    public func upload(source: RandomAccessSource & Sendable, progress: (@Sendable (TransferProgress) -> Void)? = nil) async throws -> UploadResult {
        let start = monotonicNow()
        let encoder = try CHKEncoder(parameters: parameters, threads: threads)
        let size = source.size
        if size <= UInt64(Capability.literalThreshold) {
            let r = try encoder.encode(source: source, convergenceSecret: settings.convergenceSecret, sink: DiscardShareSink())
            return UploadResult(capability: r.capability, size: size, placement: [:], nicknames: [:], happiness: 0,
                                sharesAlreadyPresent: 0, bytesSent: 0, hashSeconds: 0, pushSeconds: 0,
                                totalSeconds: monotonicNow() - start)
        }
        let k = parameters.needed, n = parameters.total, happy = parameters.happy
        let secret = settings.convergenceSecret
        let box = UncheckedBox(encoder)
        let key = try await onThread("grid-hash") {
            try box.value.convergenceKey(source: source, secret: secret)
        }
        progress?(TransferProgress(phase: .hashing, done: size, total: size))
        let hashSeconds = monotonicNow() - start
        let si = TahoeHash.storageIndex(forKey: key)
        let shareSize = try encoder.shareSize(forSize: size)

        // Servers, in this file's permuted order; ask each what it already holds.
        let known = await pool.waitForServers(enough: n, minimum: happy)
        if known.count < happy {
            throw ClientError(.unavailable,
                "Only \(known.count) storage server\(known.count == 1 ? " is" : "s are") known to the introducer, "
                    + "but this upload needs \(happy) (happy = \(happy)). Start more servers, or lower 'happy' in the client's grid.conf.")
        }
        let permuted = permutedServers(known, storageIndex: si)
        let probes = await withTaskGroup(of: (ServerRef, StorageClient?, [Int]).self) { group in
            for s in permuted {
                group.addTask { [pool] in
                    do {
                        let c = try await pool.client(for: s)
                        let held = try await c.getBuckets(storageIndex: si)
                        return (s, c, Array(held.keys))
                    } catch { return (s, nil, []) }
                }
            }
            var out: [ServerRef: (StorageClient?, [Int])] = [:]
            for await (s, c, held) in group { out[s] = (c, held) }
            return out
        }
        var clients: [ServerRef: StorageClient] = [:]
        var holdings: [ServerRef: Set<Int>] = [:]
        for (s, (c, held)) in probes {
            if let c { clients[s] = c }
            if !held.isEmpty { holdings[s] = Set(held) }
        }
        let reachable = permuted.filter { clients[$0] != nil }
        let present = holdings.values.reduce(0) { $0 + $1.count }
        var writable = Set(reachable.filter { $0.announcement.availableSpace >= shareSize })
        let renewRoot = TahoeHash.fileRenewalSecret(
            clientRenewal: TahoeHash.clientRenewalSecret(settings.leaseSecret), storageIndex: si)
        let cancelRoot = TahoeHash.fileCancelSecret(
            clientCancel: TahoeHash.clientCancelSecret(settings.leaseSecret), storageIndex: si)

        // Allocate, re-planning around servers that refuse, until nothing more can be placed.
        var handles: [BucketHandle] = []
        var refused: [String] = []
        func allocate(_ plan: [ServerRef: [Int]]) async {
            let answers = await withTaskGroup(of: (ServerRef, Result<AllocateResponse, Error>).self) { group in
                for (s, shares) in plan {
                    let c = clients[s]!
                    group.addTask {
                        let req = AllocateRequest(
                            storageIndex: si,
                            renewSecret: TahoeHash.bucketRenewalSecret(fileRenewal: renewRoot, serverID: s.permutationSeed),
                            cancelSecret: TahoeHash.bucketCancelSecret(fileCancel: cancelRoot, serverID: s.permutationSeed),
                            shareNumbers: shares, allocatedSize: shareSize)
                        do { return (s, .success(try await c.allocateBuckets(req))) } catch { return (s, .failure(error)) }
                    }
                }
                var out: [(ServerRef, Result<AllocateResponse, Error>)] = []
                for await a in group { out.append(a) }
                return out
            }
            for (s, r) in answers {
                switch r {
                case let .success(resp):
                    holdings[s, default: []].formUnion(resp.alreadyHave)
                    for (share, bucket) in resp.writers {
                        holdings[s, default: []].insert(share)
                        handles.append(BucketHandle(server: s, client: clients[s]!, bucket: bucket, share: share))
                    }
                    let got = Set(resp.alreadyHave).union(resp.writers.keys)
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
        for _ in 0..<(2 * n + 2) {
            let plan = Placement.plan(servers: reachable, existing: holdings, writable: writable, total: n)
            if plan.isEmpty { break }
            await allocate(plan)
        }
        let happiness = Placement.happiness(holdings)
        if happiness < happy {
            await abortAll(handles)
            throw happinessError(found: known.count, reachable: reachable.count, happiness: happiness, k: k, happy: happy,
                                 refused: refused)
        }

        // Encode and push. A server that fails is dropped; the upload goes on while
        // happiness holds, and its shares are placed again afterwards.
        let pushStart = monotonicNow()
        var sent: UInt64 = 0
        var live = handles
        var failed: [ServerRef: String] = [:]
        var result: EncodeResult?
        for round in 0..<3 {
            let sink = NetworkShareSink(handles: live, window: window, holdings: holdings, happy: happy)
            let phase: TransferProgress.Phase = round == 0 ? .uploading : .repairing
            let r: EncodeResult
            do {
                r = try await encodeAndPush(encoder: encoder, source: source, key: key, sink: sink) { done in
                    progress?(TransferProgress(phase: phase, done: done, total: size))
                }
            } catch {
                // Nothing half-written stays behind: abort every bucket this upload opened.
                await abortAll(sink.liveHandles)
                throw error
            }
            if result == nil { result = r }
            sent += sink.bytesSent
            for (s, why) in sink.failedServers { failed[s] = why }
            // Close every bucket that survived; a close that fails is a failed server too.
            let survivors = sink.liveHandles
            let closeFailures = await closeAll(survivors)
            for (s, why) in closeFailures { failed[s] = why }
            // What is stored now, on servers that did not fail.
            holdings = holdings.filter { failed[$0.key] == nil }
            writable.subtract(failed.keys)
            if let e = sink.fatal {
                await abortAll(sink.liveHandles)
                throw e
            }
            let stored = Set(holdings.values.flatMap { $0 })
            if stored.count == n || round == 2 { break }
            // Place the lost shares on other servers and encode just those again.
            handles = []
            let targets = reachable.filter { failed[$0] == nil }
            let plan = Placement.plan(servers: targets, existing: holdings, writable: writable, total: n)
            if plan.isEmpty { break }
            await allocate(plan)
            live = handles
            if live.isEmpty { break }
        }
        let finalHappiness = Placement.happiness(holdings)
        if finalHappiness < happy {
            throw ClientError(.unavailable,
                "The upload lost servers on the way (\(failed.keys.map(\.nickname).sorted().joined(separator: ", "))) "
                    + "and its shares now sit on only \(finalHappiness) distinct servers, fewer than happy = \(happy). "
                    + "Start more servers and upload again.")
        }
        guard case let .chk(cap, _)? = result else { throw ClientError(.internal, "no capability after encoding") }
        var placement: [Int: [String]] = [:]
        var nicknames: [String: String] = [:]
        for (s, shares) in holdings {
            nicknames[s.nodeID] = s.nickname
            for sh in shares { placement[sh, default: []].append(s.nodeID) }
        }
        for sh in placement.keys { placement[sh]!.sort() }
        let end = monotonicNow()
        return UploadResult(capability: .chk(cap), size: size, placement: placement, nicknames: nicknames,
                            happiness: finalHappiness, sharesAlreadyPresent: present, bytesSent: sent,
                            hashSeconds: hashSeconds, pushSeconds: end - pushStart, totalSeconds: end - start)
    }

    func encodeAndPush(encoder: CHKEncoder, source: RandomAccessSource & Sendable, key: [UInt8], sink: NetworkShareSink,
                       progress: @escaping @Sendable (UInt64) -> Void) async throws -> EncodeResult {
        let box = UncheckedBox((encoder, sink))
        return try await onThread("grid-upload") {
            try box.value.0.encode(source: source, key: key, sink: box.value.1, progress: progress)
        }
    }

    func closeAll(_ handles: [BucketHandle]) async -> [(ServerRef, String)] {
        await withTaskGroup(of: (ServerRef, String)?.self) { group in
            for h in handles {
                group.addTask {
                    do {
                        try await h.client.close(bucket: h.bucket)
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
        await withTaskGroup(of: Void.self) { group in
            for h in handles { group.addTask { try? await h.client.abort(bucket: h.bucket) } }
        }
    }

    func happinessError(found: Int, reachable: Int, happiness: Int, k: Int, happy: Int, refused: [String]) -> ClientError {
        var m = "Found \(found) storage server\(found == 1 ? "" : "s") (\(reachable) reachable), but shares could be placed "
            + "on only \(happiness) distinct server\(happiness == 1 ? "" : "s"); this upload needs \(happy) (happy = \(happy), k = \(k))."
        if !refused.isEmpty { m += " Refused: " + refused.prefix(3).joined(separator: "; ") + (refused.count > 3 ? "; ..." : "") + "." }
        m += " Start more servers, free space on them, or lower 'happy' in the client's grid.conf."
        return ClientError(.unavailable, m)
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
    var inFlight = 0
    let window: Int
    var holdings: [ServerRef: Set<Int>]
    let happy: Int
    var failedServers: [ServerRef: String] = [:]
    var fatal: ClientError?
    var bytesSent: UInt64 = 0

    init(handles: [BucketHandle], window: Int, holdings: [ServerRef: Set<Int>], happy: Int) {
        self.handles = handles
        self.window = window
        self.holdings = holdings
        self.happy = happy
        for h in handles { byShare[h.share, default: []].append(h) }
    }

    var liveHandles: [BucketHandle] {
        cond.lock()
        defer { cond.unlock() }
        return handles.filter { failedServers[$0.server] == nil }
    }

    func write(share: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) throws {
        cond.lock()
        if let fatal {
            cond.unlock()
            throw fatal
        }
        let targets = (byShare[share] ?? []).filter { failedServers[$0.server] == nil }
        if targets.isEmpty {
            cond.unlock()
            return
        }
        while inFlight > 0 && inFlight + bytes.count * targets.count > window && fatal == nil { cond.wait() }
        inFlight += bytes.count * targets.count
        cond.unlock()
        for h in targets {
            let count = bytes.count
            h.client.write(bucket: h.bucket, offset: offset, data: bytes) { [self] error in
                cond.lock()
                inFlight -= count
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
            fatal = ClientError(.unavailable,
                "Storage server \(s.nickname) failed during the upload (\(why)); the shares left reach only "
                    + "\(h) distinct servers, fewer than happy = \(happy), so the upload was stopped and its buckets aborted.")
        }
    }

    func finish() throws {
        cond.lock()
        while inFlight > 0 { cond.wait() }
        let f = fatal
        cond.unlock()
        if let f { throw f }
    }
}
