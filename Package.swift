// swift-tools-version:6.0
import PackageDescription

// Dependencies run one way: CLowRAPacked (packed format, C kernels) <- LowRATensor (BLAS, kernel
// paths) <- LowRAIO (file formats),
// LowRAQuant (packed format, quantizer) <- LowRAModel (config, tokenizer, Llama runtime)
// <- LowRATrain (LoRA adapters, backward pass, optimizer, data, checkpoints) <- lowra (CLI).
let package = Package(
    name: "LowRA",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lowra", targets: ["lowra"]),
        .library(name: "LowRAModel", targets: ["LowRAModel"]),
        .library(name: "LowRAIO", targets: ["LowRAIO"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "CCbc", path: "Sources/CCbc"),
        .target(name: "CLowRAPacked"),
        .target(name: "LowRATensor", dependencies: ["CBLAS", "CLowRAPacked"]),
        .target(name: "LowRAIO", dependencies: ["LowRATensor", "CLowRAPacked"]),
        .target(name: "LowRAQuant", dependencies: ["LowRATensor", "CLowRAPacked", "CCbc"]),
        .target(name: "LowRAModel", dependencies: ["LowRATensor", "LowRAIO", "LowRAQuant"]),
        .target(name: "LowRAReport"),
        .target(name: "LowRATrain", dependencies: ["LowRATensor", "LowRAIO", "LowRAQuant", "LowRAModel"]),
        .executableTarget(
            name: "lowra",
            dependencies: ["LowRATrain", "LowRAReport", "LowRAModel", "LowRAQuant", "LowRATensor", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(
            name: "LowRATests",
            dependencies: ["LowRAModel", "LowRATrain", "LowRAReport"]),
    ]
)
