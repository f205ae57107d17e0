import GridCrypto
import GridFormat

/// What every good share of a file agrees on, taken from the first share whose URI
/// extension block matches the capability.
public struct CHKFileShape: Sendable {
    public let uriExtension: URIExtension
    public let geometry: CHKGeometry
    /// The layout a share of this file must have (either version; section sizes fixed).
    public let layout: ShareLayout
}

/// A share that passed the header, URI extension block, share hash chain and block hash
/// tree checks; its blocks can now be checked one at a time.
public final class ValidatedShare {
    public let reader: ShareReader
    public let layout: ShareLayout
    /// The leaves of the share's block hash tree, verified against the share root hash.
    public let blockLeaves: [[UInt8]]

    init(reader: ShareReader, layout: ShareLayout, blockLeaves: [[UInt8]]) {
        self.reader = reader
        self.layout = layout
        self.blockLeaves = blockLeaves
    }

    public var shareNumber: Int { reader.shareNumber }

    /// Where block `segment` starts in the share data.
    public func blockOffset(_ segment: Int) -> UInt64 { layout.dataOffset + UInt64(segment) * layout.blockSize }
}

/// Checks CHK shares against what a verify capability commits to: the storage index's
/// URI extension block hash, k, n and the size. Needs no read key, so it serves the
/// downloader, a verifier working from `URI:CHK-Verifier:` alone, and `grid debug`.
///
/// Every failure of a share is thrown as a `ShareFailure` (corrupt, incompatible,
/// unavailable or not found); only a capability that contradicts its own URI extension
/// block is an `ImmutableError`, since no share can fix that.
public struct CHKShareValidator: Sendable {
    public let verifier: CHKVerifierCapability

    public init(_ verifier: CHKVerifierCapability) { self.verifier = verifier }

    /// Largest URI extension block accepted (real ones are a few hundred bytes).
    public static let maxURIExtensionLength: UInt64 = 1 << 16

    /// A share's header and its URI extension block's bytes, bounds-checked. Needs no capability.
    public static func readHeader(_ r: ShareReader) throws -> (ShareLayout, [UInt8]) {
        let layout: ShareLayout
        do {
            let head = try r.read(at: 0, length: Int(min(0x44, r.size)))
            layout = try ShareLayout(parsing: head)
        } catch { throw ShareFailure(error, part: .header) }
        do {
            let lenBytes = try r.read(at: layout.uriExtensionOffset, length: layout.uebLengthFieldSize)
            let len = lenBytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard len <= maxURIExtensionLength else {
                throw ShareFailure.corrupt(.uriExtension, "URI extension block length \(len) is absurd")
            }
            let ueb = try r.read(at: layout.uriExtensionOffset + UInt64(layout.uebLengthFieldSize), length: Int(len))
            return (layout, ueb)
        } catch { throw ShareFailure(error, part: .uriExtension) }
    }

    /// Checks that `bytes` are the URI extension block the capability names.
    func checkURIExtensionHash(_ bytes: [UInt8]) throws {
        guard TahoeHash.uriExtensionHash(bytes) == verifier.uebHash else {
            throw ShareFailure.corrupt(.uriExtension, "URI extension block does not match the capability's hash")
        }
    }

    /// The file's shape, from one share's URI extension block.
    public func fileShape(from r: ShareReader) throws -> CHKFileShape {
        let (_, uebBytes) = try Self.readHeader(r)
        try checkURIExtensionHash(uebBytes)
        let ueb: URIExtension
        do { ueb = try URIExtension(parsing: uebBytes) } catch { throw ShareFailure(error, part: .uriExtension) }
        guard ueb.neededShares == verifier.needed, ueb.totalShares == verifier.total, ueb.size == verifier.size else {
            throw ImmutableError.capabilityMismatch(
                "the capability says \(verifier.needed)-of-\(verifier.total), \(verifier.size) bytes, "
                    + "but its URI extension block says \(ueb.neededShares)-of-\(ueb.totalShares), \(ueb.size) bytes")
        }
        let g: CHKGeometry
        do {
            g = try CHKGeometry(size: ueb.size, k: ueb.neededShares, n: ueb.totalShares, maxSegmentSize: ueb.segmentSize)
        } catch { throw ShareFailure(error, part: .uriExtension) }
        guard g.segmentSize == ueb.segmentSize else {
            throw ShareFailure.corrupt(.uriExtension, "URI extension block has an impossible segment size \(ueb.segmentSize)")
        }
        let numShareHashes = HashTree.neededHashes(
            leaf: 0, firstLeafIndex: HashTree.paddedCount(g.n) - 1, includeLeaf: true).count
        let layout = ShareLayout(blockSize: g.blockSize, dataSize: g.shareDataSize, numSegments: g.numSegments,
                                 numShareHashes: numShareHashes)
        return CHKFileShape(uriExtension: ueb, geometry: g, layout: layout)
    }

    /// Checks one share's number, header, URI extension block, share hash chain and block
    /// hash tree; the blocks themselves are checked as they are read (`checkBlock`).
    public func validate(_ r: ShareReader, shape: CHKFileShape) throws -> ValidatedShare {
        let g = shape.geometry
        guard r.shareNumber >= 0, r.shareNumber < g.n else {
            throw ShareFailure.corrupt(.shareNumber, "share number \(r.shareNumber) is outside 0..<\(g.n)")
        }
        let (layout, uebBytes) = try Self.readHeader(r)
        // Either layout version may hold any file; the section sizes must be the expected ones.
        let e = shape.layout
        guard layout.blockSize == e.blockSize, layout.dataSize == e.dataSize,
              layout.segmentTreeSize == e.segmentTreeSize, layout.shareHashesSize == e.shareHashesSize
        else { throw ShareFailure.corrupt(.header, "share layout does not match the file's geometry") }
        try checkURIExtensionHash(uebBytes)

        var chain: [Int: [UInt8]] = [:]
        do {
            let chainBytes = try r.read(at: layout.shareHashesOffset, length: Int(layout.shareHashesSize))
            for (i, h) in try ShareLayout.parseShareHashes(chainBytes) { chain[i] = h }
        } catch { throw ShareFailure(error, part: .shareHashChain) }
        let leafNode = HashTree.paddedCount(g.n) - 1 + r.shareNumber
        guard let shareLeaf = chain[leafNode] else {
            throw ShareFailure.corrupt(.shareHashChain, "share hash chain lacks this share's own hash")
        }
        guard HashTree.rootFromLeaf(leafNode: leafNode, leafHash: shareLeaf, hashes: chain) == shape.uriExtension.shareRootHash else {
            throw ShareFailure.corrupt(.shareHashChain, "share hash chain does not lead to the share root hash")
        }

        let bytes: [UInt8]
        do { bytes = try r.read(at: layout.blockHashesOffset, length: Int(layout.segmentTreeSize)) } catch {
            throw ShareFailure(error, part: .blockHashTree)
        }
        let leaves = Self.leaves(bytes, count: g.numSegments)
        let tree = HashTree(leaves: leaves)
        guard tree.root == shareLeaf else {
            throw ShareFailure.corrupt(.blockHashTree, "block hash tree does not match the share hash chain")
        }
        try Self.checkStoredNodes(bytes, tree, .blockHashTree, "block hash tree")
        return ValidatedShare(reader: r, layout: layout, blockLeaves: leaves)
    }

    /// Checks block `segment` of `share` (already read into `bytes`).
    public func checkBlock(_ bytes: UnsafeRawBufferPointer, of share: ValidatedShare, segment: Int) throws {
        guard TahoeHash.blockHash(bytes) == share.blockLeaves[segment] else {
            throw ShareFailure.corrupt(.block(segment: segment), "block \(segment) does not match its hash")
        }
    }

    /// The crypttext hash tree's leaves as `share` stores them, checked against the root
    /// in the URI extension block.
    public func crypttextLeaves(_ share: ValidatedShare, shape: CHKFileShape) throws -> [[UInt8]] {
        let bytes: [UInt8]
        do { bytes = try share.reader.read(at: share.layout.crypttextHashTreeOffset, length: Int(share.layout.segmentTreeSize)) } catch {
            throw ShareFailure(error, part: .crypttextHashTree)
        }
        let leaves = Self.leaves(bytes, count: shape.geometry.numSegments)
        let tree = HashTree(leaves: leaves)
        guard tree.root == shape.uriExtension.crypttextRootHash else {
            throw ShareFailure.corrupt(.crypttextHashTree, "crypttext hash tree does not match the URI extension block")
        }
        try Self.checkStoredNodes(bytes, tree, .crypttextHashTree, "crypttext hash tree")
        return leaves
    }

    /// Every interior node stored must be the one the leaves give (a reader uses only the
    /// leaves, but a damaged node is still damage a verifier should name).
    static func checkStoredNodes(_ bytes: [UInt8], _ tree: HashTree, _ part: SharePart, _ what: String) throws {
        for (i, node) in tree.nodes.enumerated() where i < tree.firstLeafIndex {
            guard bytes[(i * 32)..<(i * 32 + 32)].elementsEqual(node) else {
                throw ShareFailure.corrupt(part, "\(what) node \(i) does not match the nodes below it")
            }
        }
    }

    /// The last `count` of a stored tree's nodes (its leaves), from the tree's bytes.
    static func leaves(_ treeBytes: [UInt8], count: Int) -> [[UInt8]] {
        let p = HashTree.paddedCount(count)
        return (0..<count).map { i in Array(treeBytes[((p - 1 + i) * 32)..<((p + i) * 32)]) }
    }
}
