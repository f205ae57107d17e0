import GridFormat
import GridImmutable

/// Progress of a long operation: which phase, bytes done of total.
public struct TransferProgress: Sendable {
    public enum Phase: String, Sendable { case hashing, uploading, repairing, downloading }
    public var phase: Phase
    public var done: UInt64
    public var total: UInt64
}

/// What an upload did.
public struct UploadResult: Sendable {
    public var capability: Capability
    public var size: UInt64
    /// Share number → node ids of the servers holding it after the upload.
    public var placement: [Int: [String]]
    /// Node id → nickname, for every server in `placement`.
    public var nicknames: [String: String]
    /// Distinct servers holding distinct shares (see `Placement.happiness`).
    public var happiness: Int
    /// Shares that servers already held (convergent deduplication).
    public var sharesAlreadyPresent: Int
    /// Shares another upload of the same file was writing when this one asked; this upload
    /// waited for them instead of writing them again.
    public var sharesWrittenByOthers: Int = 0
    /// Share bytes sent over the network.
    public var bytesSent: UInt64
    public var hashSeconds: Double
    public var pushSeconds: Double
    public var totalSeconds: Double
    /// The upload helper (host:port) that encoded and placed the shares; `bytesSent` then
    /// counts ciphertext sent to it, and `nicknames` is empty (placement holds node ids).
    public var helper: String? = nil
    /// Ciphertext bytes the helper held from an interrupted earlier attempt (not sent again).
    public var resumedFrom: UInt64 = 0
    /// Why a configured helper was not used (the upload went directly to the servers).
    public var helperProblem: String? = nil
    /// The shares were allocated, written and closed in one flight beside the census
    /// (a small new file, servers of protocol 3): a round trip fewer.
    public var oneFlight: Bool = false
}

/// What a download did.
public struct DownloadResult: Sendable {
    /// Plaintext bytes written.
    public var bytesWritten: UInt64
    public var fileSize: UInt64
    /// Share number → node id of the server each verified block came from.
    public var sharesUsed: [Int: String]
    public var nicknames: [String: String]
    /// Shares set aside (share number, server nickname, why).
    public var badShares: [(share: Int, server: String, failure: ShareFailure)]
    /// Corrupt shares reported to the servers holding them.
    public var corruptionReports: Int
    public var seconds: Double
    /// The file's verified URI extension block (nil for a literal file).
    public var uriExtension: URIExtension? = nil
}
