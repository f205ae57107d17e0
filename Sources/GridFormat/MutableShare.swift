import GridSystem

/// A mutable share's share hash chain section: `u16 node, [32] hash` entries, at most 9.
func parseShareHashChain(_ bytes: [UInt8], _ fail: (String) -> GridError) throws -> [Int: [UInt8]] {
    guard bytes.count % 34 == 0, bytes.count <= 34 * 9 else { throw fail("share hash chain of \(bytes.count) bytes") }
    return Dictionary(try ShareLayout.parseShareHashes(bytes), uniquingKeysWith: { a, _ in a })
}

/// A stored hash tree: whole 32-byte nodes.
func parseHashNodes(_ bytes: [UInt8], _ fail: (String) -> GridError) throws -> [[UInt8]] {
    guard bytes.count % 32 == 0 else { throw fail("block hash tree of \(bytes.count) bytes is not whole hashes") }
    return stride(from: 0, to: bytes.count, by: 32).map { Array(bytes[$0..<($0 + 32)]) }
}

/// What can be told of a mutable share (SDMF or MDMF) from its first bytes.
public enum MutableShareHeader {
    /// The bytes a writer tests before replacing this share (Tahoe's checkstring).
    public static func checkstring(_ share: [UInt8]) -> [UInt8] {
        Array(share.prefix(share.first == SDMFShare.version ? SDMFShare.checkstringLength : MDMFShare.checkstringLength))
    }

    /// Version, sequence number, root hash and encoding, from a share's first bytes (its
    /// signed prefix); nil when too few bytes are at hand or the version is unknown.
    /// Nothing here is checked: a census tells versions apart with it, a verify checks.
    public static func summary(_ prefix: [UInt8]) -> (format: MutableFormat, sequenceNumber: UInt64, rootHash: [UInt8], needed: Int, total: Int)? {
        guard prefix.count >= 59 else { return nil }
        let seq = prefix[1..<9].reduce(0) { $0 << 8 | UInt64($1) }
        let root = Array(prefix[9..<41])
        switch prefix[0] {
        case SDMFShare.version:
            guard prefix.count >= SDMFShare.signedPrefixLength else { return nil }
            return (.sdmf, seq, root, Int(prefix[57]), Int(prefix[58]))
        case MDMFShare.version: return (.mdmf, seq, root, Int(prefix[41]), Int(prefix[42]))
        default: return nil
        }
    }

    /// The share's length as its header declares it; nil when too little of it is at hand
    /// or the version is unknown.
    public static func declaredLength(_ prefix: [UInt8]) -> UInt64? {
        let at: Int
        switch prefix.first {
        case SDMFShare.version: at = SDMFShare.endOffsetField
        case MDMFShare.version: at = MDMFShare.endOffsetField
        default: return nil
        }
        guard prefix.count >= at + 8 else { return nil }
        return prefix[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) }
    }
}
