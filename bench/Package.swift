// swift-tools-version:6.0
import PackageDescription

// The benchmark harness, a package of its own beside the daemon's (as swift-nio's Benchmarks/):
// it depends on the root package by path and on what only the harness needs (HdrHistogram).
// Built and run from here: `swift build -c release && .build/release/authzbench …`
// (bench/README.md); `swift build -c release --product authzd` builds the daemon it starts into
// the same folder, beside it, sharing the modules both use.
let package = Package(
    name: "authzbench",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "authzbench", targets: ["authzbench"]),
    ],
    dependencies: [
        // `name:` because a path dependency's identity is its folder's name, which a clone may
        // choose freely; the products below are asked for from "authzd".
        .package(name: "authzd", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // Interposes malloc & co. to count allocations: linked into authzbench only.
        .target(name: "CMallocCounter"),
        .executableTarget(
            name: "authzbench",
            dependencies: [
                "CMallocCounter",
                .product(name: "AuthzEngine", package: "authzd"),
                .product(name: "AuthzModel", package: "authzd"),
                .product(name: "AuthzWire", package: "authzd"),
                .product(name: "AuthzFraming", package: "authzd"),
                .product(name: "AuthzIndex", package: "authzd"),
                .product(name: "AuthzClient", package: "authzd"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
        ),
    ]
)
