// swift-tools-version:6.0
import PackageDescription

// The libFuzzer target, a package of its own beside the daemon's (as bench/ is): it depends on
// the root package by path and is built only with the fuzzer and AddressSanitizer
// (scripts/fuzz.sh). `-parse-as-library` is an unsafe flag, allowed in a root package: this one
// is never a dependency.
let package = Package(
    name: "authzfuzz",
    platforms: [.macOS(.v13)],
    dependencies: [
        // `name:` because a path dependency's identity is its folder's name, which a clone may
        // choose freely; the products below are asked for from "authzd".
        .package(name: "authzd", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "authzfuzz",
            dependencies: [
                .product(name: "AuthzWire", package: "authzd"),
                .product(name: "AuthzFraming", package: "authzd"),
                .product(name: "AuthzModel", package: "authzd"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "authzfuzz",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ]
)
