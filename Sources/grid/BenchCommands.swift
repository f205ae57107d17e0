import ArgumentParser
import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridWire
import GridSystem


struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure throughput (figures, not pass/fail).",
        discussion: "The machine may be shared: compare medians and ratios taken in one run.\n\n\(ExitStatus.help)",
        subcommands: [BenchCodec.self, BenchCHK.self, BenchConnections.self, BenchGrid.self, BenchMaintain.self, BenchSHA.self, BenchStall.self])
}


func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Median over `reps` repetitions of (bytes per call * calls / seconds), each repetition
/// lasting at least `minSeconds`. GB/s = 1e9 bytes/s.
func measure(bytesPerCall: Int, reps: Int, minSeconds: Double, _ call: () throws -> Void) rethrows -> Double {
    try call() // warm-up: page in buffers, fill caches
    var rates: [Double] = []
    for _ in 0..<reps {
        var calls = 0
        let t0 = monotonicNow()
        var t1 = t0
        repeat {
            for _ in 0..<8 { try call() }
            calls += 8
            t1 = monotonicNow()
        } while t1 - t0 < minSeconds
        rates.append(Double(bytesPerCall) * Double(calls) / (t1 - t0) / 1e9)
    }
    return median(rates)
}

/// A kernel path a bench may be asked for by name (`--paths`).
protocol BenchPath: RawRepresentable<String>, CaseIterable {
    var isSupported: Bool { get }
}
extension SIMDPath: BenchPath {}
extension SHA256Path: BenchPath {}

/// The comma-separated paths in `names`, each known and supported by this CPU; `fallback`
/// when none were named.
func chosenPaths<P: BenchPath>(_ names: String?, default fallback: [P]) throws -> [P] {
    guard let names else { return fallback }
    return try names.split(separator: ",").map { name in
        guard let path = P(rawValue: String(name)) else {
            throw GridError(.usage, "unknown path '\(name)' (\(P.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard path.isSupported else { throw GridError(.usage, "path \(path.rawValue) is not supported by this CPU") }
        return path
    }
}

/// Comma-separated `A:B` pairs of integers, each checked by `valid`; `help` says the form.
func integerPairs(_ text: String, help: String, valid: (Int, Int) -> Bool) throws -> [(Int, Int)] {
    try text.split(separator: ",").map { s in
        let parts = s.split(separator: ":").compactMap { Int($0) }
        guard parts.count == 2, valid(parts[0], parts[1]) else { throw GridError(.usage, "bad shape '\(s)': \(help)") }
        return (parts[0], parts[1])
    }
}

struct BenchCodec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "Reed-Solomon encode and decode throughput per SIMD path (GB/s of data, one core).",
        discussion: """
            For each path and shape (k data shards + m parity shards) and shard size: encode = \
            compute the m parity shards from k data shards; decode = rebuild min(k, m) lost data \
            shards from the survivors (matrix inversion included; it is cached per loss pattern, \
            as the decoder does). GB/s counts k x shard bytes per call. The defaults are the \
            shapes of ../shared/anchors so the figures compare side by side with ISA-L.

            \(ExitStatus.help)
            """)

    @Option(help: "Comma-separated paths (default: every path this CPU supports).")
    var paths: String?

    @Option(help: "Comma-separated k:m shapes.")
    var shapes: String = "3:7,10:4,17:3,6:3"

    @Option(help: "Comma-separated shard sizes in bytes.")
    var shards: String = "4096,44032,1048576"

    @Option(help: "Repetitions per figure (the median is reported).")
    var reps: Int = 5

    @Option(name: .customLong("min-time"), help: "Minimum seconds per repetition.")
    var minTime: Double = 0.05

    @Flag(help: "Print one JSON array instead of a table.")
    var json = false

    func run() throws {
        try reportingErrors {
            let chosen: [SIMDPath] = try chosenPaths(paths, default: SIMDPath.available.reversed())
            let shapeList = try integerPairs(shapes, help: "use k:m with k + m <= 256") { k, m in k >= 1 && m >= 1 && k + m <= 256 }
            let sizes: [Int] = try shards.split(separator: ",").map {
                guard let v = Int($0), v > 0 else { throw GridError(.usage, "bad shard size '\($0)'") }
                return v
            }
            var rows: [String] = []
            if !json {
                FileHandleStdout.write("path      k   m  shard_bytes  encode_GB/s  decode_GB/s\n")
            }
            for path in chosen {
                for (k, m) in shapeList {
                    for size in sizes {
                        let (enc, dec) = try run(path: path, k: k, m: m, size: size)
                        if json {
                            rows.append(
                                "{\"path\": \"\(path)\", \"k\": \(k), \"m\": \(m), \"shard_bytes\": \(size), "
                                    + "\"encode_gbps\": \(fmt(enc)), \"decode_gbps\": \(fmt(dec))}")
                        } else {
                            FileHandleStdout.write(
                                pad(path.rawValue, 8) + lpad("\(k)", 3) + lpad("\(m)", 4) + lpad("\(size)", 13)
                                    + lpad(fmt(enc), 13) + lpad(fmt(dec), 13) + "\n")
                        }
                    }
                }
            }
            if json { FileHandleStdout.write("[\n  " + rows.joined(separator: ",\n  ") + "\n]\n") }
        }
    }

    func run(path: SIMDPath, k: Int, m: Int, size: Int) throws -> (Double, Double) {
        let n = k + m
        let rs = try ReedSolomon(k: k, n: n)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: n * size + 2 * m * size, alignment: 64)
        defer { buf.deallocate() }
        let base = buf.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
        for i in 0..<(k * size) {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            base[i] = UInt8(truncatingIfNeeded: seed >> 33)
        }
        let shard = { (i: Int) in base + i * size }
        let data = (0..<k).map { UnsafePointer(shard($0)) }
        let parityShares = Array(k..<n)
        let parityOut = (k..<n).map { shard($0) }
        let enc = try measure(bytesPerCall: k * size, reps: reps, minSeconds: minTime) {
            try rs.encode(blockSize: size, data: data, shares: parityShares, outputs: parityOut, path: path)
        }
        // Lose min(k, m) data shards (the first ones); rebuild them from the rest.
        let lost = min(k, m)
        let survivors = Array(lost..<k) + Array(k..<(k + lost))
        let avail = survivors.map { UnsafePointer(shard($0)) }
        let missing = Array(0..<lost)
        let outs = (0..<lost).map { shard(n + $0) }
        let dec = try measure(bytesPerCall: k * size, reps: reps, minSeconds: minTime) {
            try rs.reconstruct(blockSize: size, available: avail, indices: survivors, missing: missing,
                               outputs: outs, path: path)
        }
        for i in 0..<lost where !UnsafeRawBufferPointer(start: outs[i], count: size).elementsEqual(UnsafeRawBufferPointer(start: shard(i), count: size)) {
            throw GridError(.internal, "decode check failed on path \(path) (\(k),\(m)) shard \(i)")
        }
        return (enc, dec)
    }
}

func fmt(_ x: Double, _ digits: Int = 2) -> String {
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let r = (x * p).rounded() / p
    var s = "\(r)"
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
    }
    return s
}

func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s + " " : s + String(repeating: " ", count: w - s.count) }
func lpad(_ s: String, _ w: Int) -> String { s.count >= w ? " " + s : String(repeating: " ", count: w - s.count) + s }

struct BenchCHK: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chk",
        abstract: "Offline CHK encode and decode throughput (MB/s of file data).",
        discussion: """
            Encodes an in-memory file (default 256 MiB, 3-of-10, 1 MiB segments) with every \
            hash Tahoe needs, discarding the shares, then decodes it from the first k shares \
            (no erasure decoding) and from the last k (worst case). Each is timed with 1 and \
            with 2 threads; the median of --runs is printed. MB = 1e6 bytes.

            \(ExitStatus.help)
            """)

    @Option(name: .customLong("size-mib"), help: "File size in MiB.")
    var sizeMiB: Int = 256

    @Option(help: "Shares needed (k).")
    var needed: Int = 3

    @Option(help: "Total shares (n).")
    var total: Int = 10

    @Option(name: .customLong("segment-size"), help: "Maximum segment size in bytes.")
    var segmentSize: Int = EncodingParameters.defaultMaxSegmentSize

    @Option(help: "Runs per figure (the median is reported).")
    var runs: Int = 3

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        try reportingErrors {
            let path = try simdPathFromEnvironment()
            let size = sizeMiB << 20
            var data = [UInt8](repeating: 0, count: size)
            var seed: UInt64 = 42
            data.withUnsafeMutableBytes { b in
                let words = b.bindMemory(to: UInt64.self)
                for i in 0..<words.count {
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    words[i] = seed ^ (seed >> 29)
                }
            }
            let source = MemorySource(data)
            let secret = [UInt8](repeating: 7, count: 16)
            let params = EncodingParameters(needed: needed, happy: min(total, 7), total: total, maxSegmentSize: segmentSize)
            var figures: [(String, Int, Double)] = []
            for threads in [1, 2] {
                let encoder = try CHKEncoder(parameters: params, threads: threads, simdPath: path)
                var rates: [Double] = []
                for _ in 0..<runs {
                    let t0 = monotonicNow()
                    _ = try encoder.encode(source: source, convergenceSecret: secret, sink: DiscardShareSink())
                    rates.append(Double(size) / (monotonicNow() - t0) / 1e6)
                }
                figures.append(("encode", threads, median(rates)))
            }
            // Shares in memory for decoding.
            let sink = MemoryShareSink(shares: total)
            let encoder = try CHKEncoder(parameters: params, threads: 2, simdPath: path)
            guard case let .chk(cap, _) = try encoder.encode(source: source, convergenceSecret: secret, sink: sink) else {
                throw GridError(.internal, "expected a CHK file")
            }
            let readers = sink.shares.enumerated().map { MemoryShareReader(shareNumber: $0.offset, bytes: $0.element) }
            for (label, subset) in [("decode-systematic", Array(readers.prefix(needed))),
                                    ("decode-worst", Array(readers.suffix(needed)))] {
                for threads in [1, 2] {
                    var rates: [Double] = []
                    for _ in 0..<runs {
                        let out = CountingSink()
                        let t0 = monotonicNow()
                        let d = CHKDecoder(capability: cap, shares: subset, simdPath: path, threads: threads)
                        try d.decode(to: out)
                        rates.append(Double(size) / (monotonicNow() - t0) / 1e6)
                        guard out.count == UInt64(size) else { throw GridError(.internal, "decode produced \(out.count) bytes") }
                    }
                    figures.append((label, threads, median(rates)))
                }
            }
            if json {
                let rows = figures.map {
                    "{\"op\": \"\($0.0)\", \"threads\": \($0.1), \"size_bytes\": \(size), \"k\": \(needed), \"n\": \(total), "
                        + "\"segment_size\": \(segmentSize), \"path\": \"\(path)\", \"mbps\": \(fmt($0.2, 1))}"
                }
                FileHandleStdout.write("[\n  " + rows.joined(separator: ",\n  ") + "\n]\n")
            } else {
                FileHandleStdout.write("CHK \(needed)-of-\(total), \(sizeMiB) MiB, segment \(segmentSize), SIMD \(path)\n")
                for (op, t, r) in figures {
                    FileHandleStdout.write(pad(op, 18) + " threads=\(t) " + lpad(fmt(r, 1), 8) + " MB/s\n")
                }
            }
        }
    }
}

final class CountingSink: PlaintextSink {
    var count: UInt64 = 0
    func write(_ bytes: UnsafeRawBufferPointer) throws { count += UInt64(bytes.count) }
}
