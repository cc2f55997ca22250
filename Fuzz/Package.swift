// swift-tools-version:6.0
// libFuzzer harnesses for LowRA's parsers, a package of their own so the main build
// never links them: scripts/fuzz.sh builds them with -sanitize=fuzzer,address and runs each.
import PackageDescription

func harness(_ name: String, _ products: String...) -> Target {
    .executableTarget(
        name: name, dependencies: ["FuzzSupport"] + products.map { .product(name: $0, package: "LowRA") },
        swiftSettings: [.unsafeFlags(["-parse-as-library"])])
}

let package = Package(
    name: "LowRAFuzz",
    dependencies: [.package(name: "LowRA", path: "..")],
    targets: [
        .target(name: "FuzzSupport"), harness("FuzzGGUF", "LowRAIO"), harness("FuzzSafeTensors", "LowRAIO"),
        harness("FuzzModelJSON", "LowRAModel", "LowRATokenizer", "LowRAPipeline"), harness("FuzzRequest", "LowRAAPI"),
        harness("FuzzQuantizedModel", "LowRAModel", "LowRAPipeline"),
        harness("FuzzAdapter", "LowRAModel", "LowRAPipeline", "LowRAAdapters"),
        harness("FuzzTrainingData", "LowRAModel", "LowRATrain", "LowRATokenizer"),
    ]
)
