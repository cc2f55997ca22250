import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATrain
@testable import LowRAAdapters

/// Adapter cards: written by finetune, edited by `card set`, extended by `eval --record`, and the
/// serving rule `card verify` applies.
final class CardTests: XCTestCase {
    func lowra(_ args: [String], line: UInt = #line) throws -> String {
        let r = try runProcess(Paths.lowraBinary, args)
        XCTAssertEqual(r.status, 0, r.err, line: line)
        return r.out
    }

    func fails(_ args: [String], _ needle: String, line: UInt = #line) throws {
        let r = try runProcess(Paths.lowraBinary, args)
        XCTAssertNotEqual(r.status, 0, line: line)
        XCTAssertTrue(r.err.contains(needle), r.err, line: line)
        XCTAssertFalse(r.err.contains("Fatal error"), r.err, line: line)
    }

    func testFinetuneCardSetVerifyAndRecordedEvaluations() throws {
        let dir = try temporaryDirectory(self)
        let q = "\(dir)/q"
        _ = try lowra(["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", q, "--rank", "4"])
        let text = String(repeating: "First Citizen:\nBefore we proceed any further, hear me speak.\n", count: 30)
        try text.write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        try String(repeating: "A different text about other things entirely.\n", count: 40)
            .write(toFile: "\(dir)/drift.txt", atomically: true, encoding: .utf8)
        let a = "\(dir)/shakes"
        _ = try lowra([
            "finetune", "--model", q, "--train", "\(dir)/t.txt", "--valid", "\(dir)/t.txt", "--steps", "3", "--seq",
            "32",
            "--batch", "2", "--out", a,
        ])
        // finetune's card: named after the directory, the base's fingerprint, the training file,
        // the validation as a task evaluation.
        var card = try AdapterCard.load(a)
        XCTAssertEqual(card.name, "shakes")
        XCTAssertEqual(card.version, "1")
        XCTAssertEqual(card.baseFingerprint, try baseFingerprint(q))
        XCTAssertEqual(card.trainingData?.bytes, text.utf8.count)
        XCTAssertEqual(card.rank, 4)
        XCTAssertEqual(card.evaluations.map(\.role), [.task])
        XCTAssertGreaterThan(card.evaluations[0].tokens, 0)
        XCTAssertEqual(card.quantization?.method, "lowra")

        // The serving rule: at 2 code bits N₀ = 1024 asks for 2048 tokens of each role.
        try fails(["card", "verify", a, "--model", q], "drift tokens evaluated")
        _ = try lowra(["card", "verify", a, "--model", q, "--min-eval-tokens", "0"])
        _ = try lowra([
            "eval", "--model", q, "--adapter", a, "--data", "\(dir)/drift.txt", "--reference",
            Paths.fixture("tiny.gguf"),
            "--record",
        ])
        card = try AdapterCard.load(a)
        XCTAssertEqual(card.evaluations.map(\.role), [.task, .drift])
        let drift = card.evaluations[1]
        XCTAssertNotNil(drift.klDivergence)
        XCTAssertEqual(drift.reference, Paths.fixture("tiny.gguf"))
        XCTAssertGreaterThan(drift.tokens, 10)
        let need = min(card.evaluations[0].tokens, drift.tokens)
        // N₀·4/b ≤ the evaluated tokens: served; one more token asked: refused.
        let b = card.quantization!.codeBitsPerParam
        let n0 = Int((Double(need) * b / 4).rounded(.down))
        XCTAssertTrue(
            try lowra(["card", "verify", a, "--model", q, "--min-eval-tokens", "\(n0)"]).contains("may be served"))
        try fails(["card", "verify", a, "--model", q, "--min-eval-tokens", "\(need)"], "tokens evaluated")

        // card set edits and keeps the evaluations; a retired adapter and another base are refused.
        _ = try lowra(["card", "set", a, "--name", "bard", "--version", "2.1", "--task", "plays", "--owner", "me"])
        card = try AdapterCard.load(a)
        XCTAssertEqual([card.name, card.version, card.task, card.owner], ["bard", "2.1", "plays", "me"])
        XCTAssertEqual(card.evaluations.count, 2)
        _ = try lowra(["card", "set", a, "--retire-after", "2001-01-01"])
        try fails(["card", "verify", a, "--model", q, "--min-eval-tokens", "1"], "retired after 2001-01-01")
        _ = try lowra(["card", "set", a, "--retire-after", "none"])
        _ = try lowra([
            "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "3", "--out", "\(dir)/q3", "--rank", "4",
        ])
        try fails(["card", "verify", a, "--model", "\(dir)/q3", "--min-eval-tokens", "1"], "another base")
        XCTAssertTrue(try lowra(["card", "show", a]).contains("bard@2.1"))

        // Bad edits are refused and leave the card as it was.
        let before = try Data(contentsOf: URL(fileURLWithPath: AdapterCard.path(a)))
        try fails(["card", "set", a, "--name", "../etc"], "name")
        try fails(["card", "set", a, "--version", "1@2"], "version")
        try fails(["card", "set", a, "--retire-after", "2027-02-30"], "YYYY-MM-DD")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: AdapterCard.path(a))), before)
        // A damaged card is an error naming the file, not a crash.
        try Data("{\"format\": 3".utf8).write(to: URL(fileURLWithPath: AdapterCard.path(a)))
        try fails(["card", "show", a], "adapter_card.json")
        try fails(["eval", "--model", q, "--data", "\(dir)/drift.txt", "--record"], "--record needs --adapter")
    }
}
