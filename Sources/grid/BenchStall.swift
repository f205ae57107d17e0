import ArgumentParser
import Dispatch
import Foundation
import GridClient
import GridImmutable
import GridLocalGrid
import GridNode
import GridSystem
import GridWire

struct BenchStall: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stall",
        abstract: "Upload and download while storage servers are stopped (SIGSTOP) mid-transfer; compare with undisturbed.",
        discussion: """
            Starts a local grid (as `grid demo` does). Each round: an undisturbed upload and \
            download of a fresh --size file; then an upload of another file during which \
            --stop servers are stopped with SIGSTOP a third of the way in, and a download of \
            the first file during which the --stop servers holding the shares it reads first \
            are stopped a third of the way in. Stopped servers are resumed (SIGCONT) after \
            each transfer. Prints the times, their ratio and the target: at most 3x the \
            undisturbed time plus 2 s. Every byte downloaded is verified by its hashes.

            \(ExitStatus.help)
            """)

    @Option(help: "File size, e.g. 64MiB.") var size: String = "64MiB"
    @Option(help: "Servers to stop mid-transfer.") var stop: Int = 1
    @Option(help: "Rounds.") var rounds: Int = 3
    @OptionGroup var options: LocalGridOptions
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            let bytes = try parseSize(size)
            guard (1...3).contains(stop), stop < options.servers else { throw GridError(.usage, "--stop must be 1 to 3, fewer than --servers") }
            try withLocalGrid(prefix: "grid-bench-stall", servers: options.servers, encoding: options.encoding) { grid, settings, pool, _ in
                try measure(grid: grid, bytes: bytes, settings: settings, pool: pool)
            }
        }
    }

    /// Stops `victims` after `delay` seconds, unless `done` says the transfer already ended.
    func stopLater(_ victims: [DaemonProcess], after delay: Double) -> DispatchWorkItem {
        let item = DispatchWorkItem { for v in victims { v.signal(ProcessSignal.stop) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + delay, execute: item)
        return item
    }

    func measure(grid: LocalGrid, bytes: UInt64, settings: ClientSettings, pool: ServerPool) throws {
        let coding = try codingOptionsFromEnvironment()
        let uploader = Uploader(pool: pool, settings: settings, coding: coding)
        let downloader = Downloader(pool: pool, coding: coding)
        var rows: [[String: Double]] = []
        if !json { say("grid bench stall: \(humanBytes(bytes)), \(stop) of \(options.servers) servers stopped mid-transfer, stall timeout \(coding.stallTimeout) s") }
        for round in 0..<rounds {
            let a = grid.root + "/a\(round).bin", b = grid.root + "/b\(round).bin"
            try writeSampleFile(a, size: bytes, seed: wallClockSeconds() &+ UInt64(round) &* 31)
            try writeSampleFile(b, size: bytes, seed: wallClockSeconds() &+ UInt64(round) &* 31 &+ 17)
            let (srcA, srcB) = (try FileSource(path: a), try FileSource(path: b))
            // Undisturbed.
            var t = monotonicNow()
            let upA = try blockingAwait { try await uploader.upload(source: srcA) }
            let up0 = monotonicNow() - t
            t = monotonicNow()
            let sink0 = CountingSink()
            let box0 = UncheckedBox(sink0)
            _ = try blockingAwait { try await downloader.download(upA.capability, to: box0.value) }
            let down0 = monotonicNow() - t
            // Upload with servers stopped a third of the way in (the first ones by name).
            let upVictims = Array(grid.servers.prefix(stop))
            var item = stopLater(upVictims, after: up0 / 3)
            t = monotonicNow()
            let upB = try blockingAwait { try await uploader.upload(source: srcB) }
            let up1 = monotonicNow() - t
            item.cancel()
            for v in upVictims { v.signal(ProcessSignal.resume) }
            // Download with the servers of its first shares stopped a third of the way in.
            let nickOf = upA.nicknames
            let firstShares = (0..<options.needed).compactMap { upA.placement[$0]?.first }.compactMap { nickOf[$0] }
            let downVictims = grid.servers.filter { d in firstShares.prefix(stop).contains { d.directory.hasSuffix("/" + $0) } }
            item = stopLater(downVictims, after: down0 / 3)
            t = monotonicNow()
            let sink1 = CountingSink()
            let box1 = UncheckedBox(sink1)
            let got = try blockingAwait { try await downloader.download(upA.capability, to: box1.value) }
            let down1 = monotonicNow() - t
            item.cancel()
            for v in downVictims { v.signal(ProcessSignal.resume) }
            guard sink0.count == bytes, sink1.count == bytes else { throw GridError(.internal, "a download came back short") }
            try? FileSystem.remove(a)
            try? FileSystem.remove(b)
            rows.append(["upload_s": up0, "upload_stalled_s": up1, "download_s": down0, "download_stalled_s": down1,
                         "download_shares_set_aside": Double(got.badShares.count), "upload_happiness": Double(upB.happiness)])
            if !json {
                say(String(format: "round %d: upload %.2f s undisturbed, %.2f s with %d stopped (target <= %.2f s); "
                        + "download %.2f s, %.2f s with %d stopped (target <= %.2f s; %d shares set aside)",
                           round + 1, up0, up1, upVictims.count, 3 * up0 + 2, down0, down1, downVictims.count, 3 * down0 + 2,
                           got.badShares.count))
            }
        }
        func med(_ k: String) -> Double { median(rows.map { $0[k]! }) }
        if json {
            say(jsonString(["size": bytes, "stopped": stop, "rounds": rows, "median": [
                "upload_s": med("upload_s"), "upload_stalled_s": med("upload_stalled_s"),
                "download_s": med("download_s"), "download_stalled_s": med("download_stalled_s")]]))
        } else {
            say(String(format: "median: upload %.2f s -> %.2f s stalled (%.1fx); download %.2f s -> %.2f s stalled (%.1fx)",
                       med("upload_s"), med("upload_stalled_s"), med("upload_stalled_s") / med("upload_s"),
                       med("download_s"), med("download_stalled_s"), med("download_stalled_s") / med("download_s")))
        }
    }
}
