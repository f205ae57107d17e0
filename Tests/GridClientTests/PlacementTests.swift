import GridClient
import GridCrypto
import GridProtocol
import XCTest

final class PlacementTests: XCTestCase {
    func testHappinessIsAMaximumMatching() {
        XCTAssertEqual(Placement.happiness([String: Set<Int>]()), 0)
        XCTAssertEqual(Placement.happiness(["a": [0, 1, 2]]), 1, "one server counts once")
        XCTAssertEqual(Placement.happiness(["a": [0], "b": [0], "c": [0]]), 1, "one share counts once")
        // a greedy choice of a:0 would block b; the matching finds a:1, b:0.
        XCTAssertEqual(Placement.happiness(["a": [0, 1], "b": [0]]), 2)
        XCTAssertEqual(Placement.happiness(["a": [0, 1], "b": [0, 1], "c": [2], "d": [2]]), 3)
    }

    func testFreshUploadSpreadsOneShareEachInPermutedOrder() {
        let servers = (0..<10).map { "s\($0)" }
        let plan = Placement.plan(servers: servers, existing: [:], writable: Set(servers), total: 10)
        for (i, s) in servers.enumerated() { XCTAssertEqual(plan[s], [i]) }
    }

    func testFewerServersThanSharesDoublesUpEarliestFirst() {
        let servers = ["a", "b", "c", "d"]
        let plan = Placement.plan(servers: servers, existing: [:], writable: Set(servers), total: 10)
        XCTAssertEqual(plan.values.map(\.count).sorted(), [2, 2, 3, 3])
        XCTAssertEqual(Set(plan.values.flatMap { $0 }), Set(0..<10))
        XCTAssertEqual(plan["a"]?.count, 3)
        XCTAssertEqual(Placement.happiness(plan.mapValues(Set.init)), 4)
    }

    func testExistingSharesAreKeptAndNotPlacedAgain() {
        let servers = ["a", "b", "c", "d", "e"]
        // "a" already holds 0,1,2 (say an earlier upload to a smaller grid).
        let plan = Placement.plan(servers: servers, existing: ["a": [0, 1, 2]], writable: Set(servers), total: 5)
        var holdings: [String: Set<Int>] = ["a": [0, 1, 2]]
        for (s, shares) in plan { holdings[s, default: []].formUnion(shares) }
        XCTAssertEqual(Set(holdings.values.flatMap { $0 }), Set(0..<5))
        XCTAssertEqual(Placement.happiness(holdings), 5, "two of a's shares are duplicated elsewhere so five servers count")
        XCTAssertNil(plan["a"], "a is asked for nothing new")
    }

    func testReadOnlyServersOnlyCountWhatTheyHold() {
        let servers = ["ro", "w1", "w2"]
        let plan = Placement.plan(servers: servers, existing: ["ro": [4]], writable: ["w1", "w2"], total: 5)
        XCTAssertNil(plan["ro"])
        XCTAssertEqual(Set(plan.values.flatMap { $0 }), Set([0, 1, 2, 3]))
    }

    func testNoWritableServersPlacesNothing() {
        XCTAssertTrue(Placement.plan(servers: ["a"], existing: [:], writable: [], total: 3).isEmpty)
    }

    func testPermutedListIsTahoesSHA1Order() {
        XCTAssertEqual(SHA1.hash(Array("abc".utf8)).map { String(format: "%02x", $0) }.joined(),
                       "a9993e364706816aba3e25717850c26c9cd0d89d")
        let keys = (0..<8).map { _ in Ed25519PrivateKey().publicKey }
        let refs = keys.enumerated().map {
            ServerRef(Announcement(publicKey: $0.element, nickname: "s\($0.offset)", addresses: [], availableSpace: 0, sequence: 1))
        }
        let si = Array(repeating: UInt8(0x42), count: 16)
        let order = permutedServers(refs, storageIndex: si)
        let hashes = order.map { SHA1.hash(si + $0.announcement.publicKey.bytes) }
        for i in 1..<hashes.count { XCTAssertTrue(hashes[i - 1].lexicographicallyPrecedes(hashes[i])) }
        XCTAssertNotEqual(permutedServers(refs, storageIndex: Array(repeating: 1, count: 16)).map(\.nickname),
                          order.map(\.nickname), "another file, another order")
    }
}
