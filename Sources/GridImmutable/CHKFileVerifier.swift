import GridCodec
import GridCrypto
import GridFormat

/// What verifying every share of a CHK file found.
public struct CHKVerification {
    /// Shares that failed a check (or could not be read), with why.
    public var bad: [(reader: ShareReader, failure: ShareFailure)] = []
    /// Whether every segment rebuilt from k good blocks matched the crypttext hash tree;
    /// nil when fewer than k good shares were left to rebuild from.
    public var ciphertextMatches: Bool?
}

/// Verifies every share of a CHK file in one pass over the shares: each share's header,
/// URI extension block (against the capability), share hash chain, block hash tree and
/// crypttext hash tree, every block of every share against its hash; and, segment by
/// segment, the ciphertext rebuilt from k of the good blocks already read against the
/// crypttext hash tree. Each block is read once (the decoder would read k shares again).
/// Works from a verify capability: no key is needed.
public struct CHKFileVerifier {
    public let verifier: CHKVerifierCapability
    public let simdPath: SIMDPath
    public let threads: Int
    /// Segments each reader is told to fetch ahead.
    public let readahead: Int

    public init(verifier: CHKVerifierCapability, simdPath: SIMDPath = .best, threads: Int = 2, readahead: Int = 8) {
        (self.verifier, self.simdPath, self.threads, self.readahead) = (verifier, simdPath, max(1, threads), max(1, readahead))
    }

    public func verify(_ readers: [ShareReader]) -> CHKVerification {
        var result = CHKVerification()
        let validator = CHKShareValidator(verifier)
        var shape: CHKFileShape?
        for r in readers where shape == nil {
            do { shape = try validator.fileShape(from: r) } catch { result.bad.append((r, ShareFailure(error))) }
        }
        guard let shape else { return result }
        let g = shape.geometry

        // Every share's structure and trees (small reads).
        var live: [ValidatedShare] = []
        var ctLeaves: [[UInt8]]?
        for r in readers where !result.bad.contains(where: { $0.reader === r }) {
            do {
                let share = try validator.validate(r, shape: shape)
                let leaves = try validator.crypttextLeaves(share, shape: shape)
                if ctLeaves == nil { ctLeaves = leaves }
                live.append(share)
            } catch {
                result.bad.append((r, ShareFailure(error)))
            }
        }
        guard let ctLeaves, let rs = try? ReedSolomon(k: g.k, n: g.n) else { return result }

        let k = g.k
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, live.count) * g.blockSize, alignment: 64)
        defer { buffers.deallocate() }
        let segBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: g.segmentSize, alignment: 64)
        defer { segBuf.deallocate() }
        let failures = UnsafeMutableBufferPointer<ShareFailure?>.allocate(capacity: max(1, live.count))
        failures.initialize(repeating: nil)
        defer { failures.deinitialize(); failures.deallocate() }
        var alive = Array(repeating: true, count: live.count)
        var matches = true
        var decodable = true

        for seg in 0..<g.numSegments {
            let blen = g.blockLength(seg)
            if seg % max(1, readahead / 2) == 0 {
                let upTo = min(g.numSegments, seg + readahead)
                for (i, share) in live.enumerated() where alive[i] {
                    share.reader.prefetch((seg..<upTo).map { (share.blockOffset($0), g.blockLength($0)) })
                }
            }
            let shares = live
            let flags = alive
            runJobs(live.count, threads: threads) { i in
                guard flags[i] else { return }
                let buf = UnsafeMutableRawBufferPointer(rebasing: buffers[(i * g.blockSize)..<(i * g.blockSize + blen)])
                do {
                    try shares[i].reader.read(at: shares[i].blockOffset(seg), into: buf)
                    try validator.checkBlock(UnsafeRawBufferPointer(buf), of: shares[i], segment: seg)
                } catch {
                    failures[i] = ShareFailure(error, part: .block(segment: seg))
                }
            }
            for i in 0..<live.count where alive[i] {
                if let why = failures[i] {
                    result.bad.append((live[i].reader, why))
                    failures[i] = nil
                    alive[i] = false
                }
            }
            // Rebuild the ciphertext segment from k distinct good blocks, data shares first.
            guard decodable else { continue }
            var chosen: [Int: Int] = [:]  // share number → index in live
            for i in live.indices.sorted(by: { live[$0].shareNumber < live[$1].shareNumber }) where alive[i] && chosen.count < k {
                if chosen[live[i].shareNumber] == nil { chosen[live[i].shareNumber] = i }
            }
            guard chosen.count == k else { decodable = false; continue }
            let base = segBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let blocks = buffers.baseAddress!.assumingMemoryBound(to: UInt8.self)
            for (number, i) in chosen where number < k {
                (base + number * blen).update(from: blocks + i * g.blockSize, count: blen)
            }
            let missing = (0..<k).filter { chosen[$0] == nil }
            if !missing.isEmpty {
                let order = chosen.sorted { $0.key < $1.key }
                do {
                    try rs.reconstruct(blockSize: blen, available: order.map { UnsafePointer(blocks + $0.value * g.blockSize) },
                                       indices: order.map(\.key), missing: missing,
                                       outputs: missing.map { base + $0 * blen }, path: simdPath)
                } catch {
                    decodable = false
                    continue
                }
            }
            let ct = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(segBuf)[0..<g.segmentLength(seg)])
            if TahoeHash.crypttextSegmentHash(ct) != ctLeaves[seg] { matches = false }
        }
        result.ciphertextMatches = decodable ? matches : nil
        return result
    }
}
