import Foundation
import XCTest

import LowRAModel
@testable import LowRAPipeline

/// Paths to committed fixtures and to the files setup fetches.
enum Paths {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static func fixture(_ name: String) -> String { "\(repo)/Tests/Fixtures/\(name)" }
    static let smolLM2 = "\(repo)/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    /// Fetched by `make setup-qwen` only; tests that need it skip when it is absent.
    static let qwen = "\(repo)/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    static let shakespeare = "\(repo)/data/tinyshakespeare.txt"

    /// The `lowra` executable built beside the test bundle.
    static var lowraBinary: String {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("lowra").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("lowra").path
    }

    static func requireSmolLM2() throws {
        guard FileManager.default.fileExists(atPath: smolLM2) else {
            XCTFail("\(smolLM2) is missing: run scripts/setup.sh first")
            throw XCTSkip("model missing")
        }
    }
}

func loadJSON(_ name: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Paths.fixture(name))))
}

/// A fresh temporary directory, removed when the test ends.
func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lowra-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
    return dir.path
}

/// Largest |a - b| / max(1, |b|), with the index where it happens.
/// ‖a − b‖ / ‖b‖.
func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
    var err = 0.0, norm = 0.0
    for i in 0..<min(a.count, b.count) {
        err += Double(a[i] - b[i]) * Double(a[i] - b[i])
        norm += Double(b[i]) * Double(b[i])
    }
    return (err / max(norm, .leastNormalMagnitude)).squareRoot()
}

func maxRelativeDifference(_ a: [Float], _ b: [Double]) -> (Double, Int) {
    var worst = 0.0
    var at = 0
    for i in 0..<min(a.count, b.count) {
        let d = abs(Double(a[i]) - b[i]) / max(1, abs(b[i]))
        if d > worst {
            worst = d
            at = i
        }
    }
    return (worst, at)
}

/// Runs a command, returning exit status, stdout and stderr; `environment` adds to (or, with an
/// empty value, removes from) the test's environment.
func runProcess(
    _ path: String, _ args: [String], in directory: String? = nil, environment: [String: String] = [:]
) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
    if !environment.isEmpty {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v.isEmpty ? nil : v }
        p.environment = env
    }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// Starts `lowra args` in the background with its output discarded: for tests that kill it.
func startLowra(_ args: [String]) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: Paths.lowraBinary)
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    return p
}

/// The first 512 tokens of Tiny Shakespeare: their ids and the model's perplexity and accuracy
/// (one window of 512) equal the numpy reference in `json` (perplexity within 0.5%). Returns the
/// reference and the tokens.
@discardableResult
func assertPerplexityMatchesReference(
    _ loaded: LoadedModel, _ json: String, file: StaticString = #filePath, line: UInt = #line
) throws -> ([String: Any], [Int]) {
    let ref = try loadJSON(json) as! [String: Any]
    let text = try String(contentsOfFile: Paths.shakespeare, encoding: .utf8)
    let tokens = Array(loaded.tokenizer.encode(text).prefix(512))
    XCTAssertEqual(tokens, ref["tokens"] as? [Int], file: file, line: line)
    let r = try loaded.model.evaluate(tokens: tokens, context: 512)
    let want = ref["perplexity"] as! Double
    XCTAssertEqual(
        r.perplexity, want, accuracy: want * 0.005, "perplexity \(r.perplexity) vs numpy \(want)", file: file,
        line: line)
    XCTAssertEqual(r.accuracy, ref["accuracy"] as! Double, accuracy: 0.005, file: file, line: line)
    return (ref, tokens)
}

/// ‖num − ana‖ / ‖num + ana‖ over pairs of (numeric, analytic) derivatives: a gradient check's
/// relative error. Fails the test when the pairs carry no signal at all (a check of nothing).
func gradientMismatch(
    _ pairs: [(numeric: Double, analytic: Double)], file: StaticString = #filePath, line: UInt = #line
) -> Double {
    var d = 0.0
    var norm = 0.0
    for (num, ana) in pairs {
        d += (num - ana) * (num - ana)
        norm += (num + ana) * (num + ana)
    }
    XCTAssertGreaterThan(norm, 1e-10, "every derivative checked is zero", file: file, line: line)
    return (d / max(norm, 1e-30)).squareRoot()
}
