import GridCodec
import GridCrypto
import GridFormat
import GridSystem

/// Encodes an MDMF version one segment at a time, so a large file is never held whole:
/// each segment is encrypted under its own salt's key, padded to a multiple of k and
/// Reed-Solomon coded; every share's salt + block for the segment is written into
/// caller-owned buffers (reused from batch to batch), and the block's hash kept. At the
/// end `finish` builds each share's block hash tree, the share hash tree, signs the root
/// and gives each share's head (bytes 0..<2167) and tree; head + data + tree is the
/// share, byte for byte what `MDMFEncoder` (which is built on this) makes.
public final class MDMFStreamEncoder {
    public let capability: MutableCapability
    public let sequenceNumber: UInt64
    public let needed: Int
    public let total: Int
    public let dataLength: UInt64
    public let segmentSize: Int
    public let segments: Int
    public let blockSize: Int
    public let tailBlockSize: Int
    public let salts: [[UInt8]]
    let privateKey: RSAPrivateKey
    let rs: ReedSolomon
    let simdPath: SIMDPath
    /// leaves[share][segment]
    var leaves: [[[UInt8]]]
    var crypttext: [UInt8]

    public init(privateKey: RSAPrivateKey, sequenceNumber: UInt64, needed k: Int, total n: Int, dataLength: UInt64,
                salts given: [[UInt8]]? = nil, simdPath: SIMDPath = .best) throws {
        guard k >= 1, k <= n, n <= 255 else { throw GridError(.usage, "encoding \(k)-of-\(n) is invalid for a mutable file") }
        capability = MutableCapability(format: .mdmf, privateKey: privateKey)
        (self.privateKey, self.sequenceNumber, needed, total, self.dataLength, self.simdPath) = (privateKey, sequenceNumber, k, n, dataLength, simdPath)
        segmentSize = (MDMFEncoder.maxSegmentSize + k - 1) / k * k
        let g = MDMFShare.geometry(needed: k, segmentSize: UInt64(segmentSize), dataLength: dataLength)
        (segments, blockSize, tailBlockSize) = (g.segments, g.blockSize, g.tailBlockSize)
        salts = given ?? (0..<g.segments).map { _ in SecureRandom.bytes(16) }
        guard salts.count == segments, salts.allSatisfy({ $0.count == 16 }) else {
            throw GridError(.usage, "MDMF needs one 16-byte salt per segment (\(segments))")
        }
        rs = try ReedSolomon(k: k, n: n)
        leaves = [[[UInt8]]](repeating: [], count: n)
        for i in 0..<n { leaves[i].reserveCapacity(segments) }
        crypttext = [UInt8](repeating: 0, count: segmentSize)
    }

    /// Bytes of share data per segment (salt + block), the last one aside.
    public var segmentStride: Int { MDMFShare.saltSize + blockSize }
    /// The share data's length.
    public var shareDataCount: Int { MDMFShare.shareDataCount(needed: needed, segmentSize: UInt64(segmentSize), dataLength: dataLength) }
    /// Where segment `seg`'s salt + block lies in the share data.
    public func dataOffset(segment seg: Int) -> Int { seg * segmentStride }
    /// The plaintext bytes of segment `seg`.
    public func plaintextRange(segment seg: Int) -> Range<Int> {
        let start = seg * segmentSize
        return start..<min(Int(dataLength), start + segmentSize)
    }

    /// Encodes segment `seg` (segments must come in order) from its plaintext, writing
    /// each share i's salt + block at `out[i] + offset` (room for `segmentStride` bytes).
    public func encode(segment seg: Int, plaintext: UnsafeRawBufferPointer, into out: [UnsafeMutableRawPointer], at offset: Int) throws {
        precondition(seg == leaves[0].count, "segments are encoded in order")
        let hashes = try encodeSegment(seg, plaintext: plaintext, salt: salts[seg], into: out, at: offset)
        for i in 0..<total { leaves[i].append(hashes[i]) }
    }

    /// Encodes one segment of a file with these parameters under `salt`, writing each
    /// share's salt + block at `out[i] + offset`; returns each share's leaf hash. (A
    /// partial update encodes only the segments it changes this way.)
    public func encodeSegment(_ seg: Int, plaintext: UnsafeRawBufferPointer, salt: [UInt8], into out: [UnsafeMutableRawPointer], at offset: Int) throws -> [[UInt8]] {
        precondition(plaintext.count == plaintextRange(segment: seg).count && out.count == total && salt.count == MDMFShare.saltSize)
        let padded = (plaintext.count + needed - 1) / needed * needed
        let piece = padded / needed
        let aes = try AESCTR(key: TahoeHash.sskDataKey(iv: salt, readkey: capability.readkey!))
        try crypttext.withUnsafeMutableBytes { c in
            c.copyMemory(from: plaintext)
            if padded > plaintext.count { c.baseAddress!.advanced(by: plaintext.count).initializeMemory(as: UInt8.self, repeating: 0, count: padded - plaintext.count) }
            aes.apply(in: UnsafeMutableRawBufferPointer(rebasing: c[0..<plaintext.count]))
            let base = c.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let data = (0..<needed).map { UnsafePointer(base + $0 * piece) }
            let outputs = out.map { ($0 + offset + MDMFShare.saltSize).assumingMemoryBound(to: UInt8.self) }
            try rs.encode(blockSize: piece, data: data, shares: Array(0..<total), outputs: outputs, path: simdPath)
        }
        return (0..<total).map { i in
            let at = out[i] + offset
            salt.withUnsafeBytes { at.copyMemory(from: $0.baseAddress!, byteCount: MDMFShare.saltSize) }
            return TahoeHash.blockHash(UnsafeRawBufferPointer(start: at, count: MDMFShare.saltSize + piece))
        }
    }

    /// After the last segment: every share's head (0..<2167) and block hash tree, and the
    /// signed root. `sign` signs the 59-byte prefix (the key's RSA-PSS by default).
    public func finish(sign: (([UInt8]) throws -> [UInt8])? = nil) throws -> (heads: [[UInt8]], trees: [[UInt8]], shares: [MDMFShare]) {
        guard leaves[0].count == segments else { throw GridError(.internal, "MDMF stream ended after \(leaves[0].count) of \(segments) segments") }
        let blockTrees = leaves.map { HashTree(leaves: $0) }
        let shareTree = HashTree(leaves: blockTrees.map(\.root))
        let encryptedKey = try MutableKeys.encryptPrivateKey(privateKey, writekey: capability.writekey!)
        var shares = (0..<total).map { i in
            MDMFShare(sequenceNumber: sequenceNumber, rootHash: shareTree.root, needed: needed, total: total,
                      segmentSize: UInt64(segmentSize), dataLength: dataLength, encryptedPrivateKey: encryptedKey,
                      shareHashChain: Dictionary(uniqueKeysWithValues: shareTree.neededHashes(leaf: i, includeLeaf: false).map { ($0, shareTree[$0]) }),
                      signature: [], verificationKey: privateKey.publicKey.der, blocks: [], blockHashTree: blockTrees[i].nodes)
        }
        let signature = try (sign ?? privateKey.sign)(shares[0].signedPrefix)
        for i in shares.indices { shares[i].signature = signature }
        let count = shareDataCount
        return (shares.map { $0.serializedHead(dataCount: count) }, shares.map { $0.serializedTree() }, shares)
    }
}
