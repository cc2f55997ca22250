import Foundation
import XCTest

import LowRAIO
@testable import LowRAModel
@testable import LowRATensor
import LowRATrain
import LowRATokenizer
import LowRAPipeline

/// End-to-end checks on SmolLM2-135M. Release builds only: debug builds are too slow for a
/// 135M-parameter model (`make test` runs the suite in release).
final class RealModelTests: XCTestCase {
    override func setUpWithError() throws {
        #if DEBUG
        throw XCTSkip("runs in release builds (make test)")
        #else
        try Paths.requireSmolLM2()
        #endif
    }

    func testPerplexityMatchesNumpyReference() throws {
        let loaded = try LoadedModel.load(Paths.smolLM2)
        let (ref, tokens) = try assertPerplexityMatchesReference(loaded, "smollm2_reference.json")
        loaded.model.activations = .float  // the model's math, not the int8 kernels' rounding
        let logits = try loaded.model.forward(
            Array(tokens.prefix(1)), cache: KVCache(config: loaded.config, capacity: 1))
        let top = logits.indices.sorted { logits[$0] > logits[$1] }.prefix(5)
        XCTAssertEqual(Array(top), ref["first_row_top5"] as? [Int])
    }

    /// Reshapes leave quantized SmolLM2 unchanged: every packed tensor of the data-free 2-bit model
    /// (`lowra quantize --bits 2 --init none --calibration none`) is pinned by its sha256, the
    /// embedding keeps the source's Q8_0 blocks (values identical to the GGUF's), and the perplexity
    /// is pinned (`eval --max-tokens 512 --context 512`). The bytes rest on the code, not on the CPU:
    /// the data-free quantizer without an adapter calls no BLAS and no instruction-set path (each
    /// row's Lloyd-Max, error table and packing are Swift loops in a fixed order, never fused or
    /// reassociated); the same bytes came out on AVX-512 Xeon, AVX-512 EPYC and AVX2-only EPYC
    /// machines and under `LOWRA_KERNEL=scalar`. The levels lie on the integer
    /// kernels' uint8 grid; without LoftQ or fine-tuning this base is so broken that any change
    /// moves its perplexity by percents.
    func testQuantizedSmolLM2Unchanged() throws {
        let loaded = try LoadedModel.load(Paths.smolLM2)
        let (w, map, report, _) = try loaded.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2))
        let dir = "\(try temporaryDirectory(self))/q2"
        try QuantizedModelStore.save(
            to: dir, config: loaded.config, weights: w, tokenizer: loaded.tokenizer, map: map,
            manifest: QuantManifest(source: "smollm2", sourceSHA256: "-", report: report))
        let file = try SafeTensorsFile(path: "\(dir)/model.safetensors")
        var sha = SHA256()
        for name in file.tensors.keys.sorted() where name != "model.embed_tokens.weight" {
            sha.update(Array(name.utf8))
            sha.update(Array(try file.bytes(name)))
        }
        XCTAssertEqual(file.tensors.count, 1112)
        XCTAssertEqual(sha.finalize(), "03066edbb238adca05b80badbc24b26c4c88df86be19661c5a40770c0ca5647a")
        XCTAssertEqual(file.metadata["model.embed_tokens.weight.ggml_type"], "Q8_0")
        let embedding = try LoadedModel.load(dir).model.weights.embedding.weight
        XCTAssertEqual(embedding, try GGUFFile(path: Paths.smolLM2).floats("token_embd.weight"))
        let text = try String(contentsOfFile: Paths.shakespeare, encoding: .utf8)
        let tokens = Array(loaded.tokenizer.encode(text).prefix(512))
        let r = try LoadedModel.load(dir).model.evaluate(tokens: tokens, context: 512)
        XCTAssertEqual(r.perplexity, 177_624.16, accuracy: 177_624.16 * 1e-3)
    }

    func testChatAnswersParis() throws {
        let loaded = try LoadedModel.load(Paths.smolLM2)
        let prompt = try loaded.tokenizer.chatTemplate!.render([
            ChatMessage(role: "user", content: "What is the capital of France?")
        ])
        let r = try loaded.model.generate(
            prompt: loaded.tokenizer.encode(prompt), maxNewTokens: 20, sampling: SamplingOptions(temperature: 0),
            eos: loaded.tokenizer.eosTokenId)
        XCTAssertTrue(loaded.tokenizer.decode(r.tokens).contains("Paris"), loaded.tokenizer.decode(r.tokens))
    }

    /// The training forward on SmolLM2 (GGUF layout, GQA, tied head) with a random adapter gives
    /// the reference perplexity's loss path: equal to the inference runtime's with the factors
    /// attached; and one fine-tuning step on Shakespeare lowers the loss on that batch.
    func testTrainingGraphOnSmolLM2() throws {
        let loaded = try LoadedModel.load(Paths.smolLM2)
        let c = loaded.config
        let text = try String(contentsOfFile: Paths.shakespeare, encoding: .utf8)
        let ids = Array(loaded.tokenizer.encode(String(text.prefix(4000))).prefix(129))
        var adapter = try LoRAAdapter(config: c, rank: 4)
        var rng = SplitMix64(seed: 2)
        for i in adapter.values.indices { adapter.values[i] = Float(rng.nextUnit() - 0.5) * 0.02 }
        let graph = try TrainingGraph(config: c, weights: loaded.model.weights, batch: 1, seq: 128, rank: 4)
        let inputs = Array(ids.prefix(128))
        let targets = Array(ids.dropFirst())
        let trained = try graph.loss(inputs: inputs, targets: targets, adapter: adapter)
        let logits = try loaded.model.forward(inputs, cache: KVCache(config: c, capacity: 128), adapter: adapter)
        let ref = logits.withUnsafeBufferPointer {
            crossEntropyForwardBackward(nil, $0.baseAddress!, targets: targets, vocab: c.vocabSize)
        }
        XCTAssertEqual(trained.loss / 128, ref.loss / 128, accuracy: 1e-3)
        var grad = [Float](repeating: 0, count: adapter.values.count)
        _ = try graph.lossAndGradient(inputs: inputs, targets: targets, adapter: adapter, gradient: &grad)
        var adam = AdamW(count: grad.count)
        adam.update(&adapter.values, gradient: grad, lr: 1e-3)
        XCTAssertLessThan(try graph.loss(inputs: inputs, targets: targets, adapter: adapter).loss, trained.loss)
    }
}
