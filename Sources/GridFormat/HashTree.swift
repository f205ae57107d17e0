import GridCrypto

/// A complete binary Merkle tree built exactly as Tahoe-LAFS's `allmydata.hashtree.HashTree`.
///
/// The leaves are padded to P, the next power of two (P = 1 for one leaf), with
/// `tagged_hash("Merkle tree empty leaf", "<position>")`. Nodes are numbered
/// breadth-first: the root is 0, the children of i are 2i+1 and 2i+2, and leaf j
/// is node P-1+j. An internal node is
/// `tagged_pair_hash("Merkle tree internal node", left, right)`.
public struct HashTree: Sendable, Equatable {
    /// All 2P-1 node hashes in index order.
    public let nodes: [[UInt8]]
    public let leafCount: Int

    public var root: [UInt8] { nodes[0] }
    public var paddedLeafCount: Int { (nodes.count + 1) / 2 }
    public var firstLeafIndex: Int { paddedLeafCount - 1 }

    public static func paddedCount(_ leafCount: Int) -> Int {
        var p = 1
        while p < leafCount { p <<= 1 }
        return p
    }

    public static func emptyLeafHash(_ position: Int) -> [UInt8] {
        TahoeHash.tagged(TahoeTag.merkleEmptyLeaf, Array(String(position).utf8))
    }

    public static func internalHash(_ left: [UInt8], _ right: [UInt8]) -> [UInt8] {
        TahoeHash.taggedPair(TahoeTag.merkleInternalNode, left, right)
    }

    /// No leaves gives Tahoe's tree of one empty leaf (an empty MDMF file's block hash tree).
    public init(leaves: [[UInt8]]) {
        let p = Self.paddedCount(max(1, leaves.count))
        var nodes = [[UInt8]](repeating: [], count: 2 * p - 1)
        for j in 0..<p {
            nodes[p - 1 + j] = j < leaves.count ? leaves[j] : Self.emptyLeafHash(j)
        }
        var i = p - 2
        while i >= 0 {
            nodes[i] = Self.internalHash(nodes[2 * i + 1], nodes[2 * i + 2])
            i -= 1
        }
        self.nodes = nodes
        leafCount = leaves.count
    }

    public subscript(i: Int) -> [UInt8] { nodes[i] }

    /// The nodes a change of `leaves` (leaf numbers) touches in a tree of `paddedLeaves`
    /// leaves: each leaf's node and its ancestors (`changed`), and what is needed to check
    /// and recompute them: their children (`needed`, which includes `changed`).
    public static func pathNodes(leaves: [Int], paddedLeaves p: Int) -> (changed: Set<Int>, needed: Set<Int>) {
        var changed = Set<Int>()
        for leaf in leaves {
            var i = p - 1 + leaf
            changed.insert(i)
            while i > 0 { i = (i - 1) / 2; changed.insert(i) }
        }
        var needed = changed
        for i in changed where i < p - 1 { needed.insert(2 * i + 1); needed.insert(2 * i + 2) }
        return (changed, needed)
    }

    /// Replaces leaves of a stored tree of which only `known` nodes were read (untrusted;
    /// at least `pathNodes(...).needed`): first checks that every internal node on the
    /// changed paths is the hash of its children (so the siblings used are the ones under
    /// the stored root), then sets the new leaves and recomputes the paths. Returns the
    /// new values of the changed nodes and the new root; nil when a check fails.
    public static func replacingLeaves(_ known: [Int: [UInt8]], paddedLeaves p: Int, with newLeaves: [Int: [UInt8]]) -> (nodes: [Int: [UInt8]], root: [UInt8])? {
        let (changed, needed) = pathNodes(leaves: Array(newLeaves.keys), paddedLeaves: p)
        guard needed.allSatisfy({ known[$0]?.count == 32 }) else { return nil }
        for i in changed where i < p - 1 {
            guard known[i] == internalHash(known[2 * i + 1]!, known[2 * i + 2]!) else { return nil }
        }
        var nodes = known
        for (leaf, h) in newLeaves { nodes[p - 1 + leaf] = h }
        for i in changed.filter({ $0 < p - 1 }).sorted(by: >) {
            nodes[i] = internalHash(nodes[2 * i + 1]!, nodes[2 * i + 2]!)
        }
        return (nodes.filter { changed.contains($0.key) }, nodes[0]!)
    }

    /// The siblings on the path from node `i` to the root, bottom up (Tahoe's `needed_for`).
    public static func siblingsToRoot(_ i: Int) -> [Int] {
        var out: [Int] = []
        var here = i
        while here != 0 {
            out.append(here % 2 == 1 ? here + 1 : here - 1)
            here = (here - 1) / 2
        }
        return out
    }

    /// Node indices needed to verify leaf `leaf`, in the order Tahoe 1.20 emits them: the
    /// iteration order of the CPython set `set(needed_for(leaf)) | {leaf}`.
    /// Without the leaf, the order is that of `set(needed_for(leaf))`.
    public func neededHashes(leaf: Int, includeLeaf: Bool) -> [Int] {
        Self.neededHashes(leaf: leaf, firstLeafIndex: firstLeafIndex, includeLeaf: includeLeaf)
    }

    public static func neededHashes(leaf: Int, firstLeafIndex: Int, includeLeaf: Bool) -> [Int] {
        let node = firstLeafIndex + leaf
        var keys = siblingsToRoot(node)
        if includeLeaf { keys.append(node) }
        return PythonIntSet.iterationOrder(inserting: keys)
    }

    /// Recomputes the root from a leaf hash and the hashes of its siblings on the way up.
    /// `hashes` maps node index to hash and must hold every sibling of the path.
    public static func rootFromLeaf(leafNode: Int, leafHash: [UInt8], hashes: [Int: [UInt8]]) -> [UInt8]? {
        var here = leafNode
        var h = leafHash
        while here != 0 {
            let sib = here % 2 == 1 ? here + 1 : here - 1
            guard let s = hashes[sib] else { return nil }
            h = here % 2 == 1 ? internalHash(h, s) : internalHash(s, h)
            here = (here - 1) / 2
        }
        return h
    }
}

/// Emulates the iteration order of a CPython 3.11 `set` of small non-negative ints
/// (hash(i) == i) built by adding keys one at a time, as Tahoe's writer depends on it.
///
/// CPython's set starts with 8 slots; a key goes to slot `hash & mask`, then to the
/// next 9 slots when they exist (linear probing), then jumps with
/// `i = (i*5 + 1 + perturb) & mask` after `perturb >>= 5`. After an insert, when
/// fill*5 >= mask*3 the table grows to the smallest power of two above used*4, and
/// the entries are re-inserted in slot order. Iteration walks the slots in order.
public enum PythonIntSet {
    static let linearProbes = 9
    static let perturbShift = 5

    public static func iterationOrder(inserting keys: [Int]) -> [Int] {
        var table = [Int?](repeating: nil, count: 8)
        var used = 0

        func place(_ key: Int, into table: inout [Int?]) {
            let mask = table.count - 1
            var perturb = UInt(key)
            var i = key & mask
            while true {
                if table[i] == nil { table[i] = key; return }
                if i + linearProbes <= mask {
                    for j in 1...linearProbes where table[i + j] == nil {
                        table[i + j] = key
                        return
                    }
                }
                perturb >>= UInt(perturbShift)
                i = (i &* 5 &+ 1 &+ Int(perturb)) & mask
            }
        }

        for key in keys {
            if table.contains(where: { $0 == key }) { continue }
            place(key, into: &table)
            used += 1
            let mask = table.count - 1
            if used * 5 >= mask * 3 {
                var newSize = 8
                while newSize <= used * 4 { newSize <<= 1 }
                var grown = [Int?](repeating: nil, count: newSize)
                for case let k? in table { place(k, into: &grown) }
                table = grown
            }
        }
        return table.compactMap { $0 }
    }
}
