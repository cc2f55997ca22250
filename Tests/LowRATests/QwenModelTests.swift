import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATokenizer
@testable import LowRAPipeline

/// End-to-end checks on the second real model, Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M: Qwen2
/// architecture, q/k/v bias, untied head, half-split RoPE in the GGUF, k-quants). Release builds
/// only, and only when `make setup-qwen` has fetched the model; the expected values come from
/// `scripts/make_fixtures.py --qwen2` (the `tokenizers` package and a float64 numpy forward on
/// gguf-py's dequantized weights).
final class QwenModelTests: XCTestCase {
    /// Loaded once for the whole class (8 s).
    nonisolated(unsafe) static var shared: LoadedModel?
    var loaded: LoadedModel!

    override func setUpWithError() throws {
        #if DEBUG
        throw XCTSkip("runs in release builds (make test)")
        #else
        guard FileManager.default.fileExists(atPath: Paths.qwen) else {
            throw XCTSkip("\(Paths.qwen) is absent (make setup-qwen)")
        }
        if Self.shared == nil { Self.shared = try LoadedModel.load(Paths.qwen) }
        loaded = Self.shared
        #endif
    }

    func testConfigAndTokenizerMatchTokenizers() throws {
        let c = loaded.config
        XCTAssertEqual(c.modelType, "qwen2")
        XCTAssertEqual(
            [c.numLayers, c.hiddenSize, c.intermediateSize, c.numHeads, c.numKVHeads, c.vocabSize],
            [24, 896, 4864, 14, 2, 151_936])
        XCTAssertEqual(c.ropeLayout, .halfSplit)
        XCTAssertTrue(c.attentionBias)
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertEqual(c.ropeTheta, 1e6)
        let cases = try loadJSON("tokenizer_qwen2.json") as! [[String: Any]]
        XCTAssertEqual(cases.count, 23)
        for c in cases {
            let text = c["text"] as! String
            XCTAssertEqual(loaded.tokenizer.encode(text), c["ids"] as! [Int], text)
        }
    }

    func testPerplexityMatchesNumpyReference() throws {
        try assertPerplexityMatchesReference(loaded, "qwen2_reference.json")
    }

    /// The chat answer's Python code runs and reverses a string.
    func testChatWritesWorkingCode() throws {
        let tok = loaded.tokenizer
        let prompt = try tok.chatTemplate!.render([
            ChatMessage(role: "user", content: "Write a Python function that reverses a string.")
        ])
        let r = try loaded.model.generate(
            prompt: tok.encode(prompt), maxNewTokens: 120, sampling: SamplingOptions(temperature: 0),
            eos: tok.eosTokenId)
        let answer = tok.decode(r.tokens)
        let code = try XCTUnwrap(
            answer.components(separatedBy: "```python\n").dropFirst().first?
                .components(separatedBy: "```").first, answer)
        let name = try XCTUnwrap(code.firstMatch(of: /def (\w+)\(/)?.1, answer)
        let file = "\(try temporaryDirectory(self))/answer.py"
        try (code + "\nprint(\(name)('LowRA 2-bit'))\n").write(toFile: file, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", file]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        let printed = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(printed, "tib-2 ARwoL\n", answer)
    }
}
