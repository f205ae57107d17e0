import Dispatch
import GridCodec
import GridCrypto
import GridFormat

/// How a file is erasure-coded: k of n shares needed, `happy` distinct servers wanted
/// (placement only; it does not change any byte), and the largest segment.
public struct EncodingParameters: Equatable, Sendable {
    public var needed: Int
    public var happy: Int
    public var total: Int
    public var maxSegmentSize: Int

    /// Tahoe-LAFS 1.20's default maximum immutable segment size: 1 MiB.
    public static let defaultMaxSegmentSize = 1 << 20

    public init(needed: Int = 3, happy: Int = 7, total: Int = 10, maxSegmentSize: Int = defaultMaxSegmentSize) {
        self.needed = needed
        self.happy = happy
        self.total = total
        self.maxSegmentSize = maxSegmentSize
    }

    public func validate() throws {
        guard needed >= 1, needed <= total, total <= 256 else {
            throw ImmutableError.invalidParameters("bad encoding: need 1 <= needed (k) <= total (n) <= 256, got k=\(needed) n=\(total)")
        }
        guard happy >= 1, happy <= total else {
            throw ImmutableError.invalidParameters("bad encoding: happy must be between 1 and total (n=\(total)), got \(happy)")
        }
        guard maxSegmentSize >= 1, maxSegmentSize <= 1 << 30 else {
            throw ImmutableError.invalidParameters("bad segment size \(maxSegmentSize): must be 1 byte to 1 GiB")
        }
    }
}

/// What encoding produced.
public enum EncodeResult: Equatable, Sendable {
    case literal(LITCapability)
    case chk(CHKCapability, URIExtension)

    public var capability: Capability {
        switch self {
        case let .literal(c): return .lit(c)
        case let .chk(c, _): return .chk(c)
        }
    }
}

/// Streams a plaintext into a CHK capability and n shares, byte-identical to Tahoe-LAFS 1.20.
///
/// Memory is bounded by one segment plus its n blocks (four of them on the AVX-512 SHA-256
/// path, whose block hashes wait for sixteen; `BlockHasher`), plus 32 bytes of hash per
/// segment per share, whatever the file size. Hashing of the ciphertext and of the
/// blocks is spread over `threads` threads.
public final class CHKEncoder {
    public let parameters: EncodingParameters
    public let threads: Int
    public let simdPath: SIMDPath

    /// How the block hashes run (`SHA256Path`; the ciphertext hashes use its pairs).
    public let shaPath: SHA256Path

    public init(parameters: EncodingParameters, threads: Int = 2, simdPath: SIMDPath = .best,
                shaPath: SHA256Path = .current) throws {
        try parameters.validate()
        self.parameters = parameters
        self.threads = max(1, threads)
        self.simdPath = simdPath
        self.shaPath = shaPath
    }

    /// The effective segment size for a file of `size` bytes (it enters the convergent key).
    public func segmentSize(forSize size: UInt64) -> Int {
        let raw = Int(min(UInt64(parameters.maxSegmentSize), max(size, 1)))
        return (raw + parameters.needed - 1) / parameters.needed * parameters.needed
    }

    /// The exact size of each share's data for a file of `size` bytes (what a storage
    /// server must allocate): the UEB's length does not depend on its hash values.
    public func shareSize(forSize size: UInt64) throws -> UInt64 {
        let k = parameters.needed, n = parameters.total
        let g = try CHKGeometry(size: size, k: k, n: n, maxSegmentSize: parameters.maxSegmentSize)
        let layout = shareLayout(g)
        let zero = [UInt8](repeating: 0, count: 32)
        let ueb = URIExtension(
            codecParams: "\(g.segmentSize)-\(k)-\(n)", tailCodecParams: "\(g.paddedTailSize)-\(k)-\(n)",
            size: g.size, segmentSize: g.segmentSize, numSegments: g.numSegments, neededShares: k,
            totalShares: n, crypttextHash: zero, crypttextRootHash: zero, shareRootHash: zero)
        return layout.totalSize(uebLength: ueb.serialized().count)
    }

    func shareLayout(_ g: CHKGeometry) -> ShareLayout {
        let numShareHashes = HashTree.neededHashes(
            leaf: 0, firstLeafIndex: HashTree.paddedCount(g.n) - 1, includeLeaf: true
        ).count
        return ShareLayout(
            blockSize: g.blockSize, dataSize: g.shareDataSize, numSegments: g.numSegments,
            numShareHashes: numShareHashes)
    }

    /// The convergent encryption key: the first pass over the plaintext.
    public func convergenceKey(source: RandomAccessSource, secret: [UInt8]) throws -> [UInt8] {
        let hasher = TahoeHash.convergenceHasher(
            secret: secret, k: parameters.needed, n: parameters.total,
            segmentSize: segmentSize(forSize: source.size))
        let chunk = 1 << 20
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buf.deallocate() }
        var offset: UInt64 = 0
        while offset < source.size {
            let want = Int(min(UInt64(chunk), source.size - offset))
            let got = try source.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<want]))
            guard got == want else { throw ImmutableError.sourceChanged("source shrank while being read (at byte \(offset + UInt64(got)))") }
            hasher.update(UnsafeRawBufferPointer(rebasing: buf[0..<want]))
            offset += UInt64(want)
        }
        return hasher.finalize()
    }

    /// Encodes with a convergence secret: small files become LIT capabilities, others CHK.
    public func encode(
        source: RandomAccessSource, convergenceSecret: [UInt8], sink: ShareSink,
        progress: ((UInt64) -> Void)? = nil
    ) throws -> EncodeResult {
        if source.size <= UInt64(Capability.literalThreshold) {
            var data = [UInt8](repeating: 0, count: Int(source.size))
            let got = try data.withUnsafeMutableBytes { try source.read(at: 0, into: $0) }
            guard got == data.count else { throw ImmutableError.sourceChanged("source shrank while being read") }
            return .literal(LITCapability(data: data))
        }
        let key = try convergenceKey(source: source, secret: convergenceSecret)
        return try encode(source: source, key: key, sink: sink, progress: progress)
    }

    /// Encodes with a given AES key (the second pass). The file must be non-empty.
    public func encode(
        source: RandomAccessSource, key: [UInt8], sink: ShareSink, progress: ((UInt64) -> Void)? = nil
    ) throws -> EncodeResult {
        let ueb = try encodeShares(source: source, aes: try AESCTR(key: key), sink: sink, progress: progress)
        let cap = CHKCapability(key: key, uebHash: ueb.hash, needed: parameters.needed, total: parameters.total, size: ueb.size)
        return .chk(cap, ueb)
    }

    /// Encodes a file that is already ciphertext (an upload helper's input: it never has
    /// the key). The shares are the same bytes `encode(source:key:)` makes of the
    /// plaintext; the capability is the key holder's to make, from the returned block's hash.
    public func encodeCiphertext(
        source: RandomAccessSource, sink: ShareSink, progress: ((UInt64) -> Void)? = nil
    ) throws -> URIExtension {
        try encodeShares(source: source, aes: nil, sink: sink, progress: progress)
    }

    /// The shares of `source`, encrypted with `aes` on the way (nil: already ciphertext).
    func encodeShares(
        source: RandomAccessSource, aes: AESCTR?, sink: ShareSink, progress: ((UInt64) -> Void)?
    ) throws -> URIExtension {
        let k = parameters.needed
        let n = parameters.total
        let g = try CHKGeometry(size: source.size, k: k, n: n, maxSegmentSize: parameters.maxSegmentSize)
        let rs = try ReedSolomon(k: k, n: n)
        let layout = shareLayout(g)
        let header = layout.header()
        for s in 0..<n { try header.withUnsafeBytes { try sink.write(share: s, offset: 0, bytes: $0) } }

        // The whole-file and per-segment ciphertext hashes read the same bytes: two lanes
        // fed together (SHA256Lane). The block hashes run beside them (BlockHasher).
        let ctHasher = CiphertextHasher(segments: g.numSegments)
        let blockHasher = BlockHasher(shares: n, segments: g.numSegments, path: shaPath)

        // A ring of segment buffers (a segment's k pieces are its data blocks) with their
        // n-k parity blocks: a segment's blocks stay until they are hashed, which with
        // sixteen lanes to fill can be a segment or two later.
        let slots = blockHasher.batched ? BlockHasher.ringSlots : 1
        let parityCount = n - k
        let slotBytes = g.segmentSize + max(1, parityCount * g.blockSize)
        let ring = UnsafeMutableRawBufferPointer.allocate(byteCount: slots * slotBytes, alignment: 64)
        defer { ring.deallocate() }
        let parityShares = Array(k..<n)
        var ctWaiting: [(segment: Int, bytes: UnsafeRawBufferPointer)] = []

        for seg in 0..<g.numSegments {
            let len = g.segmentLength(seg)
            let blen = g.blockLength(seg)
            let offset = UInt64(seg) * UInt64(g.segmentSize)
            let slotBase = ring.baseAddress! + (seg % slots) * slotBytes
            let segBuf = UnsafeMutableRawBufferPointer(start: slotBase, count: g.segmentSize)
            let segBase = slotBase.assumingMemoryBound(to: UInt8.self)
            let parBase = (slotBase + g.segmentSize).assumingMemoryBound(to: UInt8.self)
            let got = try source.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: segBuf[0..<len]))
            guard got == len else { throw ImmutableError.sourceChanged("source shrank while being read (segment \(seg))") }
            let ct = UnsafeMutableRawBufferPointer(rebasing: segBuf[0..<len])
            aes?.apply(in: ct)
            // The tail's ciphertext is zero-padded to k blocks of equal size.
            if blen * k > len {
                UnsafeMutableRawBufferPointer(rebasing: segBuf[len..<(blen * k)]).initializeMemory(as: UInt8.self, repeating: 0)
            }
            let segData = (0..<k).map { UnsafePointer(segBase + $0 * blen) }
            let parityPtrs = (0..<parityCount).map { parBase + $0 * blen }
            try rs.encode(blockSize: blen, data: segData,
                          shares: parityShares, outputs: parityPtrs, path: simdPath)
            let blocks = (0..<n).map { i in
                UnsafeRawBufferPointer(start: i < k ? UnsafeRawPointer(segBase + i * blen) : UnsafeRawPointer(parBase + (i - k) * blen), count: blen)
            }
            // Hashing waits until there is a group of blocks to hash (or the slot of a
            // segment not yet hashed comes next, or this is the last segment); then jobs:
            // 0 = the ciphertext hashes of the segments waiting, in order (only it touches
            // `ctHasher`), j > 0 = one group of block hashes (each writes only its own
            // blocks' leaves). The two kinds of work run side by side in about equal parts.
            blockHasher.add(segment: seg, blocks: blocks)
            ctWaiting.append((seg, UnsafeRawBufferPointer(ct)))
            let last = seg == g.numSegments - 1
            let groups = blockHasher.take(through: seg + 1 - slots, final: last)
            if !groups.isEmpty || last || ctWaiting[0].segment <= seg + 1 - slots {
                let cts = ctWaiting.map(\.bytes)
                ctWaiting.removeAll(keepingCapacity: true)
                runJobs(1 + groups.count, threads: threads) { j in
                    if j == 0 { for c in cts { ctHasher.segment(c) } } else { blockHasher.hash(groups[j - 1]) }
                }
            }
            let dataOffset = layout.dataOffset + UInt64(seg) * UInt64(g.blockSize)
            for i in 0..<n { try sink.write(share: i, offset: dataOffset, bytes: blocks[i]) }
            progress?(offset + UInt64(len))
        }
        let blockLeaves = blockHasher.leavesBySegment

        // Hash trees, UEB, and each share's tail.
        let (ctWholeHash, ctTree) = ctHasher.finalizeTree()
        let blockTrees = blockLeaves.map { HashTree(leaves: $0) }
        let shareTree = HashTree(leaves: blockTrees.map(\.root))
        let ueb = URIExtension(
            codecParams: "\(g.segmentSize)-\(k)-\(n)", tailCodecParams: "\(g.paddedTailSize)-\(k)-\(n)",
            size: g.size, segmentSize: g.segmentSize, numSegments: g.numSegments, neededShares: k,
            totalShares: n, crypttextHash: ctWholeHash, crypttextRootHash: ctTree.root,
            shareRootHash: shareTree.root)
        let uebBytes = ueb.serialized()
        let zeros = [UInt8](repeating: 0, count: Int(layout.segmentTreeSize))
        let ctSection = ctTree.nodes.flatMap { $0 }
        let uebSection = layout.uebSection(uebBytes)
        for i in 0..<n {
            let chain = shareTree.neededHashes(leaf: i, includeLeaf: true).map { ($0, shareTree[$0]) }
            let tail = zeros + ctSection + blockTrees[i].nodes.flatMap { $0 }
                + ShareLayout.encodeShareHashes(chain) + uebSection
            try tail.withUnsafeBytes { try sink.write(share: i, offset: layout.plaintextHashTreeOffset, bytes: $0) }
        }
        try sink.finish()
        return ueb
    }
}

/// The block hashes of an upload (Tahoe's tagged block hash of every block of every
/// share), as leaves per share and segment. With AVX-512 lanes (`SHA256Path.avx512`) the
/// blocks wait until sixteen of one length are there, across segments (a segment has
/// only n blocks, and ten lanes of sixteen run no faster than SHA-NI pairs); otherwise
/// each segment's blocks are hashed at once, two at a time.
final class BlockHasher {
    /// Segment buffers the encoder keeps when batching: a block waits at most until
    /// sixteen are pending, and n >= 1 blocks arrive per segment, so blocks of more than
    /// two segments back are forced out (`take(through:)`) only when n is small.
    static let ringSlots = 4
    static let lanes = 16

    let path: SHA256Path
    let batched: Bool
    private var pending: [Item] = []
    /// The leaf of share s, segment g at s * segments + g; groups being hashed at once on
    /// several threads write disjoint elements.
    private let leafBox: UnsafeMutableBufferPointer<[UInt8]>
    private let shares: Int
    private let segments: Int

    init(shares: Int, segments: Int, path: SHA256Path) {
        self.path = path
        self.shares = shares
        self.segments = segments
        batched = path == .avx512
        leafBox = .allocate(capacity: max(1, shares * segments))
        leafBox.initialize(repeating: [])
    }

    deinit {
        leafBox.deinitialize()
        leafBox.deallocate()
    }

    typealias Item = (share: Int, segment: Int, bytes: UnsafeRawBufferPointer)

    func add(segment: Int, blocks: [UnsafeRawBufferPointer]) {
        for (i, b) in blocks.enumerated() { pending.append((i, segment, b)) }
    }

    /// Groups to hash now (each hashed by one `hash` call, possibly on its own thread):
    /// full groups of sixteen of one length, and every pending block of segments up to
    /// `through` (their buffers are about to be reused) or of all segments when `final`.
    /// Unbatched: everything pending, two blocks a group.
    func take(through: Int, final: Bool) -> [[Item]] {
        var groups: [[Item]] = []
        if !batched {
            var i = 0
            while i < pending.count {
                groups.append(Array(pending[i..<min(pending.count, i + 2)]))
                i += 2
            }
            pending.removeAll(keepingCapacity: true)
            return groups
        }
        while pending.count >= Self.lanes, pending[0..<Self.lanes].allSatisfy({ $0.bytes.count == pending[0].bytes.count }) {
            groups.append(Array(pending[0..<Self.lanes]))
            pending.removeFirst(Self.lanes)
        }
        // What must go now, by length (the tail segment's blocks are shorter).
        let forced = pending.filter { final || $0.segment <= through }
        if !forced.isEmpty {
            pending.removeAll { final || $0.segment <= through }
            var byLength: [Int: [Item]] = [:]
            for item in forced { byLength[item.bytes.count, default: []].append(item) }
            for (_, items) in byLength.sorted(by: { $0.key > $1.key }) { groups.append(items) }
        }
        return groups
    }

    /// Hashes one group from `take` into the leaves (groups touch disjoint leaves).
    func hash(_ group: [Item]) {
        let buffers = group.map(\.bytes)
        // A few blocks go faster as SHA-NI pairs than in mostly empty AVX-512 lanes.
        let digests = batched && group.count >= 8
            ? TahoeHash.taggedSameLength(TahoeTag.block, buffers, path: path)
            : TahoeHash.taggedEach(TahoeTag.block, buffers, path: path == .avx512 ? .shani2 : path)
        for (item, d) in zip(group, digests) { leafBox[item.share * segments + item.segment] = d }
    }

    /// leaves[share][segment], once every group has been hashed.
    var leavesBySegment: [[[UInt8]]] {
        (0..<shares).map { s in Array(leafBox[(s * segments)..<((s + 1) * segments)]) }
    }
}

/// Runs jobs 0..<count, on up to `threads` threads (inline when 1), and returns when all
/// are done. Callers make each job touch only its own memory.
func runJobs(_ count: Int, threads: Int, _ job: (Int) -> Void) {
    if threads <= 1 || count <= 1 {
        for j in 0..<count { job(j) }
        return
    }
    withoutActuallyEscaping(job) { escapable in
        // concurrentPerform is synchronous: the closure cannot outlive this call.
        let box = UncheckedSendable(escapable)
        DispatchQueue.concurrentPerform(iterations: count) { box.value($0) }
    }
}

/// Carries a value across a concurrency boundary that the caller has made safe.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The ciphertext's whole-file hash and the root of its segment hash tree, as a URI
/// extension block records them, from the ciphertext fed in order one segment at a time
/// (`CHKGeometry.segmentLength`): what a client of an upload helper checks the helper's
/// answer against.
/// The encoder computes them with it too: the two hashes read the same bytes, so they
/// run as two lanes fed together (SHA256Lane).
public final class CiphertextHasher {
    let whole = TaggedLane(tag: TahoeTag.crypttext)
    let segmentLane = TaggedLane(tag: TahoeTag.crypttextSegment)
    var leaves: [[UInt8]] = []

    public init(segments: Int = 0) { leaves.reserveCapacity(segments) }

    /// One whole segment of ciphertext, the next in order.
    public func segment(_ bytes: UnsafeRawBufferPointer) {
        TaggedLane.update(whole, bytes, segmentLane, bytes)
        leaves.append(segmentLane.finalize())
    }

    /// crypttext_hash and the segment hash tree (whose nodes every share carries).
    public func finalizeTree() -> (whole: [UInt8], tree: HashTree) { (whole.finalize(), HashTree(leaves: leaves)) }

    /// (crypttext_hash, crypttext_root_hash) of the segments fed.
    public func finalize() -> (whole: [UInt8], root: [UInt8]) {
        let (w, t) = finalizeTree()
        return (w, t.root)
    }
}

/// A plaintext source read as its AES-CTR ciphertext: each read encrypts what it returns
/// (the counter is seeked to the offset, so reads may come in any order).
public final class EncryptingSource: RandomAccessSource {
    let plaintext: RandomAccessSource
    let aes: AESCTR
    public var size: UInt64 { plaintext.size }

    public init(_ plaintext: RandomAccessSource, key: [UInt8]) throws {
        self.plaintext = plaintext
        aes = try AESCTR(key: key)
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try plaintext.read(at: offset, into: buffer)
        try aes.seek(to: offset)
        aes.apply(in: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
        return n
    }
}
