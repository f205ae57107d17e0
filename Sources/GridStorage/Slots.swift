/// The storage backend's own vocabulary for mutable slots (reads are `Range<UInt64>`s of a
/// share's data)  (the wire messages in
/// GridProtocol are mapped onto these by the service, ranges checked for overflow there, so the on-disk store does not
/// depend on how requests travel).

/// Compares a share's bytes with a specimen, bytes compared lexicographically.
public enum SlotComparison: Sendable, CaseIterable {
    case lessThan, lessOrEqual, equal, notEqual, greaterOrEqual, greaterThan

    public func holds(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> Bool {
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

/// A test: the share's bytes in `range` (clipped to the data) compared with `specimen`.
public struct SlotTest: Equatable, Sendable {
    public var range: Range<UInt64>
    public var comparison: SlotComparison
    public var specimen: [UInt8]
    public init(_ range: Range<UInt64>, _ comparison: SlotComparison, _ specimen: [UInt8]) {
        (self.range, self.comparison, self.specimen) = (range, comparison, specimen)
    }
}

/// Bytes to write at an offset of a share's data.
public typealias SlotWrite = (offset: UInt64, data: [UInt8])

/// The tests, writes and new length for one share of a slot.
public struct SlotUpdate: Sendable {
    public var tests: [SlotTest]
    public var writes: [SlotWrite]
    /// nil: unchanged; 0: delete the share; otherwise the new data length.
    public var newLength: UInt64?
    /// The share's whole new data, staged earlier under this id (`slotStage`), of this length.
    public var staged: (id: [UInt8], length: UInt64)?
    public init(tests: [SlotTest] = [], writes: [SlotWrite] = [], newLength: UInt64? = nil, staged: (id: [UInt8], length: UInt64)? = nil) {
        self.tests = tests
        self.writes = writes
        self.newLength = newLength
        self.staged = staged
    }
}
