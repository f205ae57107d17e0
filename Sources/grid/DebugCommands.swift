import ArgumentParser
import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridStorage
import GridSystem

struct Debug: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug",
        abstract: "Offline tools: encode a file into shares, decode shares, inspect a share.",
        discussion: ExitStatus.help,
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

            Example: grid debug encode --convergence-secret 00112233445566778899aabbccddeeff photo.jpg shares/

            \(ExitStatus.help)
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
        try reportingErrors {
            let path = try simdPathFromEnvironment()
            guard let secret = Hex.decode(convergenceSecret) else {
                throw GridError(.usage, "--convergence-secret must be hex digits, e.g. 000102030405060708090a0b0c0d0e0f")
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

            Example: grid debug decode URI:CHK:... shares/ -o photo.jpg

            \(ExitStatus.help)
            """)

    @Argument(help: "The read capability (URI:CHK:... or URI:LIT:...).")
    var cap: String

    @Argument(help: "Directory of share files.")
    var sharedir: String?

    @Option(name: .shortAndLong, help: "Write the file here instead of stdout.")
    var output: String?

    func run() throws {
        try reportingErrors {
            let path = try simdPathFromEnvironment()
            let capability = try Capability(parsing: cap)
            var readers: [ShareReader] = []
            if case .chk = capability {
                guard let dir = sharedir else { throw GridError(.usage, "a CHK capability needs SHAREDIR") }
                readers = try shareReaders(in: dir)
            }
            // Write to a temporary name and rename at the end, so a failed decode leaves no partial file.
            let sink: PlaintextSink
            var tmp: String?
            if let out = output {
                tmp = out + ".partial-\(CurrentProcess.id)"
                sink = try FileDescriptorSink(path: tmp!)
            } else {
                sink = FileDescriptorSink(.standardOutput)
            }
            do {
                let decoder = try decodeCapability(capability, shares: readers, to: sink, simdPath: path)
                if let d = decoder, !d.badShares.isEmpty {
                    FileHandleStderr.write("grid: warning: shares set aside: \(d.badShareSummary)\n")
                }
                if let t = tmp, let out = output { try FileSystem.rename(t, to: out) }
            } catch {
                if let t = tmp { try? FileSystem.remove(t) }
                throw error
            }
        }
    }
}

/// Opens every file in `dir` whose name is a share number: bare share data, or a share
/// file copied from a server's storage directory (its container is looked through).
func shareReaders(in dir: String) throws -> [ShareReader] {
    _ = try FileDescriptor(path: dir, .directory)  // a clear error when it is missing or not a directory
    return try FileSystem.list(dir).sorted().compactMap { name -> ShareReader? in
        guard let n = Int(name), n >= 0, n < 256, String(n) == name else { return nil }
        return try openShareFile("\(dir)/\(name)", shareNumber: n)
    }
}

/// A reader of the share data in `path`, whether bare or inside an immutable container.
func openShareFile(_ path: String, shareNumber: Int) throws -> ShareReader {
    if let info = try ShareFileInfo.inspect(path: path), case .immutable = info.kind {
        return try FileShareReader(path: path, shareNumber: shareNumber, dataOffset: info.dataOffset, dataLength: info.dataLength)
    }
    return try FileShareReader(path: path, shareNumber: shareNumber)
}

struct DebugDumpShare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump-share",
        abstract: "Print a share's container, leases, header, section offsets and URI extension block.",
        discussion: """
            FILE is a share's data as `grid debug encode` writes it, or a share file exactly as \
            it lies in a server's storage/shares/ directory (Tahoe's immutable container v1 or \
            v2, or a mutable container), whose container header and leases are printed too.

            Example: grid debug dump-share ~/.grid/storage/storage/shares/ab/ab3.../0

            \(ExitStatus.help)
            """)

    @Argument(help: "A share file.")
    var file: String

    func run() throws {
        try reportingErrors {
            var lines: [String] = []
            let info = try ShareFileInfo.inspect(path: file)
            let reader: FileShareReader
            if let info {
                switch info.kind {
                case let .immutable(v): lines.append("container: immutable, version \(v)")
                case let .mutable(v): lines.append("container: mutable, version \(v)")
                }
                lines.append("share data: \(info.dataLength) bytes at offset \(info.dataOffset)")
                if let id = info.writeEnablerNodeID { lines.append("write enabler recorded by: \(Base32.encode(id))") }
                lines.append("leases: \(info.leases.count)")
                for (i, l) in info.leases.enumerated() {
                    lines.append("  lease \(i): owner \(l.ownerNumber), expires \(l.expiration) (unix), "
                        + "renew-secret hash \(Hex.encode(Array(l.renewHash.prefix(4))))…")
                }
                if case .mutable = info.kind {
                    lines.append("(mutable share contents are not decoded yet)")
                    FileHandleStdout.write(lines.joined(separator: "\n") + "\n")
                    return
                }
                reader = try FileShareReader(path: file, shareNumber: 0, dataOffset: info.dataOffset, dataLength: info.dataLength)
            } else {
                reader = try FileShareReader(path: file, shareNumber: 0)
            }
            let (layout, uebBytes) = try CHKShareValidator.readHeader(reader)
            lines += [
                "share data: \(reader.size) bytes",
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
                "URI extension length: \(uebBytes.count)",
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
