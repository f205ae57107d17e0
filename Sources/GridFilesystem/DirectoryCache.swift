import GridClient
import GridCrypto
import GridFormat
import GridSystem

/// Mutable directories already read and checked, kept in `NODEDIR/private/dircache/` (one
/// file per storage index, mode 0600: the packed children hold the children's read
/// capabilities): `u64 sequence number || root hash (32) || SHA-256 of the data (32) || the
/// packed children`. A read asks the servers only for each share's first bytes; when the
/// newest version they hold, on at least k shares, is the one cached, the directory is not
/// fetched again. A cached file that fails its hash is ignored and replaced.
struct DirectoryCache: Sendable {
    let directory: String
    /// Every directory up to the limit is kept (a small one saves its read, a large one much more).
    static let minimumBytes = 0
    static let maximumBytes = 256 << 20

    init(nodeDirectory: String) { directory = nodeDirectory + "/private/dircache" }

    func path(_ si: [UInt8]) -> String { directory + "/" + Base32.encode(si) }

    func lookup(_ si: [UInt8], sequenceNumber: UInt64, rootHash: [UInt8]) -> [UInt8]? {
        guard let (seq, root, data) = entry(si), seq == sequenceNumber, root == rootHash else { return nil }
        return data
    }

    /// The cached contents of `si`, whatever version they are: a guess at the directory's
    /// children, for reading ahead, never an answer by itself.
    func lastKnown(_ si: [UInt8]) -> [UInt8]? { entry(si)?.data }

    /// The file of `si`: version, root hash and contents, if its hash checks.
    func entry(_ si: [UInt8]) -> (sequenceNumber: UInt64, rootHash: [UInt8], data: [UInt8])? {
        guard let bytes = try? FileSystem.readFile(path(si), maxSize: Self.maximumBytes + 72), bytes.count >= 72 else { return nil }
        var seq: UInt64 = 0
        for b in bytes[0..<8] { seq = seq << 8 | UInt64(b) }
        let data = Array(bytes[72...])
        guard SHA256.hash(data) == Array(bytes[40..<72]) else { return nil }
        return (seq, Array(bytes[8..<40]), data)
    }

    func store(_ si: [UInt8], sequenceNumber: UInt64, rootHash: [UInt8], data: [UInt8]) {
        guard data.count >= Self.minimumBytes, data.count <= Self.maximumBytes, rootHash.count == 32 else { return }
        var out = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { out[i] = UInt8(truncatingIfNeeded: sequenceNumber >> (56 - 8 * UInt64(i))) }
        out += rootHash + SHA256.hash(data) + data
        try? FileSystem.makeDirectory(directory, permissions: 0o700)
        try? FileSystem.writeFileAtomically(path(si), out, permissions: 0o600)
    }
}
