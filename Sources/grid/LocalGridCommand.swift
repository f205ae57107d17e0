import ArgumentParser
import GridClient
import GridLocalGrid
import GridSystem

struct LocalGridCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "local-grid",
        abstract: "A persistent local grid for development: an introducer and N storage servers on 127.0.0.1.",
        discussion: """
            Unlike `grid demo`, the daemons keep running after the command returns, until \
            `grid local-grid stop`. Node directories (configs, keys, shares, daemon.log, \
            daemon.pid) live under --dir, with a client node in DIR/client.

            Example:
              grid local-grid start --servers 5
              export GRID_NODE_DIR=$PWD/local-grid/client
              grid upload photo.jpg
              grid local-grid stop

            \(ExitStatus.help)
            """,
        subcommands: [LocalGridStart.self, LocalGridStop.self, LocalGridStatus.self])
}

struct LocalGridDirectory: ParsableArguments {
    @Option(help: "Where the grid's node directories live.") var dir: String = "local-grid"
}

struct LocalGridStart: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Create the grid's nodes (the first time) and start every daemon that is not running.",
        discussion: ExitStatus.help)
    @OptionGroup var location: LocalGridDirectory
    @Option(help: "Storage servers (the first start decides; later starts start what exists).") var servers: Int = 10
    @Option(name: .customLong("reserved-space"), help: "Space each storage server keeps free.") var reservedSpace: String = "1G"

    func run() throws {
        try reportingErrors {
            guard (1...100).contains(servers) else { throw GridError(.usage, "--servers must be 1 to 100") }
            let root = location.dir
            let running = try LocalGrid.detachedDaemons(root: root).filter { $0.pid != nil }
            if !running.isEmpty {
                throw GridError(.conflict, "the local grid in \(root) is already running (\(running.map(\.name).joined(separator: ", "))); "
                    + "stop it first with `grid local-grid stop --dir \(root)`")
            }
            let existing = try LocalGrid.detachedDaemons(root: root).filter { $0.name.hasPrefix("storage") }.count
            var options = LocalGrid.Options(servers: existing > 0 ? existing : servers,
                                            encoding: ClientEncoding(happy: min(7, existing > 0 ? existing : servers)))
            options.reservedSpace = reservedSpace
            let grid = try LocalGrid(root: root, executable: FileSystem.currentExecutable(), options: options)
            try grid.detach()
            let client = root.hasPrefix("/") ? grid.clientDirectory : FileSystem.currentDirectory + "/" + grid.clientDirectory
            FileHandleStdout.write("""
                local grid running in \(root): introducer + \(grid.servers.count) storage servers
                  export GRID_NODE_DIR=\(client)
                  grid upload FILE; grid download CAP -o FILE
                  grid local-grid stop --dir \(root)

                """)
        }
    }
}

/// `stop` and `status`: one option (--dir) and one action on the grid there.
protocol LocalGridAction: ParsableCommand {
    static var name: String { get }
    static var summary: String { get }
    var location: LocalGridDirectory { get }
    func act(on root: String) throws
}

extension LocalGridAction {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: name, abstract: summary, discussion: ExitStatus.help)
    }
    func run() throws { try reportingErrors { try act(on: location.dir) } }
}

struct LocalGridStop: LocalGridAction {
    static let name = "stop", summary = "Stop every daemon of the local grid."
    @OptionGroup var location: LocalGridDirectory

    func act(on root: String) throws {
        let stopped = try LocalGrid.stopDetached(root: root)
        FileHandleStdout.write("stopped \(stopped.count) daemon\(stopped.count == 1 ? "" : "s") of the local grid in \(root)\n")
    }
}

struct LocalGridStatus: LocalGridAction {
    static let name = "status", summary = "Say which daemons of the local grid are running."
    @OptionGroup var location: LocalGridDirectory

    func act(on root: String) throws {
        let daemons = try LocalGrid.detachedDaemons(root: root)
        if daemons.isEmpty { throw GridError(.notFound, "no local grid in \(root); start one with `grid local-grid start`") }
        for d in daemons { FileHandleStdout.write("\(d.name): " + (d.pid.map { "running (pid \($0))" } ?? "stopped") + "\n") }
    }
}
