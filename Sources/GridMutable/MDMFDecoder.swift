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
        guard let readkey = capability.readkey else {
            throw GridError(.usage, "a verify capability cannot read the file; give the read or write capability")
        }
        var failures: [Int: ShareFailure] = [:]
        var good: [(number: Int, share: MDMFShare)] = []
        for (n, bytes) in shares {
            do { good.append((n, try check(bytes, number: n))) } catch { failures[n] = ShareFailure(error) }
        }
        let versions = Dictionary(grouping: good, by: { VersionID(sequenceNumber: $0.share.sequenceNumber, rootHash: $0.share.rootHash) })
        for (_, candidates) in versions.sorted(by: { $0.key > $1.key }) {
            var byNumber: [Int: MDMFShare] = [:]
            for c in candidates where byNumber[c.number] == nil { byNumber[c.number] = c.share }
            let s = candidates[0].share
            guard byNumber.count >= s.needed else { continue }
            let chosen = byNumber.sorted { $0.key < $1.key }.prefix(s.needed)
            let k = s.needed
            let rs = try ReedSolomon(k: k, n: s.total)
            let g = MDMFShare.geometry(needed: k, segmentSize: s.segmentSize, dataLength: s.dataLength)
            var out: [UInt8] = []
            out.reserveCapacity(Int(s.dataLength))
            for seg in 0..<g.segments {
                let blen = seg == g.segments - 1 ? g.tailBlockSize : g.blockSize
                var segment = [UInt8](repeating: 0, count: k * blen)
                try segment.withUnsafeMutableBytes { buf in
                    let base = buf.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    for (n, share) in chosen where n < k {
                        share.blocks[seg].block.withUnsafeBytes { (base + n * blen).update(from: $0.baseAddress!.assumingMemoryBound(to: UInt8.self), count: blen) }
                    }
                    let have = Set(chosen.map(\.key))
                    let lost = (0..<k).filter { !have.contains($0) }
                    if !lost.isEmpty {
                        try withPointers(chosen.map { $0.value.blocks[seg].block }) { ptrs in
                            try rs.reconstruct(blockSize: blen, available: ptrs, indices: chosen.map(\.key), missing: lost,
                                               outputs: lost.map { base + $0 * blen }, path: simdPath)
                        }
                    }
                }
                let length = seg == g.segments - 1 ? Int(s.dataLength) - seg * Int(s.segmentSize) : Int(s.segmentSize)
                var plain = Array(segment.prefix(length))
                let aes = try AESCTR(key: TahoeHash.sskDataKey(iv: chosen.first!.value.blocks[seg].salt, readkey: readkey))
                plain.withUnsafeMutableBytes { aes.apply(in: $0) }
                out += plain
            }
            return (out, s.sequenceNumber)
        }
        throw ImmutableError.notEnoughShares(needed: good.first?.share.needed ?? 1, usable: Set(good.map(\.number)).count, failures: failures)
    }
}
