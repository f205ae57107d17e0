import GridTestSupport
import XCTest

@testable import GridCodec

final class ReedSolomonTests: XCTestCase {
    /// Every path this CPU supports; every codec test runs under each.
    let paths = SIMDPath.available

    func testPortableIsAlwaysAvailable() {
        XCTAssertTrue(SIMDPath.portable.isSupported)
        XCTAssertEqual(paths.first, .portable)
        XCTAssertEqual(SIMDPath.best, paths.last)
    }

    func testZfecVectorsOnEveryPath() throws {
        let doc = try Fixtures.json("zfec.json") as! [String: Any]
        let cases = doc["cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 28)
        for c in cases {
            let k = c["k"] as! Int, n = c["n"] as! Int, bs = c["block_size"] as! Int
            let input = content(seed: c["seed"] as! String, length: k * bs)
            XCTAssertEqual(sha256hex(input), c["input_sha256"] as! String)
            let blocks = (0..<k).map { Array(input[($0 * bs)..<(($0 + 1) * bs)]) }
            let rs = try ReedSolomon(k: k, n: n)
            let expected = c["blocks_sha256"] as! [String]
            let expectedHex = c["blocks_hex"] as? [String]
            for path in paths {
                let out = try rs.encode(blocks, path: path)
                XCTAssertEqual(out.map(sha256hex), expected, "zfec (\(k),\(n)) bs=\(bs) on \(path)")
                if let hx = expectedHex { XCTAssertEqual(out.map { hex($0) }, hx) }
                // Decode from the last k blocks, as the vectors' own sanity check did.
                let last = (n - k..<n).map { ($0, out[$0]) }
                XCTAssertEqual(try rs.decode(last, path: path), blocks, "decode (\(k),\(n)) bs=\(bs) on \(path)")
            }
        }
    }

    func testMatrixIsSystematic() throws {
        for (k, n) in [(1, 1), (3, 10), (17, 20), (101, 256), (256, 256)] {
            let rs = try ReedSolomon(k: k, n: n)
            for r in 0..<k {
                for c in 0..<k { XCTAssertEqual(rs.matrix[r * k + c], r == c ? 1 : 0) }
            }
        }
    }

    /// All paths give the same bytes as the portable one, for odd lengths and lengths that
    /// cross the kernels' vector, unroll and block boundaries.
    func testAllPathsAgree() throws {
        let lengths = [1, 2, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 255, 1000, 4099, 16384, 16385, 40000]
        let shapes = [(1, 2), (2, 3), (3, 10), (5, 13), (9, 18), (10, 14), (17, 20)]
        for (si, (k, n)) in shapes.enumerated() {
            let rs = try ReedSolomon(k: k, n: n)
            for (li, len) in lengths.enumerated() {
                let data = (0..<k).map { pseudoRandom(len, seed: UInt64(si * 1000 + li * 10 + $0)) }
                let reference = try rs.encode(data, path: .portable)
                for path in paths {
                    XCTAssertEqual(try rs.encode(data, path: path), reference, "(\(k),\(n)) len \(len) on \(path)")
                }
            }
        }
    }

    /// Every way of choosing k of n shares decodes, on every path.
    func testEveryLossPattern() throws {
        let k = 3, n = 7
        let rs = try ReedSolomon(k: k, n: n)
        let data = (0..<k).map { pseudoRandom(333, seed: UInt64($0)) }
        let shares = try rs.encode(data)
        for a in 0..<n {
            for b in (a + 1)..<n {
                for c in (b + 1)..<n {
                    for path in paths {
                        // Give the shares in a scrambled order: the decoder must not care.
                        let chosen = [(c, shares[c]), (a, shares[a]), (b, shares[b])]
                        XCTAssertEqual(try rs.decode(chosen, path: path), data, "shares \(a),\(b),\(c) on \(path)")
                    }
                }
            }
        }
    }

    func testLargeCodes() throws {
        // The two largest shapes in Tahoe's own vectors.
        for (k, n) in [(71, 255), (101, 256)] {
            let rs = try ReedSolomon(k: k, n: n)
            let data = (0..<k).map { pseudoRandom(97, seed: UInt64($0)) }
            let shares = try rs.encode(data)
            let last = (n - k..<n).map { ($0, shares[$0]) }
            for path in paths { XCTAssertEqual(try rs.decode(last, path: path), data, "(\(k),\(n)) on \(path)") }
        }
    }

    func testDecodePlanIsCached() throws {
        let rs = try ReedSolomon(k: 4, n: 8)
        let p1 = try rs.plan(for: [7, 5, 6, 4])
        let p2 = try rs.plan(for: [4, 5, 6, 7])
        XCTAssertTrue(p1 === p2, "the same set of shares must reuse one inverted matrix")
        XCTAssertEqual(p1.order, [4, 5, 6, 7])
    }

    func testBadParameters() {
        XCTAssertThrowsError(try ReedSolomon(k: 0, n: 3))
        XCTAssertThrowsError(try ReedSolomon(k: 4, n: 3))
        XCTAssertThrowsError(try ReedSolomon(k: 3, n: 257))
        XCTAssertThrowsError(try ReedSolomon(k: 3, n: 5).decode([(0, [1]), (0, [1]), (1, [2])])) { e in
            XCTAssertEqual(e as? CodecError, .duplicateShareNumber(0))
        }
        XCTAssertThrowsError(try ReedSolomon(k: 3, n: 5).decode([(0, [1]), (1, [2])])) { e in
            XCTAssertEqual(e as? CodecError, .wrongShareCount(got: 2, need: 3))
        }
        XCTAssertThrowsError(try ReedSolomon(k: 2, n: 3).decode([(0, [1]), (7, [2])])) { e in
            XCTAssertEqual(e as? CodecError, .badShareNumber(7, n: 3))
        }
        XCTAssertThrowsError(try ReedSolomon(k: 2, n: 3).encode([[1, 2], [3]]))
    }

    func testEnvironmentOverride() throws {
        XCTAssertEqual(try SIMDPath.fromEnvironment([:]), SIMDPath.best)
        XCTAssertEqual(try SIMDPath.fromEnvironment(["GRID_SIMD": "portable"]), .portable)
        XCTAssertEqual(try SIMDPath.fromEnvironment(["GRID_SIMD": "PORTABLE"]), .portable)
        XCTAssertThrowsError(try SIMDPath.fromEnvironment(["GRID_SIMD": "neon"])) { e in
            XCTAssertEqual(e as? CodecError, .unknownSIMDPath("neon"))
        }
        for p in SIMDPath.allCases where !p.isSupported {
            XCTAssertThrowsError(try SIMDPath.fromEnvironment(["GRID_SIMD": p.rawValue]))
        }
    }

    func testFieldArithmetic() {
        // 0x11D field facts: 2^8 = 0x1D, and a * a^-1 = 1 for every non-zero a.
        XCTAssertEqual(GF256.exp(8), 0x1D)
        XCTAssertEqual(GF256.exp(255), 1)
        for a in 1...255 { XCTAssertEqual(GF256.mul(UInt8(a), GF256.inverse(UInt8(a))), 1) }
    }
}
