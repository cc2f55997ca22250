import Foundation
import LowRATensor

/// The trainable LoRA parameters of a model: A (r, in) and B (out, r) for every linear layer of
/// every block, in one flat array so that the optimizer, clipping and checkpoints see one vector.
/// Slots run over layers, then `LinearKind`s in their order; each holds A, then B.
public struct LoRAAdapter: Sendable, Equatable {
    public struct Slot: Sendable, Equatable {
        public let layer: Int
        public let kind: LinearKind
        public let outFeatures: Int
        public let inFeatures: Int
        public let offsetA: Int
        public let offsetB: Int
    }

    public let rank: Int
    public let alpha: Float
    public let slots: [Slot]
    public var values: [Float]

    /// h = W x + scale · B A x.
    public var scale: Float { alpha / Float(rank) }
    public var parameterCount: Int { values.count }

    /// The paper's rank 64, or the model's smallest layer dimension when that is lower.
    public static func defaultRank(_ config: ModelConfig) -> Int {
        min(64, config.hiddenSize, config.kvDim, config.intermediateSize)
    }

    /// Zero factors for every linear layer of `config`'s blocks. alpha defaults to the rank.
    public init(config: ModelConfig, rank: Int, alpha: Float? = nil) throws {
        let (slots, count) = try Self.layout(config: config, rank: rank)
        self.rank = rank
        self.alpha = try Self.alpha(alpha, rank: rank)
        self.slots = slots
        values = [Float](repeating: 0, count: count)
    }

    /// `alpha`, or the rank when nil; refused unless positive and finite.
    public static func alpha(_ alpha: Float?, rank: Int) throws -> Float {
        let alpha = alpha ?? Float(rank)
        guard alpha > 0, alpha.isFinite else {
            throw LowRAError(.invalidArgument, "LoRA alpha must be positive, got \(alpha)")
        }
        return alpha
    }

    /// The slots of a rank-`rank` adapter for `config` and its parameter count, without the
    /// parameters themselves; a rank the model cannot take is refused.
    public static func layout(config: ModelConfig, rank: Int) throws -> (slots: [Slot], parameters: Int) {
        let smallest = min(config.hiddenSize, config.kvDim, config.intermediateSize)
        guard rank >= 1, rank <= smallest else {
            throw LowRAError(.invalidArgument, "LoRA rank must be in 1...\(smallest) for this model, got \(rank)")
        }
        var slots = [Slot]()
        var at = 0
        for l in 0..<config.numLayers {
            for kind in LinearKind.allCases {
                let (out, inF) = kind.shape(config)
                slots.append(
                    Slot(
                        layer: l, kind: kind, outFeatures: out, inFeatures: inF, offsetA: at,
                        offsetB: at + rank * inF))
                at += rank * (inF + out)
            }
        }
        return (slots, at)
    }

    public func slot(layer: Int, kind: LinearKind) -> Slot {
        slots[layer * LinearKind.allCases.count + kind.rawValue]
    }

    /// PEFT's default: A Kaiming-uniform (a = √5, so U(±1/√in)), B = 0, seeded.
    public mutating func initializeKaiming(seed: UInt64) {
        var rng = SplitMix64(seed: seed ^ 0x4C6F_5241_4B61_696D)
        for s in slots {
            let bound = 1 / Double(s.inFeatures).squareRoot()
            for i in 0..<(rank * s.inFeatures) { values[s.offsetA + i] = Float((2 * rng.nextUnit() - 1) * bound) }
            for i in 0..<(s.outFeatures * rank) { values[s.offsetB + i] = 0 }
        }
    }

    public func factors(_ s: Slot) -> (a: ArraySlice<Float>, b: ArraySlice<Float>) {
        (values[s.offsetA..<(s.offsetA + rank * s.inFeatures)], values[s.offsetB..<(s.offsetB + s.outFeatures * rank)])
    }

    public mutating func setFactors(_ s: Slot, a: [Float], b: [Float]) {
        precondition(a.count == rank * s.inFeatures && b.count == s.outFeatures * rank)
        values.replaceSubrange(s.offsetA..<(s.offsetA + a.count), with: a)
        values.replaceSubrange(s.offsetB..<(s.offsetB + b.count), with: b)
    }

    /// True when every B is zero: the adapter does not change the model yet.
    public var isIdentity: Bool { slots.allSatisfy { factors($0).b.allSatisfy { $0 == 0 } } }
}

/// An adapter as the forward reads it: its slots and scale, its parameters at `params` (the
/// adapter's own values, or the trainer's copy of them).
public struct AdapterView {
    public let adapter: LoRAAdapter
    public let params: UnsafePointer<Float>

    public init(_ adapter: LoRAAdapter, params: UnsafePointer<Float>) {
        self.adapter = adapter
        self.params = params
    }

    public func factors(layer: Int, kind: LinearKind) -> LoRAFactors {
        let s = adapter.slot(layer: layer, kind: kind)
        return LoRAFactors(a: params + s.offsetA, b: params + s.offsetB, rank: adapter.rank, scale: adapter.scale)
    }
}

extension LoRAAdapter {
    /// Calls `body` with a view of this adapter's own values.
    public func withView<R>(_ body: (AdapterView) throws -> R) rethrows -> R {
        try values.withUnsafeBufferPointer { try body(AdapterView(self, params: $0.baseAddress!)) }
    }
}
