import Foundation
import GridClient
import GridCrypto
import GridSystem
import XCTest

final class KeyPoolTests: XCTestCase {
    /// Keys are made ahead (mode 0600), each is handed out once even to racing takers,
    /// and an empty pool says so.
    func testKeysAreMadeAheadAndHandedOutOnce() throws {
        let dir = try FileSystem.makeTemporaryDirectory(prefix: "grid-keypool")
        defer { FileSystem.removeTree(dir) }
        let pool = KeyPool(directory: dir + "/private/key-pool")
        XCTAssertNil(pool.take(), "an empty pool has nothing")
        XCTAssertEqual(try pool.fill(to: 5), 5)
        XCTAssertEqual(pool.count, 5)
        XCTAssertEqual(try pool.fill(to: 5), 0, "a full pool makes nothing")
        for name in try FileSystem.list(pool.directory) {
            XCTAssertEqual(try FileSystem.status(pool.directory + "/" + name)!.permissions & 0o777, 0o600, name)
        }
        let taken = UnsafeTaken()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in taken.add(pool.take()) }
        let keys = taken.keys
        XCTAssertEqual(keys.count, 5, "five keys for eight takers")
        XCTAssertEqual(Set(keys.map(\.der)).count, 5, "no key handed out twice")
        XCTAssertEqual(pool.count, 0)
        XCTAssertEqual(try FileSystem.list(pool.directory), [], "taken keys leave no file behind")
    }
}

final class UnsafeTaken: @unchecked Sendable {
    private let lock = NSLock()
    private var got: [RSAPrivateKey] = []
    func add(_ k: RSAPrivateKey?) { lock.lock(); if let k { got.append(k) }; lock.unlock() }
    var keys: [RSAPrivateKey] { lock.lock(); defer { lock.unlock() }; return got }
}
