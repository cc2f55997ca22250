import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel

final class TokenizerTests: XCTestCase {
    private func cases(_ name: String) throws -> [(text: String, ids: [Int])] {
        (try loadJSON(name) as! [[String: Any]]).map { ($0["text"] as! String, $0["ids"] as! [Int]) }
    }

    private func assertMatches(_ tok: Tokenizer, _ fixture: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let all = try cases(fixture)
        XCTAssertGreaterThan(all.count, 10)
        for c in all {
            let got = tok.encode(c.text)
            if got != c.ids {
                let firstDiff = zip(got, c.ids).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(got.count, c.ids.count)
                XCTFail("\(fixture): \(c.text.debugDescription.prefix(60)): ids differ at \(firstDiff): "
                        + "got \(got[firstDiff...].prefix(6)), want \(c.ids[firstDiff...].prefix(6))", file: file, line: line)
            }
        }
    }

    func testSmolLM2MatchesHuggingFaceTokenizers() throws {
        try Paths.requireSmolLM2()
        try assertMatches(try Tokenizer(gguf: GGUFFile(path: Paths.smolLM2)), "tokenizer_smollm2.json")
    }

    func testTinyTokenizerFromTokenizerJSONAndFromGGUF() throws {
        try assertMatches(try Tokenizer(tokenizerJSON: Paths.fixture("tiny_hf/tokenizer.json")), "tokenizer_tiny.json")
        try assertMatches(try Tokenizer(gguf: GGUFFile(path: Paths.fixture("tiny.gguf"))), "tokenizer_tiny.json")
    }

    func testRoundTripsUTF8() throws {
        let tok = try Tokenizer(tokenizerJSON: Paths.fixture("tiny_hf/tokenizer.json"))
        var texts = try cases("tokenizer_tiny.json").map(\.text)
        // Random strings over a mix of scripts, including 4-byte scalars.
        var rng = SystemRandomNumberGenerator()
        let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0xA0...0x24F, 0x370...0x3FF, 0x4E00...0x4FFF, 0x1F600...0x1F64F]
        for _ in 0..<50 {
            var s = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 1...40, using: &rng) {
                let pool = pools.randomElement(using: &rng)!
                if let u = Unicode.Scalar(UInt32.random(in: pool, using: &rng)) { s.append(u) }
                if Bool.random(using: &rng) { s.append(" ") }
            }
            texts.append(String(s))
        }
        for t in texts { XCTAssertEqual(tok.decode(tok.encode(t)), t) }
    }

    func testSpecialTokensAreMatchedBeforeBPE() throws {
        let tok = try Tokenizer(tokenizerJSON: Paths.fixture("tiny_hf/tokenizer.json"))
        let ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
        XCTAssertEqual(ids.first, tok.addedTokens["<|im_start|>"])
        XCTAssertEqual(ids.last, tok.addedTokens["<|im_end|>"])
        XCTAssertEqual(tok.eosTokenId, tok.addedTokens["<|im_end|>"])
    }

    func testGPT2SplitterPieces() {
        let pieces = GPT2Splitter().split("Hello  world's 123!!\n\n  x\t").map(String.init)
        XCTAssertEqual(pieces, ["Hello", " ", " world", "'s", " 123", "!!", "\n\n ", " x", "\t"])
        XCTAssertEqual(DigitSplitter().split("a12b").map(String.init), ["a", "1", "2", "b"])
    }

    func testChatTemplateChatML() throws {
        let tok = try Tokenizer(tokenizerJSON: Paths.fixture("tiny_hf/tokenizer.json"))
        let template = try XCTUnwrap(tok.chatTemplate)
        XCTAssertEqual(template.defaultSystem, "You are a tiny test model")
        XCTAssertEqual(
            try template.render([ChatMessage(role: "user", content: "Hi")]),
            "<|im_start|>system\nYou are a tiny test model<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(
            try template.render([ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "Q")],
                                addGenerationPrompt: false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n")
        XCTAssertThrowsError(try ChatTemplate(source: "{{ bos_token }}{% for m in messages %}[INST]{% endfor %}").render([]))
    }
}
