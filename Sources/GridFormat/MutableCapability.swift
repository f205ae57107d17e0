import GridCrypto
import GridSystem

/// Tahoe-LAFS's two mutable file formats: SDMF (one segment, `URI:SSK…`) and MDMF
/// (many segments, `URI:MDMF…`). Their capabilities have the same shape.
public enum MutableFormat: String, Sendable, CaseIterable {
    case sdmf, mdmf

    var prefix: String { self == .sdmf ? "URI:SSK" : "URI:MDMF" }
}

/// A mutable file's capability: `URI:SSK:<b32 writekey>:<b32 fingerprint>` (write),
/// `URI:SSK-RO:<b32 readkey>:<b32 fingerprint>` (read-only) and
/// `URI:SSK-Verifier:<b32 storage index>:<b32 fingerprint>` (verify), and the same with
/// `URI:MDMF` for MDMF. The writekey is a hash of the RSA private key (PKCS#8 DER), the
/// fingerprint a hash of the public key (SubjectPublicKeyInfo DER); the readkey and the
/// storage index are hashed down from the writekey, so each capability yields the weaker ones.
public struct MutableCapability: Equatable, Sendable {
    public enum Access: String, Sendable { case write, readOnly, verify }

    public let format: MutableFormat
    public let access: Access
    /// The writekey (write), readkey (read-only) or storage index (verify): 16 bytes.
    public let key: [UInt8]
    /// SHA-256d-based hash of the public key: 32 bytes.
    public let fingerprint: [UInt8]

    public init(format: MutableFormat, access: Access, key: [UInt8], fingerprint: [UInt8]) {
        (self.format, self.access, self.key, self.fingerprint) = (format, access, key, fingerprint)
    }

    /// The write capability of the file whose signing key is `privateKey`.
    public init(format: MutableFormat, privateKey: RSAPrivateKey) {
        self.init(format: format, access: .write, key: TahoeHash.sskWritekey(privateKey: privateKey.der),
                  fingerprint: TahoeHash.sskPubkeyFingerprint(publicKey: privateKey.publicKey.der))
    }

    public var writekey: [UInt8]? { access == .write ? key : nil }

    public var readkey: [UInt8]? {
        switch access {
        case .write: return TahoeHash.sskReadkey(writekey: key)
        case .readOnly: return key
        case .verify: return nil
        }
    }

    public var storageIndex: [UInt8] {
        access == .verify ? key : TahoeHash.sskStorageIndex(readkey: readkey!)
    }

    /// The read-only capability (nil from a verify capability).
    public var readOnly: MutableCapability? {
        readkey.map { MutableCapability(format: format, access: .readOnly, key: $0, fingerprint: fingerprint) }
    }

    public var verifier: MutableCapability {
        MutableCapability(format: format, access: .verify, key: storageIndex, fingerprint: fingerprint)
    }

    public var string: String {
        let suffix: String
        switch access {
        case .write: suffix = ""
        case .readOnly: suffix = "-RO"
        case .verify: suffix = "-Verifier"
        }
        return "\(format.prefix)\(suffix):\(Base32.encode(key)):\(Base32.encode(fingerprint))"
    }

    /// Parses a mutable capability; MDMF capabilities may carry more fields after the
    /// fingerprint, which are ignored (as Tahoe does).
    public init(parsing raw: String) throws {
        let s = raw.trimmingWhitespace()
        func fail(_ m: String) -> GridError { GridError(.usage, "bad capability: \(m)") }
        var found: (MutableFormat, Access, String)?
        for f in MutableFormat.allCases {
            for (suffix, access) in [("-Verifier", Access.verify), ("-RO", .readOnly), ("", .write)] where found == nil {
                let p = f.prefix + suffix + ":"
                if s.hasPrefix(p) { found = (f, access, String(s.dropFirst(p.count))) }
            }
        }
        guard let (format, access, body) = found else {
            let shown = s.count > 24 ? String(s.prefix(24)) + "…" : s
            throw fail("'\(shown)' is not a URI:SSK or URI:MDMF capability")
        }
        let kind = body.isEmpty ? format.prefix : String(s.prefix(s.count - body.count - 1))
        let parts = body.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 || (format == .mdmf && parts.count > 2) else {
            throw fail("\(kind) needs 2 fields after the prefix (key:fingerprint), found \(parts.count)")
        }
        let keyName = access == .write ? "writekey" : access == .readOnly ? "readkey" : "storage index"
        guard parts[0].count == 26, let key = Base32.decode(parts[0]), key.count == 16 else {
            throw fail("\(keyName) must be 26 base32 characters (16 bytes), got '\(parts[0])'")
        }
        guard parts[1].count == 52, let fp = Base32.decode(parts[1]), fp.count == 32 else {
            throw fail("public key fingerprint must be 52 base32 characters (32 bytes)")
        }
        self.init(format: format, access: access, key: key, fingerprint: fp)
    }
}
