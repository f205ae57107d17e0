import Foundation
import GridClient
import GridCrypto
import GridDirectory
import GridFilesystem
import GridFormat
import GridHTTP
import GridImmutable
import GridMetrics
import GridMutable
import GridSystem

/// Tahoe-LAFS 1.20's web API (docs/frontends/webapi.rst: the part the stock `tahoe` CLI
/// and other frontends use) and a status page, served from one client node's
/// `GridFilesystem`. Every operation is the client library's; this file only maps HTTP
/// onto it and its results and errors back onto Tahoe's shapes and status codes.
public final class Gateway: HTTPHandler, Sendable {
    public let fs: GridFilesystem
    let metrics: MetricsRegistry?
    let started = wallClock()
    let transfers = TransferLog()
    let operations = OperationTable()
    /// The largest body read into memory (JSON children, a capability).
    static let maxSmallBody = 64 << 20
    public static let version = "grid-gateway/1"

    /// Told one line per upload and download (sizes and times; never a capability).
    let log: (@Sendable (String) -> Void)?

    public init(fs: GridFilesystem, metrics: MetricsRegistry? = nil, log: (@Sendable (String) -> Void)? = nil) {
        self.fs = fs
        self.metrics = metrics
        self.log = log
        if let metrics {
            metrics.declare("grid_gateway_uploaded_bytes_total", .counter, help: "File bytes uploaded through the gateway.")
            metrics.declare("grid_gateway_downloaded_bytes_total", .counter, help: "File bytes sent to clients by the gateway.")
            let log = transfers
            let started = self.started
            let pool = fs.pool
            metrics.collect {
                let st = pool.statuses()
                return [MetricsRegistry.Sample("grid_gateway_active_transfers", help: "Uploads and downloads in progress.", value: Double(log.activeCount)),
                        MetricsRegistry.Sample("grid_gateway_known_servers", help: "Storage servers the introducer lists.", value: Double(st.count)),
                        MetricsRegistry.Sample("grid_gateway_connected_servers", help: "Storage servers this gateway is connected to.",
                                               value: Double(st.filter(\.connected).count)),
                        MetricsRegistry.Sample("grid_gateway_introducer_connected", help: "1 when connected to an introducer.",
                                               value: pool.introducerConnected ? 1 : 0),
                        MetricsRegistry.Sample("grid_process_start_time_seconds", help: "When this process started (Unix time).", value: started)]
            }
        }
    }

    public func handle(_ req: HTTPRequest, _ resp: HTTPResponse) async {
        do {
            try await route(req, resp)
        } catch {
            await fail(error, resp)
        }
    }

    /// An error as Tahoe answers it: a status code and one line of text.
    func fail(_ error: Error, _ resp: HTTPResponse) async {
        if resp.isStarted {
            // Halfway through a body: only cutting the connection tells the client.
            resp.abort()
            return
        }
        let (status, text) = Self.describe(error)
        await resp.send(status: status, text: text)
    }

    static func describe(_ error: Error) -> (Int, String) {
        if let e = error as? HTTPParseError { return (e.status, e.message) }
        if let e = error as? WebError { return (e.status, e.message) }
        let line = "\(error)".split(separator: "\n").first.map(String.init) ?? "error"
        guard let c = error as? ClassifiedError else { return (500, line) }
        switch c.errorClass {
        case .usage, .incompatible: return (400, line)
        case .notFound: return (404, line)
        case .conflict: return (409, line)
        // Tahoe answers "too few shares" (NotEnoughSharesError, UnrecoverableFileError) with 410 Gone.
        case .unavailable, .corrupt: return (410, "NotEnoughSharesError: " + line)
        case .denied: return (403, line)
        case .noSpace, .io, .internal: return (500, line)
        }
    }

    // MARK: Routing

    func route(_ req: HTTPRequest, _ resp: HTTPResponse) async throws {
        guard req.query != nil else { throw WebError(400, "malformed query string") }
        let raw = req.head.rawPath
        guard let segments = Self.segments(raw) else { throw WebError(400, "malformed path (bad %-escape or not UTF-8)") }
        let t = req.argument("t") ?? ""
        switch segments.first {
        case nil, "":
            guard segments.count <= 1 else { throw WebError(404, "No such resource") }
            try await welcome(req, resp, t: t)
        case "status":
            try requireRead(req)
            try await statusPage(req, resp)
        case "uri":
            if segments.count == 1 || (segments.count == 2 && segments[1].isEmpty) {
                try await uriRoot(req, resp, t: t)
            } else {
                let cap = try Self.capability(segments[1])
                let names = Array(segments.dropFirst(2))
                try await node(req, resp, root: cap, rootText: segments[1], names: names, t: t)
            }
        case "operations":
            guard segments.count == 2 else { throw WebError(404, "No such operation") }
            try await operationStatus(req, resp, handle: segments[1])
        case "favicon.ico":
            await resp.send(status: 404, text: "No favicon")
        default:
            throw WebError(404, "No such resource: /\(segments[0])")
        }
    }

    func requireRead(_ req: HTTPRequest) throws {
        guard req.method == "GET" || req.method == "HEAD" else { throw WebError(405, "\(req.method) is not allowed here") }
    }

    /// The path's segments, %-decoded ("/uri/X/a/" → ["uri", "X", "a", ""]).
    static func segments(_ raw: String) -> [String]? {
        var parts = raw.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { $0 }
        if parts.count == 1 && parts[0].isEmpty { parts = [] }
        var out: [String] = []
        for p in parts {
            guard let d = URLCoding.decode(p) else { return nil }
            out.append(d)
        }
        return out
    }

    static func capability(_ text: String) throws -> AnyCapability {
        do { return try AnyCapability(parsing: text) } catch {
            throw WebError(400, "Invalid capability: \(error)")
        }
    }

    /// `/uri`: PUT uploads a file, POST makes a directory, GET ?uri= opens one.
    func uriRoot(_ req: HTTPRequest, _ resp: HTTPResponse, t: String) async throws {
        switch (req.method, t) {
        case ("PUT", ""), ("PUT", "upload"):
            let cap = try await uploadBody(req, name: "PUT /uri")
            await resp.send(status: 200, text: cap.string)
        case ("POST", "mkdir"), ("POST", "mkdir-with-children"), ("POST", "mkdir-immutable"):
            let dir = try await makeDirectory(req, t: t)
            await resp.send(status: 200, text: AnyCapability.directory(dir).string)
        case ("POST", "upload"):
            try await formUpload(req, resp)
        case ("GET", ""), ("HEAD", ""):
            guard let uri = req.argument("uri"), !uri.isEmpty else { throw WebError(400, "GET /uri needs ?uri=CAPABILITY") }
            _ = try Self.capability(uri)
            await resp.send(status: 303, contentType: "text/plain; charset=utf-8", headers: [("Location", "/uri/" + URLCoding.encode(uri))],
                            body: Array("see /uri/\(URLCoding.encode(uri))\n".utf8))
        default:
            throw WebError(400, "\(req.method) /uri?t=\(t) is not a web API operation")
        }
    }

    // MARK: Nodes

    func node(_ req: HTTPRequest, _ resp: HTTPResponse, root: AnyCapability, rootText: String, names: [String], t: String) async throws {
        let trailingSlash = names.last == ""
        let names = names.filter { !$0.isEmpty }
        let path = try GridPath(root: .capability(rootText), components: names)
        switch req.method {
        case "GET", "HEAD":
            let r = try await fs.resolve(path)
            try await get(req, resp, r, t: t, name: names.last, trailingSlash: trailingSlash)
        case "PUT":
            try await put(req, resp, root: root, path: path, t: t)
        case "POST":
            try await post(req, resp, root: root, path: path, t: t)
        case "DELETE":
            guard !names.isEmpty else { throw WebError(400, "DELETE needs a child's name: /uri/DIRCAP/NAME") }
            try await fs.unlink(path)
            await resp.send(status: 200, text: "")
        default:
            throw WebError(405, "\(req.method) is not allowed on /uri/...")
        }
    }

    func get(_ req: HTTPRequest, _ resp: HTTPResponse, _ r: GridFilesystem.Resolved, t: String, name: String?, trailingSlash: Bool) async throws {
        switch t {
        case "json":
            let info: NodeInfo
            if case let .directory(d) = r.capability, !d.isVerifyOnly {
                info = NodeInfo(directory: d, entries: try await fs.contents(of: d).entries(), metadata: nil)
            } else {
                var i = NodeInfo(r.capability, metadata: nil)
                if i.fields.size == nil, case .mutable = r.capability { i.fields.size = try? await mutableSize(r.capability) }
                info = i
            }
            let body = try JSONEncoder.tahoe.encode(info)
            await resp.send(status: 200, contentType: "application/json; charset=utf-8", body: Array(body) + [10])
        case "uri":
            await resp.send(status: 200, text: r.capability.string)
        case "readonly-uri":
            await resp.send(status: 200, text: r.capability.readString ?? r.capability.string)
        case "":
            if case let .directory(d) = r.capability {
                await resp.send(status: 200, contentType: "text/html; charset=utf-8", body: Array(try await directoryPage(d).utf8))
                return
            }
            try await download(req, resp, r.capability)
        default:
            throw WebError(400, "GET ?t=\(t) is not a web API operation")
        }
    }

    /// A mutable file's size (one read of its shares' heads).
    func mutableSize(_ cap: AnyCapability) async throws -> UInt64 {
        let sized = Locked<UInt64?>(nil)
        do {
            _ = try await fs.download(cap, to: DiscardPlaintextSink(), offset: 0, length: 0, sized: { size in
                sized.value = size
                throw SizeKnown()
            })
        } catch is SizeKnown {}
        guard let s = sized.value else { throw WebError(500, "the file's size could not be read") }
        return s
    }

    struct SizeKnown: Error {}

    /// A file's bytes, all or one `Range`, streamed as they are checked.
    func download(_ req: HTTPRequest, _ resp: HTTPResponse, _ cap: AnyCapability) async throws {
        var range = ByteRange.parse(req.head.header("range"))
        if case .suffix = range, cap.fileSize == nil {
            range = range.resolved(size: try await mutableSize(cap))
        } else if let size = cap.fileSize {
            range = range.resolved(size: size)
        }
        var offset: UInt64 = 0
        var length: UInt64?
        if case let .span(a, b) = range {
            offset = a
            length = b.map { $0 - a + 1 }
        }
        let sink = ResponseSink(resp)
        let isHead = req.method == "HEAD"
        // HEAD reads one byte: enough to know the file can be read, and its head is the GET's.
        if isHead { length = 1 }
        let transfer = transfers.begin(kind: "download", size: cap.fileSize, storageIndex: cap.storageIndex)
        do {
            _ = try await fs.download(cap, to: sink, offset: offset, length: length, sized: { size in
                transfer.setSize(size)
                var headers: [(String, String)] = [("Content-Type", "application/octet-stream"), ("X-Content-Type-Options", "nosniff"),
                                                   ("Accept-Ranges", "bytes"), ("ETag", "\"\(cap.verifier?.string ?? cap.string)\"")]
                switch range.resolved(size: size) {
                case .unsatisfiable, .suffix:
                    throw WebError(416, "range not satisfiable for a file of \(size) bytes", headers: [("Content-Range", "bytes */\(size)")])
                case let .span(a, b):
                    guard a < size else {
                        throw WebError(416, "range not satisfiable for a file of \(size) bytes", headers: [("Content-Range", "bytes */\(size)")])
                    }
                    let end = min(b ?? size - 1, size - 1)
                    headers.append(("Content-Range", "bytes \(a)-\(end)/\(size)"))
                    sink.pendingHead = (206, headers, end - a + 1)
                case .whole:
                    sink.pendingHead = (200, headers, size)
                }
                // The head goes out with the first checked bytes: a file whose shares cannot
                // be found is still answered with an error status, not a truncated 200.
            }, progress: { p in transfer.progress(p.done) })
            try sink.sendHead()  // an empty body
            transfers.end(transfer, status: "done")
            metrics?.add("grid_gateway_downloaded_bytes_total", Double(sink.written.value))
        } catch {
            transfers.end(transfer, status: "failed: \(Self.describe(error).1)")
            metrics?.add("grid_gateway_downloaded_bytes_total", Double(sink.written.value))
            if let w = error as? WebError, w.status == 416, !resp.isStarted {
                await resp.send(status: 416, headers: w.headers, body: Array((w.message + "\n").utf8))
                return
            }
            // Tahoe answers a file whose shares cannot be found or rebuilt with 410 Gone.
            if let c = error as? ClassifiedError, [.notFound, .unavailable, .corrupt].contains(c.errorClass), !resp.isStarted {
                throw WebError(410, "NoSharesError: " + Self.describe(error).1.replacingOccurrences(of: "NotEnoughSharesError: ", with: ""))
            }
            throw error
        }
    }

    // MARK: PUT

    func put(_ req: HTTPRequest, _ resp: HTTPResponse, root: AnyCapability, path: GridPath, t: String) async throws {
        let replace = try Self.replaceArgument(req)
        switch t {
        case "uri":
            guard !path.components.isEmpty else { throw WebError(400, "PUT ?t=uri needs a child's name: /uri/DIRCAP/NAME?t=uri") }
            let text = String(decoding: try await req.readWholeBody(limit: 1 << 16), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let child = AnyCapability.fromEntry(write: text, read: nil, deepImmutable: false)
            let created = try await fs.link(at: path, child, replace: replace)
            await resp.send(status: created ? 201 : 200, text: child.string)
        case "mkdir":
            let dir = try await mkdirAt(req, path: path, t: "mkdir")
            await resp.send(status: 200, text: AnyCapability.directory(dir).string)
        case "", "upload":
            if path.components.isEmpty {
                // PUT /uri/$FILECAP: a new version of a mutable file (or bytes at ?offset=).
                guard case let .mutable(m) = root else { throw WebError(400, "PUT /uri/CAP needs a mutable file's write capability (or a path below a directory)") }
                try await overwrite(m, req)
                await resp.send(status: 200, text: root.string)
                return
            }
            // An existing mutable file at the path takes a new version (Tahoe does this).
            if replace != .never, let existing = try? await fs.resolve(path), case let .mutable(m) = existing.capability, m.writekey != nil,
               req.argument("mutable") != "true" {
                try await overwrite(m, req)
                await resp.send(status: 200, text: existing.capability.string)
                return
            }
            if replace == .never, (try? await fs.resolve(path)) != nil {
                throw WebError(409, "There was already a child by that name, and you asked me to not replace it.")
            }
            let cap = try await uploadBody(req, name: path.components.last ?? "PUT")
            let created = try await fs.link(at: path, cap, replace: replace)
            await resp.send(status: created ? 201 : 200, text: cap.string)
        default:
            throw WebError(400, "PUT ?t=\(t) is not a web API operation")
        }
    }

    static func replaceArgument(_ req: HTTPRequest) throws -> GridFilesystem.Replace {
        switch req.argument("replace")?.lowercased() {
        case nil, "true", "on", "yes", "1": return .always
        case "false", "off", "no", "0": return .never
        case "only-files": return .onlyFiles
        case let v?: throw WebError(400, "replace= must be true, false or only-files, not '\(v)'")
        }
    }

    static func boolArgument(_ req: HTTPRequest, _ name: String) -> Bool {
        switch req.argument(name)?.lowercased() {
        case "true", "on", "yes", "1": return true
        default: return false
        }
    }

    /// The request body in an unlinked temporary file (convergent encryption reads a file
    /// twice, so a stream is spooled; memory stays bounded whatever the size).
    func spool(_ req: HTTPRequest, hasher: TaggedHasher? = nil, transfer: TransferLog.Transfer? = nil) async throws -> FileSource {
        let file = try FileSystem.anonymousFile(in: fs.nodeDirectory)
        var received: UInt64 = 0
        while let chunk = try await req.readBody() {
            try chunk.withUnsafeBytes { b in
                try file.write(b)
                hasher?.update(b)
            }
            received += UInt64(chunk.count)
            transfer?.progress(received, phase: "receiving")
        }
        return try FileSource(file: file, name: "the request body")
    }

    /// Uploads the body as Tahoe's `PUT /uri` does: `format=CHK|SDMF|MDMF`, `mutable=true`.
    func uploadBody(_ req: HTTPRequest, name: String) async throws -> AnyCapability {
        let format = req.argument("format")?.uppercased()
        let mutable = Self.boolArgument(req, "mutable") || format == "SDMF" || format == "MDMF"
        if let f = format, !["CHK", "SDMF", "MDMF"].contains(f) { throw WebError(400, "Unknown format: \(f) (CHK, SDMF or MDMF)") }
        if format == "CHK" && Self.boolArgument(req, "mutable") { throw WebError(400, "format=CHK is immutable; mutable=true needs SDMF or MDMF") }
        // With the length known, the convergent key is hashed as the bytes arrive: the
        // upload then makes one pass over the spooled file instead of two.
        let length = req.head.contentLength ?? 0
        let hasher = !mutable && length > UInt64(Capability.literalThreshold) ? try fs.convergenceHasher(forSize: length) : nil
        let t0 = monotonicNow()
        // Shown on the status page from its first byte, with what has arrived so far.
        let transfer = transfers.begin(kind: mutable ? "publish" : "upload", size: req.head.contentLength, storageIndex: nil)
        let source: FileSource
        do { source = try await spool(req, hasher: hasher, transfer: transfer) } catch {
            transfers.end(transfer, status: "failed: \(Self.describe(error).1)")
            throw error
        }
        transfer.setSize(source.size)
        let key = hasher.flatMap { source.size == length ? $0.finalize() : nil }
        let received = monotonicNow() - t0
        do {
            let cap: AnyCapability
            if mutable {
                let r = try await fs.createMutableFile(source, format: format == "MDMF" ? .mdmf : .sdmf, name: name)
                cap = .mutable(r.capability)
            } else {
                let r = try await fs.upload(source, name: name, convergenceKey: key, progress: { p in transfer.progress(p.done, phase: p.phase.rawValue) })
                cap = .immutable(r.capability)
            }
            transfer.storageIndex(cap.storageIndex)
            transfers.end(transfer, status: "done")
            metrics?.add("grid_gateway_uploaded_bytes_total", Double(source.size))
            log?(String(format: "%@ of %llu bytes: received in %.2f s, stored in %.2f s", mutable ? "mutable upload" : "upload",
                        source.size, received, monotonicNow() - t0 - received))
            return cap
        } catch {
            transfers.end(transfer, status: "failed: \(Self.describe(error).1)")
            throw error
        }
    }

    /// A new version of a mutable file from the body, whole or at `?offset=`.
    @discardableResult
    func overwrite(_ m: MutableCapability, _ req: HTTPRequest) async throws -> UInt64 {
        guard m.writekey != nil else { throw WebError(400, "a read-only capability cannot change the file") }
        let source = try await spool(req)
        let change: MutableFileClient.Change
        if let o = req.argument("offset") {
            guard let offset = UInt64(o) else { throw WebError(400, "offset= must be a number of bytes, not '\(o)'") }
            change = .write(offset: offset, bytes: try readWhole(source))
        } else {
            change = m.format == .mdmf ? .source(source) : .replace(try readWhole(source))
        }
        let transfer = transfers.begin(kind: "publish", size: source.size, storageIndex: m.storageIndex)
        do {
            let r = try await fs.mutableFiles.update(m, change)
            transfers.end(transfer, status: "done")
            metrics?.add("grid_gateway_uploaded_bytes_total", Double(source.size))
            return r.sequenceNumber
        } catch {
            transfers.end(transfer, status: "failed: \(Self.describe(error).1)")
            throw error
        }
    }

    // MARK: POST

    func post(_ req: HTTPRequest, _ resp: HTTPResponse, root: AnyCapability, path: GridPath, t: String) async throws {
        switch t {
        case "mkdir", "mkdir-with-children", "mkdir-immutable":
            let dir = try await mkdirAt(req, path: path, t: t)
            await resp.send(status: 200, text: AnyCapability.directory(dir).string)
        case "set_children", "set-children":
            guard case let .directory(d) = try await fs.resolve(path).capability else { throw WebError(400, "set_children needs a directory") }
            let children = try Self.children(try await req.readWholeBody(limit: Self.maxSmallBody), immutableOnly: false)
            let overwrite = req.argument("overwrite").map { $0 != "false" } ?? true
            try await fs.link(d, children.map { ($0.name, $0.capability, Optional($0.metadata)) }, replace: overwrite ? .always : .never)
            await resp.send(status: 200, text: "")
        case "check":
            try await check(req, resp, path: path)
        case "stream-manifest":
            try await streamManifest(req, resp, path: path)
        case "stream-deep-check":
            try await streamDeepCheck(req, resp, path: path)
        case "start-deep-stats", "start-manifest", "start-deep-check", "start-deep-size":
            try await startOperation(req, resp, path: path, t: t)
        case "delete", "unlink":
            guard let name = req.argument("name") else { throw WebError(400, "t=\(t) needs name=") }
            try await fs.unlink(path.appending(name))
            await resp.send(status: 200, text: "")
        case "rename", "relink":
            guard let from = req.argument("from_name"), let to = req.argument("to_name") ?? req.argument("to_dir").map({ _ in from }) else {
                throw WebError(400, "t=\(t) needs from_name= and to_name=")
            }
            try await fs.move(from: path.appending(from), to: path.appending(to), replace: try Self.replaceArgument(req))
            await resp.send(status: 200, text: "")
        case "upload":
            try await formUpload(req, resp, into: path)
        case "uri":
            guard let name = req.argument("name"), let uri = req.argument("uri") else { throw WebError(400, "t=uri needs name= and uri=") }
            let created = try await fs.link(at: path.appending(name), AnyCapability.fromEntry(write: uri, read: nil, deepImmutable: false),
                                            replace: try Self.replaceArgument(req))
            await resp.send(status: created ? 201 : 200, text: uri)
        default:
            throw WebError(400, "POST ?t=\(t) is not a web API operation")
        }
    }

    /// `POST /uri?t=mkdir…`: an unlinked directory.
    func makeDirectory(_ req: HTTPRequest, t: String) async throws -> DirectoryCapability {
        let format = try Self.directoryFormat(req)
        switch t {
        case "mkdir":
            let body = try await req.readWholeBody(limit: Self.maxSmallBody)
            let kids = body.allSatisfy({ $0 == 32 || $0 == 10 || $0 == 13 || $0 == 9 }) ? [] : try Self.children(body, immutableOnly: false)
            return try await fs.createDirectory(format: format, entries: kids)
        case "mkdir-with-children":
            return try await fs.createDirectory(format: format, entries: try Self.children(try await req.readWholeBody(limit: Self.maxSmallBody), immutableOnly: false))
        default:
            return try await fs.createImmutableDirectory(entries: try Self.children(try await req.readWholeBody(limit: Self.maxSmallBody), immutableOnly: true))
        }
    }

    /// `POST /uri/$DIRCAP/[SUBDIRS../]SUBDIR?t=mkdir` (parents made) or `…?t=mkdir&name=NAME`.
    func mkdirAt(_ req: HTTPRequest, path: GridPath, t: String) async throws -> DirectoryCapability {
        var target = path
        if let name = req.argument("name") {
            try GridFilesystem.checkName(name)
            target = path.appending(name)
        }
        guard !target.components.isEmpty else { return try await makeDirectory(req, t: t) }
        if t == "mkdir", let existing = try? await fs.resolve(target) {
            // Tahoe answers an existing directory with its cap (replace is not asked for).
            if case let .directory(d) = existing.capability, req.argument("replace") == nil || req.argument("replace") == "false" { return d }
        }
        let dir = try await makeDirectory(req, t: t)
        try await fs.link(at: target, .directory(dir), replace: try Self.replaceArgument(req))
        return dir
    }

    static func directoryFormat(_ req: HTTPRequest) throws -> MutableFormat {
        switch req.argument("format")?.uppercased() {
        case nil, "", "SDMF": return .sdmf
        case "MDMF": return .mdmf
        case let f?: throw WebError(400, "Unknown format: \(f) (a mutable directory is SDMF or MDMF)")
        }
    }

    /// Tahoe's children JSON: `{name: ["filenode"|"dirnode", {"rw_uri", "ro_uri", "metadata"}]}`.
    static func children(_ body: [UInt8], immutableOnly: Bool) throws -> [DirectoryEntry] {
        let json: JSONValue
        do { json = try JSONValue.parse(body) } catch { throw WebError(400, "the children are not JSON: \(error)") }
        guard let pairs = json.objectPairs else { throw WebError(400, "the children must be a JSON object of name → [type, {…}]") }
        var out: [DirectoryEntry] = []
        var seen = Set<String>()
        for (name, value) in pairs {
            try GridFilesystem.checkName(name)
            guard case let .array(a) = value, a.count == 2, let fields = a[1].objectPairs else {
                throw WebError(400, "child '\(name)' must be [\"filenode\" or \"dirnode\", {\"rw_uri\": …, \"ro_uri\": …}]")
            }
            let d = JSONValue.object(fields)
            let rw = d["rw_uri"]?.stringValue
            let ro = d["ro_uri"]?.stringValue
            guard rw != nil || ro != nil else { throw WebError(400, "child '\(name)' has neither rw_uri nor ro_uri") }
            let cap = AnyCapability.fromEntry(write: immutableOnly ? nil : rw, read: ro ?? (immutableOnly ? rw : nil), deepImmutable: immutableOnly)
            if immutableOnly {
                if rw != nil && ro == nil { throw WebError(400, "child '\(name)' of an immutable directory must be given by ro_uri") }
                if cap.isMutable { throw WebError(400, "child '\(name)' is mutable; an immutable directory holds only immutable children") }
            }
            let norm = Dirnode.normalize(name)
            guard seen.insert(norm).inserted else { throw WebError(400, "child '\(name)' is named twice") }
            var md = d["metadata"] ?? .object([])
            if md.objectPairs == nil { md = .object([]) }
            out.append(DirectoryEntry(name: name, capability: cap, metadata: md))
        }
        return out
    }
}

/// An error with the status it is answered with.
struct WebError: Error, CustomStringConvertible {
    let status: Int
    let message: String
    var headers: [(String, String)] = []
    init(_ status: Int, _ message: String, headers: [(String, String)] = []) {
        (self.status, self.message, self.headers) = (status, message, headers)
    }
    var description: String { message }
}

/// A `PlaintextSink` into an HTTP response (a handler thread; waits while the client is behind).
final class ResponseSink: PlaintextSink, @unchecked Sendable {
    let response: HTTPResponse
    let written = Locked<UInt64>(0)
    /// The response's status, headers and length, sent before the first bytes.
    var pendingHead: (Int, [(String, String)], UInt64)?
    init(_ r: HTTPResponse) { response = r }

    func sendHead() throws {
        guard let (status, headers, length) = pendingHead else { return }
        pendingHead = nil
        try response.startBlocking(status: status, headers: headers, contentLength: length)
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try sendHead()
        try response.writeBlocking(bytes)
        written.mutate { $0 += UInt64(bytes.count) }
    }
}

final class DiscardPlaintextSink: PlaintextSink {
    func write(_ bytes: UnsafeRawBufferPointer) throws {}
}

/// A single byte range of a `Range` header (RFC 9110 §14.1.2); anything else is the whole file.
enum ByteRange: Equatable {
    case whole
    /// First byte and last byte (inclusive; nil: to the end).
    case span(UInt64, UInt64?)
    /// The last N bytes (before the size is known).
    case suffix(UInt64)
    case unsatisfiable

    static func parse(_ header: String?) -> ByteRange {
        guard let h = header?.trimmingCharacters(in: .whitespaces), h.lowercased().hasPrefix("bytes=") else { return .whole }
        let spec = h.dropFirst(6).trimmingCharacters(in: .whitespaces)
        // Several ranges: answered with the whole file (RFC 9110 allows it).
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .whole }
        let a = spec[..<dash].trimmingCharacters(in: .whitespaces)
        let b = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        func number(_ s: String) -> UInt64? { s.isEmpty || s.count > 19 || !s.allSatisfy(\.isASCII) || !s.allSatisfy(\.isNumber) ? nil : UInt64(s) }
        if a.isEmpty {
            guard let n = number(b) else { return .whole }
            return n == 0 ? .unsatisfiable : .suffix(n)
        }
        guard let start = number(a) else { return .whole }
        if b.isEmpty { return .span(start, nil) }
        guard let end = number(b) else { return .whole }
        return end < start ? .whole : .span(start, end)
    }

    func resolved(size: UInt64) -> ByteRange {
        switch self {
        case let .suffix(n): return size == 0 ? .unsatisfiable : .span(size - min(n, size), size - 1)
        case let .span(a, _) where a >= size: return .unsatisfiable
        default: return self
        }
    }
}

extension JSONEncoder {
    static var tahoe: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
