import GridFormat
import GridProtocol
import GridSystem
import GridWire

/// A node's `grid.conf`: INI sections of `key = value` lines; `#` starts a comment.
public struct NodeConfig: Sendable, Equatable {
    public var sections: [String: [String: String]] = [:]
    /// Where each section and key was read ("section" or "section.key" → line), for messages.
    var lines: [String: Int] = [:]
    /// The file it was read from.
    var path = "grid.conf"

    public init() {}

    public init(parsing text: String, path: String) throws {
        self.path = path
        var section = ""
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let t = String(line).trimmingWhitespace()
            if t.isEmpty { continue }
            if t.hasPrefix("[") {
                guard t.hasSuffix("]") else { throw GridError(.usage, "\(path):\(i + 1): unterminated section header") }
                section = String(t.dropFirst().dropLast()).trimmingWhitespace()
                if lines[section] == nil { lines[section] = i + 1 }
                continue
            }
            guard let eq = t.firstIndex(of: "=") else { throw GridError(.usage, "\(path):\(i + 1): expected 'key = value'") }
            let k = String(t[..<eq]).trimmingWhitespace()
            let v = String(t[t.index(after: eq)...]).trimmingWhitespace()
            guard !section.isEmpty else { throw GridError(.usage, "\(path):\(i + 1): '\(k)' is outside any [section]") }
            guard sections[section]?[k] == nil else { throw GridError(.usage, "\(path):\(i + 1): '\(k)' is set twice in [\(section)]") }
            sections[section, default: [:]][k] = v
            lines[section + "." + k] = i + 1
        }
    }

    public subscript(section: String, key: String) -> String? {
        get { sections[section]?[key] }
        set { sections[section, default: [:]][key] = newValue }
    }

    public func rendered(header: String) -> String {
        var out = header.split(separator: "\n").map { "# " + $0 }.joined(separator: "\n") + "\n"
        for s in sections.keys.sorted() {
            out += "\n[\(s)]\n"
            for k in sections[s]!.keys.sorted() { out += "\(k) = \(sections[s]![k]!)\n" }
        }
        return out
    }

    public static func load(directory: String) throws -> NodeConfig {
        let path = directory + "/grid.conf"
        guard let text = try readSecretFile(path) else {
            throw GridError(.notFound, "\(directory) is not a grid node directory (no grid.conf); create it first")
        }
        return try NodeConfig(parsing: text, path: path)
    }
}



/// The address a daemon listens on: `--listen HOST` or `--listen HOST:PORT` (IPv6 in
/// brackets), with `--port`. Listening on every interface (0.0.0.0, ::) needs a
/// `location` clients can reach: announcing 0.0.0.0 would send them nowhere.
public func listenAddress(_ listen: String, port: UInt16?, location: String?) throws -> (host: String, port: UInt16?) {
    var host = listen, p = port
    if listen.hasPrefix("[") || listen.filter({ $0 == ":" }).count == 1 {
        let (h, lp) = try splitHostPort(listen)
        if let port, port != lp { throw GridError(.usage, "--listen \(listen) and --port \(port) disagree; give the port once") }
        (host, p) = (h, lp)
    }
    guard !host.isEmpty else { throw GridError(.usage, "--listen needs a host, e.g. 127.0.0.1 or 0.0.0.0") }
    if ["0.0.0.0", "::", ""].contains(host) && location == nil {
        throw GridError(.usage, "listening on every interface (\(host)) needs --location HOST:PORT, the address clients should use")
    }
    return (host, p)
}

/// `[node] location` of a storage server: one host:port, or several separated by commas,
/// announced in this order (a client tries them in order until one answers). Each must
/// name a host and a port.
public func parseLocations(_ text: String) throws -> [String] {
    let list = text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    guard !list.isEmpty else { throw GridError(.usage, "location is empty: give host:port (several separated by commas)") }
    for a in list {
        guard let (h, p) = try? splitHostPort(a) else {
            throw GridError(.usage, "location \(a) is not host:port (several are separated by commas)")
        }
        guard !h.isEmpty, p != 0 else { throw GridError(.usage, "location \(a) needs a host and a non-zero port, e.g. 198.18.0.5:4001") }
        guard !["0.0.0.0", "::"].contains(h) else { throw GridError(.usage, "location \(a) is not an address clients can reach (it means every interface); name this host") }
    }
    return list
}

/// `[introducer] address`: one introducer address, or several separated by commas (all
/// are used; Tahoe also allows several).
public func parseIntroducers(_ text: String) throws -> [IntroducerAddress] {
    let list = try text.split(separator: ",").map { try IntroducerAddress(parsing: String($0)) }
    guard !list.isEmpty else { throw GridError(.usage, "[introducer] address is empty") }
    return list
}

/// "host:port", with an IPv6 host in brackets.
public func joinHostPort(_ host: String, _ port: UInt16) -> String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

/// "10G" (10^9), "10GiB" (2^30), "500M", "0", "1T"; plain numbers are bytes.
public func parseSize(_ s: String) throws -> UInt64 {
    let t = s.trimmingWhitespace()
    let units: [(String, UInt64)] = [
        ("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("TIB", 1 << 40),
        ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
        ("K", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000), ("B", 1),
    ]
    let up = t.uppercased()
    for (suffix, mult) in units where up.hasSuffix(suffix) {
        let num = String(up.dropLast(suffix.count)).trimmingWhitespace()
        guard let v = Double(num), v >= 0, v * Double(mult) < 1.8e19 else { throw GridError(.usage, "bad size '\(s)'") }
        return UInt64(v * Double(mult))
    }
    guard let v = UInt64(t) else { throw GridError(.usage, "bad size '\(s)' (use e.g. 10G, 500MiB or a number of bytes)") }
    return v
}

/// "31d", "12h", "30m", "45s", or plain seconds.
public func parseDuration(_ s: String) throws -> Double {
    let t = s.trimmingWhitespace().lowercased()
    let units: [(String, Double)] = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)]
    for (suffix, mult) in units where t.hasSuffix(suffix) {
        guard let v = Double(t.dropLast()), v >= 0 else { throw GridError(.usage, "bad duration '\(s)'") }
        return v * mult
    }
    guard let v = Double(t), v >= 0 else { throw GridError(.usage, "bad duration '\(s)' (use e.g. 31d, 12h, 30m or seconds)") }
    return v
}

/// A base32 secret from DIR/private/NAME (a convergence, lease, introducer or helper secret).
func readNodeSecret(_ directory: String, _ name: String) throws -> [UInt8] {
    guard let text = try readSecretFile(directory + "/private/" + name),
          let b = Base32.decode(text.trimmingWhitespace()), !b.isEmpty
    else { throw GridError(.corrupt, "\(directory)/private/\(name) is missing or not base32") }
    return b
}

/// Creates a node directory (mode 0700) and its private/ subdirectory (0700).
func createNodeDirectory(_ dir: String) throws {
    // Parents as needed (like mkdir -p), then the node directory itself, private.
    let parent = FileSystem.directoryName(dir)
    if parent != "." && parent != "/" { try FileSystem.makeDirectories(parent, permissions: 0o755) }
    for d in [dir, dir + "/private"] {
        try FileSystem.makeDirectory(d, permissions: 0o700)
        try FileDescriptor(path: d, .directory).setPermissions(0o700)
    }
    if FileSystem.exists(dir + "/grid.conf") {
        throw GridError(.conflict, "\(dir) already holds a node (grid.conf exists)")
    }
}

/// The kinds of node directory; each daemon runs only on its own kind.
public enum NodeKind: String, Sendable {
    case introducer, storage, client, helper
}

extension NodeConfig {
    /// The kind this node was created as (`[node] type`; nodes made before it existed are
    /// recognised by their sections).
    public var kind: NodeKind? {
        if let t = self["node", "type"] { return NodeKind(rawValue: t) }
        if sections["storage"] != nil { return .storage }
        if sections["client"] != nil { return .client }
        if sections["introducer"]?["expiry"] != nil { return .introducer }
        return nil
    }

    /// The sections and keys each kind of node reads; anything else is a mistake (a typo
    /// would otherwise be ignored silently and its default used).
    public static let schema: [NodeKind: [String: Set<String>]] = [
        .storage: ["node": ["type", "nickname", "listen", "location", "metrics"],
                   "storage": ["reserved_space", "lease_duration", "expire", "expire_interval", "announce_interval"],
                   "introducer": ["address"]],
        .introducer: ["node": ["type", "nickname", "listen", "location", "metrics"], "introducer": ["expiry"]],
        .client: ["node": ["type", "nickname", "metrics"], "introducer": ["address"],
                  "client": ["needed", "happy", "total", "segment_size", "helper", "one_flight_max"], "gateway": ["listen", "allow_remote"]],
        .helper: ["node": ["type", "nickname", "listen", "location", "metrics"], "introducer": ["address"],
                  "helper": ["max_encoding", "abandon_after"]],
    ]

    /// Refuses sections and keys a node of `kind` does not read, naming file and line.
    public func checkKnown(for kind: NodeKind) throws {
        let known = Self.schema[kind]!
        for (section, keys) in sections {
            guard let allowed = known[section] else {
                throw GridError(.usage, "\(path):\(lines[section] ?? 0): a \(kind) node has no [\(section)] section "
                    + "(it reads \(known.keys.sorted().map { "[\($0)]" }.joined(separator: ", ")))")
            }
            for key in keys.keys where !allowed.contains(key) {
                throw GridError(.usage, "\(path):\(lines[section + "." + key] ?? 0): [\(section)] has no key '\(key)' "
                    + "(known: \(allowed.sorted().joined(separator: ", ")))")
            }
        }
    }

    /// Loads DIR/grid.conf and checks that DIR is a node of `kind` and that every section
    /// and key is one such a node reads.
    public static func load(directory: String, expecting kind: NodeKind) throws -> NodeConfig {
        let c = try load(directory: directory)
        guard let actual = c.kind else {
            throw GridError(.usage, "\(directory)/grid.conf does not say what kind of node it is ([node] type)")
        }
        guard actual == kind else {
            throw GridError(.usage, "\(directory) is a\(actual == .introducer ? "n" : "") \(actual) node, not a\(kind == .introducer ? "n" : "") \(kind) node")
        }
        try c.checkKnown(for: kind)
        return c
    }
}

/// Exclusive use of a node directory by one process: an flock on DIR/node.lock, held
/// until the process exits, taken before anything in the directory is touched. The file
/// records the holder's pid for the message a second process gets.
public final class NodeLock: Sendable {
    let file: FileDescriptor

    /// `name` is the lock file; `busy` what a second process is told (before the pid).
    public init(directory: String, name: String = "node.lock", busy: String? = nil) throws {
        let path = directory + "/" + name
        file = try FileDescriptor(path: path, [.readWrite, .create], permissions: 0o600)
        guard try file.tryLockExclusive() else {
            let holder = (try? file.read(at: 0, count: 32)).map { String(decoding: $0, as: UTF8.self) }?
                .trimmingWhitespace() ?? ""
            let pid = holder.isEmpty ? "" : " (pid \(holder))"
            throw GridError(.conflict, busy.map { $0 + pid }
                ?? "\(directory) is already in use by a running grid process\(pid); stop it first")
        }
        try file.truncate(to: 0)
        try file.write(at: 0, Array("\(CurrentProcess.id)\n".utf8))
    }
}

