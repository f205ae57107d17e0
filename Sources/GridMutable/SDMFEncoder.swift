import GridCodec
import GridCrypto
import GridFormat
import GridSystem

/// Encodes one version of an SDMF mutable file as Tahoe-LAFS 1.20 does
/// (`allmydata/mutable/publish.py`): the whole file is one segment, encrypted with
/// AES-CTR under `ssk_readkey_data_hash(IV, readkey)`, padded to a multiple of k and
/// Reed-Solomon coded into N blocks; each share's block hash tree (one leaf) roots the
/// share hash tree, whose root is signed with the file's RSA key together with the
/// sequence number, IV and parameters. The private key travels in every share, encrypted
/// with the writekey, so any write-capability holder can sign the next version.
public enum SDMFEncoder {
    /// The shares of version `sequenceNumber` of `data`. `iv` is fresh randomness in
    /// normal use; `sign` signs the 75-byte prefix (the key's RSA-PSS by default). Both are
    /// parameters so that Tahoe's published shares can be reproduced byte for byte.
    public static func encode(_ data: [UInt8], privateKey: RSAPrivateKey, sequenceNumber: UInt64, needed k: Int, total n: Int,
                              iv: [UInt8] = SecureRandom.bytes(16), simdPath: SIMDPath = .best,
                              sign: (([UInt8]) throws -> [UInt8])? = nil) throws -> (capability: MutableCapability, shares: [SDMFShare]) {
        guard k >= 1, k <= n, n <= 255 else { throw GridError(.usage, "encoding \(k)-of-\(n) is invalid for a mutable file") }
        guard iv.count == 16 else { throw GridError(.usage, "an SDMF IV is 16 bytes") }
        let cap = MutableCapability(format: .sdmf, privateKey: privateKey)
        let segmentSize = (data.count + k - 1) / k * k
        let pieceSize = segmentSize / k

        // Encrypt, pad, split into k pieces and code them into N blocks.
        var crypttext = data + [UInt8](repeating: 0, count: segmentSize - data.count)
        let aes = try AESCTR(key: TahoeHash.sskDataKey(iv: iv, readkey: cap.readkey!))
        crypttext.withUnsafeMutableBytes { aes.apply(in: UnsafeMutableRawBufferPointer(rebasing: $0[0..<data.count])) }
        let pieces = (0..<k).map { Array(crypttext[($0 * pieceSize)..<(($0 + 1) * pieceSize)]) }
        // An empty file has no segment at all (Tahoe: num_segments 0): empty blocks, and each
        // block hash tree is the tree of no leaves.
        let blocks = data.isEmpty ? [[UInt8]](repeating: [], count: n) : try ReedSolomon(k: k, n: n).encode(pieces, path: simdPath)

        // Hash trees: one block per share, so each block hash tree is that block's hash.
        let blockTrees = blocks.map { HashTree(leaves: data.isEmpty ? [] : [TahoeHash.blockHash($0)]) }
        let shareTree = HashTree(leaves: blockTrees.map(\.root))
        let encryptedKey = try MutableKeys.encryptPrivateKey(privateKey, writekey: cap.writekey!)

        var shares = (0..<n).map { i in
            SDMFShare(sequenceNumber: sequenceNumber, rootHash: shareTree.root, iv: iv, needed: k, total: n,
                      segmentSize: UInt64(segmentSize), dataLength: UInt64(data.count),
                      verificationKey: privateKey.publicKey.der, signature: [],
                      shareHashChain: Dictionary(uniqueKeysWithValues: shareTree.neededHashes(leaf: i, includeLeaf: false).map { ($0, shareTree[$0]) }),
                      blockHashTree: blockTrees[i].nodes, shareData: blocks[i], encryptedPrivateKey: encryptedKey)
        }
        let signature = try (sign ?? privateKey.sign)(shares[0].signedPrefix)
        for i in shares.indices { shares[i].signature = signature }
        return (cap, shares)
    }
}
