import Dispatch
import GridCrypto
import GridClient
import GridFormat
import GridHelper
import GridHTTP
import GridIntroducer
import GridMetrics
import GridProtocol
import GridStorage
import GridSystem
import GridWire
import Logging

public let gridVersion = "grid/0.1"

/// What every daemon does first: check the node is of its kind and its grid.conf is
/// sound, lock the directory (before anything in it is touched: a storage server clears
/// incoming/), and load the node key.
func openDaemonNode(_ directory: String, _ kind: NodeKind) throws -> (NodeConfig, NodeLock, NodeIdentity) {
    CurrentProcess.raiseFileLimit()
    let config = try NodeConfig.load(directory: directory, expecting: kind)
    let lock = try NodeLock(directory: directory)
    return (config, lock, try NodeIdentity.loadOrCreate(path: directory + "/private/node.key"))
}

/// Starts the `/metrics` endpoint when `[node] metrics = host:port` is set (off otherwise).
/// It listens where it is told; the samples use loopback (metrics are not secret, but
/// nothing needs them exposed further than the scraper).
public func startMetricsEndpoint(_ config: NodeConfig, registry: MetricsRegistry, kind: String, loop: EventLoop, logger: Logger) throws -> HTTPServer? {
    guard let addr = config["node", "metrics"], !addr.isEmpty else { return nil }
    let (host, port) = try splitHostPort(addr)
    var hc = HTTPServerConfig()
    hc.handlerThreads = 2
    hc.maxConcurrentRequests = 8
    let server = HTTPServer(loop: loop, handler: MetricsEndpoint(registry: registry, version: gridVersion, kind: kind), config: hc)
    let bound = try server.listen(host: host, port: port)
    logger.info("metrics at http://\(joinHostPort(host, bound))/metrics")
    return server
}

/// The 20-byte id this server writes into mutable containers (GridProtocol's `containerNodeID`).
func containerNodeID(_ identity: NodeIdentity) -> [UInt8] { containerNodeID(publicKey: identity.publicKey.bytes) }

// MARK: Introducer

public enum IntroducerNode {
    /// Writes an introducer node directory; returns its address.
    public static func create(directory: String, host listen: String, port: UInt16?, location: String?) throws -> IntroducerAddress {
        let (host, port) = try listenAddress(listen, port: port, location: location)
        try createNodeDirectory(directory)
        let identity = try NodeIdentity.loadOrCreate(path: directory + "/private/node.key")
        let secret = SecureRandom.bytes(20)
        try writeSecretFile(directory + "/private/introducer.secret", Base32.encode(secret) + "\n")
        let p = try port ?? pickFreePort(host: host)
        let loc = location ?? joinHostPort(host, p)
        var c = NodeConfig()
        c["node", "listen"] = joinHostPort(host, p)
        c["node", "location"] = loc
        c["node", "type"] = NodeKind.introducer.rawValue
        c["introducer", "expiry"] = "300s"
        try writeSecretFile(directory + "/grid.conf", c.rendered(header: "grid introducer node\nlisten: where to accept connections; location: the host:port clients are told\nexpiry: drop a storage server that has not re-announced for this long"), permissions: 0o600)
        let (h, lp) = try splitHostPort(loc)
        let addr = IntroducerAddress(publicKey: identity.publicKey, host: h, port: lp, secret: secret)
        try writeSecretFile(directory + "/private/introducer.address", addr.description + "\n")
        return addr
    }

    public static func address(directory: String) throws -> IntroducerAddress {
        guard let s = try readSecretFile(directory + "/private/introducer.address") else {
            throw GridError(.notFound, "\(directory) is not an introducer node directory")
        }
        return try IntroducerAddress(parsing: s)
    }

    /// Serves until SIGINT/SIGTERM.
    public static func run(directory: String, logger: Logger) throws {
        let (config, lock, identity) = try openDaemonNode(directory, .introducer)
        defer { withExtendedLifetime(lock) {} }
        let secret = try readNodeSecret(directory, "introducer.secret")
        let (host, port) = try splitHostPort(config["node", "listen"] ?? "127.0.0.1:0")
        let expiry = try parseDuration(config["introducer", "expiry"] ?? "300s")
        let loop = try EventLoop(name: "introducer-loop")
        let service = IntroducerService(secret: secret, expiry: expiry, log: { logger.info("\($0)") })
        let metrics = MetricsRegistry()
        var rpcConfig = RPCServerConfig()
        rpcConfig.logRefusal = { logger.warning("\($0)") }
        rpcConfig.metrics = metrics
        metrics.collect {
            let c = service.counts
            return [MetricsRegistry.Sample("grid_introducer_announcements", help: "Storage servers announced and not expired.", value: Double(c.announcements)),
                    MetricsRegistry.Sample("grid_introducer_subscribers", help: "Clients subscribed now.", value: Double(c.subscribers))]
        }
        let server = try RPCServer(identity: identity, services: [service], loop: loop, config: rpcConfig)
        let bound = try server.listen(host: host, port: port)
        logger.info("introducer \(identity.nodeID) listening on \(host):\(bound)")
        if WallClock.offset != 0 { logger.warning("wall clock shifted by \(WallClock.offset) s (GRID_CLOCK_OFFSET): for fault testing only") }
        let metricsServer = try startMetricsEndpoint(config, registry: metrics, kind: "introducer", loop: loop, logger: logger)
        let sig = CurrentProcess.waitForTerminationSignal()
        logger.info("signal \(sig): shutting down")
        metricsServer?.stop()
        server.stop()
        loop.shutdown()
    }
}

// MARK: Storage

public enum StorageNode {
    public static func create(directory: String, introducer: IntroducerAddress, nickname: String?, host listen: String,
                              port: UInt16?, location: String?, reservedSpace: String) throws -> String {
        _ = try parseSize(reservedSpace)
        let (host, port) = try listenAddress(listen, port: port, location: location)
        try createNodeDirectory(directory)
        let identity = try NodeIdentity.loadOrCreate(path: directory + "/private/node.key")
        let p = try port ?? pickFreePort(host: host)
        var c = NodeConfig()
        c["node", "nickname"] = nickname ?? "storage-\(identity.nodeID.dropFirst(3).prefix(8))"
        c["node", "listen"] = joinHostPort(host, p)
        c["node", "location"] = try location.map { try parseLocations($0).joined(separator: ", ") } ?? joinHostPort(host, p)
        c["node", "type"] = NodeKind.storage.rawValue
        c["storage", "reserved_space"] = reservedSpace
        c["storage", "lease_duration"] = "31d"
        c["storage", "expire"] = "false"
        c["storage", "expire_interval"] = "1h"
        c["storage", "announce_interval"] = "60s"
        // The introducer address holds its secret: grid.conf is written mode 0600.
        c["introducer", "address"] = introducer.description
        try writeSecretFile(directory + "/grid.conf", c.rendered(header: "grid storage node\nreserved_space: keep this much disk free (10G = 10^9 bytes, 10GiB = 2^30)\nexpire: delete shares whose leases have all expired, checked every expire_interval"), permissions: 0o600)
        return identity.nodeID
    }

    /// Rebuilds the lease index from the share files (shares copied in from another server
    /// or a Tahoe storage directory then count for leases, expiry and space). The node
    /// must not be running (its lock is taken). Returns the number of shares indexed.
    public static func reindex(directory: String) throws -> Int {
        let (config, lock, identity) = try openDaemonNode(directory, .storage)
        defer { withExtendedLifetime(lock) {} }
        var sc = StorageConfig(nodeDirectory: directory)
        sc.reservedSpace = try parseSize(config["storage", "reserved_space"] ?? "1G")
        let backend = try StorageBackend(config: sc, containerNodeID: containerNodeID(identity))
        return try backend.rebuildIndex()
    }

    /// Serves until SIGINT/SIGTERM.
    public static func run(directory: String, logger: Logger) throws {
        let (config, lock, identity) = try openDaemonNode(directory, .storage)
        defer { withExtendedLifetime(lock) {} }
        var sc = StorageConfig(nodeDirectory: directory)
        sc.reservedSpace = try parseSize(config["storage", "reserved_space"] ?? "1G")
        sc.leaseDuration = UInt32(try parseDuration(config["storage", "lease_duration"] ?? "31d"))
        sc.expireLeases = ["true", "yes", "1", "on"].contains((config["storage", "expire"] ?? "false").lowercased())
        let expireInterval = try parseDuration(config["storage", "expire_interval"] ?? "1h")
        let announceInterval = try parseDuration(config["storage", "announce_interval"] ?? "60s")
        guard let introText = config["introducer", "address"] else { throw GridError(.usage, "grid.conf has no [introducer] address") }
        let introducers = try parseIntroducers(introText)
        let (host, port) = try splitHostPort(config["node", "listen"] ?? "127.0.0.1:0")
        let nickname = config["node", "nickname"] ?? "storage"
        let configuredLocations = try config["node", "location"].map(parseLocations)

        if let point = CurrentProcess.environment("GRID_CRASH_POINT") {
            guard let p = CrashPoint(rawValue: point) else { throw GridError(.usage, "GRID_CRASH_POINT=\(point) is not a crash point") }
            sc.crashPoint = p
            logger.warning("crash test: this server kills itself at \(point)")
        }
        let backend = try StorageBackend(config: sc, containerNodeID: containerNodeID(identity))
        if backend.recoveredJournals > 0 {
            logger.notice("finished or undid \(backend.recoveredJournals) mutable share change(s) a crash interrupted")
        }
        let loop = try EventLoop(name: "storage-loop")
        let metrics = MetricsRegistry()
        var rpcConfig = RPCServerConfig()
        rpcConfig.metrics = metrics
        let reserved = sc.reservedSpace
        metrics.collect {
            let st = try? backend.stats()
            let leases = try? backend.leaseStats()
            let disk = backend.diskTotals()
            let space = backend.space()
            var out = [
                MetricsRegistry.Sample("grid_storage_shares", help: "Shares stored, by kind.", labels: [("kind", "immutable")], value: Double(st?.immutableShares ?? 0)),
                MetricsRegistry.Sample("grid_storage_shares", help: "Shares stored, by kind.", labels: [("kind", "mutable")], value: Double(st?.mutableShares ?? 0)),
                MetricsRegistry.Sample("grid_storage_share_bytes", help: "Bytes of the share files stored.", value: Double(st?.usedBytes ?? 0)),
                MetricsRegistry.Sample("grid_storage_immutable_written_bytes_total", .counter, help: "Share data bytes written by immutable bucket writers since start.",
                                       value: Double(backend.immutableBytesWritten.load(ordering: .relaxed))),
                MetricsRegistry.Sample("grid_storage_disk_total_bytes", help: "Size of the filesystem holding the shares.", value: Double(disk.total)),
                MetricsRegistry.Sample("grid_storage_disk_free_bytes", help: "Bytes the filesystem has free for this server.", value: Double(disk.free)),
                MetricsRegistry.Sample("grid_storage_disk_available_bytes", help: "Bytes this server accepts: free minus reserved minus open allocations.", value: Double(space.available)),
                MetricsRegistry.Sample("grid_storage_reserved_bytes", help: "Space kept free (reserved_space).", value: Double(reserved)),
                MetricsRegistry.Sample("grid_storage_leases", help: "Leases held.", value: Double(leases?.count ?? 0)),
            ]
            if let e = leases?.earliestExpiry {
                out.append(MetricsRegistry.Sample("grid_storage_lease_earliest_expiry_seconds", help: "When the first lease expires (Unix time).", value: Double(e)))
            }
            return out
        }
        let server = try RPCServer(identity: identity, services: [StorageService(backend: backend, applicationVersion: gridVersion)], loop: loop, config: rpcConfig)
        let bound = try server.listen(host: host, port: port)
        let metricsServer = try startMetricsEndpoint(config, registry: metrics, kind: "storage", loop: loop, logger: logger)
        let locations = configuredLocations ?? [joinHostPort(host, bound)]
        logger.info("storage server \(identity.nodeID) (\(nickname)) listening on \(host):\(bound), reserved space \(sc.reservedSpace) bytes")
        if WallClock.offset != 0 { logger.warning("wall clock shifted by \(WallClock.offset) s (GRID_CLOCK_OFFSET): for fault testing only") }
        let tls = try TLSContext.client()
        let key = identity.key
        // The introducer keeps the announcement with the highest sequence. Starting from
        // the clock alone, a server whose clock was ahead before a restart would be
        // ignored until its old announcement expired; the last one sent is kept on disk.
        let seqPath = directory + "/private/announcement.sequence"
        let lastSeq = (try? readSecretFile(seqPath)).flatMap { UInt64($0.trimmingWhitespace()) } ?? 0
        let seq = UncheckedCounter(start: max(wallClockSeconds() * 1000, lastSeq))
        // One announcer per introducer: each keeps this server announced to its own.
        let announcers = introducers.map { introducer in
            Announcer(introducer: introducer, loop: loop, tls: tls, interval: announceInterval,
                      log: { logger.info("\($0)") }) {
                let n = seq.next()
                try? writeSecretFile(seqPath, "\(n)\n")
                return try Announcement(publicKey: key.publicKey, nickname: nickname, addresses: locations,
                                        availableSpace: backend.space().available, sequence: n).signed(with: key)
            }
        }
        var expirer: DispatchSourceTimer?
        if sc.expireLeases {
            let t = DispatchSource.makeTimerSource(queue: .global())
            t.schedule(deadline: .now() + min(60, expireInterval), repeating: expireInterval)
            t.setEventHandler {
                do {
                    let n = try backend.expireLeases()
                    if n > 0 { logger.info("expirer removed \(n) share(s) whose leases had all expired") }
                } catch { logger.error("expirer: \(error)") }
            }
            t.resume()
            expirer = t
        }
        // Staged data of a writer that died half way is dropped after an hour.
        let janitor = DispatchSource.makeTimerSource(queue: .global())
        janitor.schedule(deadline: .now() + 600, repeating: 600)
        janitor.setEventHandler {
            let n = backend.dropStaleStaging(olderThan: 3600)
            if n > 0 { logger.info("dropped \(n) staged share(s) no writer finished within an hour") }
        }
        janitor.resume()
        let sig = CurrentProcess.waitForTerminationSignal()
        logger.info("signal \(sig): shutting down")
        janitor.cancel()
        expirer?.cancel()
        for a in announcers { a.stop() }
        metricsServer?.stop()
        server.stop()  // closing the sessions aborts unfinished uploads
        loop.shutdown()
    }
}

final class UncheckedCounter: @unchecked Sendable {
    var value: UInt64
    let lock = DispatchSemaphore(value: 1)
    init(start: UInt64) { value = start }
    func next() -> UInt64 {
        lock.wait()
        defer { lock.signal() }
        value += 1
        return value
    }
}

// MARK: Upload helper

public enum HelperNode {
    /// Writes an upload helper's node directory; returns its address (what clients put in
    /// `[client] helper`).
    public static func create(directory: String, introducer: IntroducerAddress, nickname: String?, host listen: String,
                              port: UInt16?, location: String?) throws -> IntroducerAddress {
        let (host, port) = try listenAddress(listen, port: port, location: location)
        try createNodeDirectory(directory)
        let identity = try NodeIdentity.loadOrCreate(path: directory + "/private/node.key")
        let secret = SecureRandom.bytes(20)
        try writeSecretFile(directory + "/private/helper.secret", Base32.encode(secret) + "\n")
        // The helper's leases on what it uploads (clients renew their own with `grid maintain`).
        try writeSecretFile(directory + "/private/lease.secret", Base32.encode(SecureRandom.bytes(32)) + "\n")
        let p = try port ?? pickFreePort(host: host)
        let loc = location ?? joinHostPort(host, p)
        var c = NodeConfig()
        c["node", "type"] = NodeKind.helper.rawValue
        c["node", "nickname"] = nickname ?? "helper-\(identity.nodeID.dropFirst(3).prefix(8))"
        c["node", "listen"] = joinHostPort(host, p)
        c["node", "location"] = loc
        c["introducer", "address"] = introducer.description
        c["helper", "max_encoding"] = "2"
        c["helper", "abandon_after"] = "2d"
        try writeSecretFile(directory + "/grid.conf", c.rendered(header: """
            grid upload helper node
            listen: where to accept connections; location: the host:port clients are told
            max_encoding: files encoded and pushed at once (each takes a core while it runs)
            abandon_after: delete a partly received upload nobody has touched for this long
            """), permissions: 0o600)
        let (h, lp) = try splitHostPort(loc)
        let addr = IntroducerAddress(publicKey: identity.publicKey, host: h, port: lp, secret: secret)
        try writeSecretFile(directory + "/private/helper.address", addr.description + "\n")
        return addr
    }

    /// Serves until SIGINT/SIGTERM.
    public static func run(directory: String, logger: Logger) throws {
        let (config, lock, identity) = try openDaemonNode(directory, .helper)
        defer { withExtendedLifetime(lock) {} }
        let helperSecret = try readNodeSecret(directory, "helper.secret")
        guard let intro = config["introducer", "address"] else {
            throw GridError(.usage, "\(directory)/grid.conf has no [introducer] address")
        }
        let introducers = try parseIntroducers(intro)
        let maxEncoding = Int(config["helper", "max_encoding"] ?? "2") ?? 0
        guard maxEncoding >= 1, maxEncoding <= 64 else {
            throw GridError(.usage, "\(directory)/grid.conf: [helper] max_encoding must be a number from 1 to 64")
        }
        let abandonAfter = try parseDuration(config["helper", "abandon_after"] ?? "2d")
        let (host, port) = try splitHostPort(config["node", "listen"] ?? "127.0.0.1:0")
        let pool = try ServerPool(introducers: introducers, cachePath: directory + "/servers.cache")
        var settings = ClientSettings(introducer: introducers[0], convergenceSecret: SecureRandom.bytes(32),
                                      leaseSecret: try readNodeSecret(directory, "lease.secret"))
        settings.moreIntroducers = Array(introducers.dropFirst())
        let service = try HelperService(secret: helperSecret, directory: directory, pool: pool, settings: settings,
                                        maxFinishing: maxEncoding, abandonAfter: abandonAfter,
                                        log: { logger.info("\($0)") })
        let loop = try EventLoop(name: "helper-loop")
        let metrics = MetricsRegistry()
        var rpcConfig = RPCServerConfig()
        rpcConfig.logRefusal = { logger.warning("\($0)") }
        rpcConfig.metrics = metrics
        // Each file being encoded holds a worker until its shares are placed.
        rpcConfig.workerThreads = 4 + maxEncoding
        metrics.collect {
            [MetricsRegistry.Sample("grid_helper_uploads_in_progress", help: "Uploads whose ciphertext is arriving or being encoded.", value: Double(service.inProgress)),
             MetricsRegistry.Sample("grid_helper_received_bytes_total", help: "Ciphertext bytes received from clients.", value: Double(service.received.load(ordering: .relaxed))),
             MetricsRegistry.Sample("grid_helper_uploads_finished_total", help: "Files encoded and placed.", value: Double(service.finished.load(ordering: .relaxed))),
             MetricsRegistry.Sample("grid_helper_already_stored_total", help: "Uploads answered with 'stored already' (nothing sent).", value: Double(service.foundStored.load(ordering: .relaxed)))]
        }
        let server = try RPCServer(identity: identity, services: [service], loop: loop, config: rpcConfig)
        let bound = try server.listen(host: host, port: port)
        logger.info("upload helper \(identity.nodeID) listening on \(host):\(bound)")
        if WallClock.offset != 0 { logger.warning("wall clock shifted by \(WallClock.offset) s (GRID_CLOCK_OFFSET): for fault testing only") }
        let metricsServer = try startMetricsEndpoint(config, registry: metrics, kind: "helper", loop: loop, logger: logger)
        let sig = CurrentProcess.waitForTerminationSignal()
        logger.info("signal \(sig): shutting down")
        metricsServer?.stop()
        server.stop()
        pool.shutdown()
        loop.shutdown()
    }
}
