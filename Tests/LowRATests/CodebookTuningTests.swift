import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRAQuant
@testable import LowRATensor
@testable import LowRATrain
@testable import LowRAPipeline
@testable import LowRAAdapters

/// Codebook tuning (`CodebookTuner`, `finetune/repair --codebook-lr`): the levels' gradient
/// against finite differences through the whole model, the per-level sum against a direct one,
/// and an exact resume of a run that tunes them.
final class CodebookTuningTests: XCTestCase {
    /// ∂L/∂levels: the tuner's gradient (dyᵀx summed per code) against central differences of the
    /// loss in single levels of packed layers of a 1.5-bit tiny model (1- and 2-bit rows).
    func testLevelGradientMatchesFiniteDifferences() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf"))
        let weights = try m.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 1.5)).weights
        var adapter = try LoRAAdapter(config: m.config, rank: 2)
        adapter.initializeKaiming(seed: 3)
        let graph = try TrainingGraph(config: m.config, weights: weights, batch: 2, seq: 6, rank: 2, headChunk: 5)
        let tuner = try CodebookTuner(weights: weights)
        tuner.attach(to: graph)
        var rng = SplitMix64(seed: 9)
        let inputs = (0..<12).map { _ in Int(rng.next() % UInt64(m.config.vocabSize)) }
        let targets = (0..<12).map { i in i % 5 == 4 ? -1 : Int(rng.next() % UInt64(m.config.vocabSize)) }
        var grad = [Float](repeating: 0, count: adapter.values.count)
        tuner.zeroGradients()
        let (_, count) = try graph.lossAndGradient(inputs: inputs, targets: targets, adapter: adapter, gradient: &grad)
        let g = tuner.gradient
        XCTAssertEqual(tuner.layers.count, m.config.numLayers * LinearKind.allCases.count)
        let eps: Float = 1e-2
        var pairs = [(numeric: Double, analytic: Double)]()
        for layer in tuner.layers {
            for _ in 0..<3 {
                let k = Int(rng.next() % UInt64(layer.packed.levels.count))
                func loss(_ delta: Float) throws -> Double {
                    var levels = layer.packed.levels
                    levels[k] += delta
                    let linear = Linear(packed: try layer.packed.withLevels(levels), bias: layer.bias)
                    graph.replaceLinear(layer.block, layer.kind, with: linear)
                    return try graph.loss(inputs: inputs, targets: targets, adapter: adapter).loss
                }
                let num = (try loss(eps) - loss(-eps)) / Double(count) / Double(2 * eps)
                _ = try loss(0)
                pairs.append((num, Double(g[layer.offset + k])))
            }
        }
        XCTAssertLessThanOrEqual(gradientMismatch(pairs), 3e-3)
    }

    /// The per-level sum on a random packed layer against the direct sum over its dequantized
    /// weights' codes: Σ_j [code_rj = k] a_r,b(j) dW_rj.
    func testLevelGradientEqualsTheDirectSum() throws {
        var rng = SplitMix64(seed: 4)
        let (out, inF) = (24, 150)
        let bits = (0..<out).map { UInt8([1, 2, 4][$0 % 3]) }
        let size = PackedLinear.arraySizes(
            outFeatures: out, inFeatures: inF, bits: bits, doubleQuant: true, scope: .channel)
        let p = try PackedLinear(
            outFeatures: out, inFeatures: inF, bits: bits,
            codes: (0..<size.codes).map { _ in UInt8(truncatingIfNeeded: rng.next()) },
            absmax: AbsmaxStorage(raw: (0..<size.absmax).map { _ in Float(rng.nextUnit() * 0.1) }, doubleQuant: true),
            levels: (0..<size.levels).map { _ in Float(rng.nextUnit() * 2 - 1) }, scope: .channel)
        let dW = (0..<(out * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        var got = [Float](repeating: 0, count: p.levels.count)
        dW.withUnsafeBufferPointer { d in
            got.withUnsafeMutableBufferPointer { p.accumulateLevelGradient(d.baseAddress!, into: $0.baseAddress!) }
        }
        let nb = (inF + 63) / 64
        var want = [Double](repeating: 0, count: p.levels.count)
        for r in 0..<out {
            let b = Int(p.bits[r])
            for j in 0..<inF {
                let bit = j * b
                let code = Int(p.codes[p.rowOffsets[r] + bit / 8] >> UInt8(bit % 8)) & ((1 << b) - 1)
                want[p.levelOffsets[r] + code] += Double(p.absmax.value(r * nb + j / 64)) * Double(dW[r * inF + j])
            }
        }
        for i in want.indices { XCTAssertEqual(Double(got[i]), want[i], accuracy: 1e-4 * (1 + abs(want[i]))) }
        // withLevels keeps codes and scales: the weight is each code's new level times its scale.
        let doubled = try p.withLevels(p.levels.map { 2 * $0 })
        for (a, b) in zip(doubled.dequantized(), p.dequantized()) { XCTAssertEqual(a, 2 * b, accuracy: 1e-6) }
    }

    /// A run that tunes the levels resumes from its checkpoint to the same losses, adapter and
    /// levels; the tuned levels differ from the start and stay on each row's grid.
    func testCodebookTuningResumesExactly() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let w = try m.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2)).weights
        let text = String(repeating: "First Citizen: before we proceed any further, hear me speak. ", count: 20)
        let path = "\(try temporaryDirectory(self))/t.txt"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let data = try TrainingData.text(path, tokenizer: m.tokenizer, seq: 8)
        var adapter = try LoRAAdapter(config: m.config, rank: 2)
        adapter.initializeKaiming(seed: 5)
        var o = FinetuneOptions()
        (o.steps, o.lr, o.batch, o.seq, o.saveEvery, o.codebookLR) = (8, 5e-3, 2, 8, 3, 1e-2)
        func trainer(_ dir: String) throws -> Trainer {
            try Trainer(
                config: m.config, weights: w, baseFingerprint: "b", adapter: adapter, train: data, valid: nil,
                options: o, outDir: dir)
        }
        let whole = try trainer(try temporaryDirectory(self))
        let r0 = try whole.run()
        let dir = try temporaryDirectory(self)
        _ = try trainer(dir).run(until: 5)
        let resumed = try trainer(dir)
        let r1 = try resumed.run(resume: true)
        XCTAssertEqual(r1.resumedFrom, 3)
        XCTAssertEqual(r1.log.map(\.trainLoss), r0.log.map(\.trainLoss))
        XCTAssertEqual(resumed.adapter, whole.adapter)
        XCTAssertEqual(resumed.codebooks!.master, whole.codebooks!.master)
        let tuner = whole.codebooks!
        XCTAssertNotEqual(tuner.master, tuner.layers.flatMap(\.packed.levels))
        for i in tuner.layers.indices {
            var snapped = tuner.snappedLevels(i)
            let again = snapped
            let p = tuner.layers[i].packed
            snapToIntegerLevels(&snapped, rowOffsets: p.levelOffsets + [p.levels.count])
            XCTAssertEqual(snapped, again)
        }
    }
}
