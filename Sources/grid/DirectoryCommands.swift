import ArgumentParser
import Foundation
import GridClient
import GridDirectory
import GridFilesystem
import GridFormat
import GridImmutable
import GridNode
import GridSystem

/// The one encoder of JSON results (Codable types; keys sorted so output is stable).
func printJSON<T: Encodable>(_ value: T, pretty: Bool = false) throws {
    if !pretty { FileHandleStdout.write(try jsonText(value) + "\n"); return }
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    FileHandleStdout.write(String(decoding: try e.encode(value), as: UTF8.self) + "\n")
}

/// Runs `body` with the client library open on the node, then closes its connections.
func withFilesystem<T: Sendable>(_ nodeDir: String?, _ body: @escaping @Sendable (GridFilesystem) async throws -> T) throws -> T {
    let fs = try GridFilesystem(nodeDirectory: nodeDir, coding: try codingOptionsFromEnvironment())
    defer { fs.shutdown() }
    return try blockingAwait { try await body(fs) }
}

let pathHelp = """
    Paths on the grid: ALIAS:a/b (an alias from `grid list-aliases`), URI:DIR2:.../a/b (a \
    directory capability and a path below it), or a/b in the default alias 'tahoe:'. Aliases \
    live in NODEDIR/private/aliases, in Tahoe's format.
    """

func parseFormat(_ s: String) throws -> MutableFormat {
    guard let f = MutableFormat(rawValue: s.lowercased()) else { throw GridError(.usage, "--format must be sdmf or mdmf, not '\(s)'") }
    return f
}

// MARK: Aliases

struct CreateAlias: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-alias",
        abstract: "Make a new directory and give it an alias.",
        discussion: """
            Example: grid create-alias home    (then: grid cp notes.txt home:)

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "The alias (no ':' or spaces; a trailing ':' is dropped).") var alias: String
    @Option(help: "The directory's format: sdmf (Tahoe's default) or mdmf.") var format = "sdmf"
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let name = alias.hasSuffix(":") ? String(alias.dropLast()) : alias
            let f = try parseFormat(format)
            let (nodeDir, json) = (self.nodeDir, self.json)
            try withFilesystem(nodeDir) { fs in
                var aliases = try fs.aliases()
                try aliases.checkNew(name)
                let cap = try await fs.createDirectory(format: f)
                try aliases.add(name, cap)
                if json { try printJSON(AliasInfo(name: name, cap)) } else { FileHandleStdout.write("Alias '\(name)' created\n") }
            }
            refillKeyPoolInBackground(ClientNode.resolveDirectory(nodeDir))
        }
    }
}

struct AliasInfo: Codable, Sendable {
    var alias: String
    var readwrite: String?
    var readonly: String?
    init(name: String, _ cap: DirectoryCapability) {
        alias = name
        readwrite = cap.isReadOnly ? nil : cap.string
        readonly = cap.readOnly?.string
    }
}

struct AddAlias: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-alias",
        abstract: "Give an existing directory capability an alias.",
        discussion: """
            Example: grid add-alias shared URI:DIR2-RO:...

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "The alias.") var alias: String
    @Argument(help: "A directory capability (URI:DIR2...).") var capability: String
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let name = alias.hasSuffix(":") ? String(alias.dropLast()) : alias
            let dir = ClientNode.resolveDirectory(nodeDir)
            _ = try ClientNode.load(directory: dir)
            guard case let .directory(cap) = try AnyCapability(parsing: capability) else {
                throw GridError(.usage, "an alias names a directory; '\(capability.prefix(20))…' is not a directory capability (URI:DIR2...)")
            }
            var aliases = try Aliases(nodeDirectory: dir)
            try aliases.add(name, cap)
            if json { try printJSON(AliasInfo(name: name, cap)) } else { FileHandleStdout.write("Alias '\(name)' added\n") }
        }
    }
}

struct ListAliases: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list-aliases",
        abstract: "List the aliases and their directory capabilities.",
        discussion: """
            --json prints Tahoe's shape: {ALIAS: {"readwrite": CAP, "readonly": CAP}}.

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(name: .customLong("readonly-uri"), help: "Show read-only capabilities.") var readonly = false
    @Flag(help: "Print a JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let dir = ClientNode.resolveDirectory(nodeDir)
            _ = try ClientNode.load(directory: dir)
            let aliases = try Aliases(nodeDirectory: dir)
            var out: [String: AliasInfo] = [:]
            for (name, _) in aliases.entries { out[name] = AliasInfo(name: name, try aliases.directory(name)) }
            if json {
                try printJSON(out.mapValues { ["readwrite": $0.readwrite ?? $0.readonly ?? "", "readonly": $0.readonly ?? ""] }, pretty: true)
                return
            }
            let width = out.keys.map(\.count).max() ?? 0
            for name in out.keys.sorted() {
                let a = out[name]!
                let cap = readonly ? (a.readonly ?? "") : (a.readwrite ?? a.readonly ?? "")
                FileHandleStdout.write(String(repeating: " ", count: width - name.count) + "\(name): \(cap)\n")
            }
        }
    }
}

// MARK: ls, mkdir, ln, mv, rm

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List a directory (or describe a file).",
        discussion: """
            -l shows type and access (d/-/? then r, w, x), size and link time, as Tahoe's ls \
            does. --json prints Tahoe's ?t=json shape: ["dirnode", {"rw_uri", "ro_uri", \
            "verify_uri", "mutable", "children": {NAME: ["filenode"|"dirnode"|"unknown", \
            {"ro_uri", "rw_uri", "verify_uri", "mutable", "format", "size", "metadata"}]}}].

            Examples:
              grid ls home:
              grid ls -l --uri home:photos

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "The path (default: tahoe:).") var path: String = ""
    @Flag(name: [.short, .customLong("long")], help: "Long listing.") var long = false
    @Flag(name: .customLong("uri"), help: "Show each child's capability.") var uri = false
    @Flag(name: .customLong("readonly-uri"), help: "Show each child's read-only capability.") var readonlyURI = false
    @Flag(name: [.customShort("F"), .customLong("classify")], help: "Append / to directories, * to mutable files, ? to unknown ones.") var classify = false
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print Tahoe's JSON description.") var json = false

    func run() throws {
        try reportingErrors {
            let p = try GridPath(parsing: path)
            let info = try withFilesystem(nodeDir) { fs -> NodeInfo in
                let r = try await fs.resolve(p, listing: true)
                if case let .directory(d) = r.capability {
                    return NodeInfo(directory: d, entries: try await fs.contents(of: r).entries(), metadata: nil)
                }
                return NodeInfo(r.capability, metadata: r.metadata ?? .object([]))
            }
            if json { try printJSON(info, pretty: true); return }
            let children = info.fields.children ?? [p.components.last ?? p.text: info]
            var rows: [[String]] = []
            for name in children.keys.sorted() {
                let c = children[name]!
                let f = c.fields
                let md = f.metadata
                let ctime = md?["tahoe"]?["linkcrtime"]?.doubleValue ?? md?["ctime"]?.doubleValue
                let (t0, size, mark): (String, String, String)
                switch c.kind {
                case .dirnode: (t0, size, mark) = ("d", "-", "/")
                case .filenode: (t0, size, mark) = ("-", f.size.map(String.init) ?? "?", f.rw_uri != nil ? "*" : "")
                case .unknown: (t0, size, mark) = ("?", "?", "?")
                }
                var row: [String] = []
                if long {
                    row.append(t0 + (f.ro_uri != nil ? "r" : "-") + (f.rw_uri != nil ? "w" : "-") + (c.kind == .dirnode ? "x" : "-"))
                    row.append(size)
                    row.append(ctime.map(lsTime) ?? "-")
                }
                row.append(name + (classify ? mark : ""))
                if uri { row.append(f.rw_uri ?? f.ro_uri ?? "") }
                if readonlyURI { row.append(f.ro_uri ?? "-") }
                rows.append(row)
            }
            // Columns as tight as the widest cell; capabilities and names left-aligned.
            let cols = rows.map(\.count).max() ?? 0
            var widths = [Int](repeating: 0, count: cols)
            var left = [Bool](repeating: false, count: cols)
            for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count); if c.hasPrefix("URI") { left[i] = true } } }
            let nameCol = long ? 3 : 0
            if cols > nameCol { left[nameCol] = true }
            for r in rows {
                let cells = r.enumerated().map { i, c in
                    let pad = String(repeating: " ", count: widths[i] - c.count)
                    return left[i] ? c + pad : pad + c
                }
                FileHandleStdout.write(cells.joined(separator: " ").trimmingTrailingSpaces() + "\n")
            }
        }
    }

    func lsTime(_ t: Double) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = wallClock() - t > 6 * 30 * 24 * 3600 ? "MMM dd  yyyy" : "MMM dd HH:mm"
        return f.string(from: Date(timeIntervalSince1970: t))
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}

struct Mkdir: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mkdir",
        abstract: "Make a directory (at PATH, with any missing parents; or unlinked) and print its capability.",
        discussion: """
            Examples:
              grid mkdir home:photos/2026
              grid mkdir --format mdmf       # an unlinked directory; keep the printed capability

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "Where to make it (omit for an unlinked directory).") var path: String?
    @Option(help: "sdmf (Tahoe's default) or mdmf.") var format = "sdmf"
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print Tahoe's JSON description of the new directory.") var json = false

    func run() throws {
        try reportingErrors {
            let f = try parseFormat(format)
            let p = try path.map { try GridPath(parsing: $0) }
            let cap = try withFilesystem(nodeDir) { fs in try await fs.mkdir(p, format: f) }
            refillKeyPoolInBackground(ClientNode.resolveDirectory(nodeDir))
            if json { try printJSON(NodeInfo(.directory(cap)), pretty: true) } else { FileHandleStdout.write(cap.string + "\n") }
        }
    }
}

struct Ln: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ln",
        abstract: "Link what FROM names (a path or a capability) at TO as well.",
        discussion: """
            Nothing is copied: TO names the same file or directory. An existing TO is \
            replaced; when TO is a directory, the link goes inside it under FROM's name.

            Examples:
              grid ln home:report.pdf shared:report.pdf
              grid ln URI:CHK:... home:imported.bin

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "What to link.") var from: String
    @Argument(help: "Where to link it.") var to: String
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let (from, to, json) = (self.from, self.to, self.json)
            try withFilesystem(nodeDir) { fs in
                let src = try await fs.resolve(try GridPath(parsing: from))
                let (dest, created) = try await fs.link(at: try GridPath(parsing: to), src.capability, orInsideAs: src.name)
                if json { try printJSON(LinkResult(path: dest.text, capability: src.capability.string, created: created)) }
                else { FileHandleStdout.write("\(dest.text) \(created ? "linked" : "replaced")\n") }
            }
        }
    }
}

struct LinkResult: Codable, Sendable {
    var path: String
    var capability: String
    var created: Bool
}

struct Mv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mv",
        abstract: "Rename or move a link.",
        discussion: """
            Within one directory this is one write (atomic); between directories the new \
            link is made first, then the old one removed, so the file is never unlinked. \
            When TO is an existing directory the link goes inside it.

            Example: grid mv home:draft.txt home:archive/final.txt

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "The link to move.") var from: String
    @Argument(help: "Its new place.") var to: String
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?

    func run() throws {
        try reportingErrors {
            let (from, to) = (try GridPath(parsing: self.from), try GridPath(parsing: self.to))
            try withFilesystem(nodeDir) { fs in try await fs.move(from: from, to: to) }
        }
    }
}

struct Rm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove names from their directories (Tahoe's unlink).",
        discussion: """
            Only the link goes: the file or directory stays on the grid for anyone who has \
            its capability (until its leases expire).

            Example: grid rm home:old.log

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """,
        aliases: ["unlink"])
    @Argument(help: "The paths to remove.") var paths: [String]
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?

    func run() throws {
        try reportingErrors {
            let ps = try paths.map { try GridPath(parsing: $0) }
            try withFilesystem(nodeDir) { fs in for p in ps { try await fs.unlink(p) } }
        }
    }
}
