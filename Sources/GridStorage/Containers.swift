import GridCrypto
import GridFormat
import GridSystem

/// Errors from the storage backend; the service maps them to wire error codes by class.
/// (Failed system calls arrive as `SystemError`, classed by their errno.)
public enum StorageError: ClassifiedError, Equatable {
    /// A share or lease the request names is not held here.
    case notFound(String)
    /// A write that differs from what is already written, or a writer already gone.
    case conflict(String)
    case noSpace(String)
    /// A wrong lease secret or write enabler.
    case badSecret(String)
    /// Arguments no share could satisfy (offsets past an allocation, sizes over a limit).
    case badRequest(String)
    /// A container on disk that does not parse.
    case corrupt(String)

    public var errorClass: ErrorClass {
        switch self {
        case .notFound: return .notFound
        case .conflict: return .conflict
        case .noSpace: return .noSpace
        case .badSecret: return .denied
        case .badRequest: return .usage
        case .corrupt: return .corrupt
        }
    }

    public var description: String {
        switch self {
        case let .notFound(m), let .conflict(m), let .noSpace(m), let .badSecret(m), let .badRequest(m), let .corrupt(m): return m
        }
    }
}

func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
func be64(_ v: UInt64) -> [UInt8] { be32(UInt32(v >> 32)) + be32(UInt32(v & 0xffff_ffff)) }
func readBE(_ b: ArraySlice<UInt8>) -> UInt64 { b.reduce(0) { $0 << 8 | UInt64($1) } }

/// A lease: who may renew or cancel it (secrets kept BLAKE2b-hashed) and when it expires.
public struct Lease: Equatable, Sendable {
    public var ownerNumber: UInt32
    public var renewHash: [UInt8]
    public var cancelHash: [UInt8]
    public var expiration: UInt32
    /// Mutable containers record the node that took the lease (20 bytes).
    public var nodeID: [UInt8]

    public static func hashSecret(_ s: [UInt8]) -> [UInt8] { BLAKE2b.hash(s, digestSize: 32) }

    public init(renewSecret: [UInt8], cancelSecret: [UInt8], expiration: UInt32, nodeID: [UInt8] = [UInt8](repeating: 0, count: 20)) {
        ownerNumber = 0
        renewHash = Lease.hashSecret(renewSecret)
        cancelHash = Lease.hashSecret(cancelSecret)
        self.expiration = expiration
        self.nodeID = nodeID
    }

    init(owner: UInt32, renewHash: [UInt8], cancelHash: [UInt8], expiration: UInt32, nodeID: [UInt8]) {
        ownerNumber = owner
        self.renewHash = renewHash
        self.cancelHash = cancelHash
        self.expiration = expiration
        self.nodeID = nodeID
    }

    /// 72 bytes: be32 owner, renew hash, cancel hash, be32 expiration.
    var immutableRecord: [UInt8] { be32(ownerNumber) + renewHash + cancelHash + be32(expiration) }
    /// 92 bytes: be32 owner, be32 expiration, renew hash, cancel hash, 20-byte node id.
    var mutableRecord: [UInt8] { be32(ownerNumber) + be32(expiration) + renewHash + cancelHash + nodeID }

    static func immutable(_ b: ArraySlice<UInt8>) -> Lease {
        let s = b.startIndex
        return Lease(owner: UInt32(readBE(b[s..<(s + 4)])), renewHash: Array(b[(s + 4)..<(s + 36)]),
                     cancelHash: Array(b[(s + 36)..<(s + 68)]), expiration: UInt32(readBE(b[(s + 68)..<(s + 72)])),
                     nodeID: [UInt8](repeating: 0, count: 20))
    }

    static func mutable(_ b: ArraySlice<UInt8>) -> Lease? {
        if b.allSatisfy({ $0 == 0 }) { return nil }  // an empty slot
        let s = b.startIndex
        return Lease(owner: UInt32(readBE(b[s..<(s + 4)])), renewHash: Array(b[(s + 8)..<(s + 40)]),
                     cancelHash: Array(b[(s + 40)..<(s + 72)]), expiration: UInt32(readBE(b[(s + 4)..<(s + 8)])),
                     nodeID: Array(b[(s + 72)..<(s + 92)]))
    }
}


// MARK: Immutable container

/// Tahoe's immutable share file: a 12-byte header (be32 version 2, be32 allocated size,
/// be32 lease count), the share data, then 72-byte leases.
struct ImmutableContainer {
    static let headerSize: UInt64 = 12
    static let leaseSize: UInt64 = 72
    static let version: UInt32 = 2

    static func header(allocatedSize: UInt64, leaseCount: UInt32) -> [UInt8] {
        be32(version) + be32(UInt32(min(UInt64(UInt32.max), allocatedSize))) + be32(leaseCount)
    }

    /// (data length, leases) of an existing container.
    static func inspect(_ f: FileDescriptor) throws -> (UInt64, [Lease]) {
        let size = try f.size()
        let h = try f.read(at: 0, count: 12)
        guard h.count == 12 else { throw StorageError.corrupt("\(f.path): truncated container header") }
        let version = readBE(h[0..<4])
        guard version == 1 || version == 2 else { throw StorageError.corrupt("\(f.path): unknown container version \(version)") }
        let count = readBE(h[8..<12])
        guard count * leaseSize + headerSize <= size else { throw StorageError.corrupt("\(f.path): lease count \(count) exceeds the file") }
        let dataLength = size - headerSize - count * leaseSize
        let raw = try f.read(at: headerSize + dataLength, count: Int(count * leaseSize))
        var leases: [Lease] = []
        for i in 0..<Int(count) { leases.append(Lease.immutable(raw[(i * 72)..<(i * 72 + 72)])) }
        if version == 1 {
            // Version 1 stored plain secrets: hash them so comparisons work the same way.
            leases = leases.map { Lease(owner: $0.ownerNumber, renewHash: Lease.hashSecret($0.renewHash), cancelHash: Lease.hashSecret($0.cancelHash), expiration: $0.expiration, nodeID: $0.nodeID) }
        }
        return (dataLength, leases)
    }

    /// Sets the expiration of lease `index` in place (4 bytes; a version 2 container).
    static func setExpiration(_ f: FileDescriptor, dataLength: UInt64, index: Int, _ expiration: UInt32) throws {
        try f.write(at: headerSize + dataLength + UInt64(index) * leaseSize + 68, be32(expiration))
    }

    /// The container version in a header's first 4 bytes.
    static func version(_ head: [UInt8]) -> UInt64 { head.count >= 4 ? readBE(head[0..<4]) : 0 }

    /// Rewrites the leases after `dataLength` bytes of data (and the count in the header).
    static func writeLeases(_ f: FileDescriptor, dataLength: UInt64, _ leases: [Lease]) throws {
        try f.write(at: headerSize + dataLength, leases.flatMap { $0.immutableRecord })
        try f.truncate(to: headerSize + dataLength + UInt64(leases.count) * leaseSize)
        // Version 2: secrets are hashed (v1 files are upgraded in place).
        try f.write(at: 0, be32(version))
        try f.write(at: 8, be32(UInt32(leases.count)))
    }
}

// MARK: Mutable container

/// Tahoe's mutable share file (v2): magic, the write enabler and who recorded it, data
/// length, extra-lease offset, four lease slots (the 468-byte header), the data, then the
/// count of extra leases and the extra leases. Only the header and the leases are held in
/// memory; the data stays in the file and is read with `pread`, so a share may be gigabytes.
struct MutableContainer: Equatable {
    static let humanMagic = Array("Tahoe mutable container v2\n".utf8)
    static let magic: [UInt8] = humanMagic + TahoeHash.tagged("allmydata_mutable_container_header", humanMagic, truncateTo: 5)
    static let magicV1: [UInt8] = Array("Tahoe mutable container v1\n".utf8) + [0x75, 0x09, 0x44, 0x03, 0x8e]
    static let headerSize = 100
    static let leaseSize = 92
    static let dataOffset = 468
    /// More extra leases than this in one file is damage, not use.
    static let maxExtraLeases = 1 << 16

    var writeEnablerNodeID: [UInt8]
    var writeEnabler: [UInt8]
    var dataLength: UInt64
    var leases: [Lease]
    /// 1: Tahoe's older container (plain lease secrets); rewritten as 2 on the first change.
    var version = 2

    init(writeEnablerNodeID: [UInt8], writeEnabler: [UInt8]) {
        self.writeEnablerNodeID = writeEnablerNodeID
        self.writeEnabler = writeEnabler
        dataLength = 0
        leases = []
    }

    static func isMutable(_ head: [UInt8]) -> Bool {
        head.count >= 32 && (Array(head[0..<32]) == magic || Array(head[0..<32]) == magicV1)
    }

    /// Reads the header and the leases of the container in `f` (not the data).
    init(reading f: FileDescriptor, path: String) throws {
        let size = try f.size()
        try self.init(header: try f.read(at: 0, count: Self.dataOffset), fileSize: size, path: path) { offset, count in
            try f.read(at: offset, count: count)
        }
    }

    /// Parses a whole container held in memory (tests, tools).
    init(parsing b: [UInt8], path: String) throws {
        try self.init(header: Array(b.prefix(Self.dataOffset)), fileSize: UInt64(b.count), path: path) { offset, count in
            Array(b[Int(offset)..<min(b.count, Int(offset) + count)])
        }
    }

    private init(header b: [UInt8], fileSize: UInt64, path: String, read: (UInt64, Int) throws -> [UInt8]) throws {
        guard b.count == Self.dataOffset, Self.isMutable(b), fileSize >= UInt64(Self.dataOffset) + 4 else {
            throw StorageError.corrupt("\(path): not a mutable container")
        }
        version = Array(b[0..<32]) == Self.magic ? 2 : 1
        writeEnablerNodeID = Array(b[32..<52])
        writeEnabler = Array(b[52..<84])
        // Lengths from disk are untrusted: bound them by the file before any arithmetic.
        let rawDataLength = readBE(b[84..<92]), extraOffset = readBE(b[92..<100])
        guard rawDataLength <= fileSize, extraOffset <= fileSize,
              UInt64(Self.dataOffset) + rawDataLength <= extraOffset, extraOffset + 4 <= fileSize else {
            throw StorageError.corrupt("\(path): mutable container offsets are inconsistent with its \(fileSize) bytes")
        }
        dataLength = rawDataLength
        leases = []
        for i in 0..<4 {
            let at = Self.headerSize + i * Self.leaseSize
            if let l = Lease.mutable(b[at..<(at + Self.leaseSize)]) { leases.append(l) }
        }
        let extra = readBE(try read(extraOffset, 4)[...])
        guard extra <= UInt64(Self.maxExtraLeases), extraOffset + 4 + extra * UInt64(Self.leaseSize) <= fileSize else {
            throw StorageError.corrupt("\(path): extra leases run past the end")
        }
        if extra > 0 {
            let records = try read(extraOffset + 4, Int(extra) * Self.leaseSize)
            for i in 0..<Int(extra) {
                if let l = Lease.mutable(records[(i * Self.leaseSize)..<((i + 1) * Self.leaseSize)]) { leases.append(l) }
            }
        }
        if version == 1 {
            leases = leases.map { Lease(owner: $0.ownerNumber, renewHash: Lease.hashSecret($0.renewHash), cancelHash: Lease.hashSecret($0.cancelHash), expiration: $0.expiration, nodeID: $0.nodeID) }
        }
    }

    /// Where the extra leases start: right after the data.
    var extraOffset: UInt64 { UInt64(Self.dataOffset) + dataLength }
    /// The file's length.
    var fileSize: UInt64 { extraOffset + 4 + UInt64(max(0, leases.count - 4) * Self.leaseSize) }

    /// The 468-byte header (always written as version 2, lease secrets hashed).
    func header() -> [UInt8] {
        var out = Self.magic + writeEnablerNodeID + writeEnabler + be64(dataLength) + be64(extraOffset)
        for i in 0..<4 {
            out += i < leases.count ? leases[i].mutableRecord : [UInt8](repeating: 0, count: Self.leaseSize)
        }
        return out
    }

    /// What follows the data: the count of extra leases, then each.
    func trailer() -> [UInt8] {
        let extra = leases.count > 4 ? Array(leases[4...]) : []
        var out = be32(UInt32(extra.count))
        for l in extra { out += l.mutableRecord }
        return out
    }

    /// The whole container with `data` (which must be `dataLength` bytes).
    func serialized(data: [UInt8]) -> [UInt8] {
        precondition(UInt64(data.count) == dataLength)
        return header() + data + trailer()
    }
}

// MARK: Inspection (tools)

/// A share file as a server stores it (`storage/shares/<prefix>/<SI>/<n>`): which container,
/// where the share data lies in it, and its leases. For `grid debug dump-share` and tools;
/// the server itself uses the containers above.
public struct ShareFileInfo: Sendable {
    public enum Kind: Sendable, Equatable {
        case immutable(containerVersion: Int)
        case mutable(containerVersion: Int)
    }
    public let kind: Kind
    /// Where the share data starts in the file, and how long it is.
    public let dataOffset: UInt64
    public let dataLength: UInt64
    /// Leases, secrets hashed (version 1 containers' plain secrets are hashed on reading).
    public let leases: [Lease]
    /// Mutable containers: the 20-byte id of the server that recorded the write enabler.
    public let writeEnablerNodeID: [UInt8]?

    /// Reads the container of the share file at `path`; nil when the file is not in a
    /// container (bare share data, as `grid debug encode` writes it).
    public static func inspect(path: String) throws -> ShareFileInfo? {
        let f = try FileDescriptor(path: path)
        let size = try f.size()
        let head = try f.read(at: 0, count: 32)
        if MutableContainer.isMutable(head) {
            let c = try MutableContainer(reading: f, path: path)
            return ShareFileInfo(kind: .mutable(containerVersion: c.version), dataOffset: UInt64(MutableContainer.dataOffset),
                                 dataLength: c.dataLength, leases: c.leases, writeEnablerNodeID: c.writeEnablerNodeID)
        }
        guard head.count >= 12, (1...2).contains(readBE(head[0..<4])) else { return nil }
        let count = readBE(head[8..<12])
        guard count <= (size - ImmutableContainer.headerSize) / ImmutableContainer.leaseSize else { return nil }
        // Share data follows the 12-byte header; bare share data would not parse there.
        let inner = try f.read(at: ImmutableContainer.headerSize, count: 0x44)
        guard (try? ShareLayout(parsing: inner)) != nil else { return nil }
        let (dataLength, leases) = try ImmutableContainer.inspect(f)
        return ShareFileInfo(kind: .immutable(containerVersion: Int(readBE(head[0..<4]))),
                             dataOffset: ImmutableContainer.headerSize, dataLength: dataLength, leases: leases,
                             writeEnablerNodeID: nil)
    }
}
