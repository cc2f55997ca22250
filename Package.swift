// swift-tools-version:6.1
import Foundation
import PackageDescription

// Dependencies run one way (ARCHITECTURE.md draws the graph):
// CLowRAPacked (packed format, C kernels) <- LowRATensor (BLAS, kernel paths) <- LowRAIO (file formats)
// <- LowRAQuant (per-tensor quantizer), LowRATokenizer (byte-level BPE, chat templates)
// <- LowRAModel (architecture, config, weights, the forward, LoRA factors, generation, evaluation)
// <- LowRAPipeline (model quantizer, calibration, transforms, the quantized directory, model loading)
// <- LowRAAdapters (PEFT store, cards, compressed adapters)
// <- LowRATrain (backward pass, optimizer, data, trainer; + CLowRAComm, MPI collectives),
// LowRAServe (the OpenAI-compatible server; its request parsing is LowRAAPI)
// <- LowRABench (benchmarks, synthetic checkpoints), lowra (CLI).

// Data-parallel training (`finetune --distributed`) links Open MPI when its development files are installed
// (Debian: libopenmpi-dev); without them CLowRAComm builds without MPI and --distributed says how to add it.
// LOWRA_MPI=0 builds without MPI even where it is installed.
let pkgConfigDirectories = [
    "/usr/lib/x86_64-linux-gnu/pkgconfig", "/usr/lib/aarch64-linux-gnu/pkgconfig", "/usr/lib/pkgconfig",
    "/usr/local/lib/pkgconfig", "/opt/homebrew/lib/pkgconfig",
]
let withMPI =
    Context.environment["LOWRA_MPI"] != "0"
    && pkgConfigDirectories.contains { FileManager.default.fileExists(atPath: $0 + "/ompi-c.pc") }
let commTarget: Target =
    withMPI
    ? .target(name: "CLowRAComm", dependencies: ["CMPI"], cSettings: [.define("LOWRA_HAVE_MPI")])
    : .target(name: "CLowRAComm")
let mpiTargets: [Target] =
    withMPI
    ? [.systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])])]
    : []

// The one-shot ILP precision assigner (`--assigner ilp`, and the tests that compare the exact assigner with it)
// uses COIN-OR CBC where its pkg-config file is installed (Debian: coinor-libcbc-dev; Homebrew: cbc); without
// it (or with LOWRA_CBC=0) the package builds without CBC, and the default exact assigner needs none.
let withCBC =
    Context.environment["LOWRA_CBC"] != "0"
    && pkgConfigDirectories.contains { FileManager.default.fileExists(atPath: $0 + "/cbc.pc") }
let cbcTargets: [Target] =
    withCBC
    ? [
        .systemLibrary(
            name: "CCbc", path: "Sources/CCbc", pkgConfig: "cbc",
            providers: [.apt(["coinor-libcbc-dev"]), .brew(["cbc"])])
    ]
    : []

// BLAS and LAPACK (Sources/CBLAS): Accelerate on Apple platforms, OpenBLAS + LAPACKE elsewhere.
let blasLinks: [LinkerSetting] = [
    .linkedLibrary("openblas", .when(platforms: [.linux])), .linkedLibrary("lapacke", .when(platforms: [.linux])),
    .linkedFramework("Accelerate", .when(platforms: [.macOS, .iOS])),
]

let package = Package(
    name: "LowRA",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lowra", targets: ["lowra"]),
        .library(name: "LowRATokenizer", targets: ["LowRATokenizer"]),
        .library(name: "LowRAModel", targets: ["LowRAModel"]),
        .library(name: "LowRAIO", targets: ["LowRAIO"]),
        .library(name: "LowRAAPI", targets: ["LowRAAPI"]),
        .library(name: "LowRAPipeline", targets: ["LowRAPipeline"]),
        .library(name: "LowRAAdapters", targets: ["LowRAAdapters"]),
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
        .target(name: "CLowRAPacked"),
        commTarget,
        .target(
            name: "LowRATensor",
            dependencies: ["CBLAS", "CLowRAPacked", .product(name: "Crypto", package: "swift-crypto")],
            linkerSettings: blasLinks),
        .target(name: "LowRAIO", dependencies: ["LowRATensor", "CLowRAPacked"]),
        .target(
            name: "LowRAQuant",
            dependencies: ["LowRATensor", "CLowRAPacked"] + (withCBC ? ["CCbc"] : []) as [Target.Dependency]),
        .target(name: "LowRATokenizer", dependencies: ["LowRATensor", "LowRAIO"]),
        .target(name: "LowRAModel", dependencies: ["LowRATensor", "LowRAIO", "LowRAQuant", "LowRATokenizer"]),
        .target(
            name: "LowRAPipeline",
            dependencies: ["LowRATensor", "LowRAIO", "LowRAQuant", "LowRATokenizer", "LowRAModel"]),
        .target(
            name: "LowRAAdapters",
            dependencies: [
                "LowRATensor", "LowRAIO", "LowRAQuant", "LowRAModel", "LowRAPipeline",
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .target(
            name: "LowRATrain",
            dependencies: [
                "LowRATensor", "LowRAIO", "LowRAQuant", "LowRATokenizer", "LowRAModel", "LowRAPipeline",
                "LowRAAdapters", "CLowRAComm",
            ]),
        .target(name: "LowRAReport"),
        .target(name: "LowRAAPI", dependencies: ["LowRAModel", "LowRATokenizer"]),
        .target(
            name: "LowRAServe",
            dependencies: [
                "LowRAAPI", "LowRAAdapters", "LowRAPipeline", "LowRAModel", "LowRATokenizer", "LowRATensor",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .target(
            name: "LowRABench",
            dependencies: [
                "LowRATensor", "LowRAIO", "LowRAQuant", "LowRATokenizer", "LowRAModel", "LowRAPipeline", "LowRATrain",
            ]),
        .executableTarget(
            name: "lowra",
            dependencies: [
                "LowRATrain", "LowRAReport", "LowRAModel", "LowRAPipeline", "LowRAAdapters", "LowRATokenizer",
                "LowRAQuant", "LowRATensor", "LowRAServe", "LowRABench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "LowRATests",
            dependencies: [
                "LowRAModel", "LowRAPipeline", "LowRAAdapters", "LowRATokenizer", "LowRATrain", "LowRAReport",
                "LowRAServe", "LowRAAPI", "LowRABench",
            ]),
    ] + mpiTargets + cbcTargets
)
