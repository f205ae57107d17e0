import GridCrypto
@testable import GridClient
import GridProtocol
import GridSystem
import GridTestSupport
import GridWire
import XCTest

extension DaemonTests {
    /// A client's server cache carries an HMAC under a key of the node's own: a pool
    /// that finds the code matching seeds the cached servers without checking their
    /// signatures again; a wrong key, a missing code or changed bytes get every signature
    /// checked (and a damaged announcement refused), as before.
    func testServerCacheWithAMatchingCodeIsNotCheckedAgain() async throws {
        let grid = try TestGrid(servers: 3)
        defer { grid.shutdown() }
        let dir = try FileSystem.makeTemporaryDirectory(prefix: "server-cache")
        defer { FileSystem.removeTree(dir) }
        let cache = dir + "/servers.cache", key = [UInt8](repeating: 7, count: 32)

        let first = try ServerPool(introducers: [grid.address], cachePath: cache, cacheKey: key)
        for _ in 0..<400 where first.subscribers[0].confirmedSigned?.count != 3 { try await Task.sleep(nanoseconds: 25_000_000) }
        XCTAssertEqual(first.subscribers[0].confirmedSigned?.count, 3, "the introducer's list did not arrive")
        first.shutdown()
        let written = try XCTUnwrap(try FileSystem.readFile(cache, maxSize: 1 << 20))
        XCTAssertEqual(try FileSystem.readFile(cache + ".mac", maxSize: 64), try HMACSHA256.authenticationCode(key: key, data: written))
        XCTAssertEqual(try FileSystem.status(cache + ".mac")?.permissions, 0o600)

        // From here on the introducer is unreachable: only the cache speaks.
        var dead = grid.address
        dead.port = try pickFreePort(host: "127.0.0.1")
        func seeded(key: [UInt8]?) throws -> (servers: Int, checks: Int) {
            let pool = try ServerPool(introducers: [dead], cachePath: cache, cacheKey: key)
            defer { pool.shutdown() }
            return (pool.servers.count, pool.subscribers[0].signatureChecks)
        }
        var r = try seeded(key: key)
        XCTAssertEqual(r.servers, 3)
        XCTAssertEqual(r.checks, 0, "a matching code vouches for the bytes")
        r = try seeded(key: [UInt8](repeating: 8, count: 32))
        XCTAssertEqual(r.servers, 3)
        XCTAssertEqual(r.checks, 3, "another key: every signature checked")
        r = try seeded(key: nil)
        XCTAssertEqual(r.checks, 3, "no key: every signature checked")

        // Damage the last byte (a signature's) and keep the old code: it no longer matches.
        var bytes = written
        bytes[bytes.count - 1] ^= 1
        try FileSystem.writeFileAtomically(cache, bytes, permissions: 0o600)
        r = try seeded(key: key)
        XCTAssertEqual(r.checks, 3, "changed bytes: every signature checked")
        XCTAssertEqual(r.servers, 2, "and the damaged announcement refused")
    }
}
