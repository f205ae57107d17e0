import Foundation
import GridClient
import GridCrypto
import GridFormat
import GridProtocol
import GridWire
import GridSystem

/// A client node directory: grid.conf ([client] introducer and encoding), a node key, the
/// convergence secret and the lease secret (both mode 0600 under private/).
public enum ClientNode {
    /// Where commands look for the client node, first match wins: `--node-dir`, then
    /// `$GRID_NODE_DIR`, then `~/.grid/client`.
    public static func resolveDirectory(_ explicit: String?) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        if let env = ProcessInfo.processInfo.environment["GRID_NODE_DIR"], !env.isEmpty { return env }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return home + "/.grid/client"
    }

    public static func create(directory: String, introducer: IntroducerAddress, encoding: ClientEncoding,
                              nickname: String?, helper: IntroducerAddress? = nil) throws {
        try encoding.validate()
        try createNodeDirectory(directory)
        let identity = try NodeIdentity.loadOrCreate(path: directory + "/private/node.key")
        try writeSecretFile(directory + "/private/convergence", Base32.encode(SecureRandom.bytes(32)) + "\n")
        try writeSecretFile(directory + "/private/lease.secret", Base32.encode(SecureRandom.bytes(32)) + "\n")
        var c = NodeConfig()
        c["node", "type"] = NodeKind.client.rawValue
        c["node", "nickname"] = nickname ?? "client-\(identity.nodeID.dropFirst(3).prefix(8))"
        c["introducer", "address"] = introducer.description
        c["client", "needed"] = "\(encoding.needed)"
        c["client", "happy"] = "\(encoding.happy)"
        c["client", "total"] = "\(encoding.total)"
        c["client", "segment_size"] = "\(encoding.maxSegmentSize)"
        if let helper { c["client", "helper"] = helper.description }
        try writeSecretFile(
            directory + "/grid.conf",
            c.rendered(header: """
                grid client node
                needed/total: each file becomes `total` shares, any `needed` of which rebuild it
                happy: an upload succeeds only if its shares sit on at least this many distinct servers
                segment_size: the largest segment (Tahoe's default is 1 MiB = 1048576); it changes capabilities
                helper (optional): an upload helper's address; uploads send it ciphertext once instead of n/k times
                one_flight_max (optional, default 4MiB): files whose shares total at most this are sent with the
                  first request to new servers (a round trip fewer); re-uploading one that is stored sends them for nothing
                """), permissions: 0o600)
    }

    /// Where the client keeps the servers the introducer announced last (signed), so the
    /// next command can start at once.
    public static func serverCachePath(directory: String) -> String { directory + "/servers.cache" }

    /// The client's catalog of what it stored (SQLite).
    public static func catalogPath(directory: String) -> String { directory + "/catalog.sqlite" }

    /// RSA keys made ahead of time for new mutable files (GridClient.KeyPool).
    public static func keyPoolPath(directory: String) -> String { directory + "/private/key-pool" }

    /// Where `grid maintain` keeps file standings, server sightings and run results.
    public static func maintainLogPath(directory: String) -> String { directory + "/maintain.sqlite" }

    public static func load(directory: String) throws -> ClientSettings {
        let config = try NodeConfig.load(directory: directory, expecting: .client)
        guard let intro = config["introducer", "address"] else {
            throw GridError(.usage, "\(directory)/grid.conf has no [introducer] address; is this a client node?")
        }
        func int(_ key: String, _ def: Int) throws -> Int {
            guard let v = config["client", key] else { return def }
            guard let i = Int(v) else { throw GridError(.usage, "\(directory)/grid.conf: [client] \(key) = '\(v)' is not a number") }
            return i
        }
        let enc = ClientEncoding(needed: try int("needed", 3), happy: try int("happy", 7), total: try int("total", 10),
                                 maxSegmentSize: Int(try parseSize(config["client", "segment_size"] ?? "1048576")))
        try enc.validate()
        func secret(_ name: String) throws -> [UInt8] { try readNodeSecret(directory, name) }
        let introducers = try parseIntroducers(intro)
        var settings = ClientSettings(introducer: introducers[0], encoding: enc,
                                      convergenceSecret: try secret("convergence"), leaseSecret: try secret("lease.secret"))
        settings.moreIntroducers = Array(introducers.dropFirst())
        if let v = config["client", "one_flight_max"] {
            do { settings.oneFlightMaxBytes = try parseSize(v) } catch {
                throw GridError(.usage, "\(directory)/grid.conf: [client] one_flight_max = '\(v)' is not a size (e.g. 4MiB, or 0 for never)")
            }
        }
        if let h = config["client", "helper"], !h.isEmpty {
            do { settings.helper = try IntroducerAddress(parsing: h) } catch {
                throw GridError(.usage, "\(directory)/grid.conf: [client] helper is not a helper address (grid://v0-...@host:port/secret, "
                    + "printed by `grid helper create`): \(error)")
            }
        }
        return settings
    }
}
