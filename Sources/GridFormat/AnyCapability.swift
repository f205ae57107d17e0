import GridCrypto
import GridSystem

/// Every capability Tahoe-LAFS 1.20 knows (its `uri.from_string`), in one family: immutable
/// files (URI:LIT, URI:CHK, URI:CHK-Verifier), mutable files (URI:SSK…, URI:MDMF… with
/// their -RO and -Verifier forms), the nine directory forms (URI:DIR2…), and unknown
/// capabilities, kept as they are.
public enum AnyCapability: Equatable, Sendable, CustomStringConvertible {
    case immutable(Capability)
    case mutable(MutableCapability)
    case directory(DirectoryCapability)
    case unknown(UnknownCapability)

    /// Tahoe's prefix for a capability said to be read-only (`ro.URI:…`).
    public static let readOnlyPrefix = "ro."
    /// Tahoe's prefix for a capability said to be deeply immutable (`imm.URI:…`).
    public static let immutablePrefix = "imm."

    /// Parses a capability a person or a script gave. Anything grid cannot use is an error
    /// that says what is wrong (a bad field, an unknown kind); `ro.`/`imm.` prefixes are
    /// accepted and their promise checked.
    public init(parsing raw: String) throws {
        let s = raw.trimmingWhitespace()
        let (body, canBeMutable, canBeWriteable) = Self.splitPrefix(s, deepImmutable: false)
        let cap = try Self.parseKnown(body)
        guard let cap else {
            let shown = s.count > 24 ? String(s.prefix(24)) + "…" : s
            throw GridError(.usage, "bad capability: '\(shown)' is not a capability grid knows (URI:LIT, URI:CHK, URI:SSK, "
                + "URI:MDMF, URI:DIR2 and their -RO and -Verifier forms)")
        }
        if let broken = Self.constraintBroken(cap, canBeMutable: canBeMutable, canBeWriteable: canBeWriteable) {
            throw GridError(.usage, "bad capability: \(broken)")
        }
        self = cap
    }

    /// A child's capability as a directory entry holds it (Tahoe's `nodemaker.create_from_cap`):
    /// the write capability if there is one, else the read capability. Never throws:
    /// whatever cannot be used (an unknown format, a write capability inside an immutable
    /// directory, a bad field) becomes `.unknown`, keeping the strings.
    public static func fromEntry(write: String?, read: String?, deepImmutable: Bool) -> AnyCapability {
        let w = write.flatMap { $0.isEmpty ? nil : $0 }
        let r = read.flatMap { $0.isEmpty ? nil : $0 }
        guard let big = w ?? r else { return .unknown(UnknownCapability(writeString: nil, readString: nil)) }
        let (body, canBeMutable, canBeWriteable) = splitPrefix(big, deepImmutable: deepImmutable)
        var reason: String?
        do {
            if let cap = try parseKnown(body) {
                if let broken = constraintBroken(cap, canBeMutable: canBeMutable, canBeWriteable: canBeWriteable) {
                    reason = broken
                } else {
                    return cap
                }
            }
        } catch {
            reason = "\(error)"
        }
        return .unknown(unknownNode(write: w, read: r, deepImmutable: deepImmutable, reason: reason))
    }

    /// Tahoe's `UnknownNode`: which strings an unknown child keeps (read caps get a `ro.`
    /// prefix, `imm.` in an immutable directory).
    static func unknownNode(write: String?, read: String?, deepImmutable: Bool, reason: String?) -> UnknownCapability {
        var (w, r) = (write, read)
        if let given = w {
            if deepImmutable {
                guard given.hasPrefix(immutablePrefix) && r == nil else {
                    return UnknownCapability(writeString: nil, readString: nil, reason: reason ?? "an unknown write capability cannot be a child of an immutable directory")
                }
            }
            if r == nil {
                guard given.hasPrefix(readOnlyPrefix) || given.hasPrefix(immutablePrefix) else {
                    return UnknownCapability(writeString: nil, readString: nil, reason: reason ?? "an unknown write capability needs a read capability beside it")
                }
                (w, r) = (nil, given)
            }
        }
        if deepImmutable {
            let ro = r.map { $0.hasPrefix(immutablePrefix) ? $0 : $0.hasPrefix(readOnlyPrefix) ? immutablePrefix + $0.dropFirst(readOnlyPrefix.count) : immutablePrefix + $0 }
            return UnknownCapability(writeString: nil, readString: ro, reason: reason)
        }
        let ro = r.map { $0.hasPrefix(readOnlyPrefix) || $0.hasPrefix(immutablePrefix) ? $0 : readOnlyPrefix + $0 }
        return UnknownCapability(writeString: w, readString: ro, reason: reason)
    }

    /// Strips a `ro.` or `imm.` prefix and says what the rest may be.
    static func splitPrefix(_ s: String, deepImmutable: Bool) -> (body: String, canBeMutable: Bool, canBeWriteable: Bool) {
        var canBeMutable = !deepImmutable
        var canBeWriteable = !deepImmutable
        var body = s
        if s.hasPrefix(immutablePrefix) {
            (canBeMutable, canBeWriteable) = (false, false)
            body = String(s.dropFirst(immutablePrefix.count))
        } else if s.hasPrefix(readOnlyPrefix) {
            canBeWriteable = false
            body = String(s.dropFirst(readOnlyPrefix.count))
        }
        return (body, canBeMutable, canBeWriteable)
    }

    /// A known capability, nil for an unknown kind; throws for a known kind with bad fields.
    static func parseKnown(_ s: String) throws -> AnyCapability? {
        if DirectoryCapability.isDirectoryString(s) {
            guard DirectoryCapability.prefixes.contains(where: { s.hasPrefix($0.directory) }) else { return nil }
            return .directory(try DirectoryCapability(parsing: s))
        }
        for p in ["URI:SSK:", "URI:SSK-RO:", "URI:SSK-Verifier:", "URI:MDMF:", "URI:MDMF-RO:", "URI:MDMF-Verifier:"] where s.hasPrefix(p) {
            return .mutable(try MutableCapability(parsing: s))
        }
        for p in ["URI:CHK:", "URI:CHK-Verifier:", "URI:LIT:"] where s.hasPrefix(p) {
            return .immutable(try Capability(parsing: s))
        }
        return nil
    }

    static func constraintBroken(_ cap: AnyCapability, canBeMutable: Bool, canBeWriteable: Bool) -> String? {
        // Verifiers are allowed anywhere, as Tahoe allows them.
        if cap.isVerifyOnly { return nil }
        if !canBeMutable && cap.isMutable { return "a mutable capability (\(cap.kindName)) where only immutable ones may be (imm. prefix or an immutable directory)" }
        if !canBeWriteable && !cap.isReadOnly { return "a write capability (\(cap.kindName)) where only read-only ones may be (ro. prefix)" }
        return nil
    }

    public var description: String { string }

    /// The capability string: the write capability if there is one, else the read one.
    public var string: String {
        switch self {
        case let .immutable(c): return c.description
        case let .mutable(m): return m.string
        case let .directory(d): return d.string
        case let .unknown(u): return u.writeString ?? u.readString ?? ""
        }
    }

    /// A short name of the kind ("URI:CHK", "URI:DIR2-MDMF-RO", ...).
    public var kindName: String {
        if case .unknown = self { return "unknown" }
        let s = string
        let parts = s.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        return parts.count >= 2 ? "\(parts[0]):\(parts[1])" : s
    }

    public var isDirectory: Bool { if case .directory = self { return true }; return false }
    public var isUnknown: Bool { if case .unknown = self { return true }; return false }

    /// A mutable file or directory (its contents can change).
    public var isMutable: Bool {
        switch self {
        case .immutable: return false
        case .mutable: return true
        case let .directory(d): return d.isMutable
        case .unknown: return false
        }
    }

    /// Cannot be used to change anything.
    public var isReadOnly: Bool {
        switch self {
        case .immutable: return true
        case let .mutable(m): return m.access != .write
        case let .directory(d): return d.isReadOnly
        case let .unknown(u): return u.writeString == nil
        }
    }

    public var isVerifyOnly: Bool {
        switch self {
        case let .immutable(c): return c.isVerifyOnly
        case let .mutable(m): return m.access == .verify
        case let .directory(d): return d.isVerifyOnly
        case .unknown: return false
        }
    }

    /// The write capability string (nil when there is none).
    public var writeString: String? {
        switch self {
        case .immutable: return nil
        case let .mutable(m): return m.access == .write ? m.string : nil
        case let .directory(d): return d.isReadOnly ? nil : d.string
        case let .unknown(u): return u.writeString
        }
    }

    /// The read-only capability string (nil from a verifier).
    public var readString: String? {
        switch self {
        case let .immutable(c): return c.isVerifyOnly ? nil : c.description
        case let .mutable(m): return m.readOnly?.string
        case let .directory(d): return d.readOnly?.string
        case let .unknown(u): return u.readString
        }
    }

    /// The read-only form of this capability.
    public var readOnly: AnyCapability? {
        switch self {
        case let .immutable(c): return c.isVerifyOnly ? nil : self
        case let .mutable(m): return m.readOnly.map { .mutable($0) }
        case let .directory(d): return d.readOnly.map { .directory($0) }
        case let .unknown(u): return u.readString.map { .unknown(UnknownCapability(writeString: nil, readString: $0, reason: u.reason)) }
        }
    }

    /// The verify capability (nil for literal files and directories: nothing is stored).
    public var verifier: AnyCapability? {
        switch self {
        case let .immutable(c):
            switch c {
            case .lit: return nil
            case let .chk(k): return .immutable(.chkVerifier(k.verifier))
            case .chkVerifier: return self
            }
        case let .mutable(m): return .mutable(m.verifier)
        case let .directory(d): return d.verifier.map { .directory($0) }
        case .unknown: return nil
        }
    }

    public var storageIndex: [UInt8]? {
        switch self {
        case let .immutable(c):
            switch c {
            case .lit: return nil
            case let .chk(k): return k.storageIndex
            case let .chkVerifier(v): return v.storageIndex
            }
        case let .mutable(m): return m.storageIndex
        case let .directory(d): return d.storageIndex
        case .unknown: return nil
        }
    }

    /// The file's size when the capability says it (immutable files); nil otherwise.
    public var fileSize: UInt64? {
        if case let .immutable(c) = self { return c.fileSize }
        return nil
    }

    /// The capability of the stored file: a directory's underlying file, else itself.
    public var storedFile: AnyCapability {
        if case let .directory(d) = self { return d.fileCapability }
        return self
    }

    /// May be a child of an immutable directory (deeply immutable: no mutable file or
    /// directory, no write capability).
    public var isAllowedInImmutableDirectory: Bool {
        switch self {
        case .immutable: return true
        case .mutable: return false
        case let .directory(d): return !d.isMutable
        case let .unknown(u): return u.reason == nil && u.writeString == nil
        }
    }
}
