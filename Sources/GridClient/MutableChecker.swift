import GridCrypto
import GridFormat
import GridImmutable
import GridMutable
import GridProtocol
import GridSystem
import GridWire

/// Check, verify, lease renewal and repair of mutable files (SDMF and MDMF).
///
/// The census reads the first bytes of every share every server holds (one `slot_readv`
/// per server) and sorts the shares by version (sequence number, root hash). The file's
/// version is the newest one with k distinct shares; shares of other versions are stale
/// (left by a writer that crashed or lost a race, or by a server that was away). With
/// `verify`, every share is read whole and every signature and hash checked (a verify
/// capability is enough); corrupt shares are reported to their servers. Repair writes
/// the file's version again where a share is missing, stale or corrupt: the version is
/// decoded and encoded again with its own IV/salts and signature, so the new shares are
/// identical to the first ones; it needs the write capability, since a server accepts a
/// mutable share only with the file's write enabler (as in Tahoe).
extension Checker {
    /// One share seen by the census.
    struct MutableHolding {
        let server: ServerRef
        let number: Int
        let version: VersionID
        let needed: Int
        let total: Int
    }

    /// What every server holds of the mutable file at `si`: each share's header.
    func mutableCensus(_ si: [UInt8], servers: [ServerRef]) async -> (held: [MutableHolding], unanswered: [ServerRef]) {
        let (prefixes, unanswered) = await MutableFileClient(pool: pool, settings: settings, coding: coding)
            .readPrefixes(si, servers: servers, length: SDMFShare.signedPrefixLength, timeout: max(3, 2 * coding.stallTimeout))
        let held = prefixes.compactMap { p -> MutableHolding? in
            guard let h = MutableShareHeader.summary(p.bytes) else { return nil }
            return MutableHolding(server: p.server, number: p.number, version: VersionID(sequenceNumber: h.sequenceNumber, rootHash: h.rootHash),
                                  needed: h.needed, total: h.total)
        }
        return (held, unanswered)
    }

    /// Adds (or renews) this client's lease on the mutable file at `si` on every server in
    /// `holders` (with how many shares each holds) at once, each within the census's own
    /// bound: a frozen or cut-off server costs one timeout, not one per server in turn (a
    /// `grid maintain` in the 30-minute soak, seed 47, renewing one server after another
    /// with the 60 s default call timeout, ran past 180 s). Returns the shares renewed.
    func renewMutableLeases(_ si: [UInt8], holders: [ServerRef: Int]) async -> Int {
        let secrets = LeaseSecrets(leaseSecret: settings.leaseSecret, storageIndex: si)
        let (pool, timeout) = (pool, max(3, 2 * coding.stallTimeout))
        return await withTaskGroup(of: Int.self) { group in
            for (s, count) in holders {
                group.addTask {
                    guard let c = try? await pool.client(for: s) else { return 0 }
                    let ok = (try? await c.addLease(storageIndex: si, renewSecret: secrets.renew(on: s),
                                                    cancelSecret: secrets.cancel(on: s), timeout: timeout)) != nil
                    return ok ? count : 0
                }
            }
            var n = 0
            for await c in group { n += c }
            return n
        }
    }

    public func check(_ cap: MutableCapability, verify: Bool = false, addLease: Bool = false) async throws -> CheckResult {
        let e = settings.encoding
        let known = await pool.waitForServers(enough: e.total, minimum: e.needed, settle: 0.5)
        if known.isEmpty { throw pool.noServersError() }
        let si = cap.storageIndex
        let servers = permutedServers(known, storageIndex: si)
        var (held, unanswered) = await mutableCensus(si, servers: servers)
        var corrupt: [(share: Int, server: String, reason: String)] = []
        if verify {
            // Every share checked (SDMF read whole; MDMF checked where it lies, a batch of
            // blocks at a time, two shares at once); what fails is set aside, and corrupt
            // shares are reported.
            let holders = Array(Set(held.map(\.server)))
            let mc = MutableFileClient(pool: pool, settings: settings, coding: coding)
            let fetched = cap.format == .sdmf ? try await mc.fetch(si, servers: holders) : await mc.fetchHeads(si, servers: holders)
            let results = await withTaskGroup(of: (Held, Result<VersionID, ShareFailure>).self) { group in
                var out: [(Held, Result<VersionID, ShareFailure>)] = []
                for (i, h) in fetched.enumerated() {
                    if i >= 2, let r = await group.next() { out.append(r) }
                    group.addTask {
                        do {
                            let v = cap.format == .sdmf ? try CheckedMutableShare(cap, h.bytes, number: h.number).version
                                : try await mc.verifyMDMFShare(cap, h)
                            return (h, .success(v))
                        } catch { return (h, .failure(ShareFailure(error))) }
                    }
                }
                for await r in group { out.append(r) }
                return out
            }
            var checked: [MutableHolding] = []
            for (h, r) in results {
                switch r {
                case let .success(v):
                    let sum = MutableShareHeader.summary(h.bytes)
                    checked.append(MutableHolding(server: h.server, number: h.number, version: v, needed: sum?.needed ?? 0, total: sum?.total ?? 0))
                case let .failure(f) where f.isCorrupt:
                    corrupt.append((h.number, h.server.nodeID, "\(f)"))
                    try? await h.client.adviseCorruptShare(mutable: true, storageIndex: si, share: h.number, reason: "\(f)", timeout: 4 * coding.stallTimeout)
                case .failure:
                    break  // its server went away: the share counts as missing
                }
            }
            held = checked
        }
        // The file's version: the preferred one with k distinct shares (else the newest seen).
        let byVersion = Dictionary(grouping: held, by: \.version)
        let best = VersionID.inPreferredOrder(byVersion, number: \.number).first { v in
            let shares = byVersion[v]!
            return Set(shares.map(\.number)).count >= shares[0].needed
        } ?? byVersion.keys.max()
        let current = best.map { byVersion[$0]! } ?? []
        let (k, n) = (current.first?.needed ?? e.needed, current.first?.total ?? e.total)
        var holdings: [ServerRef: Set<Int>] = [:]
        for h in current { holdings[h.server, default: []].insert(h.number) }
        let stale = held.count - current.count
        let renewed = addLease ? await renewMutableLeases(si, holders: Dictionary(grouping: held, by: \.server).mapValues(\.count)) : 0
        var shares: [Int: [String]] = [:]
        var nicknames: [String: String] = [:]
        for (s, numbers) in holdings {
            nicknames[s.nodeID] = s.nickname
            for m in numbers { shares[m, default: []].append(s.nodeID) }
        }
        for m in shares.keys { shares[m]!.sort() }
        for s in unanswered { nicknames[s.nodeID] = s.nickname }
        var verdict = Verdict(holdings: holdings, needed: k, total: n, happy: settings.encoding.happy)
        if verdict == .healthy && stale > 0 { verdict = .degraded }
        var r = CheckResult(capability: cap.string, storageIndex: si, needed: k, total: n, happy: settings.encoding.happy,
                            shares: shares, servers: holdings.count, happiness: Placement.happiness(holdings),
                            unanswered: unanswered.map(\.nodeID).sorted(), nicknames: nicknames, corrupt: corrupt, decoded: nil,
                            leasesRenewed: renewed, verdict: verdict)
        r.sequenceNumber = best?.sequenceNumber
        r.staleShares = stale
        return r
    }
}

extension Repairer {
    /// Writes the mutable file's version again wherever a share of it is missing, stale or
    /// corrupt (see `Checker.check(_: MutableCapability…)`), then checks again.
    public func repair(_ cap: MutableCapability) async throws -> RepairResult {
        let before = try await checker.check(cap, verify: true)
        if before.verdict == .healthy { return RepairResult(before: before, after: before, placed: [:]) }
        guard cap.writekey != nil else {
            throw GridError(.denied, "repairing a mutable file needs its write capability: servers accept its shares only with the file's write enabler")
        }
        let mc = MutableFileClient(pool: pool, settings: settings, coding: coding)
        let known = await pool.waitForServers(enough: settings.encoding.total, minimum: settings.encoding.needed, settle: 0.5)
        let servers = permutedServers(known, storageIndex: cap.storageIndex)
        if cap.format == .mdmf { return try await repairMDMF(cap, before: before, mc: mc, servers: servers) }
        let held = try await mc.fetch(cap.storageIndex, servers: servers)
        let shares = held.map { (number: $0.number, bytes: $0.bytes) }
        let version: DecodedVersion
        switch cap.format {
        case .sdmf: version = try SDMFDecoder(capability: cap).decodeVersion(shares, simdPath: coding.simdPath)
        case .mdmf: version = try MDMFDecoder(capability: cap).decodeVersion(shares, simdPath: coding.simdPath)
        }
        let id = VersionID(sequenceNumber: version.sequenceNumber, rootHash: version.rootHash)
        var good: [Held] = []
        var key: RSAPrivateKey?
        for h in held {
            guard let c = try? CheckedMutableShare(cap, h.bytes, number: h.number), c.version == id else { continue }
            good.append(h)
            if key == nil { key = try? MutableKeys.decryptPrivateKey(c.encryptedPrivateKey, for: cap) }
        }
        guard let key else { throw GridError(.corrupt, "no good share of the file's version carries a usable signing key") }
        let rebuilt = try MutableShareRebuilder.shares(of: version, format: cap.format, privateKey: key, simdPath: coding.simdPath)

        let target = Self.repairTargets(held: held, good: good, total: version.total, servers: servers)
        let outcome = await mc.write(cap, rebuilt, target: target, existing: held)
        if !outcome.conflicts.isEmpty {
            throw GridError(.conflict, "the file changed while it was being repaired (servers \(Set(outcome.conflicts.map(\.nickname)).sorted().joined(separator: ", "))); run the repair again")
        }
        let after = try await checker.check(cap, verify: true)
        return RepairResult(before: before, after: after, placed: outcome.placement)
    }
}

extension Repairer {
    /// Where a repair writes: over every stale or corrupt copy (in place); then each share
    /// number with no good copy left goes to a server holding nothing of the file.
    static func repairTargets(held: [Held], good: [Held], total: Int, servers: [ServerRef]) -> [Int: [ServerRef]] {
        var target: [Int: [ServerRef]] = [:]
        for h in held where !good.contains(where: { $0.server == h.server && $0.number == h.number }) {
            target[h.number, default: []].append(h.server)
        }
        let covered = Set(good.map(\.number)).union(target.keys)
        var empty = servers.filter { s in !held.contains { $0.server == s } }
        var next = 0
        for m in 0..<total where !covered.contains(m) {
            let s = empty.isEmpty ? servers[next % servers.count] : empty.removeFirst()
            next += 1
            target[m] = [s]
        }
        return target
    }

    /// MDMF repair without holding the file or its shares in memory: the version is read
    /// (k shares, streamed) into a spool file, with each segment's salt; then only the
    /// shares to repair are encoded again from it (same salts, same signature: the same
    /// shares byte for byte, their root checked against the version's before anything is
    /// committed), staged on their servers and swapped in.
    func repairMDMF(_ cap: MutableCapability, before: CheckResult, mc: MutableFileClient, servers: [ServerRef]) async throws -> RepairResult {
        let heads = await mc.fetchHeads(cap.storageIndex, servers: servers)
        let goodPairs = Set(before.shares.flatMap { n, ids in ids.map { "\(n)@\($0)" } })
        let good = heads.filter { goodPairs.contains("\($0.number)@\($0.server.nodeID)") }
        guard let ref = good.first, let (head, _) = try? MutableKeys.checkedHead(cap, ref.bytes, number: ref.number) else {
            throw GridError(.corrupt, "no good share of the file's version is left to repair it from")
        }
        let key = try MutableKeys.decryptPrivateKey(head.encryptedPrivateKey, for: cap)
        let g = MDMFShare.geometry(needed: head.needed, segmentSize: head.segmentSize, dataLength: head.dataLength)
        let spool = try FileSystem.anonymousFile()
        var salts = [[UInt8]](repeating: [], count: g.segments)
        var written: UInt64 = 0
        let read = try await mc.readMDMF(cap, salt: { salts[$0] = $1 }) { bytes in
            try spool.write(at: written, bytes)
            written += UInt64(bytes.count)
        }
        guard read.sequenceNumber == head.sequenceNumber, written == head.dataLength, salts.allSatisfy({ $0.count == MDMFShare.saltSize }) else {
            throw GridError(.conflict, "the file changed while it was being repaired; run the repair again")
        }
        let source = try FileSource(file: spool, name: "repair spool")
        let target = Self.repairTargets(held: heads, good: good, total: head.total, servers: servers)
        let targets = target.flatMap { n, ss in ss.map { MutableFileClient.StagedTarget(server: $0, share: n, id: SecureRandom.bytes(StagedShare.idSize)) } }
        let streamed = try await mc.stream(source, key: key, sequenceNumber: head.sequenceNumber, salts: salts, signature: head.signature, to: targets)
        guard streamed.rootHash == head.rootHash else {
            throw GridError(.corrupt, "the version encoded again does not give its signed root hash; it cannot be repaired this way")
        }
        var writes: [ServerRef: [Int: ShareWrite]] = [:]
        for t in streamed.staged {
            writes[t.server, default: [:]][t.share] = ShareWrite(tests: [MutableFileClient.test(t.server, t.share, existing: heads)],
                                                                 staged: StagedShare(id: t.id, length: streamed.length))
        }
        let outcome = await mc.commit(cap, writes)
        if !outcome.conflicts.isEmpty {
            throw GridError(.conflict, "the file changed while it was being repaired (servers \(Set(outcome.conflicts.map(\.nickname)).sorted().joined(separator: ", "))); run the repair again")
        }
        let after = try await checker.check(cap, verify: true)
        return RepairResult(before: before, after: after, placed: outcome.placement)
    }
}

typealias Held = MutableFileClient.Held
