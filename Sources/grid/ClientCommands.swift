import ArgumentParser
import Dispatch
import Foundation
import GridClient
import GridFilesystem
import GridFormat
import GridImmutable
import GridNode
import GridProtocol
import GridWire
import GridSystem
import Synchronization


/// Runs async work from a synchronous command: the work runs on the concurrency pool and
/// this thread waits.
func blockingAwait<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let sem = DispatchSemaphore(value: 0)
    let box = AsyncResultBox<T>()
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        sem.signal()
    }
    sem.wait()
    return try box.result!.get()
}

final class AsyncResultBox<T>: @unchecked Sendable { var result: Result<T, Error>? }

let nodeDirHelp = """
    The client node is found with --node-dir DIR, else $GRID_NODE_DIR, else ~/.grid/client \
    (first match wins). Create one with `grid client create`. GRID_SIMD=portable|ssse3|avx2|gfni \
    forces a Reed-Solomon kernel (default: the fastest this CPU has).
    """

struct ClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Create a client node (the settings and secrets `grid upload` and `grid download` use).",
        discussion: ExitStatus.help,
        subcommands: [ClientCreate.self, ClientFillKeyPool.self])
}

struct ClientFillKeyPool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fill-key-pool",
        abstract: "Generate RSA keys ahead of time for new mutable files.",
        discussion: """
            A new mutable file needs its own RSA-2048 key, and making one takes 0.1-0.5 s. The \
            client keeps a few ready in DIR/private/key-pool/ (mode 0600, each used once), so \
            `grid upload --mutable` need not wait; it starts this command in the background \
            when the pool runs low, and `grid client create` fills it first. Run it by hand to \
            prepare for many new mutable files at once (--size).

            Example: grid client fill-key-pool --size 20

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)

    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Option(help: "How many keys to keep ready.") var size: Int = KeyPool.defaultSize
    @Flag(name: .shortAndLong, help: "Print nothing.") var quiet = false

    func run() throws {
        try reportingErrors {
            let dir = ClientNode.resolveDirectory(nodeDir)
            _ = try ClientNode.load(directory: dir)
            guard size >= 0, size <= 10_000 else { throw GridError(.usage, "--size must be 0...10000") }
            let pool = KeyPool(directory: ClientNode.keyPoolPath(directory: dir))
            let made = try pool.fill(to: size)
            if !quiet { FileHandleStdout.write("made \(made) key(s); \(pool.count) ready in \(pool.directory)\n") }
        }
    }
}

/// Starts `grid client fill-key-pool` for `directory` in the background (detached, output
/// discarded) when its pool has fewer than the default number of keys.
func refillKeyPoolInBackground(_ directory: String) {
    guard KeyPool(directory: ClientNode.keyPoolPath(directory: directory)).count < KeyPool.defaultSize else { return }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: FileSystem.currentExecutable())
    p.arguments = ["client", "fill-key-pool", "--quiet", "--node-dir", directory]
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try? p.run()
}

struct ClientCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a client node directory.",
        discussion: """
            Writes DIR/grid.conf (introducer address and encoding, mode 0600), DIR/private/node.key, \
            DIR/private/convergence (the convergence secret: files uploaded with the same secret \
            and encoding get the same capability) and DIR/private/lease.secret, all mode 0600.

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)

    @Argument(help: "The node directory to create (default: $GRID_NODE_DIR, else ~/.grid/client).") var directory: String?
    @Option(help: "The introducer's address (grid://...).") var introducer: String
    @Option(help: "Shares needed to rebuild a file (k).") var needed: Int = 3
    @Option(help: "Distinct servers an upload must reach (servers of happiness).") var happy: Int = 7
    @Option(help: "Shares made of each file (n).") var total: Int = 10
    @Option(name: .customLong("segment-size"), help: "Largest segment in bytes (Tahoe's default, 1 MiB).") var segmentSize: Int = 1 << 20
    @Option(help: "A name for this client.") var nickname: String?
    @Option(help: "An upload helper's address (grid://..., from `grid helper create`): uploads send it ciphertext once.") var helper: String?

    func run() throws {
        try reportingErrors {
            let dir = ClientNode.resolveDirectory(directory)
            let addr = try IntroducerAddress(parsing: introducer)
            let helperAddress = try helper.map { try IntroducerAddress(parsing: $0) }
            try ClientNode.create(directory: dir, introducer: addr,
                                  encoding: ClientEncoding(needed: needed, happy: happy, total: total, maxSegmentSize: segmentSize),
                                  nickname: nickname, helper: helperAddress)
            FileHandleStdout.write("created client node in \(dir) (\(needed)-of-\(total), happy \(happy))\n")
            refillKeyPoolInBackground(dir)
        }
    }
}

/// A progress line on stderr (bytes, rate, ETA), redrawn at most 10 times a second, only
/// when stderr is a terminal.
final class ProgressBar: @unchecked Sendable {
    let enabled: Bool
    let lock = NSLock()
    var last = 0.0
    var phaseStart: [String: Double] = [:]
    var drawn = false

    init(enabled: Bool = FileDescriptor.standardError.isTerminal) { self.enabled = enabled }

    func update(_ p: TransferProgress) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        let now = wallClock()
        let start = phaseStart[p.phase.rawValue] ?? now
        if phaseStart[p.phase.rawValue] == nil { phaseStart[p.phase.rawValue] = now }
        guard now - last >= 0.1 || p.done == p.total else { return }
        last = now
        let elapsed = max(now - start, 1e-6)
        let rate = Double(p.done) / elapsed
        let frac = p.total == 0 ? 1 : Double(p.done) / Double(p.total)
        let width = 24
        let filled = Int(frac * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let eta = rate > 0 ? Double(p.total - p.done) / rate : 0
        let line = String(format: "%-11@ [%@] %3.0f%% %@ / %@  %@/s  ETA %@",
                          p.phase.rawValue as NSString, bar as NSString, frac * 100,
                          humanBytes(p.done) as NSString, humanBytes(p.total) as NSString,
                          humanBytes(UInt64(rate)) as NSString, humanSeconds(eta) as NSString)
        FileHandleStderr.write("\r\u{1B}[K" + line)
        drawn = true
    }

    func finish() {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        if drawn { FileHandleStderr.write("\r\u{1B}[K") }
    }
}

func humanBytes(_ b: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(b)
    var i = 0
    while v >= 1024 && i < units.count - 1 {
        v /= 1024
        i += 1
    }
    return i == 0 ? "\(b) B" : String(format: "%.1f %@", v, units[i] as NSString)
}

func humanSeconds(_ s: Double) -> String {
    if !s.isFinite { return "?" }
    let t = Int(s.rounded())
    return t >= 3600 ? "\(t / 3600)h\(t / 60 % 60)m" : t >= 60 ? "\(t / 60)m\(t % 60)s" : "\(t)s"
}

/// Codable results as one line of JSON (the encoder `printJSON` uses).
func jsonText<T: Encodable>(_ value: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try e.encode(value), as: UTF8.self)
}

func jsonString(_ object: Any) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}

/// What `grid upload` reads: a regular file in place; stdin (`-`), a pipe, a FIFO, a
/// process substitution or a character device read to its end and spooled (their size is
/// not known in advance, so fstat's is never trusted for them); a directory refused.
func uploadSource(_ path: String) throws -> FileSource {
    if path == "-" { return try spool(.standardInput) }
    let f = try FileDescriptor(path: path)
    switch try f.status().kind {
    case .regular: return try FileSource(file: f, name: path)
    case .directory: throw GridError(.usage, "\(path) is a directory; upload files one at a time")
    default: return try spool(f)
    }
}

/// Copies a stream (stdin, a pipe) into an unlinked temporary file: convergent encryption
/// needs two passes over the plaintext, so a stream must be spooled; memory stays bounded.
func spool(_ input: FileDescriptor) throws -> FileSource {
    let file = try FileSystem.anonymousFile()
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    defer { buf.deallocate() }
    while true {
        let r = try input.read(into: buf)
        if r == 0 { break }
        try file.write(UnsafeRawBufferPointer(rebasing: buf[0..<r]))
    }
    return try FileSource(file: file, name: input.path)
}

struct Upload: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upload",
        abstract: "Upload a file (or stdin) to the grid; print its capability as the last line.",
        discussion: """
            Files of 55 bytes or less become URI:LIT: capabilities (the data is in the \
            capability; nothing is stored). Others are encrypted with a convergent key, \
            erasure-coded into `total` shares and placed on at least `happy` distinct servers; \
            uploading the same file again with the same node finds the shares already there.

            A progress bar is drawn on stderr when it is a terminal. --json prints one JSON \
            object instead: cap, size, storage_index, happiness, shares (share -> server ids), \
            servers (id -> nickname), shares_already_present, bytes_sent, one_flight (the shares \
            went with the census: a small new file) and timings in seconds.

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)

    @Argument(help: "The file to upload, or - for stdin.") var file: String
    @Argument(help: "Where to link it on the grid (ALIAS:path or DIRCAP/path; missing directories are made). Optional.") var destination: String?
    @Flag(help: "Make a mutable file (its write capability is printed; `grid update` replaces its contents).") var mutable = false
    @Option(help: "Mutable file format: mdmf (segmented, the default) or sdmf (one segment, Tahoe's older default).") var format: String = "mdmf"
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON result instead of the bare capability.") var json = false

    func run() throws {
        try reportingErrors {
            let source = try uploadSource(file)
            let dest = try destination.map { try GridPath(parsing: $0) }
            let (file, json) = (self.file, self.json)
            if mutable {
                let f = try parseFormat(format)
                let box = UncheckedBox(source)
                let r = try withFilesystem(nodeDir) { fs in
                    let r = try await fs.createMutableFile(box.value, format: f, name: file)
                    if let dest { try await linkUploaded(fs, .mutable(r.capability), at: dest) }
                    return r
                }
                refillKeyPoolInBackground(ClientNode.resolveDirectory(nodeDir))
                try writeMutableResult(r, json: json, path: dest?.text)
                return
            }
            let bar = ProgressBar()
            let box = UncheckedBox(source)
            let r = try withFilesystem(nodeDir) { fs in
                let r = try await fs.upload(box.value, name: file) { bar.update($0) }
                if let dest { try await linkUploaded(fs, .immutable(r.capability), at: dest) }
                return r
            }
            bar.finish()
            if let note = r.helperProblem { FileHandleStderr.write("note: \(note)\n") }
            if json {
                try printJSON(Reports.Upload(r, path: dest?.text))
            } else {
                FileHandleStdout.write(r.capability.description + "\n")
            }
        }
    }
}

/// Links what was just uploaded; when that fails the capability is in the error (and in
/// the catalog), so the upload is not lost.
func linkUploaded(_ fs: GridFilesystem, _ cap: AnyCapability, at dest: GridPath) async throws {
    do { try await fs.link(at: dest, cap) } catch {
        throw GridError(error.errorClass, "uploaded as \(cap.string) (recorded in the catalog), but not linked at \(dest.text): \(error)")
    }
}

struct Download: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "Download a file from the grid by its capability.",
        discussion: """
            Writes the file to stdout, or to FILE with -o (written under a temporary name and \
            renamed when complete and verified, so a failed download leaves no partial FILE). \
            --offset/--length fetch a byte range, reading only the segments it spans.

            Every block is checked against the file's hash trees; a bad block or a dead server \
            makes the download switch to another share, and corrupt shares are reported to \
            the servers that hold them.

            --json prints a JSON object (size, bytes, shares used, bad shares, seconds) to \
            stdout, or to stderr when the file itself goes to stdout.

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)

    @Argument(help: "The capability (URI:CHK:..., URI:LIT:..., a mutable file's URI:MDMF:..., URI:SSK:... and their -RO forms), or a path: ALIAS:a/b, URI:DIR2:.../a/b.") var capability: String
    @Option(name: .shortAndLong, help: "Write the file here instead of stdout.") var output: String?
    @Option(help: "First byte to fetch.") var offset: UInt64 = 0
    @Option(help: "Number of bytes to fetch (default: to the end).") var length: UInt64?
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON result.") var json = false

    func run() throws {
        try reportingErrors {
            let path = try GridPath(parsing: capability)
            let bar = ProgressBar()
            let (off, len) = (offset, length)
            let r: GridFilesystem.Downloaded
            do {
                r = try withOutputSink(output) { sink in
                    let box = UncheckedBox(sink)
                    return try withFilesystem(nodeDir) { fs in
                        let cap = try await fs.resolve(path).capability
                        return try await fs.download(cap, to: box.value, offset: off, length: len, progress: { bar.update($0) })
                    }
                }
            } catch {
                bar.finish()
                throw error
            }
            bar.finish()
            guard json else { return }
            let text = try jsonText(Reports.Download(r)) + "\n"
            if output == nil || output == "-" { FileHandleStderr.write(text) } else { FileHandleStdout.write(text) }
        }
    }
}

/// Runs `body` with where a download goes: stdout (no `output`, or `-`), or a file written
/// under a temporary name, synced and renamed into place when `body` succeeds and removed
/// when it fails (so a failed download leaves no partial file). A directory is refused
/// before anything is fetched.
func withOutputSink<T>(_ output: String?, _ body: (FileDescriptorSink) throws -> T) throws -> T {
    guard let output, output != "-" else { return try body(FileDescriptorSink(.standardOutput)) }
    if try FileSystem.status(output)?.kind == .directory {
        throw GridError(.usage, "\(output) is a directory; give a file name to write, e.g. -o \(output)/NAME")
    }
    let temp = output + ".grid-partial-\(CurrentProcess.id)"
    let sink = try FileDescriptorSink(path: temp)
    do {
        let r = try body(sink)
        try sink.sync()
        try FileSystem.rename(temp, to: output)
        return r
    } catch {
        try? FileSystem.remove(temp)
        throw error
    }
}

func writeMutableResult(_ r: MutableFileClient.WriteResult, json: Bool, path: String? = nil) throws {
    if json { try printJSON(Reports.MutableWrite(r, path: path)) } else { FileHandleStdout.write(r.capability.string + "\n") }
}

struct Update: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract: "Write a new version of a mutable file: replace its contents, or write bytes at an offset.",
        discussion: """
            Reads the file's newest version (checking it), makes the new contents, and writes \
            them as the next version, on each server only if it still holds the version read. \
            When another writer got there first, the change is made again on top of the \
            winner's version (read, change, write; up to --retries times, with a random, \
            growing pause), so neither writer's change is lost; if the conflict persists the \
            command says so (exit 75) and the winner's version stays intact.

            Without --offset the file's contents are replaced by FILE. With --offset N, FILE's \
            bytes replace the file's bytes from N on, and the rest of the file stays (past the \
            end: the file grows; a gap is filled with zeros).

            Needs the write capability (URI:MDMF:... or URI:SSK:...); a read-only one is \
            refused (exit 77).

            Examples:
              grid update URI:MDMF:... notes.txt
              echo 'appended' | grid update --offset 4096 URI:MDMF:... -

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)

    @Argument(help: "The mutable file's write capability, or its path (ALIAS:notes).") var capability: String
    @Argument(help: "The new contents, or - for stdin.") var file: String
    @Option(help: "Write FILE's bytes from this offset of the file instead of replacing it.") var offset: UInt64?
    @Option(help: "How many times to make the change again after another writer's conflicting write.") var retries: Int = 5
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON result.") var json = false

    func run() throws {
        try reportingErrors {
            guard retries >= 0 else { throw GridError(.usage, "--retries must be 0 or more") }
            let path = try GridPath(parsing: capability)
            let box = UncheckedBox(try uploadSource(file))
            let (offset, retries) = (self.offset, self.retries)
            let r = try withFilesystem(nodeDir) { fs in
                guard case let .mutable(cap) = try await fs.resolve(path).capability else {
                    throw GridError(.usage, "\(path.text) is not a mutable file; only mutable files (URI:MDMF..., URI:SSK...) take new versions")
                }
                let source = box.value
                // A new whole version of an MDMF file streams from the file; the rest is read first.
                let change: MutableFileClient.Change = try offset.map { .write(offset: $0, bytes: try readWhole(source)) }
                    ?? (cap.format == .mdmf ? .source(source) : .replace(try readWhole(source)))
                return try await fs.mutableFiles.update(cap, change, retries: retries)
            }
            if json { try writeMutableResult(r, json: true) } else {
                let again = r.retries == 0 ? "" : " (after \(r.retries) conflict\(r.retries == 1 ? "" : "s") with another writer)"
                FileHandleStdout.write("version \(r.sequenceNumber) written\(again)\n")
            }
        }
    }
}

struct Caps: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caps",
        abstract: "Print the weaker capabilities a capability gives (read-only and verify).",
        discussion: """
            A mutable file's write capability gives its read-only and verify capabilities; a \
            read-only one gives the verify one; an immutable file's read capability gives its \
            verify capability. Nothing is fetched. --json prints one JSON object.

            Example: grid caps URI:MDMF:...

            \(ExitStatus.help)
            """)

    @Argument(help: "A capability.") var capability: String
    @Flag(help: "Print a JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let r = Reports.Caps(try AnyCapability(parsing: capability))
            if json { try printJSON(r) } else {
                for (k, v) in r.lines { FileHandleStdout.write("\(k): \(v)\n") }
            }
        }
    }
}
