import GridCrypto
import GridSystem


/// The URI extension block (UEB) of an immutable file: the file's encoding parameters
/// and root hashes, stored in every share and committed to by the capability.
///
/// Serialized as its keys in sorted order, each `key ":" netstring(value)`, with
/// integers written in decimal.
public struct URIExtension: Equatable, Sendable {
    public var codecName: String = "crs"
    public var codecParams: String
    public var tailCodecParams: String
    public var size: UInt64
    public var segmentSize: Int
    public var numSegments: Int
    public var neededShares: Int
    public var totalShares: Int
    public var crypttextHash: [UInt8]
    public var crypttextRootHash: [UInt8]
    public var shareRootHash: [UInt8]
    /// Keys this version does not know, kept verbatim.
    public var extra: [String: [UInt8]] = [:]

    public init(
        codecParams: String, tailCodecParams: String, size: UInt64, segmentSize: Int,
        numSegments: Int, neededShares: Int, totalShares: Int, crypttextHash: [UInt8],
        crypttextRootHash: [UInt8], shareRootHash: [UInt8]
    ) {
        self.codecParams = codecParams
        self.tailCodecParams = tailCodecParams
        self.size = size
        self.segmentSize = segmentSize
        self.numSegments = numSegments
        self.neededShares = neededShares
        self.totalShares = totalShares
        self.crypttextHash = crypttextHash
        self.crypttextRootHash = crypttextRootHash
        self.shareRootHash = shareRootHash
    }

    var fields: [(String, [UInt8])] {
        var f: [(String, [UInt8])] = [
            ("codec_name", Array(codecName.utf8)),
            ("codec_params", Array(codecParams.utf8)),
            ("crypttext_hash", crypttextHash),
            ("crypttext_root_hash", crypttextRootHash),
            ("needed_shares", Array(String(neededShares).utf8)),
            ("num_segments", Array(String(numSegments).utf8)),
            ("segment_size", Array(String(segmentSize).utf8)),
            ("share_root_hash", shareRootHash),
            ("size", Array(String(size).utf8)),
            ("tail_codec_params", Array(tailCodecParams.utf8)),
            ("total_shares", Array(String(totalShares).utf8)),
        ]
        for (k, v) in extra { f.append((k, v)) }
        // Tahoe sorts the keys as byte strings.
        return f.sorted { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
    }

    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        for (k, v) in fields {
            out += Array(k.utf8)
            out.append(UInt8(ascii: ":"))
            out += Netstring.encode(v)
        }
        return out
    }

    public var hash: [UInt8] { TahoeHash.uriExtensionHash(serialized()) }

    /// 2^56 bytes (64 PiB), 1 GiB segments, 2^26 segments.
    public static let maxFileSize: UInt64 = 1 << 56
    public static let maxSegmentSize = 1 << 30
    public static let maxSegments = 1 << 26

    static let knownKeys: Set<String> = [
        "codec_name", "codec_params", "crypttext_hash", "crypttext_root_hash", "needed_shares",
        "num_segments", "segment_size", "share_root_hash", "size", "tail_codec_params", "total_shares",
    ]

    /// Parses a UEB strictly: well-formed `key:len:value,` entries, keys of
    /// [A-Za-z_-], no key twice, every required key present, canonical decimal
    /// integers, 32-byte hashes, and codec parameters that agree with the sizes.
    public init(parsing data: [UInt8]) throws {
        var dict: [String: [UInt8]] = [:]
        var i = 0
        func fail(_ m: String, _ c: ErrorClass = .corrupt) -> GridError { GridError(c, "URI extension block: \(m)") }
        while i < data.count {
            guard let colon = data[i...].firstIndex(of: UInt8(ascii: ":")) else {
                throw fail("entry at byte \(i) has no ':' after its key")
            }
            let keyBytes = data[i..<colon]
            guard !keyBytes.isEmpty, keyBytes.allSatisfy({
                ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x5f || $0 == 0x2d
            }) else { throw fail("bad key at byte \(i)") }
            let key = String(decoding: keyBytes, as: UTF8.self)
            var j = colon + 1
            guard let colon2 = data[j...].firstIndex(of: UInt8(ascii: ":")) else {
                throw fail("value of '\(key)' has no length")
            }
            let lenBytes = data[j..<colon2]
            guard let len = Self.canonicalInt(lenBytes), len <= data.count else {
                throw fail("value of '\(key)' has a bad length")
            }
            j = colon2 + 1
            guard j + len < data.count + 0, data[j + len] == UInt8(ascii: ",") else {
                throw fail("value of '\(key)' is truncated or lacks its ','")
            }
            guard dict[key] == nil else { throw fail("key '\(key)' appears twice") }
            dict[key] = Array(data[j..<(j + len)])
            i = j + len + 1
        }
        for k in Self.knownKeys where dict[k] == nil { throw fail("missing '\(k)'") }
        func int(_ k: String) throws -> Int {
            guard let v = Self.canonicalInt(dict[k]![...]) else { throw fail("'\(k)' is not a decimal integer") }
            return v
        }
        func hash(_ k: String) throws -> [UInt8] {
            let v = dict[k]!
            guard v.count == 32 else { throw fail("'\(k)' is \(v.count) bytes, expected 32") }
            return v
        }
        codecName = String(decoding: dict["codec_name"]!, as: UTF8.self)
        guard codecName == "crs" else { throw fail("codec '\(codecName)' is not supported (only crs)", .incompatible) }
        codecParams = String(decoding: dict["codec_params"]!, as: UTF8.self)
        tailCodecParams = String(decoding: dict["tail_codec_params"]!, as: UTF8.self)
        size = UInt64(try int("size"))
        segmentSize = try int("segment_size")
        numSegments = try int("num_segments")
        neededShares = try int("needed_shares")
        totalShares = try int("total_shares")
        crypttextHash = try hash("crypttext_hash")
        crypttextRootHash = try hash("crypttext_root_hash")
        shareRootHash = try hash("share_root_hash")
        for (k, v) in dict where !Self.knownKeys.contains(k) { extra[k] = v }
        try validate()
    }

    /// Checks that the numbers agree with each other.
    public func validate() throws {
        func fail(_ m: String, _ c: ErrorClass = .corrupt) -> GridError { GridError(c, "URI extension block: \(m)") }
        guard neededShares >= 1, totalShares >= neededShares, totalShares <= 256 else {
            throw fail("bad encoding \(neededShares)-of-\(totalShares)")
        }
        // Limits far beyond any real file, so that sizes derived from these numbers
        // cannot overflow or ask for absurd amounts of memory.
        guard size <= Self.maxFileSize, segmentSize <= Self.maxSegmentSize else {
            throw fail("size \(size) or segment size \(segmentSize) is beyond what grid supports")
        }
        guard segmentSize >= 1, segmentSize % neededShares == 0 else {
            throw fail("segment size \(segmentSize) is not a positive multiple of k=\(neededShares)")
        }
        let expectSegments = Int((size + UInt64(segmentSize) - 1) / UInt64(segmentSize))
        guard numSegments == expectSegments, numSegments >= 1, numSegments <= Self.maxSegments else {
            throw fail("num_segments \(numSegments) does not match size \(size) / segment size \(segmentSize)")
        }
        guard codecParams == "\(segmentSize)-\(neededShares)-\(totalShares)" else {
            throw fail("codec_params '\(codecParams)' disagree with segment size and encoding")
        }
        let tail = CHKGeometry.tailSize(size: size, segmentSize: segmentSize)
        let paddedTail = (tail + neededShares - 1) / neededShares * neededShares
        guard tailCodecParams == "\(paddedTail)-\(neededShares)-\(totalShares)" else {
            throw fail("tail_codec_params '\(tailCodecParams)' disagree with the file size")
        }
    }

    /// A decimal integer with no sign, no leading zeros (except "0") and at most 18 digits.
    static func canonicalInt(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 18, bytes.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        if bytes.count > 1 && bytes.first == 0x30 { return nil }
        return Int(String(decoding: bytes, as: UTF8.self))
    }
}

/// The sizes Tahoe derives from (file size, k, n, maximum segment size).
public struct CHKGeometry: Equatable, Sendable {
    public let size: UInt64
    public let k: Int
    public let n: Int
    /// next_multiple(min(maxSegmentSize, size), k)
    public let segmentSize: Int
    public let numSegments: Int
    /// Bytes of plaintext in the last segment.
    public let tailSize: Int
    /// The tail rounded up to a multiple of k (what is erasure-coded).
    public let paddedTailSize: Int
    public var blockSize: Int { segmentSize / k }
    public var tailBlockSize: Int { paddedTailSize / k }
    /// Bytes of blocks in each share: ceil(size / k).
    public var shareDataSize: UInt64 { UInt64(numSegments - 1) * UInt64(blockSize) + UInt64(tailBlockSize) }

    public static func tailSize(size: UInt64, segmentSize: Int) -> Int {
        let t = Int(size % UInt64(segmentSize))
        return t == 0 ? segmentSize : t
    }

    public init(size: UInt64, k: Int, n: Int, maxSegmentSize: Int) throws {
        guard k >= 1, n >= k, n <= 256 else {
            throw GridError(.usage, "invalid encoding: need 1 <= k <= n <= 256, got k=\(k) n=\(n)")
        }
        guard maxSegmentSize >= 1 else { throw GridError(.usage, "segment size must be positive") }
        guard size >= 1 else { throw GridError(.usage, "a CHK file cannot be empty") }
        self.size = size
        self.k = k
        self.n = n
        let raw = Int(min(UInt64(maxSegmentSize), size))
        segmentSize = (raw + k - 1) / k * k
        numSegments = Int((size + UInt64(segmentSize) - 1) / UInt64(segmentSize))
        tailSize = Self.tailSize(size: size, segmentSize: segmentSize)
        paddedTailSize = (tailSize + k - 1) / k * k
    }

    /// The plaintext length of segment `i`.
    public func segmentLength(_ i: Int) -> Int { i == numSegments - 1 ? tailSize : segmentSize }
    /// The block length of segment `i`.
    public func blockLength(_ i: Int) -> Int { i == numSegments - 1 ? tailBlockSize : blockSize }
}
