import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridSystem

/// Reads one version of an MDMF file from its shares: each share's verification key
/// against the capability's fingerprint, its signature over the signed prefix, every
/// block (with its salt) against the block hash tree, that tree against the share hash
/// chain and the signed root. Any k good shares of the newest recoverable version
/// rebuild the file, segment by segment, each decrypted with its own salt's key.
public struct MDMFDecoder {
    public let capability: MutableCapability

    public init(capability: MutableCapability) throws {
        guard capability.format == .mdmf else { throw GridError(.usage, "not an MDMF capability") }
        self.capability = capability
    }

    public func check(_ bytes: [UInt8], number: Int) throws -> MDMFShare {
        let share: MDMFShare
        do { share = try MDMFShare(parsing: bytes) } catch { throw ShareFailure(error, part: .header) }
        try MutableKeys.checkSigned(capability, number: number, total: share.total, verificationKey: share.verificationKey,
                                    signature: share.signature, signedPrefix: share.signedPrefix)
        let tree = HashTree(leaves: share.blocks.map { TahoeHash.blockHash($0.salt + $0.block) })
        guard tree.nodes == share.blockHashTree else {
            let bad = share.blocks.indices.first { i in share.blockHashTree.count > tree.firstLeafIndex + i
                && share.blockHashTree[tree.firstLeafIndex + i] != tree.nodes[tree.firstLeafIndex + i] } ?? 0
            throw ShareFailure.corrupt(.block(segment: bad), "block \(bad) (or its salt) does not match the block hash tree")
        }
        let leafNode = HashTree.paddedCount(share.total) - 1 + number
        guard HashTree.rootFromLeaf(leafNode: leafNode, leafHash: tree.root, hashes: share.shareHashChain) == share.rootHash else {
            throw ShareFailure.corrupt(.shareHashChain, "share hash chain does not lead to the signed root hash")
        }
        return share
    }

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
        var good: [(number: Int, share: MDMFShare)] = []
        for (n, bytes) in shares {
            do { good.append((n, try check(bytes, number: n))) } catch { failures[n] = ShareFailure(error) }
        }
        let chosen = try MutableKeys.newestRecoverable(good, version: { VersionID(sequenceNumber: $0.sequenceNumber, rootHash: $0.rootHash) },
                                                       needed: \.needed, failures: failures)
        let s = chosen[0].value
        let rs = try ReedSolomon(k: s.needed, n: s.total)
        let g = MDMFShare.geometry(needed: s.needed, segmentSize: s.segmentSize, dataLength: s.dataLength)
        var out: [UInt8] = []
        out.reserveCapacity(Int(s.dataLength))
        for seg in 0..<g.segments {
            let last = seg == g.segments - 1
            var plain = try rebuildSegment(chosen.map { ($0.key, $0.value.blocks[seg].block) }, rs: rs,
                                           blockSize: last ? g.tailBlockSize : g.blockSize,
                                           length: last ? Int(s.dataLength) - seg * Int(s.segmentSize) : Int(s.segmentSize),
                                           simdPath: simdPath)
            let aes = try AESCTR(key: TahoeHash.sskDataKey(iv: s.blocks[seg].salt, readkey: readkey))
            plain.withUnsafeMutableBytes { aes.apply(in: $0) }
            out += plain
        }
        return DecodedVersion(data: out, sequenceNumber: s.sequenceNumber, rootHash: s.rootHash, needed: s.needed, total: s.total,
                              iv: [], salts: s.blocks.map(\.salt), signature: s.signature)
    }
}
