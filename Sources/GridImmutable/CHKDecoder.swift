import GridCodec
import GridCrypto
import GridFormat

/// What the decoder knows about one share once it has checked it.
final class CheckedShare {
    let reader: ShareReader
    let layout: ShareLayout
    /// Block hashes (leaves of this share's block hash tree), verified against the share root.
    let blockLeaves: [[UInt8]]

    init(reader: ShareReader, layout: ShareLayout, blockLeaves: [[UInt8]]) {
        self.reader = reader
        self.layout = layout
        self.blockLeaves = blockLeaves
    }
}

/// Rebuilds a CHK file from any k of its shares, checking every hash on the way: the
/// UEB against the capability, each share's block hash tree against the share hash
/// tree root in the UEB, every block against its leaf, and every ciphertext segment
/// against the crypttext hash tree. A share that fails a check is set aside (its
/// number and reason are kept in `badShares`) and another takes its place.
public final class CHKDecoder {
    public let capability: CHKCapability
    public let simdPath: SIMDPath
    public let threads: Int
    /// Shares set aside, with the reason.
    public private(set) var badShares: [Int: String] = [:]
    /// The verified URI extension block, once `prepare()` has run.
    public private(set) var uriExtension: URIExtension?

    var candidates: [ShareReader]
    var checked: [Int: CheckedShare] = [:]
    var ctLeaves: [[UInt8]] = []
    var geometry: CHKGeometry!
    var expectedLayout: ShareLayout!
    var rs: ReedSolomon!

    /// `shares` may hold any subset of the n shares, in any order; the same share number
    /// twice is allowed (the second copy is a spare).
    ///
    /// Shares 0..k-1 are tried first (they need no decoding), then the others; within each
    /// group, readers keep the order given (a network client lists the fastest servers first).
    /// `readahead` is how many segments ahead the readers are told to prefetch.
    public init(capability: CHKCapability, shares: [ShareReader], simdPath: SIMDPath = .best, threads: Int = 2,
                readahead: Int = 0) {
        self.capability = capability
        self.simdPath = simdPath
        self.threads = max(1, threads)
        self.readahead = readahead
        let k = capability.needed
        let primary = shares.enumerated().filter { $0.element.shareNumber < k }
            .sorted { ($0.element.shareNumber, $0.offset) < ($1.element.shareNumber, $1.offset) }.map(\.element)
        candidates = primary + shares.filter { $0.shareNumber >= k }
    }

    let readahead: Int
    /// Called for each share set aside: the reader and why (hash mismatches and I/O errors alike).
    public var onBadShare: ((ShareReader, String) -> Void)?
    /// Readers that delivered at least one verified block.
    public private(set) var usedReaders: [ObjectIdentifier: ShareReader] = [:]

    func markBad(_ share: ShareReader, _ why: String) {
        if reported.insert(ObjectIdentifier(share)).inserted { onBadShare?(share, why) }
        tried.insert(ObjectIdentifier(share))
        if badShares[share.shareNumber] == nil { badShares[share.shareNumber] = why }
        checked[share.shareNumber] = nil
    }

    /// A one-line summary of the shares set aside, for error messages.
    public var badShareSummary: String {
        badShares.keys.sorted().map { "share \($0): \(badShares[$0]!)" }.joined(separator: "; ")
    }

    func notEnough(_ have: Int) -> ImmutableError {
        var m = "not enough good shares to decode: need \(capability.needed), have \(have)"
        if !badShares.isEmpty { m += " (" + badShareSummary + ")" }
        return ImmutableError(m)
    }

    func readUEB(_ r: ShareReader) throws -> (ShareLayout, [UInt8]) {
        let head = try r.read(at: 0, length: Int(min(0x44, r.size)))
        let layout = try ShareLayout(parsing: head)
        let lenBytes = try r.read(at: layout.uriExtensionOffset, length: layout.uebLengthFieldSize)
        let len = lenBytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard len <= 1 << 16 else { throw ImmutableError("URI extension block length \(len) is absurd") }
        let ueb = try r.read(at: layout.uriExtensionOffset + UInt64(layout.uebLengthFieldSize), length: Int(len))
        return (layout, ueb)
    }

    /// Finds a UEB that matches the capability and sets up the geometry. Idempotent.
    public func prepare() throws {
        if uriExtension != nil { return }
        for r in candidates where badShares[r.shareNumber] == nil {
            do {
                let (_, uebBytes) = try readUEB(r)
                guard TahoeHash.uriExtensionHash(uebBytes) == capability.uebHash else {
                    markBad(r, "URI extension block does not match the capability's hash")
                    continue
                }
                let ueb = try URIExtension(parsing: uebBytes)
                guard ueb.neededShares == capability.needed, ueb.totalShares == capability.total,
                      ueb.size == capability.size
                else {
                    throw ImmutableError(
                        "the capability says \(capability.needed)-of-\(capability.total), \(capability.size) bytes, "
                            + "but its URI extension block says \(ueb.neededShares)-of-\(ueb.totalShares), \(ueb.size) bytes")
                }
                let g = try CHKGeometry(size: ueb.size, k: ueb.neededShares, n: ueb.totalShares, maxSegmentSize: ueb.segmentSize)
                guard g.segmentSize == ueb.segmentSize else {
                    throw ImmutableError("URI extension block has an impossible segment size \(ueb.segmentSize)")
                }
                geometry = g
                let numShareHashes = HashTree.neededHashes(
                    leaf: 0, firstLeafIndex: HashTree.paddedCount(g.n) - 1, includeLeaf: true).count
                expectedLayout = ShareLayout(
                    blockSize: g.blockSize, dataSize: g.shareDataSize, numSegments: g.numSegments,
                    numShareHashes: numShareHashes)
                rs = try ReedSolomon(k: g.k, n: g.n)
                uriExtension = ueb
                return
            } catch let e as ImmutableError where e.message.hasPrefix("the capability says") {
                throw e
            } catch {
                markBad(r, "\(error)")
            }
        }
        throw notEnough(0)
    }

    /// Checks one share's header, block hash tree and share hash chain.
    func check(_ r: ShareReader) throws -> CheckedShare {
        let g = geometry!
        let ueb = uriExtension!
        guard r.shareNumber >= 0, r.shareNumber < g.n else {
            throw ImmutableError("share number \(r.shareNumber) is outside 0..<\(g.n)")
        }
        let (layout, uebBytes) = try readUEB(r)
        // Either layout version may hold any file; the section sizes must be the expected ones.
        let e = expectedLayout!
        guard layout.blockSize == e.blockSize, layout.dataSize == e.dataSize,
              layout.segmentTreeSize == e.segmentTreeSize, layout.shareHashesSize == e.shareHashesSize
        else { throw ImmutableError("share layout does not match the file's geometry") }
        guard TahoeHash.uriExtensionHash(uebBytes) == capability.uebHash else {
            throw ImmutableError("URI extension block does not match the capability's hash")
        }
        let chainBytes = try r.read(at: layout.shareHashesOffset, length: Int(layout.shareHashesSize))
        var chain: [Int: [UInt8]] = [:]
        for (i, h) in try ShareLayout.parseShareHashes(chainBytes) { chain[i] = h }
        let leafNode = HashTree.paddedCount(g.n) - 1 + r.shareNumber
        guard let shareLeaf = chain[leafNode] else {
            throw ImmutableError("share hash chain lacks this share's own hash")
        }
        guard HashTree.rootFromLeaf(leafNode: leafNode, leafHash: shareLeaf, hashes: chain) == ueb.shareRootHash else {
            throw ImmutableError("share hash chain does not lead to the share root hash")
        }
        let treeBytes = try r.read(at: layout.blockHashesOffset, length: Int(layout.segmentTreeSize))
        let p = HashTree.paddedCount(g.numSegments)
        let leaves = (0..<g.numSegments).map { i in
            Array(treeBytes[((p - 1 + i) * 32)..<((p + i) * 32)])
        }
        guard HashTree(leaves: leaves).root == shareLeaf else {
            throw ImmutableError("block hash tree does not match the share hash chain")
        }
        return CheckedShare(reader: r, layout: layout, blockLeaves: leaves)
    }

    /// The crypttext hash tree leaves, from the first share whose tree matches the UEB.
    func loadCrypttextLeaves() throws {
        if !ctLeaves.isEmpty { return }
        let g = geometry!
        let p = HashTree.paddedCount(g.numSegments)
        for share in checkedInOrder() {
            do {
                let bytes = try share.reader.read(at: share.layout.crypttextHashTreeOffset, length: Int(share.layout.segmentTreeSize))
                let leaves = (0..<g.numSegments).map { i in Array(bytes[((p - 1 + i) * 32)..<((p + i) * 32)]) }
                if HashTree(leaves: leaves).root == uriExtension!.crypttextRootHash {
                    ctLeaves = leaves
                    return
                }
                markBad(share.reader, "crypttext hash tree does not match the URI extension block")
            } catch {
                markBad(share.reader, "\(error)")
            }
        }
        throw notEnough(checked.count)
    }

    func checkedInOrder() -> [CheckedShare] { checked.keys.sorted().map { checked[$0]! } }

    /// Makes sure at least k checked shares are on hand, checking more candidates as needed.
    func ensureChecked() throws {
        let k = geometry.k
        for r in candidates where checked.count < k {
            // Each reader is checked once; a second copy of a share number set aside is a spare.
            if checked[r.shareNumber] != nil || tried.contains(ObjectIdentifier(r)) { continue }
            tried.insert(ObjectIdentifier(r))
            do {
                checked[r.shareNumber] = try check(r)
                badShares[r.shareNumber] = nil
            } catch {
                markBad(r, "\(error)")
            }
        }
        if checked.count < k { throw notEnough(checked.count) }
    }

    var reported: Set<ObjectIdentifier> = []
    /// Readers already checked (or set aside): never read twice.
    var tried: Set<ObjectIdentifier> = []

    /// Writes bytes [offset, offset+length) of the plaintext (the whole file by default) to `sink`.
    public func decode(to sink: PlaintextSink, offset: UInt64 = 0, length: UInt64? = nil,
                       progress: ((UInt64) -> Void)? = nil) throws {
        try prepare()
        let g = geometry!
        let end = min(g.size, offset.addingReportingOverflow(length ?? g.size).overflow ? g.size : offset + (length ?? g.size))
        guard offset <= g.size else {
            throw ImmutableError("offset \(offset) is past the end of the \(g.size)-byte file")
        }
        if offset == end { return }
        try ensureChecked()
        try loadCrypttextLeaves()
        let k = g.k
        let firstSeg = Int(offset / UInt64(g.segmentSize))
        let lastSeg = Int((end - 1) / UInt64(g.segmentSize))

        let segBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: g.segmentSize, alignment: 64)
        defer { segBuf.deallocate() }
        let spareBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: k * g.blockSize, alignment: 64)
        defer { spareBuf.deallocate() }
        let segBase = segBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let spareBase = spareBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let aes = try AESCTR(key: capability.key, offset: UInt64(firstSeg) * UInt64(g.segmentSize))
        let failures = UnsafeMutableBufferPointer<String?>.allocate(capacity: k)
        failures.initialize(repeating: nil)
        defer { failures.deinitialize(); failures.deallocate() }

        for seg in firstSeg...lastSeg {
            let blen = g.blockLength(seg)
            let segLen = g.segmentLength(seg)
            // Choose k checked shares, lowest numbers first, and fetch + verify their blocks.
            var active: [CheckedShare] = []
            while true {
                try ensureChecked()
                active = Array(checkedInOrder().prefix(k))
                // Data shares read straight into their place in the segment; others into spares.
                func dest(_ pos: Int) -> UnsafeMutableRawBufferPointer {
                    let s = active[pos].reader.shareNumber
                    let p = s < k ? segBase + s * blen : spareBase + pos * g.blockSize
                    return UnsafeMutableRawBufferPointer(start: p, count: blen)
                }
                let shares = active
                if readahead > 0 {
                    let upTo = min(lastSeg, seg + readahead)
                    for share in shares where seg < upTo {
                        share.reader.prefetch(((seg + 1)...upTo).map { s in
                            (share.layout.dataOffset + UInt64(s) * UInt64(g.blockSize), g.blockLength(s))
                        })
                    }
                }
                runJobs(k, threads: threads) { pos in
                    let share = shares[pos]
                    do {
                        let at = share.layout.dataOffset + UInt64(seg) * UInt64(g.blockSize)
                        let buf = dest(pos)
                        try share.reader.read(at: at, into: buf)
                        if TahoeHash.blockHash(UnsafeRawBufferPointer(buf)) != share.blockLeaves[seg] {
                            failures[pos] = "block \(seg) does not match its hash"
                        }
                    } catch {
                        failures[pos] = "\(error)"
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
                throw ImmutableError("segment \(seg) does not match the crypttext hash tree although every block verified")
            }
            aes.apply(in: ct)
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
        throw ImmutableError("a verify capability cannot decrypt a file; give the read capability (URI:CHK:...)")
    }
}
