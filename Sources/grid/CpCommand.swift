import ArgumentParser
import Foundation
import GridClient
import GridDirectory
import GridFilesystem
import GridFormat
import GridNode
import GridSystem

struct Cp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp",
        abstract: "Copy files and directories between the local disk and the grid (and within the grid).",
        discussion: """
            Tahoe's rules: an argument that starts with an alias that exists (ALIAS:...) or a \
            capability is on the grid; anything else is local. Directories need -r. The last \
            argument is the target: a file when one file is copied to a name that is not a \
            directory, else a directory (made when missing). A named source directory is \
            copied as a directory of that name inside the target; a bare directory capability \
            copies its contents into the target. Copying into an existing grid directory \
            merges: names there are replaced, subdirectories entered, other children kept.

            Files are uploaded (immutable) and downloaded a few at a time; each grid directory \
            is written once with all its new children. Between grid places nothing is copied: \
            files are linked by capability.

            Examples:
              grid cp notes.txt home:
              grid cp -r ~/Pictures home:backup        # makes home:backup/Pictures
              grid cp -r home:backup/Pictures ./restored

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Flag(name: .shortAndLong, help: "Copy directories recursively.") var recursive = false
    @Option(help: "Format of new grid directories: sdmf or mdmf.") var format = "sdmf"
    @Flag(name: .shortAndLong, help: "Say what was copied.") var verbose = false
    @Argument(help: "Sources, then the target.") var paths: [String]
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON summary.") var json = false

    enum Source: Sendable {
        case localFile(String)
        case localDirectory(String)
        case gridFile(AnyCapability, name: String?)
        case gridDirectory(DirectoryCapability, name: String?)

        var name: String? {
            switch self {
            case let .localFile(p), let .localDirectory(p): return p.trimmingSlashesAtEnd().split(separator: "/").last.map(String.init)
            case let .gridFile(_, n), let .gridDirectory(_, n): return n
            }
        }
        var isDirectory: Bool {
            switch self {
            case .localDirectory, .gridDirectory: return true
            default: return false
            }
        }
    }

    func run() throws {
        try reportingErrors {
            guard paths.count >= 2 else { throw GridError(.usage, "cp needs at least two arguments: FROM... TO") }
            let f = try parseFormat(format)
            let dir = ClientNode.resolveDirectory(nodeDir)
            _ = try ClientNode.load(directory: dir)
            let aliases = try Aliases(nodeDirectory: dir)
            let specs = Array(paths.dropLast())
            let targetSpec = paths.last!
            let (recursive, verbose, json) = (self.recursive, self.verbose, self.json)
            let showProgress = FileDescriptor.standardError.isTerminal && !json
            let stats = try withFilesystem(nodeDir) { fs -> GridFilesystem.CopyStats in
                var total = GridFilesystem.CopyStats.empty
                func note(_ s: String) { if verbose { FileHandleStderr.write(s + "\n") } }
                let progress: @Sendable (GridFilesystem.CopyStats) -> Void = { s in
                    if showProgress { FileHandleStderr.write("\r\u{1B}[K\(s.files) files, \(s.directories) directories, \(humanBytes(s.bytes))") }
                }
                var sources: [Source] = []
                for s in specs {
                    if GridPath.isGridPath(s, aliases: aliases) {
                        let p = try GridPath(parsing: s)
                        let r = try await fs.resolve(p)
                        if s.hasSuffix("/") && !r.capability.isDirectory { throw GridError(.usage, "\(s) is a file, but ends with a slash") }
                        if case let .directory(d) = r.capability { sources.append(.gridDirectory(d, name: r.name)) }
                        else { sources.append(.gridFile(r.capability, name: r.name)) }
                    } else {
                        guard let st = try FileSystem.status(s) else { throw GridError(.notFound, "\(s): no such file or directory") }
                        if st.kind == .directory { sources.append(.localDirectory(s)) }
                        else if st.kind == .regular { sources.append(.localFile(s)) }
                        else { throw GridError(.usage, "\(s) is neither a regular file nor a directory") }
                    }
                }
                if sources.contains(where: \.isDirectory) && !recursive { throw GridError(.usage, "cannot copy directories without --recursive (-r)") }
                let targetOnGrid = GridPath.isGridPath(targetSpec, aliases: aliases)
                // What the target is now: a directory, a file, or nothing yet.
                var targetIsDirectory: Bool?
                var gridTarget: GridPath?
                if targetOnGrid {
                    let p = try GridPath(parsing: targetSpec)
                    gridTarget = p
                    if let r = try? await fs.resolve(p) { targetIsDirectory = r.capability.isDirectory }
                } else {
                    targetIsDirectory = try FileSystem.status(targetSpec).map { $0.kind == .directory }
                }
                let targetIsFile = targetIsDirectory.map { !$0 } ?? (sources.count == 1 && !sources[0].isDirectory)
                if targetIsFile {
                    if targetSpec.hasSuffix("/") { throw GridError(.usage, "target is not a directory, but ends with a slash") }
                    guard sources.count == 1 else { throw GridError(.usage, "copying multiple things requires the target be a directory") }
                    guard !sources[0].isDirectory else { throw GridError(.usage, "cannot copy a directory into a file") }
                    switch (sources[0], gridTarget) {
                    case let (.localFile(path), p?):
                        let (cap, size) = try await fs.uploadLocalFile(path)
                        try await fs.link(at: p, cap)
                        total.files = 1; total.bytes = size
                        note("\(path) -> \(p.text)")
                    case let (.gridFile(cap, _), p?):
                        try await fs.link(at: p, cap)
                        total.files = 1
                    case let (.gridFile(cap, _), nil):
                        total.bytes = try await fs.downloadToFile(cap, path: targetSpec)
                        total.files = 1
                    case (.localFile, nil): throw GridError(.usage, "both are local; use cp(1)")
                    default: break
                    }
                    return total
                }
                // The target is a directory.
                func add(_ s: GridFilesystem.CopyStats) {
                    total.files += s.files; total.directories += s.directories; total.bytes += s.bytes; total.skipped += s.skipped
                }
                if let p = gridTarget {
                    let target = try await fs.ensureDirectory(p, format: f)
                    let contents = try await fs.contents(of: target)
                    var links: [(name: String, capability: AnyCapability, metadata: JSONValue?)] = []
                    for s in sources {
                        switch s {
                        case let .localFile(path):
                            let (cap, size) = try await fs.uploadLocalFile(path)
                            links.append((s.name!, cap, nil))
                            total.files += 1; total.bytes += size
                            note("\(path) -> \(p.appending(s.name!).text)")
                        case let .localDirectory(path):
                            let existing: DirectoryCapability?
                            if let e = try contents.entry(named: s.name!), case let .directory(d) = e.capability, !d.isReadOnly { existing = d } else { existing = nil }
                            let (cap, st) = try await fs.copyIn(path, into: existing, format: f, progress: progress)
                            add(st)
                            if existing == nil { links.append((s.name!, .directory(cap), nil)) }
                            note("\(path)/ -> \(p.appending(s.name!).text)/")
                        case let .gridFile(cap, name):
                            guard let name else { throw GridError(.usage, "a bare file capability has no name to copy it under; give the target file name") }
                            links.append((name, cap, nil))
                            total.files += 1
                        case let .gridDirectory(d, name):
                            let copy = try await fs.copyWithin(d, format: f)
                            if let name { links.append((name, .directory(copy), nil)) }
                            else {
                                // Unnamed: its contents go into the target.
                                for e in try await fs.contents(of: copy).entries() { links.append((e.name, e.capability, e.metadata.removing("tahoe"))) }
                            }
                            total.directories += 1
                        }
                    }
                    if !links.isEmpty { try await fs.link(target, links) }
                    return total
                }
                // Local target directory.
                try FileSystem.makeDirectories(targetSpec, permissions: 0o755)
                for s in sources {
                    switch s {
                    case let .gridFile(cap, name):
                        guard let name else { throw GridError(.usage, "a bare file capability has no name; give the target file name") }
                        total.bytes += try await fs.downloadToFile(cap, path: targetSpec + "/" + name)
                        total.files += 1
                    case let .gridDirectory(d, name):
                        add(try await fs.copyOut(d, to: name.map { targetSpec + "/" + $0 } ?? targetSpec, progress: progress))
                    case .localFile, .localDirectory: throw GridError(.usage, "both are local; use cp(1)")
                    }
                }
                return total
            }
            if showProgress { FileHandleStderr.write("\r\u{1B}[K") }
            // Every new grid directory took a key from the pool.
            if stats.directories > 0 { refillKeyPoolInBackground(dir) }
            if json { try printJSON(stats) }
            else if verbose || !stats.skipped.isEmpty {
                FileHandleStderr.write("copied \(stats.files) files (\(humanBytes(stats.bytes))), \(stats.directories) directories\n")
                for s in stats.skipped { FileHandleStderr.write("skipped (not a file or directory): \(s)\n") }
            }
        }
    }
}
