import Foundation
import GridCodec
import GridCrypto
import GridImmutable
import GridIntroducer
import GridProtocol
import GridSystem
import GridWire
import Synchronization

/// What a client needs to use a grid: where the introducer is, how to encode, and its secrets.
public struct ClientSettings: Sendable {
    public var introducer: IntroducerAddress
    /// Further introducers (Tahoe allows several): all are asked, their lists merged.
    public var moreIntroducers: [IntroducerAddress] = []
    public var introducers: [IntroducerAddress] { [introducer] + moreIntroducers }
    public var encoding: ClientEncoding
    /// Mixed into every convergent key: files match only with this same secret.
    public var convergenceSecret: [UInt8]
    /// The root of this client's lease secrets (renew and cancel).
    public var leaseSecret: [UInt8]
    /// An upload helper (`[client] helper`): immutable uploads send it ciphertext once and
    /// it places the shares; unreachable, they go directly to the servers.
    public var helper: IntroducerAddress?
    /// `[client] one_flight_max`: files whose shares come to at most this many bytes (the
    /// default: a 1.2 MiB file at 3-of-10) are allocated, written and closed in one flight
    /// beside the census, to servers of protocol 3: a round trip fewer for a new file. A
    /// file that turns out to be stored already has then sent those bytes for nothing (the
    /// servers refuse them; nothing is stored twice). 0: never.
    public var oneFlightMaxBytes: UInt64 = 4 << 20

    public init(introducer: IntroducerAddress, encoding: ClientEncoding = ClientEncoding(),
                convergenceSecret: [UInt8], leaseSecret: [UInt8]) {
        self.introducer = introducer
        self.encoding = encoding
        self.convergenceSecret = convergenceSecret
        self.leaseSecret = leaseSecret
    }
}

/// k-of-n, happiness and segment size, as a client node's grid.conf holds them.
public struct ClientEncoding: Sendable, Equatable {
    public var needed = 3
    public var happy = 7
    public var total = 10
    public var maxSegmentSize = 1 << 20
    public init(needed: Int = 3, happy: Int = 7, total: Int = 10, maxSegmentSize: Int = 1 << 20) {
        self.needed = needed
        self.happy = happy
        self.total = total
        self.maxSegmentSize = maxSegmentSize
    }
}

extension ClientEncoding {
    /// The encoder's parameters for this encoding.
    public var parameters: EncodingParameters {
        EncodingParameters(needed: needed, happy: happy, total: total, maxSegmentSize: maxSegmentSize)
    }

    /// Throws a one-line error naming the bad setting.
    public func validate() throws { try parameters.validate() }
}


/// How a transfer runs: threads for hashing and decoding, the Reed-Solomon kernel
/// (`GRID_SIMD` chooses it from the command line), and when to give up on a silent server.
public struct CodingOptions: Sendable {
    public var threads = 2
    public var simdPath = SIMDPath.best
    /// A server that leaves a request of a transfer unanswered this long is dropped from
    /// it (its shares are read from, or placed on, other servers).
    public var stallTimeout = 2.0
    public init(threads: Int = 2, simdPath: SIMDPath = .best, stallTimeout: Double = 2.0) {
        self.threads = threads
        self.simdPath = simdPath
        self.stallTimeout = stallTimeout
    }
}

/// A storage server as the client knows it: its announcement and, once asked for, a connection.
public struct ServerRef: Sendable, Hashable {
    public let announcement: Announcement
    public var nodeID: String { announcement.nodeID }
    public var nickname: String { announcement.nickname }
    /// Tahoe's permutation seed for a `v0-` server: its public key bytes.
    public var permutationSeed: [UInt8] { announcement.publicKey.bytes }

    public init(_ a: Announcement) { announcement = a }
    public static func == (a: ServerRef, b: ServerRef) -> Bool { a.nodeID == b.nodeID }
    public func hash(into h: inout Hasher) { h.combine(nodeID) }
}

/// Tahoe-LAFS's permuted server list: servers sorted by SHA-1(storage index + seed), so
/// each file spreads over a different, but reproducible, ordering of the grid.
public func permutedServers(_ servers: [ServerRef], storageIndex: [UInt8]) -> [ServerRef] {
    servers.map { ($0, SHA1.hash(storageIndex + $0.permutationSeed)) }
        .sorted { $0.1.lexicographicallyPrecedes($1.1) }
        .map(\.0)
}

/// The client's view of the grid: the introducer subscription and one pinned TLS
/// connection per storage server, opened on first use and shared by every operation.
public final class ServerPool: @unchecked Sendable {
    public let loop: EventLoop
    let tls: TLSContext
    /// One subscription per introducer; their lists are merged.
    let subscribers: [IntroducerSubscriber]
    let introducers: [IntroducerAddress]
    let rpcConfig: RPCClientConfig
    let connections = Mutex<[String: Task<StorageClient, Error>]>([:])
    /// The server list as `waitForServers` last saw it, and since when it has been so: a
    /// list that has not changed since an earlier call is quiet already (a maintain run's
    /// thousands of calls must not each wait the settle time again).
    let listSeen = Mutex<(ids: Set<String>, since: Double)>(([], monotonicNow()))
    let opened = Mutex<[StorageClient]>([])
    /// Node id → what is known of this client's connection to it (for status pages).
    let links = Mutex<[String: LinkRecord]>([:])
    let keeping = Mutex<Task<Void, Never>?>(nil)

    struct LinkRecord {
        var connectedSince: Double?
        var disconnectedSince: Double?
        var lastError: String?
        var client: StorageClient?
        /// The server's own answer to get_version (its software version, its space now).
        var version: StorageVersion?
    }

    /// One known server as a status page shows it.
    public struct ServerStatus: Sendable {
        public var server: ServerRef
        public var connected: Bool
        /// Wall-clock seconds since 1970: when the current connection opened, or when the
        /// last one closed (nil: never tried).
        public var since: Double?
        /// When the last bytes came from it (nil: never).
        public var lastReceived: Double?
        public var lastError: String?
        public var client: StorageClient?
        /// What it said of itself when this connection opened (software version, space).
        public var version: StorageVersion?
    }

    /// Where the last confirmed server list is kept between runs (nil: nowhere), and
    /// what it held when read (not rewritten, and not synced to disk again, if unchanged).
    let cachePath: String?
    let cachedBytes: [UInt8]?

    /// The key of the cache's authentication code (nil: none is written or believed), and
    /// whether the code beside the cache matched what was read.
    let cacheKey: [UInt8]?
    let cacheCodeMatched: Bool

    /// With `cachePath`, the servers announced last time are used at once while the
    /// introducer's list is fetched; the list is saved there again at `shutdown`. A stale
    /// entry costs only a failed connection to a server that left. Every signature in the
    /// cache is checked again, unless `cacheKey` is given and `cachePath`.mac holds the
    /// HMAC-SHA256 of the cache's bytes under it: this node wrote both after checking
    /// every signature (ten Ed25519 verifications, ~2 ms of every CLI command, saved). A
    /// cache changed by anyone without the key, or damaged, is checked as before.
    public convenience init(introducer: IntroducerAddress, rpcConfig: RPCClientConfig = RPCClientConfig(), cachePath: String? = nil) throws {
        try self.init(introducers: [introducer], rpcConfig: rpcConfig, cachePath: cachePath)
    }

    public init(introducers: [IntroducerAddress], rpcConfig: RPCClientConfig = RPCClientConfig(), cachePath: String? = nil,
                cacheKey: [UInt8]? = nil) throws {
        precondition(!introducers.isEmpty)
        self.cachePath = cachePath
        self.cacheKey = cacheKey
        let (loop, tls) = (try EventLoop(name: "client-loop"), try TLSContext.client())
        (self.loop, self.tls) = (loop, tls)
        self.rpcConfig = rpcConfig
        self.introducers = introducers
        subscribers = introducers.map { IntroducerSubscriber(introducer: $0, loop: loop, tls: tls) }
        cachedBytes = cachePath.flatMap { try? FileSystem.readFile($0, maxSize: 8 << 20) }
        var matched = false
        if let cachePath, let cacheKey, let bytes = cachedBytes,
           let code = try? FileSystem.readFile(cachePath + ".mac", maxSize: 64),
           let expected = try? HMACSHA256.authenticationCode(key: cacheKey, data: bytes) {
            matched = constantTimeEqual(code, expected)
        }
        cacheCodeMatched = matched
        if let bytes = cachedBytes, let cached = try? SubscribeResponse(decoding: bytes) {
            subscribers[0].seed(cached.announcements, checkedBefore: matched)
        }
    }

    /// The servers the introducers currently list (merged; the newest announcement of each wins).
    public var servers: [ServerRef] {
        var merged: [String: Announcement] = [:]
        for s in subscribers {
            for (id, a) in s.current where (merged[id]?.sequence ?? 0) <= a.sequence { merged[id] = a }
        }
        return merged.values.map(ServerRef.init)
    }
    public var introducerConnected: Bool { subscribers.contains { $0.isConnected } }

    /// Why no servers are known, in words a person can act on (nil while it is not clear).
    public var introducerProblem: String? {
        guard !introducerConnected else { return nil }
        let problems = zip(introducers, subscribers).compactMap { Self.problem($0, $1) }
        return problems.count == subscribers.count ? problems.joined(separator: "; ") : nil
    }

    static func problem(_ introducer: IntroducerAddress, _ subscriber: IntroducerSubscriber) -> String? {
        guard !subscriber.isConnected, let e = subscriber.connectionError else { return nil }
        let at = "\(introducer.host):\(introducer.port)"
        switch e.code {
        case .notAuthorized: return "the introducer at \(at) refused this node's secret (is the introducer address in grid.conf complete and current?)"
        case .pinMismatch: return "the server at \(at) is not the introducer named in grid.conf (its key does not match: \(e.message))"
        case .timeout: return "the introducer at \(at) did not answer in time"
        case .unreachable, .connectionLost: return "cannot reach the introducer at \(at): \(e.message)"
        default: return "the introducer at \(at) failed: \(e.message)"
        }
    }

    /// The error for "no servers known", saying why when the introducer connection says.
    func noServersError() -> GridError {
        if let problem = introducerProblem {
            return GridError(introducerRefused ? .denied : .unavailable, "No storage servers are known: \(problem).")
        }
        return GridError(.unavailable, "No storage servers are known to the introducer; is the grid running and the introducer address right?")
    }

    /// A failure that waiting will not mend (a wrong secret or key).
    var introducerRefused: Bool {
        subscribers.allSatisfy { s in
            guard !s.isConnected, let code = s.connectionError?.code else { return false }
            return code == .notAuthorized || code == .pinMismatch
        }
    }

    /// Waits until at least `count` servers are known or `timeout` passes, however long the
    /// list stays quiet in between (for a grid whose size is known, e.g. one just started).
    public func waitForServers(count: Int, timeout: Double) async -> [ServerRef] {
        let start = monotonicNow()
        while true {
            let s = servers
            if s.count >= count || monotonicNow() - start >= timeout { return s }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    /// Waits for the server list to settle: returns once `enough` servers are known; or once
    /// at least `minimum` are known and the list has not changed for `settle` seconds; or,
    /// with fewer, once the introducer has answered and nothing has changed for 3 s (no
    /// point waiting for servers that are not there); or at `timeout`.
    public func waitForServers(enough: Int, minimum: Int, settle: Double = 1.5, timeout: Double = 10) async -> [ServerRef] {
        let start = monotonicNow()
        while true {
            let s = servers
            let now = monotonicNow()
            let ids = Set(s.map(\.nodeID))
            let lastChange = listSeen.withLock { seen -> Double in
                if seen.ids != ids { seen = (ids, now) }
                return seen.since
            }
            let quiet = now - lastChange
            if s.count >= enough || (s.count >= minimum && quiet >= settle)
                || (introducerConnected && quiet >= max(settle, 3)) || now - start >= timeout
                || (s.isEmpty && introducerRefused) || (s.isEmpty && introducerProblem != nil && now - start >= 3) {
                return s
            }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    /// The connection to `server`, opened (and its key pinned) on first use. A closed
    /// connection is replaced on the next call.
    public func client(for server: ServerRef) async throws -> StorageClient {
        let task = connections.withLock { c -> Task<StorageClient, Error> in
            if let t = c[server.nodeID] { return t }
            let t = Task { [self] () throws -> StorageClient in
                var lastError: Error = GridError(.unavailable, "\(server.nickname) announced no address")
                for addr in server.announcement.addresses {
                    do {
                        let (host, port) = try splitHostPort(addr)
                        let rpc = try await RPCClient.connect(
                            loop: loop, host: host, port: port, serverKey: server.announcement.publicKey,
                            service: storageServiceName, tls: tls, config: rpcConfig, pipelineHello: true)
                        let c = StorageClient(rpc)
                        self.opened.withLock { $0.append(c) }
                        self.linkOpened(server.nodeID, c)
                        return c
                    } catch { lastError = error }
                }
                self.linkFailed(server.nodeID, lastError)
                throw lastError
            }
            c[server.nodeID] = t
            return t
        }
        do {
            let c = try await task.value
            if !c.rpc.isClosed { return c }
        } catch {
            connections.withLock { if $0[server.nodeID] == task { $0[server.nodeID] = nil } }
            throw error
        }
        connections.withLock { if $0[server.nodeID] == task { $0[server.nodeID] = nil } }
        return try await client(for: server)
    }

    func linkOpened(_ id: String, _ c: StorageClient) {
        let now = wallClock()
        links.withLock { $0[id] = LinkRecord(connectedSince: now, disconnectedSince: nil, lastError: nil, client: c) }
        Task { [weak self] in
            guard let v = try? await c.getVersion() else { return }
            self?.links.withLock { l in if l[id]?.client?.rpc === c.rpc { l[id]?.version = v } }
        }
        Task { [weak self] in
            let reason = await c.rpc.waitClosed()
            self?.links.withLock { l in
                guard l[id]?.client?.rpc === c.rpc else { return }
                l[id] = LinkRecord(connectedSince: nil, disconnectedSince: wallClock(), lastError: reason.message, client: nil)
            }
        }
    }

    func linkFailed(_ id: String, _ e: Error) {
        links.withLock { l in
            if l[id]?.client != nil { return }
            let since = l[id]?.disconnectedSince ?? wallClock()
            l[id] = LinkRecord(connectedSince: nil, disconnectedSince: since, lastError: "\(e)", client: nil)
        }
    }

    /// Every known server and this client's connection to it.
    public func statuses() -> [ServerStatus] {
        let l = links.withLock { $0 }
        return servers.sorted { ($0.nickname, $0.nodeID) < ($1.nickname, $1.nodeID) }.map { s in
            let r = l[s.nodeID]
            let open = r?.client.map { !$0.rpc.isClosed } ?? false
            let ms = r?.client?.rpc.lastReceivedMillis.load(ordering: .relaxed) ?? 0
            return ServerStatus(server: s, connected: open, since: open ? r?.connectedSince : r?.disconnectedSince,
                                lastReceived: ms > 0 ? Double(ms) / 1000 : nil, lastError: open ? nil : r?.lastError,
                                client: open ? r?.client : nil, version: r?.version)
        }
    }

    /// Keeps a connection open to every known server (a long-running client such as the
    /// gateway, whose status page shows who is reachable): every `interval` seconds, each
    /// server without one is tried again.
    public func keepConnected(interval: Double = 5) {
        keeping.withLock { t in
            guard t == nil else { return }
            t = Task { [weak self] in
                while !Task.isCancelled {
                    guard let self else { return }
                    let open = self.links.withLock { $0.compactMapValues { $0.client.map { !$0.rpc.isClosed } } }
                    await withTaskGroup(of: Void.self) { g in
                        for s in self.servers where open[s.nodeID] != true {
                            g.addTask { _ = try? await self.client(for: s) }
                        }
                    }
                    try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                }
            }
        }
    }

    /// Closes every connection and the introducer subscription (saving the server list
    /// first, when there is a cache and the introducer's list arrived).
    public func shutdown() {
        keeping.withLock { $0?.cancel(); $0 = nil }
        let confirmed = subscribers.compactMap(\.confirmedSigned).flatMap { $0 }
        if let cachePath, !confirmed.isEmpty {
            // Every announcement in `confirmed` was checked in this process (or seeded from
            // bytes whose code matched): the code may vouch for them.
            let bytes = SubscribeResponse(announcements: confirmed).encoded()
            let changed = bytes != cachedBytes
            if changed { try? FileSystem.writeFileAtomically(cachePath, bytes, permissions: 0o600) }
            if let cacheKey, changed || !cacheCodeMatched, let code = try? HMACSHA256.authenticationCode(key: cacheKey, data: bytes) {
                try? FileSystem.writeFileAtomically(cachePath + ".mac", code, permissions: 0o600)
            }
        }
        for s in subscribers { s.stop() }
        connections.withLock { $0.removeAll() }
        for c in opened.withLock({ $0 }) { c.rpc.close() }
        loop.shutdown()
    }
}

/// Runs `body` on a fresh thread (not the cooperative pool, which must never block) and
/// returns its result: the encoder and decoder are synchronous and block on the network.
func onThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { cont in
        let t = Thread {
            cont.resume(with: Result { try body() })
        }
        t.name = name
        t.stackSize = 1 << 20
        t.start()
    }
}
