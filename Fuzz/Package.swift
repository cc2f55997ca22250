// swift-tools-version:6.0
// libFuzzer harnesses for LowRA's parsers (issue 15), a package of their own so the main build
// never links them: scripts/fuzz.sh builds them with -sanitize=fuzzer,address and runs each.
import PackageDescription

let io = Target.Dependency.product(name: "LowRAIO", package: "LowRA")
func harness(_ name: String) -> Target {
    .executableTarget(
        name: name, dependencies: ["FuzzSupport", io], swiftSettings: [.unsafeFlags(["-parse-as-library"])])
}

let package = Package(
    name: "LowRAFuzz",
    dependencies: [.package(name: "LowRA", path: "..")],
    targets: [.target(name: "FuzzSupport"), harness("FuzzGGUF"), harness("FuzzSafeTensors")]
)
