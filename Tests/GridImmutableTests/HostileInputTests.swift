import GridCrypto
import GridFormat
import GridTestSupport
import XCTest

@testable import GridImmutable

/// Random damage to shares, headers and capabilities: the answer is always either the
/// right bytes or a clean error, never a crash or wrong output.
final class HostileInputTests: XCTestCase {
    struct RNG {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state ^ (state >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    func testRandomShareMutations() throws {
        let data = pseudoRandom(9000, seed: 21)
        let (r, shares) = try encodeInMemory(data, secret: [1, 2, 3], k: 2, n: 4, segment: 2048)
        guard case let .chk(cap, _) = r else { return XCTFail() }
        var rng = RNG(state: 99)
        var decoded = 0, refused = 0
        for _ in 0..<1500 {
            var s = shares
            // Damage one to three shares: flip bytes, truncate, extend, or overwrite a header field.
            for _ in 0..<(1 + rng.below(3)) {
                let victim = rng.below(4)
                switch rng.below(4) {
                case 0:
                    for _ in 0..<(1 + rng.below(4)) { s[victim][rng.below(s[victim].count)] ^= UInt8(1 + rng.below(255)) }
                case 1:
                    s[victim] = Array(s[victim].prefix(rng.below(s[victim].count)))
                case 2:
                    s[victim] += pseudoRandom(1 + rng.below(100), seed: rng.next())
                default:
                    let at = rng.below(0x24)
                    s[victim][at] = UInt8(rng.below(256))
                    s[victim][min(at + 1, 0x23)] = 0xff
                }
            }
            do {
                let (plain, _) = try decodeInMemory(cap, (0..<4).map { ($0, s[$0]) })
                XCTAssertEqual(plain, data, "a decode that succeeds must return the original bytes")
                decoded += 1
            } catch {
                XCTAssertTrue("\(error)".contains("not enough good shares"), "\(error)")
                XCTAssertFalse("\(error)".contains("\n"))
                refused += 1
            }
        }
        // With k=2 of 4, damage often leaves enough good shares and sometimes not: both must occur.
        XCTAssertGreaterThan(decoded, 100)
        XCTAssertGreaterThan(refused, 10)
    }

    func testRandomHeadersNeverCrashTheParser() {
        var rng = RNG(state: 7)
        for _ in 0..<20_000 {
            var h = (0..<(rng.below(80))).map { _ in UInt8(rng.below(256)) }
            if h.count >= 4 && rng.below(2) == 0 { h[0] = 0; h[1] = 0; h[2] = 0; h[3] = UInt8(1 + rng.below(2)) }
            _ = try? ShareLayout(parsing: h)
        }
    }

    func testRandomCapabilityStringsNeverCrash() {
        var rng = RNG(state: 11)
        let alphabet = Array("URI:CHKLIT-Verifier:abcdefghijklmnopqrstuvwxyz234567:0123456789".utf8)
        for _ in 0..<20_000 {
            let s = String(decoding: (0..<rng.below(120)).map { _ in alphabet[rng.below(alphabet.count)] }, as: UTF8.self)
            _ = try? Capability(parsing: rng.below(3) == 0 ? "URI:CHK:" + s : s)
        }
    }

    func testRandomUEBsNeverCrash() throws {
        let doc = try Fixtures.json("chk.json") as! [String: Any]
        let ueb = unhex((doc["cases"] as! [[String: Any]]).first { ($0["type"] as! String) == "CHK" }!["ueb_hex"] as! String)
        var rng = RNG(state: 5)
        for _ in 0..<5000 {
            var u = ueb
            for _ in 0..<(1 + rng.below(3)) { u[rng.below(u.count)] = UInt8(rng.below(256)) }
            if rng.below(4) == 0 { u = Array(u.prefix(rng.below(u.count))) }
            _ = try? URIExtension(parsing: u)
        }
        // Absurd sizes are refused rather than overflowing later arithmetic.
        var huge = try URIExtension(parsing: ueb)
        huge.size = UInt64.max / 2
        XCTAssertThrowsError(try huge.validate())
    }

    /// Tahoe writes layout v2 above 4 GiB. Rewrite small v1 shares as v2 (8-byte fields,
    /// sections moved by 0x20, 8-byte UEB length): the decoder must read them the same.
    func testVersion2SharesDecode() throws {
        let data = pseudoRandom(7000, seed: 3)
        let (r, shares) = try encodeInMemory(data, secret: [9], k: 3, n: 5, segment: 2048)
        guard case let .chk(cap, _) = r else { return XCTFail() }
        func toV2(_ s: [UInt8]) throws -> [UInt8] {
            let v1 = try ShareLayout(parsing: s)
            let shift: UInt64 = 0x20
            var out: [UInt8] = [0, 0, 0, 2]
            for v in [v1.blockSize, v1.dataSize, v1.dataOffset + shift, v1.plaintextHashTreeOffset + shift,
                      v1.crypttextHashTreeOffset + shift, v1.blockHashesOffset + shift, v1.shareHashesOffset + shift,
                      v1.uriExtensionOffset + shift] {
                for i in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(i))) }
            }
            out += s[0x24..<Int(v1.uriExtensionOffset)]
            out += [0, 0, 0, 0] + s[Int(v1.uriExtensionOffset)...]
            return out
        }
        let v2 = try shares.map(toV2)
        XCTAssertEqual(try ShareLayout(parsing: v2[0]).version, 2)
        let (plain, d) = try decodeInMemory(cap, [(4, v2[4]), (1, v2[1]), (3, shares[3])])
        XCTAssertEqual(plain, data)
        XCTAssertTrue(d.badShares.isEmpty, d.badShareSummary)
    }
}
