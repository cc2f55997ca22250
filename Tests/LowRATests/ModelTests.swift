import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRAQuant
@testable import LowRATensor

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
            XCTAssertLessThanOrEqual(diff, 1e-4, "\(name): largest difference \(diff) at \(at): \(got[at]) vs \(want[at])")
        }
        let bias = try LoadedModel.load(Paths.fixture("tiny_hf_bias_f16")).config
        XCTAssertTrue(bias.attentionBias)
        XCTAssertFalse(bias.tieWordEmbeddings)
    }

    /// Decoding one token at a time through the KV cache gives the prefill's logits.
    func testIncrementalDecodeMatchesPrefill() throws {
        let loaded = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let (tokens, vocab, _) = try expectedLogits("tiny.gguf")
        let full = try loaded.model.forward(tokens, cache: KVCache(config: loaded.config, capacity: 32), logits: .all)
        let cache = KVCache(config: loaded.config, capacity: 32)
        var rows = try loaded.model.forward(Array(tokens.prefix(5)), cache: cache, logits: .all)
        for t in tokens.dropFirst(5) { rows += try loaded.model.forward([t], cache: cache, logits: .last) }
        let (diff, at) = maxRelativeDifference(rows, full.map(Double.init))
        XCTAssertLessThanOrEqual(diff, 1e-5, "largest difference \(diff) at row \(at / vocab)")
    }

    func testGreedyGenerationIsDeterministicAndSeededSamplingReproducible() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        let a = try m.generate(prompt: [5, 6, 7], maxNewTokens: 8, sampling: SamplingOptions(temperature: 0), eos: nil)
        let b = try m.generate(prompt: [5, 6, 7], maxNewTokens: 8, sampling: SamplingOptions(temperature: 0), eos: nil)
        XCTAssertEqual(a.tokens, b.tokens)
        XCTAssertEqual(a.tokens.count, 8)
        let s = SamplingOptions(temperature: 1, topK: 20, topP: 0.9, seed: 42)
        XCTAssertEqual(try m.generate(prompt: [5], maxNewTokens: 10, sampling: s, eos: nil).tokens,
                       try m.generate(prompt: [5], maxNewTokens: 10, sampling: s, eos: nil).tokens)
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

    /// A linear layer with LoRA factors computes (W + s·BA) x, for prefill and decode, dense and packed.
    func testLinearWithLoRAEqualsMergedWeight() throws {
        let (out, inF, r, t) = (6, 64, 3, 4)
        let w = (0..<(out * inF)).map { _ in Float.random(in: -1...1) }
        let a = (0..<(r * inF)).map { _ in Float.random(in: -1...1) }
        let b = (0..<(out * r)).map { _ in Float.random(in: -1...1) }
        let x = (0..<(t * inF)).map { _ in Float.random(in: -1...1) }
        let packed = try analyzeTensor(w, out: out, in: inF, options: QuantizerOptions()).pack(w, bits: [UInt8](repeating: 4, count: out))
        for base in [Linear(outFeatures: out, inFeatures: inF, weight: w), Linear(packed: packed)] {
            var merged = base.weight
            var ba = [Float](repeating: 0, count: out * inF)
            matmul(b, a, &ba, m: out, n: inF, k: r, alpha: 0.5)
            for i in merged.indices { merged[i] += ba[i] }
            let ref = Linear(outFeatures: out, inFeatures: inF, weight: merged)
            for rows in [t, 1] {
                var y = [Float](repeating: 0, count: rows * out), want = y
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        let lora = LoRAFactors(a: ap.baseAddress!, b: bp.baseAddress!, rank: r, scale: 0.5)
                        base.forward(x, rows: rows, into: &y, lora: lora)
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
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/config.json"))) as! [String: Any]
        cfg["intermediate_size"] = 48
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: "\(dir)/config.json"))
        XCTAssertThrowsError(try LoadedModel.load(dir)) {
            let e = $0 as! LowRAError
            XCTAssertEqual(e.kind, .shapeMismatch)
            XCTAssertTrue(e.message.contains("gate_proj") && e.message.contains("[48, 32]"), e.message)
        }
    }

    func testPromptLongerThanContextIsRefused() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        XCTAssertThrowsError(try m.generate(prompt: Array(repeating: 5, count: 64), maxNewTokens: 4, sampling: .init(), eos: nil)) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("context"))
        }
        XCTAssertThrowsError(try m.forward([5, 999_999], cache: KVCache(config: m.config, capacity: 4))) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("vocabulary"))
        }
        XCTAssertThrowsError(try m.evaluate(tokens: [5], context: 8))
    }
}
