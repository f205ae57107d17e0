import ArgumentParser
import Foundation
import GridCrypto
import GridClient
import GridImmutable
import GridLocalGrid
import GridNode
import GridWire
import GridSystem


struct BenchGrid: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grid",
        abstract: "Upload and download through a local grid of real daemons; print MB/s and the client's peak RSS.",
        discussion: """
            Starts an introducer and --servers storage servers on 127.0.0.1 (as `grid demo` \
            does), then for each round uploads a fresh pseudo-random file of --size (a new file \
            each round, so convergent deduplication does not help) and downloads it, verifying \
            every hash, into a sink that discards the bytes. Prints each round and the medians. \
            The client is this process, so its peak RSS (getrusage) is the client's; every \
            daemon shares this machine's cores with it. MB/s = 10^6 bytes of plaintext per second.

            \(ExitStatus.help)
            """)

    @Option(help: "File size per round, e.g. 128MiB or 1GiB.") var size: String = "128MiB"
    @OptionGroup var options: LocalGridOptions
    @Option(help: "Rounds (each a new file).") var rounds: Int = 3
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let bytes = try parseSize(size)
            let encoding = options.encoding
            try withLocalGrid(prefix: "grid-bench", servers: options.servers, encoding: encoding) { grid, settings, pool, _ in
                try measure(grid: grid, bytes: bytes, settings: settings, pool: pool)
            }
        }
    }

    func measure(grid: LocalGrid, bytes: UInt64, settings: ClientSettings, pool: ServerPool) throws {
        let root = grid.root
        if !json {
            say("grid bench grid: \(humanBytes(bytes)) x \(rounds) rounds, \(options.needed)-of-\(options.total) through \(options.servers) local storage servers")
            say("round   upload MB/s   download MB/s")
        }
        var ups: [Double] = [], downs: [Double] = []
        var cpu: [[Double]] = []  // client up, servers up, client down, servers down
        var busy: [Double] = []  // cores busy during each upload: CPU-s of every process over wall seconds
        let coding = try codingOptionsFromEnvironment()
        let uploader = Uploader(pool: pool, settings: settings, coding: coding)
        let downloader = Downloader(pool: pool, coding: coding)
        // Which kernels ran: the Reed-Solomon path (GRID_SIMD, else the fastest here) and
        // the SHA-256 path (GRID_SHA, else AVX-512 lanes or SHA-NI pairs where the CPU has them).
        let paths = "Reed-Solomon \(coding.simdPath), SHA-256 \(SHA256Path.current)"
        if !json { say("paths: \(paths)") }
        for round in 0..<rounds {
            let sample = root + "/sample\(round).bin"
            try writeSampleFile(sample, size: bytes, seed: wallClockSeconds() &+ UInt64(round) &* 7919)
            let source = try FileSource(path: sample)
            let (c0, d0) = (CurrentProcess.cpuSeconds, grid.daemonsCPUSeconds)
            let t0 = Date()
            let up = try blockingAwait { try await uploader.upload(source: source) }
            let upSeconds = Date().timeIntervalSince(t0)
            let (c1, d1) = (CurrentProcess.cpuSeconds, grid.daemonsCPUSeconds)
            try? FileSystem.remove(sample)
            let sink = CountingSink()
            let cap = up.capability
            let box = UncheckedBox(sink)
            let t1 = Date()
            _ = try blockingAwait { try await downloader.download(cap, to: box.value) }
            let downSeconds = Date().timeIntervalSince(t1)
            let (c2, d2) = (CurrentProcess.cpuSeconds, grid.daemonsCPUSeconds)
            cpu.append([c1 - c0, d1 - d0, c2 - c1, d2 - d1])
            busy.append(((c1 - c0) + (d1 - d0)) / upSeconds)
            guard sink.count == bytes else { throw GridError(.internal, "downloaded \(sink.count) bytes, expected \(bytes)") }
            ups.append(Double(bytes) / upSeconds / 1e6)
            downs.append(Double(bytes) / downSeconds / 1e6)
            if !json {
                let c = cpu.last!
                say("\(lpad("\(round + 1)", 5))   \(lpad(fmt(ups.last!, 1), 11))   \(lpad(fmt(downs.last!, 1), 13))"
                    + "   CPU s up: client \(fmt(c[0])) servers \(fmt(c[1])); down: client \(fmt(c[2])) servers \(fmt(c[3]))")
            }
        }
        let rss = CurrentProcess.peakResidentBytes
        // CPU seconds per GiB of file, medians over the rounds (issue 16's measure: steadier
        // than wall time on a shared machine).
        let gib = Double(bytes) / Double(1 << 30)
        let perGiB = ["upload_client", "upload_servers", "download_client", "download_servers"].enumerated()
            .reduce(into: [String: Double]()) { out, e in out[e.element] = median(cpu.map { $0[e.offset] }) / gib }
        if json {
            let out: [String: Any] = [
                "size": bytes, "servers": options.servers, "rounds": rounds, "needed": options.needed, "total": options.total,
                "upload_mb_s": ups, "download_mb_s": downs,
                "upload_median_mb_s": median(ups), "download_median_mb_s": median(downs),
                "client_peak_rss_bytes": rss, "simd_path": coding.simdPath.description, "sha_path": SHA256Path.current.description,
                "cpu_seconds": cpu.map { ["upload_client": $0[0], "upload_servers": $0[1], "download_client": $0[2], "download_servers": $0[3]] },
                "cpu_seconds_per_gib": perGiB, "upload_cores_busy": busy, "upload_cores_busy_median": median(busy),
            ]
            say(jsonString(out))
        } else {
            say("median  \(lpad(fmt(median(ups), 1), 11))   \(lpad(fmt(median(downs), 1), 13))")
            say("CPU-s per GiB (medians): upload client \(fmt(perGiB["upload_client"]!)) servers \(fmt(perGiB["upload_servers"]!)); "
                + "download client \(fmt(perGiB["download_client"]!)) servers \(fmt(perGiB["download_servers"]!)); "
                + "cores busy during upload \(fmt(median(busy)))")
            say("client peak RSS: \(fmt(Double(rss) / 1048576, 1)) MiB")
        }
    }
}
