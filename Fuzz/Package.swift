// swift-tools-version:6.0
// libFuzzer harnesses for LowRA's parsers (issue 15), a package of their own so the main build
// never links them: scripts/fuzz.sh builds them with -sanitize=fuzzer,address and runs each.
import PackageDescription

let package = Package(
    name: "LowRAFuzz",
    dependencies: [.package(name: "LowRA", path: "..")],
    targets: [
        .executableTarget(
            name: "FuzzGGUF", dependencies: [.product(name: "LowRAIO", package: "LowRA")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
        .executableTarget(
            name: "FuzzSafeTensors", dependencies: [.product(name: "LowRAIO", package: "LowRA")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ]
)
