/// The storage backend's own vocabulary for mutable slots (the wire messages in
/// GridProtocol are mapped onto these by the service, so the on-disk store does not
/// depend on how requests travel).

/// Compares a share's bytes with a specimen, bytes compared lexicographically.
public enum SlotComparison: Sendable, CaseIterable {
    case lessThan, lessOrEqual, equal, notEqual, greaterOrEqual, greaterThan

    public func holds(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        switch self {
        case .equal: return a == b
        case .notEqual: return a != b
        case .lessThan: return a.lexicographicallyPrecedes(b)
        case .lessOrEqual: return !b.lexicographicallyPrecedes(a)
        case .greaterThan: return b.lexicographicallyPrecedes(a)
        case .greaterOrEqual: return !a.lexicographicallyPrecedes(b)
        }
    }
}

/// A range of a share's data to read (clipped to the data; a range past the end reads nothing).
public struct SlotRead: Equatable, Sendable {
    public var offset: UInt64
    public var length: UInt64
    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }
}

/// A test: the share's bytes at [offset, offset+length) compared with `specimen`.
public struct SlotTest: Equatable, Sendable {
    public var offset: UInt64
    public var length: UInt64
    public var comparison: SlotComparison
    public var specimen: [UInt8]
    public init(offset: UInt64, length: UInt64, comparison: SlotComparison, specimen: [UInt8]) {
        self.offset = offset
        self.length = length
        self.comparison = comparison
        self.specimen = specimen
    }
}

/// Bytes to write at an offset of a share's data.
public struct SlotWrite: Equatable, Sendable {
    public var offset: UInt64
    public var data: [UInt8]
    public init(offset: UInt64, data: [UInt8]) {
        self.offset = offset
        self.data = data
    }
}

/// The tests, writes and new length for one share of a slot.
public struct SlotUpdate: Equatable, Sendable {
    public var tests: [SlotTest]
    public var writes: [SlotWrite]
    /// nil: unchanged; 0: delete the share; otherwise the new data length.
    public var newLength: UInt64?
    public init(tests: [SlotTest] = [], writes: [SlotWrite] = [], newLength: UInt64? = nil) {
        self.tests = tests
        self.writes = writes
        self.newLength = newLength
    }
}
