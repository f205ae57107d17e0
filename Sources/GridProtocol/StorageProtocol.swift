import GridCrypto
import GridWire
import GridSystem

/// Methods of the "storage" service (docs/protocol.md has every argument byte by byte).
public enum StorageMethod: UInt16, Sendable, CaseIterable {
    case getVersion = 1
    case allocateBuckets = 2
    case bucketWrite = 3
    case bucketClose = 4
    case bucketAbort = 5
    case getBuckets = 6
    case bucketRead = 7
    case addLease = 8
    case renewLease = 9
    case cancelLease = 10
    case adviseCorruptShare = 11
    case slotReadv = 12
    case slotTestvAndReadvAndWritev = 13
    case censusBatch = 14
    case slotStage = 15
    case slotWriteEnablerOwners = 16
    case allocateNamedBuckets = 17
    case getBucketsPeek = 18
}

public let storageServiceName = "storage"

/// The 20-byte id a storage server writes into mutable containers (the write enabler's
/// owner, lease node ids): the first 20 bytes of SHA-256 of its public key. Clients derive
/// each server's mutable write enabler from it.
public func containerNodeID(publicKey: [UInt8]) -> [UInt8] { Array(SHA256.hash(publicKey).prefix(20)) }

/// Largest data one bucket_write, bucket_read or slot vector element may carry.
public let maxChunk = 8 << 20

func readSI(_ r: inout WireReader) throws -> [UInt8] { try r.fixed(16, "storage index") }
func readSecret(_ r: inout WireReader, _ what: String) throws -> [UInt8] { try r.fixed(32, what) }
func readShareNumber(_ r: inout WireReader) throws -> Int { Int(try r.u8("share number")) }

/// A request of the storage service: which method carries it, and what the reply is.
public protocol StorageRequest: RPCRequest where Method == StorageMethod {}

// MARK: get_version

public struct GetVersionRequest: StorageRequest, EmptyWireMessage {
    public typealias Response = StorageVersion
    public static let method = StorageMethod.getVersion
    public init() {}
}

public struct StorageVersion: WireMessage {
    public var protocolVersion: UInt16
    public var maximumImmutableShareSize: UInt64
    public var availableSpace: UInt64
    public var usedSpace: UInt64
    public var reservedSpace: UInt64
    public var immutableShares: UInt64
    public var mutableShares: UInt64
    public var applicationVersion: String

    public init(protocolVersion: UInt16, maximumImmutableShareSize: UInt64, availableSpace: UInt64, usedSpace: UInt64,
                reservedSpace: UInt64, immutableShares: UInt64, mutableShares: UInt64, applicationVersion: String) {
        self.protocolVersion = protocolVersion
        self.maximumImmutableShareSize = maximumImmutableShareSize
        self.availableSpace = availableSpace
        self.usedSpace = usedSpace
        self.reservedSpace = reservedSpace
        self.immutableShares = immutableShares
        self.mutableShares = mutableShares
        self.applicationVersion = applicationVersion
    }

    public func encode(to w: inout WireWriter) {
        w.u16(protocolVersion)
        w.u64(maximumImmutableShareSize)
        w.u64(availableSpace)
        w.u64(usedSpace)
        w.u64(reservedSpace)
        w.u64(immutableShares)
        w.u64(mutableShares)
        w.string(applicationVersion)
    }

    public init(from r: inout WireReader) throws {
        protocolVersion = try r.u16("protocol version")
        maximumImmutableShareSize = try r.u64("maximum immutable share size")
        availableSpace = try r.u64("available space")
        usedSpace = try r.u64("used space")
        reservedSpace = try r.u64("reserved space")
        immutableShares = try r.u64("immutable shares")
        mutableShares = try r.u64("mutable shares")
        applicationVersion = try r.string("application version")
    }
}

// MARK: Immutable buckets

public struct AllocateRequest: StorageRequest {
    public typealias Response = AllocateResponse
    public static let method = StorageMethod.allocateBuckets
    public var storageIndex: [UInt8]
    public var renewSecret: [UInt8]
    public var cancelSecret: [UInt8]
    public var shareNumbers: [Int]
    public var allocatedSize: UInt64

    public init(storageIndex: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8], shareNumbers: [Int], allocatedSize: UInt64) {
        self.storageIndex = storageIndex
        self.renewSecret = renewSecret
        self.cancelSecret = cancelSecret
        self.shareNumbers = shareNumbers
        self.allocatedSize = allocatedSize
    }

    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.fixed(renewSecret)
        w.fixed(cancelSecret)
        w.list(shareNumbers) { $0.u8(UInt8($1)) }
        w.u64(allocatedSize)
    }

    public init(from r: inout WireReader) throws {
        storageIndex = try readSI(&r)
        renewSecret = try readSecret(&r, "renew secret")
        cancelSecret = try readSecret(&r, "cancel secret")
        shareNumbers = try r.list("share numbers", max: 256) { try readShareNumber(&$0) }
        allocatedSize = try r.u64("allocated size")
    }
}

/// Bucket handles a client names itself (protocol 3, `Hello.namedBucketsVersion`), so it
/// can write and close a bucket in the same flight as the request that allocates it.
/// A named handle has its top bit set (a server's own handles never do), the client's
/// group number in bits 8-39 and the share number in the low byte. All the requests on
/// one connection that touch one group's buckets (the allocation, then every write, close
/// and abort) run in the order they arrived; other handles order per bucket.
public enum NamedBucket {
    public static let flag: UInt64 = 1 << 63

    public static func handle(group: UInt32, share: Int) -> UInt64 {
        flag | UInt64(group) << 8 | UInt64(UInt8(truncatingIfNeeded: share))
    }

    /// The key a server orders a bucket request by: a named bucket's group, any other
    /// bucket itself.
    public static func orderingKey(handle: UInt64) -> UInt64 {
        handle & flag != 0 ? handle & ~0xFF : handle
    }
}

/// allocate_named_buckets: allocate_buckets with the handles named by the client:
/// share s gets `NamedBucket.handle(group:share:)`. A name still open on the connection
/// is a conflict (nothing is allocated). The reply is allocate_buckets'.
public struct AllocateNamedRequest: StorageRequest {
    public typealias Response = AllocateResponse
    public static let method = StorageMethod.allocateNamedBuckets
    /// First on the wire: the server reads it to order the request (`orderingKey`).
    public var group: UInt32
    public var allocation: AllocateRequest

    public init(group: UInt32, allocation: AllocateRequest) {
        self.group = group
        self.allocation = allocation
    }

    public var handles: [Int: UInt64] {
        Dictionary(allocation.shareNumbers.map { ($0, NamedBucket.handle(group: group, share: $0)) }, uniquingKeysWith: { a, _ in a })
    }

    /// The ordering key of a request whose body starts at `offset` of `frameBody`, or nil
    /// when it is too short to have one.
    public static func orderingKey(frameBody: [UInt8], offset: Int) -> UInt64? {
        var r = WireReader(frameBody, offset: offset)
        guard let g = try? r.u32("group") else { return nil }
        return NamedBucket.handle(group: g, share: 0)
    }

    public func encode(to w: inout WireWriter) {
        w.u32(group)
        allocation.encode(to: &w)
    }

    public init(from r: inout WireReader) throws {
        group = try r.u32("group")
        allocation = try AllocateRequest(from: &r)
    }
}

public struct AllocateResponse: WireMessage {
    /// Shares the server already holds (complete).
    public var alreadyHave: [Int]
    /// Share number → bucket writer handle, for shares the client should now write.
    public var writers: [Int: UInt64]
    /// Shares another upload is writing right now (the same file from another client):
    /// neither held yet nor this client's to write; ask again once that upload is done.
    public var inProgress: [Int]

    public init(alreadyHave: [Int], writers: [Int: UInt64], inProgress: [Int] = []) {
        self.alreadyHave = alreadyHave
        self.writers = writers
        self.inProgress = inProgress
    }

    public func encode(to w: inout WireWriter) {
        w.list(alreadyHave.sorted()) { $0.u8(UInt8($1)) }
        w.list(writers.sorted { $0.key < $1.key }) { w, e in w.u8(UInt8(e.key)); w.u64(e.value) }
        w.list(inProgress.sorted()) { $0.u8(UInt8($1)) }
    }

    public init(from r: inout WireReader) throws {
        alreadyHave = try r.list("already have", max: 256) { try readShareNumber(&$0) }
        let pairs = try r.list("writers", minElementSize: 9, max: 256) { (try readShareNumber(&$0), try $0.u64("bucket")) }
        writers = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        inProgress = try r.list("in progress", max: 256) { try readShareNumber(&$0) }
    }
}

/// bucket_write: `data` at `offset` of an open bucket. The server reads the data in
/// place (`decodeInPlace`); the client can encode straight from a buffer (`encode(bucket:...)`).
public struct BucketWriteRequest: StorageRequest {
    public typealias Response = EmptyMessage
    public static let method = StorageMethod.bucketWrite
    public var bucket: UInt64
    public var offset: UInt64
    public var data: [UInt8]

    public init(bucket: UInt64, offset: UInt64, data: [UInt8]) {
        self.bucket = bucket
        self.offset = offset
        self.data = data
    }

    /// Bytes of the encoded request beyond the data itself.
    public static let overhead = 20

    public static func encode(bucket: UInt64, offset: UInt64, data: UnsafeRawBufferPointer, to w: inout WireWriter) {
        w.u64(bucket)
        w.u64(offset)
        w.data(data)
    }

    public func encode(to w: inout WireWriter) {
        data.withUnsafeBytes { Self.encode(bucket: bucket, offset: offset, data: $0, to: &w) }
    }

    /// The bucket, the offset, and where the data lies in the message (not copied).
    public static func decodeInPlace(_ r: inout WireReader) throws -> (bucket: UInt64, offset: UInt64, data: Range<Int>) {
        let bucket = try r.u64("bucket"), offset = try r.u64("offset")
        return (bucket, offset, try r.dataRange("data", max: maxChunk))
    }

    public init(from r: inout WireReader) throws {
        let (b, o, range) = try Self.decodeInPlace(&r)
        bucket = b
        offset = o
        data = r.withBytes(range) { Array($0) }
    }
}

/// Which method a request that names only a bucket writer, or only a storage index and
/// one lease secret, travels as.
public protocol MethodTag { static var method: StorageMethod { get } }
public enum CloseTag: MethodTag { public static var method: StorageMethod { .bucketClose } }
public enum AbortTag: MethodTag { public static var method: StorageMethod { .bucketAbort } }
public enum RenewTag: MethodTag { public static var method: StorageMethod { .renewLease } }
public enum CancelTag: MethodTag { public static var method: StorageMethod { .cancelLease } }

/// bucket_close and bucket_abort: `u64 handle`.
public struct BucketHandleRequest<Tag: MethodTag>: StorageRequest {
    public typealias Response = EmptyMessage
    public static var method: StorageMethod { Tag.method }
    public var bucket: UInt64
    public init(bucket: UInt64) { self.bucket = bucket }
    public func encode(to w: inout WireWriter) { w.u64(bucket) }
    public init(from r: inout WireReader) throws { bucket = try r.u64("bucket") }
}

public typealias BucketCloseRequest = BucketHandleRequest<CloseTag>
public typealias BucketAbortRequest = BucketHandleRequest<AbortTag>

public struct GetBucketsRequest: StorageRequest {
    public typealias Response = GetBucketsResponse
    public static let method = StorageMethod.getBuckets
    public var storageIndex: [UInt8]
    public init(storageIndex: [UInt8]) { self.storageIndex = storageIndex }
    public func encode(to w: inout WireWriter) { w.fixed(storageIndex) }
    public init(from r: inout WireReader) throws { storageIndex = try readSI(&r) }
}

public struct GetBucketsResponse: WireMessage {
    /// Share number → share data length, for the complete shares the server holds.
    public var shares: [Int: UInt64]
    public init(shares: [Int: UInt64]) { self.shares = shares }
    public func encode(to w: inout WireWriter) {
        w.list(shares.sorted { $0.key < $1.key }) { w, e in w.u8(UInt8(e.key)); w.u64(e.value) }
    }
    public init(from r: inout WireReader) throws {
        let pairs = try r.list("buckets", minElementSize: 9, max: 256) { (try readShareNumber(&$0), try $0.u64("size")) }
        shares = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
    }
}

/// get_buckets_peek (protocol 3): get_buckets, and the first `prefix` and last `suffix`
/// bytes of one share if the server holds it, so a download has a small share whole, or a
/// large one's header and hash trees, in its census's round trip.
public struct GetBucketsPeekRequest: StorageRequest {
    public typealias Response = GetBucketsPeekResponse
    public static let method = StorageMethod.getBucketsPeek
    public var storageIndex: [UInt8]
    public var share: Int
    public var prefix: UInt32
    public var suffix: UInt32

    public init(storageIndex: [UInt8], share: Int, prefix: UInt32, suffix: UInt32) {
        (self.storageIndex, self.share, self.prefix, self.suffix) = (storageIndex, share, prefix, suffix)
    }

    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.u8(UInt8(share))
        w.u32(prefix)
        w.u32(suffix)
    }

    public init(from r: inout WireReader) throws {
        storageIndex = try readSI(&r)
        share = try readShareNumber(&r)
        prefix = try r.u32("prefix")
        suffix = try r.u32("suffix")
        guard UInt64(prefix) + UInt64(suffix) <= UInt64(maxChunk) else {
            throw WireError(.tooLarge, "a peek of \(prefix) + \(suffix) bytes is more than \(maxChunk)")
        }
    }
}

/// Bytes of one share from get_buckets_peek: [0, prefix.count) and
/// [suffixOffset, suffixOffset + suffix.count), which end at the share's end.
public struct SharePeek: Equatable, Sendable {
    public var share: Int
    public var prefix: [UInt8]
    public var suffixOffset: UInt64
    public var suffix: [UInt8]
    public init(share: Int, prefix: [UInt8], suffixOffset: UInt64, suffix: [UInt8]) {
        (self.share, self.prefix, self.suffixOffset, self.suffix) = (share, prefix, suffixOffset, suffix)
    }
}

public struct GetBucketsPeekResponse: WireMessage {
    /// As get_buckets: share number → share data length.
    public var shares: [Int: UInt64]
    /// The asked share's bytes, when the server holds it.
    public var peek: SharePeek?

    public init(shares: [Int: UInt64], peek: SharePeek?) {
        self.shares = shares
        self.peek = peek
    }

    public func encode(to w: inout WireWriter) {
        GetBucketsResponse(shares: shares).encode(to: &w)
        w.bool(peek != nil)
        if let p = peek {
            w.u8(UInt8(p.share))
            w.data(p.prefix)
            w.u64(p.suffixOffset)
            w.data(p.suffix)
        }
    }

    public init(from r: inout WireReader) throws {
        shares = try GetBucketsResponse(from: &r).shares
        if try r.bool("has peek") {
            let share = try readShareNumber(&r)
            let prefix = try r.data("prefix", max: maxChunk)
            let at = try r.u64("suffix offset")
            let suffix = try r.data("suffix", max: maxChunk)
            // The pieces must lie within the share the list gives, the suffix at its end.
            guard let size = shares[share], UInt64(prefix.count) <= at, at <= size, UInt64(suffix.count) == size - at else {
                throw WireError(.badFrame, "the peek at share \(share) does not fit the share's listed size")
            }
            peek = SharePeek(share: share, prefix: prefix, suffixOffset: at, suffix: suffix)
        } else {
            peek = nil
        }
    }
}

public struct BucketReadRequest: StorageRequest {
    public typealias Response = BucketReadResponse
    public static let method = StorageMethod.bucketRead
    public var storageIndex: [UInt8]
    public var share: Int
    public var offset: UInt64
    public var length: UInt32

    public init(storageIndex: [UInt8], share: Int, offset: UInt64, length: UInt32) {
        self.storageIndex = storageIndex
        self.share = share
        self.offset = offset
        self.length = length
    }

    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.u8(UInt8(share))
        w.u64(offset)
        w.u32(length)
    }

    public init(from r: inout WireReader) throws {
        storageIndex = try readSI(&r)
        share = try readShareNumber(&r)
        offset = try r.u64("offset")
        length = try r.u32("length")
    }
}

/// The bytes read: the whole reply, with no length prefix.
public struct BucketReadResponse: WireMessage {
    public var data: [UInt8]
    public init(data: [UInt8]) { self.data = data }
    public func encode(to w: inout WireWriter) { w.fixed(data) }
    /// The data itself, not a copy: blocks are the bulk of what a server sends.
    public func encoded() -> [UInt8] { data }
    public init(from r: inout WireReader) throws { data = r.remainder() }
}

// MARK: Leases and advisories

public struct AddLeaseRequest: StorageRequest {
    public typealias Response = EmptyMessage
    public static let method = StorageMethod.addLease
    public var storageIndex: [UInt8]
    public var renewSecret: [UInt8]
    public var cancelSecret: [UInt8]
    public init(storageIndex: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8]) {
        self.storageIndex = storageIndex
        self.renewSecret = renewSecret
        self.cancelSecret = cancelSecret
    }
    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.fixed(renewSecret)
        w.fixed(cancelSecret)
    }
    public init(from r: inout WireReader) throws {
        storageIndex = try readSI(&r)
        renewSecret = try readSecret(&r, "renew secret")
        cancelSecret = try readSecret(&r, "cancel secret")
    }
}

/// renew_lease and cancel_lease: `fixed[16] storage index`, `fixed[32] secret` (the renew
/// or the cancel secret).
public struct LeaseSecretRequest<Tag: MethodTag>: StorageRequest {
    public typealias Response = EmptyMessage
    public static var method: StorageMethod { Tag.method }
    public var storageIndex: [UInt8]
    public var secret: [UInt8]
    public init(storageIndex: [UInt8], secret: [UInt8]) {
        self.storageIndex = storageIndex
        self.secret = secret
    }
    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.fixed(secret)
    }
    public init(from r: inout WireReader) throws {
        storageIndex = try readSI(&r)
        secret = try readSecret(&r, Tag.method == .renewLease ? "renew secret" : "cancel secret")
    }
}

public typealias RenewLeaseRequest = LeaseSecretRequest<RenewTag>
public typealias CancelLeaseRequest = LeaseSecretRequest<CancelTag>

public struct AdviseCorruptShareRequest: StorageRequest {
    public typealias Response = EmptyMessage
    public static let method = StorageMethod.adviseCorruptShare
    /// Longest reason kept.
    public static let maxReason = 1000
    public var mutable: Bool
    public var storageIndex: [UInt8]
    public var share: Int
    public var reason: String
    public init(mutable: Bool, storageIndex: [UInt8], share: Int, reason: String) {
        self.mutable = mutable
        self.storageIndex = storageIndex
        self.share = share
        self.reason = reason
    }
    public func encode(to w: inout WireWriter) {
        w.bool(mutable)
        w.fixed(storageIndex)
        w.u8(UInt8(share))
        // At most maxReason bytes, cut at a character boundary.
        var cut = Substring(reason)
        while cut.utf8.count > Self.maxReason { cut = cut.dropLast() }
        w.string(String(cut))
    }
    public init(from r: inout WireReader) throws {
        mutable = try r.bool("mutable")
        storageIndex = try readSI(&r)
        share = try readShareNumber(&r)
        reason = try r.string("reason", max: Self.maxReason)
    }
}

// MARK: Batched census and lease renewal

/// census_batch: which shares of each of many storage indexes the server holds, and with
/// `renew`, add (or renew) this client's lease on each one held: what `grid maintain`
/// asks every server, a batch of files per round trip instead of two calls per file.
public struct CensusBatchRequest: StorageRequest {
    public typealias Response = CensusBatchResponse
    public static let method = StorageMethod.censusBatch
    /// Most storage indexes in one request.
    public static let maxEntries = 2048

    public struct Entry: Sendable, Equatable {
        public var storageIndex: [UInt8]
        /// The lease secrets for this server (ignored unless `renew`; sent as zeros then).
        public var renewSecret: [UInt8]
        public var cancelSecret: [UInt8]
        public init(storageIndex: [UInt8], renewSecret: [UInt8] = Array(repeating: 0, count: 32),
                    cancelSecret: [UInt8] = Array(repeating: 0, count: 32)) {
            self.storageIndex = storageIndex
            self.renewSecret = renewSecret
            self.cancelSecret = cancelSecret
        }
    }

    public var renew: Bool
    public var entries: [Entry]

    public init(renew: Bool, entries: [Entry]) {
        self.renew = renew
        self.entries = entries
    }

    public func encode(to w: inout WireWriter) {
        w.bool(renew)
        w.list(entries) { w, e in
            w.fixed(e.storageIndex)
            if renew {
                w.fixed(e.renewSecret)
                w.fixed(e.cancelSecret)
            }
        }
    }

    public init(from r: inout WireReader) throws {
        let renew = try r.bool("renew")
        self.renew = renew
        entries = try r.list("entries", minElementSize: renew ? 80 : 16, max: Self.maxEntries) { r in
            let si = try readSI(&r)
            guard renew else { return Entry(storageIndex: si) }
            return Entry(storageIndex: si, renewSecret: try readSecret(&r, "renew secret"),
                         cancelSecret: try readSecret(&r, "cancel secret"))
        }
    }
}

public struct CensusBatchResponse: WireMessage {
    public struct Holding: Sendable, Equatable {
        /// Share number → share data length, for the complete immutable shares held.
        public var shares: [Int: UInt64]
        /// When this client's lease on them now expires (Unix seconds; 0 when nothing is
        /// held or the request did not renew).
        public var leaseExpiration: UInt32
        public init(shares: [Int: UInt64], leaseExpiration: UInt32) {
            self.shares = shares
            self.leaseExpiration = leaseExpiration
        }
    }

    /// One per request entry, in the same order.
    public var holdings: [Holding]
    public init(holdings: [Holding]) { self.holdings = holdings }

    public func encode(to w: inout WireWriter) {
        w.list(holdings) { w, h in
            w.list(h.shares.sorted { $0.key < $1.key }) { w, e in w.u8(UInt8(e.key)); w.u64(e.value) }
            w.u32(h.leaseExpiration)
        }
    }

    public init(from r: inout WireReader) throws {
        holdings = try r.list("holdings", minElementSize: 5, max: CensusBatchRequest.maxEntries) { r in
            let pairs = try r.list("buckets", minElementSize: 9, max: 256) { (try readShareNumber(&$0), try $0.u64("size")) }
            return Holding(shares: Dictionary(pairs, uniquingKeysWith: { a, _ in a }), leaseExpiration: try r.u32("lease expiration"))
        }
    }
}

// MARK: Mutable slots

/// A test-vector operator as it travels (one byte).
public enum TestOperator: UInt8, Sendable, CaseIterable {
    case lt = 1, le = 2, eq = 3, ne = 4, ge = 5, gt = 6
}

public struct TestVector: Equatable, Sendable {
    public var offset: UInt64
    public var length: UInt64
    public var op: TestOperator
    public var specimen: [UInt8]
    public init(offset: UInt64, length: UInt64, op: TestOperator, specimen: [UInt8]) {
        self.offset = offset
        self.length = length
        self.op = op
        self.specimen = specimen
    }
}

public struct WriteVector: Equatable, Sendable {
    public var offset: UInt64
    public var data: [UInt8]
    public init(offset: UInt64, data: [UInt8]) {
        self.offset = offset
        self.data = data
    }
}

public struct ReadVector: Equatable, Sendable {
    public var offset: UInt64
    public var length: UInt64
    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }
}

/// The tests, writes and new length for one share of a slot.
public struct ShareWrite: Equatable, Sendable {
    public var tests: [TestVector]
    public var writes: [WriteVector]
    /// nil: unchanged; 0: delete the share; otherwise the new data length.
    public var newLength: UInt64?
    /// The share's new data, whole, sent earlier with `slot_stage` (then `writes` is empty
    /// and `newLength` nil).
    public var staged: StagedShare?
    public init(tests: [TestVector] = [], writes: [WriteVector] = [], newLength: UInt64? = nil, staged: StagedShare? = nil) {
        self.tests = tests
        self.writes = writes
        self.newLength = newLength
        self.staged = staged
    }
}

/// A share's next contents, sent ahead in pieces (`slot_stage`) under an id the client chose.
public struct StagedShare: Equatable, Sendable {
    public static let idSize = 16
    public var id: [UInt8]
    /// The share's data length.
    public var length: UInt64
    public init(id: [UInt8], length: UInt64) {
        self.id = id
        self.length = length
    }
}

/// One piece of a share's next contents (bytes `offset..<offset+data.count` of its data),
/// Who recorded the write enabler of each mutable share a server holds of a storage index:
/// the 20-byte id in its container. A share moved from another server (Tahoe's, or
/// another grid server's) keeps that server's write enabler, and a writer holding the
/// writekey derives the enabler for the recorded id instead of this server's. Not secret:
/// the enabler itself is derived from the writekey.
public struct SlotOwnersRequest: StorageRequest {
    public typealias Response = SlotOwnersResponse
    public static let method = StorageMethod.slotWriteEnablerOwners
    public var storageIndex: [UInt8]
    public init(storageIndex: [UInt8]) { self.storageIndex = storageIndex }
    public func encode(to w: inout WireWriter) { w.fixed(storageIndex) }
    public init(from r: inout WireReader) throws { storageIndex = try readSI(&r) }
}

public struct SlotOwnersResponse: WireMessage, Equatable {
    /// Share number → the 20-byte id that recorded its write enabler.
    public var owners: [Int: [UInt8]]
    public init(owners: [Int: [UInt8]]) { self.owners = owners }
    public func encode(to w: inout WireWriter) {
        w.list(owners.sorted { $0.key < $1.key }) { w, e in w.u8(UInt8(e.key)); w.fixed(e.value) }
    }
    public init(from r: inout WireReader) throws {
        var o: [Int: [UInt8]] = [:]
        for (n, id) in try r.list("owners", minElementSize: 21, max: 256, { r in (try readShareNumber(&r), try r.fixed(20, "node id")) }) {
            o[n] = id
        }
        owners = o
    }
}

/// kept by the server apart from the share until a test-and-write names the staging id.
/// Lets a share larger than one message be replaced all or nothing.
public struct SlotStageRequest: StorageRequest {
    public typealias Response = EmptyMessage
    public static let method = StorageMethod.slotStage
    public var storageIndex: [UInt8]
    public var writeEnabler: [UInt8]
    public var shareNumber: Int
    public var stagingID: [UInt8]
    public var offset: UInt64
    public var data: [UInt8]

    public init(storageIndex: [UInt8], writeEnabler: [UInt8], shareNumber: Int, stagingID: [UInt8], offset: UInt64, data: [UInt8]) {
        (self.storageIndex, self.writeEnabler, self.shareNumber, self.stagingID, self.offset, self.data) =
            (storageIndex, writeEnabler, shareNumber, stagingID, offset, data)
    }

    /// Bytes of the encoded request beyond the data itself.
    public static let overhead = 16 + 32 + 1 + StagedShare.idSize + 8 + 4

    public static func encode(storageIndex: [UInt8], writeEnabler: [UInt8], shareNumber: Int, stagingID: [UInt8], offset: UInt64,
                              data: UnsafeRawBufferPointer, to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.fixed(writeEnabler)
        w.u8(UInt8(shareNumber))
        w.fixed(stagingID)
        w.u64(offset)
        w.data(data)
    }

    public func encode(to w: inout WireWriter) {
        data.withUnsafeBytes {
            Self.encode(storageIndex: storageIndex, writeEnabler: writeEnabler, shareNumber: shareNumber, stagingID: stagingID,
                        offset: offset, data: $0, to: &w)
        }
    }

    public init(from r: inout WireReader) throws {
        storageIndex = try readSI(&r)
        writeEnabler = try readSecret(&r, "write enabler")
        shareNumber = try readShareNumber(&r)
        stagingID = try r.fixed(StagedShare.idSize, "staging id")
        offset = try r.u64("offset")
        data = try r.data("stage data", max: maxChunk)
    }
}

func encodeReadv(_ w: inout WireWriter, _ readv: [ReadVector]) {
    w.list(readv) { w, v in w.u64(v.offset); w.u64(v.length) }
}

func decodeReadv(_ r: inout WireReader) throws -> [ReadVector] {
    try r.list("read vector", minElementSize: 16, max: 1024) { ReadVector(offset: try $0.u64("offset"), length: try $0.u64("length")) }
}

/// What a slot read returns: share number → one byte string per read-vector element.
public struct SlotReadResults: WireMessage {
    public var reads: [Int: [[UInt8]]]
    public init(_ reads: [Int: [[UInt8]]]) { self.reads = reads }
    public func encode(to w: inout WireWriter) {
        w.list(reads.sorted { $0.key < $1.key }) { w, e in
            w.u8(UInt8(e.key))
            w.list(e.value) { $0.data($1) }
        }
    }
    public init(from r: inout WireReader) throws {
        let pairs = try r.list("read results", minElementSize: 5, max: 256) { r -> (Int, [[UInt8]]) in
            (try readShareNumber(&r), try r.list("read data", minElementSize: 4, max: 1024) { try $0.data("read data", max: maxChunk) })
        }
        reads = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
    }
}

public struct SlotReadRequest: StorageRequest {
    public typealias Response = SlotReadResults
    public static let method = StorageMethod.slotReadv
    public var storageIndex: [UInt8]
    /// Empty means every share held.
    public var shareNumbers: [Int]
    public var readVector: [ReadVector]

    public init(storageIndex: [UInt8], shareNumbers: [Int], readVector: [ReadVector]) {
        self.storageIndex = storageIndex
        self.shareNumbers = shareNumbers
        self.readVector = readVector
    }

    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.list(shareNumbers) { $0.u8(UInt8($1)) }
        encodeReadv(&w, readVector)
    }

    public init(from r: inout WireReader) throws {
        storageIndex = try readSI(&r)
        shareNumbers = try r.list("share numbers", max: 256) { try readShareNumber(&$0) }
        readVector = try decodeReadv(&r)
    }
}

public struct SlotWriteRequest: StorageRequest {
    public typealias Response = SlotWriteResponse
    public static let method = StorageMethod.slotTestvAndReadvAndWritev
    public var storageIndex: [UInt8]
    public var writeEnabler: [UInt8]
    public var renewSecret: [UInt8]
    public var cancelSecret: [UInt8]
    public var writes: [Int: ShareWrite]
    public var readVector: [ReadVector]

    public init(storageIndex: [UInt8], writeEnabler: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8],
                writes: [Int: ShareWrite], readVector: [ReadVector]) {
        self.storageIndex = storageIndex
        self.writeEnabler = writeEnabler
        self.renewSecret = renewSecret
        self.cancelSecret = cancelSecret
        self.writes = writes
        self.readVector = readVector
    }

    public func encode(to w: inout WireWriter) {
        w.fixed(storageIndex)
        w.fixed(writeEnabler)
        w.fixed(renewSecret)
        w.fixed(cancelSecret)
        w.list(writes.sorted { $0.key < $1.key }) { w, e in
            w.u8(UInt8(e.key))
            w.list(e.value.tests) { w, t in w.u64(t.offset); w.u64(t.length); w.u8(t.op.rawValue); w.data(t.specimen) }
            w.list(e.value.writes) { w, d in w.u64(d.offset); w.data(d.data) }
            if let n = e.value.newLength { w.bool(true); w.u64(n) } else { w.bool(false) }
            if let st = e.value.staged { w.bool(true); w.fixed(st.id); w.u64(st.length) } else { w.bool(false) }
        }
        encodeReadv(&w, readVector)
    }

    public init(from r: inout WireReader) throws {
        storageIndex = try readSI(&r)
        writeEnabler = try readSecret(&r, "write enabler")
        renewSecret = try readSecret(&r, "renew secret")
        cancelSecret = try readSecret(&r, "cancel secret")
        let pairs = try r.list("share writes", minElementSize: 10, max: 256) { r -> (Int, ShareWrite) in
            let sh = try readShareNumber(&r)
            let tests = try r.list("test vector", minElementSize: 21, max: 1024) { r -> TestVector in
                let off = try r.u64("offset"), len = try r.u64("length")
                let opByte = try r.u8("operator")
                guard let op = TestOperator(rawValue: opByte) else {
                    throw WireError(.badRequest, "unknown test operator \(opByte)")
                }
                return TestVector(offset: off, length: len, op: op, specimen: try r.data("specimen", max: maxChunk))
            }
            let writes = try r.list("write vector", minElementSize: 12, max: 1024) {
                WriteVector(offset: try $0.u64("offset"), data: try $0.data("write data", max: maxChunk))
            }
            let newLength: UInt64? = try r.bool("has new length") ? try r.u64("new length") : nil
            let staged: StagedShare? = try r.bool("has staged data")
                ? StagedShare(id: try r.fixed(StagedShare.idSize, "staging id"), length: try r.u64("staged length")) : nil
            if staged != nil && (!writes.isEmpty || newLength != nil) {
                throw WireError(.badRequest, "a share write with staged data carries no write vectors and no new length")
            }
            return (sh, ShareWrite(tests: tests, writes: writes, newLength: newLength, staged: staged))
        }
        writes = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        readVector = try decodeReadv(&r)
    }
}

public struct SlotWriteResponse: WireMessage {
    /// Whether every test passed (and so the writes were applied).
    public var ok: Bool
    /// The reads, taken before any write.
    public var reads: [Int: [[UInt8]]]
    public init(ok: Bool, reads: [Int: [[UInt8]]]) {
        self.ok = ok
        self.reads = reads
    }
    public func encode(to w: inout WireWriter) {
        w.bool(ok)
        SlotReadResults(reads).encode(to: &w)
    }
    public init(from r: inout WireReader) throws {
        ok = try r.bool("ok")
        reads = try SlotReadResults(from: &r).reads
    }
}

// MARK: The client

/// A typed client for the storage service: each call encodes its request and decodes its
/// reply with the message types above, the same code the server uses.
public struct StorageClient: Sendable {
    public let rpc: RPCClient
    public init(_ rpc: RPCClient) { self.rpc = rpc }

    /// Sends one request and decodes its reply.
    public func call<R: StorageRequest>(_ request: R, timeout: Double? = nil) async throws -> R.Response {
        try await rpc.call(request, timeout: timeout)
    }

    public func getVersion() async throws -> StorageVersion { try await call(GetVersionRequest()) }

    public func allocateBuckets(_ req: AllocateRequest) async throws -> AllocateResponse { try await call(req) }

    /// allocate_named_buckets without waiting: sent before anything sent after this
    /// returns, so writes and closes to its named buckets may follow at once (protocol 3);
    /// the completion runs on the event loop thread and must not block.
    public func allocate(_ req: AllocateNamedRequest, timeout: Double? = nil,
                         completion: @escaping @Sendable (Result<AllocateResponse, Error>) -> Void) {
        rpc.call(AllocateNamedRequest.method.rawValue, req.encoded(), timeout: timeout) { r in
            completion(r.flatMap { body in Result { try AllocateResponse(decoding: body) } })
        }
    }

    public func write(bucket: UInt64, offset: UInt64, data: [UInt8]) async throws {
        _ = try await call(BucketWriteRequest(bucket: bucket, offset: offset, data: data))
    }

    /// bucket_write straight from `data` (one copy, into the frame), for the uploader's
    /// stream; the completion runs on the event loop thread and must not block.
    public func write(bucket: UInt64, offset: UInt64, data: UnsafeRawBufferPointer,
                      completion: @escaping @Sendable (Error?) -> Void) {
        rpc.call(BucketWriteRequest.method.rawValue, bodySize: BucketWriteRequest.overhead + data.count, encode: { w in
            BucketWriteRequest.encode(bucket: bucket, offset: offset, data: data, to: &w)
        }, completion: { r in
            if case let .failure(e) = r { completion(e) } else { completion(nil) }
        })
    }

    /// slot_stage straight from `data` (one copy, into the frame, made before this
    /// returns: the buffer may be reused at once); the completion runs on the event loop
    /// thread and must not block.
    public func stage(storageIndex: [UInt8], writeEnabler: [UInt8], share: Int, stagingID: [UInt8], offset: UInt64,
                      data: UnsafeRawBufferPointer, timeout: Double? = nil, completion: @escaping @Sendable (Error?) -> Void) {
        rpc.call(SlotStageRequest.method.rawValue, bodySize: SlotStageRequest.overhead + data.count, timeout: timeout, encode: { w in
            SlotStageRequest.encode(storageIndex: storageIndex, writeEnabler: writeEnabler, shareNumber: share, stagingID: stagingID,
                                    offset: offset, data: data, to: &w)
        }, completion: { r in
            if case let .failure(e) = r { completion(e) } else { completion(nil) }
        })
    }

    public func read(storageIndex: [UInt8], share: Int, offset: UInt64, length: Int,
                     completion: @escaping @Sendable (Result<[UInt8], Error>) -> Void) {
        rpc.call(BucketReadRequest(storageIndex: storageIndex, share: share, offset: offset, length: UInt32(length))) {
            completion($0.map(\.data))
        }
    }

    public func read(storageIndex: [UInt8], share: Int, offset: UInt64, length: Int) async throws -> [UInt8] {
        try await call(BucketReadRequest(storageIndex: storageIndex, share: share, offset: offset, length: UInt32(length))).data
    }

    public func close(bucket: UInt64, timeout: Double? = nil) async throws {
        _ = try await call(BucketCloseRequest(bucket: bucket), timeout: timeout)
    }

    /// bucket_close without waiting: sent behind what was sent before on this connection
    /// (a version-2 server runs it after the bucket's writes); the completion runs on the
    /// event loop thread and must not block.
    public func close(bucket: UInt64, timeout: Double? = nil, completion: @escaping @Sendable (Error?) -> Void) {
        rpc.call(BucketCloseRequest.method.rawValue, BucketCloseRequest(bucket: bucket).encoded(), timeout: timeout) { r in
            if case let .failure(e) = r { completion(e) } else { completion(nil) }
        }
    }

    public func abort(bucket: UInt64) async throws { _ = try await call(BucketAbortRequest(bucket: bucket)) }

    public func getBucketsPeek(_ req: GetBucketsPeekRequest, timeout: Double? = nil) async throws -> GetBucketsPeekResponse {
        try await call(req, timeout: timeout)
    }

    /// Share number → share size, for the complete shares the server holds.
    public func getBuckets(storageIndex: [UInt8]) async throws -> [Int: UInt64] {
        try await call(GetBucketsRequest(storageIndex: storageIndex)).shares
    }

    /// census_batch: the shares held of each storage index (and with `renew`, this client's
    /// lease added or renewed on them), in the order asked.
    public func census(_ entries: [CensusBatchRequest.Entry], renew: Bool, timeout: Double? = nil) async throws -> [CensusBatchResponse.Holding] {
        let got = try await call(CensusBatchRequest(renew: renew, entries: entries), timeout: timeout).holdings
        guard got.count == entries.count else {
            throw WireError(.badRequest, "census_batch answered \(got.count) entries for \(entries.count) asked")
        }
        return got
    }

    public func addLease(storageIndex: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8], timeout: Double? = nil) async throws {
        _ = try await call(AddLeaseRequest(storageIndex: storageIndex, renewSecret: renewSecret, cancelSecret: cancelSecret), timeout: timeout)
    }

    public func renewLease(storageIndex: [UInt8], renewSecret: [UInt8]) async throws {
        _ = try await call(RenewLeaseRequest(storageIndex: storageIndex, secret: renewSecret))
    }

    public func cancelLease(storageIndex: [UInt8], cancelSecret: [UInt8]) async throws {
        _ = try await call(CancelLeaseRequest(storageIndex: storageIndex, secret: cancelSecret))
    }

    public func adviseCorruptShare(mutable: Bool, storageIndex: [UInt8], share: Int, reason: String, timeout: Double? = nil) async throws {
        _ = try await call(AdviseCorruptShareRequest(mutable: mutable, storageIndex: storageIndex, share: share, reason: reason), timeout: timeout)
    }

    public func slotReadv(_ req: SlotReadRequest) async throws -> [Int: [[UInt8]]] { try await call(req).reads }

    /// Returns whether every test passed (and so the writes were applied), and the reads
    /// taken before any write.
    public func slotTestvAndReadvAndWritev(_ req: SlotWriteRequest) async throws -> (Bool, [Int: [[UInt8]]]) {
        let r = try await call(req)
        return (r.ok, r.reads)
    }
}
