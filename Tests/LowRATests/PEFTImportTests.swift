import Foundation
import XCTest

@testable import LowRAAdapters
@testable import LowRAModel
@testable import LowRAPipeline
@testable import LowRATensor

/// `lowra adapter import`: a PEFT adapter made independently (scripts/make_peft_fixture.py: numpy and
/// safetensors, PEFT's names, rsLoRA, five of the seven modules) against the numpy forward of the
/// merged weights W + (α/√r)·BA.
final class PEFTImportTests: XCTestCase {
    func reference() throws -> (tokens: [Int], logits: [Double]) {
        let root = try loadJSON("peft_tiny_logits.json") as! [String: Any]
        return (root["tokens"] as! [Int], (root["logits"] as! [NSNumber]).map(\.doubleValue))
    }

    /// The Hugging Face layout and the GGUF one (q/k rows in interleaved order): the same logits.
    func testImportedAdapterMatchesTheNumpyMergedModel() throws {
        let (tokens, want) = try reference()
        for name in ["tiny_hf", "tiny.gguf"] {
            let loaded = try LoadedModel.load(Paths.fixture(name))
            let (adapter, source) = try PEFTImport.read(Paths.fixture("peft_tiny"), config: loaded.config)
            XCTAssertTrue(source.rsLoRA)
            XCTAssertEqual(source.tensors, 20)
            XCTAssertEqual(adapter.scale, 3, accuracy: 1e-6, "6 / √4")
            let got = try loaded.model.forward(
                tokens, cache: KVCache(config: loaded.config, capacity: tokens.count), logits: .all, adapter: adapter)
            let (diff, at) = maxRelativeDifference(got, want)
            XCTAssertLessThanOrEqual(diff, 1e-4, "\(name): largest difference \(diff) at \(at)")
        }
    }

    /// Through the CLI onto a quantized base: the card names the source, the adapter is refused
    /// until `eval --record` has measured it on this base (task and drift), then admitted.
    func testImportedAdapterIsServableOnlyAfterEvaluation() throws {
        let dir = try temporaryDirectory(self)
        func lowra(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            try runProcess(Paths.lowraBinary, args)
        }
        let q = "\(dir)/q"
        var r = try lowra([
            "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", q, "--init", "none",
        ])
        XCTAssertEqual(r.status, 0, r.err)
        r = try lowra(["adapter", "import", Paths.fixture("peft_tiny"), "--model", q, "--out", "\(dir)/a"])
        XCTAssertEqual(r.status, 0, r.err)
        let card = try AdapterCard.load("\(dir)/a")
        XCTAssertEqual(card.importedFrom?.rank, 4)
        XCTAssertEqual(card.importedFrom?.path, Paths.fixture("peft_tiny"))
        XCTAssertEqual(card.importedFrom?.sha256.count, 64)
        r = try lowra(["card", "verify", "\(dir)/a", "--model", q, "--min-eval-tokens", "8"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("0 task tokens evaluated"), r.err)
        try String(repeating: "First Citizen:\nBefore we proceed any further, hear me speak.\n", count: 20)
            .write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        r = try lowra(["eval", "--model", q, "--adapter", "\(dir)/a", "--data", "\(dir)/t.txt", "--record"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try lowra([
            "eval", "--model", q, "--adapter", "\(dir)/a", "--data", "\(dir)/t.txt", "--reference",
            Paths.fixture("tiny.gguf"), "--record",
        ])
        XCTAssertEqual(r.status, 0, r.err)
        r = try lowra(["card", "verify", "\(dir)/a", "--model", q, "--min-eval-tokens", "8"])
        XCTAssertEqual(r.status, 0, r.err)
    }

    /// What does not import is refused with the reason: per-module ranks, whole modules, a pickle,
    /// a tensor of the wrong shape, a tensor outside target_modules.
    func testUnsupportedAdaptersAreRefused() throws {
        let dir = try temporaryDirectory(self)
        let config = try LoadedModel.load(Paths.fixture("tiny_hf")).config
        func variant(_ name: String, _ edit: (inout [String: Any]) -> Void) throws -> String {
            let d = "\(dir)/\(name)"
            try FileManager.default.copyItem(atPath: Paths.fixture("peft_tiny"), toPath: d)
            let url = URL(fileURLWithPath: "\(d)/adapter_config.json")
            var c = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&c)
            try JSONSerialization.data(withJSONObject: c).write(to: url)
            return d
        }
        func refusal(_ d: String) -> String {
            do {
                _ = try PEFTImport.read(d, config: config)
                return "imported"
            } catch { return "\(error)" }
        }
        XCTAssertTrue(refusal(try variant("pattern") { $0["rank_pattern"] = ["q_proj": 8] }).contains("rank_pattern"))
        XCTAssertTrue(refusal(try variant("saved") { $0["modules_to_save"] = ["lm_head"] }).contains("modules_to_save"))
        XCTAssertTrue(refusal(try variant("rank") { $0["r"] = 8 }).contains("has shape"))
        XCTAssertTrue(
            refusal(try variant("fewer") { $0["target_modules"] = ["q_proj"] }).contains("not in target_modules"))
        let pickle = try variant("pickle") { _ in }
        try FileManager.default.moveItem(
            atPath: "\(pickle)/adapter_model.safetensors", toPath: "\(pickle)/adapter_model.bin")
        XCTAssertTrue(refusal(pickle).contains("pickle"))
    }
}
