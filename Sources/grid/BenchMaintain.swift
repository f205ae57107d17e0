import ArgumentParser
import Foundation
import GridClient
import GridFormat
import GridImmutable
import GridLocalGrid
import GridNode
import GridSystem
import GridWire

struct BenchMaintain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maintain",
        abstract: "Time `grid maintain` (census and lease renewal) over many files on a local grid.",
        discussion: """
            Starts an introducer and --servers storage servers on 127.0.0.1, uploads --files \
            distinct pseudo-random files of --size (in this process, --concurrency at a time) \
            into the client's catalog, then runs `grid maintain --verify-period 0` (census and \
            lease renewal of every file, no verification) as its own process --rounds times \
            and prints the wall-clock seconds of each run, files per second and milliseconds \
            per file. tools/bench-maintain-vs-tahoe.sh sets this beside Tahoe-LAFS's per-file \
            check-and-add-lease.

            Example: grid bench maintain --files 10000

            \(ExitStatus.help)
            """)

    @Option(help: "Files to store and maintain.") var files: Int = 1000
    @Option(help: "Size of each file (more than 55 bytes, so it is stored as CHK shares).") var size: String = "2KiB"
    @Option(help: "Uploads in flight while filling the grid.") var concurrency: Int = 16
    @Option(help: "Runs of grid maintain to time.") var rounds: Int = 3
    @OptionGroup var options: LocalGridOptions
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let bytes = try parseSize(size)
            guard bytes > UInt64(Capability.literalThreshold), bytes <= 1 << 30 else { throw GridError(.usage, "--size must be 56 bytes to 1 GiB") }
            guard files >= 1, concurrency >= 1, rounds >= 1 else { throw GridError(.usage, "--files, --concurrency and --rounds must be at least 1") }
            try withLocalGrid(prefix: "grid-bench-maintain", servers: options.servers, encoding: options.encoding) { grid, settings, pool, _ in
                try measure(grid: grid, bytes: Int(bytes), settings: settings, pool: pool)
            }
        }
    }

    func measure(grid: LocalGrid, bytes: Int, settings: ClientSettings, pool: ServerPool) throws {
        if !json { say("grid bench maintain: \(files) files of \(humanBytes(UInt64(bytes))), \(options.needed)-of-\(options.total) on \(options.servers) local storage servers") }
        let uploader = Uploader(pool: pool, settings: settings, coding: try codingOptionsFromEnvironment())
        let (count, width, seed) = (files, concurrency, wallClockSeconds())
        let t0 = monotonicNow()
        let caps: [Capability] = try blockingAwait {
            try await withThrowingTaskGroup(of: Capability.self) { group in
                var out: [Capability] = []
                var next = 0
                func add(_ g: inout ThrowingTaskGroup<Capability, Error>) {
                    let i = next
                    next += 1
                    g.addTask {
                        // Distinct contents: the file number and the run's seed lead each file.
                        var data = [UInt8](repeating: 0, count: bytes)
                        var x = (seed &* 6364136223846793005) ^ UInt64(i &+ 1) &* 0x9E3779B97F4A7C15
                        for j in 0..<bytes { x ^= x << 13; x ^= x >> 7; x ^= x << 17; data[j] = UInt8(truncatingIfNeeded: x) }
                        return try await uploader.upload(source: MemorySource(data)).capability
                    }
                }
                while next < min(width, count) { add(&group) }
                while let cap = try await group.next() {
                    out.append(cap)
                    if next < count { add(&group) }
                }
                return out
            }
        }
        let fillSeconds = monotonicNow() - t0
        try Catalog(path: ClientNode.catalogPath(directory: grid.clientDirectory)).add(caps.map { ($0, "bench") })
        if !json { say("stored \(caps.count) files in \(fmt(fillSeconds, 1)) s (\(fmt(Double(caps.count) / fillSeconds, 0)) uploads/s)") }

        var seconds: [Double] = []
        var renewed: [Int] = []
        for round in 0..<rounds {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: try FileSystem.currentExecutable())
            p.arguments = ["maintain", "--node-dir", grid.clientDirectory, "--verify-period", "0", "--json"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            let t = monotonicNow()
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            let s = monotonicNow() - t
            let r = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
            guard p.terminationStatus == 0, r["checked"] as? Int == caps.count else {
                throw GridError(.internal, "grid maintain exited \(p.terminationStatus): \(String(decoding: data, as: UTF8.self))")
            }
            seconds.append(s)
            renewed.append(r["leases_renewed"] as? Int ?? 0)
            if !json {
                say("run \(round + 1): \(fmt(s, 2)) s, \(fmt(Double(caps.count) / s, 0)) files/s, \(fmt(s * 1000 / Double(caps.count), 3)) ms per file, \(renewed.last!) leases renewed")
            }
        }
        let med = median(seconds)
        if json {
            say(jsonString([
                "files": caps.count, "size": bytes, "servers": options.servers, "fill_seconds": fillSeconds,
                "maintain_seconds": seconds, "maintain_median_seconds": med, "files_per_second": Double(caps.count) / med,
                "ms_per_file": med * 1000 / Double(caps.count), "leases_renewed": renewed,
            ] as [String: Any]))
        } else {
            say("median: \(fmt(med, 2)) s for \(caps.count) files = \(fmt(med * 1000 / Double(caps.count), 3)) ms per file (census of \(options.servers) servers + lease renewal, whole process)")
        }
    }
}
