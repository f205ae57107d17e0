import Foundation
import GridSystem

/// A JSON value that keeps what Tahoe's metadata needs kept: object keys in their order,
/// and integers apart from floats. Parsed strictly (untrusted bytes from directories:
/// depth and size limits, no trailing garbage) and written exactly as Python's
/// `json.dumps` with default settings writes it (`", "` and `": "` separators,
/// non-ASCII as `\uXXXX`, floats as Python's `repr`), so a repacked entry is byte for
/// byte what Tahoe would write.
public enum JSONValue: Equatable, Sendable, Codable {
    case null
    case bool(Bool)
    /// An integer, as its decimal text (Python ints have no size limit).
    case int(String)
    case double(Double)
    case string(String)
    case array([JSONValue])
    /// Keys in order (Python dicts keep insertion order; a later duplicate replaces the
    /// earlier value in its place).
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public static func int(_ v: Int) -> JSONValue { .int(String(v)) }

    // MARK: Access

    public subscript(key: String) -> JSONValue? {
        if case let .object(pairs) = self { return pairs.last { $0.0 == key }?.1 }
        return nil
    }

    public var objectPairs: [(String, JSONValue)]? { if case let .object(p) = self { return p }; return nil }
    public var stringValue: String? { if case let .string(s) = self { return s }; return nil }
    public var doubleValue: Double? {
        switch self {
        case let .double(d): return d
        case let .int(s): return Double(s)
        default: return nil
        }
    }
    public var intValue: Int64? {
        switch self {
        case let .int(s): return Int64(s)
        case let .double(d) where d.isFinite && d == d.rounded() && abs(d) < 9e18: return Int64(d)
        default: return nil
        }
    }

    /// The object with `key` set to `value` (in place if present, else appended).
    public func setting(_ key: String, _ value: JSONValue) -> JSONValue {
        var pairs = objectPairs ?? []
        if let i = pairs.firstIndex(where: { $0.0 == key }) { pairs[i].1 = value } else { pairs.append((key, value)) }
        return .object(pairs)
    }

    public func removing(_ key: String) -> JSONValue {
        .object((objectPairs ?? []).filter { $0.0 != key })
    }

    // MARK: Codable (as ordinary JSON, for --json output)

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null } else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .int(String(i)) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else if let o = try? c.decode([String: JSONValue].self) { self = .object(o.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }) }
        else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value") }
    }

    public func encode(to encoder: Encoder) throws {
        switch self {
        case .null:
            var c = encoder.singleValueContainer(); try c.encodeNil()
        case let .bool(b):
            var c = encoder.singleValueContainer(); try c.encode(b)
        case let .int(s):
            var c = encoder.singleValueContainer()
            if let i = Int64(s) { try c.encode(i) } else { try c.encode(Double(s) ?? 0) }
        case let .double(d):
            var c = encoder.singleValueContainer(); try c.encode(d)
        case let .string(s):
            var c = encoder.singleValueContainer(); try c.encode(s)
        case let .array(a):
            var c = encoder.unkeyedContainer()
            for v in a { try c.encode(v) }
        case let .object(pairs):
            var c = encoder.container(keyedBy: AnyKey.self)
            for (k, v) in pairs { try c.encode(v, forKey: AnyKey(k)) }
        }
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    // MARK: Python's json.dumps

    /// The text Python's `json.dumps(value)` writes (default settings).
    public var pythonText: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(s): out += s
        case let .double(d): out += Self.pythonRepr(d)
        case let .string(s): Self.writeString(s, to: &out)
        case let .array(a):
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += ", " }
                v.write(to: &out)
            }
            out += "]"
        case let .object(pairs):
            out += "{"
            for (i, (k, v)) in pairs.enumerated() {
                if i > 0 { out += ", " }
                Self.writeString(k, to: &out)
                out += ": "
                v.write(to: &out)
            }
            out += "}"
        }
    }

    static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for u in s.utf16 {
            switch u {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(UInt8(u)))
            default:
                let h = String(u, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            }
        }
        out += "\""
    }

    /// Python's `repr(float)`: the shortest digits that round-trip, in positional form for
    /// decimal exponents -4 ..< 16 (always with a fraction part), else `d.ddde+XX`;
    /// `NaN`, `Infinity`, `-Infinity` as json.dumps writes them.
    public static func pythonRepr(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description has the shortest round-trip digits too; take them apart.
        var text = "\(abs(d))"
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...]) ?? 0
            text = String(text[..<e])
        }
        var digits = text.replacingOccurrences(of: ".", with: "")
        let point = (text.firstIndex(of: ".").map { text.distance(from: text.startIndex, to: $0) } ?? text.count)
        // Value = 0.digits × 10^(point + exponent), with leading zeros removed.
        var decimalPoint = point + exponent
        while digits.hasPrefix("0") && digits.count > 1 { digits.removeFirst(); decimalPoint -= 1 }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let sci = decimalPoint - 1  // the exponent in d.ddd form
        let sign = d < 0 ? "-" : ""
        if sci >= -4 && sci < 16 {
            // Positional.
            if decimalPoint <= 0 { return sign + "0." + String(repeating: "0", count: -decimalPoint) + digits }
            if decimalPoint >= digits.count { return sign + digits + String(repeating: "0", count: decimalPoint - digits.count) + ".0" }
            let i = digits.index(digits.startIndex, offsetBy: decimalPoint)
            return sign + digits[..<i] + "." + digits[i...]
        }
        let mantissa = digits.count == 1 ? digits : String(digits.prefix(1)) + "." + digits.dropFirst()
        let e = abs(sci) < 10 ? "0\(abs(sci))" : "\(abs(sci))"
        return sign + mantissa + "e" + (sci < 0 ? "-" : "+") + e
    }

    // MARK: Parsing

    /// Parses JSON text strictly (RFC 8259 plus Python's `NaN`/`Infinity`), at most
    /// `maxDepth` levels deep.
    public static func parse(_ bytes: [UInt8], maxDepth: Int = 64) throws -> JSONValue {
        var p = Parser(bytes: bytes, maxDepth: maxDepth)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.at == bytes.count else { throw p.fail("text after the value") }
        return v
    }

    public static func parse(_ text: String) throws -> JSONValue { try parse(Array(text.utf8)) }

    struct Parser {
        let bytes: [UInt8]
        let maxDepth: Int
        var at = 0

        func fail(_ m: String) -> GridError { GridError(.corrupt, "bad JSON at byte \(at): \(m)") }

        mutating func skipSpace() {
            while at < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[at]) { at += 1 }
        }

        mutating func literal(_ word: String) -> Bool {
            let w = Array(word.utf8)
            guard at + w.count <= bytes.count, Array(bytes[at..<at + w.count]) == w else { return false }
            at += w.count
            return true
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < maxDepth else { throw fail("nested more than \(maxDepth) deep") }
            guard at < bytes.count else { throw fail("unexpected end") }
            switch bytes[at] {
            case UInt8(ascii: "{"):
                at += 1
                var pairs: [(String, JSONValue)] = []
                skipSpace()
                if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return .object(pairs) }
                while true {
                    skipSpace()
                    guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw fail("expected a key") }
                    let k = try string()
                    skipSpace()
                    guard at < bytes.count, bytes[at] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    at += 1
                    skipSpace()
                    let v = try value(depth: depth + 1)
                    if let i = pairs.firstIndex(where: { $0.0 == k }) { pairs[i].1 = v } else { pairs.append((k, v)) }
                    skipSpace()
                    guard at < bytes.count else { throw fail("unexpected end in an object") }
                    if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                    if bytes[at] == UInt8(ascii: "}") { at += 1; return .object(pairs) }
                    throw fail("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                at += 1
                var items: [JSONValue] = []
                skipSpace()
                if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard at < bytes.count else { throw fail("unexpected end in an array") }
                    if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                    if bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                    throw fail("expected ',' or ']'")
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): if literal("true") { return .bool(true) }
            case UInt8(ascii: "f"): if literal("false") { return .bool(false) }
            case UInt8(ascii: "n"): if literal("null") { return .null }
            case UInt8(ascii: "N"): if literal("NaN") { return .double(.nan) }
            case UInt8(ascii: "I"): if literal("Infinity") { return .double(.infinity) }
            default: return try number()
            }
            throw fail("unknown literal")
        }

        mutating func number() throws -> JSONValue {
            let start = at
            if at < bytes.count, bytes[at] == UInt8(ascii: "-") {
                at += 1
                if literal("Infinity") { return .double(-.infinity) }
            }
            func digits() -> Int {
                let s = at
                while at < bytes.count, bytes[at] >= 0x30, bytes[at] <= 0x39 { at += 1 }
                return at - s
            }
            let intDigits = digits()
            guard intDigits > 0 else { throw fail("expected a value") }
            if intDigits > 1 && bytes[start + (bytes[start] == UInt8(ascii: "-") ? 1 : 0)] == 0x30 { throw fail("a number with a leading zero") }
            var isFloat = false
            if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
                at += 1
                guard digits() > 0 else { throw fail("no digits after '.'") }
                isFloat = true
            }
            if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
                at += 1
                if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
                guard digits() > 0 else { throw fail("no digits in the exponent") }
                isFloat = true
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            guard text.count <= 400 else { throw fail("a number of more than 400 characters") }
            if isFloat {
                guard let d = Double(text) else { throw fail("bad number") }
                return .double(d)
            }
            // Python prints ints as they are, but "-0" as "0".
            return .int(text == "-0" ? "0" : text)
        }

        mutating func hex4() throws -> UInt16 {
            guard at + 4 <= bytes.count, let v = UInt16(String(decoding: bytes[at..<at + 4], as: UTF8.self), radix: 16) else {
                throw fail("bad \\u escape")
            }
            at += 4
            return v
        }

        mutating func string() throws -> String {
            at += 1  // the quote
            var units: [UInt16] = []
            var run = at
            func flush(_ end: Int) { if end > run { units += String(decoding: bytes[run..<end], as: UTF8.self).utf16 } }
            while true {
                guard at < bytes.count else { throw fail("unterminated string") }
                let b = bytes[at]
                if b == UInt8(ascii: "\"") {
                    flush(at)
                    at += 1
                    break
                }
                if b < 0x20 { throw fail("a control character in a string") }
                if b == UInt8(ascii: "\\") {
                    flush(at)
                    at += 1
                    guard at < bytes.count else { throw fail("unterminated escape") }
                    let e = bytes[at]
                    at += 1
                    switch e {
                    case UInt8(ascii: "\""): units.append(0x22)
                    case UInt8(ascii: "\\"): units.append(0x5C)
                    case UInt8(ascii: "/"): units.append(0x2F)
                    case UInt8(ascii: "b"): units.append(0x08)
                    case UInt8(ascii: "f"): units.append(0x0C)
                    case UInt8(ascii: "n"): units.append(0x0A)
                    case UInt8(ascii: "r"): units.append(0x0D)
                    case UInt8(ascii: "t"): units.append(0x09)
                    case UInt8(ascii: "u"): units.append(try hex4())
                    default: throw fail("unknown escape")
                    }
                    run = at
                    continue
                }
                at += 1
            }
            guard units.count <= 1 << 24 else { throw fail("string too long") }
            // Lone surrogates (Python allows them) become U+FFFD.
            return String(decoding: units, as: UTF16.self)
        }
    }
}
