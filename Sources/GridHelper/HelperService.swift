import Dispatch
import GridClient
import GridCrypto
import GridFormat
import GridImmutable
import GridProtocol
import GridSystem
import GridWire
import Synchronization

/// The upload helper's service: takes a file's ciphertext from a client (in pieces, in
/// any order, resumable), then encodes it and places the shares as a client upload would
/// (the helper's own lease secret holds the leases). It never has the key: the client
/// sends the storage index and makes the capability.
///
/// On disk, under `incoming/`, each upload in progress is `<storage index, base32>.data` (the
/// ciphertext so far, written where each piece belongs) and `<...>.state`, one line
/// `size needed happy total segment_size have secret-hash` saying how many leading bytes are known
/// to be on disk (written after an fdatasync of the data, every 8 MiB of progress), so
/// an upload resumes after a helper restart from that point. Uploads untouched for
/// `abandonAfter` seconds are deleted.
public final class HelperService: RPCService, @unchecked Sendable {
    public let serviceName = helperServiceName
    let secret: [UInt8]
    let incoming: String
    let pool: ServerPool
    let settings: ClientSettings
    let coding: CodingOptions
    let maxFinishing: Int
    let abandonAfter: Double
    let log: @Sendable (String) -> Void

    final class Upload {
        let size: UInt64
        let encoding: HelperEncoding
        /// SHA-256 of the upload secret the uploader presented at start.
        let secretHash: [UInt8]
        let file: FileDescriptor
        /// Byte ranges received.
        var ranges = ByteRanges()
        /// Leading bytes recorded in the state file.
        var recorded: UInt64
        var finishing = false
        var touched = monotonicNow()

        init(size: UInt64, encoding: HelperEncoding, secretHash: [UInt8], file: FileDescriptor, have: UInt64) {
            (self.size, self.encoding, self.secretHash, self.file, self.recorded) = (size, encoding, secretHash, file, have)
            ranges.insert(0..<have)
        }

        /// Leading bytes received without a gap.
        var have: UInt64 { ranges.prefix }
    }

    /// Storage index (base32) → upload in progress. Each upload's own fields are guarded by
    /// this lock too; file writes happen outside it.
    let uploads = Mutex<[String: Upload]>([:])
    /// Counters for metrics: bytes received, uploads finished, found stored already.
    public let received = Atomic<UInt64>(0)
    public let finished = Atomic<UInt64>(0)
    public let foundStored = Atomic<UInt64>(0)

    /// Uploads held at once (each an open file); more are refused until some finish.
    let maxUploads = 256
    /// Received pieces not yet joined to the prefix, per upload: a client sending many
    /// small pieces with gaps is refused rather than allowed to slow everyone.
    let maxRanges = 4096
    /// An upload whose owner is active cannot be taken over by another secret (which is
    /// someone without the key); one untouched this long can.
    let takeoverAfter = 3600.0

    public init(secret: [UInt8], directory: String, pool: ServerPool, settings: ClientSettings, coding: CodingOptions = CodingOptions(),
                maxFinishing: Int = 2, abandonAfter: Double = 2 * 86_400, log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        self.secret = secret
        incoming = directory + "/incoming"
        self.pool = pool
        self.settings = settings
        self.coding = coding
        self.maxFinishing = maxFinishing
        self.abandonAfter = abandonAfter
        self.log = log
        try FileSystem.makeDirectories(incoming, permissions: 0o700)
        pruneAbandoned()
    }

    public func authorize(secret: [UInt8]) -> Bool { constantTimeEqual(secret, self.secret) }

    public func methodName(_ method: UInt16) -> String { HelperMethod(rawValue: method).map { "\($0)" } ?? "unknown" }

    public func sessionEnded(_ session: RPCSession) {}

    /// Uploads in progress now (metrics).
    public var inProgress: Int { uploads.withLock { $0.count } }

    public func handle(method: UInt16, body: [UInt8], session: RPCSession) throws -> [UInt8] {
        guard let m = HelperMethod(rawValue: method) else { throw WireError(.unknownMethod, "the helper has no method \(method)") }
        switch m {
        case .start: return try start(HelperStartRequest(decoding: body)).encoded()
        case .append: return try append(HelperAppendRequest(decoding: body)).encoded()
        case .finish: return try finish(HelperFinishRequest(decoding: body)).encoded()
        }
    }

    func paths(_ si: [UInt8]) -> (data: String, state: String) {
        let base = incoming + "/" + Base32.encode(si)
        return (base + ".data", base + ".state")
    }

    func uploader(_ e: HelperEncoding) -> Uploader {
        var s = settings
        s.encoding = ClientEncoding(needed: e.needed, happy: e.happy, total: e.total, maxSegmentSize: e.maxSegmentSize)
        s.helper = nil
        return Uploader(pool: pool, settings: s, coding: coding, useHelper: false)
    }

    func start(_ r: HelperStartRequest) throws -> HelperStartResponse {
        pruneAbandoned()
        let key = Base32.encode(r.storageIndex)
        // Stored whole already: nothing need be sent, and a partial copy here is dropped.
        let up = uploader(r.encoding)
        let si = r.storageIndex
        let size = r.size
        if let ueb = waitFor({ await up.storedURIExtension(storageIndex: si, size: size) }) {
            let dropped = uploads.withLock { u -> Upload? in
                guard let x = u[key], !x.finishing else { return nil }
                u[key] = nil
                return x
            }
            if dropped != nil || FileSystem.exists(paths(si).data) { removeFiles(si) }
            _ = foundStored.add(1, ordering: .relaxed)
            log("\(key.prefix(8)): stored already; nothing to take")
            return HelperStartResponse(alreadyStored: true, have: r.size, uriExtension: ueb)
        }
        let secretHash = SHA256.hash(r.uploadSecret)
        // Room for the whole file (beyond what the uploads held already still need).
        let pending = uploads.withLock { u in u.values.reduce(UInt64(0)) { $0 &+ ($1.size &- min($1.size, $1.have)) } }
        if let free = try? FileSystem.availableSpace(incoming), r.size > free || pending > free - r.size {
            throw WireError(.noSpace, "the helper has \(free) bytes free, not enough for this \(r.size)-byte file; upload directly")
        }
        return try uploads.withLock { u -> HelperStartResponse in
            if let x = u[key] {
                if x.size == r.size && x.encoding == r.encoding && constantTimeEqual(x.secretHash, secretHash) {
                    x.touched = monotonicNow()
                    return HelperStartResponse(alreadyStored: false, have: x.have, uriExtension: [])
                }
                // Another secret is someone without the key (the secret derives from it): it
                // may not take over an upload in use, only one abandoned for an hour.
                guard !x.finishing, monotonicNow() - x.touched > takeoverAfter else {
                    throw WireError(.badSecret, "another upload of this storage index is in progress here")
                }
                u[key] = nil
            }
            guard u.count < maxUploads else {
                throw WireError(.conflict, "the helper holds \(maxUploads) uploads already; busy")
            }
            let p = paths(si)
            // Resume from what an earlier process recorded, if it was this same upload.
            var have: UInt64 = 0
            if let text = try? FileSystem.readFile(p.state, maxSize: 256),
               let st = parseState(String(decoding: text, as: UTF8.self)),
               st.size == r.size, st.encoding == r.encoding, st.have <= r.size, constantTimeEqual(st.secretHash, secretHash) {
                have = st.have
            }
            let file: FileDescriptor
            if have > 0, let f = try? FileDescriptor(path: p.data, [.readWrite]), let st = try? f.status(), st.size >= have {
                file = f
            } else {
                // A new file, never the old inode: writes still in flight to an upload that
                // was replaced land in the unlinked old file, not in this one.
                have = 0
                try? FileSystem.remove(p.data)
                file = try FileDescriptor(path: p.data, [.readWrite, .create, .exclusive], permissions: 0o600)
            }
            let x = Upload(size: r.size, encoding: r.encoding, secretHash: secretHash, file: file, have: have)
            u[key] = x
            if have > 0 { log("\(key.prefix(8)): resuming at \(have) of \(r.size) bytes") }
            try writeState(si, x, have: have)
            return HelperStartResponse(alreadyStored: false, have: have, uriExtension: [])
        }
    }

    /// The upload in progress for a request's storage index and secret.
    func upload(_ si: [UInt8], _ secret: [UInt8]) throws -> Upload {
        guard let x = uploads.withLock({ $0[Base32.encode(si)] }) else {
            throw WireError(.notFound, "no upload of this file is in progress here; call start first")
        }
        guard constantTimeEqual(x.secretHash, SHA256.hash(secret)) else {
            throw WireError(.badSecret, "this upload was started with another upload secret")
        }
        return x
    }

    func append(_ r: HelperAppendRequest) throws -> HelperAppendResponse {
        let x = try upload(r.storageIndex, r.uploadSecret)
        let (end, overflow) = r.offset.addingReportingOverflow(UInt64(r.data.count))
        guard !overflow, end <= x.size else {
            throw WireError(.badRequest, "\(r.data.count) bytes at offset \(r.offset) go past the file's \(x.size) bytes")
        }
        try uploads.withLock { _ in
            guard !x.finishing else { throw WireError(.conflict, "this file is being encoded now; no more data is taken") }
            guard x.ranges.ranges.count < maxRanges else {
                throw WireError(.badRequest, "\(maxRanges) separate pieces held; send the bytes that join them first")
            }
        }
        guard !r.data.isEmpty else { return HelperAppendResponse(have: uploads.withLock { _ in x.have }) }
        do {
            try x.file.write(at: r.offset, r.data)
        } catch {
            throw helperStorageError("store the data", error)
        }
        _ = received.add(UInt64(r.data.count), ordering: .relaxed)
        let key = Base32.encode(r.storageIndex)
        let id = ObjectIdentifier(x)
        let (have, record) = uploads.withLock { u -> (UInt64, Bool) in
            x.ranges.insert(r.offset..<end)
            x.touched = monotonicNow()
            let h = x.have
            // Only the upload still registered records its progress (not one replaced or finished).
            let current = u[key].map { ObjectIdentifier($0) == id } ?? false
            return (h, current && (h == x.size || h >= x.recorded + (8 << 20)))
        }
        if record {
            // Data first, then the record that says it is there.
            do { try x.file.sync() } catch { throw helperStorageError("sync the data", error) }
            let si = r.storageIndex
            try uploads.withLock { u in
                guard let cur = u[key], ObjectIdentifier(cur) == id, have > x.recorded else { return }
                do { try writeState(si, x, have: have) } catch { throw helperStorageError("record its progress", error) }
            }
        }
        return HelperAppendResponse(have: have)
    }

    func finish(_ r: HelperFinishRequest) throws -> HelperFinishResponse {
        let key = Base32.encode(r.storageIndex)
        let found = ObjectIdentifier(try upload(r.storageIndex, r.uploadSecret))
        let x: Upload = try uploads.withLock { u in
            guard let x = u[key], ObjectIdentifier(x) == found else { throw WireError(.notFound, "no upload of this file is in progress here; call start first") }
            guard !x.finishing else { throw WireError(.conflict, "this file is being encoded already") }
            guard x.have == x.size else {
                throw WireError(.badRequest, "the helper holds \(x.have) leading bytes of \(x.size); send the rest first")
            }
            guard u.values.filter(\.finishing).count < maxFinishing else {
                throw WireError(.conflict, "the helper is encoding \(maxFinishing) files already; busy")
            }
            x.finishing = true
            return x
        }
        let source: FileSource
        do {
            source = try FileSource(file: x.file, name: paths(r.storageIndex).data)
            guard source.size == x.size else {
                throw GridError(.corrupt, "the received file is \(source.size) bytes, not \(x.size)")
            }
        } catch {
            uploads.withLock { _ in x.finishing = false }
            throw WireError(.internal, "the helper cannot use what it received: \(error)")
        }
        let up = uploader(x.encoding)
        let si = r.storageIndex
        let started = monotonicNow()
        let result = waitFor { () -> Result<Uploader.StoredShares, Error> in
            do { return .success(try await up.storeCiphertext(source: source, storageIndex: si)) } catch { return .failure(error) }
        }
        switch result {
        case let .success(stored):
            uploads.withLock { $0[key] = nil }
            removeFiles(si)
            _ = finished.add(1, ordering: .relaxed)
            log("\(key.prefix(8)): \(x.size) bytes encoded and placed in \(String(format: "%.1f", monotonicNow() - started)) s, happiness \(stored.happiness)")
            var placement: [(share: Int, server: String)] = []
            for (share, servers) in stored.placement.sorted(by: { $0.key < $1.key }) {
                for s in servers { placement.append((share: share, server: s)) }
            }
            return HelperFinishResponse(uriExtension: stored.uriExtension.serialized(), happiness: stored.happiness,
                                        sharesAlreadyPresent: stored.sharesAlreadyPresent, placement: placement)
        case let .failure(error):
            uploads.withLock { _ in x.finishing = false }
            log("\(key.prefix(8)): placing the shares failed: \(error)")
            // The data stays: the client may call finish again.
            let cls = (error as? ClassifiedError)?.errorClass
            throw WireError(cls == .noSpace ? .noSpace : .internal, "the helper could not place the shares: \(error)")
        }
    }

    /// Deletes uploads nobody has touched for `abandonAfter` seconds (in memory and on disk).
    func pruneAbandoned() {
        let now = monotonicNow()
        let stale = uploads.withLock { u -> [String] in
            let old = u.filter { !$0.value.finishing && now - $0.value.touched > abandonAfter }.map(\.key)
            for k in old { u[k] = nil }
            return old
        }
        for k in stale { try? FileSystem.remove(incoming + "/" + k + ".data"); try? FileSystem.remove(incoming + "/" + k + ".state") }
        // Files left by an earlier process: by modification time.
        let wall = fileClock()
        let active = uploads.withLock { Set($0.keys) }
        for name in (try? FileSystem.list(incoming)) ?? [] {
            let k = String(name.split(separator: ".").first ?? "")
            guard !active.contains(k), let st = try? FileSystem.status(incoming + "/" + name),
                  wall - Double(st.modified) > abandonAfter else { continue }
            try? FileSystem.remove(incoming + "/" + name)
        }
    }

    func removeFiles(_ si: [UInt8]) {
        let p = paths(si)
        try? FileSystem.remove(p.data)
        try? FileSystem.remove(p.state)
    }

    func writeState(_ si: [UInt8], _ x: Upload, have: UInt64) throws {
        let e = x.encoding
        let line = "\(x.size) \(e.needed) \(e.happy) \(e.total) \(e.maxSegmentSize) \(have) \(Base32.encode(x.secretHash))\n"
        try FileSystem.writeFileAtomically(paths(si).state, Array(line.utf8))
        x.recorded = have
    }

    func parseState(_ text: String) -> (size: UInt64, encoding: HelperEncoding, have: UInt64, secretHash: [UInt8])? {
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        guard f.count == 7, let size = UInt64(f[0]), let k = Int(f[1]), let h = Int(f[2]), let n = Int(f[3]),
              let seg = Int(f[4]), let have = UInt64(f[5]), let secretHash = Base32.decode(f[6]), secretHash.count == 32 else { return nil }
        return (size, HelperEncoding(needed: k, happy: h, total: n, maxSegmentSize: seg), have, secretHash)
    }
}

/// A failed write, sync or record on the helper's disk, as the client hears it (a full
/// disk is said so: the client uploads directly).
func helperStorageError(_ what: String, _ error: Error) -> WireError {
    let full = (error as? ClassifiedError)?.errorClass == .noSpace
    return WireError(full ? .noSpace : .internal, "the helper could not \(what): \(error)")
}

/// Runs async work from a synchronous handler thread and waits for it (the work runs on
/// the concurrency pool and the client loop, never on the waiting thread).
func waitFor<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let done = DispatchSemaphore(value: 0)
    let box = Mutex<T?>(nil)
    Task {
        let v = await body()
        box.withLock { $0 = v }
        done.signal()
    }
    done.wait()
    return box.withLock { $0! }
}
