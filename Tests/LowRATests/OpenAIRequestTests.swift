import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRAAPI
@testable import LowRATokenizer
@testable import LowRAPipeline

/// The server's request parsing and text streaming, without a server.
final class OpenAIRequestTests: XCTestCase {
    func parse(_ json: String, _ kind: CompletionRequest.Kind = .chat) throws -> CompletionRequest {
        try CompletionRequest(json: Data(json.utf8), kind: kind)
    }

    func refused(_ json: String, _ kind: CompletionRequest.Kind = .chat, param: String?, line: UInt = #line) {
        XCTAssertThrowsError(try parse(json, kind), line: line) {
            let e = $0 as! APIError
            XCTAssertEqual(e.status, 400, line: line)
            XCTAssertEqual(e.param, param, e.message, line: line)
        }
    }

    func testParsesOpenAIFieldsAndRefusesBadOnes() throws {
        let r = try parse(
            """
            {"model": "a@2", "messages": [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
             "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["\\n\\n", "END"], "stream": true,
             "stream_options": {"include_usage": true}, "n": 1}
            """)
        XCTAssertEqual(r.model, "a@2")
        XCTAssertEqual(
            r.messages,
            [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi there")])
        XCTAssertEqual(r.maxTokens, 7)
        XCTAssertEqual(r.sampling.temperature, 0.5)
        XCTAssertEqual(r.sampling.topP, 0.9)
        XCTAssertEqual(r.sampling.seed, 3)
        XCTAssertEqual(r.stop, ["\n\n", "END"])
        XCTAssertTrue(r.stream && r.includeUsage)
        let t = try parse(#"{"model": "m", "prompt": ["once"], "stop": "x", "max_completion_tokens": 4}"#, .text)
        XCTAssertEqual(t.prompt, "once")
        XCTAssertEqual(t.stop, ["x"])
        XCTAssertEqual(t.maxTokens, 4)

        XCTAssertThrowsError(try parse("{\"model\": ")) { XCTAssertEqual(($0 as! APIError).code, "invalid_json") }
        XCTAssertThrowsError(try parse("[1, 2]")) { XCTAssertEqual(($0 as! APIError).code, "invalid_json") }
        refused(#"{"messages": [{"role": "user", "content": "x"}]}"#, param: "model")
        refused(#"{"model": "m", "messages": []}"#, param: "messages")
        refused(#"{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}"#, param: "messages")
        refused(#"{"model": "m", "messages": [{"role": "user", "content": 5}]}"#, param: "messages")
        let ok = #""model": "m", "messages": [{"role": "user", "content": "x"}]"#
        refused("{\(ok), \"temperature\": 3}", param: "temperature")
        refused("{\(ok), \"temperature\": true}", param: "temperature")
        refused("{\(ok), \"top_p\": 0}", param: "top_p")
        refused("{\(ok), \"max_tokens\": 1.5}", param: "max_tokens")
        refused("{\(ok), \"seed\": -1}", param: "seed")
        refused("{\(ok), \"n\": 2}", param: "n")
        refused("{\(ok), \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", param: "stop")
        refused("{\(ok), \"stop\": \"\"}", param: "stop")
        refused("{\(ok), \"stream\": 1}", param: "stream")
        refused(#"{"model": "m", "prompt": ["a", "b"]}"#, .text, param: "prompt")
    }

    /// Text comes out as it becomes final: a stop sequence ends it (the stop itself never shown,
    /// even when it arrives split across tokens), and a held-back prefix that does not become a
    /// stop is released.
    func testTextStreamerStopsAndHoldsBack() throws {
        let tok = try LoadedModel.load(Paths.fixture("tiny.gguf")).tokenizer
        func stream(_ text: String, stops: [String]) -> (pieces: [String], text: String, stopped: Bool) {
            var s = TextStreamer(tokenizer: tok, stops: stops)
            var pieces = [String]()
            for id in tok.encode(text) {
                pieces.append(s.add(id))
                if s.stopped { break }
            }
            if !s.stopped { pieces.append(s.finish()) }
            return (pieces, s.text, s.stopped)
        }
        let a = stream("Hello world. STOP here", stops: ["STOP"])
        XCTAssertEqual(a.text, "Hello world. ")
        XCTAssertTrue(a.stopped)
        XCTAssertFalse(a.pieces.joined().contains("S"))
        let b = stream("Hello STOW world", stops: ["STOP"])
        XCTAssertEqual(b.text, "Hello STOW world")
        XCTAssertFalse(b.stopped)
        let c = stream("no stops at all", stops: [])
        XCTAssertEqual(c.pieces.joined(), "no stops at all")
    }
}
