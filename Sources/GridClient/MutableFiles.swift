import GridCrypto
import GridFormat
import GridImmutable
import GridMutable
import GridProtocol
import GridSystem
import GridWire

/// Mutable files on the grid: create, read and replace SDMF and MDMF files through the
/// servers' mutable slots. Every write is a test-and-write: a new file's shares are
/// written only where none exist; a new version only where the server still holds the
/// version this client read (its checkstring), so an uncoordinated writer is detected
/// instead of silently overwritten.
public final class MutableFileClient: Sendable {
    let pool: ServerPool
    let settings: ClientSettings
    let coding: CodingOptions

    public init(pool: ServerPool, settings: ClientSettings, coding: CodingOptions = CodingOptions()) {
        (self.pool, self.settings, self.coding) = (pool, settings, coding)
    }

    /// One share as a server holds it.
    struct Held {
        let server: ServerRef
        let client: StorageClient
        let number: Int
        let bytes: [UInt8]
    }

    /// What a write did.
    public struct WriteResult: Sendable {
        public var capability: MutableCapability
        public var sequenceNumber: UInt64
        /// Share number → node ids of the servers that now hold it.
        public var placement: [Int: [String]]
        /// How many times a conflict with another writer was met and the change made again.
        public var retries = 0
    }

    /// Creates a mutable file holding `data` (a new RSA-2048 key, sequence number 1).
    public func create(_ data: [UInt8], format: MutableFormat, privateKey: RSAPrivateKey? = nil) async throws -> WriteResult {
        let key = try privateKey ?? RSAPrivateKey(bits: 2048)
        return try await publish(data, key: key, format: format, sequenceNumber: 1, existing: [])
    }

    /// MDMF: only the shares' heads are read (each server's checkstring and the signing
    /// key are in them), and the current contents only when the change needs them, k
    /// shares streamed; the new version is written streaming too.
    func updateOnceMDMF(_ cap: MutableCapability, _ change: Change, firstAttempt: Bool) async throws -> WriteResult {
        // A write inside the file changes only its segments, in place, when it can.
        if case let .write(offset, bytes) = change, let r = try await updateInPlaceMDMF(cap, offset: offset, bytes: bytes) { return r }
        let heads = await fetchHeads(cap.storageIndex, servers: try await servers(cap))
        var newest: UInt64?
        var key: RSAPrivateKey?
        var keyError: Error?
        for h in heads {
            guard let (head, _) = try? MutableKeys.checkedHead(cap, h.bytes, number: h.number) else { continue }
            newest = max(newest ?? 0, head.sequenceNumber)
            if key == nil {
                do { key = try MutableKeys.decryptPrivateKey(head.encryptedPrivateKey, for: cap) } catch { keyError = error }
            }
        }
        guard let newest else {
            if heads.isEmpty { throw GridError(.notFound, "no server holds a share of this mutable file") }
            _ = try await read(cap)  // throws, naming every share's failure
            throw GridError(.corrupt, "no share of this mutable file passed its checks")
        }
        guard newest < UInt64.max else { throw GridError(.corrupt, "the file's sequence number is at its limit") }
        guard let key else { throw keyError ?? GridError(.corrupt, "no share carries a usable signing key") }
        if case let .source(src) = change, src.size / UInt64(settings.encoding.needed) >= UInt64(Self.stageThreshold) {
            return try await publishStreaming(src, key: key, sequenceNumber: newest + 1, existing: heads)
        }
        var current: [UInt8]?
        var needsCurrent = false
        switch change {
        case .write, .modify: needsCurrent = true
        case .replace, .source: break
        }
        if needsCurrent {
            // All or nothing: a read that fails half way must not become the base of a write
            // (a file changed under the read is a conflict: the change is made again).
            var out: [UInt8] = []
            _ = try await readMDMF(cap) { out.append(contentsOf: $0) }
            current = out
        }
        return try await publish(try change.apply(to: current, firstAttempt: firstAttempt), key: key, format: .mdmf, sequenceNumber: newest + 1, existing: heads)
    }

    /// The newest version of the file, checked; with its sequence number.
    /// Every share is read whole (SDMF has one segment); shares that fail their checks are
    /// reported to their servers as corrupt.
    public func read(_ cap: MutableCapability) async throws -> (data: [UInt8], sequenceNumber: UInt64) {
        let held = try await fetch(cap.storageIndex, servers: try await servers(cap))
        for h in held {
            do { _ = try CheckedMutableShare(cap, h.bytes, number: h.number) } catch {
                let failure = ShareFailure(error)
                if failure.isCorrupt {
                    try? await h.client.adviseCorruptShare(mutable: true, storageIndex: cap.storageIndex, share: h.number, reason: "\(failure)", timeout: 4 * coding.stallTimeout)
                }
            }
        }
        return try decode(cap, held)
    }

    /// How a new version is made from the current one.
    public enum Change: Sendable {
        /// New contents, whatever the file held.
        case replace([UInt8])
        /// `bytes` written from byte `offset` on (the file grows if they reach past its end;
        /// a gap is filled with zeros).
        case write(offset: UInt64, bytes: [UInt8])
        /// New contents read from a source as they are written (MDMF streams them; SDMF,
        /// one segment, reads them whole).
        case source(any RandomAccessSource & Sendable)
        /// New contents computed from the current ones (a directory's change: made again
        /// on the winner's version after a conflict, so no writer's change is lost). The
        /// closure is told whether this is the first attempt.
        case modify(@Sendable (_ current: [UInt8], _ firstAttempt: Bool) throws -> [UInt8])

        /// The new contents from the current ones (nil: no version could be read).
        func apply(to current: [UInt8]?, firstAttempt: Bool = true) throws -> [UInt8] {
            switch self {
            case let .replace(data): return data
            case let .source(src):
                guard src.size <= UInt64(1 << 30) else { throw GridError(.usage, "an SDMF file holds at most 1 GiB; use MDMF for larger files") }
                var out = [UInt8](repeating: 0, count: Int(src.size))
                var at = 0
                try out.withUnsafeMutableBytes { b in
                    while at < b.count {
                        let n = try src.read(at: UInt64(at), into: UnsafeMutableRawBufferPointer(rebasing: b[at...]))
                        guard n > 0 else { throw GridError(.io, "the new contents ended after \(at) of \(b.count) bytes") }
                        at += n
                    }
                }
                return out
            case let .modify(body):
                guard let current else {
                    throw GridError(.unavailable, "no version of the file could be read to change")
                }
                return try body(current, firstAttempt)
            case let .write(offset, bytes):
                guard var data = current else {
                    throw GridError(.unavailable, "no version of the file could be read to write into; only a whole replacement can be written now")
                }
                guard offset <= UInt64(1 << 40), UInt64(bytes.count) <= UInt64(1 << 40) else {
                    throw GridError(.usage, "offset \(offset) is beyond what a mutable file can hold")
                }
                let end = Int(offset) + bytes.count
                if end > data.count { data += [UInt8](repeating: 0, count: end - data.count) }
                data.replaceSubrange(Int(offset)..<end, with: bytes)
                return data
            }
        }
    }

    /// Replaces the file's contents with `data` as the next version. Needs a write capability.
    public func update(_ cap: MutableCapability, _ data: [UInt8], retries: Int = 5) async throws -> WriteResult {
        try await update(cap, .replace(data), retries: retries)
    }

    /// Writes the next version, made by `change` from the newest one. Each server takes it
    /// only if it still holds what this client read; when another writer got there first
    /// (a conflict), the change is made again on top of the winner's version, up to
    /// `retries` times with a random, growing back-off; then the conflict is reported
    /// (GridError class `.conflict`). Needs a write capability.
    public func update(_ cap: MutableCapability, _ change: Change, retries: Int = 5) async throws -> WriteResult {
        guard cap.writekey != nil else {
            throw GridError(.denied, "a read-only or verify capability cannot change the file; give the write capability")
        }
        var attempt = 0
        while true {
            do {
                var r = try await updateOnce(cap, change, firstAttempt: attempt == 0)
                r.retries = attempt
                return r
            } catch let e as GridError where e.errorClass == .conflict && attempt < retries {
                attempt += 1
                // 25 ms, 50 ms, 100 ms ... each times a random factor in 0.5..1.5, so two
                // writers that collided do not collide again in step.
                // At most ~1 s, so a busy directory's writers keep taking turns.
                let delay = min(0.025 * Double(1 << min(attempt - 1, 8)), 0.8) * Double.random(in: 0.5...1.5)
                try? await Task.sleep(nanoseconds: UInt64(delay * 1e9))
            }
        }
    }

    func updateOnce(_ cap: MutableCapability, _ change: Change, firstAttempt: Bool) async throws -> WriteResult {
        if cap.format == .mdmf { return try await updateOnceMDMF(cap, change, firstAttempt: firstAttempt) }
        let held = try await fetch(cap.storageIndex, servers: try await servers(cap))
        // Every share that passes its checks, whatever its version: the newest sequence number
        // seen decides the next one, so a version left unrecoverable by a crashed or racing
        // writer is still replaced, not reused.
        let checked = held.compactMap { h in (try? CheckedMutableShare(cap, h.bytes, number: h.number)).map { (h, $0) } }
        guard let newest = checked.map(\.1.version.sequenceNumber).max() else {
            _ = try decode(cap, held)  // throws, naming every share's failure
            throw GridError(.corrupt, "no share of this mutable file passed its checks")
        }
        guard newest < UInt64.max else { throw GridError(.corrupt, "the file's sequence number is at its limit") }
        let current = try? decode(cap, held)
        let data = try change.apply(to: current?.data, firstAttempt: firstAttempt)
        var key: RSAPrivateKey?
        var keyError: Error?
        for (_, c) in checked {
            do { key = try MutableKeys.decryptPrivateKey(c.encryptedPrivateKey, for: cap); break } catch { keyError = error }
        }
        guard let key else { throw keyError ?? GridError(.corrupt, "no share carries a usable signing key") }
        return try await publish(data, key: key, format: cap.format, sequenceNumber: newest + 1, existing: held)
    }

    /// The newest version the servers say they hold, from each share's first bytes only
    /// (a cheap census: nothing is checked, so it only tells whether a version already
    /// read and checked is still the newest): its sequence number, root hash and how many
    /// distinct shares of it answered; nil when no server holds a share. When two versions
    /// share the newest sequence number, the one with more shares.
    public func newestVersion(_ cap: MutableCapability) async throws -> (sequenceNumber: UInt64, rootHash: [UInt8], shares: Int, needed: Int)? {
        let held = await readPrefixes(cap.storageIndex, servers: try await servers(cap), length: 128, timeout: 4 * coding.stallTimeout).held
        var versions: [String: (seq: UInt64, root: [UInt8], needed: Int, shares: Set<Int>)] = [:]
        for h in held {
            guard let v = MutableShareHeader.summary(h.bytes), v.format == cap.format else { continue }
            let key = "\(v.sequenceNumber)/\(v.rootHash)/\(v.needed)"
            versions[key, default: (v.sequenceNumber, v.rootHash, v.needed, [])].shares.insert(h.number)
        }
        guard let best = versions.values.max(by: { ($0.seq, $0.shares.count) < ($1.seq, $1.shares.count) }) else { return nil }
        return (best.seq, best.root, best.shares.count, best.needed)
    }

    // MARK: Internals

    func servers(_ cap: MutableCapability) async throws -> [ServerRef] {
        let known = await pool.waitForServers(enough: settings.encoding.total, minimum: settings.encoding.needed)
        if known.isEmpty { throw pool.noServersError() }
        return permutedServers(known, storageIndex: cap.storageIndex)
    }

    func decode(_ cap: MutableCapability, _ held: [Held]) throws -> (data: [UInt8], sequenceNumber: UInt64) {
        guard !held.isEmpty else { throw GridError(.notFound, "no server holds a share of this mutable file") }
        let shares = held.map { (number: $0.number, bytes: $0.bytes) }
        switch cap.format {
        case .sdmf: return try SDMFDecoder(capability: cap).decode(shares, simdPath: coding.simdPath)
        case .mdmf: return try MDMFDecoder(capability: cap).decode(shares, simdPath: coding.simdPath)
        }
    }

    /// Every share every server holds of `si`, whole (read in pieces of at most `maxChunk`).
    func fetch(_ si: [UInt8], servers: [ServerRef]) async throws -> [Held] {
        let timeout = 4 * coding.stallTimeout
        let first = await readPrefixes(si, servers: servers, length: maxChunk, timeout: timeout).held
        return await withTaskGroup(of: Held.self) { group in
            for h in first {
                group.addTask {
                    var bytes = h.bytes
                    // A share longer than one read: its end is in its header.
                    let end = MutableShareHeader.declaredLength(bytes)
                    while bytes.count == maxChunk || (end.map { UInt64(bytes.count) < $0 } ?? false) {
                        let want = min(UInt64(maxChunk), (end ?? UInt64(bytes.count + maxChunk)) - UInt64(bytes.count))
                        guard want > 0, let more = try? await h.client.call(
                            SlotReadRequest(storageIndex: si, shareNumbers: [h.number],
                                            readVector: [ReadVector(offset: UInt64(bytes.count), length: want)]), timeout: timeout).reads[h.number]?.first,
                              !more.isEmpty else { break }
                        bytes += more
                    }
                    return Held(server: h.server, client: h.client, number: h.number, bytes: bytes)
                }
            }
            var all: [Held] = []
            for await h in group { all.append(h) }
            return all
        }
    }

    func publish(_ data: [UInt8], key: RSAPrivateKey, format: MutableFormat, sequenceNumber: UInt64, existing: [Held]) async throws -> WriteResult {
        let e = settings.encoding
        if format == .mdmf && data.count / e.needed >= Self.stageThreshold {
            return try await publishStreaming(MemorySource(data), key: key, sequenceNumber: sequenceNumber, existing: existing)
        }
        let (cap, shares): (MutableCapability, [[UInt8]])
        switch format {
        case .sdmf:
            let r = try SDMFEncoder.encode(data, privateKey: key, sequenceNumber: sequenceNumber, needed: e.needed, total: e.total, simdPath: coding.simdPath)
            (cap, shares) = (r.capability, r.shares.map { $0.serialized() })
        case .mdmf:
            let r = try MDMFEncoder.encode(data, privateKey: key, sequenceNumber: sequenceNumber, needed: e.needed, total: e.total, simdPath: coding.simdPath)
            (cap, shares) = (r.capability, r.shares.map { $0.serialized() })
        }
        let servers = try await self.servers(cap)
        let target = Self.targets(count: shares.count, servers: servers, existing: existing)
        var outcome = await write(cap, shares, target: target, existing: existing)
        // A share whose every server failed (gone, timed out, full) goes to a server that
        // has not failed, holding nothing of this file where possible: one more round.
        let failedServers = Set(outcome.failed.map(\.server))
        let lost = (0..<shares.count).filter { n in outcome.placement[n] == nil && !outcome.conflicts.contains { target[n]!.contains($0) } }
        if !lost.isEmpty && outcome.conflicts.isEmpty {
            var spare = servers.filter { s in !failedServers.contains(s) && !outcome.placement.values.contains { $0.contains(s.nodeID) } }
            spare += servers.filter { s in !failedServers.contains(s) && !spare.contains(s) }
            // Only when the write can still reach `happy` servers: more shares of a version
            // that will not be acknowledged would only make readers prefer it.
            let reachable = Set(outcome.placement.values.flatMap { $0 }).union(spare.map(\.nodeID)).count
            if !spare.isEmpty && reachable >= e.happy {
                var second: [Int: [ServerRef]] = [:]
                for (i, n) in lost.enumerated() { second[n] = [spare[i % spare.count]] }
                let again = await write(cap, shares, target: second, existing: existing)
                for (n, ids) in again.placement { outcome.placement[n, default: []] += ids }
                outcome.conflicts += again.conflicts
                outcome.refused += again.refused
            }
        }
        return try finishPublish(cap, sequenceNumber: sequenceNumber, outcome)
    }

    /// The result of a publish's writes, or the error that says what went wrong.
    func finishPublish(_ cap: MutableCapability, sequenceNumber: UInt64, _ outcome: WriteOutcome) throws -> WriteResult {
        let e = settings.encoding
        let placed = outcome.placement.count
        if placed < e.needed && !outcome.refused.isEmpty {
            // Shares moved from other servers keep the write enabler of the server that first
            // stored them; this server cannot accept ours for them.
            throw GridError(.denied, "the servers refused this client's write enabler (shares copied from other servers, e.g. "
                + "Tahoe's, keep their first server's): \(Set(outcome.refused).sorted().prefix(3).joined(separator: "; "))")
        }
        if !outcome.conflicts.isEmpty {
            throw GridError(.conflict, "another writer changed this mutable file at the same time (servers \(Set(outcome.conflicts.map(\.nickname)).sorted().joined(separator: ", ")) hold a version this client did not read); read it again and retry")
        }
        guard placed >= e.needed else {
            throw GridError(.unavailable, "only \(placed) shares of the new version could be written; \(e.needed) are needed to read it"
                + (outcome.failed.isEmpty ? "" : " (\(Set(outcome.failed.map { "\($0.server.nickname): \($0.error)" }).sorted().prefix(3).joined(separator: "; ")))"))
        }
        // Acknowledged only on `happy` servers, as an upload is: two writers cut off from
        // each other cannot both reach happy > half of the servers, so at most one is told
        // it succeeded, and readers prefer the version on more shares (VersionID.preferred).
        var holdings: [String: Set<Int>] = [:]
        for (n, ids) in outcome.placement { for id in ids { holdings[id, default: []].insert(n) } }
        let happiness = Placement.happiness(holdings)
        guard happiness >= e.happy else {
            throw GridError(.unavailable, "the new version reached only \(happiness) distinct servers, fewer than happy = \(e.happy), so it is not acknowledged "
                + "(readers may see it or the previous version); write again when more servers can be reached"
                + (outcome.failed.isEmpty ? "" : " (\(Set(outcome.failed.map { "\($0.server.nickname): \($0.error)" }).sorted().prefix(3).joined(separator: "; ")))"))
        }
        return WriteResult(capability: cap, sequenceNumber: sequenceNumber, placement: outcome.placement.mapValues { Array(Set($0)).sorted() })
    }

    /// Shares this large or larger are staged (sent ahead in pieces) rather than sent in
    /// the test-and-write message itself.
    public static let stageThreshold = 1 << 20
    static let stagePiece = 4 << 20

    /// Sends `share` to the server in pieces, a few in flight at once.
    static func stage(_ share: [UInt8], to c: StorageClient, si: [UInt8], writeEnabler: [UInt8], share n: Int, id: [UInt8], timeout: Double) async throws {
        let pieces = stride(from: 0, to: share.count, by: stagePiece).map { $0..<min($0 + stagePiece, share.count) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var inFlight = 0
            for r in pieces {
                if inFlight == 4 { try await group.next(); inFlight -= 1 }
                let req = SlotStageRequest(storageIndex: si, writeEnabler: writeEnabler, shareNumber: n, stagingID: id,
                                           offset: UInt64(r.lowerBound), data: Array(share[r]))
                group.addTask { _ = try await c.call(req, timeout: timeout) }
                inFlight += 1
            }
            try await group.waitForAll()
        }
    }

    /// Where each share goes: to every server that holds a copy of it (all copies move to
    /// the new version), else to the next server in permuted order that holds nothing yet.
    static func targets(count: Int, servers: [ServerRef], existing: [Held]) -> [Int: [ServerRef]] {
        var target: [Int: [ServerRef]] = [:]
        for h in existing where !(target[h.number]?.contains(h.server) ?? false) { target[h.number, default: []].append(h.server) }
        var free = servers.filter { s in !existing.contains { $0.server == s } }
        var reuse = 0
        for n in 0..<count where target[n] == nil {
            if !free.isEmpty { target[n] = [free.removeFirst()] } else { target[n] = [servers[reuse % servers.count]]; reuse += 1 }
        }
        return target
    }

    /// The test a write of share `n` to `s` carries: replace only the version read from it,
    /// create only where it has none.
    static func test(_ s: ServerRef, _ n: Int, existing: [Held]) -> TestVector {
        let old = existing.first { $0.server == s && $0.number == n }
        return old.map { TestVector(offset: 0, length: UInt64(MutableShareHeader.checkstring($0.bytes).count), op: .eq, specimen: MutableShareHeader.checkstring($0.bytes)) }
            ?? TestVector(offset: 0, length: 1, op: .eq, specimen: [])
    }

    /// What one round of writes did.
    struct WriteOutcome {
        var placement: [Int: [String]] = [:]
        var conflicts: [ServerRef] = []
        var refused: [String] = []
        var failed: [(server: ServerRef, error: Error)] = []
    }

    /// Writes share n to each server of `target[n]` (a test-and-write per server: replace only
    /// the version read from it, create only where it has none).
    func write(_ cap: MutableCapability, _ shares: [[UInt8]], target: [Int: [ServerRef]], existing: [Held]) async -> WriteOutcome {
        let timeout = max(30, 4 * coding.stallTimeout)
        var writes: [ServerRef: [Int: ShareWrite]] = [:]
        for (n, ss) in target {
            for s in ss {
                writes[s, default: [:]][n] = ShareWrite(tests: [Self.test(s, n, existing: existing)], writes: [WriteVector(offset: 0, data: shares[n])],
                                                       newLength: UInt64(shares[n].count))
            }
        }
        return await commit(cap, writes) { c, req in
            // A share too large for one message is sent ahead in pieces; the test-and-write
            // then names it, and the server swaps it in whole.
            for (n, w) in req.writes where shares[n].count >= Self.stageThreshold {
                let id = SecureRandom.bytes(StagedShare.idSize)
                try await Self.stage(shares[n], to: c, si: req.storageIndex, writeEnabler: req.writeEnabler, share: n, id: id, timeout: timeout)
                req.writes[n] = ShareWrite(tests: w.tests, staged: StagedShare(id: id, length: UInt64(shares[n].count)))
            }
        }
    }

    /// Sends each server its test-and-write (`writes`: share number → tests and writes),
    /// all at once, after `prepare` (e.g. staging) on its connection; sorts the answers into
    /// placed, conflicts, refused write enablers and failures.
    func commit(_ cap: MutableCapability, _ writes: [ServerRef: [Int: ShareWrite]],
                prepare: (@Sendable (StorageClient, inout SlotWriteRequest) async throws -> Void)? = nil) async -> WriteOutcome {
        let si = cap.storageIndex
        let secrets = LeaseSecrets(leaseSecret: settings.leaseSecret, storageIndex: si)
        let timeout = max(30, 4 * coding.stallTimeout)
        return await withTaskGroup(of: (ServerRef, [Int], Result<Bool, Error>).self) { group in
            for (s, w) in writes {
                let req = SlotWriteRequest(storageIndex: si, writeEnabler: TahoeHash.sskWriteEnabler(writekey: cap.writekey!, serverID: containerNodeID(publicKey: s.permutationSeed)),
                                           renewSecret: secrets.renew(on: s), cancelSecret: secrets.cancel(on: s), writes: w, readVector: [])
                let numbers = Array(w.keys)
                group.addTask { [pool] in
                    do {
                        let c = try await pool.client(for: s)
                        var req = req
                        try await prepare?(c, &req)
                        do {
                            return (s, numbers, .success(try await c.call(req, timeout: timeout).ok))
                        } catch let e where e.errorClass == .denied {
                            // Shares moved here from another server (Tahoe's, or another grid
                            // server's) keep the write enabler of the server that first stored
                            // them: derive it for that server's id, as only a writekey holder can.
                            let owners = Set(try await c.call(SlotOwnersRequest(storageIndex: si), timeout: timeout).owners.values)
                            guard owners.count == 1, let owner = owners.first, owner != containerNodeID(publicKey: s.permutationSeed) else { throw e }
                            req.writeEnabler = TahoeHash.sskWriteEnabler(writekey: cap.writekey!, serverID: owner)
                            return (s, numbers, .success(try await c.call(req, timeout: timeout).ok))
                        }
                    } catch { return (s, numbers, .failure(error)) }
                }
            }
            var out = WriteOutcome()
            for await (s, numbers, r) in group {
                switch r {
                case .success(true): for n in numbers { out.placement[n, default: []].append(s.nodeID) }
                case .success(false): out.conflicts.append(s)
                case let .failure(err):
                    if err.errorClass == .denied { out.refused.append("\(s.nickname): \(err)") } else { out.failed.append((s, err)) }
                }
            }
            return out
        }
    }
}
