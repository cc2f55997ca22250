// swift-tools-version:6.1
import PackageDescription

// Dependencies run one way: CLowRAPacked (packed format, C kernels) <- LowRATensor (BLAS, kernel
// paths) <- LowRAIO (file formats),
// LowRAQuant (packed format, quantizer) <- LowRAModel (config, tokenizer, Llama runtime)
// <- LowRATrain (LoRA adapters, backward pass, optimizer, data, checkpoints, cards)
// <- LowRAServe (the OpenAI-compatible server, on Hummingbird; LowRAAPI: its request parsing) <- lowra (CLI).
let package = Package(
    name: "LowRA",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lowra", targets: ["lowra"]),
        .library(name: "LowRAModel", targets: ["LowRAModel"]),
        .library(name: "LowRAIO", targets: ["LowRAIO"]),
        .library(name: "LowRAAPI", targets: ["LowRAAPI"]),
        .library(name: "LowRATrain", targets: ["LowRATrain"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "CCbc", path: "Sources/CCbc"),
        .target(name: "CLowRAPacked"),
        .target(
            name: "LowRATensor",
            dependencies: ["CBLAS", "CLowRAPacked", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "LowRAIO", dependencies: ["LowRATensor", "CLowRAPacked"]),
        .target(name: "LowRAQuant", dependencies: ["LowRATensor", "CLowRAPacked", "CCbc"]),
        .target(name: "LowRAModel", dependencies: ["LowRATensor", "LowRAIO", "LowRAQuant"]),
        .target(name: "LowRAReport"),
        .target(name: "LowRATrain", dependencies: ["LowRATensor", "LowRAIO", "LowRAQuant", "LowRAModel"]),
        .target(name: "LowRAAPI", dependencies: ["LowRAModel"]),
        .target(
            name: "LowRAServe",
            dependencies: [
                "LowRAAPI", "LowRATrain", "LowRAModel", "LowRATensor",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(
            name: "lowra",
            dependencies: [
                "LowRATrain", "LowRAReport", "LowRAModel", "LowRAQuant", "LowRATensor", "LowRAServe",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "LowRATests",
            dependencies: ["LowRAModel", "LowRATrain", "LowRAReport", "LowRAServe", "LowRAAPI"]),
    ]
)
