import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRAQuant
@testable import LowRATensor
@testable import LowRAPipeline
@testable import LowRABench

/// Mixed-adapter batched decoding (`BatchDecoder`) against each sequence decoded alone.
final class BatchDecodeTests: XCTestCase {
    func greedy(_ logits: [Float]) -> Int {
        var s = Sampler(SamplingOptions(temperature: 0))
        return s.sample(logits[...])
    }

    func randomAdapter(_ config: ModelConfig, seed: UInt64) throws -> LoRAAdapter {
        var a = try LoRAAdapter(config: config, rank: 4, alpha: 8)
        var rng = SplitMix64(seed: seed)
        for i in a.values.indices { a.values[i] = Float(rng.nextUnit() - 0.5) * 0.2 }
        return a
    }

    /// Nineteen sequences (more than one kernel call of 16 columns) over three adapters and the bare
    /// base, joining and leaving at different steps: every row's logits at every step equal bit for
    /// bit those of the same sequence decoded alone with `LanguageModel.forward` — for a base in its
    /// file's encoding, packed at 2 bits, and expanded to fp32 (row by row).
    func testBatchedDecodeEqualsEachSequenceDecodedAlone() throws {
        let src = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let packed = try src.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2)).weights
        let bases: [(String, ModelWeights)] = [
            ("stored", src.model.weights), ("packed", packed), ("fp32", src.model.weights.expandedToFP32()),
        ]
        let c = src.config
        let adapters: [LoRAAdapter?] = [
            nil, try randomAdapter(c, seed: 1), try randomAdapter(c, seed: 2),
            try randomAdapter(c, seed: 3),
        ]
        let count = 19
        let steps = 6
        var rng = SplitMix64(seed: 7)
        let prompts = (0..<count).map { i in (0..<(1 + i % 5)).map { _ in Int(rng.next() % UInt64(c.vocabSize)) } }
        let joins = (0..<count).map { $0 % 3 }  // the step a sequence joins at
        for (name, weights) in bases {
            let model = try LanguageModel(config: c, weights: weights)
            // Alone: prefill, then one token at a time (greedy), keeping every step's logits.
            var alone = [[[Float]]]()
            for i in 0..<count {
                let cache = KVCache(config: c, capacity: 32)
                let adapter = adapters[i % adapters.count]
                var logits = try model.forward(prompts[i], cache: cache, logits: .last, adapter: adapter)
                var rows = [[Float]]()
                for _ in 0..<steps {
                    let next = greedy(logits)
                    logits = try model.forward([next], cache: cache, logits: .last, adapter: adapter)
                    rows.append(logits)
                }
                alone.append(rows)
            }
            // Batched: the same prefills, then decode steps over whoever is active.
            let decoder = BatchDecoder(model: model, maxRows: count)
            var caches = [KVCache?](repeating: nil, count: count)
            var last = [[Float]](repeating: [], count: count)
            var done = [Int](repeating: 0, count: count)
            var step = 0
            while done.contains(where: { $0 < steps }) {
                for i in 0..<count where joins[i] == step {
                    caches[i] = KVCache(config: c, capacity: 32)
                    last[i] = try model.forward(
                        prompts[i], cache: caches[i]!, logits: .last, adapter: adapters[i % adapters.count])
                }
                let active = (0..<count).filter { caches[$0] != nil && done[$0] < steps }
                let rows = active.map { i in
                    DecodeRow(
                        token: greedy(last[i]), cache: caches[i]!,
                        adapter: adapters[i % adapters.count])
                }
                let out = try decoder.step(rows)
                for (j, i) in active.enumerated() {
                    last[i] = Array(out[(j * c.vocabSize)..<((j + 1) * c.vocabSize)])
                    XCTAssertTrue(
                        last[i] == alone[i][done[i]],
                        "\(name): sequence \(i), step \(done[i]): relative L2 \(relativeL2(last[i], alone[i][done[i]]))"
                    )
                    done[i] += 1
                }
                step += 1
            }
        }
    }

    /// The same prompt through the one block definition in both of its callers, against the float64
    /// numpy forward (`Tests/Fixtures/tiny_logits.json`): fed one token at a time through the
    /// single-sequence forward (`LanguageModel.forward`, KV cache) and as three rows of batched decode
    /// steps (`BatchDecoder`, each row its own cache), every position's logits are within the f16
    /// KV cache's rounding of the reference (2⁻¹¹ relative per key and value: 5·10⁻³ of the logits at
    /// most on these random models, 1% allowed, as for decode against prefill), and the two paths
    /// agree bit for bit.
    func testSinglePathAndBatchedPathMatchTheNumpyReference() throws {
        let root = try loadJSON("tiny_logits.json") as! [String: Any]
        let tokens = root["tokens"] as! [Int]
        for name in ["tiny_hf", "tiny.gguf", "tiny_hf_bias_f16"] {
            let want = ((root["models"] as! [String: [String: Any]])[name]!["logits"] as! [NSNumber]).map(\.doubleValue)
            let loaded = try LoadedModel.load(Paths.fixture(name))
            let (c, V) = (loaded.config, loaded.config.vocabSize)
            let cache = KVCache(config: c, capacity: tokens.count)
            var single = [Float]()
            for t in tokens { single += try loaded.model.forward([t], cache: cache, logits: .last) }
            let decoder = BatchDecoder(model: loaded.model, maxRows: 3)
            let caches = (0..<3).map { _ in KVCache(config: c, capacity: tokens.count) }
            var batched = [[Float]](repeating: [], count: 3)
            for t in tokens {
                let out = try decoder.step(caches.map { DecodeRow(token: t, cache: $0, adapter: nil) })
                for r in 0..<3 { batched[r] += out[(r * V)..<((r + 1) * V)] }
            }
            XCTAssertEqual(single.count, want.count, name)
            let (diff, at) = maxRelativeDifference(single, want)
            XCTAssertLessThanOrEqual(
                diff, 1e-2, "\(name): largest difference \(diff) at \(at): \(single[at]) vs \(want[at])")
            XCTAssertLessThanOrEqual(relativeL2(single, want.map(Float.init)), 1e-3, name)
            for r in 0..<3 {
                XCTAssertTrue(batched[r] == single, "\(name): batched row \(r) differs from one sequence")
            }
        }
    }

    /// The decode tiles' size is known exactly before they are built (what decides whether they fit).
    func testDecodeTileEstimateMatchesTheTilesBuilt() throws {
        let src = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let packed = try src.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2)).weights
        let estimate = packed.decodeTileBytesEstimate
        XCTAssertGreaterThan(estimate, 0)
        guard KernelPath.usesTiles(KernelPath.current) else { return }
        let built = packed.prepareDecode()
        XCTAssertEqual(built, estimate)
    }

    func testBatchedDecodeRefusesBadRows() throws {
        let src = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let c = src.config
        let decoder = BatchDecoder(model: src.model, maxRows: 2)
        let cache = KVCache(config: c, capacity: 1)
        XCTAssertThrowsError(try decoder.step([]))
        XCTAssertThrowsError(try decoder.step([DecodeRow(token: c.vocabSize, cache: cache, adapter: nil)]))
        XCTAssertThrowsError(
            try decoder.step([
                DecodeRow(token: 1, cache: cache, adapter: nil), DecodeRow(token: 2, cache: cache, adapter: nil),
            ]))
        _ = try decoder.step([DecodeRow(token: 1, cache: cache, adapter: nil)])
        XCTAssertThrowsError(try decoder.step([DecodeRow(token: 1, cache: cache, adapter: nil)])) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("full"))
        }
    }
}
