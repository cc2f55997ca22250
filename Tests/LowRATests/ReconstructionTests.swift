import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRAPipeline
@testable import LowRAQuant
@testable import LowRATensor
@testable import LowRATrain

/// Block reconstruction (`reconstructBlocks`, `lowra reconstruct`): the block-output loss's weight
/// gradient against finite differences, the quantizer's scale and level gradients against finite
/// differences with the codes held, the straight-through gradient of the latent weights, and a
/// reconstruction of a tiny model that lowers every block's error and freezes exactly.
final class ReconstructionTests: XCTestCase {
    /// ∂L/∂W = dyᵀx of every linear layer of a block, L the mean squared error of the block's
    /// output to a random target, against central differences in single weights (fp32 tiny model).
    func testBlockLossGradientMatchesFiniteDifferences() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf"))
        let (C, batch, seq) = (m.config.hiddenSize, 2, 5)
        let graph = try TrainingGraph(
            config: m.config, weights: m.model.weights, batch: batch, seq: seq, rank: 0, headChunk: 1,
            recompute: true)
        var rng = SplitMix64(seed: 4)
        func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextUnit() * 2 - 1) } }
        let input = random(batch * seq * C)
        let target = random(batch * seq * C)
        let l = 1
        var grads = [LinearKind: [Float]]()
        graph.observeLinearGradient = { layer, kind, dy, x, rows in
            XCTAssertEqual(layer, l)
            let lin = m.model.weights.blocks[l][kind]
            var g = [Float](repeating: 0, count: lin.outFeatures * lin.inFeatures)
            matmulTransA(dy, x, &g, m: lin.outFeatures, n: lin.inFeatures, k: rows)
            grads[kind] = g
        }
        _ = graph.blockReconstructionLoss(l, input: input, target: target, gradient: true)
        graph.observeLinearGradient = nil
        XCTAssertEqual(Set(grads.keys), Set(LinearKind.allCases))
        let eps: Float = 1e-2
        var pairs = [(numeric: Double, analytic: Double)]()
        for kind in LinearKind.allCases {
            let lin = m.model.weights.blocks[l][kind]
            for _ in 0..<4 {
                let i = Int(rng.next() % UInt64(lin.outFeatures * lin.inFeatures))
                func loss(_ delta: Float) -> Double {
                    var w = lin.weight
                    w[i] += delta
                    graph.replaceLinear(
                        l, kind, with: Linear(outFeatures: lin.outFeatures, inFeatures: lin.inFeatures, weight: w))
                    return graph.blockReconstructionLoss(l, input: input, target: target, gradient: false)
                }
                pairs.append(((loss(eps) - loss(-eps)) / Double(2 * eps), Double(grads[kind]![i])))
                _ = loss(0)
            }
        }
        XCTAssertLessThanOrEqual(gradientMismatch(pairs), 3e-3)
    }

    /// The quantizer's backward for L = Σ G ⊙ Q with random G: the scale and level gradients
    /// against central differences of the forward (perturbations small enough that no code moves,
    /// checked), and the latent gradient G itself where |w'| ≤ s, zero outside.
    func testQuantizerGradientsMatchFiniteDifferencesWithTheCodesHeld() throws {
        var rng = SplitMix64(seed: 11)
        let (out, inF) = (6, 150)  // a partial last block
        let w = (0..<(out * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) * 0.1 }
        let a = analyzeTensor(w, out: out, in: inF, options: QuantizerOptions())
        let bits: [UInt8] = [1, 2, 4, 2, 4, 1]
        var layer = try TrainableQuantized(try a.pack(w, bits: bits))
        for i in layer.latent.indices { layer.latent[i] += Float(rng.nextUnit() * 2 - 1) * 0.004 }
        layer.latent[3] = 5  // far outside its block's absmax: no straight-through gradient
        let g = (0..<(out * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        func forward(_ l: TrainableQuantized) -> (q: [Float], codes: [UInt8]) {
            var q = [Float](repeating: 0, count: out * inF)
            var c = [UInt8](repeating: 0, count: out * inF)
            q.withUnsafeMutableBufferPointer { qb in
                c.withUnsafeMutableBufferPointer { l.forward(weight: qb.baseAddress!, codes: $0.baseAddress!) }
            }
            return (q, c)
        }
        let (_, codes) = forward(layer)
        var gLatent = [Float](repeating: 0, count: layer.latent.count)
        var gScales = [Float](repeating: 0, count: layer.scales.count)
        var gLevels = [Float](repeating: 0, count: layer.levels.count)
        layer.backward(g, codes: codes, latent: &gLatent, scales: &gScales, levels: &gLevels)
        for i in layer.latent.indices {
            let s = layer.scales[(i / inF) * layer.blocksPerRow + (i % inF) / 64]
            XCTAssertEqual(gLatent[i], abs(layer.latent[i]) <= s ? g[i] : 0)
        }
        XCTAssertEqual(gLatent[3], 0)
        func lossAndCodes(_ l: TrainableQuantized) -> (Double, [UInt8]) {
            let (q, c) = forward(l)
            return (zip(q, g).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }, c)
        }
        // Central differences in one parameter (a relative step of the scales, an absolute one of
        // the levels), skipped where a code would move: the loss is smooth only while they hold.
        var checked = 0
        func check(
            _ count: Int, _ analytic: [Float], tolerance: Double, step: (Int) -> Float,
            perturb: (inout TrainableQuantized, Int, Float) -> Void
        ) {
            for i in 0..<count {
                let eps = step(i)
                var (plus, minus) = (layer, layer)
                perturb(&plus, i, eps)
                perturb(&minus, i, -eps)
                let ((lp, cp), (lm, cm)) = (lossAndCodes(plus), lossAndCodes(minus))
                guard cp == codes && cm == codes else { continue }
                let got = Double(analytic[i])
                XCTAssertEqual((lp - lm) / Double(2 * eps), got, accuracy: tolerance * max(1, abs(got)))
                checked += 1
            }
        }
        check(layer.scales.count, gScales, tolerance: 1e-3, step: { layer.scales[$0] * 1e-3 }) { $0.scales[$1] += $2 }
        check(layer.levels.count, gLevels, tolerance: 2e-3, step: { _ in 1e-4 }) { $0.levels[$1] += $2 }
        XCTAssertGreaterThan(checked, (layer.scales.count + layer.levels.count) / 2)
    }

    /// A 2-bit tiny model reconstructed against its fp32 source with an initial adapter: the packed
    /// layers start exactly at the quantized model, no block's error goes up, some go down, the
    /// adapter trains, the frozen levels sit on their integer grids, and the result is a model that runs.
    func testReconstructionLowersTheBlocksErrorsOnATinyModel() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf"))
        let quantized = try m.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2)).weights
        let start = try TrainableQuantized(quantized.blocks[0][.q].packed!)
        var q = [Float](repeating: 0, count: start.latent.count)
        var c = [UInt8](repeating: 0, count: q.count)
        q.withUnsafeMutableBufferPointer { qb in
            c.withUnsafeMutableBufferPointer { start.forward(weight: qb.baseAddress!, codes: $0.baseAddress!) }
        }
        XCTAssertEqual(q, quantized.blocks[0][.q].packed!.dequantized())
        var rng = SplitMix64(seed: 2)
        let tokens = (0..<256).map { _ in Int(rng.next() % UInt64(m.config.vocabSize)) }
        var o = ReconstructionOptions()
        (o.sequences, o.tokens, o.batch, o.epochs) = (8, 16, 2, 3)
        o.weightLR = 2e-2
        var seen = 0
        var adapter = try LoRAAdapter(config: m.config, rank: 2)
        adapter.initializeKaiming(seed: 5)
        let (weights, trained, reports) = try reconstructBlocks(
            source: m.model.weights, quantized: quantized, config: m.config, calibration: tokens, adapter: adapter,
            options: o
        ) { _ in seen += 1 }
        XCTAssertNotEqual(trained?.values, adapter.values)  // the adapter's factors trained beside the blocks
        XCTAssertEqual(reports.count, m.config.numLayers)
        XCTAssertEqual(seen, m.config.numLayers)
        for r in reports {
            XCTAssertEqual(r.steps, 12)
            if r.kept { XCTAssertLessThan(r.lossAfter, r.lossBefore) }
        }
        XCTAssertTrue(reports.contains { $0.kept && $0.codesChanged > 0 }, "\(reports)")
        for (l, block) in weights.blocks.enumerated() {
            for kind in LinearKind.allCases {
                let p = block[kind].packed!
                var levels = p.levels
                snapToIntegerLevels(&levels, rowOffsets: p.levelOffsets + [p.levels.count])
                XCTAssertEqual(levels, p.levels, "block \(l) \(kind): levels off their integer grid")
            }
        }
        let model = try LanguageModel(config: m.config, weights: weights)
        let logits = try model.forward(Array(tokens.prefix(8)), cache: KVCache(config: m.config, capacity: 8))
        XCTAssertTrue(logits.allSatisfy(\.isFinite))
    }

    /// Bad options are refused with a clear error.
    func testReconstructionRefusesBadOptions() throws {
        var o = ReconstructionOptions()
        o.sequences = 0
        XCTAssertThrowsError(try o.validate())
        o = ReconstructionOptions()
        o.weightLR = .nan
        XCTAssertThrowsError(try o.validate())
        let m = try LoadedModel.load(Paths.fixture("tiny_hf"))
        let quantized = try m.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2)).weights
        XCTAssertThrowsError(
            try reconstructBlocks(
                source: m.model.weights, quantized: quantized, config: m.config, calibration: [1, 2, 3],
                options: ReconstructionOptions())
        ) { XCTAssertTrue("\($0)".contains("calibration tokens"), "\($0)") }
    }
}
