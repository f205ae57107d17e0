import GridSystem
/// The layout of an immutable (CHK) share's data, versions 1 and 2, as Tahoe-LAFS writes it.
///
/// v1: nine 4-byte big-endian fields, data at 0x24, a 4-byte UEB length.
/// v2: a 4-byte version then eight 8-byte fields, data at 0x44, an 8-byte UEB length.
/// Fields: version, block size, data size, then the offsets of data, plaintext hash
/// tree (unused, zero-filled), crypttext hash tree, block hashes, share hashes, URI
/// extension. v2 is used only when a v1 field would not fit in 32 bits.
public struct ShareLayout: Equatable, Sendable {
    public let version: Int
    public let blockSize: UInt64
    public let dataSize: UInt64
    public let dataOffset: UInt64
    public let plaintextHashTreeOffset: UInt64
    public let crypttextHashTreeOffset: UInt64
    public let blockHashesOffset: UInt64
    public let shareHashesOffset: UInt64
    public let uriExtensionOffset: UInt64

    public static let hashSize = 32
    /// Bytes of one share-hash-chain entry: be16 node index + 32-byte hash.
    public static let shareHashEntrySize = 34
    /// No size or offset in a share header may exceed this (64 PiB): real shares are far
    /// smaller, and the bound keeps every sum of them clear of overflow.
    public static let maxOffset: UInt64 = 1 << 56
    /// The longest share hash chain (n = 256).
    public static let maxShareHashes = 9

    public var headerSize: Int { version == 1 ? 0x24 : 0x44 }
    public var uebLengthFieldSize: Int { version == 1 ? 4 : 8 }
    /// Bytes of each of the three segment-tree sections.
    public var segmentTreeSize: UInt64 { crypttextHashTreeOffset - plaintextHashTreeOffset }
    public var shareHashesSize: UInt64 { uriExtensionOffset - shareHashesOffset }

    /// The layout Tahoe's WriteBucketProxy chooses for these sizes.
    public init(blockSize: Int, dataSize: UInt64, numSegments: Int, numShareHashes: Int) {
        let effective = HashTree.paddedCount(numSegments)
        let segTree = UInt64((2 * effective - 1) * Self.hashSize)
        let shareTree = UInt64(numShareHashes * Self.shareHashEntrySize)
        func offsets(_ start: UInt64) -> [UInt64] {
            var x = start
            var o: [UInt64] = [x]
            x += dataSize; o.append(x)
            x += segTree; o.append(x)
            x += segTree; o.append(x)
            x += segTree; o.append(x)
            x += shareTree; o.append(x)
            return o
        }
        var v = 1
        var o = offsets(0x24)
        if UInt64(blockSize) >= 1 << 32 || dataSize >= 1 << 32 || o[5] >= 1 << 32 {
            v = 2
            o = offsets(0x44)
        }
        self.init(
            version: v, blockSize: UInt64(blockSize), dataSize: dataSize, offsets: o)
    }

    init(version: Int, blockSize: UInt64, dataSize: UInt64, offsets o: [UInt64]) {
        self.version = version
        self.blockSize = blockSize
        self.dataSize = dataSize
        dataOffset = o[0]
        plaintextHashTreeOffset = o[1]
        crypttextHashTreeOffset = o[2]
        blockHashesOffset = o[3]
        shareHashesOffset = o[4]
        uriExtensionOffset = o[5]
    }

    /// The header bytes.
    public func header() -> [UInt8] {
        var out: [UInt8] = []
        func put(_ v: UInt64, _ width: Int) {
            for i in stride(from: width - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
        }
        put(UInt64(version), 4)
        let w = version == 1 ? 4 : 8
        for v in [blockSize, dataSize, dataOffset, plaintextHashTreeOffset, crypttextHashTreeOffset,
                  blockHashesOffset, shareHashesOffset, uriExtensionOffset] { put(v, w) }
        return out
    }

    /// The UEB length field followed by the UEB.
    public func uebSection(_ ueb: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        let w = uebLengthFieldSize
        for i in stride(from: w - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: UInt64(ueb.count) >> (8 * UInt64(i)))) }
        return out + ueb
    }

    /// Total share-data bytes for a UEB of `uebLength` bytes.
    public func totalSize(uebLength: Int) -> UInt64 {
        uriExtensionOffset + UInt64(uebLengthFieldSize) + UInt64(uebLength)
    }

    /// Parses a header from the first bytes of a share (at least 0x44 bytes, or the whole
    /// share if shorter). Checks the version, that offsets are in order and that the
    /// sections have sizes the layout allows.
    public init(parsing bytes: [UInt8]) throws {
        func fail(_ m: String, _ c: ErrorClass = .corrupt) -> GridError { GridError(c, "share header: \(m)") }
        guard bytes.count >= 4 else { throw fail("share is only \(bytes.count) bytes") }
        func read(_ at: Int, _ width: Int) -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<width { v = v << 8 | UInt64(bytes[at + i]) }
            return v
        }
        let version = Int(read(0, 4))
        let w: Int
        switch version {
        case 1: w = 4
        case 2: w = 8
        default:
            // A small number is a layout from a newer Tahoe; anything else is not a share header.
            throw fail("unknown share version \(version) (expected 1 or 2)", version < 256 ? .incompatible : .corrupt)
        }
        let hs = version == 1 ? 0x24 : 0x44
        guard bytes.count >= hs else { throw fail("truncated: \(bytes.count) bytes, header needs \(hs)") }
        let vals = (0..<8).map { read(4 + $0 * w, w) }
        // Untrusted numbers: bounded before any arithmetic, so no sum below can overflow.
        guard vals.allSatisfy({ $0 <= Self.maxOffset }) else {
            throw fail("a size or offset is larger than any share (over 2^56 bytes)")
        }
        self.init(version: version, blockSize: vals[0], dataSize: vals[1], offsets: Array(vals[2...]))
        guard dataOffset == UInt64(hs) else { throw fail("data offset \(dataOffset), expected \(hs)") }
        guard plaintextHashTreeOffset == dataOffset + dataSize else {
            throw fail("plaintext hash tree offset does not follow the data")
        }
        let seg = crypttextHashTreeOffset &- plaintextHashTreeOffset
        guard crypttextHashTreeOffset >= plaintextHashTreeOffset,
              blockHashesOffset == crypttextHashTreeOffset &+ seg,
              shareHashesOffset == blockHashesOffset &+ seg,
              uriExtensionOffset >= shareHashesOffset
        else { throw fail("section offsets are out of order") }
        guard seg % 32 == 0, seg > 0, ((seg / 32) + 1) & (seg / 32) == 0 else {
            throw fail("hash tree sections of \(seg) bytes are not 2^m-1 hashes")
        }
        guard shareHashesSize % UInt64(Self.shareHashEntrySize) == 0 else {
            throw fail("share hash section of \(shareHashesSize) bytes is not whole entries")
        }
        // n <= 256 means at most 9 chain entries (8 siblings and the leaf).
        guard shareHashesSize <= UInt64(Self.maxShareHashes * Self.shareHashEntrySize) else {
            throw fail("share hash section of \(shareHashesSize) bytes is larger than any share needs")
        }
    }

    /// Parses the share hash chain section: be16 node index + 32-byte hash per entry.
    public static func parseShareHashes(_ bytes: [UInt8]) throws -> [(Int, [UInt8])] {
        guard bytes.count % shareHashEntrySize == 0 else {
            throw GridError(.corrupt, "share hash chain of \(bytes.count) bytes is not whole entries")
        }
        var out: [(Int, [UInt8])] = []
        var i = 0
        while i < bytes.count {
            out.append((Int(bytes[i]) << 8 | Int(bytes[i + 1]), Array(bytes[(i + 2)..<(i + 34)])))
            i += shareHashEntrySize
        }
        return out
    }

    public static func encodeShareHashes(_ entries: [(Int, [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        for (i, h) in entries {
            out.append(UInt8(i >> 8))
            out.append(UInt8(i & 0xff))
            out += h
        }
        return out
    }
}
