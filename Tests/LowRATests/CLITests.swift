import Foundation
import XCTest

/// The `lowra` binary turns bad input into one clear line and a non-zero exit.
final class CLITests: XCTestCase {
    private func assertFails(_ args: [String], mentioning needle: String, line: UInt = #line) throws {
        let r = try runProcess(Paths.lowraBinary, args)
        XCTAssertNotEqual(r.status, 0, line: line)
        let lines = r.err.split(separator: "\n").filter { !$0.isEmpty }
        XCTAssertTrue(lines.last?.contains(needle) ?? false, "stderr: \(r.err)", line: line)
        XCTAssertFalse(r.err.contains("Fatal error") || r.err.contains("Stack dump"), r.err, line: line)
    }

    func testBadInputs() throws {
        let dir = try temporaryDirectory(self)
        let empty = "\(dir)/empty.txt"
        FileManager.default.createFile(atPath: empty, contents: Data())
        let model = Paths.fixture("tiny_hf")
        try assertFails(["eval", "--model", model, "--data", empty], mentioning: "empty")
        try "hello".write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        try assertFails(["eval", "--model", "\(dir)/nope.gguf", "--data", "\(dir)/t.txt"], mentioning: "no such file")
        let truncated = "\(dir)/cut.gguf"
        try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("tiny.gguf"))).prefix(5000).write(to: URL(fileURLWithPath: truncated))
        try assertFails(["eval", "--model", truncated, "--data", "\(dir)/t.txt"], mentioning: "truncated")
        try assertFails(["generate", "--model", model, "--prompt", String(repeating: "hello ", count: 200)], mentioning: "context")
    }

    func testTokenizeAndEvalJSON() throws {
        let dir = try temporaryDirectory(self)
        try "First Citizen: hear me speak.".write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let tok = try runProcess(Paths.lowraBinary, ["tokenize", "--model", Paths.fixture("tiny.gguf"), "--file", "\(dir)/t.txt", "--json"])
        XCTAssertEqual(tok.status, 0, tok.err)
        let ids = try JSONSerialization.jsonObject(with: Data(tok.out.utf8)) as! [Int]
        XCTAssertFalse(ids.isEmpty)
        let ev = try runProcess(Paths.lowraBinary, ["eval", "--model", Paths.fixture("tiny.gguf"), "--data", "\(dir)/t.txt", "--json"])
        XCTAssertEqual(ev.status, 0, ev.err)
        let obj = try JSONSerialization.jsonObject(with: Data(ev.out.utf8)) as! [String: Any]
        XCTAssertEqual(obj["tokens"] as? Int, ids.count)
        XCTAssertGreaterThan(obj["perplexity"] as? Double ?? 0, 1)
        XCTAssertNotNil(obj["accuracy"] as? Double)
    }

    func testQuantizeThenEvalAndInspect() throws {
        let dir = try temporaryDirectory(self)
        let q = "\(dir)/q"
        let r = try runProcess(Paths.lowraBinary, ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "1.75", "--out", q, "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let code = try XCTUnwrap(obj["code_bits_per_param"] as? Double)
        XCTAssertTrue(code <= 1.75 && code >= 1.74, "\(code)")
        XCTAssertGreaterThan(obj["stored_bits_per_param"] as? Double ?? 0, code)
        XCTAssertNotNil(obj["seconds"] as? Double)
        try "First Citizen: hear me speak.".write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let ev = try runProcess(Paths.lowraBinary, ["eval", "--model", q, "--data", "\(dir)/t.txt", "--json"])
        XCTAssertEqual(ev.status, 0, ev.err)
        let ins = try runProcess(Paths.lowraBinary, ["inspect", "--model", q])
        XCTAssertTrue(ins.out.contains("code 1.7"), ins.out)
        try assertFails(["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "1.5", "--method", "qlora", "--out", q],
                        mentioning: "2 bits or more")
        try assertFails(["quantize", "--model", q, "--bits", "2", "--out", "\(dir)/qq"], mentioning: "already quantized")
        try #"{"version":1,"layers":{}}"#.write(toFile: "\(dir)/map.json", atomically: true, encoding: .utf8)
        try assertFails(["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--precision-map", "\(dir)/map.json",
                         "--out", "\(dir)/q2"], mentioning: "precision map")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/q2"), "nothing may be left in --out")
        try assertFails(["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "4.5", "--out", "\(dir)/q3"], mentioning: "between 1 and 4")
        try assertFails(["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", dir], mentioning: "not a LowRA quantized model")
    }
}
