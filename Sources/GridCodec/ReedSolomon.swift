import CGridSIMD
import Synchronization

/// A dense matrix over GF(2^8), row-major.
struct GFMatrix: Equatable {
    let rows: Int
    let cols: Int
    var a: [UInt8]

    init(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        a = [UInt8](repeating: 0, count: rows * cols)
    }

    subscript(r: Int, c: Int) -> UInt8 {
        get { a[r * cols + c] }
        set { a[r * cols + c] = newValue }
    }

    static func * (x: GFMatrix, y: GFMatrix) -> GFMatrix {
        precondition(x.cols == y.rows)
        var out = GFMatrix(rows: x.rows, cols: y.cols)
        for r in 0..<x.rows {
            for i in 0..<x.cols {
                let c = x[r, i]
                if c == 0 { continue }
                for col in 0..<y.cols {
                    out[r, col] ^= GF256.mul(c, y[i, col])
                }
            }
        }
        return out
    }

    /// Gauss-Jordan inverse; nil when singular.
    func inverted() -> GFMatrix? {
        precondition(rows == cols)
        let n = rows
        var m = self
        var inv = GFMatrix(rows: n, cols: n)
        for i in 0..<n { inv[i, i] = 1 }
        for col in 0..<n {
            guard let pivot = (col..<n).first(where: { m[$0, col] != 0 }) else { return nil }
            if pivot != col {
                for c in 0..<n {
                    m.a.swapAt(pivot * n + c, col * n + c)
                    inv.a.swapAt(pivot * n + c, col * n + c)
                }
            }
            let scale = GF256.inverse(m[col, col])
            for c in 0..<n {
                m[col, c] = GF256.mul(m[col, c], scale)
                inv[col, c] = GF256.mul(inv[col, c], scale)
            }
            for r in 0..<n where r != col {
                let f = m[r, col]
                if f == 0 { continue }
                for c in 0..<n {
                    m[r, c] ^= GF256.mul(f, m[col, c])
                    inv[r, c] ^= GF256.mul(f, inv[col, c])
                }
            }
        }
        return inv
    }
}

/// A set of share numbers (0...255) as a 256-bit mask: the key of the decode-plan cache.
struct ShareSet: Hashable {
    var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0, w3: UInt64 = 0
    mutating func insert(_ i: Int) {
        let bit = UInt64(1) << UInt64(i & 63)
        switch i >> 6 {
        case 0: w0 |= bit
        case 1: w1 |= bit
        case 2: w2 |= bit
        default: w3 |= bit
        }
    }
}

/// The inverse of the k x k submatrix for one set of available shares, prepared for the kernels.
final class DecodePlan: Sendable {
    /// Available share numbers in ascending order: the column order of `tables`.
    let order: [Int]
    /// k rows of k prepared coefficients: row j rebuilds data block j.
    let tables: [UInt8]

    init(order: [Int], tables: [UInt8]) {
        self.order = order
        self.tables = tables
    }
}

/// A systematic k-of-n Reed-Solomon code over GF(2^8), byte-compatible with zfec 1.6.
///
/// The encoding matrix is zfec's: the n x k Vandermonde matrix whose row 0 is
/// (1, 0, ..., 0) and whose row r >= 1 is (α^((r-1)·c)) for column c, multiplied
/// on the right by the inverse of its top k x k square, so the top k rows are the
/// identity (share i < k is data block i) and any k rows are invertible.
///
/// An instance is immutable apart from its decode-plan cache and is safe to use
/// from many threads at once.
public final class ReedSolomon: Sendable {
    public let k: Int
    public let n: Int
    /// The n x k encoding matrix, row-major.
    public let matrix: [UInt8]
    /// Prepared tables for every row of the matrix (n * k * GRID_GF_TABLE_BYTES bytes).
    let rowTables: [UInt8]
    let plans = Mutex<[ShareSet: DecodePlan]>([:])
    static let maxCachedPlans = 256
    static let tableBytes = Int(GRID_GF_TABLE_BYTES)

    public init(k: Int, n: Int) throws {
        guard k >= 1, n >= k, n <= 256 else { throw CodecError.invalidParameters(k: k, n: n) }
        self.k = k
        self.n = n
        var vander = GFMatrix(rows: n, cols: k)
        vander[0, 0] = 1
        if n > 1 {
            for r in 1..<n {
                for c in 0..<k { vander[r, c] = GF256.exp(((r - 1) * c) % 255) }
            }
        }
        var top = GFMatrix(rows: k, cols: k)
        top.a = Array(vander.a[0..<(k * k)])
        guard let topInv = top.inverted() else { throw CodecError.invalidParameters(k: k, n: n) }
        let enc = vander * topInv
        matrix = enc.a
        var tables = [UInt8](repeating: 0, count: n * k * Self.tableBytes)
        enc.a.withUnsafeBufferPointer { coeffs in
            tables.withUnsafeMutableBufferPointer { t in
                grid_gf_prepare(coeffs.baseAddress, coeffs.count, t.baseAddress)
            }
        }
        rowTables = tables
    }

    // MARK: Encoding

    /// Writes share `shares[i]` into `outputs[i]` for every i, computed from the k data
    /// blocks `data` of `blockSize` bytes each. Shares below k are copies of the data.
    /// Nothing is allocated on the heap.
    public func encode(
        blockSize: Int, data: [UnsafePointer<UInt8>], shares: [Int],
        outputs: [UnsafeMutablePointer<UInt8>], path: SIMDPath = .best
    ) throws {
        guard data.count == k else {
            throw CodecError.bufferCountMismatch("\(data.count) data blocks for k=\(k)")
        }
        guard shares.count == outputs.count else {
            throw CodecError.bufferCountMismatch("\(shares.count) share numbers, \(outputs.count) outputs")
        }
        for s in shares where s < 0 || s >= n { throw CodecError.badShareNumber(s, n: n) }
        guard path.isSupported else { throw CodecError.unsupportedSIMDPath(path) }
        if blockSize == 0 { return }
        let tableBytes = Self.tableBytes
        withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt8>?.self, capacity: shares.count) { dsts in
            withUnsafeTemporaryAllocation(of: UnsafePointer<UInt8>?.self, capacity: shares.count) { rows in
                rowTables.withUnsafeBufferPointer { tables in
                    var parity = 0
                    for (i, s) in shares.enumerated() {
                        if s < k {
                            outputs[i].update(from: data[s], count: blockSize)
                        } else {
                            dsts[parity] = outputs[i]
                            rows[parity] = UnsafePointer(tables.baseAddress! + s * k * tableBytes)
                            parity += 1
                        }
                    }
                    if parity == 0 { return }
                    data.withUnsafeBufferPointer { src in
                        src.withMemoryRebound(to: UnsafePointer<UInt8>?.self) { srcs in
                            _ = grid_gf_dot_prod(
                                path.cValue, blockSize, k, srcs.baseAddress, parity,
                                dsts.baseAddress, rows.baseAddress)
                        }
                    }
                }
            }
        }
    }

    /// Convenience: encodes k equal-sized blocks into all n shares.
    public func encode(_ blocks: [[UInt8]], path: SIMDPath = .best) throws -> [[UInt8]] {
        guard blocks.count == k else {
            throw CodecError.bufferCountMismatch("\(blocks.count) data blocks for k=\(k)")
        }
        let size = blocks.first?.count ?? 0
        guard blocks.allSatisfy({ $0.count == size }) else {
            throw CodecError.bufferCountMismatch("data blocks differ in size")
        }
        var out = [[UInt8]](repeating: [UInt8](repeating: 0, count: size), count: n)
        try withPointers(blocks) { data in
            try withMutablePointers(&out) { outs in
                try encode(blockSize: size, data: data, shares: Array(0..<n), outputs: outs, path: path)
            }
        }
        return out
    }

    // MARK: Decoding

    func plan(for indices: [Int]) throws -> DecodePlan {
        var key = ShareSet()
        for i in indices { key.insert(i) }
        if let cached = plans.withLock({ $0[key] }) { return cached }
        let order = indices.sorted()
        var sub = GFMatrix(rows: k, cols: k)
        for (r, s) in order.enumerated() {
            for c in 0..<k { sub[r, c] = matrix[s * k + c] }
        }
        guard let inv = sub.inverted() else {
            // Cannot happen for zfec's matrix: any k rows are independent.
            throw CodecError.wrongShareCount(got: indices.count, need: k)
        }
        var tables = [UInt8](repeating: 0, count: k * k * Self.tableBytes)
        inv.a.withUnsafeBufferPointer { coeffs in
            tables.withUnsafeMutableBufferPointer { t in
                grid_gf_prepare(coeffs.baseAddress, coeffs.count, t.baseAddress)
            }
        }
        let plan = DecodePlan(order: order, tables: tables)
        plans.withLock { cache in
            if cache.count >= Self.maxCachedPlans { cache.removeAll(keepingCapacity: true) }
            cache[key] = plan
        }
        return plan
    }

    /// Rebuilds data blocks from any k distinct shares.
    ///
    /// `available[i]` holds share `indices[i]`; `missing` lists data block numbers (< k)
    /// to rebuild into `outputs`. Inverted matrices are cached per set of available
    /// shares, so repeated decodes with one loss pattern do no matrix work and no
    /// heap allocation.
    public func reconstruct(
        blockSize: Int, available: [UnsafePointer<UInt8>], indices: [Int],
        missing: [Int], outputs: [UnsafeMutablePointer<UInt8>], path: SIMDPath = .best
    ) throws {
        guard available.count == k, indices.count == k else {
            throw CodecError.wrongShareCount(got: min(available.count, indices.count), need: k)
        }
        guard missing.count == outputs.count else {
            throw CodecError.bufferCountMismatch("\(missing.count) missing blocks, \(outputs.count) outputs")
        }
        var seen = ShareSet()
        var seenCount = 0
        for s in indices {
            guard s >= 0, s < n else { throw CodecError.badShareNumber(s, n: n) }
            let before = seen
            seen.insert(s)
            if seen == before { throw CodecError.duplicateShareNumber(s) }
            seenCount += 1
        }
        for m in missing where m < 0 || m >= k { throw CodecError.badShareNumber(m, n: k) }
        guard path.isSupported else { throw CodecError.unsupportedSIMDPath(path) }
        if blockSize == 0 || missing.isEmpty { return }
        let plan = try plan(for: indices)
        let tableBytes = Self.tableBytes
        let k = self.k
        withUnsafeTemporaryAllocation(of: UnsafePointer<UInt8>?.self, capacity: k) { srcs in
            // Put the sources in the plan's (ascending) column order.
            for (pos, s) in plan.order.enumerated() {
                let i = indices.firstIndex(of: s)!
                srcs[pos] = available[i]
            }
            withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt8>?.self, capacity: missing.count) { dsts in
                withUnsafeTemporaryAllocation(of: UnsafePointer<UInt8>?.self, capacity: missing.count) { rows in
                    plan.tables.withUnsafeBufferPointer { tables in
                        for (i, m) in missing.enumerated() {
                            dsts[i] = outputs[i]
                            rows[i] = UnsafePointer(tables.baseAddress! + m * k * tableBytes)
                        }
                        _ = grid_gf_dot_prod(
                            path.cValue, blockSize, k, UnsafePointer(srcs.baseAddress), missing.count,
                            dsts.baseAddress, rows.baseAddress)
                    }
                }
            }
        }
    }

    /// Convenience: returns the k data blocks from any k distinct (share number, block) pairs.
    public func decode(_ shares: [(Int, [UInt8])], path: SIMDPath = .best) throws -> [[UInt8]] {
        guard shares.count == k else { throw CodecError.wrongShareCount(got: shares.count, need: k) }
        let size = shares.first?.1.count ?? 0
        guard shares.allSatisfy({ $0.1.count == size }) else {
            throw CodecError.bufferCountMismatch("shares differ in size")
        }
        let indices = shares.map(\.0)
        var out = [[UInt8]](repeating: [UInt8](repeating: 0, count: size), count: k)
        var missing: [Int] = []
        for j in 0..<k {
            if let hit = shares.first(where: { $0.0 == j }) { out[j] = hit.1 } else { missing.append(j) }
        }
        var rebuilt = [[UInt8]](repeating: [UInt8](repeating: 0, count: size), count: missing.count)
        try withPointers(shares.map(\.1)) { avail in
            try withMutablePointers(&rebuilt) { outs in
                try reconstruct(
                    blockSize: size, available: avail, indices: indices, missing: missing,
                    outputs: outs, path: path)
            }
        }
        for (i, j) in missing.enumerated() { out[j] = rebuilt[i] }
        return out
    }
}

// MARK: Pointer helpers for the convenience APIs

func withPointers<R>(_ arrays: [[UInt8]], _ body: ([UnsafePointer<UInt8>]) throws -> R) rethrows -> R {
    var ptrs: [UnsafePointer<UInt8>] = []
    ptrs.reserveCapacity(arrays.count)
    func recurse(_ i: Int) throws -> R {
        if i == arrays.count { return try body(ptrs) }
        return try arrays[i].withUnsafeBufferPointer { buf in
            // An empty array may have no base address; any non-nil pointer serves for 0 bytes.
            ptrs.append(buf.baseAddress ?? UnsafePointer(bitPattern: 1)!)
            return try recurse(i + 1)
        }
    }
    return try recurse(0)
}

func withMutablePointers<R>(
    _ arrays: inout [[UInt8]], _ body: ([UnsafeMutablePointer<UInt8>]) throws -> R
) rethrows -> R {
    // Allocate one contiguous scratch area, run, then copy back: simple and safe.
    let size = arrays.first?.count ?? 0
    let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, size * arrays.count))
    defer { scratch.deallocate() }
    scratch.initialize(repeating: 0, count: max(1, size * arrays.count))
    let ptrs = (0..<arrays.count).map { scratch + $0 * size }
    let result = try body(ptrs)
    for i in 0..<arrays.count {
        arrays[i] = Array(UnsafeBufferPointer(start: ptrs[i], count: size))
    }
    return result
}
