import ArgumentParser
import Foundation
import GridClient
import GridCrypto
import GridLocalGrid
import GridNode
import GridSystem

/// Runs `body` with a throwaway local grid of `servers` storage daemons in a new
/// temporary directory and a client pool that sees all of them (`body` also gets how long
/// they took to announce themselves); then stops the daemons and removes the directory
/// (unless `keep`). `started`/`stopped` report the directory.
func withLocalGrid<T>(prefix: String, servers: Int, encoding: ClientEncoding, keep: Bool = false,
                      started: (String) -> Void = { _ in }, stopped: (String) -> Void = { _ in },
                      _ body: (LocalGrid, ClientSettings, ServerPool, Double) throws -> T) throws -> T {
    let root = try LocalGrid.temporaryRoot(prefix: prefix)
    started(root)
    defer {
        if !keep { FileSystem.removeTree(root) }
        stopped(root)
    }
    let grid = try LocalGrid(root: root, executable: FileSystem.currentExecutable(),
                             options: LocalGrid.Options(servers: servers, encoding: encoding))
    defer { grid.stop() }
    let settings = try ClientNode.load(directory: grid.clientDirectory)
    let pool = try ServerPool(introducer: settings.introducer)
    defer { pool.shutdown() }
    let seconds = try blockingAwait { try await grid.waitUntilAnnounced(pool) }
    return try body(grid, settings, pool, seconds)
}

/// The options of commands that start a local grid (`grid demo`, `grid bench grid`).
struct LocalGridOptions: ParsableArguments {
    @Option(help: "Storage servers to start.") var servers: Int = 10
    @Option(help: "Shares needed (k).") var needed: Int = 3
    @Option(help: "Servers of happiness.") var happy: Int = 7
    @Option(help: "Shares made (n).") var total: Int = 10

    var encoding: ClientEncoding { ClientEncoding(needed: needed, happy: happy, total: total) }
}

/// Writes `size` pseudo-random bytes (a fast xorshift stream seeded by `seed`) to `path`,
/// 1 MiB at a time.
func writeSampleFile(_ path: String, size: UInt64, seed: UInt64) throws {
    let f = try FileDescriptor(path: path, .replace)
    var state = seed | 1
    var buf = [UInt64](repeating: 0, count: 1 << 17)
    var left = size
    while left > 0 {
        for i in 0..<buf.count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            buf[i] = state
        }
        let n = Int(min(left, UInt64(buf.count * 8)))
        try buf.withUnsafeBytes { try f.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        left -= UInt64(n)
    }
}

/// SHA-256 of a file, streamed.
func sha256(file path: String) throws -> [UInt8] {
    let f = try FileDescriptor(path: path)
    let h = SHA256()
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    defer { buf.deallocate() }
    while true {
        let r = try f.read(into: buf)
        if r == 0 { break }
        h.update(UnsafeRawBufferPointer(rebasing: buf[0..<r]))
    }
    return h.finalize()
}
