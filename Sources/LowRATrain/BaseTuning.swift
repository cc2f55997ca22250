import Foundation
import LowRAAdapters
import LowRAIO
import LowRAModel
import LowRAQuant
import LowRATensor

/// Tuning the quantized base end to end: every packed layer's per-row levels (codebook tuning, a
/// repair of the base in the spirit of PEQA/OmniQuant's learned scales) and its 64-input block
/// scales (EfficientQAT's end-to-end quantization parameters) trained through the loss beside the
/// adapter, codes held. Fp32 masters take the AdamW steps — the levels in their normalized units,
/// each block scale as a factor of its starting value (so one learning rate is a relative step for
/// every layer) — and the model runs on them stored as a saved model keeps them: levels snapped to
/// each row's uint8 grid (`snapToIntegerLevels`), scales double-quantized to the nearest code when
/// the layer's were, so training sees what decoding will. Wire it to a `TrainingGraph` with `attach`.
public final class BaseTuner {
    /// The tuned layers: (block, kind, the packed weight as loaded, offsets of its levels and of its
    /// block scales in the masters).
    public struct Layer: Sendable {
        public let block: Int
        public let kind: LinearKind
        public let packed: PackedLinear
        public let levelOffset: Int
        public let scaleOffset: Int
        public let bias: [Float]?
    }

    public let layers: [Layer]
    public let tunesLevels: Bool
    public let tunesScales: Bool
    /// Every layer's levels, concatenated in `layers` order (fp32, unsnapped); empty when the levels
    /// are not tuned.
    public private(set) var levels: [Float]
    /// Every layer's block scales as factors of the loaded ones (1 at the start), concatenated in
    /// `layers` order; empty when the scales are not tuned.
    public private(set) var scaleFactors: [Float]
    /// The loaded block scales (decoded) the factors multiply, in the layout of `scaleFactors`.
    private let loadedScales: [Float]
    public private(set) var levelAdam: AdamW
    public private(set) var scaleAdam: AdamW
    private var levelGrad: [Float]
    private var scaleGrad: [Float]
    /// Each layer as the graph runs it now (its gradients are taken at these levels and scales).
    private var current: [PackedLinear]
    private var index = [Int: Int]()  // block * kinds + kind → layers index
    private let dW: UnsafeMutablePointer<Float>

    /// Tunes every packed layer of `weights` with per-row codebooks (others stay as they are): its
    /// levels, its block scales or both.
    public init(weights: ModelWeights, levels tuneLevels: Bool, scales tuneScales: Bool) throws {
        guard tuneLevels || tuneScales else {
            throw LowRAError(.invalidArgument, "base tuning needs the levels, the scales or both")
        }
        var layers = [Layer]()
        var (atLevel, atScale) = (0, 0)
        for (l, block) in weights.blocks.enumerated() {
            for kind in LinearKind.allCases {
                guard let p = block[kind].packed, p.scope == .channel else { continue }
                layers.append(
                    Layer(
                        block: l, kind: kind, packed: p, levelOffset: atLevel, scaleOffset: atScale,
                        bias: block[kind].bias))
                atLevel += p.levels.count
                atScale += p.blockCount
            }
        }
        guard !layers.isEmpty else {
            throw LowRAError(.invalidArgument, "tuning the base needs a quantized model with per-row codebooks")
        }
        self.layers = layers
        (tunesLevels, tunesScales) = (tuneLevels, tuneScales)
        levels = tuneLevels ? layers.flatMap(\.packed.levels) : []
        scaleFactors = [Float](repeating: 1, count: tuneScales ? atScale : 0)
        loadedScales = tuneScales ? layers.flatMap { $0.packed.absmax.decoded(count: $0.packed.blockCount) } : []
        levelGrad = [Float](repeating: 0, count: levels.count)
        scaleGrad = [Float](repeating: 0, count: scaleFactors.count)
        levelAdam = AdamW(count: levels.count)
        scaleAdam = AdamW(count: scaleFactors.count)
        current = layers.map(\.packed)
        for (i, layer) in layers.enumerated() {
            index[layer.block * LinearKind.allCases.count + layer.kind.rawValue] = i
        }
        let widest = layers.map { $0.packed.outFeatures * $0.packed.inFeatures }.max()!
        dW = .allocate(capacity: widest)
    }

    deinit { dW.deallocate() }

    /// Parameters tuned (levels and block scales).
    public var parameterCount: Int { levels.count + scaleFactors.count }

    /// Has `graph` report each tuned layer's gradient here in backward.
    public func attach(to graph: TrainingGraph) {
        graph.observeLinearGradient = { [unowned self] l, kind, dy, x, rows in
            guard let i = self.index[l * LinearKind.allCases.count + kind.rawValue] else { return }
            let p = self.current[i]
            // ∂L/∂W (out, in) = dyᵀ x over the batch's rows, then summed per level and per block.
            matmulTransA(dy, x, self.dW, m: p.outFeatures, n: p.inFeatures, k: rows)
            let layer = self.layers[i]
            self.levelGrad.withUnsafeMutableBufferPointer { gl in
                self.scaleGrad.withUnsafeMutableBufferPointer { gs in
                    p.accumulateGradients(
                        self.dW, levels: self.tunesLevels ? gl.baseAddress! + layer.levelOffset : nil,
                        scales: self.tunesScales ? gs.baseAddress! + layer.scaleOffset : nil)
                }
            }
        }
    }

    public func zeroGradients() {
        for i in levelGrad.indices { levelGrad[i] = 0 }
        for i in scaleGrad.indices { scaleGrad[i] = 0 }
    }

    /// ∂L/∂levels gathered since `zeroGradients` (the layout of `levels`).
    public var levelGradient: [Float] { levelGrad }

    /// ∂L/∂(block scale) gathered since `zeroGradients`, per block of every layer (not yet per factor:
    /// ∂L/∂factor = loaded scale · ∂L/∂scale).
    public var scaleGradient: [Float] { scaleGrad }

    /// One AdamW step on the masters (each at its own rate; nil: not tuned), then the graph runs on them.
    public func step(levelLR: Float?, scaleLR: Float?, graph: TrainingGraph) throws {
        guard levelGrad.allSatisfy(\.isFinite), scaleGrad.allSatisfy(\.isFinite) else {
            throw LowRAError(.diverged, "tuning the base diverged: a level's or a scale's gradient is not finite")
        }
        if tunesLevels, let lr = levelLR { levelAdam.update(&levels, gradient: levelGrad, lr: lr) }
        if tunesScales, let lr = scaleLR {
            // Chain rule to the factors: scale = loaded scale · factor.
            let g = zip(scaleGrad, loadedScales).map { $0 * $1 }
            scaleAdam.update(&scaleFactors, gradient: g, lr: lr)
        }
        try install(in: graph)
    }

    /// Restores masters and optimizer states (a checkpoint) and installs them.
    public func restore(levels l: [Float], levelAdam la: AdamW, scaleFactors f: [Float], scaleAdam sa: AdamW,
        graph: TrainingGraph) throws {
        guard l.count == levels.count, la.m.count == l.count, la.v.count == l.count, f.count == scaleFactors.count,
            sa.m.count == f.count, sa.v.count == f.count
        else {
            throw LowRAError(
                .shapeMismatch,
                "base tuning state of \(l.count) levels and \(f.count) scales for a model with \(levels.count) and "
                    + "\(scaleFactors.count)")
        }
        (levels, levelAdam, scaleFactors, scaleAdam) = (l, la, f, sa)
        try install(in: graph)
    }

    /// Layer i's levels as the model runs them: the master levels snapped row by row to the grid.
    public func snappedLevels(_ i: Int) -> [Float] {
        let p = layers[i].packed
        guard tunesLevels else { return p.levels }
        var v = Array(levels[layers[i].levelOffset..<(layers[i].levelOffset + p.levels.count)])
        snapToIntegerLevels(&v, rowOffsets: p.levelOffsets + [p.levels.count])
        return v
    }

    /// Layer i's block scales before storage (loaded scale × factor).
    public func rawScales(_ i: Int) -> [Float] {
        let layer = layers[i]
        let p = layer.packed
        guard tunesScales else { return p.absmax.decoded(count: p.blockCount) }
        let at = layer.scaleOffset
        return (0..<p.blockCount).map { max(0, loadedScales[at + $0] * scaleFactors[at + $0]) }
    }

    /// Layer i as the model runs it and a saved model keeps it.
    public func tunedLinear(_ i: Int) throws -> PackedLinear {
        let p = layers[i].packed
        guard tunesScales else { return try p.withLevels(snappedLevels(i)) }
        return try p.with(levels: snappedLevels(i), absmax: Self.stored(rawScales(i), like: p))
    }

    /// Trained block scales stored as `p` stores its own (double-quantized to the nearest code, or fp32).
    static func stored(_ raw: [Float], like p: PackedLinear) -> AbsmaxStorage {
        AbsmaxStorage(raw: raw, doubleQuant: p.absmax.isDoubleQuant, roundUp: false)
    }

    /// File of the tuned base that `finetune --codebook-lr / --scale-lr` writes beside the adapter.
    public static let file = AdapterStore.tunedBaseFile

    /// Writes every tuned layer's snapped levels and raw block scales, by Hugging Face layer name +
    /// ".levels" / ".scales".
    public func save(to path: String) throws {
        var w = SafeTensorsPlan()
        w.metadata["format"] = "lowra-tuned-base"
        for (i, layer) in layers.enumerated() {
            let name = WeightNaming.huggingFace.linear(layer.block, layer.kind)
            if tunesLevels {
                let levels = snappedLevels(i)
                w.add(name + ".levels", shape: [levels.count]) { levels }
            }
            if tunesScales {
                let scales = rawScales(i)
                w.add(name + ".scales", shape: [scales.count]) { scales }
            }
        }
        try w.write(to: path)
    }

    /// `weights` with the levels and scales of a `save`d file in place of their packed layers' own.
    public static func apply(_ path: String, to weights: ModelWeights) throws -> ModelWeights {
        let file = try SafeTensorsFile(path: path)
        var w = weights
        for (l, block) in weights.blocks.enumerated() {
            for kind in LinearKind.allCases {
                guard let p = block[kind].packed, p.scope == .channel else { continue }
                let name = WeightNaming.huggingFace.linear(l, kind)
                let hasLevels = file.tensors[name + ".levels"] != nil
                let hasScales = file.tensors[name + ".scales"] != nil
                guard hasLevels || hasScales else { throw LowRAError(.missingTensor, "\(path): nothing for \(name)") }
                let levels = hasLevels ? try file.floats(name + ".levels") : p.levels
                var absmax = p.absmax
                if hasScales {
                    let raw = try file.floats(name + ".scales")
                    guard raw.count == p.blockCount, raw.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                        throw LowRAError(.shapeMismatch, "\(path): \(name).scales does not fit the layer")
                    }
                    absmax = stored(raw, like: p)
                }
                w.blocks[l][kind] = Linear(packed: try p.with(levels: levels, absmax: absmax), bias: block[kind].bias)
            }
        }
        return w
    }

    private func install(in graph: TrainingGraph) throws {
        for i in layers.indices {
            current[i] = try tunedLinear(i)
            graph.replaceLinear(layers[i].block, layers[i].kind, with: Linear(packed: current[i], bias: layers[i].bias))
        }
    }
}
