#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors from encoding, decoding and their I/O. Messages are one line and name the
/// file or share at fault.
public struct ImmutableError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }

    static func errno(_ what: String) -> ImmutableError {
        ImmutableError("\(what): \(String(cString: strerror(Glibc.errno)))")
    }
}

/// Plaintext that can be read at any offset (the encoder reads it twice: once for the
/// convergent key, once to encrypt).
public protocol RandomAccessSource: AnyObject {
    var size: UInt64 { get }
    /// Fills `buffer` from `offset`; returns the number of bytes read (short only at the end).
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A file read with pread(2).
public final class FileSource: RandomAccessSource, Sendable {
    public let path: String
    let fd: Int32
    public let size: UInt64

    public init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw ImmutableError.errno("cannot open \(path)") }
        var st = stat()
        if fstat(fd, &st) != 0 {
            close(fd)
            throw ImmutableError.errno("cannot stat \(path)")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw ImmutableError("\(path) is a directory, not a file")
        }
        size = UInt64(st.st_size)
    }

    /// Takes ownership of an open file descriptor (for example a spooled, unlinked temporary file).
    public init(fd: Int32, name: String) throws {
        path = name
        self.fd = fd
        var st = stat()
        if fstat(fd, &st) != 0 {
            close(fd)
            throw ImmutableError.errno("cannot stat \(name)")
        }
        size = UInt64(st.st_size)
    }

    deinit { close(fd) }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let r = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if r < 0 {
                if errno == EINTR { continue }
                throw ImmutableError.errno("cannot read \(path)")
            }
            if r == 0 { break }
            done += r
        }
        return done
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
    var fds: [Int32]

    public init(directory: String, shares: Int) throws {
        self.directory = directory
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw ImmutableError.errno("cannot create directory \(directory)")
        }
        fds = []
        for i in 0..<shares {
            let p = "\(directory)/\(i)"
            let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd < 0 {
                let e = ImmutableError.errno("cannot create \(p)")
                for f in fds { close(f) }
                throw e
            }
            fds.append(fd)
        }
    }

    deinit { for f in fds where f >= 0 { close(f) } }

    public func write(share: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let r = pwrite(fds[share], bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if r < 0 {
                if errno == EINTR { continue }
                throw ImmutableError.errno("cannot write \(directory)/\(share)")
            }
            done += r
        }
    }

    public func finish() throws {
        for (i, fd) in fds.enumerated() {
            if fsync(fd) != 0 { throw ImmutableError.errno("cannot flush \(directory)/\(i)") }
            close(fd)
            fds[i] = -1
        }
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

/// A share held in a file (share data only, as `grid debug encode` writes it).
public final class FileShareReader: ShareReader {
    public let shareNumber: Int
    public let path: String
    let source: FileSource
    public var size: UInt64 { source.size }

    public init(path: String, shareNumber: Int) throws {
        self.path = path
        self.shareNumber = shareNumber
        source = try FileSource(path: path)
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let n = try source.read(at: offset, into: buffer)
        if n != buffer.count {
            throw ImmutableError("share \(shareNumber): truncated (wanted \(buffer.count) bytes at offset \(offset), file has \(size))")
        }
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
            throw ImmutableError("share \(shareNumber): truncated (wanted \(buffer.count) bytes at offset \(offset), share has \(size))")
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
    let fd: Int32
    let name: String
    let owned: Bool

    public init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
        owned = false
    }

    /// Creates (or truncates) `path`.
    public init(path: String) throws {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw ImmutableError.errno("cannot create \(path)") }
        name = path
        owned = true
    }

    deinit { if owned { close(fd) } }

    /// Flushes the file to disk (before renaming it into place).
    public func sync() throws {
        if fsync(fd) != 0 && errno != EINVAL { throw ImmutableError.errno("cannot flush \(name)") }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let r = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if r < 0 {
                if errno == EINTR { continue }
                throw ImmutableError.errno("cannot write \(name)")
            }
            done += r
        }
    }
}

/// Collects plaintext in memory.
public final class MemoryPlaintextSink: PlaintextSink {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public func write(_ b: UnsafeRawBufferPointer) throws { bytes += b }
}
