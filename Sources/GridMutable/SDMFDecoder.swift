import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridSystem

/// Reads one version of an SDMF file from its shares, checking everything a reader can:
/// the verification key against the capability's fingerprint, the signature over each
/// share's signed prefix, each block against its block hash tree, that tree against the
/// share hash chain and the signed root hash. Bad shares are set aside with a typed
/// `ShareFailure`; any k good shares of the chosen version rebuild the file.
public struct SDMFDecoder {
    public let capability: MutableCapability

    public init(capability: MutableCapability) throws {
        guard capability.format == .sdmf else { throw GridError(.usage, "not an SDMF capability") }
        self.capability = capability
    }

    /// A share that passed every check.
    public struct CheckedShare {
        public let number: Int
        public let share: SDMFShare
    }

    /// Checks one share (its number is the one the server filed it under).
    public func check(_ bytes: [UInt8], number: Int) throws -> CheckedShare {
        let share: SDMFShare
        do { share = try SDMFShare(parsing: bytes) } catch { throw ShareFailure(error, part: .header) }
        guard number >= 0, number < share.total else {
            throw ShareFailure.corrupt(.shareNumber, "share number \(number) is outside 0..<\(share.total)")
        }
        guard TahoeHash.sskPubkeyFingerprint(publicKey: share.verificationKey) == capability.fingerprint,
              let key = try? RSAPublicKey(der: share.verificationKey) else {
            throw ShareFailure.corrupt(.header, "verification key does not match the capability's fingerprint")
        }
        guard key.isValidSignature(share.signature, for: share.signedPrefix) else {
            throw ShareFailure.corrupt(.header, "signature does not match the signed prefix")
        }
        let k = share.needed
        guard share.segmentSize == (share.dataLength + UInt64(k) - 1) / UInt64(k) * UInt64(k),
              UInt64(share.shareData.count) == share.segmentSize / UInt64(k) else {
            throw ShareFailure.corrupt(.header, "segment size \(share.segmentSize) and block of \(share.shareData.count) bytes do not fit data length \(share.dataLength)")
        }
        let blockTree = HashTree(leaves: [TahoeHash.blockHash(share.shareData)])
        guard share.blockHashTree == blockTree.nodes else {
            throw ShareFailure.corrupt(.block(segment: 0), "block does not match its hash tree")
        }
        let leafNode = HashTree.paddedCount(share.total) - 1 + number
        guard HashTree.rootFromLeaf(leafNode: leafNode, leafHash: blockTree.root, hashes: share.shareHashChain) == share.rootHash else {
            throw ShareFailure.corrupt(.shareHashChain, "share hash chain does not lead to the signed root hash")
        }
        return CheckedShare(number: number, share: share)
    }

    /// The plaintext of the newest version that k good shares agree on (by sequence number,
    /// then root hash); throws with every share's failure when none is recoverable.
    public func decode(_ shares: [(number: Int, bytes: [UInt8])], simdPath: SIMDPath = .best) throws -> (data: [UInt8], sequenceNumber: UInt64) {
        guard let readkey = capability.readkey else {
            throw GridError(.usage, "a verify capability cannot read the file; give the read or write capability")
        }
        var failures: [Int: ShareFailure] = [:]
        var good: [CheckedShare] = []
        for (n, bytes) in shares {
            do { good.append(try check(bytes, number: n)) } catch { failures[n] = ShareFailure(error) }
        }
        // Versions, newest first: (seqnum, root hash) → distinct good shares.
        let versions = Dictionary(grouping: good, by: { VersionID(sequenceNumber: $0.share.sequenceNumber, rootHash: $0.share.rootHash) })
        for (_, candidates) in versions.sorted(by: { $0.key > $1.key }) {
            var byNumber: [Int: CheckedShare] = [:]
            for c in candidates where byNumber[c.number] == nil { byNumber[c.number] = c }
            let s = candidates[0].share
            guard byNumber.count >= s.needed else { continue }
            let chosen = byNumber.sorted { $0.key < $1.key }.prefix(s.needed)
            let rs = try ReedSolomon(k: s.needed, n: s.total)
            let blockSize = Int(s.segmentSize) / s.needed
            var segment = [UInt8](repeating: 0, count: Int(s.segmentSize))
            try segment.withUnsafeMutableBytes { out in
                let base = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
                var have: [Int] = []
                for (n, c) in chosen where n < s.needed {
                    c.share.shareData.withUnsafeBytes { (base + n * blockSize).update(from: $0.baseAddress!.assumingMemoryBound(to: UInt8.self), count: blockSize) }
                    have.append(n)
                }
                let missing = (0..<s.needed).filter { !have.contains($0) }
                if !missing.isEmpty {
                    let blocks = chosen.map { $0.value.share.shareData }
                    try withPointers(blocks) { ptrs in
                        try rs.reconstruct(blockSize: blockSize, available: ptrs, indices: chosen.map(\.key), missing: missing,
                                           outputs: missing.map { base + $0 * blockSize }, path: simdPath)
                    }
                }
            }
            var data = Array(segment.prefix(Int(s.dataLength)))
            let aes = try AESCTR(key: TahoeHash.sskDataKey(iv: s.iv, readkey: readkey))
            data.withUnsafeMutableBytes { aes.apply(in: $0) }
            return (data, s.sequenceNumber)
        }
        throw ImmutableError.notEnoughShares(needed: good.first?.share.needed ?? 1, usable: Set(good.map(\.number)).count, failures: failures)
    }
}

/// A version of a mutable file: newer sequence numbers first, then the root hash.
public struct VersionID: Hashable, Comparable, Sendable {
    public let sequenceNumber: UInt64
    public let rootHash: [UInt8]
    public static func < (a: VersionID, b: VersionID) -> Bool {
        a.sequenceNumber != b.sequenceNumber ? a.sequenceNumber < b.sequenceNumber : a.rootHash.lexicographicallyPrecedes(b.rootHash)
    }
}

/// Calls `body` with stable pointers to each array's bytes.
func withPointers<R>(_ arrays: [[UInt8]], _ body: ([UnsafePointer<UInt8>]) throws -> R) rethrows -> R {
    var ptrs: [UnsafePointer<UInt8>] = []
    func go(_ i: Int) throws -> R {
        if i == arrays.count { return try body(ptrs) }
        return try arrays[i].withUnsafeBufferPointer { b in
            ptrs.append(b.baseAddress!)
            return try go(i + 1)
        }
    }
    return try go(0)
}
