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
        try MutableKeys.checkSigned(capability, number: number, total: share.total, verificationKey: share.verificationKey,
                                    signature: share.signature, signedPrefix: share.signedPrefix)
        let k = share.needed
        guard share.segmentSize == (share.dataLength + UInt64(k) - 1) / UInt64(k) * UInt64(k),
              UInt64(share.shareData.count) == share.segmentSize / UInt64(k) else {
            throw ShareFailure.corrupt(.header, "segment size \(share.segmentSize) and block of \(share.shareData.count) bytes do not fit data length \(share.dataLength)")
        }
        let blockTree = HashTree(leaves: share.dataLength == 0 ? [] : [TahoeHash.blockHash(share.shareData)])
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
        let v = try decodeVersion(shares, simdPath: simdPath)
        return (v.data, v.sequenceNumber)
    }

    /// The newest recoverable version, with what it was encoded with.
    public func decodeVersion(_ shares: [(number: Int, bytes: [UInt8])], simdPath: SIMDPath = .best) throws -> DecodedVersion {
        guard let readkey = capability.readkey else {
            throw GridError(.usage, "a verify capability cannot read the file; give the read or write capability")
        }
        var failures: [Int: ShareFailure] = [:]
        var good: [CheckedShare] = []
        for (n, bytes) in shares {
            do { good.append(try check(bytes, number: n)) } catch { failures[n] = ShareFailure(error) }
        }
        let chosen = try MutableKeys.newestRecoverable(good.map { ($0.number, $0.share) },
                                                       version: { VersionID(sequenceNumber: $0.sequenceNumber, rootHash: $0.rootHash) },
                                                       needed: \.needed, failures: failures)
        let s = chosen[0].value
        let version = DecodedVersion(data: [], sequenceNumber: s.sequenceNumber, rootHash: s.rootHash, needed: s.needed, total: s.total,
                                     iv: s.iv, salts: [], signature: s.signature)
        if s.dataLength == 0 { return version }
        let rs = try ReedSolomon(k: s.needed, n: s.total)
        var data = try rebuildSegment(chosen.map { ($0.key, $0.value.shareData) }, rs: rs, blockSize: Int(s.segmentSize) / s.needed,
                                      length: Int(s.dataLength), simdPath: simdPath)
        let aes = try AESCTR(key: TahoeHash.sskDataKey(iv: s.iv, readkey: readkey))
        data.withUnsafeMutableBytes { aes.apply(in: $0) }
        var out = version
        out.data = data
        return out
    }
}

/// The first `length` bytes of a segment rebuilt from k blocks of `blockSize` (share
/// number, block; data shares are copied, missing ones reconstructed).
public func rebuildSegment(_ blocks: [(number: Int, block: [UInt8])], rs: ReedSolomon, blockSize: Int, length: Int,
                    simdPath: SIMDPath) throws -> [UInt8] {
    let k = blocks.count
    var segment = [UInt8](repeating: 0, count: k * blockSize)
    try segment.withUnsafeMutableBytes { out in
        let base = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
        for (n, block) in blocks where n < k {
            block.withUnsafeBytes { (base + n * blockSize).update(from: $0.baseAddress!.assumingMemoryBound(to: UInt8.self), count: blockSize) }
        }
        let have = Set(blocks.map(\.number))
        let missing = (0..<k).filter { !have.contains($0) }
        if !missing.isEmpty {
            try withPointers(blocks.map(\.block)) { ptrs in
                try rs.reconstruct(blockSize: blockSize, available: ptrs, indices: blocks.map(\.number), missing: missing,
                                   outputs: missing.map { base + $0 * blockSize }, path: simdPath)
            }
        }
    }
    return Array(segment.prefix(length))
}

/// A version of a mutable file: newer sequence numbers first, then the root hash.
/// One version of a mutable file, decoded: its plaintext and what it was encoded with
/// (IV or salts, signature), so that its shares can be made again byte for byte.
public struct DecodedVersion: Sendable {
    public var data: [UInt8]
    public let sequenceNumber: UInt64
    public let rootHash: [UInt8]
    public let needed: Int
    public let total: Int
    /// SDMF's IV; MDMF's per-segment salts.
    public let iv: [UInt8]
    public let salts: [[UInt8]]
    public let signature: [UInt8]
}

public struct VersionID: Hashable, Comparable, Sendable {
    public let sequenceNumber: UInt64
    public let rootHash: [UInt8]
    public init(sequenceNumber: UInt64, rootHash: [UInt8]) {
        self.sequenceNumber = sequenceNumber
        self.rootHash = rootHash
    }
    public static func < (a: VersionID, b: VersionID) -> Bool {
        a.sequenceNumber != b.sequenceNumber ? a.sequenceNumber < b.sequenceNumber : a.rootHash.lexicographicallyPrecedes(b.rootHash)
    }
}

extension VersionID {
    /// How readers, writers, checkers and repairers choose among a mutable file's
    /// recoverable versions: the highest sequence number; among versions with the same one
    /// (two writers that raced, or were cut off from each other) the one held as more
    /// distinct shares, since an acknowledged write reached at least `happy` servers and a
    /// failed one fewer; then the higher root hash (Tahoe's rule), so every client that
    /// sees the same shares decides alike.
    public static func preferred(_ a: VersionID, shares aCount: Int, over b: VersionID, shares bCount: Int) -> Bool {
        if a.sequenceNumber != b.sequenceNumber { return a.sequenceNumber > b.sequenceNumber }
        if aCount != bCount { return aCount > bCount }
        return b < a
    }

    /// The versions of `groups` (each version's shares) most preferred first, counting the
    /// distinct share numbers `number` gives each.
    public static func inPreferredOrder<T>(_ groups: [VersionID: [T]], number: (T) -> Int) -> [VersionID] {
        let distinct = groups.mapValues { Set($0.map(number)).count }
        return groups.keys.sorted { preferred($0, shares: distinct[$0]!, over: $1, shares: distinct[$1]!) }
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
