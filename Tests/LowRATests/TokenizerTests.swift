import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATokenizer

final class TokenizerTests: XCTestCase {
    private func cases(_ name: String) throws -> [(text: String, ids: [Int])] {
        (try loadJSON(name) as! [[String: Any]]).map { ($0["text"] as! String, $0["ids"] as! [Int]) }
    }

    private func assertMatches(
        _ tok: Tokenizer, _ fixture: String, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let all = try cases(fixture)
        XCTAssertGreaterThan(all.count, 10)
        for c in all {
            let got = tok.encode(c.text)
            if got != c.ids {
                let firstDiff =
                    zip(got, c.ids).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                    ?? min(got.count, c.ids.count)
                XCTFail(
                    "\(fixture): \(c.text.debugDescription.prefix(60)): ids differ at \(firstDiff): "
                        + "got \(got[firstDiff...].prefix(6)), want \(c.ids[firstDiff...].prefix(6))", file: file,
                    line: line)
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

    /// What FuzzModelJSON found: a tokenizer.json whose token id is astronomically large made the
    /// token table allocate that many entries (AddressSanitizer: allocation too large). Ids must
    /// now lie below the number of vocabulary and added entries; the fixture still loads.
    func testWildTokenIdsAreRefused() throws {
        let dir = try temporaryDirectory(self)
        let original = try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("tiny_hf/tokenizer.json")))
        let root = try JSONSerialization.jsonObject(with: original) as! [String: Any]
        for (where_, edit) in [
            (
                "vocab",
                { (r: inout [String: Any]) in
                    var model = r["model"] as! [String: Any]
                    var vocab = model["vocab"] as! [String: Int]
                    vocab["zz"] = 0x7e68_ffc8_3d6e_3930
                    model["vocab"] = vocab
                    r["model"] = model
                }
            ),
            (
                "added",
                { (r: inout [String: Any]) in
                    var added = r["added_tokens"] as? [[String: Any]] ?? []
                    added.append(["id": 1 << 40, "content": "<huge>", "special": true])
                    r["added_tokens"] = added
                }
            ),
            (
                "negative",
                { (r: inout [String: Any]) in
                    var model = r["model"] as! [String: Any]
                    var vocab = model["vocab"] as! [String: Int]
                    vocab["neg"] = -5
                    model["vocab"] = vocab
                    r["model"] = model
                }
            ),
        ] as [(String, (inout [String: Any]) -> Void)] {
            var r = root
            edit(&r)
            let path = "\(dir)/\(where_)/tokenizer.json"
            try FileManager.default.createDirectory(atPath: "\(dir)/\(where_)", withIntermediateDirectories: true)
            try JSONSerialization.data(withJSONObject: r).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try Tokenizer(tokenizerJSON: path), where_) {
                XCTAssertTrue(($0 as! LowRAError).message.contains("outside"), "\($0)")
            }
        }
        _ = try Tokenizer(tokenizerJSON: Paths.fixture("tiny_hf/tokenizer.json"))
    }

    func testRoundTripsUTF8() throws {
        let tok = try Tokenizer(tokenizerJSON: Paths.fixture("tiny_hf/tokenizer.json"))
        var texts = try cases("tokenizer_tiny.json").map(\.text)
        // Random strings over a mix of scripts, including 4-byte scalars.
        var rng = SystemRandomNumberGenerator()
        let pools: [ClosedRange<UInt32>] = [
            0x20...0x7E, 0xA0...0x24F, 0x370...0x3FF, 0x4E00...0x4FFF, 0x1F600...0x1F64F,
        ]
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
            "<|im_start|>system\nYou are a tiny test model<|im_end|>\n"
                + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        )
        XCTAssertEqual(
            try template.render(
                [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "Q")],
                addGenerationPrompt: false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n")
        XCTAssertThrowsError(
            try ChatTemplate(source: "{{ bos_token }}{% for m in messages %}[INST]{% endfor %}").render([]))
    }

    /// The Llama 3 and Qwen2 pre-tokenizer pieces equal those of the `tokenizers` package's Split
    /// with the same regex (Tests/Fixtures/pretokenizer_splits.json, scripts/make_fixtures.py).
    func testWordPieceSplitterMatchesTokenizersRegex() throws {
        let fixture = try loadJSON("pretokenizer_splits.json") as! [String: [[String: Any]]]
        XCTAssertEqual(Set(fixture.keys), ["1", "3"])
        for (digits, cases) in fixture {
            let splitter = WordPieceSplitter(maxDigits: Int(digits)!)
            XCTAssertEqual(cases.count, 23)
            for c in cases {
                let text = c["text"] as! String
                XCTAssertEqual(
                    splitter.split(text[...]).map(String.init), c["pieces"] as! [String], "\(digits): \(text)")
            }
        }
    }

    func testChatTemplatesOfQwenAndLlama3() throws {
        // Qwen2.5's template writes its default system message after two other system openers.
        let qwen = try ChatTemplate(
            source: """
                {%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}
                {%- else %}{{- 'You are Qwen.' }}{%- endif %}{%- else %}{%- if messages[0]['role'] == 'system' %}
                {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}
                {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. \
                You are a helpful assistant.<|im_end|>\\n' }}
                {%- endif %}{%- endif %}{{- '<|im_start|>assistant\\n' }}
                """)
        XCTAssertEqual(qwen.format, .chatML)
        XCTAssertEqual(qwen.defaultSystem, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        let llama = try ChatTemplate(
            source: """
                {{- bos_token }}{%- set date_string = "26 Jul 2024" %}\
                {{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
                {{- "Cutting Knowledge Date: December 2023\\n" }}{{- "Today Date: " + date_string + "\\n\\n" }}
                {%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'
                + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}
                {%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}
                """)
        XCTAssertEqual(llama.format, .llama3)
        XCTAssertEqual(
            try llama.render([ChatMessage(role: "user", content: " Hi\n")]),
            "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
                + "Today Date: 26 Jul 2024\n\n"
                + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                + "<|start_header_id|>assistant<|end_header_id|>\n\n")
        let llama30 = try ChatTemplate(
            source: "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                + "{{ m['content'] }}<|eot_id|>{% endfor %}")
        XCTAssertEqual(
            try llama30.render(
                [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "Q")],
                addGenerationPrompt: false),
            "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                + "Q<|eot_id|>"
        )
    }
}
