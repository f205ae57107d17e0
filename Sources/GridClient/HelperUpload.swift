import GridCrypto
import GridFormat
import GridImmutable
import GridProtocol
import GridSystem
import GridWire

/// Uploads a file through an upload helper (`grid helper`): the client computes the
/// convergent key, storage index and capability itself and sends only ciphertext, once;
/// the helper encodes and places the shares. First the helper says whether the file is
/// stored already (then nothing is sent) and how much of an interrupted upload it holds
/// (then only the rest is sent). The helper never sees the plaintext or the key.
///
/// What the helper answers is checked: its URI extension block must record this file's
/// size and encoding and the whole-file and segment hashes of the ciphertext this client
/// computed, or the upload fails as corrupt (the capability would name another file).
struct HelperUpload {
    let helper: IntroducerAddress
    let pool: ServerPool
    let parameters: EncodingParameters
    /// Ciphertext bytes in flight to the helper at once.
    let window = 8 << 20

    struct Outcome {
        var capability: CHKCapability
        var alreadyStored: Bool
        var response: HelperFinishResponse?
        /// Ciphertext bytes sent (0 when stored already; less than the size on a resume).
        var bytesSent: UInt64
        /// Bytes the helper held from an earlier attempt.
        var resumedFrom: UInt64
    }

    func upload(source: RandomAccessSource & Sendable, key: [UInt8],
                progress: (@Sendable (TransferProgress) -> Void)?) async throws -> Outcome {
        let size = source.size
        let si = TahoeHash.storageIndex(forKey: key)
        let uploadSecret = helperUploadSecret(key: key)
        let g = try CHKGeometry(size: size, k: parameters.needed, n: parameters.total, maxSegmentSize: parameters.maxSegmentSize)
        var config = RPCClientConfig()
        config.connectTimeout = 10
        let client = try await RPCClient.connect(loop: pool.loop, host: helper.host, port: helper.port, serverKey: helper.publicKey,
                                                 service: helperServiceName, secret: helper.secret, tls: pool.tls, config: config)
        defer { client.close() }
        let encoding = HelperEncoding(needed: parameters.needed, happy: parameters.happy, total: parameters.total,
                                      maxSegmentSize: parameters.maxSegmentSize)
        let start = try await client.call(HelperStartRequest(storageIndex: si, uploadSecret: uploadSecret, size: size, encoding: encoding), timeout: 120)
        guard start.have <= size else {
            throw GridError(.corrupt, "the helper at \(helper.host):\(helper.port) says it holds \(start.have) bytes of a \(size)-byte file")
        }

        // Every segment's ciphertext is hashed; what the helper lacks is also sent.
        let ciphertext = try EncryptingSource(source, key: key)
        let hasher = CiphertextHasher()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: g.segmentSize, alignment: 64)
        defer { buf.deallocate() }
        var sent: UInt64 = 0
        let beingEncoded = Locked(false)
        let have = start.alreadyStored ? size : start.have
        try await withThrowingTaskGroup(of: Int.self) { group in
            var inFlight = 0
            for seg in 0..<g.numSegments {
                let len = g.segmentLength(seg)
                let base = UInt64(seg) * UInt64(g.segmentSize)
                let part = UnsafeMutableRawBufferPointer(rebasing: buf[0..<len])
                guard try ciphertext.read(at: base, into: part) == len else {
                    throw ImmutableError.sourceChanged("source shrank while being read (segment \(seg))")
                }
                hasher.segment(UnsafeRawBufferPointer(part))
                var off = max(base, have)
                while off < base + UInt64(len) && !beingEncoded.value {
                    let n = Int(min(UInt64(maxHelperAppend), base + UInt64(len) - off))
                    let lo = Int(off - base)
                    let piece = Array(UnsafeRawBufferPointer(rebasing: part[lo..<(lo + n)]))
                    while inFlight + n > window, let done = try await group.next() { inFlight -= done }
                    inFlight += n
                    let request = HelperAppendRequest(storageIndex: si, uploadSecret: uploadSecret, offset: off, data: piece)
                    group.addTask {
                        do {
                            _ = try await client.call(request, timeout: 120)
                        } catch let e as WireError where e.code == .conflict || e.code == .notFound {
                            // Another upload of this file is being encoded from the same bytes,
                            // or was just stored (and its data dropped): this one waits for it
                            // below instead of sending more.
                            beingEncoded.value = true
                        }
                        return n
                    }
                    off += UInt64(n)
                    sent += UInt64(n)
                    progress?(TransferProgress(phase: .uploading, done: off, total: size))
                }
            }
            while let done = try await group.next() { inFlight -= done }
        }
        let (whole, root) = hasher.finalize()

        // Finish, or, while the same file is being encoded already (this client's earlier
        // attempt, or another holder of the key), wait for it to be stored, asking again;
        // if that attempt failed, its data is still there and this one finishes it.
        // Encoding and pushing take the helper about as long as a direct upload would.
        let timeout = 300 + Double(size) / 2e6
        let deadline = monotonicNow() + timeout
        var uebBytes: [UInt8]? = start.alreadyStored ? start.uriExtension : nil
        var response: HelperFinishResponse?
        var encodingElsewhere = beingEncoded.value
        while uebBytes == nil {
            if !encodingElsewhere {
                do {
                    let r = try await client.call(HelperFinishRequest(storageIndex: si, uploadSecret: uploadSecret), timeout: timeout)
                    (uebBytes, response) = (r.uriExtension, r)
                    break
                } catch let e as WireError where e.code == .conflict {
                    encodingElsewhere = true
                }
            }
            guard monotonicNow() < deadline else { throw WireError(.timeout, "the helper's encoding of this file did not end in \(Int(timeout)) s") }
            try await Task.sleep(nanoseconds: 1_000_000_000)
            let again = try await client.call(HelperStartRequest(storageIndex: si, uploadSecret: uploadSecret, size: size,
                                                                 encoding: encoding), timeout: 120)
            if again.alreadyStored {
                uebBytes = again.uriExtension
            } else if again.have == size {
                encodingElsewhere = false
            } else {
                throw WireError(.notFound, "the helper no longer holds this file's data")  // upload directly
            }
        }
        guard let uebBytes else { throw GridError(.internal, "no URI extension block from the helper") }
        let ueb: URIExtension
        do { ueb = try URIExtension(parsing: uebBytes) } catch {
            throw GridError(.corrupt, "the helper at \(helper.host):\(helper.port) answered with an unreadable URI extension block (\(error))")
        }
        guard ueb.size == size, ueb.neededShares == parameters.needed, ueb.totalShares == parameters.total,
              ueb.segmentSize == g.segmentSize,
              constantTimeEqual(ueb.crypttextHash, whole), constantTimeEqual(ueb.crypttextRootHash, root) else {
            throw GridError(.corrupt,
                "the helper at \(helper.host):\(helper.port) reported shares that are not of this file (their URI extension "
                    + "block does not match the ciphertext this client computed); no capability was made. Remove 'helper' "
                    + "from [client] in grid.conf and upload directly.")
        }
        let cap = CHKCapability(key: key, uebHash: TahoeHash.uriExtensionHash(uebBytes), needed: parameters.needed,
                                total: parameters.total, size: size)
        return Outcome(capability: cap, alreadyStored: start.alreadyStored, response: response, bytesSent: sent,
                       resumedFrom: start.alreadyStored ? 0 : start.have)
    }
}
