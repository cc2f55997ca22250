import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRAQuant
@testable import LowRATensor
@testable import LowRATrain
@testable import LowRAPipeline
@testable import LowRAAdapters

/// Tuning the quantized base (`BaseTuner`, `finetune/repair --codebook-lr / --scale-lr`): the
/// gradients of the levels and of the block scales against finite differences through the whole
/// model, the per-level and per-block sums against direct ones, and an exact resume of a run that
/// tunes them.
final class BaseTuningTests: XCTestCase {
    /// ∂L/∂levels and ∂L/∂(block scale): the tuner's gradients (dyᵀx summed per code, per block)
    /// against central differences of the loss in single levels and single block scales of packed
    /// layers of a 1.5-bit tiny model (1- and 2-bit rows; fp32 scales, so a perturbed scale is
    /// exactly the scale the model runs).
    func testLevelAndScaleGradientsMatchFiniteDifferences() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf"))
        var request = QuantizeRequest(method: .lowra, bits: 1.5)
        request.options.doubleQuant = false
        let weights = try m.model.weights.quantized(request).weights
        var adapter = try LoRAAdapter(config: m.config, rank: 2)
        adapter.initializeKaiming(seed: 3)
        let graph = try TrainingGraph(
            config: m.config, weights: weights, batch: 2, seq: 6, rank: 2, headChunk: 5, integerForward: false)
        let tuner = try BaseTuner(weights: weights, levels: true, scales: true)
        tuner.attach(to: graph)
        var rng = SplitMix64(seed: 9)
        let inputs = (0..<12).map { _ in Int(rng.next() % UInt64(m.config.vocabSize)) }
        let targets = (0..<12).map { i in i % 5 == 4 ? -1 : Int(rng.next() % UInt64(m.config.vocabSize)) }
        var grad = [Float](repeating: 0, count: adapter.values.count)
        tuner.zeroGradients()
        let (_, count) = try graph.lossAndGradient(inputs: inputs, targets: targets, adapter: adapter, gradient: &grad)
        let (gl, gs) = (tuner.levelGradient, tuner.scaleGradient)
        XCTAssertEqual(tuner.layers.count, m.config.numLayers * LinearKind.allCases.count)
        var levelPairs = [(numeric: Double, analytic: Double)]()
        var scalePairs = [(numeric: Double, analytic: Double)]()
        for layer in tuner.layers {
            let p = layer.packed
            func loss(_ packed: PackedLinear) throws -> Double {
                graph.replaceLinear(layer.block, layer.kind, with: Linear(packed: packed, bias: layer.bias))
                return try graph.loss(inputs: inputs, targets: targets, adapter: adapter).loss
            }
            for _ in 0..<3 {
                let k = Int(rng.next() % UInt64(p.levels.count))
                let eps: Float = 1e-2
                func levelLoss(_ delta: Float) throws -> Double {
                    var levels = p.levels
                    levels[k] += delta
                    return try loss(try p.withLevels(levels))
                }
                let levelNumeric = (try levelLoss(eps) - levelLoss(-eps)) / Double(count) / Double(2 * eps)
                levelPairs.append((levelNumeric, Double(gl[layer.levelOffset + k])))
                let b = Int(rng.next() % UInt64(p.blockCount))
                let h = max(1e-4, 2e-2 * p.absmax.value(b))
                func scaleLoss(_ delta: Float) throws -> Double {
                    var raw = p.absmax.decoded(count: p.blockCount)
                    raw[b] += delta
                    return try loss(try p.with(levels: p.levels, absmax: AbsmaxStorage(raw: raw, doubleQuant: false)))
                }
                let scaleNumeric = (try scaleLoss(h) - scaleLoss(-h)) / Double(count) / Double(2 * h)
                scalePairs.append((scaleNumeric, Double(gs[layer.scaleOffset + b])))
            }
            _ = try loss(p)
        }
        XCTAssertLessThanOrEqual(gradientMismatch(levelPairs), 3e-3)
        XCTAssertLessThanOrEqual(gradientMismatch(scalePairs), 3e-3)
        XCTAssertGreaterThan(scalePairs.map { abs($0.analytic) }.max()!, 1e-4)
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
        var gotScales = [Float](repeating: 0, count: p.blockCount)
        dW.withUnsafeBufferPointer { d in
            got.withUnsafeMutableBufferPointer { gl in
                gotScales.withUnsafeMutableBufferPointer {
                    p.accumulateGradients(d.baseAddress!, levels: gl.baseAddress!, scales: $0.baseAddress!)
                }
            }
        }
        let nb = (inF + 63) / 64
        var want = [Double](repeating: 0, count: p.levels.count)
        var wantScales = [Double](repeating: 0, count: p.blockCount)
        for r in 0..<out {
            let b = Int(p.bits[r])
            for j in 0..<inF {
                let bit = j * b
                let code = Int(p.codes[p.rowOffsets[r] + bit / 8] >> UInt8(bit % 8)) & ((1 << b) - 1)
                want[p.levelOffsets[r] + code] += Double(p.absmax.value(r * nb + j / 64)) * Double(dW[r * inF + j])
                wantScales[r * nb + j / 64] += Double(p.levels[p.levelOffsets[r] + code]) * Double(dW[r * inF + j])
            }
        }
        for i in want.indices { XCTAssertEqual(Double(got[i]), want[i], accuracy: 1e-4 * (1 + abs(want[i]))) }
        for i in wantScales.indices {
            XCTAssertEqual(Double(gotScales[i]), wantScales[i], accuracy: 1e-4 * (1 + abs(wantScales[i])))
        }
        // withLevels keeps codes and scales: the weight is each code's new level times its scale.
        let doubled = try p.withLevels(p.levels.map { 2 * $0 })
        for (a, b) in zip(doubled.dequantized(), p.dequantized()) { XCTAssertEqual(a, 2 * b, accuracy: 1e-6) }
    }

    /// A run that tunes the levels and the block scales resumes from its checkpoint to the same
    /// losses, adapter, levels and scales; the tuned levels differ from the start and stay on each
    /// row's grid, the scales move, and the saved file rebuilds the base the run ended on.
    func testBaseTuningResumesExactly() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let w = try m.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2)).weights
        let text = String(repeating: "First Citizen: before we proceed any further, hear me speak. ", count: 20)
        let path = "\(try temporaryDirectory(self))/t.txt"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let data = try TrainingData.text(path, tokenizer: m.tokenizer, seq: 8)
        var adapter = try LoRAAdapter(config: m.config, rank: 2)
        adapter.initializeKaiming(seed: 5)
        var o = FinetuneOptions()
        (o.steps, o.lr, o.batch, o.seq, o.saveEvery, o.codebookLR, o.scaleLR) = (8, 5e-3, 2, 8, 3, 1e-2, 1e-2)
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
        XCTAssertEqual(resumed.baseTuner!.levels, whole.baseTuner!.levels)
        XCTAssertEqual(resumed.baseTuner!.scaleFactors, whole.baseTuner!.scaleFactors)
        let tuner = whole.baseTuner!
        XCTAssertNotEqual(tuner.levels, tuner.layers.flatMap(\.packed.levels))
        XCTAssertTrue(tuner.scaleFactors.contains { $0 != 1 })
        let file = "\(try temporaryDirectory(self))/\(BaseTuner.file)"
        try tuner.save(to: file)
        let rebuilt = try BaseTuner.apply(file, to: w)
        for (i, layer) in tuner.layers.enumerated() {
            let (got, want) = (rebuilt.blocks[layer.block][layer.kind].packed!, try tuner.tunedLinear(i))
            XCTAssertEqual(got.dequantized(), want.dequantized())
        }
        for i in tuner.layers.indices {
            var snapped = tuner.snappedLevels(i)
            let again = snapped
            let p = tuner.layers[i].packed
            snapToIntegerLevels(&snapped, rowOffsets: p.levelOffsets + [p.levels.count])
            XCTAssertEqual(snapped, again)
        }
    }
}
