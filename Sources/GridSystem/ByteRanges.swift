/// Sorted, disjoint byte ranges, merged where they overlap or touch: what a writer that
/// takes pieces in any order has received so far (a storage server's bucket writer, the
/// upload helper).
public struct ByteRanges: Sendable, Equatable {
    public private(set) var ranges: [Range<UInt64>] = []

    public init() {}

    /// Adds `r`, merging it with every range it overlaps or touches.
    public mutating func insert(_ r: Range<UInt64>) {
        guard !r.isEmpty else { return }
        var lo = r.lowerBound, hi = r.upperBound
        var out: [Range<UInt64>] = []
        out.reserveCapacity(ranges.count + 1)
        var placed = false
        for x in ranges {
            if x.upperBound < lo {
                out.append(x)
            } else if x.lowerBound > hi {
                if !placed { out.append(lo..<hi); placed = true }
                out.append(x)
            } else {
                lo = min(lo, x.lowerBound)
                hi = max(hi, x.upperBound)
            }
        }
        if !placed { out.append(lo..<hi) }
        ranges = out
    }

    /// How many bytes from offset 0 are held without a gap.
    public var prefix: UInt64 { ranges.first.map { $0.lowerBound == 0 ? $0.upperBound : 0 } ?? 0 }
}
