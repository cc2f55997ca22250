import Foundation
import LowRAIO
import LowRAModel
import LowRAQuant
import LowRATensor

/// Codebook tuning: every packed layer's per-row levels trained through the loss beside the
/// adapter (a repair of the quantized base itself, in the spirit of PEQA/OmniQuant's learned
/// scales), codes and block scales kept. Fp32 master levels take the AdamW steps; the model runs
/// on them snapped to each row's uint8 grid (`snapToIntegerLevels`), exactly the levels a saved
/// model keeps, so training sees what decoding will. Wire it to a `TrainingGraph` with `attach`.
public final class CodebookTuner {
    /// The tuned layers: (block, kind, the packed weight as loaded, offset of its levels in
    /// `master`).
    public struct Layer: Sendable {
        public let block: Int
        public let kind: LinearKind
        public let packed: PackedLinear
        public let offset: Int
        public let bias: [Float]?
    }

    public let layers: [Layer]
    /// Every layer's levels, concatenated in `layers` order (fp32, unsnapped).
    public private(set) var master: [Float]
    public private(set) var adam: AdamW
    private var grad: [Float]
    private var index = [Int: Int]()  // block * kinds + kind → layers index
    private let dW: UnsafeMutablePointer<Float>

    /// Tunes every packed layer of `weights` with per-row codebooks (others stay as they are).
    public init(weights: ModelWeights) throws {
        var layers = [Layer]()
        var at = 0
        for (l, block) in weights.blocks.enumerated() {
            for kind in LinearKind.allCases {
                guard let p = block[kind].packed, p.scope == .channel else { continue }
                layers.append(Layer(block: l, kind: kind, packed: p, offset: at, bias: block[kind].bias))
                at += p.levels.count
            }
        }
        guard !layers.isEmpty else {
            throw LowRAError(.invalidArgument, "codebook tuning needs a quantized model with per-row codebooks")
        }
        self.layers = layers
        master = layers.flatMap(\.packed.levels)
        grad = [Float](repeating: 0, count: master.count)
        adam = AdamW(count: master.count)
        for (i, layer) in layers.enumerated() {
            index[layer.block * LinearKind.allCases.count + layer.kind.rawValue] = i
        }
        let widest = layers.map { $0.packed.outFeatures * $0.packed.inFeatures }.max()!
        dW = .allocate(capacity: widest)
    }

    deinit { dW.deallocate() }

    /// Levels tuned.
    public var parameterCount: Int { master.count }

    /// Has `graph` report each tuned layer's gradient here in backward.
    public func attach(to graph: TrainingGraph) {
        graph.observeLinearGradient = { [unowned self] l, kind, dy, x, rows in
            guard let i = self.index[l * LinearKind.allCases.count + kind.rawValue] else { return }
            let p = self.layers[i].packed
            // ∂L/∂W (out, in) = dyᵀ x over the batch's rows, then summed per level.
            matmulTransA(dy, x, self.dW, m: p.outFeatures, n: p.inFeatures, k: rows)
            self.grad.withUnsafeMutableBufferPointer {
                p.accumulateLevelGradient(self.dW, into: $0.baseAddress! + self.layers[i].offset)
            }
        }
    }

    public func zeroGradients() { for i in grad.indices { grad[i] = 0 } }

    /// The gradient gathered since `zeroGradients` (the layout of `master`).
    public var gradient: [Float] { grad }

    /// One AdamW step on the master levels, then the graph runs on them snapped.
    public func step(lr: Float, graph: TrainingGraph) throws {
        guard grad.allSatisfy(\.isFinite) else {
            throw LowRAError(.diverged, "codebook tuning diverged: a level's gradient is not finite")
        }
        adam.update(&master, gradient: grad, lr: lr)
        try install(in: graph)
    }

    /// Restores master levels and optimizer state (a checkpoint) and installs them.
    public func restore(master m: [Float], adam a: AdamW, graph: TrainingGraph) throws {
        guard m.count == master.count, a.m.count == master.count, a.v.count == master.count else {
            throw LowRAError(.shapeMismatch, "codebook state of \(m.count) levels for a model with \(master.count)")
        }
        master = m
        adam = a
        try install(in: graph)
    }

    /// Layer i's levels as the model runs them: the master levels snapped row by row to the grid.
    public func snappedLevels(_ i: Int) -> [Float] {
        let p = layers[i].packed
        var v = Array(master[layers[i].offset..<(layers[i].offset + p.levels.count)])
        snapToIntegerLevels(&v, rowOffsets: p.levelOffsets + [p.levels.count])
        return v
    }

    /// File of the tuned levels that `finetune --codebook-lr` writes beside the adapter.
    public static let file = "tuned_levels.safetensors"

    /// Writes every tuned layer's snapped levels, by Hugging Face layer name + ".levels".
    public func save(to path: String) throws {
        var w = SafeTensorsPlan()
        w.metadata["format"] = "lowra-tuned-levels"
        for (i, layer) in layers.enumerated() {
            let levels = snappedLevels(i)
            let name = WeightNaming.huggingFace.linear(layer.block, layer.kind) + ".levels"
            w.add(name, shape: [levels.count]) { levels }
        }
        try w.write(to: path)
    }

    /// `weights` with the levels of a `save`d file in place of their packed layers' levels.
    public static func apply(_ path: String, to weights: ModelWeights) throws -> ModelWeights {
        let file = try SafeTensorsFile(path: path)
        var w = weights
        for (l, block) in weights.blocks.enumerated() {
            for kind in LinearKind.allCases {
                guard let p = block[kind].packed, p.scope == .channel else { continue }
                let name = WeightNaming.huggingFace.linear(l, kind) + ".levels"
                guard file.tensors[name] != nil else { throw LowRAError(.missingTensor, "\(path): no \(name)") }
                w.blocks[l][kind] = Linear(packed: try p.withLevels(try file.floats(name)), bias: block[kind].bias)
            }
        }
        return w
    }

    private func install(in graph: TrainingGraph) throws {
        for (i, layer) in layers.enumerated() {
            graph.replaceLinear(
                layer.block, layer.kind,
                with: Linear(packed: try layer.packed.withLevels(snappedLevels(i)), bias: layer.bias))
        }
    }
}
