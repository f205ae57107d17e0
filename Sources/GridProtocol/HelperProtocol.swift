import GridCrypto
import GridWire
import GridSystem

/// Methods of the "helper" service: an upload helper takes a file's ciphertext once and
/// does the erasure coding and the share pushes itself (Tahoe's `RIHelper.upload_chk` and
/// `RICHKUploadHelper`; the messages are ours, docs/protocol.md has them byte by byte).
/// The client keeps the key: it computes the storage index and the capability, and sends
/// only ciphertext.
public enum HelperMethod: UInt16, Sendable, CaseIterable {
    /// Is this file stored already, and how much of its ciphertext does the helper hold?
    case start = 1
    /// Ciphertext at an offset.
    case append = 2
    /// Every byte is there: encode, place the shares, answer with the URI extension block.
    case finish = 3
}

public let helperServiceName = "helper"

/// Largest piece of ciphertext one `append` carries.
public let maxHelperAppend = 1 << 20

/// A request of the helper service: which method carries it, and what the reply is.
public protocol HelperRequest: RPCRequest where Method == HelperMethod {}

/// How a file is to be encoded: these enter the convergent key, so a storage index
/// names exactly one set of them.
public struct HelperEncoding: Equatable, Sendable {
    public var needed: Int
    public var happy: Int
    public var total: Int
    public var maxSegmentSize: Int

    public init(needed: Int, happy: Int, total: Int, maxSegmentSize: Int) {
        (self.needed, self.happy, self.total, self.maxSegmentSize) = (needed, happy, total, maxSegmentSize)
    }

    func encode(to w: inout WireWriter) {
        w.u16(UInt16(truncatingIfNeeded: needed))
        w.u16(UInt16(truncatingIfNeeded: happy))
        w.u16(UInt16(truncatingIfNeeded: total))
        w.u32(UInt32(truncatingIfNeeded: maxSegmentSize))
    }

    init(from r: inout WireReader) throws {
        needed = Int(try r.u16("needed"))
        happy = Int(try r.u16("happy"))
        total = Int(try r.u16("total"))
        maxSegmentSize = Int(try r.u32("segment size"))
        guard needed >= 1, needed <= total, total <= 256, happy >= 1, happy <= total,
              maxSegmentSize >= 1, maxSegmentSize <= 1 << 30 else {
            throw WireError(.badRequest, "encoding \(needed)-of-\(total), happy \(happy), segment size \(maxSegmentSize) is not possible")
        }
    }
}

/// The secret that binds `append` and `finish` to whoever started an upload: derived
/// from the file's key, so only a holder of the key (the uploader, or one resuming its
/// upload) can add data to it. The helper keeps only its hash.
public func helperUploadSecret(key: [UInt8]) -> [UInt8] { TahoeHash.tagged("grid-helper-upload-v1", key) }

/// `start`: the file's storage index, size and encoding, and the upload secret.
public struct HelperStartRequest: HelperRequest {
    public typealias Response = HelperStartResponse
    public static let method = HelperMethod.start
    public var storageIndex: [UInt8]
    public var uploadSecret: [UInt8]
    public var size: UInt64
    public var encoding: HelperEncoding

    public init(storageIndex: [UInt8], uploadSecret: [UInt8], size: UInt64, encoding: HelperEncoding) {
        (self.storageIndex, self.uploadSecret, self.size, self.encoding) = (storageIndex, uploadSecret, size, encoding)
    }

    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.fixed(uploadSecret)
        w.u64(size)
        encoding.encode(to: &w)
    }

    public init(from r: inout WireReader) throws {
        storageIndex = try r.fixed(16, "storage index")
        uploadSecret = try r.fixed(32, "upload secret")
        size = try r.u64("size")
        // Larger than a share may hold (2^64 bytes of share data is Tahoe's v2 limit) is
        // not refused here; a size the helper cannot store fails at allocation.
        guard size > 56 else { throw WireError(.badRequest, "a file of \(size) bytes is a literal capability: nothing to upload") }
        encoding = try HelperEncoding(from: &r)
    }
}

/// The answer to `start`: either the file is in the grid already (its URI extension block,
/// from a share), or how many leading bytes of ciphertext the helper holds (0 for a new
/// upload; more when an interrupted one resumes).
public struct HelperStartResponse: WireMessage {
    public var alreadyStored: Bool
    public var have: UInt64
    /// The URI extension block's bytes, when stored already.
    public var uriExtension: [UInt8]

    public init(alreadyStored: Bool, have: UInt64, uriExtension: [UInt8]) {
        (self.alreadyStored, self.have, self.uriExtension) = (alreadyStored, have, uriExtension)
    }

    public func encode(to w: inout WireWriter) {
        w.bool(alreadyStored)
        w.u64(have)
        w.data(uriExtension)
    }

    public init(from r: inout WireReader) throws {
        alreadyStored = try r.bool("already stored")
        have = try r.u64("bytes held")
        uriExtension = try r.data("URI extension block", max: 64 << 10)
    }
}

/// `append`: ciphertext at `offset` (pieces may arrive in any order; each is written where it belongs).
public struct HelperAppendRequest: HelperRequest {
    public typealias Response = HelperAppendResponse
    public static let method = HelperMethod.append
    public var storageIndex: [UInt8]
    public var uploadSecret: [UInt8]
    public var offset: UInt64
    public var data: [UInt8]

    public init(storageIndex: [UInt8], uploadSecret: [UInt8], offset: UInt64, data: [UInt8]) {
        (self.storageIndex, self.uploadSecret, self.offset, self.data) = (storageIndex, uploadSecret, offset, data)
    }

    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.fixed(uploadSecret)
        w.u64(offset)
        w.data(data)
    }

    public init(from r: inout WireReader) throws {
        storageIndex = try r.fixed(16, "storage index")
        uploadSecret = try r.fixed(32, "upload secret")
        offset = try r.u64("offset")
        data = try r.data("ciphertext", max: maxHelperAppend)
    }
}

/// How many leading bytes the helper now holds without a gap.
public struct HelperAppendResponse: WireMessage {
    public var have: UInt64
    public init(have: UInt64) { self.have = have }
    public func encode(to w: inout WireWriter) { w.u64(have) }
    public init(from r: inout WireReader) throws {
        have = try r.u64("bytes held")
    }
}

/// `finish`: every byte was sent; encode and place the shares.
public struct HelperFinishRequest: HelperRequest {
    public typealias Response = HelperFinishResponse
    public static let method = HelperMethod.finish
    public var storageIndex: [UInt8]
    public var uploadSecret: [UInt8]

    public init(storageIndex: [UInt8], uploadSecret: [UInt8]) { (self.storageIndex, self.uploadSecret) = (storageIndex, uploadSecret) }
    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.fixed(uploadSecret)
    }
    public init(from r: inout WireReader) throws {
        storageIndex = try r.fixed(16, "storage index")
        uploadSecret = try r.fixed(32, "upload secret")
    }
}

/// What the helper stored: the URI extension block (the client checks it against the
/// ciphertext it sent and makes the capability from its hash) and where the shares went.
public struct HelperFinishResponse: WireMessage {
    public var uriExtension: [UInt8]
    /// Distinct servers holding distinct shares.
    public var happiness: Int
    /// Shares that servers held already.
    public var sharesAlreadyPresent: Int
    /// (share number, server node id) for each share placed or found.
    public var placement: [(share: Int, server: String)]

    public init(uriExtension: [UInt8], happiness: Int, sharesAlreadyPresent: Int, placement: [(share: Int, server: String)]) {
        (self.uriExtension, self.happiness, self.sharesAlreadyPresent, self.placement) = (uriExtension, happiness, sharesAlreadyPresent, placement)
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.uriExtension == b.uriExtension && a.happiness == b.happiness && a.sharesAlreadyPresent == b.sharesAlreadyPresent
            && a.placement.map(\.share) == b.placement.map(\.share) && a.placement.map(\.server) == b.placement.map(\.server)
    }

    public func encode(to w: inout WireWriter) {
        w.data(uriExtension)
        w.u16(UInt16(truncatingIfNeeded: happiness))
        w.u16(UInt16(truncatingIfNeeded: sharesAlreadyPresent))
        w.list(placement) { w, p in
            w.u16(UInt16(truncatingIfNeeded: p.share))
            w.string(p.server)
        }
    }

    public init(from r: inout WireReader) throws {
        uriExtension = try r.data("URI extension block", max: 64 << 10)
        happiness = Int(try r.u16("happiness"))
        sharesAlreadyPresent = Int(try r.u16("shares already present"))
        placement = try r.list("placement", minElementSize: 6, max: 256 * 256) { r in
            (share: Int(try r.u16("share number")), server: try r.string("server", max: 128))
        }
    }
}
