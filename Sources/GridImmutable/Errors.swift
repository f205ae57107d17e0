import GridSystem

/// Which part of a share failed a check.
public enum SharePart: Equatable, Sendable {
    /// The header: version, sizes, offsets.
    case header
    /// The share number is not one the file can have.
    case shareNumber
    /// The URI extension block (its hash, its fields).
    case uriExtension
    /// The share hash chain (the path from this share's hash to the share root).
    case shareHashChain
    /// The block hash tree (its root is this share's leaf of the share hash tree).
    case blockHashTree
    /// The crypttext hash tree stored in the share.
    case crypttextHashTree
    /// One block of data.
    case block(segment: Int)
    /// The share ends before its layout says it should.
    case length
}

/// Why one share could not be used. A downloader moves on to another share whatever the
/// reason; a verifier reports `corrupt` shares to their servers and counts the others as
/// missing.
public enum ShareFailure: ClassifiedError, Equatable {
    /// The share's bytes failed a hash or a structural check: which part, and what exactly.
    case corrupt(SharePart, String)
    /// The share is of a version or format this program does not handle.
    case incompatible(String)
    /// The share could not be read: its server went away, timed out or refused.
    case unavailable(String)
    /// The share is not there.
    case notFound(String)

    public var errorClass: ErrorClass {
        switch self {
        case .corrupt: return .corrupt
        case .incompatible: return .incompatible
        case .unavailable: return .unavailable
        case .notFound: return .notFound
        }
    }

    public var isCorrupt: Bool { if case .corrupt = self { return true } else { return false } }

    public var description: String {
        switch self {
        case let .corrupt(_, m), let .incompatible(m), let .unavailable(m), let .notFound(m): return m
        }
    }

    /// Sorts any error met while reading or checking a share into its class; `part` says
    /// what was being read when the error is corruption without a part of its own.
    public init(_ error: any Error, part: SharePart = .header) {
        if let f = error as? ShareFailure {
            self = f
            return
        }
        switch error.errorClass {
        case .corrupt: self = .corrupt(part, "\(error)")
        case .incompatible: self = .incompatible("\(error)")
        case .notFound: self = .notFound("\(error)")
        default: self = .unavailable("\(error)")
        }
    }
}

/// Failures of encoding and decoding a whole file.
public enum ImmutableError: ClassifiedError, Equatable {
    /// k, n, happy or the segment size are out of range.
    case invalidParameters(String)
    /// The plaintext changed size while it was being read.
    case sourceChanged(String)
    /// A path named as the input is not a regular file.
    case notAFile(path: String, kind: FileKind)
    /// Fewer than k shares passed every check; `failures` says why each other share was set aside.
    case notEnoughShares(needed: Int, usable: Int, failures: [Int: ShareFailure])
    /// The URI extension block matches the capability's hash but not its other fields:
    /// the capability itself is inconsistent.
    case capabilityMismatch(String)
    /// Every block of a segment verified, yet the decoded segment fails the crypttext hash tree.
    case segmentMismatch(segment: Int)
    case offsetPastEnd(offset: UInt64, size: UInt64)
    /// A verify capability was given where the read key is needed.
    case needsReadCapability

    public var errorClass: ErrorClass {
        switch self {
        case .invalidParameters, .offsetPastEnd, .needsReadCapability, .notAFile: return .usage
        case .sourceChanged: return .io
        case .capabilityMismatch, .segmentMismatch: return .corrupt
        case let .notEnoughShares(_, _, failures):
            // Lost to damage alone: corrupt. Otherwise shares were missing or unreachable.
            return !failures.isEmpty && failures.values.allSatisfy(\.isCorrupt) ? .corrupt : .unavailable
        }
    }

    /// "share N: reason; ..." for the shares set aside, lowest number first.
    public static func summary(_ failures: [Int: ShareFailure]) -> String {
        failures.keys.sorted().map { "share \($0): \(failures[$0]!)" }.joined(separator: "; ")
    }

    public var description: String {
        switch self {
        case let .invalidParameters(m), let .sourceChanged(m), let .capabilityMismatch(m): return m
        case let .notAFile(path, kind): return "\(path) is a \(kind), not a regular file"
        case let .notEnoughShares(needed, usable, failures):
            var m = "not enough good shares to decode: need \(needed), have \(usable)"
            if !failures.isEmpty { m += " (" + Self.summary(failures) + ")" }
            return m
        case let .segmentMismatch(seg):
            return "segment \(seg) does not match the crypttext hash tree although every block verified"
        case let .offsetPastEnd(offset, size): return "offset \(offset) is past the end of the \(size)-byte file"
        case .needsReadCapability:
            return "a verify capability cannot decrypt a file; give the read capability (URI:CHK:...)"
        }
    }
}

extension ShareFailure {
    /// A share shorter than a read needs.
    public static func truncated(wanted: Int, at offset: UInt64, size: UInt64) -> ShareFailure {
        .corrupt(.length, "truncated (wanted \(wanted) bytes at offset \(offset), share has \(size))")
    }
}
