import Foundation
import XCTest

@testable import LowRAModel

/// End-to-end checks on SmolLM2-135M. Release builds only: debug builds are too slow for a
/// 135M-parameter model (`make test` runs the suite in release).
final class RealModelTests: XCTestCase {
    override func setUpWithError() throws {
        #if DEBUG
            throw XCTSkip("runs in release builds (make test)")
        #else
            try Paths.requireSmolLM2()
        #endif
    }

    func testPerplexityMatchesNumpyReference() throws {
        let ref = try loadJSON("smollm2_reference.json") as! [String: Any]
        let loaded = try LoadedModel.load(Paths.smolLM2)
        let text = try String(contentsOfFile: Paths.shakespeare, encoding: .utf8)
        let tokens = Array(loaded.tokenizer.encode(text).prefix(512))
        XCTAssertEqual(tokens, ref["tokens"] as? [Int])
        let r = try loaded.model.evaluate(tokens: tokens, context: 512)
        let want = ref["perplexity"] as! Double
        XCTAssertEqual(r.perplexity, want, accuracy: want * 0.005, "perplexity \(r.perplexity) vs numpy \(want)")
        XCTAssertEqual(r.accuracy, ref["accuracy"] as! Double, accuracy: 0.005)
        let logits = try loaded.model.forward(Array(tokens.prefix(1)), cache: KVCache(config: loaded.config, capacity: 1))
        let top = logits.indices.sorted { logits[$0] > logits[$1] }.prefix(5)
        XCTAssertEqual(Array(top), ref["first_row_top5"] as? [Int])
    }

    func testChatAnswersParis() throws {
        let loaded = try LoadedModel.load(Paths.smolLM2)
        let prompt = try loaded.tokenizer.chatTemplate!.render([ChatMessage(role: "user", content: "What is the capital of France?")])
        let r = try loaded.model.generate(
            prompt: loaded.tokenizer.encode(prompt), maxNewTokens: 20, sampling: SamplingOptions(temperature: 0),
            eos: loaded.tokenizer.eosTokenId)
        XCTAssertTrue(loaded.tokenizer.decode(r.tokens).contains("Paris"), loaded.tokenizer.decode(r.tokens))
    }
}
