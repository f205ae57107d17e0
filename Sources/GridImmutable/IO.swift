import GridSystem

/// Plaintext that can be read at any offset (the encoder reads it twice: once for the
/// convergent key, once to encrypt).
public protocol RandomAccessSource: AnyObject {
    var size: UInt64 { get }
    /// Fills `buffer` from `offset`; returns the number of bytes read (short only at the end).
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A regular file read with pread(2).
public final class FileSource: RandomAccessSource, Sendable {
    public let path: String
    let file: FileDescriptor
    public let size: UInt64

    /// Opens a regular file. Anything else (a directory, a pipe, a device) is refused:
    /// its size is not known in advance (read such input as a stream and spool it).
    public init(path: String) throws {
        self.path = path
        file = try FileDescriptor(path: path)
        let st = try file.status()
        guard st.kind == .regular else { throw ImmutableError.notAFile(path: path, kind: st.kind) }
        size = st.size
    }

    /// Takes ownership of an open regular file (for example a spooled, unlinked temporary file).
    public init(file: FileDescriptor, name: String) throws {
        path = name
        self.file = file
        let st = try file.status()
        guard st.kind == .regular else { throw ImmutableError.notAFile(path: name, kind: st.kind) }
        size = st.size
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try file.read(at: offset, into: buffer)
    }
}

/// Bytes held in memory.
public final class MemorySource: RandomAccessSource, Sendable {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var size: UInt64 { UInt64(bytes.count) }
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard offset < size else { return 0 }
        let n = min(buffer.count, bytes.count - Int(offset))
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + Int(offset), byteCount: n)
        }
        return n
    }
}

/// Where an encoder puts share data: share `share` gets `bytes` at `offset` of its share data.
public protocol ShareSink: AnyObject {
    func write(share: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) throws
    /// Called once after the last write of every share.
    func finish() throws
}

/// Writes share i to DIR/i, the share data exactly as a storage server holds it
/// (without the container header).
public final class DirectoryShareSink: ShareSink {
    public let directory: String
    let files: [FileDescriptor]

    public init(directory: String, shares: Int) throws {
        self.directory = directory
        try FileSystem.makeDirectory(directory, permissions: 0o755)
        files = try (0..<shares).map {
            try FileDescriptor(path: "\(directory)/\($0)", .replace, permissions: 0o644)
        }
    }

    public func write(share: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) throws {
        try files[share].write(at: offset, bytes)
    }

    public func finish() throws {
        for f in files { try f.sync() }
    }
}

/// Keeps every share in memory (tests, small files).
public final class MemoryShareSink: ShareSink {
    public private(set) var shares: [[UInt8]]
    public init(shares: Int) { self.shares = Array(repeating: [], count: shares) }
    public func write(share: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) throws {
        let end = Int(offset) + bytes.count
        if shares[share].count < end { shares[share] += [UInt8](repeating: 0, count: end - shares[share].count) }
        shares[share].withUnsafeMutableBytes { dst in
            dst.baseAddress!.advanced(by: Int(offset)).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
    }
    public func finish() throws {}
}

/// Counts bytes and discards them (benchmarks).
public final class DiscardShareSink: ShareSink {
    public private(set) var bytesWritten: UInt64 = 0
    public init() {}
    public func write(share: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) throws {
        bytesWritten += UInt64(bytes.count)
    }
    public func finish() throws {}
}

/// One share's data, readable at any offset.
public protocol ShareReader: AnyObject {
    /// The share number.
    var shareNumber: Int { get }
    /// Bytes of share data available.
    var size: UInt64 { get }
    /// Reads exactly `length` bytes at `offset`, or throws (a short share is an error).
    func read(at offset: UInt64, length: Int) throws -> [UInt8]
    /// Reads exactly `buffer.count` bytes at `offset` into `buffer`.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
    /// A hint: these ranges will be read soon (a network reader starts fetching them).
    func prefetch(_ ranges: [(offset: UInt64, length: Int)])
}

extension ShareReader {
    public func prefetch(_ ranges: [(offset: UInt64, length: Int)]) {}

    public func read(at offset: UInt64, length: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        try out.withUnsafeMutableBytes { try read(at: offset, into: $0) }
        return out
    }
}

/// A share held in a file: the whole file (share data only, as `grid debug encode` writes
/// it) or a window of it (the share data inside a server's container).
public final class FileShareReader: ShareReader {
    public let shareNumber: Int
    public let path: String
    let file: FileDescriptor
    let base: UInt64
    public let size: UInt64

    public init(path: String, shareNumber: Int) throws {
        self.path = path
        self.shareNumber = shareNumber
        let source = try FileSource(path: path)
        file = source.file
        base = 0
        size = source.size
    }

    /// The `dataLength` bytes at `dataOffset` of the file are the share data.
    public init(path: String, shareNumber: Int, dataOffset: UInt64, dataLength: UInt64) throws {
        self.path = path
        self.shareNumber = shareNumber
        file = try FileDescriptor(path: path)
        base = dataOffset
        size = dataLength
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw ShareFailure.truncated(wanted: buffer.count, at: offset, size: size)
        }
        let n = try file.read(at: base + offset, into: buffer)
        if n != buffer.count { throw ShareFailure.truncated(wanted: buffer.count, at: offset, size: size) }
    }
}

/// A share held in memory.
public final class MemoryShareReader: ShareReader {
    public let shareNumber: Int
    public let bytes: [UInt8]
    public init(shareNumber: Int, bytes: [UInt8]) {
        self.shareNumber = shareNumber
        self.bytes = bytes
    }
    public var size: UInt64 { UInt64(bytes.count) }
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw ShareFailure.truncated(wanted: buffer.count, at: offset, size: size)
        }
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + Int(offset), byteCount: buffer.count)
        }
    }
}

/// Where decoded plaintext goes.
public protocol PlaintextSink: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// Writes to a file descriptor (a file or stdout).
public final class FileDescriptorSink: PlaintextSink {
    let file: FileDescriptor
    /// For a file to be synced at the end: ask for a background flush every this many
    /// bytes, so the disk works while the download does and the final sync finds little
    /// left (0: never).
    let writebackEvery: Int
    private var unflushed = 0

    public init(_ file: FileDescriptor) {
        self.file = file
        writebackEvery = 0
    }

    /// Creates (or truncates) `path`, to be synced by `sync()` at the end.
    public init(path: String) throws {
        file = try FileDescriptor(path: path, .replace, permissions: 0o644)
        writebackEvery = 8 << 20
    }

    /// Flushes the file to disk (before renaming it into place).
    public func sync() throws { try file.sync() }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        try file.write(bytes)
        guard writebackEvery > 0 else { return }
        unflushed += bytes.count
        if unflushed >= writebackEvery {
            file.flushInBackground()
            unflushed = 0
        }
    }
}

/// Collects plaintext in memory.
public final class MemoryPlaintextSink: PlaintextSink {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public func write(_ b: UnsafeRawBufferPointer) throws { bytes += b }
}
