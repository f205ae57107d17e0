import Foundation
import GridCrypto
import GridProtocol
import GridWire
import Synchronization
import GridSystem

/// The introducer: keeps the latest signed announcement of each storage server (in memory
/// only), hands the whole set to each new subscriber, pushes every change, and drops
/// servers that stop announcing. A restarted introducer rebuilds the set from the
/// servers' re-announcements.
public final class IntroducerService: RPCService, @unchecked Sendable {
    public let serviceName = introducerServiceName
    let secret: [UInt8]
    /// An announcement not refreshed for this long is dropped.
    public let expiry: Double
    struct Entry {
        var signed: SignedAnnouncement
        var announcement: Announcement
        var lastSeen: Double
    }
    let state = Mutex<(entries: [String: Entry], subscribers: [UInt64: RPCSession])>(([:], [:]))
    var timer: DispatchSourceTimer?
    let log: (String) -> Void

    public init(secret: [UInt8], expiry: Double = 300, log: @escaping (String) -> Void = { _ in }) {
        self.secret = secret
        self.expiry = expiry
        self.log = log
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        t.schedule(deadline: .now() + min(30, expiry / 3), repeating: min(30, expiry / 3))
        t.setEventHandler { [weak self] in self?.expire() }
        t.resume()
        timer = t
    }

    deinit { timer?.cancel() }

    public func authorize(secret: [UInt8]) -> Bool {
        // Constant time: the secret is the only thing guarding announce and subscribe.
        constantTimeEqual(secret, self.secret)
    }

    /// Current announcements (verified), by node id.
    public var announcements: [String: Announcement] {
        state.withLock { s in s.entries.mapValues(\.announcement) }
    }

    public func methodName(_ method: UInt16) -> String { IntroducerMethod(rawValue: method).map { "\($0)" } ?? "unknown" }

    /// Announcements held and subscribers connected now (metrics).
    public var counts: (announcements: Int, subscribers: Int) { state.withLock { ($0.entries.count, $0.subscribers.count) } }

    public func handle(method: UInt16, body: [UInt8], session: RPCSession) throws -> [UInt8] {
        guard let m = IntroducerMethod(rawValue: method) else {
            throw WireError(.unknownMethod, "the introducer has no method \(method)")
        }
        switch m {
        case .announce:
            let signed = try SignedAnnouncement(decoding: body)
            let a = try signed.verified()  // a bad signature is refused (badSecret) and dropped
            let (changed, subs) = state.withLock { s -> (Bool, [RPCSession]) in
                if let old = s.entries[a.nodeID], old.announcement.sequence >= a.sequence {
                    s.entries[a.nodeID]?.lastSeen = monotonicNow()
                    return (false, [])
                }
                s.entries[a.nodeID] = Entry(signed: signed, announcement: a, lastSeen: monotonicNow())
                return (true, Array(s.subscribers.values))
            }
            if changed {
                log("announcement from \(a.nodeID) (\(a.nickname)) at \(a.addresses.joined(separator: ", "))")
                for s in subs { s.notify(method: IntroducerNotify.announcement.rawValue, body: signed.encoded()) }
            }
            return EmptyMessage().encoded()
        case .subscribe:
            _ = try SubscribeRequest(decoding: body)
            let all = state.withLock { s -> [SignedAnnouncement] in
                s.subscribers[session.id] = session
                return s.entries.values.map(\.signed)
            }
            return SubscribeResponse(announcements: all).encoded()
        }
    }

    public func sessionEnded(_ session: RPCSession) {
        state.withLock { _ = $0.subscribers.removeValue(forKey: session.id) }
    }

    /// Drops announcements older than `expiry` and tells subscribers.
    public func expire(now: Double = monotonicNow()) {
        let (gone, subs) = state.withLock { s -> ([Announcement], [RPCSession]) in
            let old = s.entries.filter { now - $0.value.lastSeen > expiry }
            for k in old.keys { s.entries[k] = nil }
            return (old.values.map(\.announcement), Array(s.subscribers.values))
        }
        for a in gone {
            log("announcement from \(a.nodeID) expired")
            for s in subs { s.notify(method: IntroducerNotify.removed.rawValue, body: RemovedNotice(publicKey: a.publicKey).encoded()) }
        }
    }
}

/// Keeps a storage server announced: connects to the introducer (reconnecting with
/// backoff), announces on every connection and then every `interval` seconds.
public final class Announcer: @unchecked Sendable {
    let client: PersistentClient
    let timer: DispatchSourceTimer
    let make: @Sendable () throws -> SignedAnnouncement

    public init(introducer: IntroducerAddress, loop: EventLoop, tls: TLSContext, interval: Double = 60,
                log: @escaping @Sendable (String) -> Void = { _ in },
                announcement: @escaping @Sendable () throws -> SignedAnnouncement) {
        make = announcement
        client = PersistentClient(
            loop: loop, host: introducer.host, port: introducer.port, serverKey: introducer.publicKey,
            service: introducerServiceName, secret: introducer.secret, tls: tls,
            onConnect: { c in
                // A failed announcement (a timeout while the introducer is busy) is tried
                // again soon, not at the next interval: until it lands, no client sees us.
                var delay = 0.5
                while !c.isClosed {
                    do {
                        _ = try await c.call(try announcement())
                        log("announced to the introducer at \(introducer.host):\(introducer.port)")
                        return
                    } catch {
                        log("announcing failed: \(error); trying again in \(delay) s")
                    }
                    try? await Task.sleep(nanoseconds: UInt64(delay * 1e9))
                    delay = min(delay * 2, max(1, interval))
                }
            },
            onDisconnect: { e in log("introducer connection: \(e)") })
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        timer.schedule(deadline: .now() + interval, repeating: interval)
        let c = client
        timer.setEventHandler {
            guard let rpc = c.client, let signed = try? announcement() else { return }
            Task { _ = try? await rpc.call(signed) }
        }
        timer.resume()
    }

    public func stop() {
        timer.cancel()
        client.stop()
    }
}

/// A client's live view of the storage servers the introducer knows, with every
/// announcement's signature checked here too (the introducer is not trusted with keys).
public final class IntroducerSubscriber: @unchecked Sendable {
    /// `servers` is the live view. While a subscribe call is in flight, pushed changes are
    /// also logged in `pending`: the introducer may push an announcement before its reply
    /// to subscribe (which lacks it) reaches us, so the reply is merged with them rather
    /// than replacing them.
    struct State {
        var servers: [String: Announcement] = [:]
        /// The signed form of each server's announcement (what a client may keep on disk).
        var signed: [String: SignedAnnouncement] = [:]
        /// Whether the introducer's list has arrived at least once (a seeded list is provisional).
        var synced = false
        var syncing = false
        var pending: [(nodeID: String, announcement: Announcement?)] = []
    }
    let state = Mutex<State>(State())
    let signaturesChecked = Atomic<Int>(0)
    /// Announcement signatures checked so far.
    public var signatureChecks: Int { signaturesChecked.load(ordering: .relaxed) }
    var client: PersistentClient!
    let changed: @Sendable ([String: Announcement]) -> Void
    let connected = Atomic<Bool>(false)

    public init(introducer: IntroducerAddress, loop: EventLoop, tls: TLSContext, config: RPCClientConfig = RPCClientConfig(),
                onChange: @escaping @Sendable ([String: Announcement]) -> Void = { _ in }) {
        changed = onChange
        client = PersistentClient(
            loop: loop, host: introducer.host, port: introducer.port, serverKey: introducer.publicKey,
            service: introducerServiceName, secret: introducer.secret, tls: tls, config: config,
            onNotify: { [weak self] method, body in self?.notified(method, body) },
            onConnect: { [weak self] c in
                guard let self else { return }
                self.state.withLock { $0.syncing = true; $0.pending = [] }
                do {
                    let list = try await c.call(SubscribeRequest()).announcements
                    let now = self.state.withLock { s -> [String: Announcement] in
                        var fresh: [String: Announcement] = [:]
                        var freshSigned: [String: SignedAnnouncement] = [:]
                        // An announcement whose bytes are the ones already checked (seeded
                        // from the cache, or kept from before a reconnection) is not
                        // checked again: an Ed25519 verification is ~0.1 ms per server.
                        let known = Dictionary(s.signed.map { ($0.value.signature, $0.key) }, uniquingKeysWith: { a, _ in a })
                        for signed in list {
                            if let id = known[signed.signature], s.signed[id] == signed, let a = s.servers[id] {
                                fresh[id] = a
                                freshSigned[id] = signed
                            } else if let a = try? self.check(signed) {
                                fresh[a.nodeID] = a
                                freshSigned[a.nodeID] = signed
                            }
                        }
                        for (id, a) in s.pending {
                            if let a {
                                if let old = fresh[id], old.sequence >= a.sequence { continue }
                                fresh[id] = a
                            } else {
                                fresh[id] = nil
                            }
                        }
                        s.servers = fresh
                        s.signed = s.signed.filter { fresh[$0.key] != nil }.merging(freshSigned) { _, new in new }
                        s.synced = true
                        s.syncing = false
                        s.pending = []
                        return fresh
                    }
                    self.connected.store(true, ordering: .relaxed)
                    self.changed(now)
                } catch {
                    self.state.withLock { $0.syncing = false; $0.pending = [] }
                }
            },
            onDisconnect: { [weak self] why in
                self?.connected.store(false, ordering: .relaxed)
                self?.lastError.withLock { $0 = why }
            })
    }

    func notified(_ method: UInt16, _ body: [UInt8]) {
        let now: [String: Announcement]
        switch IntroducerNotify(rawValue: method) {
        case .announcement:
            guard let signed = try? SignedAnnouncement(decoding: body), let a = try? check(signed) else { return }
            now = state.withLock { s -> [String: Announcement] in
                if s.syncing { s.pending.append((a.nodeID, a)) }
                if let old = s.servers[a.nodeID], old.sequence >= a.sequence { return s.servers }
                s.servers[a.nodeID] = a
                s.signed[a.nodeID] = signed
                return s.servers
            }
        case .removed:
            guard let k = try? RemovedNotice(decoding: body).publicKey else { return }
            let id = NodeIdentity.nodeID(for: k)
            now = state.withLock { s -> [String: Announcement] in
                if s.syncing { s.pending.append((id, nil)) }
                s.servers[id] = nil
                s.signed[id] = nil
                return s.servers
            }
        case nil:
            return
        }
        changed(now)
    }

    func check(_ signed: SignedAnnouncement) throws -> Announcement {
        signaturesChecked.add(1, ordering: .relaxed)
        return try signed.verified()
    }

    /// The servers currently announced.
    public var current: [String: Announcement] { state.withLock { $0.servers } }

    /// The current announcements as signed, once the introducer's own list has arrived
    /// (nil before: a list seeded from a cache is not written back as if confirmed).
    public var confirmedSigned: [SignedAnnouncement]? {
        state.withLock { s in s.synced ? s.servers.keys.sorted().compactMap { s.signed[$0] } : nil }
    }

    /// Seeds the view with announcements kept from an earlier run, until the introducer's
    /// list arrives and replaces them. Each signature is checked again unless `checkedBefore`
    /// (the caller has proof that this node checked these very bytes: an authentication
    /// code under a secret of its own, `ServerPool`'s cache).
    public func seed(_ list: [SignedAnnouncement], checkedBefore: Bool = false) {
        let now = state.withLock { s -> [String: Announcement]? in
            guard !s.synced else { return nil }
            for signed in list {
                guard let a = try? (checkedBefore ? signed.checkedBefore() : check(signed)) else { continue }
                if let old = s.servers[a.nodeID], old.sequence >= a.sequence { continue }
                s.servers[a.nodeID] = a
                s.signed[a.nodeID] = signed
            }
            return s.servers
        }
        if let now { changed(now) }
    }
    public var isConnected: Bool { connected.load(ordering: .relaxed) }

    /// Why the last connection to the introducer failed or ended, if it did.
    public var connectionError: WireError? { lastError.withLock { $0 } }
    let lastError = Mutex<WireError?>(nil)

    /// Waits until at least `count` servers are known, or `timeout` passes; returns them.
    public func waitForServers(_ count: Int, timeout: Double) async -> [String: Announcement] {
        let deadline = monotonicNow() + timeout
        while monotonicNow() < deadline {
            let c = current
            if c.count >= count { return c }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return current
    }

    public func stop() { client.stop() }
}
