import Foundation
import GridCrypto

/// Where the test fixtures live (Tests/Fixtures), found from this file's path.
public enum Fixtures {
    public static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    public static func json(_ name: String) throws -> Any {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        return try JSONSerialization.jsonObject(with: data)
    }
}

/// The vectors' content(): SHA256(utf8(seed) || be64(0)) || SHA256(utf8(seed) || be64(1)) || ..., cut to length.
public func content(seed: String, length: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(length + 32)
    var counter: UInt64 = 0
    let s = Array(seed.utf8)
    while out.count < length {
        var block = s
        for i in stride(from: 7, through: 0, by: -1) { block.append(UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i)))) }
        out += SHA256.hash(block)
        counter += 1
    }
    return Array(out.prefix(length))
}

public func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

public func unhex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.utf8.makeIterator()
    func nib(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
    while let a = it.next(), let b = it.next() { out.append(nib(a) << 4 | nib(b)) }
    return out
}

public func sha256hex(_ bytes: [UInt8]) -> String { hex(SHA256.hash(bytes)) }

/// A deterministic pseudo-random byte string.
public func pseudoRandom(_ count: Int, seed: UInt64) -> [UInt8] {
    var s = seed &+ 0x9e3779b97f4a7c15
    var out = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        s = s &* 6364136223846793005 &+ 1442695040888963407
        out[i] = UInt8(truncatingIfNeeded: s >> 33)
    }
    return out
}

/// The reference vectors' content: SHA-256(seed || be64(counter)) for counter 0, 1, 2, ...,
/// cut to `length` bytes (../shared/vectors/README.md).
public func vectorContent(_ seed: String, _ length: Int) -> [UInt8] {
    var out: [UInt8] = []
    var counter: UInt64 = 0
    while out.count < length {
        out += SHA256.hash(Array(seed.utf8) + (0..<8).map { UInt8(truncatingIfNeeded: counter >> (56 - 8 * UInt64($0))) })
        counter += 1
    }
    return Array(out.prefix(length))
}

/// A small, fast, seedable generator (SplitMix64): the same seed replays the same run.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
