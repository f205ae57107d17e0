import GridSystem

/// One SDMF (mutable, version 0) share's data, as Tahoe-LAFS 1.20 lays it out
/// (`allmydata/mutable/layout.py`), all integers big-endian:
///
///     0    u8   version (0)
///     1    u64  sequence number
///     9    [32] root hash (of the share hash tree)
///     41   [16] IV (the salt the data key is derived from)
///     57   u8   k
///     58   u8   N
///     59   u64  segment size (the data length rounded up to a multiple of k)
///     67   u64  data length
///     --- the 75 bytes above are the signed prefix ---
///     75   u32  offset of the signature
///     79   u32  offset of the share hash chain
///     83   u32  offset of the block hash tree
///     87   u32  offset of the share data
///     91   u64  offset of the encrypted private key
///     99   u64  offset of the end
///     107  verification key (SubjectPublicKeyInfo DER), signature, share hash chain
///          (u16 node + [32] hash each), block hash tree (every node, [32] each), share
///          data (one block), encrypted private key, in that order.
public struct SDMFShare: Equatable, Sendable {
    public static let version: UInt8 = 0
    public static let signedPrefixLength = 75
    /// What a writer tests before replacing the share: version, sequence number, root hash, IV.
    public static let checkstringLength = 57
    /// Where the header records the share's end (u64).
    static let endOffsetField = 99
    public static let headerLength = 107
    /// Largest key, signature and hash sections accepted when parsing untrusted bytes.
    public static let maxKeyLength = 4096, maxSignatureLength = 1024

    public var sequenceNumber: UInt64
    public var rootHash: [UInt8]
    public var iv: [UInt8]
    public var needed: Int
    public var total: Int
    public var segmentSize: UInt64
    public var dataLength: UInt64
    public var verificationKey: [UInt8]
    public var signature: [UInt8]
    /// Share hash tree node → hash: the siblings on the path from this share's leaf to the root.
    public var shareHashChain: [Int: [UInt8]]
    /// Every node of the share's block hash tree (one segment: one node).
    public var blockHashTree: [[UInt8]]
    public var shareData: [UInt8]
    public var encryptedPrivateKey: [UInt8]

    public init(sequenceNumber: UInt64, rootHash: [UInt8], iv: [UInt8], needed: Int, total: Int, segmentSize: UInt64,
                dataLength: UInt64, verificationKey: [UInt8], signature: [UInt8], shareHashChain: [Int: [UInt8]],
                blockHashTree: [[UInt8]], shareData: [UInt8], encryptedPrivateKey: [UInt8]) {
        (self.sequenceNumber, self.rootHash, self.iv, self.needed, self.total) = (sequenceNumber, rootHash, iv, needed, total)
        (self.segmentSize, self.dataLength, self.verificationKey, self.signature) = (segmentSize, dataLength, verificationKey, signature)
        (self.shareHashChain, self.blockHashTree, self.shareData, self.encryptedPrivateKey) = (shareHashChain, blockHashTree, shareData, encryptedPrivateKey)
    }

    /// The bytes the signature covers.
    public var signedPrefix: [UInt8] {
        var w: [UInt8] = [0]
        w += be64(sequenceNumber) + rootHash + iv + [UInt8(needed), UInt8(total)] + be64(segmentSize) + be64(dataLength)
        return w
    }

    public func serialized() -> [UInt8] {
        let chain = ShareLayout.encodeShareHashes(shareHashChain.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        let tree = blockHashTree.flatMap { $0 }
        let sig = UInt64(Self.headerLength + verificationKey.count)
        let chainAt = sig + UInt64(signature.count)
        let treeAt = chainAt + UInt64(chain.count)
        let dataAt = treeAt + UInt64(tree.count)
        let keyAt = dataAt + UInt64(shareData.count)
        let end = keyAt + UInt64(encryptedPrivateKey.count)
        var out = signedPrefix
        out += be32(UInt32(sig)) + be32(UInt32(chainAt)) + be32(UInt32(treeAt)) + be32(UInt32(dataAt)) + be64(keyAt) + be64(end)
        out += verificationKey + signature + chain + tree + shareData + encryptedPrivateKey
        return out
    }

    /// Parses untrusted bytes: every offset must be in order and inside the share.
    public init(parsing b: [UInt8]) throws {
        func fail(_ m: String) -> GridError { GridError(.corrupt, "SDMF share: \(m)") }
        guard b.count >= Self.headerLength else { throw fail("\(b.count) bytes is shorter than the 107-byte header") }
        guard b[0] == 0 else { throw GridError(.incompatible, "mutable share version \(b[0]) is not SDMF (0)") }
        func u64(_ at: Int) -> UInt64 { b[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        func u32(_ at: Int) -> UInt64 { b[at..<(at + 4)].reduce(0) { $0 << 8 | UInt64($1) } }
        sequenceNumber = u64(1)
        rootHash = Array(b[9..<41])
        iv = Array(b[41..<57])
        needed = Int(b[57])
        total = Int(b[58])
        segmentSize = u64(59)
        dataLength = u64(67)
        guard needed >= 1, needed <= total else { throw fail("encoding \(needed)-of-\(total) is invalid") }
        let offsets = [UInt64(Self.headerLength), u32(75), u32(79), u32(83), u32(87), u64(91), u64(99)]
        for i in 1..<offsets.count where offsets[i] < offsets[i - 1] {
            throw fail("offsets out of order (\(offsets.map(String.init).joined(separator: ", ")))")
        }
        guard offsets[6] <= UInt64(b.count) else { throw fail("the share ends at \(offsets[6]) but holds \(b.count) bytes") }
        func section(_ i: Int) -> [UInt8] { Array(b[Int(offsets[i])..<Int(offsets[i + 1])]) }
        verificationKey = section(0)
        signature = section(1)
        guard verificationKey.count <= Self.maxKeyLength, signature.count <= Self.maxSignatureLength else {
            throw fail("verification key of \(verificationKey.count) or signature of \(signature.count) bytes is absurd")
        }
        shareHashChain = try parseShareHashChain(section(2), fail)
        blockHashTree = try parseHashNodes(section(3), fail)
        shareData = section(4)
        encryptedPrivateKey = section(5)
    }
}

func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> UInt32(24 - 8 * $0)) } }
func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> UInt64(56 - 8 * $0)) } }
