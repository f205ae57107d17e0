import ArgumentParser
import GridCodec
import GridCrypto
import GridFormat
import GridImmutable

#if canImport(Glibc)
import Glibc
#endif

struct Debug: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Offline tools: encode a file into shares, decode shares, inspect a share.",
        subcommands: [DebugEncode.self, DebugDecode.self, DebugDumpShare.self])
}

struct DebugEncode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Encode FILE into a capability and N share files, exactly as Tahoe-LAFS 1.20 would.",
        discussion: """
            Prints the capability on stdout. Writes OUTDIR/0 ... OUTDIR/(N-1), each holding a \
            share's data exactly as a storage server stores it after its 12-byte container \
            header. Files of 55 bytes or less become URI:LIT capabilities and produce no shares.
            """)

    @Option(name: .customLong("convergence-secret"), help: "The convergence secret, in hex (Tahoe's default is 16 bytes).")
    var convergenceSecret: String

    @Option(name: .customLong("needed"), help: "Shares needed to rebuild the file (k).")
    var needed: Int = 3

    @Option(name: .customLong("happy"), help: "Servers of happiness (placement only; no effect on the bytes). Default: min(7, total).")
    var happy: Int?

    @Option(name: .customLong("total"), help: "Shares produced (n).")
    var total: Int = 10

    @Option(name: .customLong("segment-size"), help: "Maximum segment size in bytes.")
    var segmentSize: Int = EncodingParameters.defaultMaxSegmentSize

    @Argument(help: "The file to encode.")
    var file: String

    @Argument(help: "Directory for the share files (created if missing).")
    var outdir: String

    func run() throws {
        let path = try simdPathFromEnvironment()
        try reportingErrors {
            guard let secret = Hex.decode(convergenceSecret) else {
                throw ImmutableError("--convergence-secret must be hex digits, e.g. 000102030405060708090a0b0c0d0e0f")
            }
            let params = EncodingParameters(needed: needed, happy: happy ?? min(7, total), total: total, maxSegmentSize: segmentSize)
            let encoder = try CHKEncoder(parameters: params, threads: 2, simdPath: path)
            let source = try FileSource(path: file)
            let result: EncodeResult
            if source.size <= UInt64(Capability.literalThreshold) {
                result = try encoder.encode(source: source, convergenceSecret: secret, sink: DiscardShareSink())
            } else {
                let sink = try DirectoryShareSink(directory: outdir, shares: total)
                result = try encoder.encode(source: source, convergenceSecret: secret, sink: sink)
            }
            FileHandleStdout.write(result.capability.description + "\n")
        }
    }
}

struct DebugDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Rebuild a file from its capability and the share files in SHAREDIR.",
        discussion: """
            SHAREDIR holds share files named by share number (0, 1, ...), as `grid debug encode` \
            writes them. Any k good shares suffice; every block and hash is verified, and a share \
            that fails a check is named on stderr and replaced by another.
            """)

    @Argument(help: "The read capability (URI:CHK:... or URI:LIT:...).")
    var cap: String

    @Argument(help: "Directory of share files.")
    var sharedir: String?

    @Option(name: .shortAndLong, help: "Write the file here instead of stdout.")
    var output: String?

    func run() throws {
        let path = try simdPathFromEnvironment()
        try reportingErrors {
            let capability = try Capability(parsing: cap)
            var readers: [ShareReader] = []
            if case .chk = capability {
                guard let dir = sharedir else { throw ImmutableError("a CHK capability needs SHAREDIR") }
                readers = try shareReaders(in: dir)
            }
            // Write to a temporary name and rename at the end, so a failed decode leaves no partial file.
            let sink: PlaintextSink
            var tmp: String?
            if let out = output {
                tmp = out + ".partial-\(getpid())"
                sink = try FileDescriptorSink(path: tmp!)
            } else {
                sink = FileDescriptorSink(fd: 1, name: "stdout")
            }
            do {
                let decoder = try decodeCapability(capability, shares: readers, to: sink, simdPath: path)
                if let d = decoder, !d.badShares.isEmpty {
                    FileHandleStderr.write("grid: warning: shares set aside: \(d.badShareSummary)\n")
                }
                if let t = tmp, let out = output {
                    guard rename(t, out) == 0 else { throw ImmutableError("cannot rename \(t) to \(out)") }
                }
            } catch {
                if let t = tmp { unlink(t) }
                throw error
            }
        }
    }
}

/// Opens every file in `dir` whose name is a share number.
func shareReaders(in dir: String) throws -> [ShareReader] {
    guard let d = opendir(dir) else { throw ImmutableError("cannot open share directory \(dir): \(String(cString: strerror(errno)))") }
    defer { closedir(d) }
    var out: [ShareReader] = []
    while let e = readdir(d) {
        let name = withUnsafePointer(to: e.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        guard let n = Int(name), n >= 0, n < 256, String(n) == name else { continue }
        out.append(try FileShareReader(path: "\(dir)/\(name)", shareNumber: n))
    }
    return out
}

struct DebugDumpShare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump-share",
        abstract: "Print a share's header, section offsets and URI extension block.")

    @Argument(help: "A share data file (as written by `grid debug encode`).")
    var file: String

    func run() throws {
        try reportingErrors {
            let src = try FileSource(path: file)
            var head = [UInt8](repeating: 0, count: Int(min(0x44, src.size)))
            _ = try head.withUnsafeMutableBytes { try src.read(at: 0, into: $0) }
            let layout = try ShareLayout(parsing: head)
            let reader = try FileShareReader(path: file, shareNumber: 0)
            let lenBytes = try reader.read(at: layout.uriExtensionOffset, length: layout.uebLengthFieldSize)
            let len = lenBytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard len <= 1 << 16 else { throw ImmutableError("URI extension length \(len) is absurd") }
            let uebBytes = try reader.read(at: layout.uriExtensionOffset + UInt64(layout.uebLengthFieldSize), length: Int(len))
            var lines = [
                "share file: \(file) (\(src.size) bytes)",
                "version: \(layout.version)",
                "block size: \(layout.blockSize)",
                "data size: \(layout.dataSize)",
                "offsets:",
                "  data: \(layout.dataOffset)",
                "  plaintext hash tree (unused): \(layout.plaintextHashTreeOffset)",
                "  crypttext hash tree: \(layout.crypttextHashTreeOffset)",
                "  block hashes: \(layout.blockHashesOffset)",
                "  share hashes: \(layout.shareHashesOffset)",
                "  URI extension: \(layout.uriExtensionOffset)",
                "URI extension length: \(len)",
                "URI extension hash: \(Base32.encode(TahoeHash.uriExtensionHash(uebBytes)))",
            ]
            // The parser bounds the share-hash section, so this read is small.
            let chain = try ShareLayout.parseShareHashes(
                try reader.read(at: layout.shareHashesOffset, length: Int(layout.shareHashesSize)))
            lines.append("share hash chain: " + chain.map { "\($0.0)" }.joined(separator: ", "))
            let ueb = try URIExtension(parsing: uebBytes)
            lines += [
                "URI extension block:",
                "  codec_name: \(ueb.codecName)",
                "  codec_params: \(ueb.codecParams)",
                "  tail_codec_params: \(ueb.tailCodecParams)",
                "  size: \(ueb.size)",
                "  segment_size: \(ueb.segmentSize)",
                "  num_segments: \(ueb.numSegments)",
                "  needed_shares: \(ueb.neededShares)",
                "  total_shares: \(ueb.totalShares)",
                "  crypttext_hash: \(Base32.encode(ueb.crypttextHash))",
                "  crypttext_root_hash: \(Base32.encode(ueb.crypttextRootHash))",
                "  share_root_hash: \(Base32.encode(ueb.shareRootHash))",
            ]
            for (k, v) in ueb.extra.sorted(by: { $0.key < $1.key }) { lines.append("  \(k): \(Hex.encode(v))") }
            FileHandleStdout.write(lines.joined(separator: "\n") + "\n")
        }
    }
}
