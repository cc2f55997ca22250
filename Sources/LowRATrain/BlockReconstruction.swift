import Foundation
import LowRAIO
import LowRAModel
import LowRAQuant
import LowRATensor

// Block reconstruction with moving codes (in the spirit of EfficientQAT's Block-AP): block by
// block, in model order, every packed layer of the block is trained through the quantizer
// (`TrainableQuantized`: latent weights that choose the codes by a straight-through estimator,
// block scales and per-row levels) so that the quantized block, run on the hidden states the
// already reconstructed blocks produce, matches the full-precision block's outputs on the
// full-precision model's own hidden states (mean squared error). Then codes, scales and levels
// are frozen back into the packed format. A task-agnostic quantizer, run once; what is frozen
// during task fine-tuning does not change.

/// How much block reconstruction trains (its JSON keys are the names in snake case).
public struct ReconstructionOptions: Codable, Sendable, Equatable {
    /// Calibration sequences and their length in tokens (taken in order from the text's tokens).
    public var sequences = 32
    public var tokens = 128
    /// Sequences per step, and passes over the calibration sequences per block.
    public var batch = 4
    public var epochs = 4
    /// Adam learning rates: latent weights and block scales relative to each layer's mean block
    /// scale (its weights' typical absmax), levels in normalized units (in [-1, 1]).
    public var weightLR: Float = 5e-3
    public var scaleLR: Float = 5e-3
    public var levelLR: Float = 1e-3
    /// Adam learning rate of the initial adapter's factors, trained beside the block when one is given.
    public var adapterLR: Float = 1e-3
    /// Seeds the order of the sequences in each epoch.
    public var seed: UInt64 = 0

    public init() {}

    /// These options with sequences no longer than `context` tokens and no more of them than
    /// `tokenCount` calibration tokens hold (at least one).
    public func fitted(tokenCount: Int, context: Int) -> ReconstructionOptions {
        var o = self
        o.tokens = max(2, min(tokens, context))
        o.sequences = max(1, min(sequences, tokenCount / o.tokens))
        return o
    }

    public func validate() throws {
        guard sequences >= 1, tokens >= 2, batch >= 1, epochs >= 0 else {
            throw LowRAError(.invalidArgument, "reconstruction: sequences, batch positive; tokens at least 2")
        }
        guard [weightLR, scaleLR, levelLR, adapterLR].allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw LowRAError(.invalidArgument, "reconstruction: learning rates must be finite and not negative")
        }
    }
}

/// What reconstruction did to one block (its JSON keys are the names in snake case).
public struct BlockReconstructionReport: Codable, Sendable, Equatable {
    public var block: Int
    /// Mean squared error of the block's output to the full-precision block's, before and after
    /// (after: with the frozen packed layers). A block that came out worse keeps its old layers.
    public var lossBefore: Double
    public var lossAfter: Double
    public var kept: Bool
    /// Fraction of the block's codes that moved.
    public var codesChanged: Double
    public var steps: Int
    public var tokens: Int
    public var seconds: Double
}

/// Reconstructs every block of `quantized` (packed layers with per-row codebooks) against
/// `source` (the full-precision model it was quantized from) on the calibration token stream.
/// With `adapter` (the quantized model's initial adapter, e.g. CLoQ's), the block runs with it and
/// its factors train beside the block: the quantized weights learn to complement it.
/// progress(report) after each block. Returns the model with reconstructed blocks, the adapter
/// and a report per block.
public func reconstructBlocks(
    source: ModelWeights, quantized: ModelWeights, config: ModelConfig, calibration tokens: [Int],
    adapter initialAdapter: LoRAAdapter? = nil, options o: ReconstructionOptions,
    progress: ((BlockReconstructionReport) -> Void)? = nil
) throws -> (weights: ModelWeights, adapter: LoRAAdapter?, reports: [BlockReconstructionReport]) {
    try o.validate()
    let (S, T, C) = (o.sequences, o.tokens, config.hiddenSize)
    guard tokens.count >= S * T else {
        throw LowRAError(
            .invalidArgument,
            "reconstruction needs \(S * T) calibration tokens (\(S) sequences of \(T)); the text has \(tokens.count)")
    }
    guard source.blocks.count == quantized.blocks.count, source.blocks.count == config.numLayers else {
        throw LowRAError(.shapeMismatch, "reconstruction: the source and the quantized model differ in blocks")
    }
    let batch = min(o.batch, S)
    let batches = (S + batch - 1) / batch
    // Hidden states of every calibration sequence, (S·T, C): the full-precision model's and the
    // quantized model's, both starting as the embeddings.
    var xSource = [Float](repeating: 0, count: S * T * C)
    xSource.withUnsafeMutableBufferPointer { x in
        for r in 0..<(S * T) { source.embedding.row(tokens[r], into: x.baseAddress! + r * C) }
    }
    var xQuant = xSource
    var target = xSource
    let runner = BlockRunner(
        config: config, tokens: T, scratch: max(source.scratchFloats(rows: .max), quantized.scratchFloats(rows: .max)),
        rank: initialAdapter?.rank ?? 0)
    var model = quantized
    var adapter = initialAdapter
    var adapterGradient = [Float](repeating: 0, count: adapter?.values.count ?? 0)
    let graph = try TrainingGraph(
        config: config, weights: quantized, batch: batch, seq: T, rank: adapter?.rank ?? 0, headChunk: 1,
        recompute: true)
    var reports = [BlockReconstructionReport]()
    var rng = SplitMix64(seed: o.seed)
    func count(_ b: Int) -> Int { min(batch, S - b * batch) }
    for l in 0..<config.numLayers {
        let t0 = Date()
        // The targets: the full-precision block on its own model's hidden states, which are also
        // the next block's full-precision input.
        xSource.withUnsafeMutableBufferPointer { x in
            for b in 0..<batches {
                runner.run(source, l, x.baseAddress! + b * batch * T * C, sequences: count(b), adapter: nil)
            }
        }
        target = xSource

        let kinds = LinearKind.allCases.filter { model.blocks[l][$0].packed?.scope == .channel }
        guard !kinds.isEmpty else {
            xQuant.withUnsafeMutableBufferPointer { x in
                for b in 0..<batches {
                    runner.run(model, l, x.baseAddress! + b * batch * T * C, sequences: count(b), adapter: adapter)
                }
            }
            continue
        }
        let original = kinds.map { model.blocks[l][$0] }
        var layers = try kinds.map { try TrainableQuantized(model.blocks[l][$0].packed!) }
        let startCodes = layers.map { codesOf($0) }
        // Mean squared error over the calibration sequences of the block as the graph holds it.
        func blockLoss() -> Double {
            var total = 0.0
            for b in 0..<batches where count(b) == batch {
                total += xQuant.withUnsafeBufferPointer { x in
                    target.withUnsafeBufferPointer { y in
                        graph.blockReconstructionLoss(
                            l, input: x.baseAddress! + b * batch * T * C, target: y.baseAddress! + b * batch * T * C,
                            gradient: false, adapter: adapter)
                    }
                }
            }
            return total / Double(max(1, S / batch))
        }
        for (k, kind) in kinds.enumerated() { graph.replaceLinear(l, kind, with: original[k]) }
        let before = blockLoss()

        // Training: per layer, Q and its codes, ∂L/∂W from the graph, then the three gradients.
        var weightsQ = layers.map { [Float](repeating: 0, count: $0.outFeatures * $0.inFeatures) }
        var codes = layers.map { [UInt8](repeating: 0, count: $0.outFeatures * $0.inFeatures) }
        var dW = layers.map { [Float](repeating: 0, count: $0.outFeatures * $0.inFeatures) }
        // The three gradients of each layer (`backward` writes every entry).
        var gLatent = layers.map { [Float](repeating: 0, count: $0.latent.count) }
        var gScales = layers.map { [Float](repeating: 0, count: $0.scales.count) }
        var gLevels = layers.map { [Float](repeating: 0, count: $0.levels.count) }
        var adam = layers.map {
            (AdamW(count: $0.latent.count), AdamW(count: $0.scales.count), AdamW(count: $0.levels.count))
        }
        let scaleUnit = layers.map { l in l.scales.reduce(0, +) / Float(max(1, l.scales.count)) }
        let slot = Dictionary(uniqueKeysWithValues: kinds.enumerated().map { ($1, $0) })
        graph.observeLinearGradient = { layer, kind, dy, x, rows in
            guard layer == l, let k = slot[kind] else { return }
            dW[k].withUnsafeMutableBufferPointer {
                matmulTransA(dy, x, $0.baseAddress!, m: layers[k].outFeatures, n: layers[k].inFeatures, k: rows)
            }
        }
        defer { graph.observeLinearGradient = nil }
        // The adapter's factors of this block's layers, and their optimizer.
        let adapterRanges: [Range<Int>] = adapter.map { a in
            kinds.flatMap { kind -> [Range<Int>] in
                let s = a.slot(layer: l, kind: kind)
                return [
                    s.offsetA..<(s.offsetA + a.rank * s.inFeatures), s.offsetB..<(s.offsetB + s.outFeatures * a.rank),
                ]
            }
        } ?? []
        let adapterBefore = adapterRanges.map { r in adapter!.values[r] }
        var adapterAdam = AdamW(count: adapterRanges.reduce(0) { $0 + $1.count })
        var steps = 0
        for _ in 0..<o.epochs {
            var order = Array(0..<batches).filter { count($0) == batch }
            order.shuffle(using: &rng)
            for b in order {
                for k in layers.indices {
                    weightsQ[k].withUnsafeMutableBufferPointer { w in
                        codes[k].withUnsafeMutableBufferPointer {
                            layers[k].forward(weight: w.baseAddress!, codes: $0.baseAddress!)
                        }
                    }
                    graph.replaceLinear(
                        l, kinds[k],
                        with: Linear(
                            outFeatures: layers[k].outFeatures, inFeatures: layers[k].inFeatures, weight: weightsQ[k],
                            bias: original[k].bias))
                }
                for r in adapterRanges { for i in r { adapterGradient[i] = 0 } }
                let loss = xQuant.withUnsafeBufferPointer { x in
                    target.withUnsafeBufferPointer { y in
                        adapterGradient.withUnsafeMutableBufferPointer { g in
                            graph.blockReconstructionLoss(
                                l, input: x.baseAddress! + b * batch * T * C,
                                target: y.baseAddress! + b * batch * T * C, gradient: true, adapter: adapter,
                                adapterGradient: g.baseAddress)
                        }
                    }
                }
                guard loss.isFinite else {
                    throw LowRAError(.diverged, "block reconstruction diverged in block \(l)")
                }
                for k in layers.indices {
                    dW[k].withUnsafeBufferPointer { d in
                        codes[k].withUnsafeBufferPointer { c in
                            layers[k].backward(
                                d.baseAddress!, codes: c.baseAddress!, latent: &gLatent[k], scales: &gScales[k],
                                levels: &gLevels[k])
                        }
                    }
                    adam[k].0.update(&layers[k].latent, gradient: gLatent[k], lr: o.weightLR * scaleUnit[k])
                    adam[k].1.update(&layers[k].scales, gradient: gScales[k], lr: o.scaleLR * scaleUnit[k])
                    adam[k].2.update(&layers[k].levels, gradient: gLevels[k], lr: o.levelLR)
                }
                if let values = adapter?.values {
                    var factors = adapterRanges.flatMap { values[$0] }
                    let g = adapterRanges.flatMap { adapterGradient[$0] }
                    adapterAdam.update(&factors, gradient: g, lr: o.adapterLR)
                    var at = 0
                    for r in adapterRanges {  // in place: the adapter's values are not copied
                        adapter!.values.replaceSubrange(r, with: factors[at..<(at + r.count)])
                        at += r.count
                    }
                }
                steps += 1
            }
        }

        // Freeze, measure, keep only what lowered the block's error.
        let frozen = try layers.map { try $0.packed() }
        for (k, kind) in kinds.enumerated() {
            graph.replaceLinear(l, kind, with: Linear(packed: frozen[k].packed, bias: original[k].bias))
        }
        let after = blockLoss()
        let kept = after < before
        var changed = 0
        var total = 0
        for k in layers.indices {
            changed += zip(frozen[k].codes, startCodes[k]).reduce(0) { $0 + ($1.0 != $1.1 ? 1 : 0) }
            total += startCodes[k].count
        }
        for (k, kind) in kinds.enumerated() {
            let chosen = kept ? Linear(packed: frozen[k].packed, bias: original[k].bias) : original[k]
            model.blocks[l][kind] = chosen
            graph.replaceLinear(l, kind, with: chosen)
        }
        if !kept {
            for (r, v) in zip(adapterRanges, adapterBefore) { adapter!.values.replaceSubrange(r, with: v) }
        }
        xQuant.withUnsafeMutableBufferPointer { x in
            for b in 0..<batches {
                runner.run(model, l, x.baseAddress! + b * batch * T * C, sequences: count(b), adapter: adapter)
            }
        }
        let report = BlockReconstructionReport(
            block: l, lossBefore: before, lossAfter: after, kept: kept,
            codesChanged: Double(changed) / Double(max(1, total)), steps: steps, tokens: S * T,
            seconds: Date().timeIntervalSince(t0))
        reports.append(report)
        progress?(report)
    }
    return (model, adapter, reports)
}

/// The codes a trainable layer's latent weights choose now.
private func codesOf(_ layer: TrainableQuantized) -> [UInt8] {
    var w = [Float](repeating: 0, count: layer.outFeatures * layer.inFeatures)
    var c = [UInt8](repeating: 0, count: w.count)
    w.withUnsafeMutableBufferPointer { wb in
        c.withUnsafeMutableBufferPointer { layer.forward(weight: wb.baseAddress!, codes: $0.baseAddress!) }
    }
    return c
}

/// Runs one block of a model forward over a few sequences of hidden states, in place.
final class BlockRunner {
    let config: ModelConfig
    let tokens: Int
    private let rope: RopeTable
    private var workspaces = [Int: ForwardWorkspace]()
    private let scratch: Int

    private let rank: Int

    init(config: ModelConfig, tokens: Int, scratch: Int, rank: Int) {
        self.config = config
        self.tokens = tokens
        self.scratch = scratch
        self.rank = rank
        rope = RopeTable(start: 0, count: tokens, frequencies: config.ropeFrequencies)
    }

    /// x (sequences · tokens, C) ← block l of `weights` (with `adapter`) applied to x.
    func run(
        _ weights: ModelWeights, _ l: Int, _ x: UnsafeMutablePointer<Float>, sequences: Int, adapter: LoRAAdapter?
    ) {
        let ws =
            workspaces[sequences]
            ?? ForwardWorkspace(
                config: config, batch: sequences, tokens: tokens, keys: tokens, rank: rank, saveEveryLayer: false,
                weightScratch: scratch)
        workspaces[sequences] = ws
        func run(_ view: AdapterView?) {
            weights.blockForward(
                l, config: config, x: x, workspace: ws, rope: rope, cache: nil, adapter: view, observe: nil)
        }
        guard let adapter else { return run(nil) }
        adapter.withView(run)
    }
}
