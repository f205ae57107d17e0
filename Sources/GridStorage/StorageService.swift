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

    /// Open bucket writers, by session and then by handle: a writer belongs to the
    /// connection that allocated it.
    let writersBySession = Mutex<[UInt64: [UInt64: BucketWriter]]>([:])

    func writer(_ s: RPCSession, _ handle: UInt64) throws -> BucketWriter {
        guard let w = writersBySession.withLock({ $0[s.id]?[handle] }) else {
            throw WireError(.notFound, "no open bucket writer \(handle) on this connection")
        }
        return w
    }

    func forget(_ s: RPCSession, _ handle: UInt64) {
        writersBySession.withLock { _ = $0[s.id]?.removeValue(forKey: handle) }
    }

    /// Allocates `req`'s buckets and opens a writer for each on `session` under the handle
    /// `name` gives its share.
    func allocate(_ req: AllocateRequest, _ session: RPCSession, name: (Int) -> UInt64) throws -> AllocateResponse {
        let alloc = try backend.allocate(si: req.storageIndex, renewSecret: req.renewSecret, cancelSecret: req.cancelSecret,
                                         shares: req.shareNumbers, allocatedSize: req.allocatedSize)
        var handles: [Int: UInt64] = [:]
        var refused: [BucketWriter] = []
        let orphaned = writersBySession.withLock { all -> Bool in
            // The peer vanished while this request was handled (sessionEnded may
            // already have run): nobody will write or abort these, so abort now.
            if session.isEnded { return true }
            for (n, w) in alloc.writers {
                let h = name(n)
                // A name already open (checked before, so only a client racing itself):
                // the new writer is not reachable, so it is not kept.
                if all[session.id]?[h] != nil { refused.append(w); continue }
                all[session.id, default: [:]][h] = w
                handles[n] = h
            }
            return false
        }
        if orphaned {
            for w in alloc.writers.values { w.abort() }
            throw WireError(.connectionLost, "the connection closed while its allocation was made")
        }
        for w in refused { w.abort() }
        return AllocateResponse(alreadyHave: alloc.alreadyHave, writers: handles, inProgress: alloc.inProgress)
    }

    public func sessionEnded(_ session: RPCSession) {
        let open = writersBySession.withLock { $0.removeValue(forKey: session.id) } ?? [:]
        for w in open.values { w.abort() }
    }

    public func methodName(_ method: UInt16) -> String { StorageMethod(rawValue: method).map { "\($0)" } ?? "unknown" }

    /// A bucket writer's writes, close and abort run in the order they arrived on their
    /// connection (keyed by its handle), so a client may close right behind its writes
    /// (protocol version 2). Buckets the client named (protocol 3) are keyed by their
    /// group, and so is the allocate_named_buckets that opens them: it runs before the
    /// writes sent behind it. Requests on different keys still run side by side.
    public func orderingKey(method: UInt16, frameBody: [UInt8], offset: Int) -> UInt64? {
        guard let m = StorageMethod(rawValue: method) else { return nil }
        // Too short: no key; the handler answers with the error.
        switch m {
        case .bucketWrite, .bucketClose, .bucketAbort:
            var r = WireReader(frameBody, offset: offset)
            return (try? r.u64("bucket")).map(NamedBucket.orderingKey(handle:))
        case .allocateNamedBuckets:
            return AllocateNamedRequest.orderingKey(frameBody: frameBody, offset: offset)
        default:
            return nil
        }
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

    /// Decodes a request of type `R`, answers it with `body`, encodes the reply.
    func serve<R: StorageRequest>(_ type: R.Type, _ r: inout WireReader, _ body: (R) throws -> R.Response) throws -> [UInt8] {
        let request = try R(from: &r)
        try r.finish()
        return try body(request).encoded()
    }

    func dispatch(_ m: StorageMethod, _ reader: WireReader, _ session: RPCSession) throws -> [UInt8] {
        var r = reader
        switch m {
        case .getVersion:
            return try serve(GetVersionRequest.self, &r) { _ in
                let space = backend.space()
                let stats = try backend.stats()
                return StorageVersion(
                    protocolVersion: Hello.currentVersion, maximumImmutableShareSize: space.available,
                    availableSpace: space.available, usedSpace: stats.usedBytes, reservedSpace: backend.config.reservedSpace,
                    immutableShares: stats.immutableShares, mutableShares: stats.mutableShares,
                    applicationVersion: applicationVersion)
            }

        case .allocateBuckets:
            return try serve(AllocateRequest.self, &r) { req in
                try allocate(req, session) { _ in nextHandle.add(1, ordering: .relaxed).oldValue }
            }

        case .allocateNamedBuckets:
            return try serve(AllocateNamedRequest.self, &r) { req in
                let names = req.handles
                let taken = writersBySession.withLock { all in names.values.filter { all[session.id]?[$0] != nil } }
                if !taken.isEmpty {
                    throw WireError(.conflict, "group \(req.group) names \(taken.count) bucket(s) still open on this connection")
                }
                return try allocate(req.allocation, session) { names[$0]! }
            }

        case .bucketWrite:
            // The data is written from the frame in place, not from a copy.
            let (h, off, data) = try BucketWriteRequest.decodeInPlace(&r)
            try r.finish()
            let w = try writer(session, h)
            try r.withBytes(data) { try w.write(offset: off, data: $0) }
            return EmptyMessage().encoded()

        case .bucketClose:
            return try serve(BucketCloseRequest.self, &r) { req in
                let w = try writer(session, req.bucket)
                defer { forget(session, req.bucket) }
                try w.close()
                return EmptyMessage()
            }

        case .bucketAbort:
            return try serve(BucketAbortRequest.self, &r) { req in
                try writer(session, req.bucket).abort()
                forget(session, req.bucket)
                return EmptyMessage()
            }

        case .getBuckets:
            return try serve(GetBucketsRequest.self, &r) { GetBucketsResponse(shares: try backend.getBuckets($0.storageIndex)) }

        case .getBucketsPeek:
            return try serve(GetBucketsPeekRequest.self, &r) { req in
                let shares = try backend.getBuckets(req.storageIndex)
                guard let size = shares[req.share] else { return GetBucketsPeekResponse(shares: shares, peek: nil) }
                let p = min(UInt64(req.prefix), size)
                let at = max(p, size - min(UInt64(req.suffix), size))
                // A share that cannot be read now (gone, damaged) is listed without a peek.
                // (A share asked for whole has no suffix left: one read, not two.)
                guard let prefix = try? backend.read(si: req.storageIndex, shnum: req.share, offset: 0, length: Int(p)),
                      let suffix = at == size ? [] : try? backend.read(si: req.storageIndex, shnum: req.share, offset: at, length: Int(size - at))
                else { return GetBucketsPeekResponse(shares: shares, peek: nil) }
                return GetBucketsPeekResponse(shares: shares, peek: SharePeek(share: req.share, prefix: prefix, suffixOffset: at, suffix: suffix))
            }

        case .bucketRead:
            return try serve(BucketReadRequest.self, &r) { req in
                BucketReadResponse(data: try backend.read(si: req.storageIndex, shnum: req.share, offset: req.offset,
                                                          length: Int(req.length)))
            }

        case .addLease:
            return try serve(AddLeaseRequest.self, &r) { req in
                try backend.addLease(si: req.storageIndex, renewSecret: req.renewSecret, cancelSecret: req.cancelSecret)
                return EmptyMessage()
            }

        case .censusBatch:
            return try serve(CensusBatchRequest.self, &r) { req in
                let got = try backend.census(req.entries.map { ($0.storageIndex, $0.renewSecret, $0.cancelSecret) }, renew: req.renew)
                return CensusBatchResponse(holdings: got.map { .init(shares: $0.shares, leaseExpiration: $0.leaseExpiration) })
            }

        case .renewLease:
            return try serve(RenewLeaseRequest.self, &r) { req in
                try backend.renewLease(si: req.storageIndex, renewSecret: req.secret)
                return EmptyMessage()
            }

        case .cancelLease:
            return try serve(CancelLeaseRequest.self, &r) { req in
                try backend.cancelLease(si: req.storageIndex, cancelSecret: req.secret)
                return EmptyMessage()
            }

        case .adviseCorruptShare:
            return try serve(AdviseCorruptShareRequest.self, &r) { req in
                try backend.adviseCorruptShare(mutable: req.mutable, si: req.storageIndex, shnum: req.share, reason: req.reason)
                return EmptyMessage()
            }

        case .slotReadv:
            return try serve(SlotReadRequest.self, &r) { req in
                SlotReadResults(try backend.slotReadv(si: req.storageIndex, shares: req.shareNumbers,
                                                      readv: req.readVector.map(Self.slotRead)))
            }

        case .slotTestvAndReadvAndWritev:
            return try serve(SlotWriteRequest.self, &r) { req in
                let (ok, reads) = try backend.slotTestvAndReadvAndWritev(
                    si: req.storageIndex, writeEnabler: req.writeEnabler, renewSecret: req.renewSecret,
                    cancelSecret: req.cancelSecret, writes: req.writes.mapValues(Self.slotUpdate),
                    readv: req.readVector.map(Self.slotRead))
                return SlotWriteResponse(ok: ok, reads: reads)
            }

        case .slotWriteEnablerOwners:
            return try serve(SlotOwnersRequest.self, &r) { req in
                SlotOwnersResponse(owners: try backend.slotWriteEnablerOwners(si: req.storageIndex))
            }

        case .slotStage:
            return try serve(SlotStageRequest.self, &r) { req in
                try backend.slotStage(si: req.storageIndex, writeEnabler: req.writeEnabler, share: req.shareNumber,
                                      id: req.stagingID, offset: req.offset, data: req.data)
                return EmptyMessage()
            }
        }
    }

    // MARK: Wire → backend

    /// offset + length as a range; a length that runs past 2^64 means "to the end".
    static func range(_ offset: UInt64, _ length: UInt64) -> Range<UInt64> {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return offset..<(overflow ? .max : end)
    }

    static func slotRead(_ v: ReadVector) -> Range<UInt64> { range(v.offset, v.length) }

    static func comparison(_ op: TestOperator) -> SlotComparison {
        switch op {
        case .lt: return .lessThan
        case .le: return .lessOrEqual
        case .eq: return .equal
        case .ne: return .notEqual
        case .ge: return .greaterOrEqual
        case .gt: return .greaterThan
        }
    }

    static func slotUpdate(_ w: ShareWrite) -> SlotUpdate {
        SlotUpdate(tests: w.tests.map { SlotTest(range($0.offset, $0.length), comparison($0.op), $0.specimen) },
                   writes: w.writes.map { (offset: $0.offset, data: $0.data) },
                   newLength: w.newLength, staged: w.staged.map { (id: $0.id, length: $0.length) })
    }
}
