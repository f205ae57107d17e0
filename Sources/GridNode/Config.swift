import GridFormat
import GridWire

#if canImport(Glibc)
import Glibc
#endif

/// A node's `grid.conf`: INI sections of `key = value` lines; `#` starts a comment.
public struct NodeConfig: Sendable, Equatable {
    public var sections: [String: [String: String]] = [:]

    public init() {}

    public init(parsing text: String, path: String) throws {
        var section = ""
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let t = String(line).trimmingWhitespace()
            if t.isEmpty { continue }
            if t.hasPrefix("[") {
                guard t.hasSuffix("]") else { throw NodeError("\(path):\(i + 1): unterminated section header") }
                section = String(t.dropFirst().dropLast()).trimmingWhitespace()
                continue
            }
            guard let eq = t.firstIndex(of: "=") else { throw NodeError("\(path):\(i + 1): expected 'key = value'") }
            let k = String(t[..<eq]).trimmingWhitespace()
            let v = String(t[t.index(after: eq)...]).trimmingWhitespace()
            guard !section.isEmpty else { throw NodeError("\(path):\(i + 1): '\(k)' is outside any [section]") }
            sections[section, default: [:]][k] = v
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
            throw NodeError("\(directory) is not a grid node directory (no grid.conf); create it first")
        }
        return try NodeConfig(parsing: text, path: path)
    }
}

public struct NodeError: Error, CustomStringConvertible {
    public let message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}


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
        guard let v = Double(num), v >= 0, v * Double(mult) < 1.8e19 else { throw NodeError("bad size '\(s)'") }
        return UInt64(v * Double(mult))
    }
    guard let v = UInt64(t) else { throw NodeError("bad size '\(s)' (use e.g. 10G, 500MiB or a number of bytes)") }
    return v
}

/// "31d", "12h", "30m", "45s", or plain seconds.
public func parseDuration(_ s: String) throws -> Double {
    let t = s.trimmingWhitespace().lowercased()
    let units: [(String, Double)] = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)]
    for (suffix, mult) in units where t.hasSuffix(suffix) {
        guard let v = Double(t.dropLast()), v >= 0 else { throw NodeError("bad duration '\(s)'") }
        return v * mult
    }
    guard let v = Double(t), v >= 0 else { throw NodeError("bad duration '\(s)' (use e.g. 31d, 12h, 30m or seconds)") }
    return v
}

/// Creates a node directory (mode 0700) and its private/ subdirectory (0700).
func createNodeDirectory(_ dir: String) throws {
    // Parents as needed (like mkdir -p), then the node directory itself, private.
    var parent = dir.hasPrefix("/") ? "" : "."
    for part in dir.split(separator: "/").dropLast() {
        parent += "/" + part
        if mkdir(parent, 0o755) != 0 && errno != EEXIST {
            throw NodeError("cannot create \(parent): \(String(cString: strerror(errno)))")
        }
    }
    for d in [dir, dir + "/private"] {
        if mkdir(d, 0o700) != 0 && errno != EEXIST {
            throw NodeError("cannot create \(d): \(String(cString: strerror(errno)))")
        }
        chmod(d, 0o700)
    }
    var st = stat()
    if stat(dir + "/grid.conf", &st) == 0 { throw NodeError("\(dir) already holds a node (grid.conf exists)") }
}

/// A free TCP port on `host`, chosen now (for configs written at create time).
func pickFreePort(host: String) throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr)
    let ok = withUnsafePointer(to: &addr) { bind(fd, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_in>.size)) }
    guard ok == 0 else { throw NodeError("cannot find a free port on \(host)") }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { getsockname(fd, UnsafeMutableRawPointer($0).assumingMemoryBound(to: sockaddr.self), &len) }
    return UInt16(bigEndian: addr.sin_port)
}

/// Raises the open-file limit to the hard limit, so a server can hold many connections.
public func raiseFileLimit() {
    var rl = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 && rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    }
}
