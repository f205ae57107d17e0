import Foundation
import GridFormat
import GridSystem

/// Tahoe's aliases: short names for directory capabilities, kept in
/// `NODEDIR/private/aliases`, one `NAME: CAP` per line (`#` comments and blank lines
/// ignored), plus `private/root_dir.cap`, whose capability is the alias `tahoe:`. A Tahoe
/// node's file works here as it is, and ours in Tahoe.
public struct Aliases: Sendable {
    public static let defaultAlias = "tahoe"
    public let path: String
    public let rootCapPath: String
    /// In the order of the file (the root_dir.cap alias first).
    public private(set) var entries: [(name: String, capability: String)] = []

    public init(nodeDirectory: String) throws {
        path = nodeDirectory + "/private/aliases"
        rootCapPath = nodeDirectory + "/private/root_dir.cap"
        if let bytes = try FileSystem.readFile(rootCapPath, maxSize: 1 << 16) {
            let cap = String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
            if !cap.isEmpty { entries.append((Self.defaultAlias, cap)) }
        }
        guard let bytes = try FileSystem.readFile(path, maxSize: 16 << 20) else { return }
        for (i, raw) in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw).trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw GridError(.corrupt, "\(path) line \(i + 1): no ':' (each line is NAME: CAPABILITY)")
            }
            let name = String(line[..<colon])
            let cap = String(line[line.index(after: colon)...]).trimmingWhitespace()
            // A later line for the same name wins, as in Tahoe's dict.
            entries.removeAll { $0.name == name }
            entries.append((name, cap))
        }
    }

    public subscript(name: String) -> String? { entries.last { $0.name == name }?.capability }

    /// Checks an alias name as Tahoe does (no ':' and no spaces), and that it is new.
    public func checkNew(_ name: String) throws {
        guard !name.isEmpty else { throw GridError(.usage, "an alias needs a name") }
        guard !name.contains(":") else { throw GridError(.usage, "Alias names cannot contain colons.") }
        guard !name.contains(where: { $0.isWhitespace }) else { throw GridError(.usage, "Alias names cannot contain spaces.") }
        if self[name] != nil { throw GridError(.conflict, "Alias \(name) already exists!") }
    }

    /// Appends `NAME: CAP` to the file (written whole to a temporary file, then renamed;
    /// mode 0600: a write capability is the authority to change the directory).
    public mutating func add(_ name: String, _ cap: DirectoryCapability) throws {
        try checkNew(name)
        var text = (try FileSystem.readFile(path, maxSize: 16 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        if !text.isEmpty && !text.hasSuffix("\n") { text += "\n" }
        text += "\(name): \(cap.string)\n"
        try FileSystem.writeFileAtomically(path, Array(text.utf8), permissions: 0o600)
        entries.append((name, cap.string))
    }

    /// The directory capability of an alias; a clear error when there is none.
    public func directory(_ name: String) throws -> DirectoryCapability {
        guard let text = self[name] else {
            if name == Self.defaultAlias {
                throw GridError(.notFound, "No alias specified, and the default 'tahoe' alias doesn't exist. To create it, use 'grid create-alias tahoe'.")
            }
            throw GridError(.notFound, "Unknown alias '\(name)', please create it with 'grid add-alias' or 'grid create-alias'.")
        }
        do { return try DirectoryCapability(parsing: text) } catch {
            throw GridError(.corrupt, "the alias '\(name)' in \(path) is not a directory capability: \(error)")
        }
    }
}

/// Where a command points on the grid: `ALIAS:a/b`, `URI:DIR2…/a/b` (or Tahoe's older
/// `URI:…:./a/b`), a bare capability, or a path in the default alias (`tahoe:`).
public struct GridPath: Equatable, Sendable, CustomStringConvertible {
    public enum Root: Equatable, Sendable {
        case alias(String)
        case capability(String)
    }
    public var root: Root
    /// The path's components below the root (empty: the root itself).
    public var components: [String]
    /// The path as a person would write it.
    public var text: String {
        switch root {
        case let .alias(a): return a + ":" + components.joined(separator: "/")
        case let .capability(c): return components.isEmpty ? c : c + "/" + components.joined(separator: "/")
        }
    }

    public var description: String { text }

    public init(root: Root, components: [String]) throws {
        self.root = root
        self.components = components.filter { !$0.isEmpty && $0 != "." }
        if self.components.contains("..") { throw GridError(.usage, "'..' is not allowed in a grid path") }
        if self.components.contains(where: { $0.contains("/") }) { throw GridError(.usage, "a name in a grid path cannot contain '/'") }
    }

    /// Parses a grid path (Tahoe's `get_alias`). Local paths are never grid paths here:
    /// callers decide with `isGridPath` first where both are possible.
    public init(parsing raw: String, defaultAlias: String = Aliases.defaultAlias) throws {
        let s = raw.trimmingCharacters(in: CharacterSet(charactersIn: " "))
        var rest: Substring
        if s.hasPrefix("URI:") || s.hasPrefix("ro.URI:") || s.hasPrefix("imm.URI:") {
            if let r = s.range(of: ":./") {
                root = .capability(String(s[..<r.lowerBound]))
                rest = s[r.upperBound...]
            } else if let slash = s.firstIndex(of: "/") {
                root = .capability(String(s[..<slash]))
                rest = s[s.index(after: slash)...]
            } else {
                root = .capability(s)
                rest = ""
            }
        } else if let colon = s.firstIndex(of: ":"), !s[..<colon].contains("/") {
            root = .alias(String(s[..<colon]))
            rest = s[s.index(after: colon)...]
        } else {
            root = .alias(defaultAlias)
            rest = Substring(s)
        }
        components = rest.split(separator: "/").map(String.init).filter { $0 != "." }
        if components.contains("..") { throw GridError(.usage, "'..' is not allowed in a grid path: \(raw)") }
    }

    /// Whether `s` names a place on the grid rather than a local file: a capability, or
    /// `ALIAS:` with an alias that exists (as Tahoe's cp decides).
    public static func isGridPath(_ s: String, aliases: Aliases) -> Bool {
        if s.hasPrefix("URI:") || s.hasPrefix("ro.URI:") || s.hasPrefix("imm.URI:") { return true }
        guard let colon = s.firstIndex(of: ":"), !s[..<colon].contains("/") else { return false }
        return aliases[String(s[..<colon])] != nil
    }

    /// The path one level up, and the last name (nil at the root).
    public var parent: (path: GridPath, name: String)? {
        guard let last = components.last else { return nil }
        var p = self
        p.components.removeLast()
        return (p, last)
    }

    public func appending(_ name: String) -> GridPath {
        var p = self
        p.components.append(name)
        return p
    }
}
