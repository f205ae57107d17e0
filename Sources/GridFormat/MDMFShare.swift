import GridSystem

/// One MDMF (mutable, version 1) share's data, as Tahoe-LAFS 1.20 lays it out
/// (`allmydata/mutable/layout.py`, `MDMFSlotWriteProxy`), integers big-endian:
///
///     0    u8   version (1)
///     1    u64  sequence number
///     9    [32] root hash (of the share hash tree)
///     41   u8   k
///     42   u8   N
///     43   u64  segment size
///     51   u64  data length
///     --- the 59 bytes above are the signed prefix ---
///     59   8 x u64 offsets: encrypted private key, share hash chain, signature,
///          verification key, end of verification key, share data, block hash tree, end
///     123  encrypted private key, share hash chain, signature, verification key, then
///          zeros up to the share data, which starts at a fixed 2167 (room reserved for
///          the largest key, chain and signature); per segment a 16-byte salt and the
///          block; then every node of the block hash tree.
public struct MDMFShare: Equatable, Sendable {
    public static let version: UInt8 = 1
    public static let signedPrefixLength = 59
    /// What a writer tests before replacing the share: version, sequence number, root hash.
    public static let checkstringLength = 41
    /// Where the header records the share's end (u64, the last offset).
    static let endOffsetField = 115
    public static let headerLength = 123
    /// Where the share data starts: after room for a 1220-byte encrypted key, a 260-byte
    /// signature, a 292-byte verification key and 8 share hash chain entries.
    public static let shareDataOffset = 123 + 1220 + 260 + 292 + 34 * 8
    public static let saltSize = 16

    public var sequenceNumber: UInt64
    public var rootHash: [UInt8]
    public var needed: Int
    public var total: Int
    public var segmentSize: UInt64
    public var dataLength: UInt64
    public var encryptedPrivateKey: [UInt8]
    public var shareHashChain: [Int: [UInt8]]
    public var signature: [UInt8]
    public var verificationKey: [UInt8]
    /// Each segment's salt and this share's block of it.
    public var blocks: [(salt: [UInt8], block: [UInt8])]
    /// Every node of the block hash tree (leaves: hashes of salt + block).
    public var blockHashTree: [[UInt8]]

    public init(sequenceNumber: UInt64, rootHash: [UInt8], needed: Int, total: Int, segmentSize: UInt64, dataLength: UInt64,
                encryptedPrivateKey: [UInt8], shareHashChain: [Int: [UInt8]], signature: [UInt8], verificationKey: [UInt8],
                blocks: [(salt: [UInt8], block: [UInt8])], blockHashTree: [[UInt8]]) {
        (self.sequenceNumber, self.rootHash, self.needed, self.total) = (sequenceNumber, rootHash, needed, total)
        (self.segmentSize, self.dataLength, self.encryptedPrivateKey) = (segmentSize, dataLength, encryptedPrivateKey)
        (self.shareHashChain, self.signature, self.verificationKey) = (shareHashChain, signature, verificationKey)
        (self.blocks, self.blockHashTree) = (blocks, blockHashTree)
    }

    public static func == (a: MDMFShare, b: MDMFShare) -> Bool { a.serialized() == b.serialized() }

    public var signedPrefix: [UInt8] {
        [1] + be64(sequenceNumber) + rootHash + [UInt8(needed), UInt8(total)] + be64(segmentSize) + be64(dataLength)
    }

    /// The number of segments and the block sizes a share of these parameters has.
    public static func geometry(needed k: Int, segmentSize: UInt64, dataLength: UInt64) -> (segments: Int, blockSize: Int, tailBlockSize: Int) {
        guard segmentSize > 0 else { return (0, 0, 0) }
        let segments = Int((dataLength + segmentSize - 1) / segmentSize)
        let blockSize = Int(segmentSize) / k
        let tail = Int(dataLength % segmentSize)
        return (segments, blockSize, tail == 0 ? blockSize : (tail + k - 1) / k)
    }

    /// Where a share's sections lie (from its offsets table), read with its head.
    public struct Layout: Sendable, Equatable {
        public let dataAt: UInt64
        public let treeAt: UInt64
        public let end: UInt64
    }

    /// Parses a share's head (its first 2167 bytes, or all of it): every field but the
    /// blocks and the block hash tree (left empty), checked as `init(parsing:)` checks
    /// them, and where the data and the tree lie. Untrusted input.
    public static func parseHead(_ b: [UInt8]) throws -> (share: MDMFShare, layout: Layout) {
        func fail(_ m: String) -> GridError { GridError(.corrupt, "MDMF share: \(m)") }
        guard b.count >= Self.headerLength else { throw fail("\(b.count) bytes is shorter than the 123-byte header") }
        guard b[0] == 1 else { throw GridError(.incompatible, "mutable share version \(b[0]) is not MDMF (1)") }
        func u64(_ at: Int) -> UInt64 { b[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        let (seq, root, k, n, segmentSize, dataLength) = (u64(1), Array(b[9..<41]), Int(b[41]), Int(b[42]), u64(43), u64(51))
        guard k >= 1, k <= n else { throw fail("encoding \(k)-of-\(n) is invalid") }
        guard segmentSize > 0, segmentSize % UInt64(k) == 0, segmentSize <= 1 << 30 else {
            throw fail("segment size \(segmentSize) is not a positive multiple of k up to 1 GiB")
        }
        guard dataLength <= 1 << 50 else { throw fail("data length \(dataLength) is absurd") }
        let offsets = (0..<8).map { u64(59 + 8 * $0) }
        guard offsets[0] == UInt64(Self.headerLength) else { throw fail("the private key must start at 123, not \(offsets[0])") }
        for i in 1..<8 where offsets[i] < offsets[i - 1] { throw fail("offsets out of order (\(offsets.map(String.init).joined(separator: ", ")))") }
        guard offsets[4] <= offsets[5], offsets[4] <= UInt64(b.count) else { throw fail("the keys and signature end at \(offsets[4]), past the \(b.count) bytes read") }
        func section(_ from: UInt64, _ to: UInt64) -> [UInt8] { Array(b[Int(from)..<Int(to)]) }
        let chain = try parseShareHashChain(section(offsets[1], offsets[2]), fail)
        let signature = section(offsets[2], offsets[3]), verificationKey = section(offsets[3], offsets[4])
        guard signature.count <= 1024, verificationKey.count <= 4096 else { throw fail("signature or verification key is absurdly long") }
        let expected = shareDataCount(needed: k, segmentSize: segmentSize, dataLength: dataLength)
        guard offsets[6] - offsets[5] == UInt64(expected) else {
            throw fail("share data of \(offsets[6] - offsets[5]) bytes, but the parameters need \(expected)")
        }
        let g = geometry(needed: k, segmentSize: segmentSize, dataLength: dataLength)
        let treeNodes = 2 * HashTree.paddedCount(max(1, g.segments)) - 1
        guard offsets[7] - offsets[6] == UInt64(treeNodes * 32) else {
            throw fail("block hash tree of \(offsets[7] - offsets[6]) bytes, but \(g.segments) segments need \(treeNodes * 32)")
        }
        let share = MDMFShare(sequenceNumber: seq, rootHash: root, needed: k, total: n, segmentSize: segmentSize, dataLength: dataLength,
                              encryptedPrivateKey: section(offsets[0], offsets[1]), shareHashChain: chain, signature: signature,
                              verificationKey: verificationKey, blocks: [], blockHashTree: [])
        return (share, Layout(dataAt: offsets[5], treeAt: offsets[6], end: offsets[7]))
    }

    /// Parses untrusted bytes: offsets in order and inside the share, sections of the sizes
    /// the parameters imply, the segment size a multiple of k.
    public init(parsing b: [UInt8]) throws {
        func fail(_ m: String) -> GridError { GridError(.corrupt, "MDMF share: \(m)") }
        let (head, layout) = try Self.parseHead(b)
        self = head
        guard layout.end <= UInt64(b.count) else { throw fail("the share ends at \(layout.end) but holds \(b.count) bytes") }
        let offsets = [0, 0, 0, 0, 0, layout.dataAt, layout.treeAt, layout.end]
        let g = Self.geometry(needed: needed, segmentSize: segmentSize, dataLength: dataLength)
        func section(_ from: UInt64, _ to: UInt64) -> [UInt8] { Array(b[Int(from)..<Int(to)]) }
        var at = Int(offsets[5])
        var blocks: [(salt: [UInt8], block: [UInt8])] = []
        for seg in 0..<g.segments {
            let len = seg == g.segments - 1 ? g.tailBlockSize : g.blockSize
            blocks.append((Array(b[at..<(at + Self.saltSize)]), Array(b[(at + Self.saltSize)..<(at + Self.saltSize + len)])))
            at += Self.saltSize + len
        }
        self.blocks = blocks
        blockHashTree = try parseHashNodes(section(offsets[6], offsets[7]), fail)
    }

    /// The share data's length for these parameters: per segment a salt and a block.
    public static func shareDataCount(needed k: Int, segmentSize: UInt64, dataLength: UInt64) -> Int {
        let g = geometry(needed: k, segmentSize: segmentSize, dataLength: dataLength)
        return g.segments == 0 ? 0 : (g.segments - 1) * (saltSize + g.blockSize) + saltSize + g.tailBlockSize
    }

    /// Bytes 0..<2167 of the share: header, offsets, encrypted key, share hash chain,
    /// signature, verification key, zeros. The blocks need not be held (`blocks` may be
    /// empty): the share data is `dataCount` bytes long, and the tree follows it (of
    /// `treeCount` bytes, when the tree is not held either).
    public func serializedHead(dataCount: Int, treeCount given: Int? = nil) -> [UInt8] {
        let chain = ShareLayout.encodeShareHashes(shareHashChain.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        let chainAt = UInt64(Self.headerLength + encryptedPrivateKey.count)
        let sigAt = chainAt + UInt64(chain.count)
        let keyAt = sigAt + UInt64(signature.count)
        let keyEnd = keyAt + UInt64(verificationKey.count)
        let dataAt = UInt64(Self.shareDataOffset)
        let treeAt = dataAt + UInt64(dataCount)
        let treeCount = given ?? blockHashTree.reduce(0) { $0 + $1.count }
        var out = [UInt8]()
        out.reserveCapacity(Self.shareDataOffset)
        out += signedPrefix
        for o in [UInt64(Self.headerLength), chainAt, sigAt, keyAt, keyEnd, dataAt, treeAt, treeAt + UInt64(treeCount)] { out += be64(o) }
        out += encryptedPrivateKey
        out += chain
        out += signature
        out += verificationKey
        if out.count < Self.shareDataOffset { out += repeatElement(0, count: Self.shareDataOffset - out.count) }
        return out
    }

    /// The block hash tree, every node, as it follows the share data.
    public func serializedTree() -> [UInt8] { blockHashTree.flatMap { $0 } }

    public func serialized() -> [UInt8] {
        // One allocation of the final size: a share may be hundreds of MiB.
        let dataCount = blocks.reduce(0) { $0 + $1.salt.count + $1.block.count }
        var out = serializedHead(dataCount: dataCount)
        out.reserveCapacity(out.count + dataCount + blockHashTree.count * 32)
        for b in blocks {
            out += b.salt
            out += b.block
        }
        for node in blockHashTree { out += node }
        return out
    }
}
