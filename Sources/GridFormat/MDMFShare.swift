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

    /// Parses untrusted bytes: offsets in order and inside the share, sections of the sizes
    /// the parameters imply, the segment size a multiple of k.
    public init(parsing b: [UInt8]) throws {
        func fail(_ m: String) -> GridError { GridError(.corrupt, "MDMF share: \(m)") }
        guard b.count >= Self.headerLength else { throw fail("\(b.count) bytes is shorter than the 123-byte header") }
        guard b[0] == 1 else { throw GridError(.incompatible, "mutable share version \(b[0]) is not MDMF (1)") }
        func u64(_ at: Int) -> UInt64 { b[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        sequenceNumber = u64(1)
        rootHash = Array(b[9..<41])
        needed = Int(b[41])
        total = Int(b[42])
        segmentSize = u64(43)
        dataLength = u64(51)
        guard needed >= 1, needed <= total else { throw fail("encoding \(needed)-of-\(total) is invalid") }
        guard segmentSize > 0, segmentSize % UInt64(needed) == 0, segmentSize <= 1 << 30 else {
            throw fail("segment size \(segmentSize) is not a positive multiple of k up to 1 GiB")
        }
        guard dataLength <= 1 << 50 else { throw fail("data length \(dataLength) is absurd") }
        let offsets = (0..<8).map { u64(59 + 8 * $0) }
        guard offsets[0] == UInt64(Self.headerLength) else { throw fail("the private key must start at 123, not \(offsets[0])") }
        for i in 1..<8 where offsets[i] < offsets[i - 1] { throw fail("offsets out of order (\(offsets.map(String.init).joined(separator: ", ")))") }
        guard offsets[4] <= offsets[5], offsets[7] <= UInt64(b.count) else { throw fail("the share ends at \(offsets[7]) but holds \(b.count) bytes") }
        func section(_ from: UInt64, _ to: UInt64) -> [UInt8] { Array(b[Int(from)..<Int(to)]) }
        encryptedPrivateKey = section(offsets[0], offsets[1])
        shareHashChain = try parseShareHashChain(section(offsets[1], offsets[2]), fail)
        signature = section(offsets[2], offsets[3])
        verificationKey = section(offsets[3], offsets[4])
        guard signature.count <= 1024, verificationKey.count <= 4096 else { throw fail("signature or verification key is absurdly long") }
        let g = Self.geometry(needed: needed, segmentSize: segmentSize, dataLength: dataLength)
        let expected = g.segments == 0 ? 0 : (g.segments - 1) * (Self.saltSize + g.blockSize) + Self.saltSize + g.tailBlockSize
        guard offsets[6] - offsets[5] == UInt64(expected) else {
            throw fail("share data of \(offsets[6] - offsets[5]) bytes, but \(g.segments) segments need \(expected)")
        }
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

    public func serialized() -> [UInt8] {
        let chain = ShareLayout.encodeShareHashes(shareHashChain.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        let chainAt = UInt64(Self.headerLength + encryptedPrivateKey.count)
        let sigAt = chainAt + UInt64(chain.count)
        let keyAt = sigAt + UInt64(signature.count)
        let keyEnd = keyAt + UInt64(verificationKey.count)
        let dataAt = UInt64(Self.shareDataOffset)
        let data = blocks.flatMap { $0.salt + $0.block }
        let treeAt = dataAt + UInt64(data.count)
        let tree = blockHashTree.flatMap { $0 }
        var out = signedPrefix
        for o in [UInt64(Self.headerLength), chainAt, sigAt, keyAt, keyEnd, dataAt, treeAt, treeAt + UInt64(tree.count)] { out += be64(o) }
        out += encryptedPrivateKey + chain + signature + verificationKey
        out += [UInt8](repeating: 0, count: max(0, Self.shareDataOffset - out.count))
        return out + data + tree
    }
}
