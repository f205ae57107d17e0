import Foundation
import GridCrypto
import GridFormat
import GridDirectory
import GridMutable
import GridIntroducer
import GridProtocol
@testable import GridStorage
import GridSystem
import GridTestSupport
import GridWire

/// A structure-aware fuzzer of the storage and introducer services. It builds requests
/// of every method from typed messages with field values chosen to break arithmetic
/// (offsets and lengths near 2^64, 2^63, 2^32, huge and empty vectors, share numbers at
/// the edges), keeps a little state so that later requests reach deeper code (storage
/// indexes and secrets from small pools, bucket handles the server handed out), sometimes
/// damages the encoded bytes as well, and feeds each one to the real service code. A
/// trap anywhere ends the process: that is the failure it looks for.
final class ServiceFuzzer {
    var rng: SplitMix64
    let root: String
    let backend: StorageBackend
    let storage: StorageService
    let introducer: IntroducerService
    let introducerKey = Ed25519PrivateKey()
    var sessions: [RPCSession]
    let storageIndexes: [[UInt8]]
    let secrets: [[UInt8]]
    /// Real SDMF and MDMF shares (and the capabilities that check them), to damage: what a
    /// client reads back from servers' mutable slots is untrusted too.
    let mutableSamples: [(cap: MutableCapability, bytes: [UInt8])]
    var handles: [UInt64] = [1, 2, 3]
    var sequence: UInt64 = 1

    /// Requests sent, replies, and errors by wire code.
    private(set) var requests = 0
    private(set) var replies = 0
    private(set) var errorCodes: [WireError.Code: Int] = [:]
    private(set) var perMethod: [String: Int] = [:]

    init(seed: UInt64, root: String) throws {
        rng = SplitMix64(state: seed)
        self.root = root
        var config = StorageConfig(nodeDirectory: root)
        config.maxMutableShareSize = 64 << 10
        backend = try StorageBackend(config: config, containerNodeID: [UInt8](repeating: 7, count: 20))
        storage = StorageService(backend: backend)
        introducer = IntroducerService(secret: [UInt8](repeating: 1, count: 20))
        sessions = (1...3).map { RPCSession(id: UInt64($0), peer: "fuzz-\($0)") }
        var g = SplitMix64(state: seed ^ 0xabcdef)
        storageIndexes = (0..<4).map { _ in (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) } }
        secrets = (0..<3).map { i in [UInt8](repeating: UInt8(i + 1), count: 32) }
        let key = try RSAPrivateKey(bits: 2048)
        let sdmf = try SDMFEncoder.encode(Array(repeating: 5, count: 200), privateKey: key, sequenceNumber: 1, needed: 3, total: 5)
        let mdmf = try MDMFEncoder.encode(Array(repeating: 6, count: 300), privateKey: key, sequenceNumber: 1, needed: 3, total: 5)
        mutableSamples = [(sdmf.capability, sdmf.shares[1].serialized()), (mdmf.capability, mdmf.shares[1].serialized())]
        // A mutable directory's packed children (every child kind, metadata of every JSON type).
        var dir = DirectoryContents(mutable: true, writekey: sdmf.capability.writekey)
        let children: [AnyCapability] = [.immutable(.lit(LITCapability(data: Array("hi".utf8)))), .mutable(sdmf.capability),
                                         .mutable(mdmf.capability.readOnly!), .directory(DirectoryCapability(mutable: sdmf.capability)),
                                         .unknown(UnknownCapability(writeString: "x-future:w", readString: "ro.x-future:r"))]
        for (i, c) in children.enumerated() {
            dir.set(DirectoryEntry(name: "child-\(i)-é", capability: c, metadata: try JSONValue.parse(
                #"{"ctime": 1.5e9, "n": [1, -0, null, true, "\u00e9\ud83d\ude00"], "tahoe": {"linkcrtime": 1700000000.123456}}"#)))
        }
        directorySample = (try dir.pack(), sdmf.capability.writekey!)
    }

    let directorySample: (packed: [UInt8], writekey: [UInt8])

    // MARK: Values that break arithmetic

    static let edges: [UInt64] = [
        0, 1, 2, 3, 7, 8, 255, 256, 4095, 4096, 65535, 65536, 1 << 20, 8 << 20, (8 << 20) + 1,
        UInt64(Int32.max), 1 << 31, UInt64(UInt32.max) - 1, UInt64(UInt32.max), 1 << 32, (1 << 32) + 1,
        1 << 44, (1 << 44) + 1, UInt64(Int64.max) - 1, UInt64(Int64.max), 1 << 63, (1 << 63) + 1,
        UInt64.max - 8, UInt64.max - 1, UInt64.max,
    ]

    func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
    func pick<T>(_ xs: [T]) -> T { xs[Int.random(in: 0..<xs.count, using: &rng)] }
    func small(_ upTo: Int) -> Int { Int.random(in: 0...upTo, using: &rng) }

    func u64() -> UInt64 {
        switch small(3) {
        case 0: return pick(Self.edges)
        case 1: return UInt64(small(5000))
        case 2: return pick(Self.edges) &+ UInt64(small(16)) &- 8
        default: return UInt64.random(in: 0...UInt64.max, using: &rng)
        }
    }

    func shareNumber() -> Int { chance(0.8) ? small(9) : pick([0, 1, 127, 128, 254, 255]) }
    func si() -> [UInt8] { chance(0.95) ? pick(storageIndexes) : (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) } }
    func secret() -> [UInt8] { pick(secrets) }
    func bytes(_ max: Int = 300) -> [UInt8] {
        let n = chance(0.1) ? 0 : small(max)
        return (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }
    func handle() -> UInt64 {
        chance(0.8) ? pick(handles) : chance(0.5) ? NamedBucket.handle(group: group(), share: shareNumber()) : u64()
    }
    /// A named-bucket group: mostly a few, so names collide and get reused.
    func group() -> UInt32 { chance(0.9) ? UInt32(small(3)) : UInt32(truncatingIfNeeded: u64()) }
    static let sampleJournal = SlotJournal(target: "shares/aa/aaaa/1", extents: [.bytes(offset: 468, data: [1, 2, 3]), .zeros(offset: 1000, length: 10),
                                                                               .bytes(offset: 0, data: [UInt8](repeating: 7, count: 100))], newSize: 2000).encoded()
    let stagingIDs: [[UInt8]] = (0..<3).map { [UInt8](repeating: UInt8($0), count: StagedShare.idSize) }
    func shares() -> [Int] { (0..<(chance(0.05) ? 256 : small(5))).map { _ in shareNumber() } }
    func readVector() -> [ReadVector] {
        (0..<(chance(0.02) ? 1024 : small(4))).map { _ in ReadVector(offset: u64(), length: u64()) }
    }

    // MARK: Requests

    /// One request of every storage method, with fuzzed fields.
    func storageRequest() -> (StorageMethod, [UInt8]) {
        switch pick(StorageMethod.allCases) {
        case .getVersion: return (.getVersion, GetVersionRequest().encoded())
        case .allocateBuckets:
            let size = chance(0.7) ? UInt64(small(4000)) : u64()
            return (.allocateBuckets, AllocateRequest(storageIndex: si(), renewSecret: secret(), cancelSecret: secret(),
                                                      shareNumbers: shares(), allocatedSize: size).encoded())
        case .allocateNamedBuckets:
            let size = chance(0.7) ? UInt64(small(4000)) : u64()
            return (.allocateNamedBuckets, AllocateNamedRequest(group: group(), allocation: AllocateRequest(
                storageIndex: si(), renewSecret: secret(), cancelSecret: secret(), shareNumbers: shares(), allocatedSize: size)).encoded())
        case .bucketWrite:
            let offset = chance(0.6) ? UInt64(small(4000)) : u64()
            return (.bucketWrite, BucketWriteRequest(bucket: handle(), offset: offset, data: bytes(2000)).encoded())
        case .bucketClose: return (.bucketClose, BucketCloseRequest(bucket: handle()).encoded())
        case .bucketAbort: return (.bucketAbort, BucketAbortRequest(bucket: handle()).encoded())
        case .getBuckets: return (.getBuckets, GetBucketsRequest(storageIndex: si()).encoded())
        case .getBucketsPeek:
            return (.getBucketsPeek, GetBucketsPeekRequest(storageIndex: si(), share: shareNumber(),
                                                           prefix: chance(0.7) ? UInt32(small(5000)) : UInt32(truncatingIfNeeded: u64()),
                                                           suffix: chance(0.7) ? UInt32(small(5000)) : UInt32(truncatingIfNeeded: u64())).encoded())
        case .bucketRead:
            return (.bucketRead, BucketReadRequest(storageIndex: si(), share: shareNumber(), offset: chance(0.5) ? UInt64(small(4000)) : u64(),
                                                   length: chance(0.6) ? UInt32(small(4000)) : UInt32(truncatingIfNeeded: u64())).encoded())
        case .addLease:
            return (.addLease, AddLeaseRequest(storageIndex: si(), renewSecret: secret(), cancelSecret: secret()).encoded())
        case .renewLease: return (.renewLease, RenewLeaseRequest(storageIndex: si(), secret: secret()).encoded())
        case .cancelLease: return (.cancelLease, CancelLeaseRequest(storageIndex: si(), secret: secret()).encoded())
        case .adviseCorruptShare:
            let reason = String(decoding: bytes(1200).map { $0 & 0x7f }, as: UTF8.self)
            return (.adviseCorruptShare, AdviseCorruptShareRequest(mutable: chance(0.5), storageIndex: si(), share: shareNumber(),
                                                                   reason: reason).encoded())
        case .censusBatch:
            let entries = (0..<(chance(0.003) ? CensusBatchRequest.maxEntries : small(6))).map { _ in
                CensusBatchRequest.Entry(storageIndex: si(), renewSecret: secret(), cancelSecret: secret())
            }
            return (.censusBatch, CensusBatchRequest(renew: chance(0.5), entries: entries).encoded())
        case .slotWriteEnablerOwners:
            return (.slotWriteEnablerOwners, SlotOwnersRequest(storageIndex: si()).encoded())
        case .slotStage:
            return (.slotStage, SlotStageRequest(storageIndex: si(), writeEnabler: chance(0.9) ? secrets[0] : secret(), shareNumber: shareNumber(),
                                                 stagingID: pick(stagingIDs), offset: chance(0.7) ? UInt64(small(3000)) : u64(),
                                                 data: bytes(2000)).encoded())
        case .slotReadv:
            return (.slotReadv, SlotReadRequest(storageIndex: si(), shareNumbers: chance(0.5) ? [] : shares(),
                                                readVector: readVector()).encoded())
        case .slotTestvAndReadvAndWritev:
            var writes: [Int: ShareWrite] = [:]
            for _ in 0..<small(3) {
                let tests = (0..<small(2)).map { _ in
                    TestVector(offset: chance(0.5) ? UInt64(small(100)) : u64(), length: chance(0.5) ? UInt64(small(100)) : u64(),
                               op: pick(TestOperator.allCases), specimen: bytes(20))
                }
                let w = (0..<small(3)).map { _ in WriteVector(offset: chance(0.6) ? UInt64(small(3000)) : u64(), data: bytes(500)) }
                let newLength: UInt64? = chance(0.6) ? nil : (chance(0.5) ? UInt64(small(3000)) : u64())
                if chance(0.2) {  // data staged earlier (slot_stage), under one of a few ids
                    writes[shareNumber()] = ShareWrite(tests: tests, staged: StagedShare(id: pick(stagingIDs), length: chance(0.7) ? UInt64(small(3000)) : u64()))
                } else {
                    writes[shareNumber()] = ShareWrite(tests: tests, writes: w, newLength: newLength)
                }
            }
            let enabler = chance(0.9) ? secrets[0] : secret()
            return (.slotTestvAndReadvAndWritev, SlotWriteRequest(storageIndex: si(), writeEnabler: enabler, renewSecret: secret(),
                                                                  cancelSecret: secret(), writes: writes, readVector: readVector()).encoded())
        }
    }

    /// Damage to the encoded bytes: flips, cuts, insertions, and lengths set to edge values.
    func damage(_ b: inout [UInt8]) {
        for _ in 0..<(1 + small(3)) {
            switch small(5) {
            case 0 where !b.isEmpty: b[small(b.count - 1)] ^= UInt8(1 << small(7))
            case 1 where !b.isEmpty: b.removeLast(small(b.count))
            case 2: b.insert(contentsOf: bytes(8), at: small(b.count))
            case 3 where b.count >= 4:
                // Overwrite four bytes (a count or a length, often) with an edge value.
                let at = small(b.count - 4), v = UInt32(truncatingIfNeeded: pick(Self.edges))
                for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32(i))) }
            case 4 where b.count >= 8:
                let at = small(b.count - 8), v = pick(Self.edges)
                for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (56 - 8 * UInt64(i))) }
            default: b += bytes(4)
            }
        }
    }

    /// Sends one fuzzed request to one service.
    func step() {
        requests += 1
        let session = pick(sessions)
        if chance(0.9) {
            var (method, body) = storageRequest()
            let damaged = chance(0.25)
            if damaged { damage(&body) }
            let raw: UInt16 = chance(0.01) ? UInt16(truncatingIfNeeded: u64()) : method.rawValue
            perMethod["\(method)", default: 0] += 1
            let t0 = monotonicNow()
            defer {
                let dt = monotonicNow() - t0
                if dt > 0.2 { slow.append(String(format: "%.2f s: ", dt) + "\(method) \(body.count) bytes" + (damaged ? " (damaged)" : "")) }
            }
            // The RPC server asks for the ordering key on its loop thread, before the
            // handler: it must take any bytes, and key exactly a bucket writer's requests.
            // A named bucket's requests are keyed by its group, as is the allocation naming it.
            let key = storage.orderingKey(method: raw, frameBody: [0xff, 0xff] + body, offset: 2)
            if key != nil && ![StorageMethod.bucketWrite, .bucketClose, .bucketAbort, .allocateNamedBuckets].contains(StorageMethod(rawValue: raw)) {
                unexpected.append("\(method): an ordering key for a request that is not a bucket writer's")
            }
            if let key, !damaged, raw == method.rawValue {
                var r = WireReader(body)
                let expected: UInt64? = method == .allocateNamedBuckets
                    ? (try? r.u32()).map { NamedBucket.handle(group: $0, share: 0) }
                    : (try? r.u64()).map(NamedBucket.orderingKey(handle:))
                if key != expected { unexpected.append("\(method): ordering key \(key), expected \(String(describing: expected))") }
            }
            do {
                let reply = try storage.handle(method: raw, body: body, session: session)
                replies += 1
                if !damaged && raw == method.rawValue { check(method, reply) }
            } catch let e as WireError {
                errorCodes[e.code, default: 0] += 1
                if e.code == .internal && internalErrors.count < 20 { internalErrors.append("\(method): \(e.message)") }
            } catch {
                // Only WireErrors may leave a service.
                errorCodes[.internal, default: 0] += 1
                unexpected.append("\(method): \(type(of: error)): \(error)")
            }
        } else {
            var body: [UInt8]
            let method: IntroducerMethod = chance(0.7) ? .announce : .subscribe
            if method == .announce {
                let a = Announcement(publicKey: introducerKey.publicKey, nickname: String(decoding: bytes(30).map { $0 & 0x7f }, as: UTF8.self),
                                     addresses: (0..<small(3)).map { _ in "127.0.0.1:\(small(65535))" },
                                     availableSpace: u64(), sequence: chance(0.5) ? u64() : { sequence += 1; return sequence }())
                body = ((try? a.signed(with: introducerKey)) ?? SignedAnnouncement(payload: [], signature: [])).encoded()
            } else {
                body = SubscribeRequest().encoded()
            }
            if chance(0.3) { damage(&body) }
            perMethod["introducer \(method)", default: 0] += 1
            do {
                _ = try introducer.handle(method: method.rawValue, body: body, session: session)
                replies += 1
            } catch let e as WireError {
                errorCodes[e.code, default: 0] += 1
            } catch {
                unexpected.append("introducer \(method): \(type(of: error)): \(error)")
            }
        }
        // Now and then a connection goes away (its open writers are aborted).
        if chance(0.002) {
            let s = pick(sessions)
            storage.sessionEnded(s)
            introducer.sessionEnded(s)
        }
    }

    /// The first internal errors seen (each is a bug: the server failed where it should have refused).
    var internalErrors: [String] = []

    /// Requests that took long (each a way to tie up a server).
    var slow: [String] = []

    /// Errors other than WireError that escaped a service (a bug even when nothing trapped).
    var unexpected: [String] = []

    /// A reply to a well-formed request must decode as that method's reply.
    func check(_ m: StorageMethod, _ reply: [UInt8]) {
        do {
            switch m {
            case .getVersion: _ = try StorageVersion(decoding: reply)
            case .allocateBuckets, .allocateNamedBuckets:
                let r = try AllocateResponse(decoding: reply)
                handles += r.writers.values
                if handles.count > 64 { handles.removeFirst(handles.count - 64) }
            case .getBuckets: _ = try GetBucketsResponse(decoding: reply)
            case .getBucketsPeek: _ = try GetBucketsPeekResponse(decoding: reply)
            case .censusBatch: _ = try CensusBatchResponse(decoding: reply)
            case .bucketRead: _ = try BucketReadResponse(decoding: reply)
            case .slotReadv: _ = try SlotReadResults(decoding: reply)
            case .slotTestvAndReadvAndWritev: _ = try SlotWriteResponse(decoding: reply)
            case .slotWriteEnablerOwners: _ = try SlotOwnersResponse(decoding: reply)
            default: _ = try EmptyMessage(decoding: reply)
            }
        } catch {
            unexpected.append("reply to \(m) does not decode: \(error)")
        }
    }

    /// Feeds damaged bytes straight to every message decoder and the frame parser.
    /// An upload helper message, well-formed before damage.
    func helperMessage() -> [UInt8] {
        let enc = HelperEncoding(needed: small(300), happy: small(300), total: small(300), maxSegmentSize: Int(truncatingIfNeeded: u64() & 0xffff_ffff))
        switch small(5) {
        case 0: return HelperStartRequest(storageIndex: si(), uploadSecret: secret(), size: u64(), encoding: enc).encoded()
        case 1: return HelperAppendRequest(storageIndex: si(), uploadSecret: secret(), offset: u64(), data: bytes()).encoded()
        case 2: return HelperFinishRequest(storageIndex: si(), uploadSecret: secret()).encoded()
        case 3: return HelperStartResponse(alreadyStored: chance(0.5), have: u64(), uriExtension: bytes()).encoded()
        case 4: return HelperAppendResponse(have: u64()).encoded()
        default:
            return HelperFinishResponse(uriExtension: bytes(), happiness: small(20), sharesAlreadyPresent: small(20),
                                        placement: (0..<small(4)).map { _ in (share: shareNumber(), server: "v0-" + String(small(999))) }).encoded()
        }
    }

    func decoderStep() {
        requests += 1
        var (_, body) = chance(0.8) ? storageRequest() : (.getVersion, helperMessage())
        damage(&body)
        let decoders: [([UInt8]) throws -> Void] = [
            { _ = try AllocateRequest(decoding: $0) }, { _ = try AllocateResponse(decoding: $0) },
            { _ = try BucketWriteRequest(decoding: $0) }, { _ = try BucketReadRequest(decoding: $0) },
            { _ = try GetBucketsResponse(decoding: $0) }, { _ = try SlotReadRequest(decoding: $0) },
            { _ = try SlotReadResults(decoding: $0) }, { _ = try SlotWriteRequest(decoding: $0) },
            { _ = try SlotWriteResponse(decoding: $0) }, { _ = try StorageVersion(decoding: $0) },
            { _ = try AdviseCorruptShareRequest(decoding: $0) }, { _ = try SignedAnnouncement(decoding: $0).verified() },
            { _ = try SubscribeResponse(decoding: $0) }, { _ = try RemovedNotice(decoding: $0) },
            { _ = try Hello(parsing: $0) },
            { _ = try CensusBatchRequest(decoding: $0) }, { _ = try CensusBatchResponse(decoding: $0) },
            { _ = try SlotStageRequest(decoding: $0) },
            { _ = try SlotOwnersRequest(decoding: $0) }, { _ = try SlotOwnersResponse(decoding: $0) },
            { _ = try HelperStartRequest(decoding: $0) }, { _ = try HelperStartResponse(decoding: $0) },
            { _ = try HelperAppendRequest(decoding: $0) }, { _ = try HelperAppendResponse(decoding: $0) },
            { _ = try HelperFinishRequest(decoding: $0) }, { _ = try HelperFinishResponse(decoding: $0) },
            { b in
                var p = FrameParser(maxFrameLength: 1 << 16)
                b.withUnsafeBytes { p.append($0) }
                while try p.next() != nil {}
            },
        ]
        for d in decoders { _ = try? d(body) }
        // A damaged mutable share, through both layouts' parsers and the format's checker.
        let sample = pick(mutableSamples)
        var share = sample.bytes
        damage(&share)
        _ = try? SDMFShare(parsing: share)
        _ = try? MDMFShare(parsing: share)
        _ = try? MDMFShare.parseHead(Array(share.prefix(MDMFShare.shareDataOffset)))
        _ = MutableShareHeader.summary(share)
        _ = MutableShareHeader.declaredLength(share)
        _ = try? CheckedMutableShare(sample.cap, share, number: 1)
        // A damaged slot journal (what a crash, or a bad disk, leaves in storage/journal/).
        var journal = Self.sampleJournal
        damage(&journal)
        if let j = SlotJournal(decoding: journal) { _ = j.encoded() }
        // A damaged directory: the unpacker, each entry's decoder, the packer and the JSON parser.
        var packed = directorySample.packed
        damage(&packed)
        for (mutable, key) in [(true, Optional(directorySample.writekey)), (true, nil), (false, nil)] {
            if let d = try? DirectoryContents.unpack(packed, mutable: mutable, writekey: key) {
                for e in (try? d.entries()) ?? [] { _ = e.metadata.pythonText; _ = e.capability.readString }
                _ = try? d.pack()
            }
        }
        _ = try? JSONValue.parse(Array(packed.prefix(400)))
        _ = AnyCapability.fromEntry(write: String(decoding: packed.prefix(120), as: UTF8.self), read: nil, deepImmutable: chance(0.5))
        if sample.cap.format == .sdmf { _ = try? SDMFDecoder(capability: sample.cap).check(share, number: 1) }
        else { _ = try? MDMFDecoder(capability: sample.cap).check(share, number: 1) }
    }
}
