import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRAQuant
@testable import LowRATensor
@testable import LowRAPipeline

final class ModelTests: XCTestCase {
    private func expectedLogits(_ name: String) throws -> (tokens: [Int], vocab: Int, logits: [Double]) {
        let root = try loadJSON("tiny_logits.json") as! [String: Any]
        let m = (root["models"] as! [String: [String: Any]])[name]!
        return (root["tokens"] as! [Int], m["vocab"] as! Int, (m["logits"] as! [NSNumber]).map(\.doubleValue))
    }

    /// Logits of the tiny random models equal the float64 numpy reference: Hugging Face layout
    /// (half-split RoPE), GGUF layout (permuted Q/K, interleaved RoPE), GQA, tied and untied
    /// heads, q/k/v bias, F32 and F16 weights.
    func testTinyModelsMatchNumpyReference() throws {
        for name in ["tiny_hf", "tiny.gguf", "tiny_hf_bias_f16"] {
            let loaded = try LoadedModel.load(Paths.fixture(name))
            let (tokens, vocab, want) = try expectedLogits(name)
            XCTAssertEqual(loaded.config.vocabSize, vocab)
            XCTAssertEqual(loaded.config.ropeLayout, name.hasSuffix(".gguf") ? .interleaved : .halfSplit)
            let cache = KVCache(config: loaded.config, capacity: tokens.count)
            let got = try loaded.model.forward(tokens, cache: cache, logits: .all)
            XCTAssertEqual(got.count, want.count)
            let (diff, at) = maxRelativeDifference(got, want)
            XCTAssertLessThanOrEqual(
                diff, 1e-4, "\(name): largest difference \(diff) at \(at): \(got[at]) vs \(want[at])")
        }
        let bias = try LoadedModel.load(Paths.fixture("tiny_hf_bias_f16")).config
        XCTAssertTrue(bias.attentionBias)
        XCTAssertFalse(bias.tieWordEmbeddings)
    }

    /// The other families' tiny random models equal the float64 numpy reference in both layouts:
    /// Qwen2 (bias by family default, untied head, RoPE base 1e6, a sharded bf16 checkpoint with its
    /// index; a qwen2 GGUF with half-split rows) and Llama 3 (rope_scaling llama3 in config.json;
    /// rope_freqs.weight and permuted Q/K in the GGUF).
    func testFamilyModelsMatchNumpyReference() throws {
        let root = try loadJSON("families_logits.json") as! [String: Any]
        let tokens = root["tokens"] as! [Int]
        let models = root["models"] as! [String: [String: Any]]
        XCTAssertEqual(models.count, 4)
        for (name, spec) in models.sorted(by: { $0.key < $1.key }) {
            let loaded = try LoadedModel.load(Paths.fixture(name))
            let want = (spec["logits"] as! [NSNumber]).map(\.doubleValue)
            let got = try loaded.model.forward(tokens, cache: KVCache(config: loaded.config, capacity: tokens.count))
            XCTAssertEqual(got.count, want.count, name)
            let (diff, at) = maxRelativeDifference(got, want)
            XCTAssertLessThanOrEqual(
                diff, 1e-4, "\(name): largest difference \(diff) at \(at): \(got[at]) vs \(want[at])")
            let c = loaded.config
            if name.hasPrefix("tiny_qwen2") {
                XCTAssertEqual(c.modelType, "qwen2")
                XCTAssertTrue(c.attentionBias)
                XCTAssertEqual(c.ropeLayout, .halfSplit)
            } else {
                XCTAssertEqual(c.ropeLayout, name.hasSuffix(".gguf") ? .interleaved : .halfSplit)
                XCTAssertTrue(c.ropeScaling?.kind == .llama3 || c.ropeFrequencyFactors != nil, name)
            }
        }
        // Without its rope_scaling, the Llama 3 model's logits move: the key is not ignored.
        var plain = try LoadedModel.load(Paths.fixture("tiny_llama3_hf"))
        var config = plain.config
        config.ropeScaling = nil
        plain.model = try LanguageModel(config: config, weights: plain.model.weights)
        let got = try plain.model.forward(tokens, cache: KVCache(config: config, capacity: tokens.count))
        let want = (models["tiny_llama3_hf"]!["logits"] as! [NSNumber]).map(\.doubleValue)
        XCTAssertGreaterThan(maxRelativeDifference(got, want).0, 1e-2)
    }

    /// A quantized directory keeps the family: its config.json round-trips and its forward is
    /// the packed model's.
    func testQuantizedFamilyModelsKeepTheirConfig() throws {
        for name in ["tiny_qwen2.gguf", "tiny_llama3.gguf", "tiny_llama3_hf"] {
            let src = try LoadedModel.load(Paths.fixture(name))
            let (w, map, report, _) = try src.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2))
            let dir = "\(try temporaryDirectory(self))/q"
            try QuantizedModelStore.save(
                to: dir, config: src.config, weights: w, tokenizer: src.tokenizer, map: map,
                manifest: QuantManifest(source: name, sourceSHA256: "-", report: report))
            let q = try LoadedModel.load(dir)
            XCTAssertEqual(q.config, src.config, name)
            let tokens = [5, 17, 40, 2, 99, 3]
            let a = try LanguageModel(config: src.config, weights: w).forward(
                tokens, cache: KVCache(config: src.config, capacity: 8))
            let b = try q.model.forward(tokens, cache: KVCache(config: q.config, capacity: 8))
            XCTAssertEqual(a, b, name)
        }
    }

    /// Decoding one token at a time through the KV cache gives the prefill's logits, up to the
    /// cache's f16 rounding of keys and values (2⁻¹¹ relative; 4·10⁻³ of the logits at most on
    /// this random model). fp32 activations: the tiny model's weights are F32/F16, not Q8_0.
    func testIncrementalDecodeMatchesPrefill() throws {
        let loaded = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        loaded.model.activations = .float
        let (tokens, vocab, _) = try expectedLogits("tiny.gguf")
        let full = try loaded.model.forward(tokens, cache: KVCache(config: loaded.config, capacity: 32), logits: .all)
        let cache = KVCache(config: loaded.config, capacity: 32)
        var rows = try loaded.model.forward(Array(tokens.prefix(5)), cache: cache, logits: .all)
        for t in tokens.dropFirst(5) { rows += try loaded.model.forward([t], cache: cache, logits: .last) }
        let (diff, at) = maxRelativeDifference(rows, full.map(Double.init))
        XCTAssertLessThanOrEqual(diff, 1e-2, "largest difference \(diff) at row \(at / vocab)")
        XCTAssertLessThanOrEqual(relativeL2(rows, full), 1e-3)
        // The first 5 rows, prefilled from an empty cache, read no f16 keys: fp32 agreement.
        XCTAssertLessThanOrEqual(
            maxRelativeDifference(Array(rows.prefix(5 * vocab)), full.prefix(5 * vocab).map(Double.init)).0, 1e-5)
    }

    func testGreedyGenerationIsDeterministicAndSeededSamplingReproducible() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        let a = try m.generate(prompt: [5, 6, 7], maxNewTokens: 8, sampling: SamplingOptions(temperature: 0), eos: nil)
        let b = try m.generate(prompt: [5, 6, 7], maxNewTokens: 8, sampling: SamplingOptions(temperature: 0), eos: nil)
        XCTAssertEqual(a.tokens, b.tokens)
        XCTAssertEqual(a.tokens.count, 8)
        let s = SamplingOptions(temperature: 1, topK: 20, topP: 0.9, seed: 42)
        XCTAssertEqual(
            try m.generate(prompt: [5], maxNewTokens: 10, sampling: s, eos: nil).tokens,
            try m.generate(prompt: [5], maxNewTokens: 10, sampling: s, eos: nil).tokens)
    }

    /// Sampling without top-k or top-p draws each token with its softmax probability (seeded, so
    /// the counts are fixed; 40,000 draws, every count within 4 standard deviations).
    func testSamplerFollowsTheSoftmax() {
        let logits: [Float] = [0, 3, 1, 2.9, -1, 0.5]
        let t: Float = 0.8
        let e = logits.map { exp(Double($0 / t)) }
        let p = e.map { $0 / e.reduce(0, +) }
        var sampler = Sampler(SamplingOptions(temperature: t, seed: 3))
        var counts = [Int](repeating: 0, count: logits.count)
        let n = 40_000
        for _ in 0..<n { counts[sampler.sample(logits[...])] += 1 }
        for i in logits.indices {
            let sd = (Double(n) * p[i] * (1 - p[i])).squareRoot()
            XCTAssertEqual(Double(counts[i]), Double(n) * p[i], accuracy: 4 * sd, "token \(i)")
        }
    }

    func testSamplerRespectsTopK() {
        var sampler = Sampler(SamplingOptions(temperature: 5, topK: 2, seed: 1))
        let logits: [Float] = [0, 3, 1, 2.9, -1]
        for _ in 0..<200 { XCTAssertTrue([1, 3].contains(sampler.sample(logits[...]))) }
    }

    func testEvaluatePerplexityAgreesWithLogits() throws {
        let loaded = try LoadedModel.load(Paths.fixture("tiny_hf"))
        let (tokens, vocab, want) = try expectedLogits("tiny_hf")
        var nll = 0.0
        for i in 0..<(tokens.count - 1) {
            let row = want[(i * vocab)..<((i + 1) * vocab)]
            let mx = row.max()!
            nll += log(row.reduce(0) { $0 + exp($1 - mx) }) + mx - row[i * vocab + tokens[i + 1]]
        }
        let r = try loaded.model.evaluate(tokens: tokens, context: 64)
        XCTAssertEqual(r.perplexity, exp(nll / Double(tokens.count - 1)), accuracy: 1e-3 * r.perplexity)
        XCTAssertEqual(r.predictions, tokens.count - 1)
        // Two windows score one prediction fewer each.
        XCTAssertEqual(try loaded.model.evaluate(tokens: tokens, context: 12).predictions, tokens.count - 2)
    }

    /// A linear layer with LoRA factors computes (W + s·BA) x, for prefill and decode, dense and
    /// packed: decode through the kernels, a few rows through one panel loop, a batch through
    /// panels split across the workers (which cover every row once).
    func testLinearWithLoRAEqualsMergedWeight() throws {
        let (out, inF, r, t) = (70, 64, 3, 40)
        let panels = Linear.panels(outFeatures: out, inFeatures: inF)
        XCTAssertEqual(panels.flatMap { Array($0) }, Array(0..<out))
        XCTAssertGreaterThanOrEqual(panels.count, 2)
        let w = (0..<(out * inF)).map { _ in Float.random(in: -1...1) }
        let a = (0..<(r * inF)).map { _ in Float.random(in: -1...1) }
        let b = (0..<(out * r)).map { _ in Float.random(in: -1...1) }
        let x = (0..<(t * inF)).map { _ in Float.random(in: -1...1) }
        let packed = try analyzeTensor(w, out: out, in: inF, options: QuantizerOptions()).pack(
            w, bits: [UInt8](repeating: 4, count: out))
        for base in [Linear(outFeatures: out, inFeatures: inF, weight: w), Linear(packed: packed)] {
            var merged = base.weight
            var ba = [Float](repeating: 0, count: out * inF)
            matmul(b, a, &ba, m: out, n: inF, k: r, alpha: 0.5)
            for i in merged.indices { merged[i] += ba[i] }
            let ref = Linear(outFeatures: out, inFeatures: inF, weight: merged)
            for rows in [t, 1, 12] {
                var y = [Float](repeating: 0, count: rows * out)
                var want = y
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        let lora = LoRAFactors(a: ap.baseAddress!, b: bp.baseAddress!, rank: r, scale: 0.5)
                        base.forward(x, rows: rows, into: &y, lora: lora, activations: .float)
                    }
                }
                ref.forward(x, rows: rows, into: &want)
                for i in y.indices { XCTAssertEqual(y[i], want[i], accuracy: 1e-4 * max(1, abs(want[i]))) }
            }
        }
    }

    // MARK: bad input

    private func copyTinyHF() throws -> String {
        let dir = "\(try temporaryDirectory(self))/model"
        try FileManager.default.copyItem(atPath: Paths.fixture("tiny_hf"), toPath: dir)
        return dir
    }

    func testMissingTensorIsNamed() throws {
        let dir = try copyTinyHF()
        let src = try SafeTensorsFile(path: "\(dir)/model.safetensors")
        var w = SafeTensorsWriter()
        for (name, info) in src.tensors where name != "model.layers.1.mlp.up_proj.weight" {
            try w.add(name, dtype: info.dtype, shape: info.shape, bytes: try src.bytes(name))
        }
        try w.write(to: "\(dir)/model.safetensors")
        XCTAssertThrowsError(try LoadedModel.load(dir)) {
            let e = $0 as! LowRAError
            XCTAssertEqual(e.kind, .missingTensor)
            XCTAssertTrue(e.message.contains("model.layers.1.mlp.up_proj.weight"), e.message)
        }
    }

    func testShapeMismatchAgainstConfig() throws {
        let dir = try copyTinyHF()
        var cfg =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/config.json")))
            as! [String: Any]
        cfg["intermediate_size"] = 48
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: "\(dir)/config.json"))
        XCTAssertThrowsError(try LoadedModel.load(dir)) {
            let e = $0 as! LowRAError
            XCTAssertEqual(e.kind, .shapeMismatch)
            XCTAssertTrue(e.message.contains("gate_proj") && e.message.contains("[48, 32]"), e.message)
        }
    }

    /// Families and config keys LowRA does not implement are refused with one line naming them.
    func testUnsupportedArchitecturesAndKeysAreRefused() throws {
        let base =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: Paths.fixture("tiny_llama3_hf/config.json"))))
            as! [String: Any]
        let cases: [(String, Any, String)] = [
            ("model_type", "mixtral", "mixture of experts"), ("model_type", "gemma2", "gemma2"),
            ("model_type", "phi3", "phi3"), ("rope_scaling", ["rope_type": "yarn", "factor": 4.0], "yarn"),
            ("hidden_act", "gelu", "hidden_act"), ("mlp_bias", true, "mlp_bias"),
            ("partial_rotary_factor", 0.5, "partial_rotary_factor"), ("num_local_experts", 8, "num_local_experts"),
            ("quantization_config", ["quant_method": "awq"], "quantization_config"),
        ]
        for (key, value, expected) in cases {
            var cfg = base
            cfg[key] = value
            XCTAssertThrowsError(
                try JSONDecoder().decode(ModelConfig.self, from: JSONSerialization.data(withJSONObject: cfg)), key
            ) {
                let m = "\(($0 as? LowRAError)?.message ?? "\($0)")"
                XCTAssertTrue(m.contains(expected) && !m.contains("\n"), m)
            }
        }
        // A Mistral config's sliding window bounds the context (there, windowed = full attention).
        var mistral = base
        mistral["model_type"] = "mistral"
        mistral["sliding_window"] = 16
        mistral["rope_scaling"] = NSNull()
        let c = try JSONDecoder().decode(ModelConfig.self, from: JSONSerialization.data(withJSONObject: mistral))
        XCTAssertEqual(c.modelType, "mistral")
        XCTAssertEqual(c.maxPositions, 16)
        XCTAssertNil(c.ropeScaling)
    }

    func testShardIndexNamingAMissingFileIsRefused() throws {
        let dir = "\(try temporaryDirectory(self))/model"
        try FileManager.default.copyItem(atPath: Paths.fixture("tiny_qwen2_hf"), toPath: dir)
        try FileManager.default.removeItem(atPath: "\(dir)/model-00002-of-00002.safetensors")
        XCTAssertThrowsError(try LoadedModel.load(dir)) {
            let m = ($0 as! LowRAError).message
            XCTAssertTrue(m.contains("model-00002-of-00002.safetensors") && m.contains("missing"), m)
        }
    }

    func testPromptLongerThanContextIsRefused() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        XCTAssertThrowsError(
            try m.generate(prompt: Array(repeating: 5, count: 64), maxNewTokens: 4, sampling: .init(), eos: nil)
        ) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("context"))
        }
        XCTAssertThrowsError(try m.forward([5, 999_999], cache: KVCache(config: m.config, capacity: 4))) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("vocabulary"))
        }
        XCTAssertThrowsError(try m.evaluate(tokens: [5], context: 8))
    }
}
