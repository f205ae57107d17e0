import GridCrypto
import GridSystem

/// RSA-2048 keys generated ahead of time for new mutable files, in the client node's
/// `private/key-pool/` (one PKCS#8 DER file per key, mode 0600, like the node's other
/// secrets). Generating a key takes 0.1–0.5 s; taking one from the pool takes
/// microseconds, so `grid upload --mutable` does not wait for it. Each key is used once:
/// a process claims a key by renaming its file (atomic, so two processes never get the
/// same key), reads it and deletes it.
public struct KeyPool: Sendable {
    public let directory: String
    /// How many keys `fill` keeps ready.
    public static let defaultSize = 4

    public init(directory: String) { self.directory = directory }

    /// The keys ready now.
    public var count: Int {
        ((try? FileSystem.list(directory)) ?? []).filter { $0.hasSuffix(".key") }.count
    }

    /// A key from the pool, or nil when it is empty (the caller generates one then).
    public func take() -> RSAPrivateKey? {
        for name in ((try? FileSystem.list(directory)) ?? []).filter({ $0.hasSuffix(".key") }).sorted() {
            let path = directory + "/" + name
            let claimed = path + ".taken-\(CurrentProcess.id)"
            guard (try? FileSystem.rename(path, to: claimed)) != nil else { continue }  // another process took it
            defer { try? FileSystem.remove(claimed) }
            if let der = try? FileSystem.readFile(claimed, maxSize: 1 << 16), let key = try? RSAPrivateKey(der: der) { return key }
        }
        return nil
    }

    /// Generates keys until `size` are ready; returns how many it made.
    @discardableResult
    public func fill(to size: Int = KeyPool.defaultSize) throws -> Int {
        try FileSystem.makeDirectories(directory)
        var made = 0
        while count < size {
            let key = try RSAPrivateKey(bits: 2048)
            let name = "\(wallClockSeconds())-\(SecureRandom.bytes(8).map { String($0, radix: 16) }.joined()).key"
            // Written whole and renamed in: a reader never sees half a key.
            try FileSystem.writeFileAtomically(directory + "/" + name, key.der, permissions: 0o600)
            made += 1
        }
        return made
    }
}
