import GridProtocol
import GridSystem
import GridWire
import Synchronization

/// The "storage" RPC service: decodes requests, calls the backend, encodes replies.
/// Bucket writers belong to the session that allocated them; when the connection goes,
/// its unclosed writers are aborted, so a partial share never becomes visible.
public final class StorageService: RPCService, @unchecked Sendable {
    public let serviceName = storageServiceName
    public let backend: StorageBackend
    public let applicationVersion: String
    let nextHandle = Atomic<UInt64>(1)

    public init(backend: StorageBackend, applicationVersion: String = "grid/0.1") {
        self.backend = backend
        self.applicationVersion = applicationVersion
    }

    public func authorize(secret: [UInt8]) -> Bool { true }  // anyone may store; leases carry the secrets

    static let writersKey = "writers"

    func writers(_ s: RPCSession) -> [UInt64: BucketWriter] {
        s.withState { ($0[Self.writersKey] as? [UInt64: BucketWriter]) ?? [:] }
    }

    func writer(_ s: RPCSession, _ handle: UInt64) throws -> BucketWriter {
        guard let w = writers(s)[handle] else {
            throw WireError(.notFound, "no open bucket writer \(handle) on this connection")
        }
        return w
    }

    func forget(_ s: RPCSession, _ handle: UInt64) {
        s.withState { st in
            var m = (st[Self.writersKey] as? [UInt64: BucketWriter]) ?? [:]
            m[handle] = nil
            st[Self.writersKey] = m
        }
    }

    public func sessionEnded(_ session: RPCSession) {
        for w in writers(session).values { w.abort() }
        session.withState { $0[Self.writersKey] = nil }
    }

    public func handle(method: UInt16, body: [UInt8], session: RPCSession) throws -> [UInt8] {
        try handle(method: method, frameBody: body, offset: 0, session: session)
    }

    public func handle(method: UInt16, frameBody: [UInt8], offset: Int, session: RPCSession) throws -> [UInt8] {
        guard let m = StorageMethod(rawValue: method) else {
            throw WireError(.unknownMethod, "the storage service has no method \(method)")
        }
        do {
            return try dispatch(m, WireReader(frameBody, offset: offset), session)
        } catch let e as WireError {
            throw e
        } catch {
            throw Self.wireError(error)
        }
    }

    /// The one place backend errors become wire error codes: by class.
    static func wireError(_ error: Error) -> WireError {
        let code: WireError.Code
        switch error.errorClass {
        case .notFound: code = .notFound
        case .conflict: code = .conflict
        case .noSpace: code = .noSpace
        case .denied: code = .badSecret
        case .usage: code = .badRequest
        case .corrupt, .incompatible, .unavailable, .io, .internal: code = .internal
        }
        return WireError(code, "\(error)")
    }

    func dispatch(_ m: StorageMethod, _ reader: WireReader, _ session: RPCSession) throws -> [UInt8] {
        var r = reader
        /// The whole argument block, for the messages with their own decoders.
        var body: [UInt8] { reader.rest }
        switch m {
        case .getVersion:
            try r.finish()
            let space = backend.space()
            let stats = try backend.stats()
            return StorageVersion(
                protocolVersion: Hello.currentVersion, maximumImmutableShareSize: space.available,
                availableSpace: space.available, usedSpace: stats.usedBytes, reservedSpace: backend.config.reservedSpace,
                immutableShares: stats.immutableShares, mutableShares: stats.mutableShares,
                applicationVersion: applicationVersion
            ).encoded()

        case .allocateBuckets:
            let req = try AllocateRequest(decoding: body)
            let alloc = try backend.allocate(si: req.storageIndex, renewSecret: req.renewSecret, cancelSecret: req.cancelSecret,
                                             shares: req.shareNumbers, allocatedSize: req.allocatedSize)
            var handles: [Int: UInt64] = [:]
            session.withState { st in
                var m = (st[Self.writersKey] as? [UInt64: BucketWriter]) ?? [:]
                for (n, w) in alloc.writers {
                    let h = nextHandle.add(1, ordering: .relaxed).oldValue
                    m[h] = w
                    handles[n] = h
                }
                st[Self.writersKey] = m
            }
            return AllocateResponse(alreadyHave: alloc.alreadyHave, writers: handles).encoded()

        case .bucketWrite:
            let h = try r.u64("bucket"), off = try r.u64("offset"), data = try r.dataRange("data", max: maxChunk)
            try r.finish()
            let w = try writer(session, h)
            try r.withBytes(data) { try w.write(offset: off, data: $0) }
            return []

        case .bucketClose:
            let h = try r.u64("bucket")
            try r.finish()
            let w = try writer(session, h)
            defer { forget(session, h) }
            try w.close()
            return []

        case .bucketAbort:
            let h = try r.u64("bucket")
            try r.finish()
            try writer(session, h).abort()
            forget(session, h)
            return []

        case .getBuckets:
            let si = try r.fixed(16, "storage index")
            try r.finish()
            let b = try backend.getBuckets(si)
            var w = WireWriter()
            w.list(b.sorted { $0.key < $1.key }) { w, e in w.u8(UInt8(e.key)); w.u64(e.value) }
            return w.bytes

        case .bucketRead:
            let si = try r.fixed(16, "storage index"), n = Int(try r.u8("share")), off = try r.u64("offset"), len = Int(try r.u32("length"))
            try r.finish()
            return try backend.read(si: si, shnum: n, offset: off, length: len)

        case .addLease:
            let si = try r.fixed(16, "storage index"), renew = try r.fixed(32, "renew secret"), cancel = try r.fixed(32, "cancel secret")
            try r.finish()
            try backend.addLease(si: si, renewSecret: renew, cancelSecret: cancel)
            return []

        case .renewLease:
            let si = try r.fixed(16, "storage index"), renew = try r.fixed(32, "renew secret")
            try r.finish()
            try backend.renewLease(si: si, renewSecret: renew)
            return []

        case .cancelLease:
            let si = try r.fixed(16, "storage index"), cancel = try r.fixed(32, "cancel secret")
            try r.finish()
            try backend.cancelLease(si: si, cancelSecret: cancel)
            return []

        case .adviseCorruptShare:
            let mutable = try r.bool("mutable"), si = try r.fixed(16, "storage index"), n = Int(try r.u8("share"))
            let reason = try r.string("reason", max: 1000)
            try r.finish()
            try backend.adviseCorruptShare(mutable: mutable, si: si, shnum: n, reason: reason)
            return []

        case .slotReadv:
            let req = try SlotReadRequest(decoding: body)
            return encodeReadResponse(try backend.slotReadv(si: req.storageIndex, shares: req.shareNumbers, readv: req.readVector))

        case .slotTestvAndReadvAndWritev:
            let req = try SlotWriteRequest(decoding: body)
            let (ok, reads) = try backend.slotTestvAndReadvAndWritev(
                si: req.storageIndex, writeEnabler: req.writeEnabler, renewSecret: req.renewSecret,
                cancelSecret: req.cancelSecret, writes: req.writes, readv: req.readVector)
            return encodeSlotWriteResponse(ok: ok, reads: reads)
        }
    }
}
