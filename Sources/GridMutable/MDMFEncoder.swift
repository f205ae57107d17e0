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
        let enc = try MDMFStreamEncoder(privateKey: privateKey, sequenceNumber: sequenceNumber, needed: k, total: n,
                                        dataLength: UInt64(data.count), salts: given, simdPath: simdPath)
        var blocks = [[(salt: [UInt8], block: [UInt8])]](repeating: [], count: n)
        // One scratch row per share, reused for every segment.
        var scratch = [UInt8](repeating: 0, count: n * enc.segmentStride)
        for seg in 0..<enc.segments {
            let r = enc.plaintextRange(segment: seg)
            let stride = seg == enc.segments - 1 ? MDMFShare.saltSize + enc.tailBlockSize : enc.segmentStride
            try data.withUnsafeBytes { d in
                try scratch.withUnsafeMutableBytes { b in
                    try enc.encode(segment: seg, plaintext: UnsafeRawBufferPointer(rebasing: d[r]),
                                   into: (0..<n).map { b.baseAddress! + $0 * enc.segmentStride }, at: 0)
                }
            }
            for i in 0..<n {
                let row = i * enc.segmentStride
                blocks[i].append((Array(scratch[row..<(row + MDMFShare.saltSize)]), Array(scratch[(row + MDMFShare.saltSize)..<(row + stride)])))
            }
        }
        var shares = try enc.finish(sign: sign).shares
        for i in 0..<n { shares[i].blocks = blocks[i] }
        return (enc.capability, shares)
    }
}

