import GridCrypto
import GridSystem

/// A directory's capability: the capability of the file holding its packed children,
/// wrapped under a directory prefix with the same fields (Tahoe's `uri.py`):
///
/// | directory | file underneath |
/// |---|---|
/// | `URI:DIR2:` / `URI:DIR2-RO:` / `URI:DIR2-Verifier:` | `URI:SSK:` / `URI:SSK-RO:` / `URI:SSK-Verifier:` (SDMF) |
/// | `URI:DIR2-MDMF:` / `-MDMF-RO:` / `-MDMF-Verifier:` | `URI:MDMF:` / `URI:MDMF-RO:` / `URI:MDMF-Verifier:` |
/// | `URI:DIR2-CHK:` / `URI:DIR2-CHK-Verifier:` | `URI:CHK:` / `URI:CHK-Verifier:` (immutable) |
/// | `URI:DIR2-LIT:` | `URI:LIT:` (an immutable directory of ≤ 55 packed bytes) |
public struct DirectoryCapability: Equatable, Sendable, CustomStringConvertible {
    public enum File: Equatable, Sendable {
        case mutable(MutableCapability)
        case chk(CHKCapability)
        case chkVerifier(CHKVerifierCapability)
        case lit(LITCapability)
    }

    public let file: File

    public init(_ file: File) { self.file = file }
    public init(mutable cap: MutableCapability) { self.file = .mutable(cap) }

    /// The capability of the file underneath.
    public var fileCapability: AnyCapability {
        switch file {
        case let .mutable(m): return .mutable(m)
        case let .chk(c): return .immutable(.chk(c))
        case let .chkVerifier(v): return .immutable(.chkVerifier(v))
        case let .lit(l): return .immutable(.lit(l))
        }
    }

    public var isMutable: Bool { if case .mutable = file { return true }; return false }

    /// Cannot change the directory: a read-only or verify capability, or an immutable directory.
    public var isReadOnly: Bool {
        if case let .mutable(m) = file { return m.access != .write }
        return true
    }

    /// Only checks shares: cannot list the children.
    public var isVerifyOnly: Bool {
        switch file {
        case let .mutable(m): return m.access == .verify
        case .chkVerifier: return true
        case .chk, .lit: return false
        }
    }

    /// The writekey of a mutable directory opened by its write capability (the key that
    /// encrypts the children's write capabilities).
    public var writekey: [UInt8]? { if case let .mutable(m) = file { return m.writekey }; return nil }

    /// The read-only capability (itself for an immutable directory; nil from a verifier).
    public var readOnly: DirectoryCapability? {
        switch file {
        case let .mutable(m): return m.readOnly.map { DirectoryCapability(.mutable($0)) }
        case .chk, .lit: return self
        case .chkVerifier: return nil
        }
    }

    /// The verify capability (nil for a literal directory: nothing is stored).
    public var verifier: DirectoryCapability? {
        switch file {
        case let .mutable(m): return DirectoryCapability(.mutable(m.verifier))
        case let .chk(c): return DirectoryCapability(.chkVerifier(c.verifier))
        case .chkVerifier: return self
        case .lit: return nil
        }
    }

    public var storageIndex: [UInt8]? {
        switch file {
        case let .mutable(m): return m.storageIndex
        case let .chk(c): return c.storageIndex
        case let .chkVerifier(v): return v.storageIndex
        case .lit: return nil
        }
    }

    /// The directory prefix for each file prefix.
    static let prefixes: [(directory: String, file: String)] = [
        ("URI:DIR2:", "URI:SSK:"), ("URI:DIR2-RO:", "URI:SSK-RO:"), ("URI:DIR2-Verifier:", "URI:SSK-Verifier:"),
        ("URI:DIR2-MDMF:", "URI:MDMF:"), ("URI:DIR2-MDMF-RO:", "URI:MDMF-RO:"), ("URI:DIR2-MDMF-Verifier:", "URI:MDMF-Verifier:"),
        ("URI:DIR2-CHK:", "URI:CHK:"), ("URI:DIR2-CHK-Verifier:", "URI:CHK-Verifier:"), ("URI:DIR2-LIT:", "URI:LIT:"),
    ]

    public var string: String {
        let inner = fileCapability.description
        for (d, f) in Self.prefixes where inner.hasPrefix(f) { return d + inner.dropFirst(f.count) }
        preconditionFailure("no directory prefix for \(inner.prefix(12))")
    }

    public var description: String { string }

    /// Whether `s` starts with a directory prefix.
    public static func isDirectoryString(_ s: String) -> Bool { s.hasPrefix("URI:DIR2:") || s.hasPrefix("URI:DIR2-") }

    /// Parses one of the nine `URI:DIR2…` forms.
    public init(parsing raw: String) throws {
        let s = raw.trimmingWhitespace()
        guard let (d, f) = Self.prefixes.first(where: { s.hasPrefix($0.directory) }) else {
            let shown = s.count > 24 ? String(s.prefix(24)) + "…" : s
            throw GridError(.usage, "bad capability: '\(shown)' is not a directory capability (URI:DIR2…)")
        }
        let inner = f + s.dropFirst(d.count)
        let parsed: AnyCapability
        do { parsed = try AnyCapability(parsing: inner) } catch let e as GridError {
            // Name what the user gave: a directory, not the file capability inside it.
            throw GridError(e.errorClass, e.message.replacing(String(f.dropLast()), with: String(d.dropLast())))
        }
        switch parsed {
        case let .mutable(m): self.init(.mutable(m))
        case let .immutable(.chk(c)): self.init(.chk(c))
        case let .immutable(.chkVerifier(v)): self.init(.chkVerifier(v))
        case let .immutable(.lit(l)): self.init(.lit(l))
        case .directory, .unknown: throw GridError(.usage, "bad capability: a directory cannot wrap '\(f)'")
        }
    }
}

/// A capability this version of grid does not understand (a future format, or one that
/// broke a constraint of where it was found): kept exactly as it was, as Tahoe keeps it,
/// so a directory holding it can be changed without losing it.
public struct UnknownCapability: Equatable, Sendable {
    /// The write capability string, if one was given (as found, prefix included).
    public var writeString: String?
    /// The read capability string (with its `ro.` or `imm.` prefix, if any).
    public var readString: String?
    /// Why it is unknown: nil for an unrecognized format, else the constraint it broke.
    public var reason: String?

    public init(writeString: String?, readString: String?, reason: String? = nil) {
        (self.writeString, self.readString, self.reason) = (writeString, readString, reason)
    }
}
