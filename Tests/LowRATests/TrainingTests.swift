import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATrain

final class TrainingTests: XCTestCase {
    /// A tiny model (fixture), optionally quantized, with a random non-zero adapter.
    private func setup(_ path: String, quantize bits: Double? = nil, rank: Int = 2, seed: UInt64 = 1)
        throws -> (LlamaConfig, LlamaWeights, LoRAAdapter)
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

    /// The whole model's LoRA gradient against central differences of its mean loss, for an fp32
    /// and a packed 2-bit base, both RoPE layouts (HF half-split and GGUF interleaved), GQA, and
    /// q/k/v bias. fp32, eps 1e-2; stated tolerance: relative error of the sampled gradient
    /// vector ≤ 2e-3.
    func testWholeModelGradientMatchesFiniteDifferences() throws {
        let cases: [(String, Double?)] = [
            ("tiny_hf", nil), ("tiny.gguf", nil), ("tiny_hf_bias_f16", nil), ("tiny.gguf", 2),
        ]
        for (fixture, bits) in cases {
            let (config, weights, adapter) = try setup(Paths.fixture(fixture), quantize: bits)
            let graph = try TrainingGraph(config: config, weights: weights, batch: 2, seq: 6, rank: adapter.rank, headChunk: 5)
            let (inputs, targets) = randomBatch(12, vocab: config.vocabSize, seed: 7)
            var grad = [Float](repeating: 0, count: adapter.values.count)
            let (sum, count) = try graph.lossAndGradient(inputs: inputs, targets: targets, adapter: adapter, gradient: &grad)
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
            var d = 0.0, norm = 0.0
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
            XCTAssertLessThanOrEqual(rel, 2e-3, "\(fixture) bits \(bits.map { "\($0)" } ?? "fp32"): relative error \(rel)")
            XCTAssertGreaterThan(norm, 1e-6)
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
            let model = try LlamaModel(config: config, weights: adapter.applied(to: weights))
            var total = 0.0
            for b in 0..<2 {
                let logits = try model.forward(Array(inputs[(b * 8)..<(b * 8 + 8)]), cache: KVCache(config: config, capacity: 8))
                let r = logits.withUnsafeBufferPointer {
                    crossEntropyForwardBackward(nil, $0.baseAddress!, targets: Array(targets[(b * 8)..<(b * 8 + 8)]), vocab: config.vocabSize)
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
