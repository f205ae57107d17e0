import ArgumentParser
import Foundation
import GridClient
import GridFormat
import GridImmutable
import GridNode
import GridWire
import GridSystem


struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Start a throwaway local grid, upload a file, download and check it, then stop.",
        discussion: """
            Starts an introducer and --servers storage servers (real `grid introducer run` and \
            `grid storage run` processes) on 127.0.0.1 in a temporary directory, uploads a \
            pseudo-random sample file, downloads it, compares the bytes, uploads it again \
            (the shares are found already there), prints the capability, where each share \
            landed and the throughput, and stops everything it started. --keep leaves the \
            directory (node configs and daemon logs) behind.

            Example: grid demo --servers 5 --happy 4 --size 256MiB --keep

            \(ExitStatus.help)
            """)

    @Option(help: "Size of the sample file, e.g. 32MiB.") var size: String = "32MiB"
    @OptionGroup var options: LocalGridOptions
    @Flag(help: "Keep the temporary directory (configs and logs).") var keep = false

    func run() throws {
        try reportingErrors {
            let bytes = try parseSize(size)
            guard options.servers >= 1 && options.servers <= 100 else { throw GridError(.usage, "--servers must be 1 to 100") }
            let encoding = options.encoding
            try withLocalGrid(prefix: "grid-demo", servers: options.servers, encoding: encoding, keep: keep,
                              started: { say("grid demo: starting an introducer and \(options.servers) storage servers on 127.0.0.1 in \($0)") },
                              stopped: { say(keep ? "stopped the daemons; kept \($0)" : "stopped the daemons and removed \($0)") }) {
                grid, settings, pool, announceSeconds in
                say(String(format: "all %d servers announced in %.1f s", options.servers, announceSeconds))
                try demo(root: grid.root, bytes: bytes, settings: settings, pool: pool)
            }
        }
    }

    func demo(root: String, bytes: UInt64, settings: ClientSettings, pool: ServerPool) throws {
        let sample = root + "/sample.bin"
        try writeSampleFile(sample, size: bytes, seed: wallClockSeconds())
        let source = try FileSource(path: sample)
        let uploader = Uploader(pool: pool, settings: settings, coding: try codingOptionsFromEnvironment())
        let bar = ProgressBar()
        let up = try blockingAwait { try await uploader.upload(source: source) { bar.update($0) } }
        bar.finish()
        say("uploaded \(humanBytes(bytes)) in \(secs(up.totalSeconds)) (\(rate(bytes, up.totalSeconds)); "
            + "convergent hash \(secs(up.hashSeconds)), encode+push \(secs(up.pushSeconds)))")
        say("capability: \(up.capability)")
        say("share placement (\(options.needed)-of-\(options.total), happiness \(up.happiness), happy \(options.happy)):")
        var byServer: [String: [Int]] = [:]
        for (share, ids) in up.placement { for id in ids { byServer[id, default: []].append(share) } }
        for id in byServer.keys.sorted(by: { up.nicknames[$0]! < up.nicknames[$1]! }) {
            say("  \(pad(up.nicknames[id]!, 10)) \(id.prefix(16))...  share \(byServer[id]!.sorted().map(String.init).joined(separator: ", "))")
        }

        let out = root + "/sample.out"
        let sink = try FileDescriptorSink(path: out)
        let downloader = Downloader(pool: pool, coding: try codingOptionsFromEnvironment())
        let cap = up.capability
        let box = UncheckedBox(sink)
        let down = try blockingAwait { try await downloader.download(cap, to: box.value) { bar.update($0) } }
        bar.finish()
        let same = try sha256(file: sample) == sha256(file: out)
        say("downloaded \(humanBytes(down.bytesWritten)) in \(secs(down.seconds)) (\(rate(down.bytesWritten, down.seconds))) "
            + "from shares \(down.sharesUsed.keys.sorted().map(String.init).joined(separator: ", ")); "
            + (same ? "SHA-256 matches the original" : "MISMATCH"))
        guard same else { throw GridError(.internal, "the downloaded file differs from the uploaded one") }

        let again = try blockingAwait { try await uploader.upload(source: source) }
        say("uploaded it again: \(again.sharesAlreadyPresent) shares were already there, \(again.bytesSent) bytes sent, "
            + "\(secs(again.totalSeconds)); same capability: \(again.capability == up.capability ? "yes" : "NO")")
        guard again.capability == up.capability else { throw GridError(.internal, "the second upload gave another capability") }

    }
}

func say(_ s: String) { FileHandleStdout.write(s + "\n") }
func secs(_ s: Double) -> String { String(format: "%.2f s", s) }
func rate(_ bytes: UInt64, _ seconds: Double) -> String { String(format: "%.0f MB/s", Double(bytes) / max(seconds, 1e-9) / 1e6) }
