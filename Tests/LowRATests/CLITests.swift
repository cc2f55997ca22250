import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATrain
@testable import LowRAPipeline
@testable import LowRAAdapters
@testable import LowRAServe

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
        try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("tiny.gguf"))).prefix(5000).write(
            to: URL(fileURLWithPath: truncated))
        try assertFails(["eval", "--model", truncated, "--data", "\(dir)/t.txt"], mentioning: "truncated")
        try assertFails(
            ["generate", "--model", model, "--prompt", String(repeating: "hello ", count: 200)], mentioning: "context")
    }

    /// Models LowRA cannot run: an unsupported family (config.json and GGUF), an unreadable tensor
    /// type, a shard index naming a missing file, a tensor whose shape disagrees with the config,
    /// sizes beyond any real model.
    func testUnsupportedModelsGiveOneLine() throws {
        let dir = try temporaryDirectory(self)
        try "hello world".write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        func eval(_ model: String) -> [String] { ["eval", "--model", model, "--data", "\(dir)/t.txt"] }
        let fm = FileManager.default
        func config(_ model: String, _ edit: (inout [String: Any]) -> Void) throws {
            let url = URL(fileURLWithPath: "\(model)/config.json")
            var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&cfg)
            try JSONSerialization.data(withJSONObject: cfg).write(to: url)
        }
        try fm.copyItem(atPath: Paths.fixture("tiny_hf"), toPath: "\(dir)/moe")
        try config("\(dir)/moe") { $0["model_type"] = "mixtral" }
        try assertFails(eval("\(dir)/moe"), mentioning: "model_type 'mixtral' (mixture of experts) is not supported")
        try fm.copyItem(atPath: Paths.fixture("tiny_llama3_hf"), toPath: "\(dir)/yarn")
        try config("\(dir)/yarn") { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0] }
        try assertFails(eval("\(dir)/yarn"), mentioning: "rope_scaling type 'yarn' is not supported")
        try fm.copyItem(atPath: Paths.fixture("tiny_hf"), toPath: "\(dir)/shape")
        try config("\(dir)/shape") { $0["intermediate_size"] = 48 }
        try assertFails(eval("\(dir)/shape"), mentioning: "expected [48, 32] from the model config")
        // Sizes beyond any real model, whose products (vocab × hidden) would overflow.
        try fm.copyItem(atPath: Paths.fixture("tiny_hf"), toPath: "\(dir)/huge")
        try config("\(dir)/huge") {
            $0["hidden_size"] = 1 << 40; $0["vocab_size"] = 1 << 40
        }
        try assertFails(eval("\(dir)/huge"), mentioning: "vocab_size 1099511627776 is beyond any supported model")
        // JSON nested 100,000 deep: refused by the parser's depth limit, no stack overflow.
        try fm.copyItem(atPath: Paths.fixture("tiny_hf"), toPath: "\(dir)/deep")
        try (String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000))
            .write(toFile: "\(dir)/deep/config.json", atomically: true, encoding: .utf8)
        try assertFails(eval("\(dir)/deep"), mentioning: "cannot read the model config")
        try fm.copyItem(atPath: Paths.fixture("tiny_qwen2_hf"), toPath: "\(dir)/shards")
        try fm.removeItem(atPath: "\(dir)/shards/model-00001-of-00002.safetensors")
        try assertFails(
            eval("\(dir)/shards"), mentioning: "names shard model-00001-of-00002.safetensors, which is missing")
        // GGUF: the architecture renamed (same length), and one tensor's type set to Q8_1.
        var gguf = try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("tiny_qwen2.gguf")))
        let arch = gguf.range(of: Data("qwen2".utf8))!
        gguf.replaceSubrange(arch, with: Data("gemma".utf8))
        try gguf.write(to: URL(fileURLWithPath: "\(dir)/gemma.gguf"))
        try assertFails(
            eval("\(dir)/gemma.gguf"),
            mentioning: "architecture 'gemma' (GeGLU MLP, scaled embeddings) is not supported")
        var typed = try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("tiny.gguf")))
        let name = typed.range(of: Data("blk.0.ffn_up.weight".utf8))!
        typed[name.upperBound + 4 + 16] = 9  // Q8_1: a ggml type LowRA does not read
        try typed.write(to: URL(fileURLWithPath: "\(dir)/q81.gguf"))
        try assertFails(eval("\(dir)/q81.gguf"), mentioning: "has type Q8_1, which LowRA cannot read")
    }

    func testTokenizeAndEvalJSON() throws {
        let dir = try temporaryDirectory(self)
        try "First Citizen: hear me speak.".write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let tok = try runProcess(
            Paths.lowraBinary, ["tokenize", "--model", Paths.fixture("tiny.gguf"), "--file", "\(dir)/t.txt", "--json"])
        XCTAssertEqual(tok.status, 0, tok.err)
        let ids = try JSONSerialization.jsonObject(with: Data(tok.out.utf8)) as! [Int]
        XCTAssertFalse(ids.isEmpty)
        let ev = try runProcess(
            Paths.lowraBinary, ["eval", "--model", Paths.fixture("tiny.gguf"), "--data", "\(dir)/t.txt", "--json"])
        XCTAssertEqual(ev.status, 0, ev.err)
        let obj = try JSONSerialization.jsonObject(with: Data(ev.out.utf8)) as! [String: Any]
        XCTAssertEqual(obj["tokens"] as? Int, ids.count)
        XCTAssertGreaterThan(obj["perplexity"] as? Double ?? 0, 1)
        XCTAssertNotNil(obj["accuracy"] as? Double)
    }

    /// `bench decode --path`: every path this CPU runs measured in one run, each row naming its path;
    /// a path the CPU lacks or an unknown name is refused.
    func testBenchDecodeComparesPaths() throws {
        let dir = try temporaryDirectory(self)
        var r = try runProcess(
            Paths.lowraBinary,
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", "\(dir)/q", "--init", "none"])
        XCTAssertEqual(r.status, 0, r.err)
        let names = KernelPath.all.map { KernelPath.name($0) }
        r = try runProcess(
            Paths.lowraBinary,
            [
                "bench", "decode", "--model", "\(dir)/q", "--path", names.joined(separator: ","), "--rounds", "1",
                "--prefill", "8", "--decode", "4", "--json",
            ])
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let rows = obj["models"] as! [[String: Any]]
        XCTAssertEqual(rows.compactMap { $0["kernel_path"] as? String }, KernelPath.all.map { KernelPath.variant($0) })
        XCTAssertTrue(rows.allSatisfy { ($0["decode_tokens_per_s"] as? Double ?? 0) > 0 })
        let lacking = (0..<4).first { !KernelPath.supported($0) }.map { KernelPath.name($0) } ?? "avx9"
        for bad in [lacking, "avx9"] {
            r = try runProcess(Paths.lowraBinary, ["bench", "decode", "--model", "\(dir)/q", "--path", bad])
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.err.contains("--path"), r.err)
        }
    }

    /// `quantize --reconstruct`: the packed model reconstructed in place against its source on the
    /// calibration text — closer to the source (lower KL) than the same quantization without it,
    /// with its record (reconstruction.json), its initial adapter trained beside it, and a report
    /// in the JSON; `lowra reconstruct` refuses an output that is not a quantized model.
    func testQuantizeWithReconstruction() throws {
        let dir = try temporaryDirectory(self)
        let text = (0..<60).map { "line \($0): the quick brown fox jumps over the lazy dog." }.joined(separator: "\n")
        try text.write(toFile: "\(dir)/cal.txt", atomically: true, encoding: .utf8)
        func quantize(_ out: String, _ extra: [String]) throws -> [String: Any] {
            let r = try runProcess(
                Paths.lowraBinary,
                [
                    "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", out, "--calibration",
                    "\(dir)/cal.txt", "--calibration-tokens", "512", "--init", "zeros", "--rank", "4", "--json",
                ] + extra)
            XCTAssertEqual(r.status, 0, r.err)
            return try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        }
        func kl(_ q: String) throws -> Double {
            let ev = try runProcess(
                Paths.lowraBinary,
                [
                    "eval", "--model", q, "--no-adapter", "--data", "\(dir)/cal.txt", "--reference",
                    Paths.fixture("tiny.gguf"), "--context", "32", "--json",
                ])
            XCTAssertEqual(ev.status, 0, ev.err)
            return try XCTUnwrap(
                (try JSONSerialization.jsonObject(with: Data(ev.out.utf8)) as! [String: Any])["kl_divergence"]
                    as? Double)
        }
        _ = try quantize("\(dir)/plain", [])
        let obj = try quantize("\(dir)/rec", ["--reconstruct"])
        let blocks = try XCTUnwrap(obj["reconstruction"] as? [[String: Any]])
        XCTAssertFalse(blocks.isEmpty)
        XCTAssertNotNil(blocks[0]["loss_before"] as? Double)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/rec/reconstruction.json"))
        let adapter = try String(contentsOfFile: "\(dir)/rec/adapter/lowra_manifest.json", encoding: .utf8)
        XCTAssertTrue(adapter.contains("zeros+reconstruct"), adapter)  // --init zeros: its factors trained too
        XCTAssertLessThan(try kl("\(dir)/rec"), try kl("\(dir)/plain"))
        try "not a model".write(toFile: "\(dir)/file.txt", atomically: true, encoding: .utf8)
        let refused = try runProcess(
            Paths.lowraBinary,
            [
                "reconstruct", "--model", "\(dir)/rec", "--calibration", "\(dir)/cal.txt", "--out", dir, "--sequences",
                "2", "--tokens", "16",
            ])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.err.contains("not a LowRA quantized model"), refused.err)
    }

    /// The calibrated pipeline from the command line: quantize with a calibration text and CLoQ,
    /// then `repair`, which installs an initial adapter closer to the source model (lower KL on the
    /// repair text) and says so in its manifest.
    func testCalibratedQuantizeAndRepair() throws {
        let dir = try temporaryDirectory(self)
        let q = "\(dir)/q"
        let text = (0..<40).map { "line \($0): the quick brown fox jumps over the lazy dog." }.joined(separator: "\n")
        try text.write(toFile: "\(dir)/cal.txt", atomically: true, encoding: .utf8)
        let r = try runProcess(
            Paths.lowraBinary,
            [
                "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", q, "--calibration",
                "\(dir)/cal.txt", "--init", "cloq", "--rank", "4", "--loftq-steps", "2", "--json",
            ])
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual((obj["calibration"] as? String)?.contains("error feedback"), true)
        func kl() throws -> Double {
            let ev = try runProcess(
                Paths.lowraBinary,
                [
                    "eval", "--model", q, "--data", "\(dir)/cal.txt", "--reference", Paths.fixture("tiny.gguf"),
                    "--context", "32", "--json",
                ])
            XCTAssertEqual(ev.status, 0, ev.err)
            return try XCTUnwrap(
                (try JSONSerialization.jsonObject(with: Data(ev.out.utf8)) as! [String: Any])["kl_divergence"]
                    as? Double)
        }
        let before = try kl()
        let rep = try runProcess(
            Paths.lowraBinary,
            ["repair", "--model", q, "--data", "\(dir)/cal.txt", "--steps", "8", "--seq", "32", "--lr", "0.01"])
        XCTAssertEqual(rep.status, 0, rep.err)
        XCTAssertLessThan(try kl(), before)
        let manifest = try String(contentsOfFile: "\(q)/adapter/lowra_manifest.json", encoding: .utf8)
        XCTAssertTrue(manifest.contains("cloq+repair"), manifest)
        try assertFails(
            [
                "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", "\(dir)/q2",
                "--init", "cloq", "--calibration", "none",
            ], mentioning: "--calibration")
    }

    /// An adapter fine-tuned with the base's scales and levels (`finetune --scale-lr --codebook-lr`)
    /// carries its tuned base: eval applies it (another perplexity than the same adapter over the
    /// untouched base), serve and an adapter-only export refuse it, and `repair --scale-lr` rewrites
    /// the model with tuned scales.
    func testFinetuneOverATunedBase() throws {
        let dir = try temporaryDirectory(self)
        let (q, a) = ("\(dir)/q", "\(dir)/a")
        let text = (0..<40).map { "line \($0): the quick brown fox jumps over the lazy dog." }.joined(separator: "\n")
        try text.write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let quantize = try runProcess(
            Paths.lowraBinary,
            [
                "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", q, "--calibration", "none",
                "--rank", "4",
            ])
        XCTAssertEqual(quantize.status, 0, quantize.err)
        let ft = try runProcess(
            Paths.lowraBinary,
            [
                "finetune", "--model", q, "--train", "\(dir)/t.txt", "--out", a, "--steps", "6", "--seq", "32",
                "--batch", "2", "--lr", "0.01", "--scale-lr", "0.05", "--codebook-lr", "0.01",
            ])
        XCTAssertEqual(ft.status, 0, ft.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(a)/\(AdapterStore.tunedBaseFile)"))
        func perplexity(_ adapter: String) throws -> (Double, String) {
            let ev = try runProcess(
                Paths.lowraBinary,
                ["eval", "--model", q, "--adapter", adapter, "--data", "\(dir)/t.txt", "--context", "32"])
            XCTAssertEqual(ev.status, 0, ev.err)
            let value = try XCTUnwrap(Double(try XCTUnwrap(ev.out.split(separator: " ").dropFirst().first)))
            return (value, ev.err)
        }
        let (tuned, line) = try perplexity(a)
        XCTAssertTrue(line.contains("over its tuned base"), line)
        try FileManager.default.copyItem(atPath: a, toPath: "\(dir)/plain")
        try FileManager.default.removeItem(atPath: "\(dir)/plain/\(AdapterStore.tunedBaseFile)")
        let (plain, _) = try perplexity("\(dir)/plain")
        XCTAssertNotEqual(tuned, plain)
        try assertFails(["serve", "--model", q, "--adapter", a, "--port", "0"], mentioning: "tuned base")
        try assertFails(
            [
                "finetune", "--model", q, "--train", "\(dir)/t.txt", "--out", "\(dir)/a2", "--adapter", a,
                "--steps", "1", "--seq", "32",
            ],
            mentioning: "tuned base")
        let shelf = "\(dir)/shelf"
        try FileManager.default.createDirectory(atPath: shelf, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: a, toPath: "\(shelf)/a")
        let loaded = try LoadedModel.load(q)
        let s = try AdapterShelf(
            directory: shelf, config: loaded.config, fingerprint: try baseFingerprint(q), minEvalTokens: 0,
            capBytes: 1 << 30, maxAdapterBytes: 1 << 30)
        XCTAssertThrowsError(try s.add("\(shelf)/a")) { XCTAssertTrue("\($0)".contains("tuned base"), "\($0)") }
        try assertFails(
            ["export", "--model", q, "--adapter", a, "--adapter-only", "--gguf", "\(dir)/a.gguf"],
            mentioning: "tuned base")
        // The scales alone, the initial adapter held (--lr 0): the model is rewritten, the adapter's factors stay.
        let before = try AdapterStore.load("\(q)/adapter", config: loaded.config, fingerprint: try baseFingerprint(q)).0
        let rep = try runProcess(
            Paths.lowraBinary,
            [
                "repair", "--model", q, "--data", "\(dir)/t.txt", "--steps", "4", "--seq", "32", "--lr", "0",
                "--scale-lr", "0.05",
            ])
        XCTAssertEqual(rep.status, 0, rep.err)
        let manifest = try String(contentsOfFile: "\(q)/adapter/lowra_manifest.json", encoding: .utf8)
        XCTAssertTrue(manifest.contains("+repair+scales"), manifest)
        let after = try AdapterStore.load("\(q)/adapter", config: loaded.config, fingerprint: try baseFingerprint(q)).0
        XCTAssertEqual(after.values, before.values)
        let (tunedScales, loadedScales) = (
            try LoadedModel.load(q).model.weights.blocks[0][.q].packed!.absmax,
            loaded.model.weights.blocks[0][.q].packed!.absmax
        )
        XCTAssertNotEqual(tunedScales, loadedScales)
        try assertFails(
            ["repair", "--model", q, "--data", "\(dir)/t.txt", "--steps", "2", "--seq", "32", "--lr", "0"],
            mentioning: "--lr must be positive")
    }

    /// The calibrated ablation's cells end to end on a tiny model: each method's quantize, the
    /// repair before fine-tuning (lowra-repair, lowra-distill) and distillation in it.
    func testCalibratedExperimentCells() throws {
        let dir = try temporaryDirectory(self)
        let text = (0..<60).map { "verse \($0): what light through yonder window breaks" }.joined(separator: "\n")
        for f in ["train", "valid", "test", "cal"] {
            try text.write(toFile: "\(dir)/\(f).txt", atomically: true, encoding: .utf8)
        }
        let methods = ["lowra-diag", "lowra-gptq", "lowra-fisher", "lowra-cloq", "lowra-repair", "lowra-distill"]
        let r = try runProcess(
            Paths.lowraBinary,
            [
                "experiment", "--model", Paths.fixture("tiny.gguf"), "--methods", methods.joined(separator: ","),
                "--bits", "2", "--steps", "2", "--rank", "2", "--seq", "16", "--batch", "1", "--eval-tokens", "64",
                "--train", "\(dir)/train.txt", "--valid", "\(dir)/valid.txt", "--test", "\(dir)/test.txt",
                "--calibration", "\(dir)/cal.txt", "--calibration-tokens", "256", "--repair-steps", "2",
                "--out", "\(dir)/x",
            ])
        XCTAssertEqual(r.status, 0, r.err)
        let results =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/x/results.json"))) as! [String: Any]
        let cells = try XCTUnwrap(results["cells"] as? [[String: Any]])
        XCTAssertEqual(cells.map { $0["method"] as? String }, methods)
        for c in cells { XCTAssertEqual(c["status"] as? String, "ok", "\(c)") }
        for m in ["lowra-repair", "lowra-distill"] {
            XCTAssertTrue(
                FileManager.default.fileExists(atPath: "\(dir)/x/cells/\(m)-2/repair/adapter_model.safetensors"))
        }
        let distilled = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/x/cells/lowra-distill-2/adapter/lowra_manifest.json")))
        let training = (distilled as? [String: Any])?["training"] as? [String: Any]
        XCTAssertEqual((training?["options"] as? [String: Any])?["distill_weight"] as? Double, 0.5)
        XCTAssertNotNil(training?["teacher"] as? String)
        try assertFails(
            [
                "experiment", "--model", Paths.fixture("tiny.gguf"), "--methods", "lowra-cloq", "--train",
                "\(dir)/train.txt", "--valid", "\(dir)/valid.txt", "--test", "\(dir)/test.txt", "--out", "\(dir)/y",
            ], mentioning: "--calibration")
    }

    func testQuantizeThenEvalAndInspect() throws {
        let dir = try temporaryDirectory(self)
        let q = "\(dir)/q"
        let r = try runProcess(
            Paths.lowraBinary,
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "1.75", "--out", q, "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let code = try XCTUnwrap(obj["code_bits_per_param"] as? Double)
        XCTAssertTrue(code <= 1.75 && code >= 1.74, "\(code)")
        XCTAssertGreaterThan(obj["stored_bits_per_param"] as? Double ?? 0, code)
        let fileBytes = try XCTUnwrap(obj["file_bytes"] as? Int)
        XCTAssertEqual(
            fileBytes, try FileManager.default.attributesOfItem(atPath: "\(q)/model.safetensors")[.size] as? Int)
        XCTAssertGreaterThan(obj["file_bits_per_param"] as? Double ?? 0, 0)
        XCTAssertNotNil(obj["seconds"] as? Double)
        // The default recipe (from the repository, where setup wrote data/calibration.txt): calibrated
        // on the generic text with error feedback, Fisher-weighted 1/2/4-bit channels, CLoQ.
        XCTAssertEqual(obj["init"] as? String, "cloq")
        let calibration = try XCTUnwrap(obj["calibration"] as? String)
        XCTAssertTrue(
            calibration.hasPrefix("calibration.txt") && calibration.contains("error feedback")
                && calibration.contains("Fisher"), calibration)
        try "First Citizen: hear me speak.".write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let ev = try runProcess(Paths.lowraBinary, ["eval", "--model", q, "--data", "\(dir)/t.txt", "--json"])
        XCTAssertEqual(ev.status, 0, ev.err)
        let ins = try runProcess(Paths.lowraBinary, ["inspect", "--model", q])
        XCTAssertTrue(ins.out.contains("code 1.7"), ins.out)
        try assertFails(
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "1.5", "--method", "qlora", "--out", q],
            mentioning: "2 bits or more")
        try assertFails(
            ["quantize", "--model", q, "--bits", "2", "--out", "\(dir)/qq"], mentioning: "already quantized")
        try #"{"version":1,"layers":{}}"#.write(toFile: "\(dir)/map.json", atomically: true, encoding: .utf8)
        try assertFails(
            [
                "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--precision-map", "\(dir)/map.json",
                "--out", "\(dir)/q2",
            ], mentioning: "precision map")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/q2"), "nothing may be left in --out")
        try assertFails(
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "4.5", "--out", "\(dir)/q3"],
            mentioning: "between 1 and 4")
        // --head-bits 4: the (tied) head written as Q4_0 blocks of the source rows, counted apart.
        let h4 = try runProcess(
            Paths.lowraBinary,
            [
                "quantize", "--model", Paths.fixture("tiny_hf"), "--bits", "2", "--head-bits", "4", "--out",
                "\(dir)/h4", "--json",
            ])
        XCTAssertEqual(h4.status, 0, h4.err)
        let h4obj = try JSONSerialization.jsonObject(with: Data(h4.out.utf8)) as! [String: Any]
        XCTAssertEqual(h4obj["head_encoding"] as? String, "Q4_0")
        XCTAssertEqual(h4obj["head_bits_per_param"] as? Double, 4.5)
        let src = try LoadedModel.load(Paths.fixture("tiny_hf")).model.weights.embedding
        let head = try LoadedModel.load("\(dir)/h4").model.weights.embedding
        XCTAssertEqual(head.storedType, .q4_0)
        var expected = [UInt8](repeating: 0, count: src.outFeatures * src.inFeatures / 32 * 18)
        src.weight.withUnsafeBufferPointer { w in
            expected.withUnsafeMutableBytes {
                quantizeGGML(.q4_0, w.baseAddress!, count: src.outFeatures * src.inFeatures, into: $0.baseAddress!)
            }
        }
        var decoded = [Float](repeating: 0, count: expected.count / 18 * 32)
        expected.withUnsafeBytes { e in
            decoded.withUnsafeMutableBufferPointer {
                dequantizeGGML(.q4_0, e.baseAddress!, $0.baseAddress!, count: $0.count)
            }
        }
        XCTAssertEqual(head.weight, decoded)
        let ev4 = try runProcess(Paths.lowraBinary, ["eval", "--model", "\(dir)/h4", "--data", "\(dir)/t.txt"])
        XCTAssertEqual(ev4.status, 0, ev4.err)
        try assertFails(
            ["quantize", "--model", Paths.fixture("tiny_hf"), "--bits", "2", "--head-bits", "6", "--out", "\(dir)/h6"],
            mentioning: "--head-bits takes 4, 8 or 16")
        try assertFails(
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", dir],
            mentioning: "not a LowRA quantized model")
    }

    private func csvColumns(_ path: String, _ names: [String]) throws -> [[String]] {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        }
        let idx = names.map { lines[0].firstIndex(of: $0)! }
        return lines.dropFirst().map { row in idx.map { row[$0] } }
    }

    /// The tiny model quantized to 2 bits with a rank-4 LoftQ adapter, through the CLI, in DIR/q.
    private func quantizeTiny(_ dir: String) throws -> String {
        let q = "\(dir)/q"
        let quant = try runProcess(
            Paths.lowraBinary,
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", q, "--rank", "4", "--json"])
        XCTAssertEqual(quant.status, 0, quant.err)
        return q
    }

    /// A training run that diverges stops with its own exit status (`LowRAError.divergedExitStatus`),
    /// which is how `lowra experiment` tells "did not converge" from a failure without reading text.
    func testDivergedTrainingHasItsOwnExitStatus() throws {
        let dir = try temporaryDirectory(self)
        let q = try quantizeTiny(dir)
        let text = String(repeating: "First Citizen:\nBefore we proceed any further, hear me speak.\n", count: 12)
        try text.write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let r = try runProcess(
            Paths.lowraBinary,
            [
                "finetune", "--model", q, "--train", "\(dir)/t.txt", "--steps", "20", "--seq", "32", "--batch", "2",
                "--lr", "1e30", "--max-grad-norm", "0", "--out", "\(dir)/ft",
            ])
        XCTAssertEqual(r.status, LowRAError.divergedExitStatus, r.err)
        XCTAssertTrue(r.err.contains("Error: training diverged"), r.err)
    }

    /// quantize --init loftq → finetune killed with SIGKILL → finetune --resume finishes with the
    /// same losses as an uninterrupted run; eval applies the initial and the trained adapter.
    func testFinetuneKillAndResume() throws {
        let dir = try temporaryDirectory(self)
        let q = try quantizeTiny(dir)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(q)/adapter/adapter_model.safetensors"))
        let text = String(
            repeating: "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n", count: 12
        )
        try text.write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let args = [
            "finetune", "--model", q, "--train", "\(dir)/t.txt", "--valid", "\(dir)/t.txt", "--steps", "300", "--seq",
            "64",
            "--batch", "8", "--save-every", "10", "--lr", "3e-3", "--seed", "3", "--json",
        ]
        let whole = try runProcess(Paths.lowraBinary, args + ["--out", "\(dir)/whole"])
        XCTAssertEqual(whole.status, 0, whole.err)

        // Kill -9 as soon as the first checkpoint is on disk.
        let out = "\(dir)/killed"
        let p = try startLowra(args + ["--out", out])
        while p.isRunning && !FileManager.default.fileExists(atPath: "\(out)/checkpoint.safetensors") { usleep(1000) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(
            p.terminationReason, .uncaughtSignal, "the run finished before it could be killed; make it longer")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(out)/adapter_model.safetensors"))
        try assertFails(args + ["--out", out], mentioning: "--resume")
        // More kill points, each on a resumed run: just after a newer checkpoint landed, and at
        // random moments (mid-step, mid-checkpoint write); every one must leave a resumable state.
        var rng = SplitMix64(seed: 11)
        for round in 0..<4 {
            let checkpoint = "\(out)/checkpoint.safetensors"
            let before = try FileManager.default.attributesOfItem(atPath: checkpoint)[.modificationDate] as? Date
            let again = try startLowra(args + ["--out", out, "--resume"])
            if round == 0 {
                func modified() -> Date? {
                    try? FileManager.default.attributesOfItem(atPath: checkpoint)[.modificationDate] as? Date
                }
                while again.isRunning, modified() == before {
                    usleep(1000)
                }
            } else {
                usleep(UInt32(50_000 + rng.next() % 250_000))
            }
            kill(again.processIdentifier, SIGKILL)
            again.waitUntilExit()
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(out)/adapter_model.safetensors"), "round \(round)")
        }
        let resumed = try runProcess(Paths.lowraBinary, args + ["--out", out, "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.err)
        let a = try JSONSerialization.jsonObject(with: Data(whole.out.utf8)) as! [String: Any]
        let b = try JSONSerialization.jsonObject(with: Data(resumed.out.utf8)) as! [String: Any]
        XCTAssertNotNil(b["resumed_from"] as? Int)
        XCTAssertEqual(a["final_train_loss"] as? Double, b["final_train_loss"] as? Double)
        XCTAssertEqual(a["valid_loss_after"] as? Double, b["valid_loss_after"] as? Double)
        let cols = ["step", "lr", "train_loss", "grad_norm", "valid_loss"]
        XCTAssertEqual(try csvColumns("\(dir)/whole/train_log.csv", cols), try csvColumns("\(out)/train_log.csv", cols))
        XCTAssertLessThan(a["valid_loss_after"] as! Double, a["valid_loss_before"] as! Double)

        // The adapter applies in eval; another base or a changed configuration is refused.
        let initial = try runProcess(
            Paths.lowraBinary, ["eval", "--model", q, "--data", "\(dir)/t.txt", "--json", "--context", "64"])
        let trained = try runProcess(
            Paths.lowraBinary,
            ["eval", "--model", q, "--data", "\(dir)/t.txt", "--json", "--context", "64", "--adapter", out])
        let none = try runProcess(
            Paths.lowraBinary,
            ["eval", "--model", q, "--data", "\(dir)/t.txt", "--json", "--context", "64", "--no-adapter"])
        let ppl = try [initial, trained, none].map { r -> Double in
            XCTAssertEqual(r.status, 0, r.err)
            return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["perplexity"] as! Double
        }
        XCTAssertLessThan(ppl[1], ppl[0])
        XCTAssertNotEqual(ppl[0], ppl[2])
        let q3 = "\(dir)/q3"
        XCTAssertEqual(
            try runProcess(
                Paths.lowraBinary,
                [
                    "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "3", "--out", q3, "--init", "zeros",
                    "--rank", "4",
                ]
            ).status, 0)
        try assertFails(
            ["eval", "--model", q3, "--data", "\(dir)/t.txt", "--adapter", out], mentioning: "another base")
        try assertFails(
            [
                "finetune", "--model", q3, "--train", "\(dir)/t.txt", "--out", "\(dir)/x", "--adapter", out, "--seq",
                "32",
            ], mentioning: "another base")
        try assertFails(args + ["--out", out, "--resume", "--lr", "1e-3"], mentioning: "another run")
        try assertFails(
            ["finetune", "--model", q, "--train", "\(dir)/t.txt", "--out", "\(dir)/y", "--seq", "65"],
            mentioning: "context")
        try assertFails(
            ["finetune", "--model", q, "--train", "\(dir)/t.txt", "--out", "\(dir)/y", "--rank", "8", "--seq", "32"],
            mentioning: "rank")
        try "".write(toFile: "\(dir)/empty.txt", atomically: true, encoding: .utf8)
        try assertFails(
            ["finetune", "--model", q, "--train", "\(dir)/empty.txt", "--out", "\(dir)/y", "--seq", "32"],
            mentioning: "empty")
        try #"{"prompt": "hi"}"#.write(toFile: "\(dir)/d.jsonl", atomically: true, encoding: .utf8)
        try assertFails(
            ["finetune", "--model", q, "--train", "\(dir)/d.jsonl", "--out", "\(dir)/y", "--seq", "32"],
            mentioning: "response")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/y/adapter_model.safetensors"))
    }

    /// A small sweep on the tiny model: every cell recorded (unsupported ones too), the report
    /// written, and --resume reusing the cached cells.
    func testMemoryConfigs() throws {
        func totals(_ args: [String]) throws -> [Int] {
            let r = try runProcess(Paths.lowraBinary, ["memory"] + args + ["--bits", "2", "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
            return (obj["rows"] as! [[String: Any]]).map { $0["total_bytes"] as! Int }
        }
        // A config.json gives the footprint of the model directory it belongs to, but for the
        // weights a config models as 16-bit and this model stores in fp32: the (tied) embedding,
        // and in the unquantized row the linear layers.
        let fromConfig = try totals(["--config", Paths.fixture("tiny_hf") + "/config.json"])
        let fromModel = try totals(["--model", Paths.fixture("tiny_hf")])
        let cfg = try LoadedModel.readConfig(Paths.fixture("tiny_hf") + "/config.json")
        let linear = MemoryModel(config: cfg, bits: nil, rank: 1).linearParameters
        let embedding = cfg.vocabSize * cfg.hiddenSize
        XCTAssertEqual(zip(fromModel, fromConfig).map { $0 - $1 }, [2 * (embedding + linear), 2 * embedding])
        // Both spellings of the built-in names; 7B fine-tuning at 2 bits needs far less than at fp32.
        let seven = try totals(["--config", "llama2-7b"])
        XCTAssertEqual(seven, try totals(["--config", "llama-2-7b"]))
        XCTAssertLessThan(Double(seven[1]), 0.5 * Double(seven[0]))
        XCTAssertGreaterThan(try totals(["--config", "llama-33b"])[1], try totals(["--config", "llama2-13b"])[1])
        try assertFails(["memory", "--config", "llama-70b"], mentioning: "--config takes")
        try assertFails(["memory", "--config", "/nonexistent/config.json"], mentioning: "no such file")
        try assertFails(
            ["memory", "--config", "llama2-7b", "--model", Paths.fixture("tiny_hf")], mentioning: "exactly one")
    }

    func testExperimentSweepAndResume() throws {
        let dir = try temporaryDirectory(self)
        let text = String(
            repeating: "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n", count: 6)
        try text.write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let out = "\(dir)/exp"
        let args = [
            "experiment", "--model", Paths.fixture("tiny.gguf"), "--methods", "none,qlora,lowra", "--bits", "2,1.5",
            "--train", "\(dir)/t.txt", "--valid", "\(dir)/t.txt", "--test", "\(dir)/t.txt", "--steps", "3", "--seq",
            "16",
            "--rank", "2", "--eval-tokens", "200", "--out", out,
        ]
        let r = try runProcess(Paths.lowraBinary, args)
        XCTAssertEqual(r.status, 0, r.err)
        let results =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(out)/results.json")))
            as! [String: Any]
        let cells = results["cells"] as! [[String: Any]]
        XCTAssertEqual(cells.map { $0["method"] as! String }, ["none", "qlora", "qlora", "lowra", "lowra"])
        XCTAssertEqual(cells[2]["status"] as? String, "unsupported")
        for c in [cells[0], cells[1], cells[3], cells[4]] {
            XCTAssertNotNil((c["after"] as? [String: Any])?["perplexity"] as? Double, "\(c)")
            XCTAssertEqual((c["loss_curve"] as? [[Double]])?.count, 3)
        }
        XCTAssertEqual(cells[4]["code_bits_per_param"] as? Double ?? 0, 1.5, accuracy: 0.01)
        for f in ["results.md", "perplexity.svg", "loss.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(out)/\(f)"), f)
        }
        try assertFails(args, mentioning: "--resume")
        try assertFails(args.map { $0 == "3" ? "4" : $0 } + ["--resume"], mentioning: "other settings")
        let again = try runProcess(Paths.lowraBinary, args + ["--resume"])
        XCTAssertEqual(again.status, 0, again.err)
        let results2 =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(out)/results.json")))
            as! [String: Any]
        XCTAssertEqual(
            (results2["cells"] as! [[String: Any]]).map { ($0["after"] as? [String: Any])?["perplexity"] as? Double },
            cells.map { ($0["after"] as? [String: Any])?["perplexity"] as? Double })

        // Adding a drift text to the finished sweep measures drift without training again; fewer
        // bits get more drift tokens; the unquantized base before training has no drift at all.
        let other = String(
            repeating: "The quick brown fox jumps over the lazy dog; a stitch in time saves nine.\n", count: 12)
        try other.write(toFile: "\(dir)/other.txt", atomically: true, encoding: .utf8)
        // Resumes the sweep measuring drift on `tokens` tokens and returns its cells.
        func resumeWithDrift(tokens: Int) throws -> [[String: Any]] {
            let run = try runProcess(
                Paths.lowraBinary, args + ["--resume", "--drift", "\(dir)/other.txt", "--drift-tokens", "\(tokens)"])
            XCTAssertEqual(run.status, 0, run.err)
            let results =
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(out)/results.json")))
                as! [String: Any]
            return results["cells"] as! [[String: Any]]
        }
        let cells3 = try resumeWithDrift(tokens: 40)
        XCTAssertEqual(
            cells3.map { ($0["loss_curve"] as? [[Double]]) }, cells.map { ($0["loss_curve"] as? [[Double]]) })
        func drift(_ c: [String: Any], _ k: String) -> [String: Any]? { c[k] as? [String: Any] }
        XCTAssertEqual(drift(cells3[0], "drift_before")?["kl"] as? Double ?? 1, 0, accuracy: 1e-5)
        XCTAssertEqual(drift(cells3[0], "drift_before")?["top1"] as? Double, 1)
        XCTAssertGreaterThan(drift(cells3[4], "drift_after")?["kl"] as? Double ?? 0, 0)
        XCTAssertEqual(drift(cells3[0], "drift_after")?["tokens"] as? Int, 48)  // 40 → whole windows of 16
        XCTAssertEqual(drift(cells3[4], "drift_after")?["tokens"] as? Int, 112)  // 40 × 4 / 1.5 → 112
        XCTAssertNil(drift(cells3[2], "drift_after"))
        let md = try String(contentsOfFile: "\(out)/results.md", encoding: .utf8)
        XCTAssertTrue(md.contains("## Drift from the base") && md.contains("## Which precision should I ship?"), md)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(out)/drift.svg"))
        // A different drift budget measures again.
        XCTAssertEqual(drift(try resumeWithDrift(tokens: 60)[0], "drift_after")?["tokens"] as? Int, 64)
    }
}
