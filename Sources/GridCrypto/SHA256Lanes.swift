import CGridHash
import GridSystem

/// How SHA-256 runs when there are independent messages to hash at once (Tahoe's
/// block hashes: n blocks of one length per segment; the whole-file and per-segment
/// ciphertext hashes over the same bytes). Every path gives identical digests.
public enum SHA256Path: String, CaseIterable, Sendable, CustomStringConvertible {
    /// OpenSSL, one message after the other (SHA-NI or AVX2 assembly inside OpenSSL).
    case openssl
    /// grid's C, two messages' rounds interleaved on the x86 SHA extensions: one
    /// message's sha256rnds2 fills the latency of the other's.
    case shani2
    /// `shani2` for one or two messages, and sixteen messages of one length at once in
    /// the 32-bit lanes of AVX-512 registers (`TahoeHash.taggedSameLength`: an upload's
    /// block hashes, batched across segments). Needs AVX-512 F and BW and SHA-NI.
    case avx512
    /// grid's plain C, two messages one after the other: the reference the tests
    /// compare the others with (slow; never chosen by itself).
    case portable

    public var description: String { rawValue }

    public var isSupported: Bool {
        switch self {
        case .openssl: return true
        case .shani2: return grid_sha256_supported(Int32(GRID_SHA256_SHANI)) != 0
        case .avx512:
            return grid_sha256_supported(Int32(GRID_SHA256_SHANI)) != 0 && grid_sha256_supported(Int32(GRID_SHA256_AVX512)) != 0
        case .portable: return true
        }
    }

    /// The name of the environment variable that forces a path.
    public static let environmentVariable = "GRID_SHA"

    /// The fastest path here: AVX-512 lanes and SHA-NI, else SHA-NI lanes, else OpenSSL.
    public static var best: SHA256Path {
        if SHA256Path.avx512.isSupported { return .avx512 }
        return SHA256Path.shani2.isSupported ? .shani2 : .openssl
    }

    /// The path this process uses: `GRID_SHA` when it names a supported path, else `best`.
    public static let current: SHA256Path = {
        if let raw = CurrentProcess.environment(environmentVariable), let p = SHA256Path(rawValue: raw.lowercased()), p.isSupported {
            return p
        }
        return best
    }()
}

/// One SHA-256 message in progress, which can be fed alongside another
/// (`SHA256Lane.update(_:_:_:_:)`) so both run at once. Not thread-safe.
public final class SHA256Lane {
    public let path: SHA256Path
    /// grid's C paths: [0, 32) the eight state words, [32, 96) a partial block.
    private let mem: UnsafeMutableRawPointer
    private var pending = 0
    private var length: UInt64 = 0
    /// The OpenSSL path.
    private let openssl: SHA256?

    static let initial: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                            0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]

    public init(path: SHA256Path = .current) {
        self.path = path
        mem = UnsafeMutableRawPointer.allocate(byteCount: 96, alignment: 16)
        openssl = path == .openssl ? SHA256() : nil
        reset()
    }

    deinit { mem.deallocate() }

    private var state: UnsafeMutablePointer<UInt32> { mem.assumingMemoryBound(to: UInt32.self) }
    private var block: UnsafeMutablePointer<UInt8> { (mem + 32).assumingMemoryBound(to: UInt8.self) }
    private var cPath: Int32 { path == .shani2 || path == .avx512 ? Int32(GRID_SHA256_SHANI) : Int32(GRID_SHA256_PORTABLE) }

    /// Starts a new message.
    public func reset() {
        if let o = openssl { o.reset(); return }
        for i in 0..<8 { state[i] = Self.initial[i] }
        pending = 0
        length = 0
    }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        if let o = openssl { o.update(bytes); return }
        length &+= UInt64(bytes.count)
        feed(bytes)
    }

    /// Compresses what completes blocks and keeps the rest (the bytes are counted already).
    private func feed(_ bytes: UnsafeRawBufferPointer) {
        var rest = absorbPending(bytes)
        let whole = rest.count / 64
        if whole > 0 {
            _ = grid_sha256_compress1(cPath, state, rest.baseAddress!.assumingMemoryBound(to: UInt8.self), whole)
            rest = UnsafeRawBufferPointer(rebasing: rest[(whole * 64)...])
        }
        keep(rest)
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// Feeds `da` to `a` and `db` to `b`, the two at once where the path allows.
    public static func update(_ a: SHA256Lane, _ da: UnsafeRawBufferPointer, _ b: SHA256Lane, _ db: UnsafeRawBufferPointer) {
        guard a.path == b.path, a.path != .openssl, a !== b else {
            a.update(da)
            b.update(db)
            return
        }
        a.length &+= UInt64(da.count)
        b.length &+= UInt64(db.count)
        var ra = a.absorbPending(da), rb = b.absorbPending(db)
        let both = min(ra.count / 64, rb.count / 64)
        if both > 0 {
            _ = grid_sha256_compress2(a.cPath, a.state, b.state,
                                      ra.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                      rb.baseAddress!.assumingMemoryBound(to: UInt8.self), both)
            ra = UnsafeRawBufferPointer(rebasing: ra[(both * 64)...])
            rb = UnsafeRawBufferPointer(rebasing: rb[(both * 64)...])
        }
        a.feed(ra)
        b.feed(rb)
    }

    /// The digest; the lane starts a new message.
    public func finalize() -> [UInt8] {
        if let o = openssl { return o.finalize() }
        let bits = length &* 8
        var tail = [UInt8](repeating: 0, count: 128)
        for i in 0..<pending { tail[i] = block[i] }
        tail[pending] = 0x80
        let blocks = pending + 9 > 64 ? 2 : 1
        for i in 0..<8 { tail[blocks * 64 - 1 - i] = UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i))) }
        tail.withUnsafeBufferPointer { _ = grid_sha256_compress1(cPath, state, $0.baseAddress!, blocks) }
        let out = Self.digest(state)
        reset()
        return out
    }

    /// The digest of eight state words (big-endian bytes).
    static func digest(_ state: UnsafePointer<UInt32>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        for i in 0..<8 {
            let w = state[i]
            out[4 * i] = UInt8(w >> 24); out[4 * i + 1] = UInt8((w >> 16) & 0xff)
            out[4 * i + 2] = UInt8((w >> 8) & 0xff); out[4 * i + 3] = UInt8(w & 0xff)
        }
        return out
    }

    /// Completes the partial block from the front of `bytes` (compressing it when full);
    /// returns what is left.
    private func absorbPending(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        guard pending > 0 else { return bytes }
        let take = min(64 - pending, bytes.count)
        for i in 0..<take { block[pending + i] = bytes[i] }
        pending += take
        if pending == 64 {
            _ = grid_sha256_compress1(cPath, state, block, 1)
            pending = 0
        }
        return UnsafeRawBufferPointer(rebasing: bytes[take...])
    }

    /// Keeps fewer than 64 bytes as the partial block (which is empty when called).
    private func keep(_ rest: UnsafeRawBufferPointer) {
        for i in 0..<rest.count { block[pending + i] = rest[i] }
        pending += rest.count
    }
}

/// Tahoe's tagged hash, SHA256d(netstring(tag) || data...), on a lane that can run
/// beside another.
public final class TaggedLane {
    public let lane: SHA256Lane
    private let prefix: [UInt8]

    public init(tag: String, path: SHA256Path = .current) {
        prefix = Netstring.encode(tag)
        lane = SHA256Lane(path: path)
        lane.update(prefix)
    }

    public func update(_ bytes: UnsafeRawBufferPointer) { lane.update(bytes) }

    /// The digest; starts over with the same tag.
    public func finalize() -> [UInt8] {
        let inner = lane.finalize()
        lane.update(inner)
        let d = lane.finalize()
        lane.update(prefix)
        return d
    }

    public static func update(_ a: TaggedLane, _ da: UnsafeRawBufferPointer, _ b: TaggedLane, _ db: UnsafeRawBufferPointer) {
        SHA256Lane.update(a.lane, da, b.lane, db)
    }
}

extension TahoeHash {
    /// tagged_hash(tag, x) of every buffer, two at a time where the path allows.
    public static func taggedEach(_ tag: String, _ buffers: [UnsafeRawBufferPointer], path: SHA256Path = .current) -> [[UInt8]] {
        guard path != .openssl else { return buffers.map { tagged(tag, $0) } }
        var out: [[UInt8]] = []
        out.reserveCapacity(buffers.count)
        let a = TaggedLane(tag: tag, path: path), b = TaggedLane(tag: tag, path: path)
        var i = 0
        while i + 1 < buffers.count {
            TaggedLane.update(a, buffers[i], b, buffers[i + 1])
            out.append(a.finalize())
            out.append(b.finalize())
            i += 2
        }
        if i < buffers.count {
            a.update(buffers[i])
            out.append(a.finalize())
        }
        return out
    }
}

extension TahoeHash {
    /// tagged_hash(tag, x) of buffers that all have the same length, in order. On
    /// `.avx512` sixteen at a time in the lanes of AVX-512 registers, which pays only with
    /// many buffers (ten lanes of sixteen run no faster than SHA-NI pairs); `.portable`
    /// runs the same packing one lane after another (what the tests compare with); the
    /// other paths hash two at a time (`taggedEach`).
    public static func taggedSameLength(_ tag: String, _ buffers: [UnsafeRawBufferPointer], path: SHA256Path = .current) -> [[UInt8]] {
        switch path {
        case .avx512: return taggedLanes(Netstring.encode(tag), buffers, cPath: Int32(GRID_SHA256_AVX512))
        case .portable: return taggedLanes(Netstring.encode(tag), buffers, cPath: Int32(GRID_SHA256_PORTABLE))
        case .openssl, .shani2: return taggedEach(tag, buffers, path: path)
        }
    }

    /// SHA256d(prefix || buffer) of each buffer, up to sixteen per compress16 call. Each
    /// message is cut the same way (the buffers have one length): head blocks (the prefix
    /// and the first data bytes, copied), body blocks (read in place), tail blocks (the
    /// last data bytes and the padding, copied); the outer hash is one more block each.
    static func taggedLanes(_ prefix: [UInt8], _ buffers: [UnsafeRawBufferPointer], cPath: Int32) -> [[UInt8]] {
        guard let length = buffers.first?.count else { return [] }
        precondition(buffers.allSatisfy { $0.count == length }, "taggedSameLength: buffers of different lengths")
        let total = prefix.count + length
        let headBlocks = (prefix.count + 63) / 64
        // Data bytes in the head; when the whole message fits in head + tail, all of it is copied.
        let inHead = min(length, headBlocks * 64 - prefix.count)
        let bodyBlocks = (length - inHead) / 64
        let tailData = length - inHead - bodyBlocks * 64
        let tailBlocks = (tailData + 9 + 63) / 64
        let copied = inHead < headBlocks * 64 - prefix.count  // short: head holds the tail's bytes too
        // Per lane: head (headBlocks * 64), tail (tailBlocks * 64, or the whole short message).
        let shortBlocks = (total + 9 + 63) / 64
        let perLane = copied ? shortBlocks * 64 : (headBlocks + tailBlocks) * 64
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * max(perLane, 64), alignment: 64)
        defer { scratch.deallocate() }
        let states = UnsafeMutablePointer<UInt32>.allocate(capacity: 16 * 8)
        defer { states.deallocate() }
        var out: [[UInt8]] = []
        out.reserveCapacity(buffers.count)

        func pad(_ lane: UnsafeMutableRawPointer, dataEnd: Int, blocks: Int, messageBits: UInt64) {
            let bytes = UnsafeMutableRawBufferPointer(start: lane, count: blocks * 64)
            bytes[dataEnd] = 0x80
            for i in (dataEnd + 1)..<(blocks * 64) { bytes[i] = 0 }
            for i in 0..<8 { bytes[blocks * 64 - 1 - i] = UInt8(truncatingIfNeeded: messageBits >> (8 * UInt64(i))) }
        }
        func compress(_ pointers: [UnsafeRawPointer], _ lanes: Int, _ blocks: Int) {
            guard blocks > 0 else { return }
            let ptrs: [UnsafePointer<UInt8>?] = pointers.map { $0.assumingMemoryBound(to: UInt8.self) }
            let rc = grid_sha256_compress16(cPath, states, ptrs, UInt32(lanes), blocks)
            precondition(rc == 0, "SHA-256 path \(cPath) not supported here")
        }

        var start = 0
        while start < buffers.count {
            let group = Array(buffers[start..<min(buffers.count, start + 16)])
            let lanes = group.count
            for l in 0..<lanes { for j in 0..<8 { states[8 * l + j] = SHA256Lane.initial[j] } }
            let laneBase = (0..<lanes).map { scratch.baseAddress! + $0 * perLane }
            let bits = UInt64(total) &* 8
            if copied {
                for (l, b) in group.enumerated() {
                    let lane = laneBase[l]
                    prefix.withUnsafeBytes { lane.copyMemory(from: $0.baseAddress!, byteCount: prefix.count) }
                    if length > 0 { (lane + prefix.count).copyMemory(from: b.baseAddress!, byteCount: length) }
                    pad(lane, dataEnd: total, blocks: shortBlocks, messageBits: bits)
                }
                compress(laneBase.map { UnsafeRawPointer($0) }, lanes, shortBlocks)
            } else {
                for (l, b) in group.enumerated() {
                    let lane = laneBase[l]
                    prefix.withUnsafeBytes { lane.copyMemory(from: $0.baseAddress!, byteCount: prefix.count) }
                    if inHead > 0 { (lane + prefix.count).copyMemory(from: b.baseAddress!, byteCount: inHead) }
                    let tail = lane + headBlocks * 64
                    if tailData > 0 { tail.copyMemory(from: b.baseAddress! + inHead + bodyBlocks * 64, byteCount: tailData) }
                    pad(tail, dataEnd: tailData, blocks: tailBlocks, messageBits: bits)
                }
                compress(laneBase.map { UnsafeRawPointer($0) }, lanes, headBlocks)
                compress(group.map { $0.baseAddress! + inHead }, lanes, bodyBlocks)
                compress(laneBase.map { UnsafeRawPointer($0 + headBlocks * 64) }, lanes, tailBlocks)
            }
            // The outer hash: SHA-256 of each 32-byte inner digest, one block.
            for l in 0..<lanes {
                SHA256Lane.digest(states + 8 * l).withUnsafeBytes { laneBase[l].copyMemory(from: $0.baseAddress!, byteCount: 32) }
                pad(laneBase[l], dataEnd: 32, blocks: 1, messageBits: 256)
                for j in 0..<8 { states[8 * l + j] = SHA256Lane.initial[j] }
            }
            compress(laneBase.map { UnsafeRawPointer($0) }, lanes, 1)
            for l in 0..<lanes { out.append(SHA256Lane.digest(states + 8 * l)) }
            start += lanes
        }
        return out
    }
}
