import GridCrypto
import GridFormat
import GridImmutable
import GridMutable
import GridProtocol
import GridSystem
import GridWire

/// Mutable files on the grid: create, read and replace SDMF and MDMF files through the
/// servers' mutable slots. Every write is a test-and-write: a new file's shares are
/// written only where none exist; a new version only where the server still holds the
/// version this client read (its checkstring), so an uncoordinated writer is detected
/// instead of silently overwritten.
public final class MutableFileClient: Sendable {
    let pool: ServerPool
    let settings: ClientSettings
    let coding: CodingOptions

    public init(pool: ServerPool, settings: ClientSettings, coding: CodingOptions = CodingOptions()) {
        (self.pool, self.settings, self.coding) = (pool, settings, coding)
    }

    /// One share as a server holds it.
    struct Held {
        let server: ServerRef
        let client: StorageClient
        let number: Int
        let bytes: [UInt8]
    }

    /// What a write did.
    public struct WriteResult: Sendable {
        public var capability: MutableCapability
        public var sequenceNumber: UInt64
        /// Share number → node id of the server that now holds it.
        public var placement: [Int: String]
    }

    /// Creates a mutable file holding `data` (a new RSA-2048 key, sequence number 1).
    public func create(_ data: [UInt8], format: MutableFormat, privateKey: RSAPrivateKey? = nil) async throws -> WriteResult {
        let key = try privateKey ?? RSAPrivateKey(bits: 2048)
        return try await publish(data, key: key, format: format, sequenceNumber: 1, existing: [])
    }

    /// The newest version of the file, checked; with its sequence number.
    public func read(_ cap: MutableCapability) async throws -> (data: [UInt8], sequenceNumber: UInt64) {
        let held = try await fetch(cap.storageIndex, servers: try await servers(cap))
        return try decode(cap, held)
    }

    /// Replaces the file's contents with `data` as the next version. Needs a write capability.
    public func update(_ cap: MutableCapability, _ data: [UInt8]) async throws -> WriteResult {
        guard cap.writekey != nil else {
            throw GridError(.denied, "a read-only or verify capability cannot change the file; give the write capability")
        }
        let held = try await fetch(cap.storageIndex, servers: try await servers(cap))
        let current = try decode(cap, held)
        // The signing key travels in every share, encrypted with the writekey.
        guard let sample = held.first(where: { h in (try? shareFields(cap, h.bytes).sequenceNumber) == current.sequenceNumber }) else {
            throw GridError(.unavailable, "no share of the current version could be read again")
        }
        let key = try MutableKeys.decryptPrivateKey(try shareFields(cap, sample.bytes).encryptedPrivateKey, for: cap)
        return try await publish(data, key: key, format: cap.format, sequenceNumber: current.sequenceNumber + 1, existing: held)
    }

    // MARK: Internals

    func servers(_ cap: MutableCapability) async throws -> [ServerRef] {
        let known = await pool.waitForServers(enough: settings.encoding.total, minimum: settings.encoding.needed)
        if known.isEmpty { throw pool.noServersError() }
        return permutedServers(known, storageIndex: cap.storageIndex)
    }

    /// The fields a writer needs from a share of either format.
    func shareFields(_ cap: MutableCapability, _ bytes: [UInt8]) throws -> (sequenceNumber: UInt64, encryptedPrivateKey: [UInt8]) {
        switch cap.format {
        case .sdmf: let s = try SDMFShare(parsing: bytes); return (s.sequenceNumber, s.encryptedPrivateKey)
        case .mdmf: let s = try MDMFShare(parsing: bytes); return (s.sequenceNumber, s.encryptedPrivateKey)
        }
    }

    func decode(_ cap: MutableCapability, _ held: [Held]) throws -> (data: [UInt8], sequenceNumber: UInt64) {
        guard !held.isEmpty else { throw GridError(.notFound, "no server holds a share of this mutable file") }
        let shares = held.map { (number: $0.number, bytes: $0.bytes) }
        switch cap.format {
        case .sdmf: return try SDMFDecoder(capability: cap).decode(shares, simdPath: coding.simdPath)
        case .mdmf: return try MDMFDecoder(capability: cap).decode(shares, simdPath: coding.simdPath)
        }
    }

    /// Every share every server holds of `si`, whole (read in pieces of at most `maxChunk`).
    func fetch(_ si: [UInt8], servers: [ServerRef]) async throws -> [Held] {
        let timeout = 4 * coding.stallTimeout
        return await withTaskGroup(of: [Held].self) { group in
            for s in servers {
                group.addTask { [pool] in
                    guard let c = try? await pool.client(for: s),
                          let first = try? await c.call(SlotReadRequest(storageIndex: si, shareNumbers: [],
                                                                         readVector: [ReadVector(offset: 0, length: UInt64(maxChunk))]),
                                                        timeout: timeout).reads
                    else { return [] }
                    var out: [Held] = []
                    for (n, reads) in first {
                        guard var bytes = reads.first else { continue }
                        // A share longer than one read: its end is in its header.
                        let end = MutableShareHeader.declaredLength(bytes)
                        while bytes.count == maxChunk || (end.map { UInt64(bytes.count) < $0 } ?? false) {
                            let want = min(UInt64(maxChunk), (end ?? UInt64(bytes.count + maxChunk)) - UInt64(bytes.count))
                            guard want > 0, let more = try? await c.call(
                                SlotReadRequest(storageIndex: si, shareNumbers: [n],
                                                readVector: [ReadVector(offset: UInt64(bytes.count), length: want)]), timeout: timeout).reads[n]?.first,
                                  !more.isEmpty else { break }
                            bytes += more
                        }
                        out.append(Held(server: s, client: c, number: n, bytes: bytes))
                    }
                    return out
                }
            }
            var all: [Held] = []
            for await h in group { all += h }
            return all
        }
    }

    func publish(_ data: [UInt8], key: RSAPrivateKey, format: MutableFormat, sequenceNumber: UInt64, existing: [Held]) async throws -> WriteResult {
        let e = settings.encoding
        let (cap, shares): (MutableCapability, [[UInt8]])
        switch format {
        case .sdmf:
            let r = try SDMFEncoder.encode(data, privateKey: key, sequenceNumber: sequenceNumber, needed: e.needed, total: e.total, simdPath: coding.simdPath)
            (cap, shares) = (r.capability, r.shares.map { $0.serialized() })
        case .mdmf:
            let r = try MDMFEncoder.encode(data, privateKey: key, sequenceNumber: sequenceNumber, needed: e.needed, total: e.total, simdPath: coding.simdPath)
            (cap, shares) = (r.capability, r.shares.map { $0.serialized() })
        }
        let servers = try await self.servers(cap)
        let si = cap.storageIndex
        let secrets = LeaseSecrets(leaseSecret: settings.leaseSecret, storageIndex: si)
        // Where each share goes: where it already is, else the next server in permuted order.
        var target: [Int: ServerRef] = [:]
        for h in existing where target[h.number] == nil { target[h.number] = h.server }
        var next = 0
        for n in 0..<shares.count where target[n] == nil {
            target[n] = servers[next % servers.count]
            next += 1
        }
        let timeout = max(30, 4 * coding.stallTimeout)
        let results = await withTaskGroup(of: (ServerRef, Result<Bool, Error>).self) { group in
            for s in Set(target.values) {
                var writes: [Int: ShareWrite] = [:]
                for (n, t) in target where t == s {
                    // Replace only the version this client read; create only where nothing is.
                    let old = existing.first { $0.server == s && $0.number == n }
                    let test = old.map { TestVector(offset: 0, length: UInt64(MutableShareHeader.checkstring($0.bytes).count), op: .eq, specimen: MutableShareHeader.checkstring($0.bytes)) }
                        ?? TestVector(offset: 0, length: 1, op: .eq, specimen: [])
                    writes[n] = ShareWrite(tests: [test], writes: [WriteVector(offset: 0, data: shares[n])], newLength: UInt64(shares[n].count))
                }
                let req = SlotWriteRequest(storageIndex: si, writeEnabler: TahoeHash.sskWriteEnabler(writekey: cap.writekey!, serverID: containerNodeID(publicKey: s.permutationSeed)),
                                           renewSecret: secrets.renew(on: s), cancelSecret: secrets.cancel(on: s), writes: writes, readVector: [])
                group.addTask { [pool] in
                    do {
                        let c = try await pool.client(for: s)
                        return (s, .success(try await c.call(req, timeout: timeout).ok))
                    } catch { return (s, .failure(error)) }
                }
            }
            var out: [ServerRef: Result<Bool, Error>] = [:]
            for await (s, r) in group { out[s] = r }
            return out
        }
        var placement: [Int: String] = [:]
        var conflicts: [String] = []
        var refused: [String] = []
        var failed: [String] = []
        for (n, s) in target {
            switch results[s] {
            case .success(true)?: placement[n] = s.nodeID
            case .success(false)?: conflicts.append(s.nickname)
            case let .failure(err)?:
                if err.errorClass == .denied { refused.append("\(s.nickname): \(err)") } else { failed.append("\(s.nickname): \(err)") }
            case nil: break
            }
        }
        if placement.count < e.needed && !refused.isEmpty {
            // Shares moved from other servers keep the write enabler of the server that first
            // stored them; this server cannot accept ours for them.
            throw GridError(.denied, "the servers refused this client's write enabler (shares copied from other servers, e.g. "
                + "Tahoe's, keep their first server's): \(Set(refused).sorted().prefix(3).joined(separator: "; "))")
        }
        if !conflicts.isEmpty {
            throw GridError(.conflict, "another writer changed this mutable file at the same time (servers \(Set(conflicts).sorted().joined(separator: ", ")) hold a version this client did not read); read it again and retry")
        }
        guard placement.count >= e.needed else {
            throw GridError(.unavailable, "only \(placement.count) shares of the new version could be written; \(e.needed) are needed to read it"
                + (failed.isEmpty ? "" : " (\(Set(failed).sorted().prefix(3).joined(separator: "; ")))"))
        }
        return WriteResult(capability: cap, sequenceNumber: sequenceNumber, placement: placement)
    }
}
