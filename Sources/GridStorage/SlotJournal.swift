import GridCrypto
import GridSystem

/// A redo journal for one change to one mutable share file, so that a change made in
/// place (without copying the share) is all or nothing across a crash or kill -9:
///
///  1. the journal (every extent the change writes, the file's new length, a SHA-256 over
///     it all) is written to `storage/journal/<SI>-<n>` and synced, with its directory;
///  2. the extents are written into the share file in place, the file cut to its new
///     length and synced;
///  3. the journal is removed (and its directory synced).
///
/// At start the server replays every complete journal (its hash checks) and deletes the
/// incomplete ones: a crash before step 1 ended leaves the share as it was, a crash after
/// it leaves the share as the change made it. Replaying twice gives the same bytes.
/// The byte layout is in docs/formats.md ("Slot journal").
struct SlotJournal: Equatable {
    static let magic = Array("grid slot journal v1\n".utf8)
    /// Zero runs are written in pieces of this size.
    static let zeroPiece = 1 << 20

    enum Extent: Equatable {
        case bytes(offset: UInt64, data: [UInt8])
        case zeros(offset: UInt64, length: UInt64)
    }

    /// The share file, relative to the storage directory (`shares/<p>/<SI>/<n>`).
    var target: String
    var extents: [Extent]
    /// The share file's length after the change.
    var newSize: UInt64

    func encoded() -> [UInt8] {
        var out = Self.magic
        let t = Array(target.utf8)
        out += [UInt8(t.count >> 8), UInt8(t.count & 0xff)] + t + be64(newSize) + be32(UInt32(extents.count))
        for e in extents {
            switch e {
            case let .bytes(offset, data): out += be64(offset) + be64(UInt64(data.count)) + [0] + data
            case let .zeros(offset, length): out += be64(offset) + be64(length) + [1]
            }
        }
        return out + SHA256.hash(out)
    }

    /// A journal read back from disk: nil when it is incomplete or damaged (its hash does
    /// not match), which means the change never began.
    init?(decoding b: [UInt8]) {
        guard b.count >= Self.magic.count + 2 + 8 + 4 + 32, Array(b.prefix(Self.magic.count)) == Self.magic,
              SHA256.hash(Array(b.dropLast(32))) == Array(b.suffix(32)) else { return nil }
        let body = b.dropLast(32)
        var at = body.startIndex + Self.magic.count
        func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard n >= 0, body.endIndex - at >= n else { return nil }
            defer { at += n }
            return body[at..<(at + n)]
        }
        guard let tl = take(2), let tb = take(Int(readBE(tl))), let size = take(8), let count = take(4) else { return nil }
        target = String(decoding: tb, as: UTF8.self)
        // Only a share file under shares/ may be named (the journal is on our disk, but
        // a damaged one must not send writes elsewhere).
        guard target.hasPrefix("shares/"), !target.split(separator: "/").contains(".."), !target.contains("\0") else { return nil }
        newSize = readBE(size)
        extents = []
        for _ in 0..<readBE(count) {
            guard let o = take(8), let l = take(8), let kind = take(1) else { return nil }
            let (offset, length) = (readBE(o), readBE(l))
            guard offset.addingReportingOverflow(length).overflow == false else { return nil }
            switch kind.first! {
            case 0:
                guard length <= UInt64(body.endIndex - at), let d = take(Int(length)) else { return nil }
                extents.append(.bytes(offset: offset, data: Array(d)))
            case 1: extents.append(.zeros(offset: offset, length: length))
            default: return nil
            }
        }
        guard at == body.endIndex else { return nil }
    }

    init(target: String, extents: [Extent], newSize: UInt64) {
        (self.target, self.extents, self.newSize) = (target, extents, newSize)
    }

    /// Writes the extents into `f`, in order, cuts it to `newSize` and syncs it.
    /// `crashAfterFirstExtent` is a test hook (a failpoint): the process kills itself
    /// there, to prove a half-applied change is repaired by the replay.
    func apply(to f: FileDescriptor, crashAfterFirstExtent: Bool = false) throws {
        for (i, e) in extents.enumerated() {
            switch e {
            case let .bytes(offset, data): try f.write(at: offset, data)
            case let .zeros(offset, length):
                var done: UInt64 = 0
                let zeros = [UInt8](repeating: 0, count: Int(min(length, UInt64(Self.zeroPiece))))
                while done < length {
                    let n = Int(min(UInt64(zeros.count), length - done))
                    try f.write(at: offset + done, Array(zeros.prefix(n)))
                    done += UInt64(n)
                }
            }
            if i == 0 && crashAfterFirstExtent { CurrentProcess.killSelf() }
        }
        try f.truncate(to: newSize)
        try f.sync()
    }
}
