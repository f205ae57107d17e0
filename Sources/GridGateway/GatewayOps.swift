import Foundation
import GridClient
import GridDirectory
import GridFilesystem
import GridFormat
import GridHTTP
import GridImmutable
import GridSystem

// Checking, manifests, deep checks and long operations, in Tahoe's JSON shapes.
extension Gateway {
    /// Tahoe's `json_check_results`.
    static func checkJSON(_ r: CheckResult?) -> JSONValue {
        guard let r, !r.storageIndex.isEmpty else {
            return .object([("storage-index", .string("")), ("results", .object([("healthy", .bool(true))]))])
        }
        let good = r.shares.count
        let healthy = r.verdict == .healthy
        let recoverable = r.verdict != .unrecoverable
        let summary: String
        switch r.verdict {
        case .healthy: summary = "Healthy"
        case .degraded: summary = "Not Healthy: \(good) shares (enc \(r.needed)-of-\(r.total))"
        case .unrecoverable: summary = "Not Recoverable: \(good) shares (enc \(r.needed)-of-\(r.total))"
        }
        var sharemap: [(String, JSONValue)] = []
        for (share, servers) in r.shares.sorted(by: { $0.key < $1.key }) {
            sharemap.append(("\(share)", .array(servers.sorted().map(JSONValue.string))))
        }
        let hosts = Set(r.shares.values.flatMap { $0 })
        let si = Base32.encode(r.storageIndex)
        let responding = Set(r.shares.values.flatMap { $0 } + r.corrupt.map(\.server))
        let results: JSONValue = .object([
            ("count-happiness", .int(r.happiness)),
            ("count-shares-good", .int(good)),
            ("count-shares-needed", .int(r.needed)),
            ("count-shares-expected", .int(r.total)),
            ("count-good-share-hosts", .int(hosts.count)),
            ("count-corrupt-shares", .int(r.corrupt.count)),
            ("list-corrupt-shares", .array(r.corrupt.map { .array([.string($0.server), .string(si), .int($0.share)]) })),
            ("servers-responding", .array(responding.sorted().map(JSONValue.string))),
            ("sharemap", .object(sharemap)),
            ("count-wrong-shares", .int(r.staleShares)),
            ("count-recoverable-versions", .int(recoverable ? 1 : 0)),
            ("count-unrecoverable-versions", .int(recoverable ? 0 : (good > 0 ? 1 : 0))),
            ("healthy", .bool(healthy)),
            ("recoverable", .bool(recoverable)),
        ])
        return .object([("storage-index", .string(si)), ("summary", .string(summary)), ("results", results)])
    }

    /// Tahoe's `json_check_and_repair_results`.
    static func repairJSON(before: CheckResult?, after: CheckResult?, attempted: Bool) -> JSONValue {
        guard let before, !before.storageIndex.isEmpty else {
            return .object([("storage-index", .string("")), ("repair-attempted", .bool(false))])
        }
        let post = after ?? before
        return .object([
            ("storage-index", .string(Base32.encode(before.storageIndex))),
            ("repair-attempted", .bool(attempted)),
            ("repair-successful", .bool(attempted && post.verdict == .healthy)),
            ("pre-repair-results", checkJSON(before)),
            ("post-repair-results", checkJSON(post)),
        ])
    }

    /// Checks one object (and repairs it when asked and needed). LIT files and literal
    /// directories have nothing to check (nil).
    func checkOne(_ cap: AnyCapability, verify: Bool, repair: Bool, addLease: Bool) async throws -> (CheckResult?, CheckResult?, Bool) {
        if cap.storageIndex == nil { return (nil, nil, false) }
        let before = try await fs.check(cap, verify: verify, addLease: addLease)
        guard repair, before.verdict != .healthy else { return (before, nil, false) }
        do {
            let r = try await fs.repair(cap, verify: verify)
            return (before, r.after, true)
        } catch {
            return (before, before, true)
        }
    }

    func check(_ req: HTTPRequest, _ resp: HTTPResponse, path: GridPath) async throws {
        let cap = try await fs.resolve(path).capability
        let verify = Self.boolArgument(req, "verify"), repair = Self.boolArgument(req, "repair"), addLease = Self.boolArgument(req, "add-lease")
        let (before, after, attempted) = try await checkOne(cap, verify: verify, repair: repair, addLease: addLease)
        let json = repair ? Self.repairJSON(before: before, after: after, attempted: attempted) : Self.checkJSON(before)
        if req.argument("output")?.lowercased() == "json" {
            await resp.send(status: 200, contentType: "application/json; charset=utf-8", body: Array((json.pythonText + "\n").utf8))
        } else {
            let summary = json["summary"]?.stringValue ?? (repair ? (attempted ? "repair attempted" : "healthy") : "Healthy (LIT)")
            await resp.send(status: 200, contentType: "text/html; charset=utf-8",
                            body: Array(Page.wrap(title: "Check results", body: "<p>\(HTML.escape(summary))</p><pre>\(HTML.escape(json.pythonText))</pre>").utf8))
        }
    }

    /// One manifest line's fields (Tahoe's `ManifestStreamer`).
    static func manifestFields(_ r: GridFilesystem.Reached) -> [(String, JSONValue)] {
        let cap = r.capability
        let type = cap.isDirectory ? "directory" : "file"
        return [
            ("type", .string(type)),
            ("path", .array(r.path.map(JSONValue.string))),
            ("cap", .string(cap.writeString ?? cap.readString ?? cap.string)),
            ("verifycap", cap.verifier.map { .string($0.string) } ?? .null),
            ("repaircap", .string(cap.writeString ?? cap.readString ?? cap.string)),
            ("storage-index", .string(cap.storageIndex.map(Base32.encode) ?? "")),
        ]
    }

    func streamManifest(_ req: HTTPRequest, _ resp: HTTPResponse, path: GridPath) async throws {
        let root = try await fs.resolve(path).capability
        try await resp.start(status: 200, headers: [("Content-Type", "text/plain; charset=utf-8")], contentLength: nil)
        let out = LineWriter(resp)
        let stats = Locked(GridFilesystem.DeepStats())
        do {
            try await fs.walk(root, visit: { r in
                stats.mutate { $0.add(r) }
                if r.capability.isUnknown { return }
                try await out.line(JSONValue.object(Self.manifestFields(r)).pythonText)
            }, failed: { p, e in out.error("ERROR: cannot read directory \(p.joined(separator: "/")): \(e)") })
            try await out.flushErrors()
            try await out.line(JSONValue.object([("type", .string("stats")), ("stats", try Self.json(stats.value))]).pythonText)
        } catch {
            try? await out.line("ERROR: \(Self.describe(error).1)")
        }
    }

    func streamDeepCheck(_ req: HTTPRequest, _ resp: HTTPResponse, path: GridPath) async throws {
        let root = try await fs.resolve(path).capability
        let verify = Self.boolArgument(req, "verify"), repair = Self.boolArgument(req, "repair"), addLease = Self.boolArgument(req, "add-lease")
        try await resp.start(status: 200, headers: [("Content-Type", "text/plain; charset=utf-8")], contentLength: nil)
        let out = LineWriter(resp)
        let stats = Locked(GridFilesystem.DeepStats())
        let found = Locked<[GridFilesystem.Reached]>([])
        do {
            try await fs.walk(root, visit: { r in
                stats.mutate { $0.add(r) }
                if !r.capability.isUnknown { found.mutate { $0.append(r) } }
            }, failed: { p, e in out.error("ERROR: cannot read directory \(p.joined(separator: "/")): \(e)") })
            try await out.flushErrors()
            try await concurrently(found.value, limit: GridFilesystem.traversalParallelism, { (r: GridFilesystem.Reached) in
                var fields = Self.manifestFields(r)
                do {
                    let (before, after, attempted) = try await self.checkOne(r.capability, verify: verify, repair: repair, addLease: addLease)
                    if repair {
                        fields.append(("check-and-repair-results", Self.repairJSON(before: before, after: after, attempted: attempted)))
                    } else {
                        fields.append(("check-results", Self.checkJSON(before)))
                    }
                } catch {
                    // An object that cannot even be asked about is unhealthy, not the end of the walk.
                    let failed: JSONValue = .object([("storage-index", .string(r.capability.storageIndex.map(Base32.encode) ?? "")),
                                                     ("summary", .string("Not Recoverable: \(Self.describe(error).1)")),
                                                     ("results", .object([("healthy", .bool(false)), ("recoverable", .bool(false)),
                                                                          ("list-corrupt-shares", .array([]))]))])
                    if repair {
                        fields.append(("check-and-repair-results", .object([("storage-index", failed["storage-index"]!), ("repair-attempted", .bool(false)),
                                                                            ("repair-successful", .bool(false)), ("pre-repair-results", failed),
                                                                            ("post-repair-results", failed)])))
                    } else {
                        fields.append(("check-results", failed))
                    }
                }
                try await out.line(JSONValue.object(fields).pythonText)
            })
            try await out.line(JSONValue.object([("type", .string("stats")), ("stats", try Self.json(stats.value))]).pythonText)
        } catch {
            try? await out.line("ERROR: \(Self.describe(error).1)")
        }
    }

    static func json<T: Encodable>(_ v: T) throws -> JSONValue {
        try JSONValue.parse(Array(try JSONEncoder.tahoe.encode(v)))
    }

    // MARK: Operations (ophandles)

    func startOperation(_ req: HTTPRequest, _ resp: HTTPResponse, path: GridPath, t: String) async throws {
        guard let handle = req.argument("ophandle"), !handle.isEmpty, handle.count <= 200 else {
            throw WebError(400, "t=\(t) needs ophandle=NAME (a name you choose, to ask /operations/NAME later)")
        }
        let root = try await fs.resolve(path).capability
        let verify = Self.boolArgument(req, "verify"), repair = Self.boolArgument(req, "repair"), addLease = Self.boolArgument(req, "add-lease")
        guard operations.start(handle) else { throw WebError(400, "there is already an operation with ophandle=\(handle)") }
        Task {
            let result: JSONValue
            do {
                switch t {
                case "start-deep-stats", "start-deep-size":
                    let stats = try await fs.deepStats(root)
                    if t == "start-deep-size" {
                        result = .object([("size", .int(Int(stats.sizeImmutableFiles + stats.sizeLiteralFiles + stats.sizeDirectories)))])
                    } else {
                        result = try Self.json(stats)
                    }
                case "start-manifest":
                    let items = Locked<[GridFilesystem.Reached]>([])
                    let stats = Locked(GridFilesystem.DeepStats())
                    try await fs.walk(root) { r in
                        stats.mutate { $0.add(r) }
                        items.mutate { $0.append(r) }
                    }
                    let list = items.value
                    result = .object([
                        ("manifest", .array(list.map { r in .array([.string(r.path.joined(separator: "/")), .string(r.capability.string)]) })),
                        ("verifycaps", .array(list.compactMap { $0.capability.verifier.map { .string($0.string) } })),
                        ("storage-index", .array(list.compactMap { $0.capability.storageIndex.map { .string(Base32.encode($0)) } })),
                        ("stats", try Self.json(stats.value)),
                    ])
                default:
                    let report = try await fs.deepCheck(root, verify: verify, repair: repair, addLease: addLease)
                    result = try Self.json(report)
                }
                operations.finish(handle, result.setting("finished", .bool(true)))
            } catch {
                operations.finish(handle, .object([("finished", .bool(true)), ("error", .string(Self.describe(error).1))]))
            }
        }
        let target = "/operations/\(URLCoding.encode(handle))?t=status"
        await resp.send(status: 302, contentType: "text/plain; charset=utf-8", headers: [("Location", target)], body: Array("started: \(target)\n".utf8))
    }

    func operationStatus(_ req: HTTPRequest, _ resp: HTTPResponse, handle: String) async throws {
        guard let state = operations.status(handle) else { throw WebError(404, "No such operation: \(handle) (unknown, or released)") }
        let body = state.finished ? state.result : .object([("finished", .bool(false))])
        if state.finished && Self.boolArgument(req, "release-after-complete") { operations.release(handle) }
        await resp.send(status: 200, contentType: "application/json; charset=utf-8", body: Array((body.pythonText + "\n").utf8))
    }
}

/// Writes lines to a streamed response from concurrent tasks, one whole line at a time.
final class LineWriter: @unchecked Sendable {
    let response: HTTPResponse
    let lock = AsyncLock()
    let pendingErrors = Locked<[String]>([])
    init(_ r: HTTPResponse) { response = r }

    func line(_ text: String) async throws {
        try await lock.withLock { try await response.write(Array((text + "\n").utf8)) }
    }

    func error(_ text: String) { pendingErrors.mutate { $0.append(text) } }

    func flushErrors() async throws {
        let errs = pendingErrors.value
        pendingErrors.value = []
        for e in errs { try await line(e) }
    }
}

/// A lock held across suspension points (one writer of a response at a time).
actor AsyncLock {
    var held = false
    var waiters: [CheckedContinuation<Void, Never>] = []

    func withLock<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        while held { await withCheckedContinuation { waiters.append($0) } }
        held = true
        defer {
            held = false
            if !waiters.isEmpty { waiters.removeFirst().resume() }
        }
        return try await body()
    }
}

/// Long operations started with an ophandle and read at /operations/HANDLE.
final class OperationTable: Sendable {
    struct State: Sendable {
        var finished: Bool
        var result: JSONValue
        var started: Double
    }
    let table = Locked<[String: State]>([:])
    static let maxOperations = 1000

    func start(_ handle: String) -> Bool {
        table.mutate { t in
            guard t[handle] == nil else { return false }
            if t.count >= Self.maxOperations, let oldest = t.filter({ $0.value.finished }).min(by: { $0.value.started < $1.value.started }) {
                t[oldest.key] = nil
            }
            t[handle] = State(finished: false, result: .null, started: wallClock())
            return true
        }
    }

    func finish(_ handle: String, _ result: JSONValue) {
        table.mutate { $0[handle]?.finished = true; $0[handle]?.result = result }
    }

    func status(_ handle: String) -> State? { table.value[handle] }
    func release(_ handle: String) { table.mutate { $0[handle] = nil } }
}

/// Uploads and downloads in progress and recently ended, for the status page.
final class TransferLog: Sendable {
    final class Transfer: Sendable {
        let id: Int
        let kind: String
        let started = wallClock()
        let state: Locked<(size: UInt64?, done: UInt64, phase: String, status: String, si: [UInt8]?, ended: Double?)>
        init(id: Int, kind: String, size: UInt64?, si: [UInt8]?) {
            self.id = id
            self.kind = kind
            state = Locked((size, 0, "", "in progress", si, nil))
        }
        func progress(_ done: UInt64, phase: String = "") { state.mutate { $0.done = done; if !phase.isEmpty { $0.phase = phase } } }
        func setSize(_ n: UInt64) { state.mutate { $0.size = n } }
        func storageIndex(_ si: [UInt8]?) { state.mutate { $0.si = si } }
    }

    let active = Locked<[Int: Transfer]>([:])
    let recent = Locked<[Transfer]>([])
    let nextID = Locked(1)
    static let keepRecent = 50

    var activeCount: Int { active.value.count }

    func begin(kind: String, size: UInt64?, storageIndex: [UInt8]?) -> Transfer {
        let id = nextID.mutate { n -> Int in n += 1; return n - 1 }
        let t = Transfer(id: id, kind: kind, size: size, si: storageIndex)
        active.mutate { $0[id] = t }
        return t
    }

    func end(_ t: Transfer, status: String) {
        t.state.mutate {
            $0.status = status
            $0.ended = wallClock()
            $0.phase = ""
            if status == "done", let s = $0.size { $0.done = s }
        }
        active.mutate { $0[t.id] = nil }
        recent.mutate { r in
            r.insert(t, at: 0)
            if r.count > Self.keepRecent { r.removeLast(r.count - Self.keepRecent) }
        }
    }

    /// Tahoe's `marshal_json` shape.
    static func json(_ t: Transfer) -> JSONValue {
        let s = t.state.value
        var fields: [(String, JSONValue)] = [
            ("storage-index-string", s.si.map { .string(Base32.encode($0)) } ?? .null),
            ("total-size", s.size.map { .int(Int($0)) } ?? .null),
            ("status", .string(s.status)),
            ("type", .string(t.kind)),
        ]
        let fraction = s.size.map { $0 == 0 ? 1.0 : Double(s.done) / Double($0) } ?? 0
        if t.kind == "upload" {
            let hashing = s.phase == "hashing" || s.phase == "receiving"
            fields += [("progress-hash", .double(hashing ? fraction : 1)), ("progress-ciphertext", .double(hashing ? 0 : fraction)),
                       ("progress-encode-push", .double(hashing ? 0 : fraction))]
        } else {
            fields.append(("progress", .double(s.ended != nil && s.status == "done" ? 1 : fraction)))
        }
        return .object(fields)
    }
}
