import Foundation
import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridProtocol
import GridSystem
import GridWire
import Synchronization

/// Downloads immutable files: asks every server in the file's permuted order at once which
/// shares it holds, reads k shares from the fastest (shares 0..k-1 first: no decoding),
/// prefetching blocks a few segments ahead, verifies every block and hash, and switches
/// to another share when a block is bad or a server dies, without starting over.
public final class Downloader: Sendable {
    let pool: ServerPool
    /// Segments of blocks fetched ahead of the one being decoded.
    let readahead: Int
    let coding: CodingOptions

    public init(pool: ServerPool, readahead: Int = 4, coding: CodingOptions = CodingOptions()) {
        (self.pool, self.readahead, self.coding) = (pool, readahead, coding)
    }

    /// Writes bytes [offset, offset+length) of the file (all of it by default) to `sink`.
    public func download(_ cap: Capability, to sink: PlaintextSink, offset: UInt64 = 0, length: UInt64? = nil,
                         progress: (@Sendable (TransferProgress) -> Void)? = nil) async throws -> DownloadResult {
        let start = monotonicNow()
        let chk: CHKCapability
        switch cap {
        case let .lit(l):
            let size = UInt64(l.data.count)
            guard offset <= size else { throw ImmutableError.offsetPastEnd(offset: offset, size: size) }
            let end = min(size, length.map { offset + $0 } ?? size)
            try l.data[Int(offset)..<Int(end)].withUnsafeBytes { try sink.write($0) }
            return DownloadResult(bytesWritten: end - offset, fileSize: size, sharesUsed: [:], nicknames: [:], badShares: [],
                                  corruptionReports: 0, seconds: monotonicNow() - start)
        case let .chk(c):
            chk = c
        case .chkVerifier:
            throw ImmutableError.needsReadCapability
        }
        guard offset <= chk.size else { throw ImmutableError.offsetPastEnd(offset: offset, size: chk.size) }
        let si = chk.storageIndex
        let known = await pool.waitForServers(enough: chk.total, minimum: chk.needed, settle: 0.5)
        if known.isEmpty {
            throw pool.noServersError()
        }
        let (readers, census) = await findShares(si: si, servers: permutedServers(known, storageIndex: si), chk: chk)
        let distinct = Set(readers.map(\.shareNumber)).count
        if distinct == 0 && census.failed.isEmpty && census.unanswered.isEmpty {
            throw GridError(.notFound,
                "None of the \(known.count) servers has any share of this file. Check the capability "
                    + "(a wrong character gives another file), or whether it was uploaded to another grid.")
        }
        if distinct < chk.needed {
            throw GridError(.unavailable,
                "Found only \(distinct) of the \(chk.needed) shares needed (asked \(known.count) servers); "
                    + "the file cannot be read until more of the servers holding it are back.")
        }
        let plan = Self.window(readahead, chk: chk, latencies: readers.map(\.latency), shares: distinct)
        let decoder = CHKDecoder(capability: chk, shares: readers, simdPath: coding.simdPath, threads: coding.threads,
                                 readahead: plan.readahead)
        decoder.width = plan.width
        // Readers of every share found, including those of servers asked only later.
        let allReaders = Mutex(readers)
        if !census.unasked.isEmpty {
            let (pool, unasked) = (pool, census.unasked)
            let stall = coding.stallTimeout
            decoder.moreShares = {
                // On the decoding thread: the census of the servers not asked yet.
                let found = Mutex<[RemoteShareReader]>([])
                let done = DispatchSemaphore(value: 0)
                Task {
                    let c = await pool.census(storageIndex: si, servers: unasked, enough: chk.needed)
                    found.withLock { $0 = c.readers(storageIndex: si) { Self.readStall($0, limit: stall) } }
                    done.signal()
                }
                done.wait()
                let more = found.withLock { $0 }
                allReaders.withLock { $0 += more }
                return more
            }
        }
        // Each share's header and hash trees take two round trips; fetch them for the shares
        // the decoder will check first all at once, not one share after another.
        for case let r as RemoteShareReader in decoder.firstCandidates(plan.width) { r.startMetadata() }
        let bad = Mutex<[(RemoteShareReader, ShareFailure)]>([])
        decoder.onBadShare = { r, why in
            let remote = r as! RemoteShareReader
            bad.withLock { $0.append((remote, why)) }
            // A stalled server is demoted for the rest of the file: its other shares give up at once.
            if remote.isStalled { for other in allReaders.withLock({ $0 }) where other.server == remote.server { other.markStalled() } }
        }
        let box = UncheckedBox((decoder, sink))
        let total = length.map { min($0, chk.size - offset) } ?? (chk.size - offset)
        var failure: Error?
        do {
            try await onThread("grid-download") {
                try box.value.0.decode(to: box.value.1, offset: offset, length: length) { done in
                    progress?(TransferProgress(phase: .downloading, done: done, total: total))
                }
            }
        } catch { failure = error }
        for r in allReaders.withLock({ $0 }) { r.cancel() }
        // Tell servers about shares that failed a hash check (not ones that merely went away).
        let corrupt = bad.withLock { $0 }.filter { $0.1.isCorrupt }
        await withTaskGroup(of: Void.self) { group in
            for (r, why) in corrupt {
                group.addTask {
                    try? await r.client.adviseCorruptShare(mutable: false, storageIndex: si, share: r.shareNumber, reason: "\(why)", timeout: 4 * self.coding.stallTimeout)
                }
            }
        }
        let badList = bad.withLock { $0 }.map { (share: $0.0.shareNumber, server: $0.0.server.nickname, failure: $0.1) }
        if let failure {
            if let e = failure as? ImmutableError { throw GridError(e.errorClass, "Download failed: \(e)") }
            throw failure
        }
        var used: [Int: String] = [:]
        var nicknames: [String: String] = [:]
        for case let r as RemoteShareReader in decoder.usedReaders.values {
            used[r.shareNumber] = r.server.nodeID
            nicknames[r.server.nodeID] = r.server.nickname
        }
        return DownloadResult(bytesWritten: total, fileSize: chk.size, sharesUsed: used, nicknames: nicknames,
                              badShares: badList, corruptionReports: corrupt.count, seconds: monotonicNow() - start,
                              uriExtension: decoder.uriExtension)
    }

    /// Asks all servers at once; returns readers for every share found, fastest servers
    /// first. Stops waiting for slow servers once k distinct shares are known and the
    /// others have had a short grace period.
    /// Segments read ahead and shares read from at once, by round trip: over a long one,
    /// about RTT × 400 MB/s in flight (at most 64 MiB) so a distant grid is read at its
    /// links' speed, not a few segments per round trip; and, since one connection carries
    /// at most a TCP window (~4 MiB) per round trip, the segments spread over enough
    /// shares' connections (`CHKDecoder.width`) to hold that much with each connection
    /// at most ~3 MiB in flight (a connection kept at its full window queues at the
    /// sender and its round trip grows: at 80 ms, 4 MiB per connection over 8 shares gave
    /// half the steady rate of 3.2 MiB over 10). The round trip is the
    /// census's k-th fastest answer (it may include connecting: it errs long). Loopback:
    /// `minimum` segments from k shares, as before.
    static func window(_ minimum: Int, chk: CHKCapability, latencies: [Double], shares: Int) -> (readahead: Int, width: Int) {
        let k = max(1, chk.needed)
        let sorted = latencies.sorted()
        guard !sorted.isEmpty else { return (minimum, k) }
        let rtt = sorted[min(sorted.count - 1, k - 1)]
        let inFlight = min(64 << 20, Int(rtt * 400e6))
        // Tahoe's default segment size unless the file is smaller (the real one is in the
        // URI extension block, not read yet).
        let segment = max(1, Int(min(chk.size, UInt64(EncodingParameters.defaultMaxSegmentSize))))
        let readahead = max(minimum, min(256, inFlight / segment))
        // A file smaller than that needs fewer connections (a 1 MiB file: k, not 10 whole shares).
        let needed = Int(min(UInt64(inFlight), chk.size))
        let connections = (needed + (3 << 20) - 1) / (3 << 20)
        return (readahead, min(max(k, shares), max(k, connections)))
    }

    /// The census also asks the first k servers in permuted order (where an upload to an
    /// unchanged grid puts shares 0..k-1, the ones read first) for their share's bytes:
    /// a small share whole, a large one's header and tail (hash trees, URI extension), so
    /// the decoder's first reads need no round trip of their own.
    func findShares(si: [UInt8], servers: [ServerRef], chk: CHKCapability) async -> ([RemoteShareReader], ShareCensus) {
        let k = chk.needed
        let small = chk.size / UInt64(max(1, k)) <= RemoteShareReader.wholeShareLimit
        var peeks: [ServerRef: ShareCensus.Peek] = [:]
        for (share, s) in servers.prefix(k).enumerated() {
            peeks[s] = ShareCensus.Peek(share: share, prefix: small ? UInt32(RemoteShareReader.wholeShareLimit) : 0x44,
                                        suffix: UInt32(RemoteShareReader.suffixGuess))
        }
        // A small file (read from k connections anyway: `window`) asks those k servers
        // first, and the others only if they do not have the k shares, or are slow: the
        // connections not made are most of a small download's CPU. Shares found later are
        // asked for only if the first ones fail (`CHKDecoder.moreShares`).
        let narrow = chk.size <= UInt64(k) * (3 << 20)
        let census = await pool.census(storageIndex: si, servers: servers, enough: k, peeks: peeks, firstStage: narrow ? k : nil)
        let stall = coding.stallTimeout
        return (census.readers(storageIndex: si) { Self.readStall($0, limit: stall) }, census)
    }

    /// How long a read may go unanswered: reads give up sooner than writes (another share
    /// is at hand); a server that answered the census slowly gets more time.
    static func readStall(_ censusLatency: Double, limit: Double) -> Double { min(limit, max(1.0, 50 * censusLatency)) }
}

/// One share on one server, read over the network. The header and the hash/UEB tail are
/// fetched once and kept; blocks are fetched on demand or ahead of time (`prefetch`),
/// many requests in flight at once.
final class RemoteShareReader: ShareReader, @unchecked Sendable {
    let server: ServerRef
    let client: StorageClient
    let storageIndex: [UInt8]
    let shareNumber: Int
    let size: UInt64
    let latency: Double

    final class Fetch: @unchecked Sendable {
        let length: Int
        let started = monotonicNow()
        var result: Result<[UInt8], Error>?
        /// Called (outside the lock) when the result arrives, with the bytes if whole.
        var onComplete: (@Sendable ([UInt8]?) -> Void)?
        init(length: Int) { self.length = length }
        /// The bytes, when the read succeeded and returned all of them.
        var wholeBytes: [UInt8]? { (try? result?.get()).flatMap { $0.count == length ? $0 : nil } }
    }
    /// A read unanswered this long means the server is stalled: the share is set aside and
    /// the decoder reads the segment from another.
    var stallTimeout = 2.0
    var stalled = false
    let cond = NSCondition()
    var fetches: [UInt64: Fetch] = [:]
    var cache: [(offset: UInt64, bytes: [UInt8])] = []
    /// 0: not asked for; 1: being fetched (other callers wait); 2: fetched or given up.
    var metadataState = 0
    var cancelled = false

    /// `preloaded`: pieces of the share already in hand (the census's peek).
    init(server: ServerRef, client: StorageClient, storageIndex: [UInt8], shareNumber: Int, size: UInt64, stallTimeout: Double,
         latency: Double, preloaded: [(UInt64, [UInt8])] = []) {
        cache = preloaded.map { (offset: $0.0, bytes: $0.1) }
        self.stallTimeout = stallTimeout
        self.server = server
        self.client = client
        self.storageIndex = storageIndex
        self.shareNumber = shareNumber
        self.size = size
        self.latency = latency
    }

    /// Starts fetching; under the lock.
    func start(_ offset: UInt64, _ length: Int) -> Fetch {
        let f = Fetch(length: length)
        if length > maxChunk {
            // Larger than one call may carry: fetch in pieces and join them.
            let pieces = stride(from: 0, to: length, by: maxChunk).map { ($0, min(maxChunk, length - $0)) }
            let parts = Mutex<[Int: [UInt8]]>([:])
            let failed = Mutex<Error?>(nil)
            let remaining = Atomic<Int>(pieces.count)
            for (at, len) in pieces {
                client.read(storageIndex: storageIndex, share: shareNumber, offset: offset + UInt64(at), length: len) { [self] r in
                    switch r {
                    case let .success(b): parts.withLock { $0[at] = b }
                    case let .failure(e): failed.withLock { $0 = e }
                    }
                    if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                        if let e = failed.withLock({ $0 }) {
                            complete(f, .failure(e))
                        } else {
                            let joined = parts.withLock { p in pieces.flatMap { p[$0.0]! } }
                            complete(f, .success(joined))
                        }
                    }
                }
            }
        } else {
            client.read(storageIndex: storageIndex, share: shareNumber, offset: offset, length: length) { [self] r in
                complete(f, r)
            }
        }
        return f
    }

    func complete(_ f: Fetch, _ r: Result<[UInt8], Error>) {
        cond.lock()
        f.result = r
        let then = f.onComplete
        f.onComplete = nil
        cond.broadcast()
        cond.unlock()
        then?(f.wholeBytes)
    }

    func wait(_ f: Fetch) throws -> [UInt8] {
        cond.lock()
        while f.result == nil && !stalled {
            if !cond.wait(until: Date(timeIntervalSinceNow: max(0.001, f.started + stallTimeout - monotonicNow())))
                && f.result == nil && monotonicNow() - f.started >= stallTimeout {
                stalled = true  // every later read of this share gives up at once
            }
        }
        cond.unlock()
        guard let result = f.result else {
            throw ShareFailure.unavailable("no answer from \(server.nickname) within \(String(format: "%.1f", stallTimeout)) s")
        }
        switch result {
        case let .success(b):
            guard b.count == f.length else {
                throw ShareFailure.corrupt(.length, "short read from \(server.nickname) (\(b.count) of \(f.length) bytes)")
            }
            return b
        case let .failure(e):
            throw failure(e)
        }
    }

    /// A network or server error as a share failure of the same class, naming the server.
    func failure(_ e: Error) -> ShareFailure {
        let m = "on \(server.nickname): \(e)"
        switch ShareFailure(e) {
        case let .corrupt(part, _): return .corrupt(part, m)
        case .incompatible: return .incompatible(m)
        case .notFound: return .notFound(m)
        case .unavailable: return .unavailable(m)
        }
    }

    /// A share this small is read whole in one request: header, blocks and hash trees
    /// in one round trip.
    static let wholeShareLimit: UInt64 = 1 << 20
    /// Otherwise the header and this many bytes from the end (which hold the hash trees,
    /// share hashes and UEB of files up to a few hundred segments) are read at once; the
    /// tail is read again only when it is longer.
    static let suffixGuess: UInt64 = 64 << 10

    /// Starts fetching the header and the tail (hash trees, share hashes, UEB) without
    /// waiting, in one round trip where it can (see `wholeShareLimit`, `suffixGuess`): the
    /// decoder's many small reads are then served from memory. The downloader starts this
    /// for the first k shares at once; the decoder's first read of a share waits for it
    /// (`loadMetadata`).
    func startMetadata() {
        cond.lock()
        guard metadataState == 0 else {
            cond.unlock()
            return
        }
        // What the census's peek brought may be all it needs.
        if size <= Self.wholeShareLimit ? inCache(0, size)
            : cached(0, 0x44).flatMap({ try? ShareLayout(parsing: $0) })
                .map({ $0.plaintextHashTreeOffset <= size && inCache($0.plaintextHashTreeOffset, size - $0.plaintextHashTreeOffset) }) == true {
            metadataState = 2
            cond.unlock()
            return
        }
        metadataState = 1
        let whole = size <= Self.wholeShareLimit ? start(0, Int(size)) : nil
        let head = whole == nil ? start(0, Int(min(size, 0x44))) : nil
        let suffixAt = size - min(size, Self.suffixGuess)
        let suffix = whole == nil ? start(suffixAt, Int(size - suffixAt)) : nil
        cond.unlock()
        if let whole {
            return watch(whole) { [self] bytes in metadataDone(bytes.map { [(UInt64(0), $0)] } ?? []) }
        }
        watch(head!) { [self] headBytes in
            guard let headBytes, let layout = try? ShareLayout(parsing: headBytes), layout.plaintextHashTreeOffset < size,
                  size - layout.plaintextHashTreeOffset <= UInt64(64 << 20)
            else { return metadataDone([]) }
            let at = layout.plaintextHashTreeOffset
            watch(suffix!) { [self] suffixBytes in
                if let suffixBytes, at >= suffixAt {
                    return metadataDone([(UInt64(0), headBytes), (suffixAt, suffixBytes)])
                }
                cond.lock()
                let tail = cancelled ? nil : start(at, Int(size - at))
                cond.unlock()
                guard let tail else { return metadataDone([(UInt64(0), headBytes)]) }
                watch(tail) { [self] tailBytes in metadataDone([(UInt64(0), headBytes)] + (tailBytes.map { [(at, $0)] } ?? [])) }
            }
        }
    }

    /// The cached piece holding all of [offset, offset+count), and where in it that range
    /// starts; under the lock.
    func cachedPiece(_ offset: UInt64, _ count: UInt64) -> (bytes: [UInt8], from: Int)? {
        for c in cache where offset >= c.offset && count <= UInt64(c.bytes.count) && offset - c.offset <= UInt64(c.bytes.count) - count {
            return (c.bytes, Int(offset - c.offset))
        }
        return nil
    }

    /// The cached bytes [offset, offset+count), if one piece holds them all; under the lock.
    func cached(_ offset: UInt64, _ count: UInt64) -> [UInt8]? {
        cachedPiece(offset, count).map { Array($0.bytes[$0.from..<($0.from + Int(count))]) }
    }

    /// Whether one cached piece holds [offset, offset+count); under the lock.
    func inCache(_ offset: UInt64, _ count: UInt64) -> Bool { cachedPiece(offset, count) != nil }

    /// Calls `then` once `f` has completed (with its bytes when they are whole).
    private func watch(_ f: Fetch, then: @escaping @Sendable ([UInt8]?) -> Void) {
        cond.lock()
        if f.result != nil {
            cond.unlock()
            then(f.wholeBytes)
            return
        }
        f.onComplete = then
        cond.unlock()
    }

    private func metadataDone(_ pieces: [(UInt64, [UInt8])]) {
        cond.lock()
        if !cancelled { cache += pieces.map { (offset: $0.0, bytes: $0.1) } }
        metadataState = 2
        cond.broadcast()
        cond.unlock()
    }

    /// Waits (at most the stall timeout) for the metadata fetch, starting it if needed.
    /// On failure or timeout the reads fall through to the server one by one.
    func loadMetadata() {
        startMetadata()
        let deadline = monotonicNow() + stallTimeout
        cond.lock()
        while metadataState == 1 && !cancelled && !stalled {
            let left = deadline - monotonicNow()
            if left <= 0 { break }
            _ = cond.wait(until: Date(timeIntervalSinceNow: left))
        }
        cond.unlock()
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        loadMetadata()
        let count = buffer.count
        cond.lock()
        if cancelled {
            cond.unlock()
            throw ShareFailure.unavailable("on \(server.nickname): download cancelled")
        }
        if let (bytes, from) = cachedPiece(offset, UInt64(count)) {
            bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + from, byteCount: count) }
            cond.unlock()
            return
        }
        var f = fetches.removeValue(forKey: offset)
        if f == nil || f!.length != count { f = start(offset, count) }
        cond.unlock()
        guard offset <= size, UInt64(count) <= size - offset else {
            throw ShareFailure.truncated(wanted: count, at: offset, size: size)
        }
        let bytes = try wait(f!)
        bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: count) }
    }

    func prefetch(_ ranges: [(offset: UInt64, length: Int)]) {
        cond.lock()
        defer { cond.unlock() }
        for r in ranges where fetches[r.offset] == nil && !cancelled && fetches.count < 64 && !inCache(r.offset, UInt64(r.length)) {
            fetches[r.offset] = start(r.offset, r.length)
        }
    }

    var isStalled: Bool {
        cond.lock()
        defer { cond.unlock() }
        return stalled
    }

    func markStalled() {
        cond.lock()
        stalled = true
        cond.broadcast()
        cond.unlock()
    }

    /// Drops prefetched data (the download is over).
    func cancel() {
        cond.lock()
        cancelled = true
        fetches.removeAll()
        cache.removeAll()
        cond.unlock()
    }
}
