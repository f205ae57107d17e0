import Foundation
import GridCrypto
import GridFormat
import GridSystem

/// One child of a directory, as a directory node sees it.
public struct DirectoryEntry: Equatable, Sendable {
    /// The name, NFC-normalized.
    public var name: String
    /// The child: its write capability when the directory was opened by its write
    /// capability and the child has one, else its read capability.
    public var capability: AnyCapability
    /// The entry's metadata (a JSON object; Tahoe keeps link times under "tahoe").
    public var metadata: JSONValue

    public init(name: String, capability: AnyCapability, metadata: JSONValue = .object([])) {
        (self.name, self.capability, self.metadata) = (Dirnode.normalize(name), capability, metadata)
    }
}

/// The packed children of a directory (Tahoe's `dirnode.py` format, byte for byte):
///
/// ```
/// directory = netstring(entry) || ...             sorted by the NFC name's code points
/// entry     = netstring(utf8(name)) || netstring(ro_uri) || netstring(rwcapdata) || netstring(metadata JSON)
/// rwcapdata = ""                                  immutable directory
///           = salt(16) || AES-CTR(key, rw_uri) || mac(32)   mutable directory
/// ```
///
/// Unpacking reads only names and keeps every entry's bytes; an entry is decoded when
/// asked for, and one left unchanged is packed again as the very same bytes, so adding a
/// child to a large directory encrypts and serializes only the new child.
public struct DirectoryContents: Sendable {
    struct Item: Sendable {
        var name: String
        var key: [UInt8]          // utf8 of the NFC name: the sort key (code point order)
        var packed: [UInt8]?      // the entry's bytes, inside its outer netstring
        var entry: DirectoryEntry?
    }

    /// Sorted by key.
    var items: [Item] = []
    /// Whether the directory is mutable (its children may be mutable and have write caps).
    public let mutable: Bool
    /// The directory's writekey: children's write caps are readable and writable with it.
    public let writekey: [UInt8]?

    public init(mutable: Bool, writekey: [UInt8]?) {
        self.mutable = mutable
        self.writekey = mutable ? writekey : nil
    }

    public var count: Int { items.count }
    /// How many packed bytes these contents were unpacked from (0 for new contents).
    public private(set) var unpackedByteCount = 0
    public var isEmpty: Bool { items.isEmpty }
    public var names: [String] { items.map(\.name) }

    // MARK: Unpacking

    /// Splits packed bytes into entries (names read, everything else kept as bytes).
    /// Untrusted input: every length is checked; any damage is a `.corrupt` error.
    public static func unpack(_ data: [UInt8], mutable: Bool, writekey: [UInt8]?) throws -> DirectoryContents {
        var out = DirectoryContents(mutable: mutable, writekey: writekey)
        var at = 0
        var sorted = true
        var seen = Set<[UInt8]>()
        while at < data.count {
            let (start, end, next) = try Netstrings.next(data, at: at, what: "directory entry")
            at = next
            let entry = Array(data[start..<end])
            let (ns, ne, _) = try Netstrings.next(entry, at: 0, what: "entry name")
            guard let raw = String(validating: entry[ns..<ne], as: UTF8.self) else {
                throw GridError(.corrupt, "directory entry \(out.items.count): the name is not UTF-8")
            }
            let name = Dirnode.normalize(raw)
            let key = Array(name.utf8)
            if let last = out.items.last, !(last.key < key) { sorted = false }
            // A repeated name: the last one wins, as in Tahoe's dict.
            if !seen.insert(key).inserted { out.items.removeAll { $0.key == key } }
            out.items.append(Item(name: name, key: key, packed: entry, entry: nil))
        }
        if !sorted { out.items.sort { $0.key < $1.key } }
        out.unpackedByteCount = data.count
        return out
    }

    /// The entry named `name` (NFC-normalized first), decoded; nil when there is none.
    public func entry(named name: String) throws -> DirectoryEntry? {
        guard let i = index(of: Array(Self.normalizeName(name).utf8)) else { return nil }
        return try decoded(items[i])
    }

    /// Every entry, decoded, in name order.
    public func entries() throws -> [DirectoryEntry] { try items.map(decoded) }

    func decoded(_ item: Item) throws -> DirectoryEntry {
        if let e = item.entry { return e }
        guard let packed = item.packed else { preconditionFailure("an item with neither bytes nor entry") }
        return try Dirnode.decodeEntry(packed, name: item.name, mutable: mutable, writekey: writekey)
    }

    func index(of key: [UInt8]) -> Int? {
        var (lo, hi) = (0, items.count)
        while lo < hi {
            let mid = (lo + hi) / 2
            if items[mid].key < key { lo = mid + 1 } else { hi = mid }
        }
        return lo < items.count && items[lo].key == key ? lo : nil
    }

    static func normalizeName(_ s: String) -> String { Dirnode.normalize(s) }

    // MARK: Changing

    /// Adds or replaces a child.
    public mutating func set(_ entry: DirectoryEntry) {
        let key = Array(entry.name.utf8)
        let item = Item(name: entry.name, key: key, packed: nil, entry: entry)
        var (lo, hi) = (0, items.count)
        while lo < hi {
            let mid = (lo + hi) / 2
            if items[mid].key < key { lo = mid + 1 } else { hi = mid }
        }
        if lo < items.count && items[lo].key == key { items[lo] = item } else { items.insert(item, at: lo) }
    }

    /// Removes the child named `name`; returns it (nil when there was none).
    @discardableResult
    public mutating func remove(_ name: String) throws -> DirectoryEntry? {
        guard let i = index(of: Array(Self.normalizeName(name).utf8)) else { return nil }
        let e = try decoded(items[i])
        items.remove(at: i)
        return e
    }

    // MARK: Packing

    /// The packed bytes: unchanged entries as they were, new or changed ones encoded.
    /// A mutable directory needs its writekey to pack a new entry; an immutable one
    /// refuses mutable children and write capabilities.
    public func pack() throws -> [UInt8] {
        var out: [UInt8] = []
        for item in items {
            let bytes = try item.packed ?? Dirnode.encodeEntry(item.entry!, mutable: mutable, writekey: writekey)
            out += Netstring.encode(bytes)
        }
        return out
    }
}

/// Tahoe's dirnode entry encoding (one owner for both directions).
public enum Dirnode {
    /// NFC (Unicode's canonical composition), as Tahoe normalizes names in and out.
    public static func normalize(_ s: String) -> String {
        if s.utf8.allSatisfy({ $0 < 0x80 }) { return s }  // ASCII is always NFC
        return s.precomposedStringWithCanonicalMapping
    }

    public static let childSaltTag = TahoeTag.dirnodeChildSalt
    public static let childKeyTag = TahoeTag.dirnodeChildCapKey

    /// rwcapdata for a child's write cap (b"" when none): salt, AES-CTR ciphertext, mac.
    public static func encryptWriteCap(_ rw: [UInt8], writekey: [UInt8]) -> [UInt8] {
        let salt = TahoeHash.tagged(childSaltTag, rw, truncateTo: 16)
        let key = TahoeHash.taggedPair(childKeyTag, salt, writekey, truncateTo: 16)
        let crypt = try! AESCTR(key: key).process(rw)
        return salt + crypt + tahoeHMAC(key: key, salt + crypt)
    }

    public static func decryptWriteCap(_ data: [UInt8], writekey: [UInt8]) throws -> [UInt8] {
        guard data.count >= 48 else { throw GridError(.corrupt, "a child's write capability data is \(data.count) bytes; at least 48 expected") }
        let salt = Array(data[0..<16])
        let key = TahoeHash.taggedPair(childKeyTag, salt, writekey, truncateTo: 16)
        return try AESCTR(key: key).process(Array(data[16..<(data.count - 32)]))
    }

    /// Tahoe's `hashutil.hmac` (not RFC 2104: the key is XORed with 0x36/0x5c unpadded).
    public static func tahoeHMAC(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        let inner = SHA256.hash(key.map { $0 ^ 0x36 } + data)
        return SHA256.hash(key.map { $0 ^ 0x5c } + inner)
    }

    /// Tahoe's `strip_prefix_for_ro`.
    static func readField(_ ro: String, deepImmutable: Bool) -> String {
        if ro.hasPrefix(AnyCapability.immutablePrefix) { return deepImmutable ? String(ro.dropFirst(AnyCapability.immutablePrefix.count)) : ro }
        if ro.hasPrefix(AnyCapability.readOnlyPrefix) { return String(ro.dropFirst(AnyCapability.readOnlyPrefix.count)) }
        return ro
    }

    /// One entry's bytes (without the outer netstring).
    public static func encodeEntry(_ e: DirectoryEntry, mutable: Bool, writekey: [UInt8]?) throws -> [UInt8] {
        let cap = e.capability
        if case let .unknown(u) = cap, let reason = u.reason {
            throw GridError(.usage, "cannot link '\(e.name)': \(reason)")
        }
        guard e.metadata.objectPairs != nil else { throw GridError(.usage, "the metadata of '\(e.name)' must be a JSON object") }
        let rw = cap.writeString ?? ""
        if !mutable {
            guard rw.isEmpty, cap.isAllowedInImmutableDirectory else {
                throw GridError(.usage, "'\(e.name)' cannot be in an immutable directory: \(cap.kindName) is mutable or a write capability")
            }
        }
        let ro = readField(cap.readString ?? (cap.isVerifyOnly ? cap.string : ""), deepImmutable: !mutable)
        let rwcapdata: [UInt8]
        if mutable {
            guard let writekey else { throw GridError(.denied, "a directory opened read-only cannot be changed") }
            rwcapdata = encryptWriteCap(Array(rw.utf8), writekey: writekey)
        } else {
            rwcapdata = []
        }
        return Netstring.encode(Array(e.name.utf8)) + Netstring.encode(Array(ro.utf8)) + Netstring.encode(rwcapdata)
            + Netstring.encode(Array(e.metadata.pythonText.utf8))
    }

    /// Decodes one entry's bytes.
    public static func decodeEntry(_ entry: [UInt8], name: String, mutable: Bool, writekey: [UInt8]?) throws -> DirectoryEntry {
        func fail(_ m: String) -> GridError { GridError(.corrupt, "directory entry '\(name)': \(m)") }
        var fields: [(Int, Int)] = []
        var at = 0
        for what in ["name", "read capability", "write capability data", "metadata"] {
            let (s, e, n) = try Netstrings.next(entry, at: at, what: what)
            fields.append((s, e))
            at = n
        }
        // Tahoe ignores bytes after the fourth netstring; so do we.
        let ro = entry[fields[1].0..<fields[1].1]
        let rwdata = Array(entry[fields[2].0..<fields[2].1])
        if !mutable && !rwdata.isEmpty { throw fail("a write capability in an immutable directory") }
        var rw: [UInt8] = []
        if mutable, let writekey, !rwdata.isEmpty { rw = try decryptWriteCap(rwdata, writekey: writekey) }
        func capText<C: Collection<UInt8>>(_ b: C) throws -> String? {
            var bytes = Array(b)
            while bytes.last == 0x20 { bytes.removeLast() }
            if bytes.isEmpty { return nil }
            guard let s = String(validating: bytes, as: UTF8.self) else { throw fail("a capability is not UTF-8") }
            return s
        }
        // A write capability that does not decrypt to text: unknown, never a crash.
        let rwText = (try? capText(rw)) ?? nil
        let roText = try capText(ro)
        let cap = AnyCapability.fromEntry(write: rwText, read: roText, deepImmutable: !mutable)
        let metadata: JSONValue
        do { metadata = try JSONValue.parse(Array(entry[fields[3].0..<fields[3].1])) } catch { throw fail("metadata: \(error)") }
        guard metadata.objectPairs != nil else { throw fail("metadata is not a JSON object") }
        return DirectoryEntry(name: name, capability: cap, metadata: metadata)
    }
}

/// Netstrings read strictly from untrusted bytes.
enum Netstrings {
    /// The content range of the netstring at `at`, and where the next one starts.
    static func next(_ data: [UInt8], at: Int, what: String) throws -> (start: Int, end: Int, next: Int) {
        var i = at
        var length = 0
        while i < data.count, data[i] >= 0x30, data[i] <= 0x39 {
            guard i - at < 10 else { throw GridError(.corrupt, "\(what): a length of more than 10 digits") }
            length = length * 10 + Int(data[i] - 0x30)
            i += 1
        }
        guard i > at, i < data.count, data[i] == UInt8(ascii: ":") else {
            throw GridError(.corrupt, "\(what) at byte \(at): not a netstring (digits and ':' expected)")
        }
        let start = i + 1
        let (end, overflow) = start.addingReportingOverflow(length)
        guard !overflow, end < data.count, data[end] == UInt8(ascii: ",") else {
            throw GridError(.corrupt, "\(what) at byte \(at): a netstring of \(length) bytes runs past the end or lacks its ','")
        }
        return (start, end, end + 1)
    }
}

extension Array where Element == UInt8 {
    static func < (a: [UInt8], b: [UInt8]) -> Bool { a.lexicographicallyPrecedes(b) }
}
