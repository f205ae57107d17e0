import GridDirectory
import GridFormat

/// A node as Tahoe's web API describes it with `?t=json` (and `tahoe ls --json` prints):
/// `["filenode", {...}]`, `["dirnode", {...}]` or `["unknown", {...}]`. Tools written
/// for Tahoe read these as they are.
public struct NodeInfo: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case filenode, dirnode, unknown }

    public struct Fields: Codable, Sendable, Equatable {
        public var rw_uri: String?
        public var ro_uri: String?
        public var verify_uri: String?
        public var mutable: Bool?
        /// Files: CHK, SDMF or MDMF.
        public var format: String?
        /// Files whose size the capability says (immutable files).
        public var size: UInt64?
        /// A child's link metadata.
        public var metadata: JSONValue?
        /// A directory's children.
        public var children: [String: NodeInfo]?
    }

    public var kind: Kind
    public var fields: Fields

    public init(kind: Kind, fields: Fields) { (self.kind, self.fields) = (kind, fields) }

    /// What the capability alone tells (nothing is fetched).
    public init(_ cap: AnyCapability, metadata: JSONValue? = nil) {
        var f = Fields(rw_uri: cap.writeString, ro_uri: cap.readString, verify_uri: cap.verifier?.string, metadata: metadata)
        switch cap {
        case let .immutable(c):
            kind = .filenode
            f.mutable = false
            f.format = "CHK"
            f.size = c.fileSize
            if case .chkVerifier = c { f.ro_uri = nil }
        case let .mutable(m):
            kind = .filenode
            f.mutable = true
            f.format = m.format == .mdmf ? "MDMF" : "SDMF"
        case let .directory(d):
            kind = .dirnode
            f.mutable = d.isMutable
        case .unknown:
            kind = .unknown
            f.verify_uri = nil
        }
        fields = f
    }

    /// A directory with its children.
    public init(directory: DirectoryCapability, entries: [DirectoryEntry], metadata: JSONValue? = nil) {
        self.init(.directory(directory), metadata: metadata)
        var kids: [String: NodeInfo] = [:]
        for e in entries { kids[e.name] = NodeInfo(e.capability, metadata: e.metadata) }
        fields.children = kids
    }

    public init(from decoder: Decoder) throws {
        var c = try decoder.unkeyedContainer()
        kind = try c.decode(Kind.self)
        fields = try c.decode(Fields.self)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.unkeyedContainer()
        try c.encode(kind)
        try c.encode(fields)
    }
}
