import ArgumentParser
import Foundation
import GridClient
import GridFilesystem
import GridFormat
import GridNode
import GridSystem

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List what this client has stored (its catalog).",
        discussion: """
            Every `grid upload` records the capability, size, name and time in the client's \
            catalog (NODEDIR/catalog.sqlite); `grid catalog add` brings in capabilities from \
            elsewhere. --json prints one JSON array.

            \(ExitStatus.help)
            """)
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON array.") var json = false

    func run() throws {
        try reportingErrors {
            let dir = ClientNode.resolveDirectory(nodeDir)
            _ = try ClientNode.load(directory: dir)  // a client node, or a clear error
            let entries = try Catalog(path: ClientNode.catalogPath(directory: dir)).entries()
            if json {
                try printJSON(entries.map(Reports.CatalogEntry.init))
            } else {
                for e in entries {
                    let when = Date(timeIntervalSince1970: Double(e.added)).formatted(.iso8601)
                    FileHandleStdout.write("\(when)  \(humanBytes(e.size).padding(toLength: 10, withPad: " ", startingAt: 0))  \(e.name)\n  \(e.capability)\n")
                }
            }
        }
    }
}

struct CatalogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalog", abstract: "Manage this client's catalog of stored files.",
        discussion: ExitStatus.help, subcommands: [CatalogAdd.self])
}

struct CatalogAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add capabilities (from the command line or a manifest file) to the catalog.",
        discussion: """
            A manifest has one capability per line; blank lines and lines starting with # are \
            skipped. Every capability is checked for form before any is added.

            Example: grid catalog add --manifest caps.txt

            \(ExitStatus.help)
            """)
    @Argument(help: "Capabilities.") var capabilities: [String] = []
    @Option(help: "A file of capabilities, one per line.") var manifest: String?
    @Option(help: "The name to record with them.") var name: String = "added"
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?

    func run() throws {
        try reportingErrors {
            let dir = ClientNode.resolveDirectory(nodeDir)
            _ = try ClientNode.load(directory: dir)
            var texts = capabilities
            if let manifest { texts += try readManifest(manifest) }
            guard !texts.isEmpty else { throw GridError(.usage, "give capabilities or --manifest FILE") }
            let caps = try texts.map { try AnyCapability(parsing: $0) }
            let catalog = try Catalog(path: ClientNode.catalogPath(directory: dir))
            try catalog.add(caps.map { ($0, $0.fileSize ?? 0, name) })
            FileHandleStdout.write("added \(caps.count) capabilit\(caps.count == 1 ? "y" : "ies") to the catalog\n")
        }
    }
}

/// The capabilities in a manifest file: one per line; blank lines and # comments skipped.
func readManifest(_ path: String) throws -> [String] {
    guard let bytes = try FileSystem.readFile(path, maxSize: 256 << 20) else {
        throw GridError(.notFound, "no manifest file \(path)")
    }
    // One capability per line, or Tahoe's manifest lines (`CAP PATH`: the capability first).
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        .map { String($0.split(separator: " ", maxSplits: 1).first ?? "") }
}
