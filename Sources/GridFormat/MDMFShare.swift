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
    public static let signedPrefixLength = 59
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
