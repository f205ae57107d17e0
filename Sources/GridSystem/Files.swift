import Foundation
#if canImport(Glibc)
import Glibc
#endif
#if os(Linux)
import CEpoll
#endif

/// What kind of object a path or descriptor names.
public enum FileKind: Sendable, Equatable {
    case regular, directory, fifo, characterDevice, blockDevice, socket, symbolicLink, other

    init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFIFO: self = .fifo
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFSOCK: self = .socket
        case S_IFLNK: self = .symbolicLink
        default: self = .other
        }
    }
}

/// The parts of stat(2) grid uses.
public struct FileStatus: Sendable, Equatable {
    public let kind: FileKind
    public let size: UInt64
    /// Permission bits (e.g. 0o600).
    public let permissions: UInt32
    /// Last modification, Unix seconds.
    public let modified: UInt64
    /// The whole st_mode (type and permission bits), st_ino, st_dev, st_uid, st_gid.
    public let mode: UInt32
    public let inode: UInt64
    public let device: UInt64
    public let uid: UInt32
    public let gid: UInt32
    /// Modification and status-change times: seconds and nanoseconds.
    public let mtime: (seconds: Int64, nanoseconds: Int64)
    public let ctime: (seconds: Int64, nanoseconds: Int64)

    init(_ st: stat) {
        kind = FileKind(mode: st.st_mode)
        size = UInt64(max(0, st.st_size))
        permissions = UInt32(st.st_mode) & 0o7777
        modified = UInt64(max(0, st.st_mtim.tv_sec))
        mode = UInt32(st.st_mode)
        inode = UInt64(st.st_ino)
        device = UInt64(st.st_dev)
        uid = UInt32(st.st_uid)
        gid = UInt32(st.st_gid)
        mtime = (Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec))
        ctime = (Int64(st.st_ctim.tv_sec), Int64(st.st_ctim.tv_nsec))
    }

    public static func == (a: FileStatus, b: FileStatus) -> Bool {
        a.kind == b.kind && a.size == b.size && a.mode == b.mode && a.inode == b.inode && a.device == b.device
            && a.mtime == b.mtime && a.ctime == b.ctime && a.uid == b.uid && a.gid == b.gid
    }
}

/// How to open a file; the empty set opens it for reading.
public struct OpenOptions: OptionSet, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public static let write = OpenOptions(rawValue: O_WRONLY)
    public static let readWrite = OpenOptions(rawValue: O_RDWR)
    public static let create = OpenOptions(rawValue: O_CREAT)
    public static let truncate = OpenOptions(rawValue: O_TRUNC)
    /// With `.create`: fail if the file exists.
    public static let exclusive = OpenOptions(rawValue: O_EXCL)
    public static let append = OpenOptions(rawValue: O_APPEND)
    public static let directory = OpenOptions(rawValue: O_DIRECTORY)
    /// Write a new file (or empty an old one).
    public static let replace: OpenOptions = [.write, .create, .truncate]
}

/// An open file descriptor, closed when the last reference goes. Every call retries
/// EINTR and throws a `SystemError` naming the operation and the file.
public final class FileDescriptor: @unchecked Sendable {
    public let rawValue: Int32
    /// The file's path, or a name for it ("stdin").
    public let path: String
    let owned: Bool

    /// open(2) (close-on-exec); new files get `permissions`.
    public init(path: String, _ options: OpenOptions = [], permissions: UInt32 = 0o600) throws {
        self.path = path
        rawValue = try systemCall("open", path) { open(path, options.rawValue | O_CLOEXEC, mode_t(permissions)) }
        owned = true
    }

    /// Wraps a descriptor someone else opened; `owned` says whether to close it.
    public init(adopting fd: Int32, name: String, owned: Bool = true) {
        rawValue = fd
        path = name
        self.owned = owned
    }

    deinit { if owned { close(rawValue) } }

    /// The first error a background flush (`flushInBackground`) met, kept for `sync()`:
    /// after a failed fsync Linux reports the error once, so whoever syncs last must learn it here.
    let deferredSyncError = Locked<SystemError?>(nil)

    public static let standardInput = FileDescriptor(adopting: 0, name: "stdin", owned: false)
    public static let standardOutput = FileDescriptor(adopting: 1, name: "stdout", owned: false)
    public static let standardError = FileDescriptor(adopting: 2, name: "stderr", owned: false)

    public func status() throws -> FileStatus {
        var st = stat()
        try systemCall("stat", path) { fstat(rawValue, &st) }
        return FileStatus(st)
    }

    /// Whether this is a terminal (progress bars are drawn only then).
    public var isTerminal: Bool { isatty(rawValue) != 0 }

    /// The file's current size.
    public func size() throws -> UInt64 { try status().size }

    /// One read(2) at the current position: the bytes read, 0 at the end.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try systemCall("read", path) { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
    }

    /// pread(2) until `buffer` is full or the file ends; returns the bytes read.
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try systemCall("read", path) {
                pread(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Up to `count` bytes at `offset` (fewer only where the file ends).
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let n = try out.withUnsafeMutableBytes { try read(at: offset, into: $0) }
        if n < count { out.removeLast(count - n) }
        return out
    }

    /// write(2) until every byte is written.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            done += try systemCall("write", path) { Glibc.write(rawValue, bytes.baseAddress! + done, bytes.count - done) }
        }
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    /// pwrite(2) until every byte is written.
    public func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            done += try systemCall("write", path) {
                pwrite(rawValue, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            }
        }
    }

    public func write(at offset: UInt64, _ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write(at: offset, $0) } }

    /// fsync(2). Descriptors that cannot be synced (a pipe, a terminal) are not an error.
    /// Also throws the error an earlier background flush of this descriptor met: a flush
    /// still waiting is dropped (this one does its work) and one under way is waited for,
    /// since its fdatasync may have taken an error this fsync will no longer see.
    public func sync() throws {
        BackgroundFlusher.shared.settle(self)
        let (r, e) = retryingInterrupts { fsync(rawValue) }
        if let deferred = deferredSyncError.value { throw deferred }
        if r < 0 && e != EINVAL && e != EROFS { throw SystemError("flush", path, errno: e) }
    }

    /// fdatasync(2) on the background flusher's thread, soon; a request for a descriptor
    /// already waiting there is merged with it. The descriptor stays open until then. An
    /// error is kept and thrown by the next `sync()`. Files written for longer than the
    /// device takes to flush them (a share, a downloaded file) then find little left for
    /// their final `sync()`: without it the device's whole write cache is flushed at the
    /// end (0.3-0.5 s for ten 45 MB shares written at once on a virtual disk).
    public func flushInBackground() {
        BackgroundFlusher.shared.request(self)
    }

    /// Called on the flusher's thread.
    func flushNow() {
        let (r, e) = retryingInterrupts { fdatasync(rawValue) }
        BackgroundFlusher.afterFlush.value?()
        if r < 0 && e != EINVAL && e != EROFS {
            deferredSyncError.mutate { if $0 == nil { $0 = SystemError("flush", path, errno: e) } }
        }
    }

    public func truncate(to size: UInt64) throws {
        try systemCall("truncate", path) { ftruncate(rawValue, off_t(size)) }
    }

    public func setPermissions(_ permissions: UInt32) throws {
        try systemCall("chmod", path) { fchmod(rawValue, mode_t(permissions)) }
    }

    /// Asks the kernel to start writing the file's dirty pages now, without waiting, so a
    /// later fsync finds little left to do (Linux; a no-op elsewhere).
    public func startWriteback() {
        #if os(Linux)
        _ = sync_file_range(rawValue, 0, 0, UInt32(GRID_SYNC_FILE_RANGE_WRITE))
        #endif
    }

    /// flock(2) exclusive, without waiting: true when this descriptor now holds the lock,
    /// false when another holds it. The lock lasts as long as the descriptor is open.
    public func tryLockExclusive() throws -> Bool {
        let (r, e) = retryingInterrupts { flock(rawValue, LOCK_EX | LOCK_NB) }
        if r == 0 { return true }
        if e == EWOULDBLOCK { return false }
        throw SystemError("lock", path, errno: e)
    }
}

/// Calls on paths. Each throws a `SystemError` naming the operation and the path.
public enum FileSystem {
    /// stat(2); nil when nothing is there.
    public static func status(_ path: String, followLinks: Bool = true) throws -> FileStatus? {
        var st = stat()
        let (r, e) = retryingInterrupts { followLinks ? stat(path, &st) : lstat(path, &st) }
        if r == 0 { return FileStatus(st) }
        if e == ENOENT || e == ENOTDIR { return nil }
        throw SystemError("stat", path, errno: e)
    }

    public static func exists(_ path: String) -> Bool { ((try? status(path)) ?? nil) != nil }

    /// mkdir(2) of one directory; false when it already existed.
    @discardableResult
    public static func makeDirectory(_ path: String, permissions: UInt32 = 0o700) throws -> Bool {
        let (r, e) = retryingInterrupts { mkdir(path, mode_t(permissions)) }
        if r == 0 { return true }
        if e == EEXIST { return false }
        throw SystemError("create directory", path, errno: e)
    }

    /// mkdir -p: creates each missing directory on the way; new ones get `permissions`.
    public static func makeDirectories(_ path: String, permissions: UInt32 = 0o700) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            try makeDirectory(current, permissions: permissions)
        }
    }

    public static func rename(_ from: String, to: String) throws {
        try systemCall("rename", "\(from) to \(to)") { Glibc.rename(from, to) }
    }

    /// unlink(2); a file that is already gone is not an error.
    public static func remove(_ path: String) throws {
        let (r, e) = retryingInterrupts { unlink(path) }
        if r < 0 && e != ENOENT { throw SystemError("remove", path, errno: e) }
    }

    /// rmdir(2) of a directory that may be non-empty or gone: true when it was removed.
    @discardableResult
    public static func removeDirectoryIfEmpty(_ path: String) -> Bool { rmdir(path) == 0 }

    /// Sets a path's access and modification times (nanoseconds kept), not following a
    /// symlink.
    public static func setTimes(_ path: String, modified: (seconds: Int64, nanoseconds: Int64)) throws {
        var times = [timespec(tv_sec: Int(modified.seconds), tv_nsec: Int(modified.nanoseconds)),
                     timespec(tv_sec: Int(modified.seconds), tv_nsec: Int(modified.nanoseconds))]
        _ = try systemCall("set times of", path) { utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW) }
    }

    /// chmod(2) of a path's permission bits.
    public static func setPermissions(_ path: String, _ permissions: UInt32) throws {
        _ = try systemCall("chmod", path) { chmod(path, mode_t(permissions & 0o7777)) }
    }

    /// symlink(2): a link at `path` pointing at `target`.
    public static func makeSymlink(_ path: String, target: String) throws {
        _ = try systemCall("symlink", path) { symlink(target, path) }
    }

    /// readlink(2): where a symlink points (at most 64 KiB).
    public static func readSymlink(_ path: String) throws -> String {
        var buf = [CChar](repeating: 0, count: 65536)
        let n = try systemCall("readlink", path) { readlink(path, &buf, buf.count) }
        return String(decoding: buf[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The absolute form of a path (relative to the current directory; not resolved).
    public static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buf = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buf, buf.count) != nil else { return path }
        let cwd = String(cString: buf)
        return path == "." ? cwd : cwd + "/" + path
    }

    /// The names in a directory (not "." and ".."); empty when it does not exist.
    public static func list(_ path: String) throws -> [String] {
        guard let d = opendir(path) else {
            let e = errno
            if e == ENOENT || e == ENOTDIR { return [] }
            throw SystemError("list", path, errno: e)
        }
        defer { closedir(d) }
        var out: [String] = []
        while let entry = readdir(d) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    /// rm -rf; what cannot be removed is left.
    public static func removeTree(_ path: String) {
        guard let st = try? status(path, followLinks: false) else { return }
        if st.kind == .directory {
            for name in (try? list(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// fsync(2) of a directory, so renames and creations in it survive a crash.
    public static func syncDirectory(_ path: String) throws {
        let d = try FileDescriptor(path: path, .directory)
        try d.sync()
    }

    /// syncfs(2): flushes everything written to the filesystem holding `path` (one call
    /// where a batch has touched many files, instead of an fsync per file).
    public static func syncFilesystem(_ path: String) throws {
        let d = try FileDescriptor(path: path, .directory)
        guard let call = syncfsCall else { sync(); return }
        let (r, e) = retryingInterrupts { call(d.rawValue) }
        if r < 0 { throw SystemError("flush filesystem", path, errno: e) }
    }

    /// glibc's syncfs, looked up at run time (Glibc's Swift overlay does not declare it).
    private static let syncfsCall: (@convention(c) (Int32) -> Int32)? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "syncfs") else { return nil }
        return unsafeBitCast(sym, to: (@convention(c) (Int32) -> Int32).self)
    }()

    /// The whole of a small file; nil when it does not exist. Refuses files over `maxSize`.
    public static func readFile(_ path: String, maxSize: Int = 1 << 20) throws -> [UInt8]? {
        let f: FileDescriptor
        do { f = try FileDescriptor(path: path) } catch let e as SystemError where e.code == ENOENT {
            return nil
        }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buf.withUnsafeMutableBytes { try f.read(into: $0) }
            if n == 0 { break }
            out += buf[0..<n]
            if out.count > maxSize { throw SystemError("read", path, errno: EFBIG) }
        }
        return out
    }

    /// Writes a file atomically with `permissions` (temp file in the same directory, fsync, rename,
    /// then fsync of the directory): readers see the old file or the new one, never a part.
    public static func writeFileAtomically(_ path: String, _ bytes: [UInt8], permissions: UInt32 = 0o600) throws {
        let tmp = path + ".tmp-\(getpid())"
        do {
            let f = try FileDescriptor(path: tmp, .replace, permissions: permissions)
            try f.setPermissions(permissions)
            try f.write(bytes)
            try f.sync()
            try rename(tmp, to: path)
        } catch {
            try? remove(tmp)
            throw error
        }
        try? syncDirectory(directoryName(path))
    }

    /// The directory part of a path ("." for a bare name).
    public static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The working directory.
    public static var currentDirectory: String {
        var buf = [CChar](repeating: 0, count: 4096)
        return getcwd(&buf, buf.count) != nil ? String(cString: buf) : "."
    }

    /// $TMPDIR, else /tmp.
    public static var temporaryDirectory: String {
        if let t = getenv("TMPDIR"), t[0] != 0 { return String(cString: t) }
        return "/tmp"
    }

    /// A new, empty file that is already unlinked (mkstemp in `directory`): it vanishes
    /// when the descriptor closes.
    public static func anonymousFile(in directory: String = temporaryDirectory) throws -> FileDescriptor {
        var template = Array("\(directory)/grid-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 { throw SystemError("create a temporary file in", directory, errno: errno) }
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        unlink(path)
        return FileDescriptor(adopting: fd, name: path)
    }

    /// mkdtemp(3) under $TMPDIR (or /tmp): a new private directory.
    public static func makeTemporaryDirectory(prefix: String) throws -> String {
        let dir = temporaryDirectory
        var template = Array("\(dir)/\(prefix)-XXXXXX".utf8CString)
        let ok = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) } != nil
        if !ok { throw SystemError("create a temporary directory in", dir, errno: errno) }
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    static func fileSystemStatus(_ path: String) throws -> statvfs {
        var s = statvfs()
        try systemCall("measure free space of", path) { statvfs(path, &s) }
        return s
    }

    /// Bytes an unprivileged user may still write on the filesystem holding `path`.
    public static func availableSpace(_ path: String) throws -> UInt64 {
        let s = try fileSystemStatus(path)
        return UInt64(s.f_bavail) * UInt64(s.f_frsize)
    }

    /// The size of the filesystem holding `path`.
    public static func totalSpace(_ path: String) throws -> UInt64 {
        let s = try fileSystemStatus(path)
        return UInt64(s.f_blocks) * UInt64(s.f_frsize)
    }

    /// The filesystem's allocation unit for `path` (files take whole blocks).
    public static func blockSize(_ path: String) throws -> UInt64 { max(512, UInt64(try fileSystemStatus(path).f_bsize)) }

    /// The path of the running executable.
    public static func currentExecutable() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        if n > 0 { return String(cString: buf) }
        return CommandLine.arguments[0]
    }
}

/// A small text file, such as a key or a secret; nil when it does not exist.
public func readSecretFile(_ path: String) throws -> String? {
    try FileSystem.readFile(path).map { String(decoding: $0, as: UTF8.self) }
}

/// Writes a file only its owner can read (0600 unless told otherwise), atomically.
public func writeSecretFile(_ path: String, _ contents: String, permissions: UInt32 = 0o600) throws {
    try FileSystem.writeFileAtomically(path, Array(contents.utf8), permissions: permissions)
}

/// One thread per process that runs fdatasync(2) on the files handed to it, one at a time
/// (a slow device is asked for one flush at a time, never a pile of them), oldest request
/// first. Each file's writeback is started (sync_file_range) as soon as the thread sees its
/// request, so files waiting their turn are written meanwhile, as they were when writers
/// started it themselves. Started on first use; it waits while there is nothing to flush.
final class BackgroundFlusher: @unchecked Sendable {
    static let shared = BackgroundFlusher()
    /// Tests: runs on the flusher's thread between a flush's fdatasync and the recording of its error.
    static let afterFlush = Locked<(@Sendable () -> Void)?>(nil)
    let cond = NSCondition()
    /// Requests in order; `started`: its writeback was started already.
    var queue: [(file: FileDescriptor, started: Bool)] = []
    var queued = Set<ObjectIdentifier>()
    /// The file being flushed now (alive: `run` holds it).
    var inFlight: ObjectIdentifier?
    var running = false
    /// Requests made (merged ones included): tests.
    var requests = 0

    func request(_ file: FileDescriptor) {
        cond.lock()
        defer { cond.unlock() }
        requests += 1
        guard queued.insert(ObjectIdentifier(file)).inserted else { return }
        queue.append((file, false))
        if !running {
            running = true
            let t = Thread { [self] in run() }
            t.name = "grid-flush"
            t.stackSize = 256 << 10
            t.start()
        }
        cond.broadcast()  // `settle` waits on the same condition
    }

    /// Before a file's own fsync: drops its waiting request and waits out a flush of it
    /// under way (whose error is then recorded on the file).
    func settle(_ file: FileDescriptor) {
        let id = ObjectIdentifier(file)
        cond.lock()
        defer { cond.unlock() }
        if queued.remove(id) != nil { queue.removeAll { $0.file === file } }
        while inFlight == id { cond.wait() }
    }

    func run() {
        while true {
            cond.lock()
            while queue.isEmpty { cond.wait() }
            let file = queue.removeFirst().file
            // A request that comes while this flush runs is for bytes it may miss: queue it.
            queued.remove(ObjectIdentifier(file))
            inFlight = ObjectIdentifier(file)
            let waiting = queue.indices.filter { !queue[$0].started }.map { i in
                queue[i].started = true
                return queue[i].file
            }
            cond.unlock()
            for f in waiting { f.startWriteback() }
            file.flushNow()
            cond.lock()
            inFlight = nil
            cond.broadcast()
            cond.unlock()
        }
    }
}
