// swift-tools-version:6.0
// grid: a Tahoe-LAFS-compatible, erasure-coded, encrypted storage grid.
import PackageDescription

// The SIMD kernels are always built optimized: a debug build of intrinsics is
// tens of times slower and would make the test suite crawl.
let simdFlags: [CSetting] = [.unsafeFlags(["-O3", "-fno-strict-aliasing"])]

let package = Package(
    name: "grid",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "grid", targets: ["grid"]),
        .library(name: "GridImmutable", targets: ["GridImmutable"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // C: GF(2^8) multiply-accumulate kernels with runtime CPU dispatch.
        .target(name: "CGridSIMD", cSettings: simdFlags),
        // C: SHA-256 compression of two messages at once (SHA-NI), with a portable path.
        .target(name: "CGridHash", cSettings: simdFlags),
        // System library: OpenSSL (libcrypto, libssl).
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),

        // System headers: Linux epoll and eventfd (module map only).
        .systemLibrary(name: "CEpoll"),
        // System library: SQLite (libsqlite3).
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        // The system-call layer: file descriptors, paths, errno as one typed SystemError,
        // EINTR retried in one place; and the error classes every module's errors carry.
        .target(name: "GridSystem", dependencies: ["CEpoll"]),
        // SQLite (C API) behind a small typed wrapper: the storage server's lease index,
        // the client's catalog.
        .target(name: "GridDatabase", dependencies: ["CSQLite", "GridSystem"]),
        // Reed-Solomon over GF(2^8), zfec-compatible matrices.
        .target(name: "GridCodec", dependencies: ["CGridSIMD", "GridSystem"]),
        // Hashes, AES-CTR, Ed25519, randomness (OpenSSL).
        .target(name: "GridCrypto", dependencies: ["COpenSSL", "CGridHash", "GridSystem"]),
        // Tahoe formats: base32, netstrings, hash trees, UEB, share layout, caps.
        .target(name: "GridFormat", dependencies: ["GridCrypto", "GridSystem"]),
        // Counters, gauges and histograms in Prometheus's text format.
        .target(name: "GridMetrics", dependencies: []),
        // The transport (TCP, TLS 1.3, epoll event loop, listeners) and the length-prefixed
        // binary RPC on it.
        .target(name: "GridWire", dependencies: ["COpenSSL", "CEpoll", "GridCrypto", "GridFormat", "GridSystem", "GridMetrics"]),
        // A small strict HTTP/1.1 server on GridWire's event loop and transport.
        .target(name: "GridHTTP", dependencies: ["GridWire", "GridMetrics", "GridSystem"]),
        // Message schemas of the storage and introducer services, and typed clients.
        .target(name: "GridProtocol", dependencies: ["GridWire", "GridFormat", "GridCrypto", "GridSystem"]),
        // The storage server: share store, leases (SQLite index), expirer, the RPC service.
        .target(name: "GridStorage", dependencies: ["GridProtocol", "GridWire", "GridCrypto", "GridFormat", "GridDatabase", "GridSystem"]),
        // The introducer service, the storage servers' announcer and the clients' subscriber.
        .target(name: "GridIntroducer", dependencies: ["GridProtocol", "GridWire", "GridCrypto", "GridSystem"]),
        // Node directories, grid.conf, and the storage and introducer daemons.
        // The upload helper's service: ciphertext in, shares placed (GridClient's uploader).
        .target(name: "GridHelper", dependencies: [
            "GridClient", "GridImmutable", "GridProtocol", "GridWire", "GridCrypto", "GridFormat", "GridSystem",
        ]),
        .target(name: "GridNode", dependencies: [
            "GridStorage", "GridIntroducer", "GridClient", "GridHelper", "GridProtocol", "GridWire", "GridCrypto", "GridFormat", "GridSystem",
            "GridHTTP", "GridMetrics",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // CHK immutable encoding and decoding (offline; the client streams through it).
        .target(name: "GridImmutable", dependencies: ["GridCodec", "GridCrypto", "GridFormat", "GridSystem"]),
        // Mutable files (SDMF, MDMF): encrypt, encode, hash and sign; the shares' bytes.
        .target(name: "GridMutable", dependencies: ["GridImmutable", "GridCodec", "GridCrypto", "GridFormat", "GridSystem"]),
        // Directories: Tahoe's packed dirnode entries (names, caps, encrypted write caps,
        // metadata as Python's json.dumps writes it).
        .target(name: "GridDirectory", dependencies: ["GridFormat", "GridCrypto", "GridSystem"]),
        // The client: server selection, streaming upload and download through a live grid.
        .target(name: "GridClient", dependencies: [
            "GridImmutable", "GridMutable", "GridCodec", "GridIntroducer", "GridProtocol", "GridWire", "GridCrypto", "GridFormat", "GridSystem",
            "GridDatabase",
        ]),
        // The client library (Tahoe's IClient/nodemaker): files and directories by
        // capability or path, aliases; the CLI (and the web gateway) call it.
        .target(name: "GridFilesystem", dependencies: [
            "GridClient", "GridDirectory", "GridNode", "GridImmutable", "GridMutable", "GridFormat", "GridCrypto", "GridSystem", "GridDatabase",
        ]),
        // The web gateway: Tahoe's web API and a status page over GridFilesystem, on GridHTTP.
        .target(name: "GridGateway", dependencies: [
            "GridHTTP", "GridFilesystem", "GridClient", "GridDirectory", "GridFormat", "GridImmutable", "GridMutable", "GridMetrics", "GridSystem",
            "GridProtocol", "GridCrypto",
        ]),
        // One launcher of local grids (an introducer and N storage daemons on 127.0.0.1)
        // for `grid demo`, `grid bench grid`, `grid local-grid` and the integration tests.
        .target(name: "GridLocalGrid", dependencies: ["GridNode", "GridClient", "GridProtocol", "GridWire", "GridSystem"]),
        // The command line.
        .executableTarget(
            name: "grid",
            dependencies: [
                "GridImmutable", "GridCodec", "GridCrypto", "GridFormat", "GridNode", "GridWire", "GridProtocol",
                "GridIntroducer", "GridStorage", "GridClient", "GridSystem", "GridLocalGrid", "GridFilesystem", "GridDirectory",
                "GridGateway", "GridHTTP", "GridMetrics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // Test helpers: fixtures, Tahoe's content() generator, hex.
        .target(name: "GridTestSupport", dependencies: ["GridCrypto"], path: "Tests/GridTestSupport"),
        .testTarget(name: "GridCodecTests", dependencies: ["GridCodec", "GridTestSupport"]),
        .testTarget(name: "GridCryptoTests", dependencies: ["GridCrypto", "GridTestSupport"]),
        .testTarget(name: "GridFormatTests", dependencies: ["GridFormat", "GridSystem", "GridTestSupport"]),
        .testTarget(name: "GridDirectoryTests", dependencies: ["GridDirectory", "GridFormat", "GridCrypto", "GridSystem", "GridImmutable", "GridTestSupport"]),
        .testTarget(name: "GridImmutableTests", dependencies: ["GridImmutable", "GridSystem", "GridTestSupport"]),
        .testTarget(name: "GridMutableTests", dependencies: ["GridMutable", "GridImmutable", "GridFormat", "GridCrypto", "GridSystem", "GridTestSupport"]),
        .testTarget(name: "GridCLITests", dependencies: ["GridTestSupport"]),
        .testTarget(name: "GridHTTPTests", dependencies: ["GridHTTP", "GridWire", "GridMetrics", "GridSystem", "GridTestSupport"]),
        .testTarget(name: "GridWireTests", dependencies: ["GridWire", "GridSystem", "GridTestSupport"]),
        .testTarget(name: "GridIntegrationTests", dependencies: [
            "GridIntroducer", "GridProtocol", "GridWire", "GridCrypto", "GridFormat", "GridTestSupport",
            "GridClient", "GridImmutable", "GridMutable", "GridSystem", "GridLocalGrid", "GridNode", "GridDatabase",
        ]),
        .testTarget(name: "GridFuzzTests", dependencies: ["GridStorage", "GridIntroducer", "GridProtocol", "GridWire", "GridCrypto", "GridSystem",
                                                         "GridFormat", "GridMutable", "GridDirectory", "GridHTTP", "GridTestSupport"]),
        .testTarget(name: "GridProtocolTests", dependencies: ["GridProtocol", "GridWire", "GridCrypto"]),
        .testTarget(name: "GridClientTests", dependencies: ["GridClient", "GridProtocol", "GridCrypto", "GridSystem"]),
        .testTarget(name: "GridStorageTests", dependencies: ["GridStorage", "GridProtocol", "GridWire", "GridFormat", "GridSystem", "GridDatabase", "GridTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
