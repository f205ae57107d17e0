/// BLAKE2b (RFC 7693), unkeyed, with any digest size from 1 to 64 bytes.
///
/// Tahoe-LAFS stores lease secrets in version-2 share containers as BLAKE2b with a
/// 32-byte digest. OpenSSL 3.0 only offers the 64-byte variant (the digest size enters
/// the parameter block, so truncating BLAKE2b-512 gives different bytes), hence this
/// small implementation. It hashes only 32-byte secrets, so speed does not matter.
public enum BLAKE2b {
    static let iv: [UInt64] = [
        0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
        0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
    ]
    static let sigma: [[Int]] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
        [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
        [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
        [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
        [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
        [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
        [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
        [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
        [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    ]

    public static func hash(_ data: [UInt8], digestSize: Int = 32) -> [UInt8] {
        precondition(digestSize >= 1 && digestSize <= 64)
        var h = iv
        h[0] ^= 0x0101_0000 ^ UInt64(digestSize)  // depth 1, fanout 1, no key
        var counter: UInt64 = 0
        var offset = 0
        // Every block but the last is compressed as non-final; the last (possibly empty) block is final.
        while data.count - offset > 128 {
            counter += 128
            compress(&h, block: Array(data[offset..<(offset + 128)]), counter: counter, final: false)
            offset += 128
        }
        var last = Array(data[offset...])
        counter += UInt64(last.count)
        last += [UInt8](repeating: 0, count: 128 - last.count)
        compress(&h, block: last, counter: counter, final: true)
        var out: [UInt8] = []
        for w in h { for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: w >> UInt64(8 * i))) } }
        return Array(out.prefix(digestSize))
    }

    static func compress(_ h: inout [UInt64], block: [UInt8], counter: UInt64, final: Bool) {
        var m = [UInt64](repeating: 0, count: 16)
        for i in 0..<16 {
            var w: UInt64 = 0
            for j in 0..<8 { w |= UInt64(block[i * 8 + j]) << UInt64(8 * j) }
            m[i] = w
        }
        var v = h + iv
        v[12] ^= counter
        if final { v[14] = ~v[14] }
        func g(_ a: Int, _ b: Int, _ c: Int, _ d: Int, _ x: UInt64, _ y: UInt64) {
            v[a] = v[a] &+ v[b] &+ x
            v[d] = (v[d] ^ v[a]).rotatedRight(32)
            v[c] = v[c] &+ v[d]
            v[b] = (v[b] ^ v[c]).rotatedRight(24)
            v[a] = v[a] &+ v[b] &+ y
            v[d] = (v[d] ^ v[a]).rotatedRight(16)
            v[c] = v[c] &+ v[d]
            v[b] = (v[b] ^ v[c]).rotatedRight(63)
        }
        for r in 0..<12 {
            let s = sigma[r % 10]
            g(0, 4, 8, 12, m[s[0]], m[s[1]])
            g(1, 5, 9, 13, m[s[2]], m[s[3]])
            g(2, 6, 10, 14, m[s[4]], m[s[5]])
            g(3, 7, 11, 15, m[s[6]], m[s[7]])
            g(0, 5, 10, 15, m[s[8]], m[s[9]])
            g(1, 6, 11, 12, m[s[10]], m[s[11]])
            g(2, 7, 8, 13, m[s[12]], m[s[13]])
            g(3, 4, 9, 14, m[s[14]], m[s[15]])
        }
        for i in 0..<8 { h[i] ^= v[i] ^ v[i + 8] }
    }
}

extension UInt64 {
    @inline(__always) func rotatedRight(_ n: UInt64) -> UInt64 { (self >> n) | (self << (64 - n)) }
}
