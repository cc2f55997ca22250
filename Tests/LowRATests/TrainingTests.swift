import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATrain
@testable import LowRATokenizer
@testable import LowRAPipeline
@testable import LowRAAdapters

final class TrainingTests: XCTestCase {
    /// A tiny model (fixture), optionally quantized, with a random non-zero adapter.
    private func setup(
        _ path: String, quantize bits: Double? = nil, rank: Int = 2, seed: UInt64 = 1
    )
        throws -> (ModelConfig, ModelWeights, LoRAAdapter)
    {
        let m = try LoadedModel.load(path)
        var w = m.model.weights
        if let bits { w = try w.quantized(QuantizeRequest(method: .lowra, bits: bits)).weights }
        var adapter = try LoRAAdapter(config: m.config, rank: rank, alpha: Float(2 * rank))
        var rng = SplitMix64(seed: seed)
        for i in adapter.values.indices { adapter.values[i] = Float(rng.nextUnit() * 0.4 - 0.2) }
        return (m.config, w, adapter)
    }

    private func randomBatch(_ n: Int, vocab: Int, seed: UInt64) -> (inputs: [Int], targets: [Int]) {
        var rng = SplitMix64(seed: seed)
        let inputs = (0..<n).map { _ in Int(rng.next() % UInt64(vocab)) }
        let targets = (0..<n).map { i in i % 4 == 3 ? -1 : Int(rng.next() % UInt64(vocab)) }  // some masked
        return (inputs, targets)
    }

    /// Distillation through the whole model: the LoRA gradient of (1 − w)·CE + w·KL(teacher ‖ model)
    /// against central differences, a packed 2-bit student and its fp32 source as the teacher.
    func testDistillationGradientMatchesFiniteDifferences() throws {
        let source = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        let (config, weights, adapter) = try setup(Paths.fixture("tiny_hf"), quantize: 2)
        let graph = try TrainingGraph(
            config: config, weights: weights, batch: 2, seq: 6, rank: adapter.rank, headChunk: 5, distill: true,
            integerForward: false)
        let (inputs, targets) = randomBatch(12, vocab: config.vocabSize, seed: 8)
        var hidden = [Float]()
        for b in 0..<2 { hidden += try source.hidden(Array(inputs[(b * 6)..<(b * 6 + 6)]), cache: nil) }
        let teacher = TrainingGraph.Teacher(hidden: hidden, head: source.weights.outputHead, weight: 0.7)
        var grad = [Float](repeating: 0, count: adapter.values.count)
        let (sum, count) = try graph.lossAndGradient(
            inputs: inputs, targets: targets, adapter: adapter, gradient: &grad, teacher: teacher)
        XCTAssertEqual(try graph.loss(inputs: inputs, targets: targets, adapter: adapter, teacher: teacher).loss, sum)
        XCTAssertNotEqual(try graph.loss(inputs: inputs, targets: targets, adapter: adapter).loss, sum)
        var rng = SplitMix64(seed: 5)
        var probe = adapter
        let eps: Float = 1e-2
        var d = 0.0
        var norm = 0.0
        for s in adapter.slots {
            for i in [
                s.offsetA + Int(rng.next() % UInt64(adapter.rank * s.inFeatures)),
                s.offsetB + Int(rng.next() % UInt64(adapter.rank * s.outFeatures)),
            ] {
                let keep = probe.values[i]
                probe.values[i] = keep + eps
                let plus = try graph.loss(inputs: inputs, targets: targets, adapter: probe, teacher: teacher).loss
                probe.values[i] = keep - eps
                let minus = try graph.loss(inputs: inputs, targets: targets, adapter: probe, teacher: teacher).loss
                probe.values[i] = keep
                let num = (plus - minus) / Double(count) / Double(2 * eps)
                d += (num - Double(grad[i])) * (num - Double(grad[i]))
                norm += (num + Double(grad[i])) * (num + Double(grad[i]))
            }
        }
        XCTAssertLessThanOrEqual((d / norm).squareRoot(), 2e-3)
        XCTAssertGreaterThan(norm, 1e-6)
    }

    /// The forward through the tiles (16-bit integer activations; on a path without tiles, the row
    /// kernels) and backward's input gradients from the tiles (int8 gradients, where the path has the
    /// transposed kernel) against the fp32 panels whose gradient the finite-difference tests check, on
    /// packed 2-bit bases over 24 rows. Stated tolerances: loss within 1e-4 relative; LoRA gradient
    /// (norm of the difference over the panels' gradient's) within 1e-3 with the integer forward alone
    /// and 3e-2 with int8 input gradients too (measured 5e-6; 8e-5; 1.1e-2 and 9.5e-3).
    func testIntegerProductsMatchTheFP32Panels() throws {
        for fixture in ["tiny.gguf", "tiny_llama3.gguf"] {
            let (config, weights, adapter) = try setup(Paths.fixture(fixture), quantize: 2)
            let (inputs, targets) = randomBatch(24, vocab: config.vocabSize, seed: 9)
            var losses = [Double]()
            var grads = [[Float]]()
            // Panels (the reference), the integer forward alone, and the integer forward and backward.
            for (forward, backward) in [(false, false), (true, false), (true, true)] {
                let graph = try TrainingGraph(
                    config: config, weights: weights, batch: 2, seq: 12, rank: adapter.rank, headChunk: 10,
                    integerForward: forward, integerBackward: backward)
                XCTAssertEqual(graph.integerBackward, backward && KernelPath.usesTransposedTiles(KernelPath.current))
                var grad = [Float](repeating: 0, count: adapter.values.count)
                losses.append(
                    try graph.lossAndGradient(inputs: inputs, targets: targets, adapter: adapter, gradient: &grad).loss)
                grads.append(grad)
            }
            XCTAssertNotEqual(losses[1], losses[0], "\(fixture): the integer forward did not run")
            XCTAssertEqual(losses[2], losses[1], "\(fixture): backward changed the loss")
            XCTAssertLessThanOrEqual(abs(losses[1] - losses[0]) / abs(losses[0]), 1e-4, fixture)
            for (k, tolerance) in [(1, 1e-3), (2, 3e-2)] {
                var d = 0.0
                var norm = 0.0
                for (a, b) in zip(grads[k], grads[0]) {
                    d += Double(a - b) * Double(a - b)
                    norm += Double(b) * Double(b)
                }
                XCTAssertGreaterThan(norm, 1e-6)
                XCTAssertLessThanOrEqual((d / norm).squareRoot(), tolerance, "\(fixture): gradient \(k)")
                if KernelPath.usesTransposedTiles(KernelPath.current) && k == 2 {
                    XCTAssertNotEqual(grads[2], grads[1], "\(fixture): the integer backward did not run")
                }
            }
        }
    }

    /// The output-channel Fisher against finite differences: with one-token sequences ∂L/∂y_r is
    /// ∂L/∂bias_r, so E[(∂L/∂y_r)²] of a biased v_proj (a lone query's attention copies v) is the
    /// mean square of central differences of the loss in its bias, up to the common scale
    /// `outputSensitivity` normalizes away.
    func testOutputSensitivityMatchesFiniteDifferences() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf_bias_f16")).model
        let config = m.config
        let tokens = [3, 17, 5, 29, 11, 2, 8]
        let sens = try outputSensitivity(config: config, weights: m.weights, tokens: tokens, seq: 1)
        let name = WeightNaming.huggingFace.linear(1, .v)
        let got = try XCTUnwrap(sens[name])
        XCTAssertEqual(got.count, config.kvDim)
        let adapter = try LoRAAdapter(config: config, rank: 1)
        func loss(_ weights: ModelWeights, _ s: Int) throws -> Double {
            let graph = try TrainingGraph(config: config, weights: weights, batch: 1, seq: 1, rank: 1)
            return try graph.loss(inputs: [tokens[s]], targets: [tokens[s + 1]], adapter: adapter).loss
        }
        let eps: Float = 1e-2
        var expected = [Double](repeating: 0, count: config.kvDim)
        for r in 0..<config.kvDim {
            for s in 0..<(tokens.count - 1) {
                var plus = m.weights
                plus.blocks[1][.v].bias![r] += eps
                var minus = m.weights
                minus.blocks[1][.v].bias![r] -= eps
                let g = (try loss(plus, s) - loss(minus, s)) / Double(2 * eps)
                expected[r] += g * g
            }
        }
        // Same direction: got = c · expected for one c > 0.
        let dot = zip(got, expected).reduce(0.0) { $0 + Double($1.0) * $1.1 }
        let ng = got.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        let ne = expected.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
        XCTAssertGreaterThan(dot / (ng * ne), 0.999)
        XCTAssertGreaterThan(ne, 0)
    }

    /// The Fisher with blocks recomputed in the backward pass (what larger models get) equals the one
    /// with every block's activations saved.
    func testOutputSensitivityWithRecomputeIsTheSame() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf_bias_f16")).model
        let tokens = (0..<33).map { ($0 * 7 + 3) % m.config.vocabSize }
        let saved = try outputSensitivity(
            config: m.config, weights: m.weights, tokens: tokens, seq: 8, recompute: false)
        let replayed = try outputSensitivity(
            config: m.config, weights: m.weights, tokens: tokens, seq: 8, recompute: true)
        XCTAssertEqual(Set(saved.keys), Set(replayed.keys))
        for (name, v) in saved {
            let (diff, at) = maxRelativeDifference(replayed[name]!, v.map(Double.init))
            XCTAssertLessThanOrEqual(diff, 1e-5, "\(name)[\(at)]")
        }
        XCTAssertGreaterThan(sensitivityActivationBytes(config: m.config, seq: 8), 0)
    }

    /// The whole model's LoRA gradient against central differences of its mean loss, for an fp32
    /// and a packed 2-bit base, both RoPE layouts (HF half-split and GGUF interleaved), GQA, and
    /// q/k/v bias, with saved activations and with recomputation (activation checkpointing).
    /// fp32, eps 1e-2; stated tolerance: relative error of the sampled gradient vector ≤ 2e-3.
    func testWholeModelGradientMatchesFiniteDifferences() throws {
        let cases: [(String, Double?, Bool)] = [
            ("tiny_hf", nil, false), ("tiny.gguf", nil, false), ("tiny_hf_bias_f16", nil, false),
            ("tiny.gguf", 2, false),
            ("tiny_qwen2_hf", nil, true), ("tiny_llama3.gguf", 2, true),
        ]
        for (fixture, bits, recompute) in cases {
            let (config, weights, adapter) = try setup(Paths.fixture(fixture), quantize: bits)
            let graph = try TrainingGraph(
                config: config, weights: weights, batch: 2, seq: 6, rank: adapter.rank, headChunk: 5,
                recompute: recompute, integerForward: false)
            let (inputs, targets) = randomBatch(12, vocab: config.vocabSize, seed: 7)
            var grad = [Float](repeating: 0, count: adapter.values.count)
            let (sum, count) = try graph.lossAndGradient(
                inputs: inputs, targets: targets, adapter: adapter, gradient: &grad)
            XCTAssertEqual(count, 9)
            let mean = try graph.loss(inputs: inputs, targets: targets, adapter: adapter)
            XCTAssertEqual(mean.loss, sum)
            var rng = SplitMix64(seed: 3)
            // Every layer and target: one entry of A and one of B each.
            var indices = [Int]()
            for s in adapter.slots {
                indices.append(s.offsetA + Int(rng.next() % UInt64(adapter.rank * s.inFeatures)))
                indices.append(s.offsetB + Int(rng.next() % UInt64(adapter.rank * s.outFeatures)))
            }
            var probe = adapter
            let eps: Float = 1e-2
            var d = 0.0
            var norm = 0.0
            for i in indices {
                let keep = probe.values[i]
                probe.values[i] = keep + eps
                let plus = try graph.loss(inputs: inputs, targets: targets, adapter: probe).loss / Double(count)
                probe.values[i] = keep - eps
                let minus = try graph.loss(inputs: inputs, targets: targets, adapter: probe).loss / Double(count)
                probe.values[i] = keep
                let num = (plus - minus) / Double(2 * eps)
                d += (num - Double(grad[i])) * (num - Double(grad[i]))
                norm += (num + Double(grad[i])) * (num + Double(grad[i]))
            }
            let rel = (d / norm).squareRoot()
            XCTAssertLessThanOrEqual(
                rel, 2e-3, "\(fixture) bits \(bits.map { "\($0)" } ?? "fp32"): relative error \(rel)")
            XCTAssertGreaterThan(norm, 1e-6)
        }
    }

    /// Recomputing the blocks in backward gives the saved-activation gradient, and holds only the
    /// block inputs plus one layer's activations.
    func testRecomputeGivesTheSameGradient() throws {
        for (fixture, bits) in [("tiny.gguf", nil), ("tiny_hf_bias_f16", 2)] as [(String, Double?)] {
            let (config, weights, adapter) = try setup(Paths.fixture(fixture), quantize: bits)
            let (inputs, targets) = randomBatch(16, vocab: config.vocabSize, seed: 5)
            var grads = [[Float]]()
            var bytes = [Int]()
            for recompute in [false, true] {
                let graph = try TrainingGraph(
                    config: config, weights: weights, batch: 2, seq: 8, rank: adapter.rank, recompute: recompute)
                var grad = [Float](repeating: 0, count: adapter.values.count)
                _ = try graph.lossAndGradient(inputs: inputs, targets: targets, adapter: adapter, gradient: &grad)
                grads.append(grad)
                bytes.append(graph.workspaceBytes)
            }
            let (diff, at) = maxRelativeDifference(grads[1], grads[0].map(Double.init))
            XCTAssertLessThanOrEqual(diff, 1e-6, "\(fixture): \(grads[1][at]) vs \(grads[0][at])")
            XCTAssertLessThan(bytes[1], bytes[0])
        }
    }

    /// The training forward's loss equals the inference runtime's (KV-cached forward with the
    /// LoRA factors attached to the layers), per sequence.
    func testTrainingForwardMatchesInference() throws {
        for (fixture, bits) in [("tiny.gguf", nil), ("tiny_hf", 1.75)] as [(String, Double?)] {
            let (config, weights, adapter) = try setup(Paths.fixture(fixture), quantize: bits)
            let (inputs, targets) = randomBatch(16, vocab: config.vocabSize, seed: 11)
            let graph = try TrainingGraph(config: config, weights: weights, batch: 2, seq: 8, rank: adapter.rank)
            let trained = try graph.loss(inputs: inputs, targets: targets, adapter: adapter)
            let model = try LanguageModel(config: config, weights: weights)
            model.activations = .float  // 8 tokens run through the decode kernels: compare their fp32 path
            var total = 0.0
            for b in 0..<2 {
                let logits = try model.forward(
                    Array(inputs[(b * 8)..<(b * 8 + 8)]), cache: KVCache(config: config, capacity: 8), adapter: adapter)
                let r = logits.withUnsafeBufferPointer {
                    crossEntropyForwardBackward(
                        nil, $0.baseAddress!, targets: Array(targets[(b * 8)..<(b * 8 + 8)]), vocab: config.vocabSize)
                }
                total += r.loss
            }
            XCTAssertEqual(trained.loss, total, accuracy: 1e-4 * abs(total), fixture)
        }
    }

    func testBadBatchesAreRefused() throws {
        let (config, weights, adapter) = try setup(Paths.fixture("tiny_hf"))
        XCTAssertThrowsError(try TrainingGraph(config: config, weights: weights, batch: 1, seq: 65, rank: 2))
        let graph = try TrainingGraph(config: config, weights: weights, batch: 1, seq: 4, rank: 2)
        XCTAssertThrowsError(try graph.loss(inputs: [1, 2, 3], targets: [1, 2, 3], adapter: adapter))
        XCTAssertThrowsError(try graph.loss(inputs: [1, 2, 3, 999], targets: [1, 2, 3, 4], adapter: adapter))
        let other = try LoRAAdapter(config: config, rank: 3)
        XCTAssertThrowsError(try graph.loss(inputs: [1, 2, 3, 4], targets: [1, 2, 3, 4], adapter: other))
    }
}

final class FinetuneTests: XCTestCase {
    static let text =
        "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n"
        + "First Citizen:\nYou are all resolved rather to die than to famish?\n"

    private func write(_ s: String, _ name: String) throws -> String {
        let path = "\(try temporaryDirectory(self))/\(name)"
        try Data(s.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// A tiny random model with a fresh adapter drives its loss on a short text near zero:
    /// the loop (forward, backward, clipping, AdamW, schedule) learns.
    func testTinyModelMemorizesText() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf"))
        let data = try TrainingData.text(try write(Self.text, "t.txt"), tokenizer: m.tokenizer, seq: 16)
        var adapter = try LoRAAdapter(config: m.config, rank: 4)
        adapter.initializeKaiming(seed: 1)
        var o = FinetuneOptions()
        (o.steps, o.lr, o.batch, o.seq, o.schedule, o.maxGradNorm) = (200, 1e-2, 2, 16, .constant, 1)
        let trainer = try Trainer(
            config: m.config, weights: m.model.weights, baseFingerprint: "x", adapter: adapter, train: data,
            valid: data,
            options: o, outDir: try temporaryDirectory(self))
        let r = try trainer.run()
        XCTAssertGreaterThan(r.validLossBefore!, 4)
        XCTAssertLessThan(r.validLossAfter!, 0.05, "valid loss \(r.validLossBefore!) → \(r.validLossAfter!)")
        XCTAssertLessThan(r.finalTrainLoss!, 0.05)
    }

    /// Stopping after a checkpoint and resuming reproduces the uninterrupted run's log exactly.
    func testResumeReproducesTheRun() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let w = try m.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2)).weights
        let data = try TrainingData.text(try write(Self.text, "t.txt"), tokenizer: m.tokenizer, seq: 8)
        var adapter = try LoRAAdapter(config: m.config, rank: 2)
        adapter.initializeKaiming(seed: 5)
        var o = FinetuneOptions()
        (o.steps, o.lr, o.batch, o.gradAccum, o.seq, o.saveEvery, o.warmup) = (12, 5e-3, 2, 2, 8, 5, 0.2)
        func trainer(_ o: FinetuneOptions, _ dir: String) throws -> Trainer {
            try Trainer(
                config: m.config, weights: w, baseFingerprint: "b", adapter: adapter, train: data, valid: nil,
                options: o, outDir: dir)
        }
        let uninterrupted = try trainer(o, try temporaryDirectory(self))
        let whole = try uninterrupted.run()
        let dir = try temporaryDirectory(self)
        _ = try trainer(o, dir).run(until: 7)  // stops after step 7; the last checkpoint is step 5's
        let resumed = try trainer(o, dir)
        let r = try resumed.run(resume: true)
        XCTAssertEqual(r.resumedFrom, 5)
        XCTAssertEqual(r.log.map(\.trainLoss), whole.log.map(\.trainLoss))
        XCTAssertEqual(r.log.map(\.gradNorm), whole.log.map(\.gradNorm))
        XCTAssertEqual(resumed.adapter, uninterrupted.adapter)
        // A checkpoint of another configuration is refused.
        var other = o
        other.lr = 1e-3
        XCTAssertThrowsError(try trainer(other, dir).run(resume: true))
    }

    func testJSONLMasksThePrompt() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf"))
        guard m.tokenizer.chatTemplate?.format == .chatML else {
            throw XCTSkip("fixture tokenizer has no ChatML template")
        }
        let path = try write(
            "{\"prompt\": \"hear me\", \"response\": \"Speak, speak.\"}\n\n{\"response\": \"x\", \"prompt\": \"a\"}\n",
            "d.jsonl")
        let d = try TrainingData.jsonl(path, tokenizer: m.tokenizer, seq: 64)
        XCTAssertEqual(d.count, 2)
        let prompt = m.tokenizer.encode(
            try m.tokenizer.chatTemplate!.render([ChatMessage(role: "user", content: "hear me")]))
        let response = m.tokenizer.encode("Speak, speak.<|im_end|>\n")
        XCTAssertEqual(Array(d.inputs[0].prefix(prompt.count)), prompt)
        XCTAssertEqual(d.targets[0].filter { $0 >= 0 }, response)
        XCTAssertEqual(d.inputs[0].count, 64)
        // Multi-turn: loss on both assistant turns only.
        let conv =
            #"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, "#
            + #"{"role": "assistant", "content": "Speak."}, {"role": "user", "content": "again"}, "#
            + #"{"role": "assistant", "content": "All: speak."}]}"#
        let c = try TrainingData.jsonl(try write(conv + "\n", "m.jsonl"), tokenizer: m.tokenizer, seq: 64)
        XCTAssertEqual(
            c.targets[0].filter { $0 >= 0 },
            m.tokenizer.encode("Speak.<|im_end|>\n") + m.tokenizer.encode("All: speak.<|im_end|>\n"))
        // Evaluating the conversations scores exactly the trained positions (training graph loss).
        let r = try m.model.evaluate(examples: c)
        let graph = try TrainingGraph(config: m.config, weights: m.model.weights, batch: 1, seq: 64, rank: 1)
        let g = try graph.loss(
            inputs: c.inputs[0], targets: c.targets[0], adapter: try LoRAAdapter(config: m.config, rank: 1))
        XCTAssertEqual(r.tokens, g.count)
        XCTAssertEqual(r.meanNLL, g.loss / Double(g.count), accuracy: 1e-4)
        for bad in [
            #"{"messages": []}"#, #"{"messages": [{"role": "user", "content": "x"}]}"#,
            #"{"messages": [{"role": "bot", "content": "x"}]}"#,
        ] {
            XCTAssertThrowsError(
                try TrainingData.jsonl(try write(bad + "\n", "x.jsonl"), tokenizer: m.tokenizer, seq: 64), bad)
        }
        XCTAssertThrowsError(
            try TrainingData.jsonl(try write("{\"prompt\": \"a\"}\n", "b.jsonl"), tokenizer: m.tokenizer, seq: 64))
        XCTAssertThrowsError(
            try TrainingData.jsonl(try write("not json\n", "c.jsonl"), tokenizer: m.tokenizer, seq: 64))
    }

    func testBadDataIsRefused() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf"))
        let dir = try temporaryDirectory(self)
        try Data().write(to: URL(fileURLWithPath: "\(dir)/empty.txt"))
        try Data([0xff, 0xfe, 0x41]).write(to: URL(fileURLWithPath: "\(dir)/bin.txt"))
        for f in ["empty.txt", "bin.txt", "missing.txt"] {
            XCTAssertThrowsError(try TrainingData.text("\(dir)/\(f)", tokenizer: m.tokenizer, seq: 8), f)
        }
        XCTAssertThrowsError(try TrainingData.text(try write("ab", "short.txt"), tokenizer: m.tokenizer, seq: 8))
    }

    /// The PEFT file holds q/k lora_B rows in Hugging Face order: the adapter trained on a GGUF
    /// (interleaved RoPE) base, read raw from the file onto the same model converted to the HF
    /// layout, gives the same logits; and save/load round-trips exactly.
    func testPEFTAdapterLayout() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        XCTAssertEqual(m.config.ropeLayout, .interleaved)
        var adapter = try LoRAAdapter(config: m.config, rank: 3)
        var rng = SplitMix64(seed: 9)
        for i in adapter.values.indices { adapter.values[i] = Float(rng.nextUnit() - 0.5) * 0.2 }
        let dir = try temporaryDirectory(self)
        let manifest = AdapterManifest(
            baseFingerprint: "fp", base: "tiny.gguf", quantization: nil, rank: 3, alpha: 3, initialization: "zeros")
        try AdapterStore.save(adapter, config: m.config, manifest: manifest, to: dir)
        XCTAssertEqual(try AdapterStore.load(dir, config: m.config, fingerprint: "fp").0, adapter)
        XCTAssertThrowsError(try AdapterStore.load(dir, config: m.config, fingerprint: "other"))

        // The same model in HF layout: q/k rows un-permuted, half-split RoPE.
        var hfConfig = m.config
        hfConfig.ropeLayout = .halfSplit
        var hfWeights = m.model.weights
        let d = m.config.headDim
        for l in hfWeights.blocks.indices {
            for kind in [LinearKind.q, .k] {
                let lin = hfWeights.blocks[l][kind]
                let w = lin.weight
                var out = w
                for r in 0..<lin.outFeatures {
                    let h = RopeLayout.halfSplitRow(r, headDim: d)
                    for j in 0..<lin.inFeatures { out[h * lin.inFeatures + j] = w[r * lin.inFeatures + j] }
                }
                hfWeights.blocks[l][kind] = Linear(
                    outFeatures: lin.outFeatures, inFeatures: lin.inFeatures, weight: out)
            }
        }
        let file = try SafeTensorsFile(path: "\(dir)/adapter_model.safetensors")
        var raw = try LoRAAdapter(config: hfConfig, rank: 3)
        for s in raw.slots {
            raw.setFactors(
                s, a: try file.floats(AdapterStore.key(s, "A")), b: try file.floats(AdapterStore.key(s, "B")))
        }
        let tokens = [5, 17, 40, 2, 99, 3, 250]
        let a = try m.model.forward(tokens, cache: KVCache(config: m.config, capacity: 8), adapter: adapter)
        let b = try LanguageModel(config: hfConfig, weights: hfWeights)
            .forward(tokens, cache: KVCache(config: hfConfig, capacity: 8), adapter: raw)
        XCTAssertLessThan(maxRelativeDifference(a, b.map(Double.init)).0, 1e-4)
        let cfg =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/adapter_config.json")))
            as! [String: Any]
        XCTAssertEqual(cfg["peft_type"] as? String, "LORA")
        XCTAssertEqual(cfg["r"] as? Int, 3)
        XCTAssertEqual(
            file.tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]?.shape,
            [3, m.config.hiddenSize])
        XCTAssertEqual(
            file.tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]?.shape,
            [m.config.hiddenSize, 3])
    }

    func testScheduleAndClipping() {
        let s = LRSchedule(kind: .cosine, peak: 1, warmupSteps: 4, totalSteps: 14)
        XCTAssertEqual(s.rate(at: 0), 0.25)
        XCTAssertEqual(s.rate(at: 3), 1)
        XCTAssertEqual(s.rate(at: 9), 0.5, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 14), 0, accuracy: 1e-6)
        XCTAssertEqual(LRSchedule(kind: .constant, peak: 2, warmupSteps: 0, totalSteps: 5).rate(at: 4), 2)
        var g: [Float] = [3, 4]
        XCTAssertEqual(clipGradientNorm(&g, maxNorm: 1), 5)
        XCTAssertEqual(g[0], 0.6, accuracy: 1e-5)
        XCTAssertEqual(g[1], 0.8, accuracy: 1e-5)
    }

    /// The memory model's activations and scratch are exactly the training graph's buffers, and
    /// its packed-weight bytes are close to what the quantizer stores.
    func testMemoryModelMatchesTheImplementation() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let (w, _, report, _) = try m.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2.5))
        var model = MemoryModel(config: m.config, bits: 2.5, rank: 3, batch: 2, seq: 24)
        let parts = Dictionary(uniqueKeysWithValues: model.breakdown(training: true))
        let graph = try TrainingGraph(config: m.config, weights: w, batch: 2, seq: 24, rank: 3)
        XCTAssertEqual(parts["saved activations"]! + parts["step scratch"]!, graph.workspaceBytes)
        model.recompute = true
        let lean = Dictionary(uniqueKeysWithValues: model.breakdown(training: true))
        let recomputing = try TrainingGraph(config: m.config, weights: w, batch: 2, seq: 24, rank: 3, recompute: true)
        XCTAssertEqual(lean["saved activations"]! + lean["step scratch"]!, recomputing.workspaceBytes)
        XCTAssertEqual(parts["LoRA adapter"]!, 4 * (try LoRAAdapter(config: m.config, rank: 3)).parameterCount)
        let packed = parts["packed codes"]! + parts["block scales"]! + parts["codebooks"]!
        XCTAssertEqual(Double(packed), Double(report.storedBytes), accuracy: 0.15 * Double(report.storedBytes))
        // The training tiles where this path builds them: as the weights' own estimate (the head here is
        // not Q8_0), within the padding of each width's last tile of 16 rows.
        if KernelPath.usesTransposedTiles(KernelPath.current) {
            let tiles = Double(parts["integer tiles"]!), built = Double(w.decodeTileBytesEstimate)
            XCTAssertEqual(tiles, built, accuracy: 0.3 * built)
        } else {
            XCTAssertNil(parts["integer tiles"])
        }
        XCTAssertNil(Dictionary(uniqueKeysWithValues: model.breakdown(training: false))["integer tiles"])
        XCTAssertEqual(model.linearParameters, report.quantizedParameters)
        // The embedding and head are counted as stored: the head whole, an untied embedding in the
        // rows one step can touch.
        let c = m.config
        let values = Double(c.vocabSize * c.hiddenSize)
        model.embeddingBytesPerValue = Double(w.embedding.weightBytes) / values
        model.headBytesPerValue = Double((w.head ?? w.embedding).weightBytes) / values
        let norms = 4 * c.hiddenSize * (2 * c.numLayers + 1)
        let rows = c.tieWordEmbeddings ? 0 : min(c.vocabSize, 2 * 24)
        let expected = (w.head ?? w.embedding).weightBytes + w.embedding.weightBytes * rows / c.vocabSize + norms
        let stored = Dictionary(uniqueKeysWithValues: model.breakdown(training: true))
        XCTAssertEqual(stored["embeddings, norms, head"]!, expected)
    }
}
