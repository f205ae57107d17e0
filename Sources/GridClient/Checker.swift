import Foundation
import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridProtocol
import GridSystem
import GridWire
import Synchronization

/// How a file stands on the grid.
public enum Verdict: String, Sendable {
    /// Every one of the n shares is held, on at least `happy` distinct servers.
    case healthy
    /// Recoverable (at least k distinct shares), but short of that.
    case degraded
    /// Fewer than k distinct good shares: the file cannot be read now.
    case unrecoverable

    /// The verdict for these holdings (server → share numbers) of a k-of-n file.
    public init<S: Hashable>(holdings: [S: Set<Int>], needed: Int, total: Int, happy: Int) {
        let distinct = Set(holdings.values.flatMap { $0 }).count
        if distinct < needed { self = .unrecoverable; return }
        self = distinct == total && Placement.happiness(holdings.filter { !$0.value.isEmpty }) >= min(happy, total) ? .healthy : .degraded
    }
}

/// What `grid check` found out about one file.
public struct CheckResult: Sendable {
    public var capability: String
    public var storageIndex: [UInt8]
    public var needed: Int
    public var total: Int
    public var happy: Int
    /// Share number → node ids of the servers holding it (after setting aside corrupt copies).
    public var shares: [Int: [String]]
    /// Distinct servers holding at least one good share.
    public var servers: Int
    /// Servers-of-happiness of the good shares.
    public var happiness: Int
    /// Servers that were asked and did not answer (their shares count as missing).
    public var unanswered: [String]
    /// Node id → nickname, for every server named above.
    public var nicknames: [String: String]
    /// Shares that failed verification: share, server id, class, reason (`--verify` only).
    public var corrupt: [(share: Int, server: String, reason: String)]
    /// Whether the ciphertext was rebuilt from k shares and matched its hash tree (`--verify`).
    public var decoded: Bool?
    /// Leases added or renewed (`--add-lease`).
    public var leasesRenewed: Int
    public var verdict: Verdict
    /// Mutable files: the sequence number of the file's version (the newest recoverable).
    public var sequenceNumber: UInt64? = nil
    /// Mutable files: shares of any other version (stale), which a repair overwrites.
    public var staleShares = 0
}

/// Checks files: which shares survive where (a census of every known server), and with
/// `verify`, whether every share passes every hash and the ciphertext rebuilds; corrupt
/// shares are reported to their servers. Needs only a verify capability.
public final class Checker: Sendable {
    let pool: ServerPool
    let settings: ClientSettings
    let coding: CodingOptions

    public init(pool: ServerPool, settings: ClientSettings, coding: CodingOptions = CodingOptions()) {
        (self.pool, self.settings, self.coding) = (pool, settings, coding)
    }

    public func check(_ cap: Capability, verify: Bool = false, addLease: Bool = false) async throws -> CheckResult {
        let v: CHKVerifierCapability
        switch cap {
        case .lit:
            // The data is in the capability: nothing on the grid to lose.
            return CheckResult(capability: cap.description, storageIndex: [], needed: 0, total: 0, happy: 0, shares: [:],
                               servers: 0, happiness: 0, unanswered: [], nicknames: [:], corrupt: [], decoded: nil,
                               leasesRenewed: 0, verdict: .healthy)
        case let .chk(c): v = c.verifier
        case let .chkVerifier(c): v = c
        }
        let known = await pool.waitForServers(enough: v.total, minimum: v.needed, settle: 0.5)
        if known.isEmpty { throw pool.noServersError() }
        let si = v.storageIndex
        let census = await pool.census(storageIndex: si, servers: permutedServers(known, storageIndex: si),
                                       deadline: max(3, 2 * coding.stallTimeout))
        var holdings: [ServerRef: Set<Int>] = census.holdings
        var corrupt: [(share: Int, server: String, reason: String)] = []
        var decoded: Bool?
        if verify {
            (corrupt, decoded) = try await verifyShares(v, census)
            for c in corrupt {
                if let s = holdings.keys.first(where: { $0.nodeID == c.server }) { holdings[s]?.remove(c.share) }
            }
        }
        var renewed = 0
        if addLease { renewed = await pool.renewLeases(si, census, leaseSecret: settings.leaseSecret, timeout: 4 * coding.stallTimeout) }
        var shares: [Int: [String]] = [:]
        var nicknames: [String: String] = [:]
        for (s, held) in holdings where !held.isEmpty {
            nicknames[s.nodeID] = s.nickname
            for n in held { shares[n, default: []].append(s.nodeID) }
        }
        for n in shares.keys { shares[n]!.sort() }
        let happiness = Placement.happiness(holdings.filter { !$0.value.isEmpty })
        let happy = settings.encoding.happy
        let verdict: Verdict = decoded == false ? .unrecoverable : Verdict(holdings: holdings, needed: v.needed, total: v.total, happy: happy)
        return CheckResult(capability: cap.description, storageIndex: si, needed: v.needed, total: v.total, happy: happy,
                           shares: shares, servers: holdings.values.filter { !$0.isEmpty }.count, happiness: happiness,
                           unanswered: (census.unanswered + census.failed.keys).map(\.nodeID).sorted(), nicknames: nicknames,
                           corrupt: corrupt, decoded: decoded, leasesRenewed: renewed, verdict: verdict)
    }

    /// Reads every share found and checks every hash in it (header, URI extension block
    /// against the capability, share hash chain, block tree, crypttext tree, every block)
    /// and, in the same pass, rebuilds the ciphertext from k good blocks of each segment
    /// and checks it against the crypttext hash tree (`CHKFileVerifier`). Corrupt shares
    /// are reported to the servers holding them.
    func verifyShares(_ v: CHKVerifierCapability, _ census: ShareCensus) async throws -> ([(share: Int, server: String, reason: String)], Bool?) {
        let stall = coding.stallTimeout
        let readers = census.readers(storageIndex: v.storageIndex) { _ in stall }
        let box = UncheckedBox(readers)
        let (simd, threads) = (coding.simdPath, coding.threads)
        let (bad, decodedOK): ([(RemoteShareReader, ShareFailure)], Bool?) = try await onThread("grid-verify") {
            let v = CHKFileVerifier(verifier: v, simdPath: simd, threads: threads).verify(box.value)
            return (v.bad.compactMap { b in (b.reader as? RemoteShareReader).map { ($0, b.failure) } }, v.ciphertextMatches)
        }
        for r in readers { r.cancel() }
        let corrupt = bad.filter { $0.1.isCorrupt }
        await withTaskGroup(of: Void.self) { group in
            for (r, why) in corrupt {
                group.addTask {
                    try? await r.client.adviseCorruptShare(mutable: false, storageIndex: v.storageIndex, share: r.shareNumber, reason: "\(why)", timeout: 4 * self.coding.stallTimeout)
                }
            }
        }
        return (corrupt.map { (share: $0.0.shareNumber, server: $0.0.server.nodeID, reason: "\($0.1)") }, decodedOK)
    }
}
