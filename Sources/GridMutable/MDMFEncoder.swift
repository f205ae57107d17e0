import GridCodec
import GridCrypto
import GridFormat
import GridSystem

/// Encodes one version of an MDMF mutable file as Tahoe-LAFS 1.20 does: segments of
/// `next_multiple(131072, k)` bytes, each encrypted with AES-CTR under its own salt's data
/// key (`ssk_readkey_data_hash(salt, readkey)`), padded to a multiple of k and coded into N
/// blocks; each share's block hash tree has one leaf per segment (the hash of salt +
/// block), its root is the share's leaf of the share hash tree, whose root is signed.
public enum MDMFEncoder {
    /// Tahoe's maximum MDMF segment size before rounding up to a multiple of k.
    public static let maxSegmentSize = 131072

    /// `salts` (one 16-byte salt per segment) are fresh randomness in normal use; given,
    /// with `sign`, Tahoe's published shares can be reproduced byte for byte.
    public static func encode(_ data: [UInt8], privateKey: RSAPrivateKey, sequenceNumber: UInt64, needed k: Int, total n: Int,
                              salts given: [[UInt8]]? = nil, simdPath: SIMDPath = .best,
                              sign: (([UInt8]) throws -> [UInt8])? = nil) throws -> (capability: MutableCapability, shares: [MDMFShare]) {
        guard k >= 1, k <= n, n <= 255 else { throw GridError(.usage, "encoding \(k)-of-\(n) is invalid for a mutable file") }
        let cap = MutableCapability(format: .mdmf, privateKey: privateKey)
        let segmentSize = (maxSegmentSize + k - 1) / k * k
        let segments = (data.count + segmentSize - 1) / segmentSize
        let salts = given ?? (0..<segments).map { _ in SecureRandom.bytes(16) }
        guard salts.count == segments, salts.allSatisfy({ $0.count == 16 }) else {
            throw GridError(.usage, "MDMF needs one 16-byte salt per segment (\(segments))")
        }
        let rs = try ReedSolomon(k: k, n: n)
        var blocks = [[(salt: [UInt8], block: [UInt8])]](repeating: [], count: n)
        var leaves = [[[UInt8]]](repeating: [], count: n)
        for seg in 0..<segments {
            let start = seg * segmentSize
            let chunk = Array(data[start..<min(data.count, start + segmentSize)])
            let padded = (chunk.count + k - 1) / k * k
            var crypttext = chunk + [UInt8](repeating: 0, count: padded - chunk.count)
            let aes = try AESCTR(key: TahoeHash.sskDataKey(iv: salts[seg], readkey: cap.readkey!))
            crypttext.withUnsafeMutableBytes { aes.apply(in: UnsafeMutableRawBufferPointer(rebasing: $0[0..<chunk.count])) }
            let piece = padded / k
            let coded = try rs.encode((0..<k).map { Array(crypttext[($0 * piece)..<(($0 + 1) * piece)]) }, path: simdPath)
            for i in 0..<n {
                blocks[i].append((salts[seg], coded[i]))
                leaves[i].append(TahoeHash.blockHash(salts[seg] + coded[i]))
            }
        }
        let blockTrees = leaves.map { HashTree(leaves: $0) }
        let shareTree = HashTree(leaves: blockTrees.map(\.root))
        let encryptedKey = try MutableKeys.encryptPrivateKey(privateKey, writekey: cap.writekey!)
        var shares = (0..<n).map { i in
            MDMFShare(sequenceNumber: sequenceNumber, rootHash: shareTree.root, needed: k, total: n,
                      segmentSize: UInt64(segmentSize), dataLength: UInt64(data.count), encryptedPrivateKey: encryptedKey,
                      shareHashChain: Dictionary(uniqueKeysWithValues: shareTree.neededHashes(leaf: i, includeLeaf: false).map { ($0, shareTree[$0]) }),
                      signature: [], verificationKey: privateKey.publicKey.der, blocks: blocks[i], blockHashTree: blockTrees[i].nodes)
        }
        let signature = try (sign ?? privateKey.sign)(shares[0].signedPrefix)
        for i in shares.indices { shares[i].signature = signature }
        return (cap, shares)
    }
}
