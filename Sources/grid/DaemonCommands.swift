import ArgumentParser
import GridNode
import GridProtocol
import Logging
import GridSystem

func makeLogger(_ label: String) -> Logger {
    LoggingBootstrap.once
    var l = Logger(label: label)
    l.logLevel = .info
    return l
}

enum LoggingBootstrap {
    static let once: Void = LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
}

struct IntroducerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "introducer",
        abstract: "Create or run an introducer node (it tells clients which storage servers exist).",
        discussion: ExitStatus.help,
        subcommands: [IntroducerCreate.self, IntroducerRun.self])
}

struct IntroducerCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create an introducer node directory; print its address as the last line.",
        discussion: """
            The address (grid://<node id>@host:port/<secret>) is what storage servers and \
            clients are given: the node id pins the introducer's key and the secret grants \
            the right to announce and subscribe. Keep it as private as the grid. It is also \
            saved in DIR/private/introducer.address.

            \(ExitStatus.help)
            """)

    @Argument(help: "The node directory to create.") var directory: String
    @Option(help: "Port to listen on (default: a free port chosen now).") var port: UInt16?
    @Option(help: "Interface to listen on.") var listen: String = "127.0.0.1"
    @Option(help: "host:port to put in the address, if not the listening one (e.g. a public name).") var location: String?

    func run() throws {
        try reportingErrors {
            let addr = try IntroducerNode.create(directory: directory, host: listen, port: port, location: location)
            FileHandleStdout.write("created introducer node in \(directory)\n\(addr)\n")
        }
    }
}

struct IntroducerRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run an introducer until SIGINT or SIGTERM.",
        discussion: ExitStatus.help)
    @Argument(help: "The node directory.") var directory: String

    func run() throws {
        try reportingErrors { try IntroducerNode.run(directory: directory, logger: makeLogger("introducer")) }
    }
}

struct StorageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Create or run a storage server node.",
        discussion: ExitStatus.help,
        subcommands: [StorageCreate.self, StorageRun.self, StorageReindex.self])
}

struct StorageCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a storage server node directory.",
        discussion: """
            Settings live in DIR/grid.conf (mode 0600); the node key in DIR/private/node.key (0600).

            Example: grid storage create /srv/grid/storage1 --introducer grid://v0-...@intro.example:4000/... \
            --reserved-space 10G --nickname rack1-disk3

            \(ExitStatus.help)
            """)

    @Argument(help: "The node directory to create.") var directory: String
    @Option(help: "The introducer's address (grid://...).") var introducer: String
    @Option(help: "A name for people to recognise this server by.") var nickname: String?
    @Option(help: "Port to listen on (default: a free port chosen now).") var port: UInt16?
    @Option(help: "Interface to listen on.") var listen: String = "127.0.0.1"
    @Option(help: "host:port announced to clients, if not the listening one; several separated by commas are tried in order (e.g. 198.18.0.5:4001,s1.example.org:4001).") var location: String?
    @Option(name: .customLong("reserved-space"), help: "Disk space to leave free, e.g. 10G (10^9 bytes) or 10GiB.") var reservedSpace: String = "1G"

    func run() throws {
        try reportingErrors {
            let addr = try IntroducerAddress(parsing: introducer)
            let id = try StorageNode.create(directory: directory, introducer: addr, nickname: nickname, host: listen,
                                            port: port, location: location, reservedSpace: reservedSpace)
            FileHandleStdout.write("created storage node \(id) in \(directory)\n")
        }
    }
}

struct StorageReindex: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reindex",
        abstract: "Rebuild a stopped storage server's lease index from its share files.",
        discussion: """
            Shares copied into storage/shares/ by hand (from another server, or a Tahoe \
            storage directory served as-is) are read from disk at once, but their leases count \
            for expiry and space only once indexed: run this with the server stopped, then \
            start it. (A server whose index file is missing builds it at start.)

            \(ExitStatus.help)
            """)
    @Argument(help: "The node directory.") var directory: String

    func run() throws {
        try reportingErrors {
            let n = try StorageNode.reindex(directory: directory)
            FileHandleStdout.write("indexed \(n) share\(n == 1 ? "" : "s") in \(directory)\n")
        }
    }
}

struct StorageRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a storage server until SIGINT or SIGTERM (then it shuts down cleanly).",
        discussion: ExitStatus.help)
    @Argument(help: "The node directory.") var directory: String

    func run() throws {
        try reportingErrors { try StorageNode.run(directory: directory, logger: makeLogger("storage")) }
    }
}
