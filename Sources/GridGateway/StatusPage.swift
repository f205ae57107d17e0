import Foundation
import GridClient
import GridDirectory
import GridFilesystem
import GridFormat
import GridHTTP
import GridImmutable
import GridProtocol
import GridSystem

/// HTML text: everything that came from the network (nicknames are chosen by strangers,
/// names by whoever wrote the directory) is escaped before it is put in a page.
enum HTML {
    static func escape(_ s: String) -> String {
        var o = ""
        o.reserveCapacity(s.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            case "'": o += "&#39;"
            default:
                if c.value < 32 && c != "\n" && c != "\t" { o += "&#\(c.value);" } else { o.unicodeScalars.append(c) }
            }
        }
        return o
    }
}

enum Page {
    static let style = """
        body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:80em}
        h1{font-size:1.4em;margin-bottom:.2em} h2{font-size:1.1em;margin-top:1.4em;border-bottom:1px solid #ddd}
        table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eee;font-size:.92em}
        th{background:#f4f4f4} .ok{color:#11772d;font-weight:600} .bad{color:#b00020;font-weight:600} .mono{font-family:ui-monospace,monospace;font-size:.85em}
        .bar{display:inline-block;width:8em;height:.7em;background:#eee;vertical-align:middle} .bar span{display:block;height:100%;background:#3a7bd5}
        form{margin:.5em 0} .muted{color:#777}
        """

    static func wrap(title: String, body: String, refresh: Int? = nil) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(HTML.escape(title))</title>
        \(refresh.map { "<meta http-equiv=\"refresh\" content=\"\($0)\">" } ?? "")
        <style>\(style)</style></head><body>
        \(body)
        </body></html>

        """
    }

    static func time(_ t: Double?) -> String {
        guard let t else { return "never" }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: Date(timeIntervalSince1970: t))
    }

    static func ago(_ t: Double?, now: Double) -> String {
        guard let t else { return "never" }
        let s = max(0, now - t)
        if s < 60 { return "\(Int(s)) s ago" }
        if s < 3600 { return "\(Int(s / 60)) min ago" }
        if s < 86400 { return "\(Int(s / 3600)) h ago" }
        return "\(Int(s / 86400)) days ago"
    }

    static func bytes(_ n: UInt64?) -> String {
        guard let n else { return "?" }
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var v = Double(n)
        var i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
    }
}

extension Gateway {
    /// `/`: the welcome page (HTML) or Tahoe's welcome JSON (`?t=json`).
    func welcome(_ req: HTTPRequest, _ resp: HTTPResponse, t: String) async throws {
        try requireRead(req)
        let statuses = fs.pool.statuses()
        let now = wallClock()
        if t == "json" {
            let servers: [JSONValue] = statuses.map { s in
                let a = s.server.announcement
                return .object([
                    ("nodeid", .string(s.server.nodeID)),
                    ("connection_status", .string(s.connected ? "Connected to \(a.addresses.first ?? "?") via tcp" : "Disconnected" + (s.lastError.map { ": \($0)" } ?? ""))),
                    ("available_space", .int(Int(clamping: s.version?.availableSpace ?? a.availableSpace))),
                    ("nickname", .string(a.nickname)),
                    ("version", .string(s.version?.applicationVersion ?? "grid-protocol/\(a.protocolVersion)")),
                    ("last_received_data", s.lastReceived.map { .double($0) } ?? .null),
                ])
            }
            let intro = fs.pool.introducerConnected ? "Connected" : "Disconnected" + (fs.pool.introducerProblem.map { ": \($0)" } ?? "")
            let body: JSONValue = .object([("introducers", .object([("statuses", .array([.string(intro)]))])), ("servers", .array(servers))])
            await resp.send(status: 200, contentType: "application/json; charset=utf-8", body: Array((body.pythonText + "\n").utf8))
            return
        }
        guard t.isEmpty else { throw WebError(400, "GET /?t=\(t) is not a web API operation") }
        let e = fs.settings.encoding
        let connected = statuses.filter(\.connected).count
        var rows = ""
        for s in statuses {
            let a = s.server.announcement
            let state = s.connected
                ? "<span class=\"ok\">connected</span> <span class=\"muted\">since \(HTML.escape(Page.time(s.since)))</span>"
                : "<span class=\"bad\">disconnected</span> <span class=\"muted\">\(s.since.map { "since " + HTML.escape(Page.time($0)) } ?? "never connected")\(s.lastError.map { ": " + HTML.escape($0) } ?? "")</span>"
            rows += """
                <tr class="server" data-nodeid="\(HTML.escape(s.server.nodeID))" data-status="\(s.connected ? "connected" : "disconnected")">\
                <td>\(HTML.escape(a.nickname))</td><td class="mono">\(HTML.escape(s.server.nodeID))</td><td>\(state)</td>\
                <td>\(HTML.escape(Page.ago(s.lastReceived, now: now)))</td><td>\(HTML.escape(s.version?.applicationVersion ?? "protocol \(a.protocolVersion)"))</td>\
                <td>\(HTML.escape(Page.bytes(s.version?.availableSpace ?? a.availableSpace)))</td><td class="mono">\(HTML.escape(a.addresses.joined(separator: " ")))</td></tr>

                """
        }
        if statuses.isEmpty { rows = "<tr><td colspan=\"7\" class=\"muted\">No storage servers are known yet.</td></tr>" }
        let introText = fs.pool.introducerConnected
            ? "<span class=\"ok\" id=\"introducer\" data-status=\"connected\">connected</span>"
            : "<span class=\"bad\" id=\"introducer\" data-status=\"disconnected\">not connected</span> \(HTML.escape(fs.pool.introducerProblem ?? ""))"
        let introducers = fs.settings.introducers.map { "\($0.host):\($0.port)" }.joined(separator: ", ")
        let body = """
            <h1>grid gateway</h1>
            <p class="muted">\(HTML.escape(Self.version)) · serving the client node \(HTML.escape(fs.nodeDirectory)) · up since \(HTML.escape(Page.time(started)))</p>
            <h2>Grid</h2>
            <p>Introducer (\(HTML.escape(introducers))): \(introText)</p>
            <p>Storage servers: <strong id="connected-count">\(connected)</strong> of <strong id="known-count">\(statuses.count)</strong> connected.
            Encoding: <strong>\(e.needed)-of-\(e.total)</strong>, happy \(e.happy), segments of \(Page.bytes(UInt64(e.maxSegmentSize))).</p>
            <table id="servers"><thead><tr><th>Nickname</th><th>Node id</th><th>Connection</th><th>Last data received</th><th>Version</th><th>Available space</th><th>Address</th></tr></thead>
            <tbody>
            \(rows)</tbody></table>
            <h2>Transfers</h2>
            \(transfersTable())
            <p><a href="/status">All recent operations</a> · <a href="/?t=json">JSON</a></p>
            <h2>Upload a file</h2>
            <form action="/uri?t=upload" method="post" enctype="multipart/form-data">
            <label>Format <select name="format"><option value="CHK">immutable (CHK)</option><option value="SDMF">mutable (SDMF)</option><option value="MDMF">mutable (MDMF)</option></select></label>
            <input type="file" name="file" required> <button type="submit">Upload</button></form>
            <h2>Open a capability</h2>
            <form action="/uri" method="get"><input type="text" name="uri" size="80" placeholder="URI:..." required> <button type="submit">Open</button></form>
            """
        await resp.send(status: 200, contentType: "text/html; charset=utf-8", headers: Self.pageHeaders,
                        body: Array(Page.wrap(title: "grid gateway", body: body, refresh: 15).utf8))
    }

    /// Pages are self-contained: no scripts, no outside resources, not framed elsewhere.
    static let pageHeaders = [("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
                              ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store")]

    func transfersTable() -> String {
        let active = transfers.active.value.values.sorted { $0.id < $1.id }
        let recent = transfers.recent.value.prefix(10)
        if active.isEmpty && recent.isEmpty { return "<p class=\"muted\" id=\"transfers\">No uploads or downloads yet.</p>" }
        var rows = ""
        for t in active + recent {
            let s = t.state.value
            let fraction = s.size.map { $0 == 0 ? 1.0 : min(1, Double(s.done) / Double($0)) } ?? 0
            rows += "<tr class=\"transfer\"><td>\(HTML.escape(t.kind))</td><td>\(HTML.escape(Page.bytes(s.size)))</td>"
                + "<td><span class=\"bar\"><span style=\"width:\(Int(fraction * 100))%\"></span></span> \(Int(fraction * 100))%\(s.phase.isEmpty ? "" : " (\(HTML.escape(s.phase)))")</td>"
                + "<td>\(HTML.escape(s.status))</td><td class=\"mono\">\(HTML.escape(s.si.map(Base32.encode) ?? ""))</td><td>\(HTML.escape(Page.time(t.started)))</td></tr>\n"
        }
        return "<table id=\"transfers\"><thead><tr><th>Kind</th><th>Size</th><th>Progress</th><th>Status</th><th>Storage index</th><th>Started</th></tr></thead><tbody>\(rows)</tbody></table>"
    }

    /// `/status`: the operations page, or Tahoe's `{"active": [...], "recent": [...]}`.
    func statusPage(_ req: HTTPRequest, _ resp: HTTPResponse) async throws {
        if req.argument("t") == "json" {
            let active = transfers.active.value.values.sorted { $0.id < $1.id }.map(TransferLog.json)
            let recent = transfers.recent.value.map(TransferLog.json)
            let body: JSONValue = .object([("active", .array(active)), ("recent", .array(recent))])
            await resp.send(status: 200, contentType: "application/json", body: Array((body.pythonText + "\n").utf8))
            return
        }
        await resp.send(status: 200, contentType: "text/html; charset=utf-8", headers: Self.pageHeaders,
                        body: Array(Page.wrap(title: "grid gateway: operations", body: "<h1>Operations</h1>\n" + transfersTable() + "\n<p><a href=\"/\">Back</a></p>", refresh: 5).utf8))
    }

    /// A directory as a page: its children with links to them.
    func directoryPage(_ d: DirectoryCapability) async throws -> String {
        let entries = try await fs.contents(of: d).entries()
        let dirText = AnyCapability.directory(d).string
        var rows = ""
        for e in entries.sorted(by: { $0.name < $1.name }) {
            let cap = e.capability
            let href = "/uri/\(URLCoding.encode(cap.string))"
            let kind = cap.isDirectory ? "DIR" : (cap.isMutable ? "MUT" : (cap.isUnknown ? "?" : "FILE"))
            rows += "<tr><td>\(kind)</td><td><a href=\"\(HTML.escape(href))\">\(HTML.escape(e.name))</a></td><td>\(cap.fileSize.map { "\($0)" } ?? "")</td></tr>\n"
        }
        return Page.wrap(title: "Directory", body: """
            <h1>Directory</h1><p class="mono">\(HTML.escape(dirText.count > 40 ? String(dirText.prefix(40)) + "…" : dirText))</p>
            <table><thead><tr><th>Type</th><th>Name</th><th>Size</th></tr></thead><tbody>\(rows)</tbody></table>
            <p><a href="/">Back</a></p>
            """)
    }

    // MARK: The upload form (multipart/form-data)

    /// `POST /uri?t=upload` (or `/uri/DIRCAP?t=upload`): the welcome page's form. The
    /// body is spooled to a temporary file; the file field must be the form's last part
    /// (as this page's form sends it), so its end is found at the end of the body.
    func formUpload(_ req: HTTPRequest, _ resp: HTTPResponse, into dir: GridPath? = nil) async throws {
        guard let type = req.head.header("content-type"), type.lowercased().hasPrefix("multipart/form-data"),
              let b = type.range(of: "boundary=") else { throw WebError(400, "t=upload takes a multipart/form-data form") }
        var boundary = String(type[b.upperBound...]).split(separator: ";").first.map(String.init) ?? ""
        boundary = boundary.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
        guard !boundary.isEmpty, boundary.utf8.count <= 70 else { throw WebError(400, "bad multipart boundary") }
        let body = try await spool(req)
        let form = try MultipartForm(body, boundary: boundary)
        guard let file = form.file else { throw WebError(400, "the form has no file field (it must be the form's last field)") }
        var fields = form.fields
        if fields["format"] == nil, let m = req.argument("format") { fields["format"] = m }
        let format = fields["format"]?.uppercased() ?? "CHK"
        let cap: AnyCapability
        switch format {
        case "CHK":
            cap = .immutable(try await fs.upload(file.source, name: file.name).capability)
        case "SDMF", "MDMF":
            cap = .mutable(try await fs.createMutableFile(file.source, format: format == "MDMF" ? .mdmf : .sdmf, name: file.name).capability)
        default:
            throw WebError(400, "Unknown format: \(format)")
        }
        metrics?.add("grid_gateway_uploaded_bytes_total", Double(file.source.size))
        if let dir, !file.name.isEmpty {
            try await fs.link(at: dir.appending(file.name), cap)
        }
        let href = "/uri/\(URLCoding.encode(cap.string))"
        await resp.send(status: 200, contentType: "text/html; charset=utf-8", headers: Self.pageHeaders, body: Array(Page.wrap(title: "Uploaded", body: """
            <h1>Uploaded</h1><p>\(HTML.escape(file.name)) (\(file.source.size) bytes) is stored. Its capability (keep it: it is the only way back to the file):</p>
            <p class="mono" id="capability">\(HTML.escape(cap.string))</p><p><a href="\(HTML.escape(href))">Open it</a> · <a href="/">Back</a></p>
            """).utf8))
    }
}

/// The fields of a multipart/form-data body held in a file, and its last part's file as a
/// slice of that file (never read into memory).
struct MultipartForm {
    var fields: [String: String] = [:]
    var file: (name: String, source: SliceSource)?

    init(_ body: FileSource, boundary: String) throws {
        let head = try Self.read(body, at: 0, count: Int(min(body.size, 64 << 10)))
        let delimiter = Array("--\(boundary)".utf8)
        let crlfDelimiter = Array("\r\n--\(boundary)".utf8)
        guard head.starts(with: delimiter) else { throw WebError(400, "the form does not start with its boundary") }
        var pos = delimiter.count
        while true {
            guard pos + 2 <= head.count, head[pos] == 13, head[pos + 1] == 10 else { throw WebError(400, "malformed multipart form") }
            pos += 2
            guard let end = Self.find([13, 10, 13, 10], in: head, from: pos) else { throw WebError(400, "a form part's headers are longer than 64 KiB") }
            let headers = String(decoding: head[pos..<end], as: UTF8.self)
            pos = end + 4
            let disposition = headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-disposition:") }.map(String.init) ?? ""
            let name = Self.parameter("name", in: disposition) ?? ""
            if let filename = Self.parameter("filename", in: disposition) {
                // The last part: the data runs to the final delimiter at the body's end.
                let tailCount = Int(min(body.size, UInt64(crlfDelimiter.count + 8)))
                let tail = try Self.read(body, at: body.size - UInt64(tailCount), count: tailCount)
                guard let at = Self.find(crlfDelimiter + Array("--".utf8), in: tail, from: 0) else {
                    throw WebError(400, "the file must be the form's last field")
                }
                let dataEnd = body.size - UInt64(tailCount) + UInt64(at)
                guard dataEnd >= UInt64(pos) else { throw WebError(400, "malformed multipart form") }
                let clean = filename.split(separator: "/").last.map(String.init) ?? ""
                file = (clean.split(separator: "\\").last.map(String.init) ?? clean, SliceSource(body, offset: UInt64(pos), length: dataEnd - UInt64(pos)))
                return
            }
            guard let next = Self.find(crlfDelimiter, in: head, from: pos) else { throw WebError(400, "a form field is longer than 64 KiB") }
            fields[name] = String(decoding: head[pos..<next], as: UTF8.self)
            pos = next + crlfDelimiter.count
            if head.count >= pos + 2 && head[pos] == 45 && head[pos + 1] == 45 { return }  // "--": the end, no file
        }
    }

    static func read(_ s: FileSource, at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let n = try out.withUnsafeMutableBytes { try s.read(at: offset, into: $0) }
        return Array(out[0..<n])
    }

    static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        guard needle.count <= hay.count else { return nil }
        var i = from
        while i + needle.count <= hay.count {
            if hay[i] == needle[0] && hay[i..<i + needle.count].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    static func parameter(_ name: String, in header: String) -> String? {
        for part in header.split(separator: ";").dropFirst() {
            let kv = part.trimmingCharacters(in: .whitespaces)
            guard kv.lowercased().hasPrefix(name + "=") else { continue }
            return String(kv.dropFirst(name.count + 1)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return nil
    }
}

/// Bytes [offset, offset+length) of a source, as a source.
final class SliceSource: RandomAccessSource, @unchecked Sendable {
    let base: FileSource
    let offset: UInt64
    let size: UInt64
    init(_ base: FileSource, offset: UInt64, length: UInt64) { (self.base, self.offset, self.size) = (base, offset, length) }
    func read(at o: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard o < size else { return 0 }
        let n = Int(min(UInt64(buffer.count), size - o))
        return try base.read(at: offset + o, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
    }
}
