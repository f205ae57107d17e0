import GridCodec
import GridCrypto
import GridFormat

/// Rebuilds a CHK file from any k of its shares, checking every hash on the way (through
/// `CHKShareValidator`): the UEB against the capability, each share's block hash tree
/// against the share hash tree root in the UEB, every block against its leaf, and every
/// ciphertext segment against the crypttext hash tree. A share that fails a check is set
/// aside (its number and typed failure are kept in `badShares`) and another takes its place.
///
/// With a read capability it writes plaintext; with only a verify capability it rebuilds
/// and checks the ciphertext (what a verifier needs), since the key is not known.
public final class CHKDecoder {
    public let verifier: CHKVerifierCapability
    /// The AES key, or nil when decoding from a verify capability (ciphertext out).
    public let key: [UInt8]?
    public let validator: CHKShareValidator
    public let simdPath: SIMDPath
    public let threads: Int
    /// Shares set aside, with the reason.
    public private(set) var badShares: [Int: ShareFailure] = [:]
    /// The file's verified shape, once `prepare()` has run.
    public private(set) var shape: CHKFileShape?
    public var uriExtension: URIExtension? { shape?.uriExtension }

    var candidates: [ShareReader]
    var checked: [Int: ValidatedShare] = [:]
    var ctLeaves: [[UInt8]] = []
    var rs: ReedSolomon!
    let readahead: Int
    /// At most this many bytes of segments are read ahead, whatever `readahead` says (it
    /// is chosen before the file's real segment size is known).
    public var readaheadBytes = 64 << 20
    /// How many checked shares the segments are read from: k (the default) reads every
    /// segment from the same k; more spreads them, each segment from k of that many in
    /// turn, so more connections carry data at once. For distant servers, where one
    /// connection is limited to a window per round trip, not by the link.
    public var width: Int
    /// Called for each share set aside: the reader and why (hash mismatches and I/O errors alike).
    public var onBadShare: ((ShareReader, ShareFailure) -> Void)?
    /// Readers that delivered at least one verified block.
    public private(set) var usedReaders: [ObjectIdentifier: ShareReader] = [:]
    var reported: Set<ObjectIdentifier> = []
    /// Readers already checked (or set aside): never read twice.
    var tried: Set<ObjectIdentifier> = []
    /// Asked once, when the shares given run out before k are usable: more readers (a
    /// network client asks the servers it had not asked yet). Runs on the decoding thread.
    public var moreShares: (() -> [ShareReader])?

    /// Adds `moreShares`' readers (primary shares first) once; false when there are none.
    func widen() -> Bool {
        guard let more = moreShares?() else { return false }
        moreShares = nil
        let k = verifier.needed
        candidates += more.filter { $0.shareNumber < k } + more.filter { $0.shareNumber >= k }
        return !more.isEmpty
    }

    /// `shares` may hold any subset of the n shares, in any order; the same share number
    /// twice is allowed (the second copy is a spare).
    ///
    /// Shares 0..k-1 are tried first (they need no decoding), then the others; within each
    /// group, readers keep the order given (a network client lists the fastest servers first).
    /// `readahead` is how many segments ahead the readers are told to prefetch.
    public init(verifier: CHKVerifierCapability, key: [UInt8]?, shares: [ShareReader], simdPath: SIMDPath = .best,
                threads: Int = 2, readahead: Int = 0) {
        self.verifier = verifier
        self.key = key
        validator = CHKShareValidator(verifier)
        self.simdPath = simdPath
        self.threads = max(1, threads)
        self.readahead = readahead
        let k = verifier.needed
        width = k
        let primary = shares.enumerated().filter { $0.element.shareNumber < k }
            .sorted { ($0.element.shareNumber, $0.offset) < ($1.element.shareNumber, $1.offset) }.map(\.element)
        candidates = primary + shares.filter { $0.shareNumber >= k }
    }

    /// Decodes to plaintext.
    public convenience init(capability: CHKCapability, shares: [ShareReader], simdPath: SIMDPath = .best, threads: Int = 2,
                            readahead: Int = 0) {
        self.init(verifier: capability.verifier, key: capability.key, shares: shares, simdPath: simdPath, threads: threads,
                  readahead: readahead)
    }

    /// The first reader of each share number in the order they will be tried, up to
    /// `count`: the ones a network reader should start fetching metadata for at once.
    public func firstCandidates(_ count: Int) -> [ShareReader] {
        var seen: Set<Int> = []
        return Array(candidates.filter { seen.insert($0.shareNumber).inserted }.prefix(count))
    }

    func markBad(_ share: ShareReader, _ why: ShareFailure) {
        if reported.insert(ObjectIdentifier(share)).inserted { onBadShare?(share, why) }
        tried.insert(ObjectIdentifier(share))
        if badShares[share.shareNumber] == nil { badShares[share.shareNumber] = why }
        checked[share.shareNumber] = nil
    }

    /// A one-line summary of the shares set aside, for messages.
    public var badShareSummary: String { ImmutableError.summary(badShares) }

    func notEnough(_ have: Int) -> ImmutableError {
        .notEnoughShares(needed: verifier.needed, usable: have, failures: badShares)
    }

    /// Finds a UEB that matches the capability and sets up the geometry. Idempotent.
    public func prepare() throws {
        if shape != nil { return }
        repeat {
            for r in candidates where badShares[r.shareNumber] == nil && !tried.contains(ObjectIdentifier(r)) {
                do {
                    let s = try validator.fileShape(from: r)
                    rs = try ReedSolomon(k: s.geometry.k, n: s.geometry.n)
                    shape = s
                    return
                } catch let failure as ShareFailure {
                    markBad(r, failure)
                }
            }
        } while widen()
        throw notEnough(0)
    }

    /// The crypttext hash tree leaves, from the first share whose tree matches the UEB.
    func loadCrypttextLeaves() throws {
        if !ctLeaves.isEmpty { return }
        for share in checkedInOrder() {
            do {
                ctLeaves = try validator.crypttextLeaves(share, shape: shape!)
                return
            } catch {
                markBad(share.reader, ShareFailure(error, part: .crypttextHashTree))
            }
        }
        throw notEnough(checked.count)
    }

    func checkedInOrder() -> [ValidatedShare] { checked.keys.sorted().map { checked[$0]! } }

    /// The share numbers the segments rotate over when `width` is above k, in slot order.
    /// A share set aside is replaced in its own slot by a checked share not in rotation, so
    /// the other slots keep their segments (and the blocks already requested for them).
    var slots: [Int] = []

    /// The k shares segment `seg` is read from: the first k checked ones, or with `width`
    /// above k, k consecutive slots of `width`, starting k further on each segment.
    func activeShares(_ seg: Int, _ list: [ValidatedShare]) -> [ValidatedShare] {
        let k = verifier.needed
        guard min(width, list.count) > k else { return Array(list.prefix(k)) }
        var spare = list.map { $0.reader.shareNumber }.filter { !slots.contains($0) }
        slots = slots.compactMap { checked[$0] != nil ? $0 : (spare.isEmpty ? nil : spare.removeFirst()) }
        while slots.count < min(width, list.count), !spare.isEmpty { slots.append(spare.removeFirst()) }
        let m = slots.count
        guard m > k else { return Array(list.prefix(k)) }
        let start = (seg % m) * k % m
        return (0..<k).map { checked[slots[(start + $0) % m]]! }
    }

    /// Makes sure at least k checked shares are on hand (up to `width` when it is more),
    /// checking more candidates as needed.
    func ensureChecked() throws {
        let k = verifier.needed
        let want = max(k, width)
        repeat {
            for r in candidates where checked.count < want {
                // Each reader is checked once; a second copy of a share number set aside is a spare.
                if checked[r.shareNumber] != nil || tried.contains(ObjectIdentifier(r)) { continue }
                tried.insert(ObjectIdentifier(r))
                do {
                    checked[r.shareNumber] = try validator.validate(r, shape: shape!)
                    badShares[r.shareNumber] = nil
                } catch {
                    markBad(r, ShareFailure(error))
                }
            }
        } while checked.count < k && widen()
        if checked.count < k { throw notEnough(checked.count) }
    }

    /// Writes bytes [offset, offset+length) of the plaintext (the whole file by default) to `sink`.
    public func decode(to sink: PlaintextSink, offset: UInt64 = 0, length: UInt64? = nil,
                       progress: ((UInt64) -> Void)? = nil) throws {
        try prepare()
        let g = shape!.geometry
        let end = min(g.size, offset.addingReportingOverflow(length ?? g.size).overflow ? g.size : offset + (length ?? g.size))
        guard offset <= g.size else { throw ImmutableError.offsetPastEnd(offset: offset, size: g.size) }
        if offset == end { return }
        try ensureChecked()
        try loadCrypttextLeaves()
        let k = g.k
        let aheadSegments = readahead > 0 ? max(1, min(readahead, readaheadBytes / max(1, g.segmentSize))) : 0
        let firstSeg = Int(offset / UInt64(g.segmentSize))
        let lastSeg = Int((end - 1) / UInt64(g.segmentSize))

        let segBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: g.segmentSize, alignment: 64)
        defer { segBuf.deallocate() }
        let spareBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: k * g.blockSize, alignment: 64)
        defer { spareBuf.deallocate() }
        let segBase = segBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let spareBase = spareBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let aes = try key.map { try AESCTR(key: $0, offset: UInt64(firstSeg) * UInt64(g.segmentSize)) }
        let failures = UnsafeMutableBufferPointer<ShareFailure?>.allocate(capacity: k)
        failures.initialize(repeating: nil)
        defer { failures.deinitialize(); failures.deallocate() }

        for seg in firstSeg...lastSeg {
            let blen = g.blockLength(seg)
            let segLen = g.segmentLength(seg)
            // Choose k checked shares, lowest numbers first, and fetch + verify their blocks.
            var active: [ValidatedShare] = []
            while true {
                try ensureChecked()
                let list = checkedInOrder()
                active = activeShares(seg, list)
                // Data shares read straight into their place in the segment; others into spares.
                func dest(_ pos: Int) -> UnsafeMutableRawBufferPointer {
                    let s = active[pos].reader.shareNumber
                    let p = s < k ? segBase + s * blen : spareBase + pos * g.blockSize
                    return UnsafeMutableRawBufferPointer(start: p, count: blen)
                }
                let shares = active
                let validator = validator
                if aheadSegments > 0 {
                    // This segment's blocks too: every share's read starts now, not when a
                    // thread is free to wait for it.
                    let upTo = min(lastSeg, seg + aheadSegments)
                    var ranges: [Int: (share: ValidatedShare, ranges: [(offset: UInt64, length: Int)])] = [:]
                    for s in seg...upTo {
                        for share in activeShares(s, list) {
                            ranges[share.reader.shareNumber, default: (share, [])].ranges.append((share.blockOffset(s), g.blockLength(s)))
                        }
                    }
                    for (_, r) in ranges.sorted(by: { $0.key < $1.key }) { r.share.reader.prefetch(r.ranges) }
                }
                runJobs(k, threads: threads) { pos in
                    let share = shares[pos]
                    let buf = dest(pos)
                    do {
                        try share.reader.read(at: share.blockOffset(seg), into: buf)
                    } catch {
                        failures[pos] = ShareFailure(error, part: .block(segment: seg))
                        return
                    }
                    do {
                        try validator.checkBlock(UnsafeRawBufferPointer(buf), of: share, segment: seg)
                    } catch {
                        failures[pos] = ShareFailure(error, part: .block(segment: seg))
                    }
                }
                var anyBad = false
                for pos in 0..<k {
                    if let why = failures[pos] {
                        markBad(active[pos].reader, why)
                        failures[pos] = nil
                        anyBad = true
                    }
                }
                if !anyBad { break }
            }
            for s in active { usedReaders[ObjectIdentifier(s.reader)] = s.reader }
            // Rebuild missing data blocks from the others.
            let have = Set(active.map { $0.reader.shareNumber })
            let missing = (0..<k).filter { !have.contains($0) }
            if !missing.isEmpty {
                var avail: [UnsafePointer<UInt8>] = []
                var idx: [Int] = []
                for (pos, s) in active.enumerated() {
                    let sn = s.reader.shareNumber
                    avail.append(UnsafePointer(sn < k ? segBase + sn * blen : spareBase + pos * g.blockSize))
                    idx.append(sn)
                }
                try rs.reconstruct(blockSize: blen, available: avail, indices: idx, missing: missing,
                                   outputs: missing.map { segBase + $0 * blen }, path: simdPath)
            }
            let ct = UnsafeMutableRawBufferPointer(rebasing: segBuf[0..<segLen])
            guard TahoeHash.crypttextSegmentHash(UnsafeRawBufferPointer(ct)) == ctLeaves[seg] else {
                throw ImmutableError.segmentMismatch(segment: seg)
            }
            aes?.apply(in: ct)
            let segStart = UInt64(seg) * UInt64(g.segmentSize)
            let from = Int(max(offset, segStart) - segStart)
            let to = Int(min(end, segStart + UInt64(segLen)) - segStart)
            try sink.write(UnsafeRawBufferPointer(rebasing: segBuf[from..<to]))
            progress?(segStart + UInt64(to) - offset)
        }
    }
}

/// Decodes a LIT or CHK capability from shares; LIT needs none.
public func decodeCapability(
    _ cap: Capability, shares: [ShareReader], to sink: PlaintextSink, simdPath: SIMDPath = .best, threads: Int = 2
) throws -> CHKDecoder? {
    switch cap {
    case let .lit(l):
        try l.data.withUnsafeBytes { try sink.write($0) }
        return nil
    case let .chk(c):
        let d = CHKDecoder(capability: c, shares: shares, simdPath: simdPath, threads: threads)
        try d.decode(to: sink)
        return d
    case .chkVerifier:
        throw ImmutableError.needsReadCapability
    }
}
