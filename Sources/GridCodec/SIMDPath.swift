import GridSystem
import CGridSIMD

/// A GF(2^8) kernel implementation. Every path computes identical bytes; they differ only in speed.
public enum SIMDPath: String, CaseIterable, Sendable, CustomStringConvertible {
    case portable
    case ssse3
    case avx2
    case gfni

    var cValue: Int32 {
        switch self {
        case .portable: return Int32(GRID_SIMD_PORTABLE)
        case .ssse3: return Int32(GRID_SIMD_SSSE3)
        case .avx2: return Int32(GRID_SIMD_AVX2)
        case .gfni: return Int32(GRID_SIMD_GFNI)
        }
    }

    public var description: String { rawValue }

    /// Whether this CPU (and its OS) can run the path.
    public var isSupported: Bool { grid_simd_supported(cValue) != 0 }

    /// Every path this machine supports, slowest first.
    public static var available: [SIMDPath] { allCases.filter(\.isSupported) }

    /// The fastest supported path.
    public static var best: SIMDPath { available.last ?? .portable }

    /// The name of the environment variable that forces a path.
    public static let environmentVariable = "GRID_SIMD"

    /// The path named by `GRID_SIMD`, or `best` when it is unset or empty.
    /// Throws when the variable names an unknown path or one this CPU lacks.
    public static func fromEnvironment(_ environment: [String: String]) throws -> SIMDPath {
        guard let raw = environment[environmentVariable], !raw.isEmpty else { return best }
        guard let path = SIMDPath(rawValue: raw.lowercased()) else {
            throw CodecError.unknownSIMDPath(raw)
        }
        guard path.isSupported else { throw CodecError.unsupportedSIMDPath(path) }
        return path
    }
}

/// Errors from the Reed-Solomon codec.
public enum CodecError: ClassifiedError, Equatable {
    public var errorClass: ErrorClass {
        switch self {
        case .invalidParameters, .unknownSIMDPath, .unsupportedSIMDPath: return .usage
        case .badShareNumber, .duplicateShareNumber, .wrongShareCount, .bufferCountMismatch: return .internal
        }
    }

    case invalidParameters(k: Int, n: Int)
    case unknownSIMDPath(String)
    case unsupportedSIMDPath(SIMDPath)
    case badShareNumber(Int, n: Int)
    case duplicateShareNumber(Int)
    case wrongShareCount(got: Int, need: Int)
    case bufferCountMismatch(String)

    public var description: String {
        switch self {
        case let .invalidParameters(k, n):
            return "invalid encoding parameters k=\(k), n=\(n): need 1 <= k <= n <= 256"
        case let .unknownSIMDPath(s):
            return "\(SIMDPath.environmentVariable)=\(s) is not a SIMD path (use portable, ssse3, avx2 or gfni)"
        case let .unsupportedSIMDPath(p):
            return "SIMD path \(p) is not supported by this CPU"
        case let .badShareNumber(s, n):
            return "share number \(s) is out of range 0..<\(n)"
        case let .duplicateShareNumber(s):
            return "share number \(s) is given twice"
        case let .wrongShareCount(got, need):
            return "decoding needs exactly \(need) distinct shares, got \(got)"
        case let .bufferCountMismatch(what):
            return "buffer count mismatch: \(what)"
        }
    }
}

/// Arithmetic in GF(2^8) with the polynomial 0x11D (zfec's field).
public enum GF256 {
    @inlinable public static func mul(_ a: UInt8, _ b: UInt8) -> UInt8 { grid_gf_mul(a, b) }

    /// α^e for the generator α = 2.
    public static func exp(_ e: Int) -> UInt8 {
        var r: UInt8 = 1
        for _ in 0..<(e % 255) { r = mul(r, 2) }
        return r
    }

    /// Multiplicative inverse (a must not be 0): a^254.
    public static func inverse(_ a: UInt8) -> UInt8 {
        precondition(a != 0, "0 has no inverse in GF(2^8)")
        var result: UInt8 = 1
        var base = a
        var e = 254
        while e > 0 {
            if e & 1 == 1 { result = mul(result, base) }
            base = mul(base, base)
            e >>= 1
        }
        return result
    }
}
