import GridCodec
import GridCrypto
import GridFormat
import GridImmutable
import GridSystem
import Synchronization

/// What SDMF and MDMF share about keys and signatures.
public enum MutableKeys {
    /// The signing key as every share carries it: PKCS#8 DER under AES-CTR with the writekey.
    public static func encryptPrivateKey(_ key: RSAPrivateKey, writekey: [UInt8]) throws -> [UInt8] {
        var bytes = key.der
        let aes = try AESCTR(key: writekey)
        bytes.withUnsafeMutableBytes { aes.apply(in: $0) }
        return bytes
    }

    /// The signing key from a share's encrypted copy; checked to be the one the write
    /// capability names (a share could carry any key).
    public static func decryptPrivateKey(_ encrypted: [UInt8], for cap: MutableCapability) throws -> RSAPrivateKey {
        guard let writekey = cap.writekey else {
            throw GridError(.denied, "a read-only or verify capability cannot change the file; give the write capability")
        }
        var der = encrypted
        let aes = try AESCTR(key: writekey)
        der.withUnsafeMutableBytes { aes.apply(in: $0) }
        let key = try RSAPrivateKey(der: der)
        guard MutableCapability(format: cap.format, privateKey: key) == cap else {
            throw GridError(.corrupt, "the private key in the shares does not match the write capability")
        }
        return key
    }

    /// A share's verification key must hash to the capability's fingerprint and have signed
    /// the share's signed prefix; and its number must be one the file can have.
    public static func checkSigned(_ cap: MutableCapability, number: Int, total: Int, verificationKey: [UInt8],
                            signature: [UInt8], signedPrefix: [UInt8]) throws {
        guard number >= 0, number < total else {
            throw ShareFailure.corrupt(.shareNumber, "share number \(number) is outside 0..<\(total)")
        }
        guard TahoeHash.sskPubkeyFingerprint(publicKey: verificationKey) == cap.fingerprint else {
            throw ShareFailure.corrupt(.header, "verification key does not match the capability's fingerprint")
        }
        let digest = SHA256.hash(Netstring.encode(verificationKey) + Netstring.encode(signature) + signedPrefix)
        if goodSignatures.withLock({ $0.contains(digest) }) { return }
        guard let key = try? RSAPublicKey(der: verificationKey) else {
            throw ShareFailure.corrupt(.header, "verification key is not an RSA public key")
        }
        guard key.isValidSignature(signature, for: signedPrefix) else {
            throw ShareFailure.corrupt(.header, "signature does not match the signed prefix")
        }
        goodSignatures.withLock { good in
            if good.count >= 4096 { good.removeAll() }
            good.insert(digest)
        }
    }

    /// Signatures found good in this process, by the SHA-256 of key, signature and prefix.
    /// Every share of a version carries the same three, and loading the RSA key from DER
    /// costs OpenSSL 3.0 ~160 µs (the check itself ~30 µs): a read of ten shares loads it
    /// once. Only a success is remembered; a bad share is checked (and refused) each time.
    static let goodSignatures = Mutex<Set<[UInt8]>>([])

    /// An MDMF share's head (its first 2167 bytes: all but blocks and tree), parsed and its
    /// signature and key checked against the capability: what a streaming reader, an
    /// updater and a partial update trust before reading further.
    public static func checkedHead(_ cap: MutableCapability, _ bytes: [UInt8], number: Int) throws -> (share: MDMFShare, layout: MDMFShare.Layout) {
        let (head, layout) = try MDMFShare.parseHead(bytes)
        try checkSigned(cap, number: number, total: head.total, verificationKey: head.verificationKey,
                        signature: head.signature, signedPrefix: head.signedPrefix)
        return (head, layout)
    }

    /// The newest version (`VersionID.preferred`: sequence number, distinct shares, root hash) with `needed` distinct good
    /// shares: the shares to rebuild it from, lowest numbers first; or the error naming
    /// every share's failure.
    static func newestRecoverable<S>(_ good: [(number: Int, share: S)], version: (S) -> VersionID, needed: (S) -> Int,
                                     failures: [Int: ShareFailure]) throws -> [(key: Int, value: S)] {
        let versions = Dictionary(grouping: good, by: { version($0.share) })
        for candidates in VersionID.inPreferredOrder(versions, number: \.number).map({ versions[$0]! }) {
            var byNumber: [Int: S] = [:]
            for c in candidates where byNumber[c.number] == nil { byNumber[c.number] = c.share }
            let k = needed(candidates[0].share)
            if byNumber.count >= k { return Array(byNumber.sorted { $0.key < $1.key }.prefix(k)) }
        }
        throw ImmutableError.notEnoughShares(needed: good.first.map { needed($0.share) } ?? 1, usable: Set(good.map(\.number)).count,
                                             failures: failures)
    }
}

/// One share of either format after every check (signature, hashes): what a writer needs.
public struct CheckedMutableShare: Sendable {
    public let number: Int
    public let version: VersionID
    public let encryptedPrivateKey: [UInt8]

    /// Checks `bytes` as share `number` of the file `cap` names, in the capability's format.
    public init(_ cap: MutableCapability, _ bytes: [UInt8], number: Int) throws {
        self.number = number
        switch cap.format {
        case .sdmf:
            let s = try SDMFDecoder(capability: cap).check(bytes, number: number).share
            (version, encryptedPrivateKey) = (VersionID(sequenceNumber: s.sequenceNumber, rootHash: s.rootHash), s.encryptedPrivateKey)
        case .mdmf:
            let s = try MDMFDecoder(capability: cap).check(bytes, number: number)
            (version, encryptedPrivateKey) = (VersionID(sequenceNumber: s.sequenceNumber, rootHash: s.rootHash), s.encryptedPrivateKey)
        }
    }
}

/// Makes the shares of a version again, for repair: the plaintext encoded with the
/// version's own IV or salts and its own signature gives shares identical to the ones
/// first written (their root hash is checked against the version's). Needs the signing
/// key (from a write capability) because every share carries its public half and its
/// encrypted copy.
public enum MutableShareRebuilder {
    public static func shares(of v: DecodedVersion, format: MutableFormat, privateKey: RSAPrivateKey, simdPath: SIMDPath = .best) throws -> [[UInt8]] {
        let (root, shares): ([UInt8], [[UInt8]])
        switch format {
        case .sdmf:
            let r = try SDMFEncoder.encode(v.data, privateKey: privateKey, sequenceNumber: v.sequenceNumber, needed: v.needed, total: v.total,
                                           iv: v.iv, simdPath: simdPath, sign: { _ in v.signature })
            (root, shares) = (r.shares.first?.rootHash ?? [], r.shares.map { $0.serialized() })
        case .mdmf:
            let r = try MDMFEncoder.encode(v.data, privateKey: privateKey, sequenceNumber: v.sequenceNumber, needed: v.needed, total: v.total,
                                           salts: v.salts, simdPath: simdPath, sign: { _ in v.signature })
            (root, shares) = (r.shares.first?.rootHash ?? [], r.shares.map { $0.serialized() })
        }
        guard root == v.rootHash else {
            throw GridError(.corrupt, "the version encoded again does not give its signed root hash; it cannot be repaired this way")
        }
        return shares
    }
}
