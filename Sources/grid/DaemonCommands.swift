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

struct HelperCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "helper",
        abstract: "Create or run an upload helper (clients send it ciphertext once; it encodes and places the shares).",
        discussion: """
            A client on a slow uplink sends n/k times its file's size to the storage servers \
            (3.3x at 3-of-10). With `helper = ADDRESS` in [client] of its grid.conf it sends the \
            ciphertext once to the helper instead, which erasure-codes it and pushes the shares. \
            The client keeps the key: it makes the capability itself and checks the helper's \
            answer against the ciphertext it sent. A file stored already costs nothing to send; \
            an interrupted upload resumes where the helper's copy ends; an unreachable helper \
            means a direct upload (with a note on stderr).

            Example:
              grid helper create /srv/grid/helper --introducer grid://v0-...@intro:4000/... \\
                  --listen 0.0.0.0 --port 4100 --location helper.example.org:4100
              grid helper run /srv/grid/helper
              # on each client, in [client] of grid.conf:
              #   helper = <the address create printed>

            \(ExitStatus.help)
            """,
        subcommands: [HelperCreate.self, HelperRun.self])
}

struct HelperCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create an upload helper node directory; print its address as the last line.",
        discussion: """
            The address (grid://<node id>@host:port/<secret>) goes into clients' [client] helper; \
            it pins the helper's key and holds the secret that lets a client use it. It is also \
            saved in DIR/private/helper.address.

            \(ExitStatus.help)
            """)

    @Argument(help: "The node directory to create.") var directory: String
    @Option(help: "The introducer's address (grid://...).") var introducer: String
    @Option(help: "A name for people to recognise this helper by.") var nickname: String?
    @Option(help: "Port to listen on (default: a free port chosen now).") var port: UInt16?
    @Option(help: "Interface to listen on.") var listen: String = "127.0.0.1"
    @Option(help: "host:port to put in the address, if not the listening one (e.g. a public name).") var location: String?

    func run() throws {
        try reportingErrors {
            let intro = try IntroducerAddress(parsing: introducer)
            let addr = try HelperNode.create(directory: directory, introducer: intro, nickname: nickname, host: listen,
                                             port: port, location: location)
            FileHandleStdout.write("created upload helper node in \(directory)\n\(addr)\n")
        }
    }
}

struct HelperRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run an upload helper until SIGINT or SIGTERM.",
        discussion: ExitStatus.help)
    @Argument(help: "The node directory.") var directory: String

    func run() throws {
        try reportingErrors { try HelperNode.run(directory: directory, logger: makeLogger("helper")) }
    }
}
