// swift-tools-version:6.0
import PackageDescription

// Layers, bottom to top (see docs/architecture.md):
//   C modules: CLMDB, CAuthzProto, CNATS, CKafka
//   AuthzModel: values, validation, errors, decisions (no dependencies)
//   AuthzIndex (the compiled index) · AuthzStore (the only LMDB user) · AuthzLog (the only NATS user)
//   AuthzEngine (store + index) · AuthzWire (the only protobuf-c user; model only)
//   AuthzServer (engine, wire, framing, log; never the store) · AuthzClient (wire, framing)
//   authzd, authzctl
// CKafka (librdkafka) is used by one file only: AuthzServer/Events/KafkaEventSource.swift.
// The benchmark harness and the fuzzer are packages of their own (bench/, Fuzz/), on top of the
// library products below.

let package = Package(
    name: "authzd",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "authzd", targets: ["authzd"]),
        .executable(name: "authzctl", targets: ["authzctl"]),
        // Libraries for the bench/ and Fuzz/ packages (they depend on this one by path).
        // No target behind a library product may carry unsafe flags.
        .library(name: "AuthzModel", targets: ["AuthzModel"]),
        .library(name: "AuthzIndex", targets: ["AuthzIndex"]),
        .library(name: "AuthzEngine", targets: ["AuthzEngine"]),
        .library(name: "AuthzWire", targets: ["AuthzWire"]),
        .library(name: "AuthzFraming", targets: ["AuthzFraming"]),
        .library(name: "AuthzClient", targets: ["AuthzClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        .target(
            name: "CAuthzProto",
            linkerSettings: [.linkedLibrary("protobuf-c")]
        ),
        .target(
            name: "CNATS",
            linkerSettings: [.linkedLibrary("nats")]
        ),
        // librdkafka: Debian's librdkafka-dev (2.0.2) gives rdkafka.h and the library linked;
        // any later librdkafka.so.1 can be loaded in its place (docs/events.md, "Kafka").
        .target(
            name: "CKafka",
            linkerSettings: [.linkedLibrary("rdkafka")]
        ),
        .target(name: "AuthzModel"),
        .target(
            name: "AuthzLog",
            dependencies: ["CNATS", "AuthzModel", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),
        .target(
            name: "AuthzStore",
            dependencies: [
                "CLMDB", "AuthzModel",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(name: "AuthzIndex", dependencies: ["AuthzModel"]),
        .target(
            name: "AuthzEngine",
            dependencies: [
                "AuthzModel", "AuthzStore", "AuthzIndex",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(name: "AuthzWire", dependencies: ["CAuthzProto", "AuthzModel"]),
        .target(name: "AuthzFraming", dependencies: [.product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "AuthzServer",
            dependencies: [
                "AuthzEngine", "AuthzWire", "AuthzFraming", "AuthzLog", "CKafka",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
        ),
        .target(
            name: "AuthzClient",
            dependencies: [
                "AuthzWire", "AuthzFraming", "AuthzModel",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "authzd",
            dependencies: [
                "AuthzServer", "AuthzEngine", "AuthzClient", "AuthzWire", "AuthzStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
        ),
        .executableTarget(
            name: "authzctl",
            dependencies: [
                "AuthzClient", "AuthzModel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Test helper, not a product: the writer CrashTests SIGKILLs (built by `swift build`,
        // found beside the test bundle).
        .executableTarget(
            name: "authzd-crash-writer",
            dependencies: ["AuthzEngine", "AuthzModel"],
            path: "Tests/CrashWriter",
        ),
        .testTarget(
            name: "AuthzCoreTests",
            dependencies: ["AuthzModel", "AuthzStore", "AuthzIndex", "AuthzEngine"]
        ),
        .testTarget(
            name: "AuthzDaemonTests",
            dependencies: [
                "AuthzWire", "AuthzFraming", "AuthzServer", "AuthzClient", "AuthzEngine", "AuthzLog", "AuthzStore",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["python", "golden"]
        ),
    ]
)
