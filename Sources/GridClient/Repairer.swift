import GridFormat
import GridImmutable
import GridSystem
import GridWire

/// What a repair did.
public struct RepairResult: Sendable {
    /// The check before the repair (with verification) and after it.
    public var before: CheckResult
    public var after: CheckResult
    /// Share number → servers (node ids) that received a new copy.
    public var placed: [Int: [String]]
}

/// Repairs files: rebuilds the shares that are missing or corrupt (decoding from any k
/// good shares, then encoding again: the new shares are identical to the lost ones by
/// construction) and places them so that every share number is held again, on servers
/// that do not hold a bad copy. Never makes things worse: existing shares are kept, and a
/// failed placement leaves nothing half-written.
public final class Repairer: Sendable {
    /// Repairs check before and after; the repairer works with the same pool and settings.
    let checker: Checker
    var pool: ServerPool { checker.pool }
    var settings: ClientSettings { checker.settings }
    var coding: CodingOptions { checker.coding }

    public init(checker: Checker) { self.checker = checker }

    /// With `verify` (the default), every share is read and checked first, so corrupt
    /// shares are found and replaced too; without, a census decides what is missing (as
    /// Tahoe's `t=check&repair=true` does) and only the shares the download reads are
    /// checked. `verified`: a verifying check of this file just made (saves reading it again).
    public func repair(_ cap: Capability, verify: Bool = true, verified: CheckResult? = nil) async throws -> RepairResult {
        let before: CheckResult
        if let verified, verified.decoded != nil { before = verified } else { before = try await checker.check(cap, verify: verify) }
        guard before.verdict != .healthy else { return RepairResult(before: before, after: before, placed: [:]) }
        guard case let .chk(chk) = cap else {
            throw GridError(.usage, "repair needs the read capability (URI:CHK:...): new shares are encrypted with its key")
        }
        guard before.verdict != .unrecoverable else {
            throw GridError(.unavailable, "cannot repair: only \(before.shares.count) of the \(chk.needed) shares needed are good "
                + "(start the servers that hold the others, then try again)")
        }
        // The plaintext, rebuilt and verified, in an unlinked temporary file.
        let file = try FileSystem.anonymousFile()
        let sink = FileDescriptorSink(file)
        let box = UncheckedBox(sink)
        let got = try await Downloader(pool: pool, coding: coding).download(cap, to: box.value)
        guard let ueb = got.uriExtension else { throw GridError(.internal, "no URI extension block after a download") }
        let source = try FileSource(file: file, name: "repair")
        let parameters = EncodingParameters(needed: chk.needed, happy: min(settings.encoding.happy, chk.total),
                                            total: chk.total, maxSegmentSize: ueb.segmentSize)
        let encoder = try CHKEncoder(parameters: parameters, threads: coding.threads, simdPath: coding.simdPath)
        // Where each share is now; place the missing and corrupt ones elsewhere.
        let known = await pool.waitForServers(enough: chk.total, minimum: chk.needed)
        let si = chk.storageIndex
        let permuted = permutedServers(known, storageIndex: si)
        let census = await pool.census(storageIndex: si, servers: permuted, deadline: max(3, 2 * coding.stallTimeout))
        var allocator = BucketAllocator(storageIndex: si, shareSize: try encoder.shareSize(forSize: source.size),
                                        leaseSecret: settings.leaseSecret, census: census, servers: permuted,
                                        callTimeout: 4 * coding.stallTimeout)
        // Corrupt shares stay where they are, but no new copy goes beside them: those the
        // check found, and those the download found.
        let nodeOf = Dictionary(got.nicknames.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        allocator.setAside(before.corrupt.map { (share: $0.share, server: $0.server) }
            + got.badShares.filter { $0.failure.isCorrupt }.compactMap { b in nodeOf[b.server].map { (share: b.share, server: $0) } })
        // Missing share numbers first; then, if the shares sit on too few servers, copies of
        // shares onto servers that hold none (Tahoe's repairer never spreads clumped shares).
        await allocator.place(total: chk.total)
        var handles = allocator.handles
        let happy = min(settings.encoding.happy, chk.total)
        if allocator.happiness < happy { handles += await allocator.spread(happy: happy) }
        let uploader = Uploader(pool: pool, settings: settings, coding: coding, useHelper: false)
        var placed: [Int: [String]] = [:]
        if !handles.isEmpty {
            let pushed = try await uploader.pushShares(encoder: encoder, source: source, input: .plaintext(key: chk.key), handles: handles,
                                                       holdings: allocator.holdings, happy: 1) { _ in }
            guard pushed.uriExtension.hash == chk.uebHash, pushed.uriExtension.size == chk.size else {
                throw GridError(.internal, "re-encoding gave another capability; the new shares were not kept")
            }
            for h in handles where pushed.failedServers[h.server] == nil {
                placed[h.share, default: []].append(h.server.nodeID)
            }
        }
        let after = try await checker.check(cap)
        return RepairResult(before: before, after: after, placed: placed)
    }
}
