import GridCrypto
import GridTestSupport
import XCTest

/// grid's own SHA-256 (two messages at once on SHA-NI, and plain C) against OpenSSL.
final class SHA256LanesTests: XCTestCase {
    let paths = SHA256Path.allCases.filter(\.isSupported)

    func testEveryPathMatchesOpenSSLAtEveryLengthAndSplit() {
        print("SHA-256 paths on this CPU: \(paths.map(\.rawValue).joined(separator: ", ")); current: \(SHA256Path.current)")
        let data = pseudoRandom(4_500, seed: 256)
        for path in paths {
            let lane = SHA256Lane(path: path)
            for len in Array(0...200) + [255, 256, 257, 1023, 1024, 1025, 4_096, 4_500] {
                let want = data.withUnsafeBytes { SHA256.hash(UnsafeRawBufferPointer(rebasing: $0[0..<len])) }
                // Whole, and fed in uneven pieces (partial blocks carried over).
                data.withUnsafeBytes { lane.update(UnsafeRawBufferPointer(rebasing: $0[0..<len])) }
                XCTAssertEqual(lane.finalize(), want, "\(path) length \(len)")
                var at = 0, step = 1
                while at < len {
                    let to = min(len, at + step)
                    data.withUnsafeBytes { lane.update(UnsafeRawBufferPointer(rebasing: $0[at..<to])) }
                    at = to
                    step = step * 3 % 97 + 1
                }
                XCTAssertEqual(lane.finalize(), want, "\(path) length \(len) in pieces")
            }
        }
    }

    func testTwoLanesAtOnceOfDifferentLengthsAndOffsets() {
        let data = pseudoRandom(70_000, seed: 2)
        for path in paths {
            let a = SHA256Lane(path: path), b = SHA256Lane(path: path)
            for (la, lb, pa, pb) in [(0, 0, 0, 0), (64, 64, 0, 5), (1_000, 3_000, 7, 0), (65_536, 65_500, 3, 33), (128, 0, 0, 0), (63, 65, 1, 2)] {
                // Each lane first takes a few bytes alone, so their blocks start at other offsets.
                data.withUnsafeBytes { d in
                    a.update(UnsafeRawBufferPointer(rebasing: d[0..<pa]))
                    b.update(UnsafeRawBufferPointer(rebasing: d[0..<pb]))
                    SHA256Lane.update(a, UnsafeRawBufferPointer(rebasing: d[pa..<(pa + la)]), b, UnsafeRawBufferPointer(rebasing: d[pb..<(pb + lb)]))
                }
                XCTAssertEqual(a.finalize(), SHA256.hash(Array(data[0..<(pa + la)])), "\(path) a \(la)")
                XCTAssertEqual(b.finalize(), SHA256.hash(Array(data[0..<(pb + lb)])), "\(path) b \(lb)")
            }
        }
    }

    func testTaggedHashesTwoAtATimeAreTahoes() {
        let blocks = (0..<7).map { pseudoRandom(43_691, seed: UInt64($0)) }
        let want = blocks.map { TahoeHash.blockHash($0) }
        for path in paths {
            let got = withBuffers(blocks) { TahoeHash.taggedEach(TahoeTag.block, $0, path: path) }
            XCTAssertEqual(got, want, "\(path)")
            // A lane pair over one buffer at two offsets: the crypttext hashes of a segment.
            let whole = TaggedLane(tag: TahoeTag.crypttext, path: path), seg = TaggedLane(tag: TahoeTag.crypttextSegment, path: path)
            for b in blocks {
                b.withUnsafeBytes { TaggedLane.update(whole, $0, seg, $0) }
                XCTAssertEqual(seg.finalize(), TahoeHash.crypttextSegmentHash(b), "\(path)")
            }
            XCTAssertEqual(whole.finalize(), TahoeHash.tagged(TahoeTag.crypttext, blocks.flatMap { $0 }), "\(path)")
        }
    }

    /// Sixteen at a time in AVX-512 lanes (and the same packing on the portable path, so it
    /// is checked on any CPU): every length around the head/body/tail boundaries, group
    /// sizes that leave lanes empty, tags whose netstring is shorter than, equal to and
    /// longer than a block.
    func testSameLengthBuffersInLanesAreTahoesTaggedHashes() {
        let data = pseudoRandom(40 * 300, seed: 16)
        let lanePaths = paths.filter { $0 == .avx512 || $0 == .portable }
        XCTAssertTrue(lanePaths.contains(.portable))
        let tags = [TahoeTag.block, "t", String(repeating: "x", count: 61), String(repeating: "y", count: 100)]
        for tag in tags {
            for length in [0, 1, 31, 32, 33, 55, 56, 64, 95, 96, 97, 119, 120, 128, 200, 299] {
                for count in [1, 3, 10, 16, 17, 40] {
                    let buffers = (0..<count).map { i in Array(data[(i * 300)..<(i * 300 + length)]) }
                    let want = buffers.map { TahoeHash.tagged(tag, $0) }
                    for path in lanePaths {
                        let got = withBuffers(buffers) { TahoeHash.taggedSameLength(tag, $0, path: path) }
                        XCTAssertEqual(got, want, "\(path) tag \(tag.count) length \(length) count \(count)")
                    }
                }
            }
        }
        // Blocks as an upload makes them: 43,691 bytes, unaligned in memory.
        let blocks = (0..<20).map { pseudoRandom(43_691, seed: UInt64(100 + $0)) }
        for path in lanePaths {
            XCTAssertEqual(withBuffers(blocks) { TahoeHash.taggedSameLength(TahoeTag.block, $0, path: path) },
                           blocks.map { TahoeHash.blockHash($0) }, "\(path)")
        }
    }

    func withBuffers<R>(_ arrays: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) -> R) -> R {
        let copies = arrays.map { a -> UnsafeMutableRawBufferPointer in
            let p = UnsafeMutableRawBufferPointer.allocate(byteCount: a.count, alignment: 1)
            p.copyBytes(from: a)
            return p
        }
        defer { copies.forEach { $0.deallocate() } }
        return body(copies.map { UnsafeRawBufferPointer($0) })
    }
}
