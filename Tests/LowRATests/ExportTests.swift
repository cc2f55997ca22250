import Foundation
import XCTest

@testable import LowRAAdapters
@testable import LowRAIO
@testable import LowRAModel
@testable import LowRAPipeline
@testable import LowRATensor
@testable import LowRATokenizer

/// `lowra export`: the exported GGUF, read back by LowRA's own GGUF reader (which knows nothing of
/// the export), runs as the quantized model with its adapter; the adapter-only GGUF over the
/// exported base runs as the merged model. llama.cpp's side is `scripts/export_check.sh` (not CI).
final class ExportTests: XCTestCase {
    func lowra(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProcess(Paths.lowraBinary, args)
    }

    let tokens = [1, 17, 42, 5, 99, 3, 64, 28, 7, 11, 250, 33]

    func logits(_ model: LanguageModel, adapter: LoRAAdapter? = nil) throws -> [Float] {
        let cache = KVCache(config: model.config, capacity: tokens.count)
        return try model.forward(tokens, cache: cache, logits: .all, adapter: adapter)
    }

    /// A 2-bit quantized fixture with an adapter: PEFT's tiny adapter imported for the llama models
    /// (HF layout: q/k rows are reordered on export; GGUF layout: kept), the quantized model's
    /// LoftQ adapter for Qwen2 (biases). Returns the quantized directory and the adapter directory.
    func quantizedWithAdapter(_ fixture: String, in dir: String) throws -> (q: String, adapter: String) {
        let q = "\(dir)/q-\(fixture)"
        let peft = fixture != "tiny_qwen2.gguf"
        var r = try lowra(
            ["quantize", "--model", Paths.fixture(fixture), "--bits", "2", "--out", q]
                + (peft ? ["--init", "none"] : ["--init", "loftq", "--rank", "4"]))
        XCTAssertEqual(r.status, 0, r.err)
        guard peft else { return (q, "\(q)/\(AdapterStore.initialAdapterDirectory)") }
        r = try lowra(["adapter", "import", Paths.fixture("peft_tiny"), "--model", q, "--out", "\(dir)/a-\(fixture)"])
        XCTAssertEqual(r.status, 0, r.err)
        return (q, "\(dir)/a-\(fixture)")
    }

    func testExportedModelRunsAsTheQuantizedModelWithItsAdapter() throws {
        let dir = try temporaryDirectory(self)
        for fixture in ["tiny_hf", "tiny.gguf", "tiny_qwen2.gguf"] {
            let (q, adapterDir) = try quantizedWithAdapter(fixture, in: dir)
            let loaded = try LoadedModel.load(q)
            let (adapter, _) = try AdapterStore.load(
                adapterDir, config: loaded.config, fingerprint: try baseFingerprint(q))
            let want = try logits(loaded.model, adapter: adapter)
            XCTAssertGreaterThan(
                relativeL2(want, try logits(loaded.model)), 1e-3, "\(fixture): the adapter changes the logits")
            var tolerance: [GGUFExportType: Double] = [.f32: 1e-4, .f16: 2e-3, .q8_0: 2e-2]
            for type in GGUFExportType.allCases {
                let out = "\(dir)/\(fixture)-\(type.rawValue).gguf"
                let r = try lowra(
                    ["export", "--model", q, "--adapter", adapterDir, "--gguf", out, "--type", type.rawValue])
                XCTAssertEqual(r.status, 0, r.err)
                let exported = try LoadedModel.load(out)
                XCTAssertTrue(exported.format.hasPrefix("gguf"), exported.format)
                let got = try logits(exported.model)
                let err = relativeL2(got, want)
                XCTAssertLessThanOrEqual(err, tolerance[type]!, "\(fixture) \(type): relative L2 of the logits \(err)")
                tolerance[type] = nil
                // The tokenizer travels: the same ids, the same chat template.
                let text = "First Citizen: 12345 café <|im_start|> don't\n\n  x"
                XCTAssertEqual(exported.tokenizer.encode(text), loaded.tokenizer.encode(text), fixture)
                XCTAssertEqual(exported.tokenizer.chatTemplate?.source, loaded.tokenizer.chatTemplate?.source)
                XCTAssertEqual(exported.config.ropeLayout, fixture == "tiny_qwen2.gguf" ? .halfSplit : .interleaved)
            }
        }
    }

    /// The adapter-only GGUF (llama.cpp's LoRA format) applied over the base exported with
    /// --no-adapter equals the merged export; llama.cpp's scale alpha / r is the adapter's.
    func testAdapterOnlyExportOverTheBaseEqualsTheMergedModel() throws {
        let dir = try temporaryDirectory(self)
        for fixture in ["tiny_hf", "tiny_qwen2.gguf"] {
            let (q, adapterDir) = try quantizedWithAdapter(fixture, in: dir)
            let (base, lora, merged) = ("\(dir)/base.gguf", "\(dir)/lora.gguf", "\(dir)/merged.gguf")
            for args in [
                ["--no-adapter", "--gguf", base, "--type", "f32"],
                ["--adapter", adapterDir, "--gguf", merged, "--type", "f32"],
                ["--adapter", adapterDir, "--adapter-only", "--gguf", lora],
            ] {
                let r = try lowra(["export", "--model", q] + args)
                XCTAssertEqual(r.status, 0, r.err)
            }
            let file = try GGUFFile(path: lora)
            XCTAssertEqual(file.metadata["general.type"]?.string, "adapter")
            XCTAssertEqual(file.metadata["adapter.type"]?.string, "lora")
            XCTAssertEqual(file.metadata["general.architecture"]?.string, fixture == "tiny_hf" ? "llama" : "qwen2")
            let baseModel = try LoadedModel.load(base)
            let c = baseModel.config
            // Rebuild the adapter from the file as llama.cpp reads it: ne = [in, r] for A, [r, out] for B.
            let first = try XCTUnwrap(file.tensors.first { $0.name.hasSuffix(".lora_a") })
            let rank = first.dims[1]
            let alpha = Float(try XCTUnwrap(file.metadata["adapter.lora.alpha"]?.double))
            var adapter = try LoRAAdapter(config: c, rank: rank, alpha: alpha)
            var found = 0
            for s in adapter.slots {
                let name = WeightNaming.gguf.name(.weight(layer: s.layer, s.kind))
                guard let a = file.tensorInfo(name + ".lora_a") else {
                    adapter.setFactors(s, a: [Float](repeating: 0, count: rank * s.inFeatures),
                        b: [Float](repeating: 0, count: s.outFeatures * rank))
                    continue
                }
                XCTAssertEqual(a.dims, [s.inFeatures, rank], name)
                XCTAssertEqual(file.tensorInfo(name + ".lora_b")?.dims, [rank, s.outFeatures], name)
                adapter.setFactors(s, a: try file.floats(name + ".lora_a"), b: try file.floats(name + ".lora_b"))
                found += 1
            }
            XCTAssertGreaterThan(found, 0)
            let want = try logits(try LoadedModel.load(merged).model)
            let err = relativeL2(try logits(baseModel.model, adapter: adapter), want)
            XCTAssertLessThanOrEqual(err, 1e-5, "\(fixture): base + GGUF LoRA vs merged, relative L2 \(err)")
        }
    }

    /// `eval --llama-perplexity`'s scoring: only the predictions from the window's middle on, each
    /// window from an empty cache — against the logits of a plain forward of each window.
    func testScoringTheSecondHalfOfEachWindow() throws {
        let model = try LoadedModel.load(Paths.fixture("tiny.gguf")).model
        let all = Array((0..<40).map { ($0 * 37 + 5) % model.config.vocabSize })
        let r = try model.evaluate(tokens: all, context: 16, scoredFrom: 8)
        XCTAssertEqual(r.windows, 2, "the last 8 tokens reach no scored position")
        XCTAssertEqual(r.predictions, 2 * 7)
        var nll = 0.0
        for start in [0, 16] {
            let window = Array(all[start..<(start + 16)])
            let cache = KVCache(config: model.config, capacity: window.count)
            let logits = try model.forward(window, cache: cache, logits: .all)
            let v = model.config.vocabSize
            for i in 8..<(window.count - 1) {
                let row = logits[(i * v)..<((i + 1) * v)].map(Double.init)
                let m = row.max()!
                nll += m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[window[i + 1]]
            }
        }
        XCTAssertEqual(r.meanNLL, nll / Double(r.predictions), accuracy: 1e-4)
        XCTAssertThrowsError(try model.evaluate(tokens: all, context: 16, scoredFrom: 15))
    }

    /// Refusals: a LoRA without an adapter, an output that is not .gguf, a pre-tokenizer llama.cpp lacks.
    func testExportRefusals() throws {
        let dir = try temporaryDirectory(self)
        let q = "\(dir)/q"
        var r = try lowra(
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", q, "--init", "none"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try lowra(["export", "--model", q, "--adapter-only", "--gguf", "\(dir)/x.gguf"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--adapter-only needs an adapter"), r.err)
        r = try lowra(["export", "--model", q, "--gguf", "\(dir)/x.bin"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains(".gguf"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/x.gguf"))
        let tok = try LoadedModel.load(q).tokenizer
        let odd = Tokenizer(bpe: tok.bpe, preTokenizer: DigitSplitter(), addedTokens: [:], eosTokenId: nil)
        XCTAssertThrowsError(try odd.ggufMetadata(vocabularySize: tok.vocabSize)) {
            XCTAssertTrue("\($0)".contains("no llama.cpp equivalent"), "\($0)")
        }
        // Each pre-tokenizer llama.cpp names, also after the trip through tokenizer.json that a
        // quantized directory's tokenizer takes (Qwen2's comes back as Split + a regex-less ByteLevel).
        let kinds: [(String, any PreTokenizer, Bool, Bool)] = [
            ("smollm", SequencePreTokenizer([DigitSplitter(), GPT2Splitter()]), false, false),
            ("gpt2", GPT2Splitter(), false, false), ("qwen2", WordPieceSplitter(maxDigits: 1), false, true),
            ("llama-bpe", WordPieceSplitter(maxDigits: 3), true, false),
        ]
        for (name, pre, ignoreMerges, nfc) in kinds {
            let t = Tokenizer(
                bpe: tok.bpe, preTokenizer: pre, addedTokens: [:], eosTokenId: nil, ignoreMerges: ignoreMerges,
                normalizesNFC: nfc)
            let json = "\(dir)/\(name).json"
            try t.huggingFaceFiles().tokenizer.write(to: URL(fileURLWithPath: json))
            for u in [t, try Tokenizer(tokenizerJSON: json)] {
                let m = Dictionary(try u.ggufMetadata(vocabularySize: tok.vocabSize + 3)) { a, _ in a }
                XCTAssertEqual(m["tokenizer.ggml.pre"]?.string, name)
                XCTAssertEqual(m["tokenizer.ggml.tokens"]?.array?.last?.string, "[PAD\(tok.vocabSize + 2)]")
            }
        }
    }

    /// The writer's bytes, read back: every metadata type, arrays, tensor offsets aligned to 32.
    func testGGUFWriterRoundTrip() throws {
        let dir = try temporaryDirectory(self)
        var g = GGUFWriter()
        let values: [(String, GGUFValue)] = [
            ("u8", .uint8(7)), ("i8", .int8(-7)), ("u16", .uint16(700)), ("i16", .int16(-700)),
            ("u32", .uint32(70_000)),
            ("i32", .int32(-70_000)), ("f32", .float32(0.25)), ("b", .bool(true)), ("s", .string("héllo")),
            ("u64", .uint64(1 << 40)), ("i64", .int64(-(1 << 40))), ("f64", .float64(-0.125)),
            ("a", .array([.string("x"), .string("yz")])), ("ai", .array([.int32(1), .int32(-2)])),
        ]
        for (k, v) in values { g.set(k, v) }
        g.set("u8", .uint8(9))  // replaced in place
        let m = (0..<(3 * 64)).map { Float($0) / 7 - 10 }
        try g.add("m16", shape: [3, 64], type: .f16) {
            var h = [UInt16](repeating: 0, count: m.count)
            halvesFromFloats(m, into: &h, count: m.count)
            return h.withUnsafeBytes { Array($0) }
        }
        try g.add("v", shape: [5], type: .f32) { [Float](repeating: 1.5, count: 5).withUnsafeBytes { Array($0) } }
        try g.add("q", shape: [2, 64], type: .q8_0) {
            var b = [UInt8](repeating: 0, count: 2 * 2 * 34)
            quantizeGGML(.q8_0, Array(m.prefix(128)), count: 128, into: &b)
            return b
        }
        XCTAssertThrowsError(try g.add("bad", shape: [2, 30], type: .q8_0) { [] })
        try g.write(to: "\(dir)/t.gguf")
        let f = try GGUFFile(path: "\(dir)/t.gguf")
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f.metadata["u8"]?.int, 9)
        XCTAssertEqual(f.metadata["i16"]?.int, -700)
        XCTAssertEqual(f.metadata["i64"]?.int, -(1 << 40))
        XCTAssertEqual(f.metadata["f32"]?.double, 0.25)
        XCTAssertEqual(f.metadata["f64"]?.double, -0.125)
        XCTAssertEqual(f.metadata["s"]?.string, "héllo")
        XCTAssertEqual(f.metadata["b"]?.bool, true)
        XCTAssertEqual(f.metadata["a"]?.array?.compactMap(\.string), ["x", "yz"])
        XCTAssertEqual(f.metadata["ai"]?.array?.compactMap(\.int), [1, -2])
        XCTAssertEqual(f.tensors.map(\.name), ["m16", "v", "q"])
        XCTAssertTrue(f.tensors.allSatisfy { $0.offset % 32 == 0 })
        XCTAssertEqual(try f.floats("v"), [Float](repeating: 1.5, count: 5))
        let back = try f.floats("m16")
        XCTAssertEqual(back.count, m.count)
        for (x, y) in zip(back, m) { XCTAssertEqual(x, y, accuracy: 0.01) }
        XCTAssertEqual(try f.matrix("q").rows, 2)
        // A produce closure that makes the wrong number of bytes fails the write; nothing is left behind.
        var bad = GGUFWriter()
        try bad.add("v", shape: [4], type: .f32) { [0, 0, 0] }
        XCTAssertThrowsError(try bad.write(to: "\(dir)/bad.gguf"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/bad.gguf"))
    }
}
