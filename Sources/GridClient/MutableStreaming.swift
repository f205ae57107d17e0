import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridMutable
import GridProtocol
import GridSystem
import GridWire

/// Large MDMF versions, written as they are encoded: the file is read and encoded in
/// batches of segments (about 4 MiB of each share at a time, in buffers reused from batch
/// to batch), and each share's part of a batch is staged on its server (`slot_stage`)
/// while the next batch is encoded; then each share's head and block hash tree are staged
/// and one test-and-write per server swaps the staged shares in, all or nothing. Memory
/// stays at a few batches whatever the file's size.
extension MutableFileClient {
    /// The largest MDMF file written by streaming (a share must fit the servers' 4 GiB).
    public static let maxStreamingSize: UInt64 = 4 << 30

    /// Creates an MDMF file from `source`, streaming (see above).
    public func createMDMF(source: RandomAccessSource & Sendable, privateKey: RSAPrivateKey? = nil) async throws -> WriteResult {
        let key = try privateKey ?? RSAPrivateKey(bits: 2048)
        return try await publishStreaming(source, key: key, sequenceNumber: 1, existing: [])
    }

    /// One share on one server, staged under its own id.
    struct StagedTarget: Hashable {
        let server: ServerRef
        let share: Int
        let id: [UInt8]
    }

    func publishStreaming(_ source: RandomAccessSource & Sendable, key: RSAPrivateKey, sequenceNumber: UInt64, existing: [Held]) async throws -> WriteResult {
        let e = settings.encoding
        let salts = (0..<MDMFShare.geometry(needed: e.needed, segmentSize: UInt64((MDMFEncoder.maxSegmentSize + e.needed - 1) / e.needed * e.needed),
                                            dataLength: source.size).segments).map { _ in SecureRandom.bytes(16) }
        let cap = MutableCapability(format: .mdmf, privateKey: key)
        let servers = try await self.servers(cap)
        let target = Self.targets(count: e.total, servers: servers, existing: existing)
        var all = target.flatMap { n, ss in ss.map { StagedTarget(server: $0, share: n, id: SecureRandom.bytes(StagedShare.idSize)) } }
        var (staged, signature, length, _) = try await stream(source, key: key, sequenceNumber: sequenceNumber, salts: salts, signature: nil, to: all)
        // A share whose every server failed on the way goes to a server that has not failed
        // (holding nothing of this file where possible): encoded again for those shares only.
        let failedServers = Set(all.map(\.server)).subtracting(staged.map(\.server))
        let lost = Set(all.map(\.share)).subtracting(staged.map(\.share)).sorted()
        if !lost.isEmpty {
            var spare = servers.filter { s in !failedServers.contains(s) && !staged.contains { $0.server == s } }
            spare += servers.filter { s in !failedServers.contains(s) && !spare.contains(s) }
            if !spare.isEmpty {
                let second = lost.enumerated().map { StagedTarget(server: spare[$0.offset % spare.count], share: $0.element, id: SecureRandom.bytes(StagedShare.idSize)) }
                all += second
                staged.formUnion(try await stream(source, key: key, sequenceNumber: sequenceNumber, salts: salts, signature: signature, to: second).staged)
            }
        }
        // Staged shares are invisible until swapped in: when they cannot reach `happy`
        // servers, stop here, having changed nothing (the staging is dropped by the servers).
        var stagedHoldings: [ServerRef: Set<Int>] = [:]
        for t in staged { stagedHoldings[t.server, default: []].insert(t.share) }
        let stagedHappiness = Placement.happiness(stagedHoldings)
        guard stagedHappiness >= settings.encoding.happy else {
            throw GridError(.unavailable, "the new version could be sent to only \(stagedHappiness) distinct servers, fewer than happy = \(settings.encoding.happy); "
                + "the file was not changed. Write again when more servers can be reached")
        }
        // Swap the staged shares in: one test-and-write per server.
        var writes: [ServerRef: [Int: ShareWrite]] = [:]
        for t in staged {
            writes[t.server, default: [:]][t.share] = ShareWrite(tests: [Self.test(t.server, t.share, existing: existing)], staged: StagedShare(id: t.id, length: length))
        }
        let outcome = await commit(cap, writes)
        return try finishPublish(cap, sequenceNumber: sequenceNumber, outcome)
    }

    /// Encodes the version and stages every target's share on its server; returns the
    /// targets fully staged (a server that fails is dropped from the rest of the stream),
    /// the signature and the share length.
    func stream(_ source: RandomAccessSource & Sendable, key: RSAPrivateKey, sequenceNumber: UInt64, salts: [[UInt8]],
                signature: [UInt8]?, to targets: [StagedTarget]) async throws -> (staged: Set<StagedTarget>, signature: [UInt8], length: UInt64, rootHash: [UInt8]) {
        let e = settings.encoding
        let enc = try MDMFStreamEncoder(privateKey: key, sequenceNumber: sequenceNumber, needed: e.needed, total: e.total,
                                        dataLength: source.size, salts: salts, simdPath: coding.simdPath)
        let si = enc.capability.storageIndex
        let timeout = max(30, 4 * coding.stallTimeout)
        let enablers = Dictionary(Set(targets.map(\.server)).map { s in
            (s, TahoeHash.sskWriteEnabler(writekey: enc.capability.writekey!, serverID: containerNodeID(publicKey: s.permutationSeed)))
        }, uniquingKeysWith: { a, _ in a })
        let batch = max(1, (4 << 20) / max(1, enc.segmentStride))
        let rowSize = batch * enc.segmentStride
        var rows = [UInt8](repeating: 0, count: e.total * rowSize)
        var plain = [UInt8](repeating: 0, count: batch * enc.segmentSize)

        // Connections first: a batch's pieces are then handed to them without waiting.
        var clients: [ServerRef: StorageClient] = [:]
        for s in Set(targets.map(\.server)) { clients[s] = try? await pool.client(for: s) }
        var alive = Set(targets.filter { clients[$0.server] != nil })

        /// Starts sending each target its piece (bytes `range` of `buffer`, at `offset` of
        /// its staged share): each piece is copied into its frame before this returns, so
        /// the buffer may be refilled at once. The task ends when every server has
        /// answered, with the targets whose server failed.
        func start(_ pieces: [(target: StagedTarget, offset: UInt64, range: Range<Int>)], from buffer: [UInt8]) -> Task<[StagedTarget], Never> {
            let (stream, done) = AsyncStream.makeStream(of: StagedTarget?.self)
            buffer.withUnsafeBytes { b in
                for p in pieces {
                    let t = p.target
                    clients[t.server]!.stage(storageIndex: si, writeEnabler: enablers[t.server]!, share: t.share, stagingID: t.id,
                                             offset: p.offset, data: UnsafeRawBufferPointer(rebasing: b[p.range]), timeout: timeout) { err in
                        done.yield(err == nil ? nil : t)
                    }
                }
            }
            let count = pieces.count
            return Task {
                var failed: [StagedTarget] = []
                var seen = 0
                for await f in stream {
                    if let f { failed.append(f) }
                    seen += 1
                    if seen == count { break }
                }
                return failed
            }
        }
        func drop(_ failed: [StagedTarget]) {
            let gone = Set(failed.map(\.server))
            alive = alive.filter { !gone.contains($0.server) }
        }

        // One batch is sent while the next is read and encoded.
        var inFlight: Task<[StagedTarget], Never>?
        var seg = 0
        while seg < enc.segments {
            let end = min(enc.segments, seg + batch)
            let from = enc.plaintextRange(segment: seg).lowerBound, to = enc.plaintextRange(segment: end - 1).upperBound
            try plain.withUnsafeMutableBytes { p in
                var at = 0
                while at < to - from {
                    let n = try source.read(at: UInt64(from + at), into: UnsafeMutableRawBufferPointer(rebasing: p[at..<(to - from)]))
                    guard n > 0 else { throw GridError(.io, "the file ended at byte \(from + at) of \(source.size) while it was being written") }
                    at += n
                }
            }
            // The previous batch's pieces were copied out when sent; the rows are free.
            try plain.withUnsafeBytes { p in
                try rows.withUnsafeMutableBytes { r in
                    let outs = (0..<e.total).map { r.baseAddress! + $0 * rowSize }
                    for s in seg..<end {
                        let pr = enc.plaintextRange(segment: s)
                        try enc.encode(segment: s, plaintext: UnsafeRawBufferPointer(rebasing: p[(pr.lowerBound - from)..<(pr.upperBound - from)]),
                                       into: outs, at: enc.dataOffset(segment: s) - enc.dataOffset(segment: seg))
                    }
                }
            }
            let count = (end == enc.segments ? enc.shareDataCount : enc.dataOffset(segment: end)) - enc.dataOffset(segment: seg)
            let offset = UInt64(MDMFShare.shareDataOffset + enc.dataOffset(segment: seg))
            // One batch in flight while the next is read and encoded.
            if let f = inFlight { drop(await f.value) }
            inFlight = start(alive.map { t in (t, offset, (t.share * rowSize)..<(t.share * rowSize + count)) }, from: rows)
            seg = end
        }
        if let f = inFlight { drop(await f.value) }
        let signed = try enc.finish(sign: signature.map { sig in { _ in sig } })
        let headSize = MDMFShare.shareDataOffset
        guard signed.heads.allSatisfy({ $0.count == headSize }), Set(signed.trees.map(\.count)).count == 1 else {
            throw GridError(.internal, "an MDMF share head outgrew its 2167 bytes")
        }
        let heads = signed.heads.flatMap { $0 }
        drop(await start(alive.map { t in (t, 0, (t.share * headSize)..<((t.share + 1) * headSize)) }, from: heads).value)
        let treeAt = UInt64(MDMFShare.shareDataOffset + enc.shareDataCount)
        let treeSize = signed.trees[0].count
        let trees = signed.trees.flatMap { $0 }
        drop(await start(alive.map { t in (t, treeAt, (t.share * treeSize)..<((t.share + 1) * treeSize)) }, from: trees).value)
        return (alive, signed.shares[0].signature, treeAt + UInt64(signed.trees[0].count), signed.shares[0].rootHash)
    }
}

// MARK: Streaming read

extension MutableFileClient {
    /// One share of the version being read: its checked head and, once loaded, its
    /// checked block hash tree.
    final class ShareSource: @unchecked Sendable {
        let server: ServerRef
        let client: StorageClient
        let number: Int
        let head: MDMFShare
        let layout: MDMFShare.Layout
        /// The share's first bytes as read with its head: a small share is all here.
        let prefix: [UInt8]
        var leaves: [[UInt8]] = []
        init(server: ServerRef, client: StorageClient, number: Int, head: MDMFShare, layout: MDMFShare.Layout, prefix: [UInt8]) {
            (self.server, self.client, self.number, self.head, self.layout, self.prefix) = (server, client, number, head, layout, prefix)
        }

        /// Bytes [from, to) of the share from what was read with the head, when they are there.
        func cached(_ from: UInt64, _ to: UInt64) -> [UInt8]? {
            guard from <= to, to <= UInt64(prefix.count) else { return nil }
            return Array(prefix[Int(from)..<Int(to)])
        }
    }

    /// Reads bytes [offset, offset + length) of the newest version of an MDMF file: first
    /// the head (0..<2167) of every share on every server, each signature checked; then,
    /// from k shares of the newest recoverable version, each one's block hash tree
    /// (checked against the signed root) and only the segments holding the range, in
    /// batches, each block checked against its tree. A share that fails a check is set
    /// aside (and reported to its server) and another share of the version read instead.
    /// `write` gets the plaintext in order. Returns the file's size and sequence number.
    ///
    /// `firstServersFirst`: ask first only the `total − happy + needed` servers the file's
    /// shares go to first (of the permuted list), and take their version when every one of
    /// them answered with good shares of one and the same version, enough to read it; any
    /// difference (a server with no share, another version, a bad share, no answer, fewer
    /// than needed) asks every server. A publish succeeds only on at least `happy`
    /// servers, so it reached at least one of those (when writers use at least this
    /// client's happiness): the newest version is not missed. Callers that write what
    /// they read ask every server from the start.
    public func readMDMF(_ cap: MutableCapability, offset: UInt64 = 0, length: UInt64? = nil,
                         firstServersFirst: Bool = false,
                         salt: ((Int, [UInt8]) -> Void)? = nil,
                         sized: ((UInt64) throws -> Void)? = nil,
                         write: (UnsafeRawBufferPointer) throws -> Void) async throws -> (size: UInt64, sequenceNumber: UInt64) {
        guard cap.format == .mdmf, let readkey = cap.readkey else {
            throw GridError(.usage, "reading needs an MDMF read or write capability")
        }
        let si = cap.storageIndex
        let timeout = 4 * coding.stallTimeout
        let servers = try await servers(cap)
        func checked(_ held: [Held]) -> [ShareSource] {
            held.compactMap { h in
                guard let (head, layout) = try? MutableKeys.checkedHead(cap, h.bytes, number: h.number) else { return nil }
                return ShareSource(server: h.server, client: h.client, number: h.number, head: head, layout: layout, prefix: h.bytes)
            }
        }
        var heads: [ShareSource]
        let e = settings.encoding
        let firstAsk = max(e.needed, e.total - e.happy + e.needed)
        if firstServersFirst && firstAsk < servers.count {
            let first = Array(servers.prefix(firstAsk))
            let (held, unanswered) = await fetchHeadsReporting(si, servers: first)
            heads = checked(held)
            let versions = Set(heads.map { VersionID(sequenceNumber: $0.head.sequenceNumber, rootHash: $0.head.rootHash) })
            let agree = unanswered.isEmpty && heads.count == held.count && Set(heads.map(\.server)).count == first.count
                && versions.count == 1 && Set(heads.map(\.number)).count >= Int(heads[0].head.needed)
            if !agree { heads += checked(await fetchHeads(si, servers: Array(servers.dropFirst(firstAsk)))) }
        } else {
            heads = checked(await fetchHeads(si, servers: servers))
        }
        let byVersion: [VersionID: [ShareSource]] = Dictionary(grouping: heads) { (h: ShareSource) in
            VersionID(sequenceNumber: h.head.sequenceNumber, rootHash: h.head.rootHash)
        }
        func recoverable(_ v: VersionID) -> Bool {
            let shares = byVersion[v] ?? []
            return !shares.isEmpty && Set(shares.map { $0.number }).count >= shares[0].head.needed
        }
        let preferred = VersionID.inPreferredOrder(byVersion, number: \.number)
        guard let version = preferred.first(where: recoverable) else {
            // Nothing recoverable from the heads: the whole-share path names every failure.
            let r = try await read(cap)
            try sized?(UInt64(r.data.count))
            let start = Int(min(UInt64(r.data.count), offset))
            let end = length.map { Int(min(UInt64(r.data.count), UInt64(start) + $0)) } ?? r.data.count
            try r.data[start..<end].withUnsafeBytes { try write($0) }
            return (UInt64(r.data.count), r.sequenceNumber)
        }
        // Candidates: one per share number, servers that hold fewer shares first.
        var candidates: [ShareSource] = []
        let ofVersion: [ShareSource] = byVersion[version]!
        var perServer: [ServerRef: Int] = [:]
        for c in ofVersion { perServer[c.server, default: 0] += 1 }
        let ordered = ofVersion.sorted { (a: ShareSource, b: ShareSource) -> Bool in
            let (x, y) = (perServer[a.server] ?? 0, perServer[b.server] ?? 0)
            return x != y ? x < y : a.number < b.number
        }
        for c in ordered where !candidates.contains(where: { $0.number == c.number }) { candidates.append(c) }
        let first = candidates[0].head
        let (k, n) = (first.needed, first.total)
        let size = first.dataLength
        let g = MDMFShare.geometry(needed: k, segmentSize: first.segmentSize, dataLength: size)
        let segSize = Int(first.segmentSize)
        let stride = MDMFShare.saltSize + g.blockSize

        /// Loads and checks a share's block hash tree; false when it fails (reported).
        @Sendable func loadTree(_ s: ShareSource) async -> Bool {
            var read = s.cached(s.layout.treeAt, s.layout.end)
            if read == nil {
                read = try? await s.client.call(SlotReadRequest(storageIndex: si, shareNumbers: [s.number],
                                                                readVector: [ReadVector(offset: s.layout.treeAt, length: s.layout.end - s.layout.treeAt)]),
                                                timeout: timeout).reads[s.number]?.first
            }
            guard let nodes = read,
                  nodes.count == Int(s.layout.end - s.layout.treeAt), nodes.count % 32 == 0 else { return false }
            let all = (0..<(nodes.count / 32)).map { Array(nodes[($0 * 32)..<($0 * 32 + 32)]) }
            let padded = (all.count + 1) / 2
            let tree = HashTree(leaves: Array(all[(padded - 1)...].prefix(max(1, g.segments))))
            guard tree.nodes == all,
                  HashTree.rootFromLeaf(leafNode: HashTree.paddedCount(n) - 1 + s.number, leafHash: tree.root, hashes: s.head.shareHashChain) == version.rootHash
            else {
                await report(s, "block hash tree does not lead to the signed root hash")
                return false
            }
            s.leaves = Array(all[(padded - 1)..<(padded - 1 + g.segments)])
            return true
        }
        let changed = Locked(false)
        /// A share that failed a check is corrupt, unless another writer has replaced it
        /// with a newer version meanwhile (then it is only no longer this version's).
        @Sendable func report(_ s: ShareSource, _ why: String) async {
            let now = try? await s.client.call(SlotReadRequest(storageIndex: si, shareNumbers: [s.number],
                                                               readVector: [ReadVector(offset: 0, length: UInt64(MDMFShare.checkstringLength))]),
                                               timeout: timeout).reads[s.number]?.first
            if let now, now != MutableShareHeader.checkstring(s.head.signedPrefix) {
                changed.value = true
                return
            }
            try? await s.client.adviseCorruptShare(mutable: true, storageIndex: si, share: s.number, reason: why, timeout: 4 * coding.stallTimeout)
        }
        var chosen: [ShareSource] = []
        var spares = candidates
        func refill() async throws {
            while chosen.count < k {
                guard !spares.isEmpty else {
                    if changed.value { throw GridError(.conflict, "the file changed while it was being read (another writer); read it again") }
                    throw GridError(.unavailable, "only \(chosen.count) good shares of the file's version \(version.sequenceNumber) could be read; \(k) are needed")
                }
                // As many trees as shares still needed, all at once (one round trip, not k).
                let take = Array(spares.prefix(k - chosen.count))
                spares.removeFirst(take.count)
                let good = await withTaskGroup(of: (Int, Bool).self) { group -> Set<Int> in
                    for (i, s) in take.enumerated() { group.addTask { (i, await loadTree(s)) } }
                    var ok: Set<Int> = []
                    for await (i, loaded) in group where loaded { ok.insert(i) }
                    return ok
                }
                for (i, s) in take.enumerated() where good.contains(i) { chosen.append(s) }
            }
        }
        try await refill()
        // Told only now: a reader that meets another writer's change before this point
        // can start again from nothing (Filesystem.download does, a few times).
        try sized?(size)

        let end = length.map { min(size, offset + $0) } ?? size
        guard offset < end else { return (size, version.sequenceNumber) }
        let firstSeg = Int(offset / UInt64(segSize)), lastSeg = Int((end - 1) / UInt64(segSize))
        let batch = max(1, (4 << 20) / stride)

        /// The share data of segments [s0, s1) from each source (nil: it failed).
        @Sendable func fetch(_ sources: [ShareSource], _ s0: Int, _ s1: Int) async -> [Int: [UInt8]] {
            let from = s0 * stride
            let to = s1 == g.segments ? MDMFShare.shareDataCount(needed: k, segmentSize: first.segmentSize, dataLength: size) : s1 * stride
            return await withTaskGroup(of: (Int, [UInt8]?).self) { group in
                for s in sources {
                    group.addTask {
                        if let r = s.cached(s.layout.dataAt + UInt64(from), s.layout.dataAt + UInt64(to)) { return (s.number, r) }
                        let r = try? await s.client.call(SlotReadRequest(storageIndex: si, shareNumbers: [s.number],
                                                                         readVector: [ReadVector(offset: s.layout.dataAt + UInt64(from), length: UInt64(to - from))]),
                                                         timeout: timeout).reads[s.number]?.first
                        return (s.number, r?.count == to - from ? r : nil)
                    }
                }
                var out: [Int: [UInt8]] = [:]
                for await (num, b) in group { if let b { out[num] = b } }
                return out
            }
        }
        let rs = try ReedSolomon(k: k, n: n)
        var seg = firstSeg
        // Batches are fetched ahead (a few in flight) while earlier ones are checked and decoded.
        var ahead: [(s0: Int, task: Task<[Int: [UInt8]], Never>)] = []
        var nextStart = firstSeg
        func prefetch() {
            while ahead.count < 3 && nextStart <= lastSeg {
                let (sources, s0, s1) = (chosen, nextStart, min(lastSeg + 1, nextStart + batch))
                ahead.append((s0, Task { await fetch(sources, s0, s1) }))
                nextStart = s1
            }
        }
        prefetch()
        while seg <= lastSeg {
            let s1 = min(lastSeg + 1, seg + batch)
            var data = await ahead.removeFirst().task.value
            prefetch()
            // Shares chosen since this batch was asked for are read now.
            let absent = chosen.filter { data[$0.number] == nil }
            if !absent.isEmpty { data.merge(await fetch(absent, seg, s1)) { $1 } }
            // Check every block of the batch; replace failed shares and read again.
            while true {
                var bad: [ShareSource] = []
                for s in chosen {
                    guard let d = data[s.number] else { bad.append(s); continue }
                    for i in seg..<s1 {
                        let at = (i - seg) * stride
                        let len = MDMFShare.saltSize + (i == g.segments - 1 ? g.tailBlockSize : g.blockSize)
                        if d[at..<(at + len)].withUnsafeBytes({ TahoeHash.blockHash($0) }) != s.leaves[i] {
                            await report(s, "block \(i) (or its salt) does not match the block hash tree")
                            bad.append(s)
                            break
                        }
                    }
                }
                if bad.isEmpty { break }
                chosen.removeAll { c in bad.contains { $0 === c } }
                for b in bad { data[b.number] = nil }
                let before = Set(chosen.map(\.number))
                try await refill()
                let added = chosen.filter { !before.contains($0.number) }
                data.merge(await fetch(added, seg, s1)) { $1 }
            }
            for i in seg..<s1 {
                let at = (i - seg) * stride
                let last = i == g.segments - 1
                let blockSize = last ? g.tailBlockSize : g.blockSize
                let segLen = last ? Int(size) - i * segSize : segSize
                let blocks = chosen.map { s in (number: s.number, block: Array(data[s.number]![(at + MDMFShare.saltSize)..<(at + MDMFShare.saltSize + blockSize)])) }
                var plain = try rebuildSegment(blocks.sorted { $0.number < $1.number }, rs: rs, blockSize: blockSize, length: segLen, simdPath: coding.simdPath)
                let segmentSalt = Array(data[chosen[0].number]![at..<(at + MDMFShare.saltSize)])
                salt?(i, segmentSalt)
                let aes = try AESCTR(key: TahoeHash.sskDataKey(iv: segmentSalt, readkey: readkey))
                plain.withUnsafeMutableBytes { aes.apply(in: $0) }
                // Only the part of the segment inside the range.
                let segStart = UInt64(i * segSize)
                let lo = Int(max(offset, segStart) - segStart), hi = Int(min(end, segStart + UInt64(segLen)) - segStart)
                try plain[lo..<hi].withUnsafeBytes { try write($0) }
            }
            seg = s1
        }
        return (size, version.sequenceNumber)
    }
}

extension MutableFileClient {
    /// The first 2167 bytes (an MDMF share's head: everything but its blocks and tree) of
    /// every share every server holds of `si`, unchecked.
    func fetchHeads(_ si: [UInt8], servers: [ServerRef]) async -> [Held] {
        await fetchHeadsReporting(si, servers: servers).held
    }

    /// `fetchHeads`, with the servers that did not answer.
    func fetchHeadsReporting(_ si: [UInt8], servers: [ServerRef]) async -> (held: [Held], unanswered: [ServerRef]) {
        // The head, and 16 KiB beyond it: a small file's shares whole, in the same round trip.
        await readPrefixes(si, servers: servers, length: MDMFShare.shareDataOffset + (16 << 10), timeout: 4 * coding.stallTimeout)
    }

    /// The first `length` bytes of every share every server holds of `si` (one slot_readv
    /// per server, all at once), unchecked; and the servers that did not answer.
    func readPrefixes(_ si: [UInt8], servers: [ServerRef], length: Int, timeout: Double) async -> (held: [Held], unanswered: [ServerRef]) {
        await withTaskGroup(of: (ServerRef, [Held]?).self) { group in
            for s in servers {
                group.addTask { [pool] in
                    guard let c = try? await pool.client(for: s),
                          let reads = try? await c.call(SlotReadRequest(storageIndex: si, shareNumbers: [],
                                                                        readVector: [ReadVector(offset: 0, length: UInt64(length))]),
                                                        timeout: timeout).reads else { return (s, nil) }
                    return (s, reads.compactMap { n, r in r.first.map { Held(server: s, client: c, number: n, bytes: $0) } })
                }
            }
            var held: [Held] = []
            var unanswered: [ServerRef] = []
            for await (s, h) in group {
                if let h { held += h } else { unanswered.append(s) }
            }
            return (held, unanswered)
        }
    }
}

// MARK: Partial update

extension MutableFileClient {
    /// Writes `bytes` at `offset` of an MDMF file as its next version, changing only the
    /// segments they fall in: those segments are read (from k shares), patched, encrypted
    /// under new salts and encoded again; every share's block hash tree gets the new
    /// leaves, the share hash tree a new root, which is signed with the next sequence
    /// number; then each server gets, in one test-and-write (applied in place through its
    /// journal), the share's new head, its new blocks for those segments and its new tree.
    /// Nothing else of the file is read or sent. Returns nil when this cannot be done in
    /// place (the write reaches past the end, not every share of the version is at hand,
    /// or the change is too large for one message per server): the caller then writes
    /// the whole version.
    func updateInPlaceMDMF(_ cap: MutableCapability, offset: UInt64, bytes: [UInt8]) async throws -> WriteResult? {
        guard let readkey = cap.readkey, cap.writekey != nil, !bytes.isEmpty else { return nil }
        _ = readkey
        let si = cap.storageIndex
        let timeout = max(30, 4 * coding.stallTimeout)
        let servers = try await servers(cap)
        let heads = await fetchHeads(si, servers: servers)
        var checked: [(held: Held, head: MDMFShare, layout: MDMFShare.Layout)] = []
        for h in heads {
            guard let (head, layout) = try? MutableKeys.checkedHead(cap, h.bytes, number: h.number) else { return nil }
            checked.append((h, head, layout))
        }
        // Every share held must be of one version, and all N share numbers present.
        guard let first = checked.first?.head,
              checked.allSatisfy({ $0.head.sequenceNumber == first.sequenceNumber && $0.head.rootHash == first.rootHash }),
              Set(checked.map(\.held.number)) == Set(0..<first.total), first.sequenceNumber < UInt64.max,
              offset + UInt64(bytes.count) <= first.dataLength else { return nil }
        let (k, n, segSize) = (first.needed, first.total, Int(first.segmentSize))
        let g = MDMFShare.geometry(needed: k, segmentSize: first.segmentSize, dataLength: first.dataLength)
        let s0 = Int(offset / UInt64(segSize)), s1 = Int((offset + UInt64(bytes.count) - 1) / UInt64(segSize))
        let stride = MDMFShare.saltSize + g.blockSize
        // Only the tree nodes on the changed segments' paths (and their children) are read,
        // checked and rewritten; one message per server carries them, the head and the blocks.
        let p = HashTree.paddedCount(max(1, g.segments))
        let treeBytes = Int(checked[0].layout.end - checked[0].layout.treeAt)
        guard treeBytes == (2 * p - 1) * 32 else { return nil }
        let (changedNodes, neededNodes) = HashTree.pathNodes(leaves: Array(s0...s1), paddedLeaves: p)
        let perShare = MDMFShare.shareDataOffset + changedNodes.count * 48 + (s1 - s0 + 1) * stride
        let sharesPerServer = Dictionary(grouping: checked, by: \.held.server).values.map(\.count).max() ?? 1
        guard perShare * sharesPerServer < maxChunk, neededNodes.count <= 1000 else { return nil }
        let order = neededNodes.sorted()
        var known: [Int: [Int: [UInt8]]] = [:]
        await withTaskGroup(of: (Int, [Int: [UInt8]]?).self) { group in
            for c in checked {
                group.addTask {
                    guard let reads = try? await c.held.client.call(SlotReadRequest(storageIndex: si, shareNumbers: [c.held.number],
                                                                                     readVector: order.map { ReadVector(offset: c.layout.treeAt + UInt64($0 * 32), length: 32) }),
                                                                     timeout: timeout).reads[c.held.number], reads.count == order.count
                    else { return (c.held.number, nil) }
                    return (c.held.number, Dictionary(uniqueKeysWithValues: zip(order, reads)))
                }
            }
            for await (num, nodes) in group { if let nodes { known[num] = nodes } }
        }
        // Each share's stored root must lead to the signed root through its chain.
        guard known.count == n, checked.allSatisfy({ c in
            known[c.held.number]![0].map { HashTree.rootFromLeaf(leafNode: HashTree.paddedCount(n) - 1 + c.held.number, leafHash: $0,
                                                                 hashes: c.head.shareHashChain) == first.rootHash } ?? false
        }) else { return nil }

        // The segments' current plaintext, patched.
        let lo = UInt64(s0 * segSize), hi = min(first.dataLength, UInt64((s1 + 1) * segSize))
        var plain: [UInt8] = []
        plain.reserveCapacity(Int(hi - lo))
        _ = try await readMDMF(cap, offset: lo, length: hi - lo) { plain.append(contentsOf: $0) }
        guard plain.count == Int(hi - lo) else { return nil }
        plain.replaceSubrange(Int(offset - lo)..<(Int(offset - lo) + bytes.count), with: bytes)

        // Encode the changed segments under new salts; new leaves, trees, root, signature.
        let key = try MutableKeys.decryptPrivateKey(first.encryptedPrivateKey, for: cap)
        let enc = try MDMFStreamEncoder(privateKey: key, sequenceNumber: first.sequenceNumber + 1, needed: k, total: n,
                                        dataLength: first.dataLength, salts: [[UInt8]](repeating: [UInt8](repeating: 0, count: 16), count: g.segments),
                                        simdPath: coding.simdPath)
        let rowSize = (s1 - s0 + 1) * stride
        var rows = [UInt8](repeating: 0, count: n * rowSize)
        var rowLength = 0
        var newLeaves = [[Int: [UInt8]]](repeating: [:], count: n)
        for seg in s0...s1 {
            let r = enc.plaintextRange(segment: seg)
            let at = (seg - s0) * stride
            let salt = SecureRandom.bytes(MDMFShare.saltSize)
            let leaves = try plain.withUnsafeBytes { p in
                try rows.withUnsafeMutableBytes { out in
                    try enc.encodeSegment(seg, plaintext: UnsafeRawBufferPointer(rebasing: p[(r.lowerBound - Int(lo))..<(r.upperBound - Int(lo))]),
                                          salt: salt, into: (0..<n).map { out.baseAddress! + $0 * rowSize }, at: at)
                }
            }
            for i in 0..<n { newLeaves[i][seg] = leaves[i] }
            rowLength = at + MDMFShare.saltSize + (seg == g.segments - 1 ? g.tailBlockSize : g.blockSize)
        }
        var changedTree: [(nodes: [Int: [UInt8]], root: [UInt8])] = []
        for i in 0..<n {
            // A path node that is not the hash of its children: the stored tree is damaged.
            guard let r = HashTree.replacingLeaves(known[i]!, paddedLeaves: p, with: newLeaves[i]) else { return nil }
            changedTree.append(r)
        }
        let shareTree = HashTree(leaves: changedTree.map(\.root))
        var shares = (0..<n).map { i in
            MDMFShare(sequenceNumber: first.sequenceNumber + 1, rootHash: shareTree.root, needed: k, total: n, segmentSize: first.segmentSize,
                      dataLength: first.dataLength, encryptedPrivateKey: first.encryptedPrivateKey,
                      shareHashChain: Dictionary(uniqueKeysWithValues: shareTree.neededHashes(leaf: i, includeLeaf: false).map { ($0, shareTree[$0]) }),
                      signature: [], verificationKey: first.verificationKey, blocks: [], blockHashTree: [])
        }
        let signature = try key.sign(shares[0].signedPrefix)
        for i in shares.indices { shares[i].signature = signature }
        let dataCount = MDMFShare.shareDataCount(needed: k, segmentSize: first.segmentSize, dataLength: first.dataLength)

        // One test-and-write per server: the old checkstring must still be there.
        var writes: [ServerRef: [Int: ShareWrite]] = [:]
        for c in checked {
            let i = c.held.number
            let head = shares[i].serializedHead(dataCount: dataCount, treeCount: treeBytes)
            let blocks = Array(rows[(i * rowSize)..<(i * rowSize + rowLength)])
            let nodes = changedTree[i].nodes.sorted { $0.key < $1.key }.map { WriteVector(offset: c.layout.treeAt + UInt64($0.key * 32), data: $0.value) }
            writes[c.held.server, default: [:]][i] = ShareWrite(tests: [Self.test(c.held.server, i, existing: heads)],
                                                               writes: [WriteVector(offset: 0, data: head),
                                                                        WriteVector(offset: c.layout.dataAt + UInt64(s0 * stride), data: blocks)] + nodes)
        }
        let outcome = await commit(cap, writes)
        return try finishPublish(cap, sequenceNumber: first.sequenceNumber + 1, outcome)
    }
}

// MARK: Verifying one MDMF share

extension MutableFileClient {
    /// Checks one MDMF share where it lies, without holding it whole: its head (`h.bytes`:
    /// parsed, signature and key), its block hash tree (every node, and its root through
    /// the share's chain to the signed root), then every block in batches against the
    /// tree. Returns the share's version; throws a `ShareFailure` (corrupt, with the part
    /// and segment, or unavailable when the server stops answering).
    func verifyMDMFShare(_ cap: MutableCapability, _ h: Held) async throws -> VersionID {
        let si = cap.storageIndex
        let timeout = 4 * coding.stallTimeout
        let (head, layout) = try MutableKeys.checkedHead(cap, h.bytes, number: h.number)
        func read(_ from: UInt64, _ count: UInt64) async throws -> [UInt8] {
            let got: [UInt8]?
            do {
                got = try await h.client.call(SlotReadRequest(storageIndex: si, shareNumbers: [h.number],
                                                              readVector: [ReadVector(offset: from, length: count)]), timeout: timeout).reads[h.number]?.first
            } catch { throw ShareFailure.unavailable("\(h.server.nickname): \(error)") }
            guard let got, got.count == Int(count) else {
                throw ShareFailure.corrupt(.length, "the share ends before byte \(from + count), where its offsets say it goes")
            }
            return got
        }
        let raw = try await read(layout.treeAt, layout.end - layout.treeAt)
        let nodes = (0..<(raw.count / 32)).map { Array(raw[($0 * 32)..<($0 * 32 + 32)]) }
        let g = MDMFShare.geometry(needed: head.needed, segmentSize: head.segmentSize, dataLength: head.dataLength)
        let padded = (nodes.count + 1) / 2
        let tree = HashTree(leaves: Array(nodes[(padded - 1)...].prefix(max(1, g.segments))))
        guard tree.nodes == nodes else { throw ShareFailure.corrupt(.blockHashTree, "the block hash tree's nodes do not hash to each other") }
        guard HashTree.rootFromLeaf(leafNode: HashTree.paddedCount(head.total) - 1 + h.number, leafHash: tree.root,
                                    hashes: head.shareHashChain) == head.rootHash else {
            throw ShareFailure.corrupt(.shareHashChain, "share hash chain does not lead to the signed root hash")
        }
        let stride = MDMFShare.saltSize + g.blockSize
        let batch = max(1, (4 << 20) / stride)
        var seg = 0
        while seg < g.segments {
            let end = min(g.segments, seg + batch)
            let to = end == g.segments ? MDMFShare.shareDataCount(needed: head.needed, segmentSize: head.segmentSize, dataLength: head.dataLength) : end * stride
            let data = try await read(layout.dataAt + UInt64(seg * stride), UInt64(to - seg * stride))
            for i in seg..<end {
                let at = (i - seg) * stride
                let len = MDMFShare.saltSize + (i == g.segments - 1 ? g.tailBlockSize : g.blockSize)
                guard data[at..<(at + len)].withUnsafeBytes({ TahoeHash.blockHash($0) }) == nodes[padded - 1 + i] else {
                    throw ShareFailure.corrupt(.block(segment: i), "block \(i) (or its salt) does not match the block hash tree")
                }
            }
            seg = end
        }
        return VersionID(sequenceNumber: head.sequenceNumber, rootHash: head.rootHash)
    }
}
