import GridWire
import GridSystem

/// Methods of the "storage" service (docs/protocol.md has every argument byte by byte).
public enum StorageMethod: UInt16, Sendable {
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
}

public let storageServiceName = "storage"

/// Largest data one bucket_write, bucket_read or slot vector element may carry.
public let maxChunk = 8 << 20

func readSI(_ r: inout WireReader) throws -> [UInt8] { try r.fixed(16, "storage index") }
func readSecret(_ r: inout WireReader, _ what: String) throws -> [UInt8] { try r.fixed(32, what) }

public struct StorageVersion: Equatable, Sendable {
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

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.u16(protocolVersion)
        w.u64(maximumImmutableShareSize)
        w.u64(availableSpace)
        w.u64(usedSpace)
        w.u64(reservedSpace)
        w.u64(immutableShares)
        w.u64(mutableShares)
        w.string(applicationVersion)
        return w.bytes
    }

    public init(decoding b: [UInt8]) throws {
        var r = WireReader(b)
        protocolVersion = try r.u16()
        maximumImmutableShareSize = try r.u64()
        availableSpace = try r.u64()
        usedSpace = try r.u64()
        reservedSpace = try r.u64()
        immutableShares = try r.u64()
        mutableShares = try r.u64()
        applicationVersion = try r.string()
        try r.finish()
    }
}

public struct AllocateRequest: Equatable, Sendable {
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

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.fixed(storageIndex)
        w.fixed(renewSecret)
        w.fixed(cancelSecret)
        w.list(shareNumbers) { $0.u8(UInt8($1)) }
        w.u64(allocatedSize)
        return w.bytes
    }

    public init(decoding b: [UInt8]) throws {
        var r = WireReader(b)
        storageIndex = try readSI(&r)
        renewSecret = try readSecret(&r, "renew secret")
        cancelSecret = try readSecret(&r, "cancel secret")
        shareNumbers = try r.list("share numbers", max: 256) { Int(try $0.u8()) }
        allocatedSize = try r.u64()
        try r.finish()
    }
}

public struct AllocateResponse: Equatable, Sendable {
    /// Shares the server already holds (complete).
    public var alreadyHave: [Int]
    /// Share number → bucket writer handle, for shares the client should now write.
    public var writers: [Int: UInt64]

    public init(alreadyHave: [Int], writers: [Int: UInt64]) {
        self.alreadyHave = alreadyHave
        self.writers = writers
    }

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.list(alreadyHave.sorted()) { $0.u8(UInt8($1)) }
        w.list(writers.sorted { $0.key < $1.key }) { w, e in w.u8(UInt8(e.key)); w.u64(e.value) }
        return w.bytes
    }

    public init(decoding b: [UInt8]) throws {
        var r = WireReader(b)
        alreadyHave = try r.list("already have", max: 256) { Int(try $0.u8()) }
        let pairs = try r.list("writers", minElementSize: 9, max: 256) { (Int(try $0.u8()), try $0.u64()) }
        writers = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        try r.finish()
    }
}

/// A read or write vector element and the test-vector operators.
public enum TestOperator: UInt8, Sendable, CaseIterable {
    case lt = 1, le = 2, eq = 3, ne = 4, ge = 5, gt = 6

    /// Compares `a` (the share's bytes) with `b` (the specimen), bytes compared lexicographically.
    public func evaluate(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        switch self {
        case .eq: return a == b
        case .ne: return a != b
        case .lt: return a.lexicographicallyPrecedes(b)
        case .le: return !b.lexicographicallyPrecedes(a)
        case .gt: return b.lexicographicallyPrecedes(a)
        case .ge: return !a.lexicographicallyPrecedes(b)
        }
    }
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
    public init(tests: [TestVector] = [], writes: [WriteVector] = [], newLength: UInt64? = nil) {
        self.tests = tests
        self.writes = writes
        self.newLength = newLength
    }
}

func encodeReadv(_ w: inout WireWriter, _ readv: [ReadVector]) {
    w.list(readv) { w, v in w.u64(v.offset); w.u64(v.length) }
}

func decodeReadv(_ r: inout WireReader) throws -> [ReadVector] {
    try r.list("read vector", minElementSize: 16, max: 1024) { ReadVector(offset: try $0.u64(), length: try $0.u64()) }
}

func encodeReadResults(_ w: inout WireWriter, _ results: [Int: [[UInt8]]]) {
    w.list(results.sorted { $0.key < $1.key }) { w, e in
        w.u8(UInt8(e.key))
        w.list(e.value) { $0.data($1) }
    }
}

func decodeReadResults(_ r: inout WireReader) throws -> [Int: [[UInt8]]] {
    let pairs = try r.list("read results", minElementSize: 5, max: 256) { r -> (Int, [[UInt8]]) in
        (Int(try r.u8()), try r.list("read data", minElementSize: 4, max: 1024) { try $0.data(max: maxChunk) })
    }
    return Dictionary(pairs, uniquingKeysWith: { a, _ in a })
}

public struct SlotReadRequest: Equatable, Sendable {
    public var storageIndex: [UInt8]
    /// Empty means every share held.
    public var shareNumbers: [Int]
    public var readVector: [ReadVector]

    public init(storageIndex: [UInt8], shareNumbers: [Int], readVector: [ReadVector]) {
        self.storageIndex = storageIndex
        self.shareNumbers = shareNumbers
        self.readVector = readVector
    }

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.fixed(storageIndex)
        w.list(shareNumbers) { $0.u8(UInt8($1)) }
        encodeReadv(&w, readVector)
        return w.bytes
    }

    public init(decoding b: [UInt8]) throws {
        var r = WireReader(b)
        storageIndex = try readSI(&r)
        shareNumbers = try r.list("share numbers", max: 256) { Int(try $0.u8()) }
        readVector = try decodeReadv(&r)
        try r.finish()
    }
}

public struct SlotWriteRequest: Equatable, Sendable {
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

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.fixed(storageIndex)
        w.fixed(writeEnabler)
        w.fixed(renewSecret)
        w.fixed(cancelSecret)
        w.list(writes.sorted { $0.key < $1.key }) { w, e in
            w.u8(UInt8(e.key))
            w.list(e.value.tests) { w, t in w.u64(t.offset); w.u64(t.length); w.u8(t.op.rawValue); w.data(t.specimen) }
            w.list(e.value.writes) { w, d in w.u64(d.offset); w.data(d.data) }
            if let n = e.value.newLength { w.bool(true); w.u64(n) } else { w.bool(false) }
        }
        encodeReadv(&w, readVector)
        return w.bytes
    }

    public init(decoding b: [UInt8]) throws {
        var r = WireReader(b)
        storageIndex = try readSI(&r)
        writeEnabler = try readSecret(&r, "write enabler")
        renewSecret = try readSecret(&r, "renew secret")
        cancelSecret = try readSecret(&r, "cancel secret")
        let pairs = try r.list("share writes", minElementSize: 10, max: 256) { r -> (Int, ShareWrite) in
            let sh = Int(try r.u8())
            let tests = try r.list("test vector", minElementSize: 21, max: 1024) { r -> TestVector in
                let off = try r.u64(), len = try r.u64()
                let opByte = try r.u8()
                guard let op = TestOperator(rawValue: opByte) else {
                    throw WireError(.badRequest, "unknown test operator \(opByte)")
                }
                return TestVector(offset: off, length: len, op: op, specimen: try r.data(max: maxChunk))
            }
            let writes = try r.list("write vector", minElementSize: 12, max: 1024) {
                WriteVector(offset: try $0.u64(), data: try $0.data(max: maxChunk))
            }
            let newLength: UInt64? = try r.bool("has new length") ? try r.u64() : nil
            return (sh, ShareWrite(tests: tests, writes: writes, newLength: newLength))
        }
        writes = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        readVector = try decodeReadv(&r)
        try r.finish()
    }
}

/// A typed client for the storage service.
public struct StorageClient: Sendable {
    public let rpc: RPCClient
    public init(_ rpc: RPCClient) { self.rpc = rpc }

    func call(_ m: StorageMethod, _ body: [UInt8]) async throws -> [UInt8] { try await rpc.call(m.rawValue, body) }

    public func getVersion() async throws -> StorageVersion {
        try StorageVersion(decoding: try await call(.getVersion, []))
    }

    public func allocateBuckets(_ req: AllocateRequest) async throws -> AllocateResponse {
        try AllocateResponse(decoding: try await call(.allocateBuckets, req.encoded()))
    }

    public func write(bucket: UInt64, offset: UInt64, data: [UInt8]) async throws {
        var w = WireWriter(capacity: data.count + 20)
        w.u64(bucket)
        w.u64(offset)
        w.data(data)
        _ = try await call(.bucketWrite, w.bytes)
    }

    /// Callback form of `write`, for streaming many writes from a thread; the completion
    /// runs on the event loop thread and must not block.
    public func write(bucket: UInt64, offset: UInt64, data: UnsafeRawBufferPointer,
                      completion: @escaping @Sendable (Error?) -> Void) {
        rpc.call(StorageMethod.bucketWrite.rawValue, bodySize: 20 + data.count, encode: { w in
            w.u64(bucket)
            w.u64(offset)
            w.data(data)
        }, completion: { r in
            if case let .failure(e) = r { completion(e) } else { completion(nil) }
        })
    }

    /// Callback form of `read` (see `write(bucket:offset:data:completion:)`).
    public func read(storageIndex: [UInt8], share: Int, offset: UInt64, length: Int,
                     completion: @escaping @Sendable (Result<[UInt8], Error>) -> Void) {
        var w = WireWriter()
        w.fixed(storageIndex)
        w.u8(UInt8(share))
        w.u64(offset)
        w.u32(UInt32(length))
        rpc.call(StorageMethod.bucketRead.rawValue, w.bytes, completion: completion)
    }

    public func close(bucket: UInt64) async throws {
        var w = WireWriter()
        w.u64(bucket)
        _ = try await call(.bucketClose, w.bytes)
    }

    public func abort(bucket: UInt64) async throws {
        var w = WireWriter()
        w.u64(bucket)
        _ = try await call(.bucketAbort, w.bytes)
    }

    /// Share number → share size, for the complete shares the server holds.
    public func getBuckets(storageIndex: [UInt8]) async throws -> [Int: UInt64] {
        var r = WireReader(try await call(.getBuckets, storageIndex))
        let pairs = try r.list("buckets", minElementSize: 9, max: 256) { (Int(try $0.u8()), try $0.u64()) }
        try r.finish()
        return Dictionary(pairs, uniquingKeysWith: { a, _ in a })
    }

    public func read(storageIndex: [UInt8], share: Int, offset: UInt64, length: Int) async throws -> [UInt8] {
        var w = WireWriter()
        w.fixed(storageIndex)
        w.u8(UInt8(share))
        w.u64(offset)
        w.u32(UInt32(length))
        return try await call(.bucketRead, w.bytes)
    }

    public func addLease(storageIndex: [UInt8], renewSecret: [UInt8], cancelSecret: [UInt8]) async throws {
        var w = WireWriter()
        w.fixed(storageIndex)
        w.fixed(renewSecret)
        w.fixed(cancelSecret)
        _ = try await call(.addLease, w.bytes)
    }

    public func renewLease(storageIndex: [UInt8], renewSecret: [UInt8]) async throws {
        var w = WireWriter()
        w.fixed(storageIndex)
        w.fixed(renewSecret)
        _ = try await call(.renewLease, w.bytes)
    }

    public func cancelLease(storageIndex: [UInt8], cancelSecret: [UInt8]) async throws {
        var w = WireWriter()
        w.fixed(storageIndex)
        w.fixed(cancelSecret)
        _ = try await call(.cancelLease, w.bytes)
    }

    public func adviseCorruptShare(mutable: Bool, storageIndex: [UInt8], share: Int, reason: String) async throws {
        var w = WireWriter()
        w.bool(mutable)
        w.fixed(storageIndex)
        w.u8(UInt8(share))
        w.string(String(reason.prefix(1000)))
        _ = try await call(.adviseCorruptShare, w.bytes)
    }

    public func slotReadv(_ req: SlotReadRequest) async throws -> [Int: [[UInt8]]] {
        var r = WireReader(try await call(.slotReadv, req.encoded()))
        let out = try decodeReadResults(&r)
        try r.finish()
        return out
    }

    /// Returns whether every test passed (and so the writes were applied), and the reads
    /// taken before any write.
    public func slotTestvAndReadvAndWritev(_ req: SlotWriteRequest) async throws -> (Bool, [Int: [[UInt8]]]) {
        var r = WireReader(try await call(.slotTestvAndReadvAndWritev, req.encoded()))
        let ok = try r.bool()
        let reads = try decodeReadResults(&r)
        try r.finish()
        return (ok, reads)
    }
}

public func encodeSlotWriteResponse(ok: Bool, reads: [Int: [[UInt8]]]) -> [UInt8] {
    var w = WireWriter()
    w.bool(ok)
    encodeReadResults(&w, reads)
    return w.bytes
}

public func encodeReadResponse(_ reads: [Int: [[UInt8]]]) -> [UInt8] {
    var w = WireWriter()
    encodeReadResults(&w, reads)
    return w.bytes
}
