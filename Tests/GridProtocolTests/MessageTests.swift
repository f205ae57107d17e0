import GridCrypto
import GridProtocol
import GridWire
import XCTest

/// Every storage and introducer message: encode then decode gives the same value; the
/// bytes are the ones docs/protocol.md lays out; a cut-short message is refused.
final class MessageTests: XCTestCase {
    let si = [UInt8](0..<16)
    let renew = [UInt8](repeating: 0xaa, count: 32)
    let cancel = [UInt8](repeating: 0xbb, count: 32)

    func roundTrip<M: WireMessage>(_ m: M, file: StaticString = #filePath, line: UInt = #line) throws -> [UInt8] {
        let bytes = m.encoded()
        XCTAssertEqual(try M(decoding: bytes), m, "\(M.self)", file: file, line: line)
        XCTAssertThrowsError(try M(decoding: bytes + [0]), "\(M.self) accepted a trailing byte", file: file, line: line)
        return bytes
    }

    /// Every strict prefix of the encoding is refused (for messages of fixed structure).
    func refusesPrefixes<M: WireMessage>(_ m: M, file: StaticString = #filePath, line: UInt = #line) {
        let bytes = m.encoded()
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try M(decoding: Array(bytes.prefix(n))), "\(M.self) cut to \(n) bytes", file: file, line: line)
        }
    }

    func storageRequests() -> [any StorageRequest] {
        [
            GetVersionRequest(),
            AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel, shareNumbers: [0, 3, 255], allocatedSize: 1 << 40),
            BucketWriteRequest(bucket: 7, offset: 1 << 33, data: [1, 2, 3]),
            BucketCloseRequest(bucket: 9),
            BucketAbortRequest(bucket: 10),
            GetBucketsRequest(storageIndex: si),
            BucketReadRequest(storageIndex: si, share: 4, offset: 12345, length: 4096),
            AddLeaseRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel),
            RenewLeaseRequest(storageIndex: si, secret: renew),
            CancelLeaseRequest(storageIndex: si, secret: cancel),
            AdviseCorruptShareRequest(mutable: true, storageIndex: si, share: 2, reason: "block 3 does not match its hash"),
            CensusBatchRequest(renew: true, entries: [.init(storageIndex: si, renewSecret: renew, cancelSecret: cancel),
                                                      .init(storageIndex: renew.prefix(16).map { $0 }, renewSecret: cancel, cancelSecret: renew)]),
            CensusBatchRequest(renew: false, entries: [.init(storageIndex: si)]),
            SlotReadRequest(storageIndex: si, shareNumbers: [1, 2], readVector: [ReadVector(offset: 0, length: 100)]),
            SlotWriteRequest(storageIndex: si, writeEnabler: renew, renewSecret: renew, cancelSecret: cancel,
                             writes: [0: ShareWrite(tests: [TestVector(offset: 0, length: 1, op: .eq, specimen: [0])],
                                                    writes: [WriteVector(offset: 0, data: [9, 9])], newLength: 2),
                                      5: ShareWrite(newLength: nil),
                                      7: ShareWrite(tests: [], staged: StagedShare(id: [UInt8](repeating: 3, count: 16), length: 1 << 30))],
                             readVector: [ReadVector(offset: 1, length: 1)]),
            SlotOwnersRequest(storageIndex: si),
            GetBucketsPeekRequest(storageIndex: si, share: 4, prefix: 1 << 20, suffix: 65536),
            AllocateNamedRequest(group: 0xfeed_beef, allocation: AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel,
                                                                                shareNumbers: [0, 9, 255], allocatedSize: 1 << 40)),
            SlotStageRequest(storageIndex: si, writeEnabler: renew, shareNumber: 7, stagingID: [UInt8](repeating: 3, count: 16),
                             offset: 8 << 20, data: [1, 2, 3]),
        ]
    }

    func testEveryStorageMethodHasARoundTrippingRequest() throws {
        let requests = storageRequests()
        XCTAssertEqual(Set(requests.map { type(of: $0).method }), Set(StorageMethod.allCases), "a method without a message")
        for r in requests {
            func check<R: StorageRequest>(_ r: R) throws {
                _ = try roundTrip(r)
                if !(r is GetVersionRequest) { refusesPrefixes(r) }
            }
            try check(r)
        }
    }

    /// Named bucket handles: top bit, group, share; a group's buckets share one ordering
    /// key with the allocation that names them; a server's own handles key by themselves.
    func testNamedBucketHandles() throws {
        XCTAssertEqual(NamedBucket.handle(group: 0xfeed_beef, share: 9), 0x8000_00fe_edbe_ef09)
        XCTAssertEqual(NamedBucket.handle(group: 0, share: 255), 0x8000_0000_0000_00ff)
        XCTAssertEqual(NamedBucket.orderingKey(handle: 0x8000_00fe_edbe_ef09), 0x8000_00fe_edbe_ef00)
        XCTAssertEqual(NamedBucket.orderingKey(handle: 5), 5)
        XCTAssertEqual(NamedBucket.orderingKey(handle: 0x1ff), 0x1ff)
        let req = AllocateNamedRequest(group: 0xfeed_beef, allocation: AllocateRequest(
            storageIndex: [UInt8](repeating: 1, count: 16), renewSecret: renew, cancelSecret: cancel, shareNumbers: [9, 3], allocatedSize: 7))
        XCTAssertEqual(req.handles, [9: 0x8000_00fe_edbe_ef09, 3: 0x8000_00fe_edbe_ef03])
        XCTAssertEqual(AllocateNamedRequest.orderingKey(frameBody: [0, 0] + req.encoded(), offset: 2), 0x8000_00fe_edbe_ef00)
        XCTAssertNil(AllocateNamedRequest.orderingKey(frameBody: [0, 0, 0xfe, 0xed, 0xbe], offset: 2))
    }

    /// get_buckets_peek: its pieces must fit the share size listed beside them; a peek
    /// larger than one chunk is refused.
    func testPeekResponsesAreCheckedAgainstTheirShare() throws {
        let ok = GetBucketsPeekResponse(shares: [2: 100, 5: 10], peek: SharePeek(share: 2, prefix: [1, 2, 3], suffixOffset: 90,
                                                                               suffix: [UInt8](repeating: 9, count: 10)))
        _ = try roundTrip(ok)
        _ = try roundTrip(GetBucketsPeekResponse(shares: [:], peek: nil))
        for bad in [SharePeek(share: 3, prefix: [], suffixOffset: 0, suffix: []),              // a share not listed
                    SharePeek(share: 2, prefix: [], suffixOffset: 95, suffix: [1, 2, 3]),      // does not end at the end
                    SharePeek(share: 2, prefix: [UInt8](repeating: 0, count: 50), suffixOffset: 40,
                              suffix: [UInt8](repeating: 0, count: 60)),                       // overlaps
                    SharePeek(share: 5, prefix: [], suffixOffset: 11, suffix: [])] {           // past the end
            XCTAssertThrowsError(try GetBucketsPeekResponse(decoding: GetBucketsPeekResponse(shares: [2: 100, 5: 10], peek: bad).encoded()), "\(bad)")
        }
        var w = WireWriter()
        w.fixed([UInt8](repeating: 0, count: 16)); w.u8(0); w.u32(8 << 20); w.u32(1)
        XCTAssertThrowsError(try GetBucketsPeekRequest(decoding: w.bytes))
    }

    func testStorageResponsesRoundTrip() throws {
        _ = try roundTrip(StorageVersion(protocolVersion: 1, maximumImmutableShareSize: 5, availableSpace: 6, usedSpace: 7,
                                         reservedSpace: 8, immutableShares: 9, mutableShares: 10, applicationVersion: "grid/0.1"))
        _ = try roundTrip(AllocateResponse(alreadyHave: [1, 2], writers: [3: 100, 4: 101], inProgress: [5]))
        XCTAssertEqual(AllocateResponse(alreadyHave: [1], writers: [2: 3], inProgress: [4]).encoded(),
                       [0, 0, 0, 1, 1] + [0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 3] + [0, 0, 0, 1, 4])
        _ = try roundTrip(GetBucketsResponse(shares: [0: 1000, 9: 2000]))
        _ = try roundTrip(CensusBatchResponse(holdings: [.init(shares: [1: 10, 2: 10], leaseExpiration: 99), .init(shares: [:], leaseExpiration: 0)]))
        _ = try roundTrip(SlotReadResults([0: [[1, 2], []], 3: [[7]]]))
        _ = try roundTrip(SlotWriteResponse(ok: false, reads: [1: [[5]]]))
        _ = try roundTrip(SlotOwnersResponse(owners: [0: [UInt8](repeating: 7, count: 20), 9: [UInt8](repeating: 8, count: 20)]))
        // As docs/protocol.md gives it: list<(u8 share, fixed[20] id)>.
        XCTAssertEqual(SlotOwnersResponse(owners: [2: [UInt8](repeating: 1, count: 20)]).encoded(), [0, 0, 0, 1, 2] + [UInt8](repeating: 1, count: 20))
        XCTAssertThrowsError(try SlotOwnersResponse(decoding: [0, 0, 0, 1, 2] + [UInt8](repeating: 1, count: 19)))
        _ = try roundTrip(EmptyMessage())
        // bucket_read's reply is the bytes themselves, to the end of the message.
        XCTAssertEqual(BucketReadResponse(data: [1, 2, 3]).encoded(), [1, 2, 3])
        XCTAssertEqual(try BucketReadResponse(decoding: [4, 5]).data, [4, 5])
    }

    /// Byte layouts as docs/protocol.md gives them.
    func testBytesMatchTheProtocolDocument() {
        XCTAssertEqual(BucketReadRequest(storageIndex: si, share: 4, offset: 0x0102, length: 0x0304).encoded(),
                       si + [4] + [0, 0, 0, 0, 0, 0, 1, 2] + [0, 0, 3, 4])
        XCTAssertEqual(BucketWriteRequest(bucket: 1, offset: 2, data: [0xee]).encoded(),
                       [0, 0, 0, 0, 0, 0, 0, 1] + [0, 0, 0, 0, 0, 0, 0, 2] + [0, 0, 0, 1, 0xee])
        XCTAssertEqual(BucketWriteRequest(bucket: 1, offset: 2, data: [0xee]).encoded().count, BucketWriteRequest.overhead + 1)
        XCTAssertEqual(AllocateRequest(storageIndex: si, renewSecret: renew, cancelSecret: cancel, shareNumbers: [1, 2], allocatedSize: 3).encoded(),
                       si + renew + cancel + [0, 0, 0, 2, 1, 2] + [0, 0, 0, 0, 0, 0, 0, 3])
        XCTAssertEqual(AdviseCorruptShareRequest(mutable: false, storageIndex: si, share: 1, reason: "x").encoded(),
                       [0] + si + [1] + [0, 0, 0, 1, 0x78])
        XCTAssertEqual(GetBucketsResponse(shares: [2: 5]).encoded(), [0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 5])
        // Without renewal the entries carry no secrets.
        XCTAssertEqual(CensusBatchRequest(renew: false, entries: [.init(storageIndex: si)]).encoded(), [0] + [0, 0, 0, 1] + si)
        XCTAssertEqual(CensusBatchRequest(renew: true, entries: [.init(storageIndex: si, renewSecret: renew, cancelSecret: cancel)]).encoded(),
                       [1] + [0, 0, 0, 1] + si + renew + cancel)
        XCTAssertEqual(CensusBatchResponse(holdings: [.init(shares: [2: 5], leaseExpiration: 0x01020304)]).encoded(),
                       [0, 0, 0, 1] + [0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 5] + [1, 2, 3, 4])
    }

    func testAdvisoryReasonIsCutToItsLimitInBytes() throws {
        let long = String(repeating: "é", count: 800)  // 1600 bytes of UTF-8
        let m = AdviseCorruptShareRequest(mutable: false, storageIndex: si, share: 0, reason: long)
        let back = try AdviseCorruptShareRequest(decoding: m.encoded())
        XCTAssertLessThanOrEqual(back.reason.utf8.count, AdviseCorruptShareRequest.maxReason)
        XCTAssertTrue(long.hasPrefix(back.reason))
    }

    func testStagedShareWriteLayoutAndMixIsRefused() throws {
        let id = [UInt8](repeating: 3, count: 16)
        let staged = SlotWriteRequest(storageIndex: si, writeEnabler: renew, renewSecret: renew, cancelSecret: cancel,
                                      writes: [2: ShareWrite(staged: StagedShare(id: id, length: 5))], readVector: []).encoded()
        // ... share 2, no tests, no writes, no new length, staged: id, length; then the empty read vector.
        XCTAssertEqual(Array(staged[(16 + 96)...]), [0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1] + id + [0, 0, 0, 0, 0, 0, 0, 5] + [0, 0, 0, 0])
        let mixed = SlotWriteRequest(storageIndex: si, writeEnabler: renew, renewSecret: renew, cancelSecret: cancel,
                                     writes: [2: ShareWrite(writes: [WriteVector(offset: 0, data: [1])], staged: StagedShare(id: id, length: 5))],
                                     readVector: []).encoded()
        XCTAssertThrowsError(try SlotWriteRequest(decoding: mixed)) { XCTAssertTrue("\($0)".contains("staged data carries no write vectors"), "\($0)") }
        XCTAssertEqual(SlotStageRequest(storageIndex: si, writeEnabler: renew, shareNumber: 1, stagingID: id, offset: 2, data: [7]).encoded(),
                       si + renew + [1] + id + [0, 0, 0, 0, 0, 0, 0, 2] + [0, 0, 0, 1, 7])
    }

    func testUnknownTestOperatorIsRefused() {
        var bytes = SlotWriteRequest(storageIndex: si, writeEnabler: renew, renewSecret: renew, cancelSecret: cancel,
                                     writes: [0: ShareWrite(tests: [TestVector(offset: 0, length: 1, op: .eq, specimen: [])])],
                                     readVector: []).encoded()
        // storage index, three secrets, the share-writes count, the share number, the tests count, offset, length: then the operator.
        let at = 16 + 96 + 4 + 1 + 4 + 16
        XCTAssertEqual(bytes[at], TestOperator.eq.rawValue)
        bytes[at] = 99
        XCTAssertThrowsError(try SlotWriteRequest(decoding: bytes)) { XCTAssertTrue("\($0)".contains("unknown test operator 99")) }
    }

    func testIntroducerMessagesRoundTrip() throws {
        let key = Ed25519PrivateKey()
        let a = Announcement(publicKey: key.publicKey, nickname: "s1", addresses: ["127.0.0.1:4000"], availableSpace: 1 << 30, sequence: 5)
        let signed = try a.signed(with: key)
        _ = try roundTrip(signed)
        XCTAssertEqual(try signed.verified(), a)
        refusesPrefixes(signed)
        let list = SubscribeResponse(announcements: [signed, signed])
        _ = try roundTrip(list)
        _ = try roundTrip(SubscribeRequest())
        let removed = try roundTrip(RemovedNotice(publicKey: key.publicKey))
        XCTAssertEqual(removed, key.publicKey.bytes, "a removed notice is the 32-byte key")
        XCTAssertEqual(Set([SignedAnnouncement.method, SubscribeRequest.method]), Set(IntroducerMethod.allCases))
    }
}
