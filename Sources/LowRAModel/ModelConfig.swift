import Foundation
import LowRAIO
import LowRATensor

/// RoPE frequency scaling (`rope_scaling` in config.json): every frequency divided by `factor`
/// ("linear"), or Llama 3's rule — high frequencies kept, low ones divided by `factor`, a smooth
/// blend between ("llama3").
public struct RopeScaling: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable {
        /// `rope_type: "default"`: no scaling.
        case standard = "default"
        case linear, llama3
    }
    public var kind: Kind
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositions: Int

    public init(
        kind: Kind, factor: Double, lowFreqFactor: Double = 1, highFreqFactor: Double = 4,
        originalMaxPositions: Int = 8192
    ) {
        self.kind = kind
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalMaxPositions = originalMaxPositions
    }

    enum CodingKeys: String, CodingKey {
        case kind = "rope_type", legacyKind = "type", factor, lowFreqFactor = "low_freq_factor"
        case highFreqFactor = "high_freq_factor", originalMaxPositions = "original_max_position_embeddings"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name =
            try c.decodeIfPresent(String.self, forKey: .kind) ?? c.decodeIfPresent(String.self, forKey: .legacyKind)
        guard let name, let kind = Kind(rawValue: name) else {
            throw LowRAError(
                .unsupported,
                "config.json: rope_scaling type '\(name ?? "?")' is not supported (default, linear, llama3 are)")
        }
        self.kind = kind
        factor = try c.decodeIfPresent(Double.self, forKey: .factor) ?? 1
        lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor) ?? 1
        highFreqFactor = try c.decodeIfPresent(Double.self, forKey: .highFreqFactor) ?? 4
        originalMaxPositions = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositions) ?? 8192
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(factor, forKey: .factor)
        if kind == .llama3 {
            try c.encode(lowFreqFactor, forKey: .lowFreqFactor)
            try c.encode(highFreqFactor, forKey: .highFreqFactor)
            try c.encode(originalMaxPositions, forKey: .originalMaxPositions)
        }
    }

    /// Applies the scaling to one inverse frequency (radians per position).
    func scale(_ f: Double) -> Double {
        switch kind {
        case .standard: return f
        case .linear: return f / factor
        case .llama3:
            let wavelength = 2 * Double.pi / f
            let old = Double(originalMaxPositions)
            if wavelength < old / highFreqFactor { return f }
            if wavelength > old / lowFreqFactor { return f / factor }
            let smooth = (old / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor)
            return (1 - smooth) * f / factor + smooth * f
        }
    }
}

/// Any key of a JSON object, to look at keys the configuration does not model.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Hyper-parameters of a Llama-family model. Coding keys are Hugging Face `config.json` names.
public struct ModelConfig: Codable, Equatable, Sendable {
    /// The family's `model_type` ("llama", "mistral", "qwen2"): see `ModelFamily`.
    public var modelType: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    /// Per-frequency divisors stored by llama.cpp for Llama 3.1+ (`rope_freqs.weight`), (D/2).
    public var ropeFrequencyFactors: [Double]?
    public var rmsNormEps: Float
    /// The longest sequence the model runs: `max_position_embeddings`, or the sliding-window
    /// length when a window is set (within it, windowed attention equals full attention).
    public var maxPositions: Int
    public var tieWordEmbeddings: Bool
    /// q/k/v projections carry a bias (Qwen2).
    public var attentionBias: Bool
    /// Layout of Q/K rows within each head, which decides how RoPE pairs elements.
    public var ropeLayout: RopeLayout

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numLayers = "num_hidden_layers"
        case numHeads = "num_attention_heads"
        case numKVHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling"
        case ropeFrequencyFactors = "lowra_rope_freq_factors"
        case rmsNormEps = "rms_norm_eps"
        case maxPositions = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias"
        case ropeLayout = "lowra_rope_layout"
        case modelType = "model_type"
        case slidingWindow = "sliding_window"
        case useSlidingWindow = "use_sliding_window"
    }

    public init(
        vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numLayers: Int, numHeads: Int,
        numKVHeads: Int, headDim: Int? = nil, ropeTheta: Double = 10000, rmsNormEps: Float = 1e-5,
        maxPositions: Int = 2048, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
        ropeLayout: RopeLayout = .halfSplit, modelType: String = "llama", ropeScaling: RopeScaling? = nil,
        ropeFrequencyFactors: [Double]? = nil
    ) {
        self.modelType = modelType
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim ?? hiddenSize / numHeads
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.ropeFrequencyFactors = ropeFrequencyFactors
        self.rmsNormEps = rmsNormEps
        self.maxPositions = maxPositions
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.ropeLayout = ropeLayout
    }

    public var family: ModelFamily { (try? ModelFamily.named(modelType: modelType)) ?? .llama }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        let family = try ModelFamily.named(modelType: modelType)
        try Self.refuseUnimplementedKeys(try decoder.container(keyedBy: AnyCodingKey.self))
        let heads = try c.decode(Int.self, forKey: .numHeads)
        let hidden = try c.decode(Int.self, forKey: .hiddenSize)
        var maxPositions = try c.decodeIfPresent(Int.self, forKey: .maxPositions) ?? 2048
        // Mistral's configs window every layer unless they say otherwise; Qwen2's say whether.
        let windowed = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? (family == .mistral)
        if windowed, let window = try c.decodeIfPresent(Int.self, forKey: .slidingWindow), window > 0 {
            maxPositions = min(maxPositions, window)
        }
        self.init(
            vocabSize: try c.decode(Int.self, forKey: .vocabSize),
            hiddenSize: hidden,
            intermediateSize: try c.decode(Int.self, forKey: .intermediateSize),
            numLayers: try c.decode(Int.self, forKey: .numLayers),
            numHeads: heads,
            numKVHeads: try c.decodeIfPresent(Int.self, forKey: .numKVHeads) ?? heads,
            headDim: try c.decodeIfPresent(Int.self, forKey: .headDim),
            ropeTheta: try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10000,
            rmsNormEps: try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6,
            maxPositions: maxPositions,
            tieWordEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false,
            attentionBias: try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? family.defaultAttentionBias,
            ropeLayout: try c.decodeIfPresent(RopeLayout.self, forKey: .ropeLayout) ?? .halfSplit,
            modelType: family.name,
            ropeScaling: try c.decodeIfPresent(RopeScaling.self, forKey: .ropeScaling),
            ropeFrequencyFactors: try c.decodeIfPresent([Double].self, forKey: .ropeFrequencyFactors))
    }

    /// config.json keys that would change the model's maths and that LowRA does not implement:
    /// each is refused with one line naming it, never ignored.
    static func refuseUnimplementedKeys(_ c: KeyedDecodingContainer<AnyCodingKey>) throws {
        func key(_ k: String) -> AnyCodingKey { AnyCodingKey(stringValue: k) }
        func refuse(_ k: String, _ why: String) -> LowRAError {
            LowRAError(.unsupported, "config.json: \(k) \(why) is not supported")
        }
        func isNull(_ k: String) -> Bool { (try? c.decodeNil(forKey: key(k))) ?? true }
        for k in ["hidden_act", "hidden_activation"] where c.contains(key(k)) {
            let act = (try? c.decode(String.self, forKey: key(k))) ?? "?"
            guard act == "silu" else { throw refuse(k, "'\(act)' (only silu, the SwiGLU MLP,)") }
        }
        if (try? c.decode(Bool.self, forKey: key("mlp_bias"))) == true { throw refuse("mlp_bias", "true") }
        if let f = try? c.decode(Double.self, forKey: key("partial_rotary_factor")), f != 1 {
            throw refuse("partial_rotary_factor", "\(f)")
        }
        for k in ["num_local_experts", "num_experts", "n_routed_experts"] {
            if let n = try? c.decode(Int.self, forKey: key(k)), n > 0 { throw refuse(k, "\(n) (mixture of experts)") }
        }
        for k in [
            "quantization_config", "attn_logit_softcapping", "final_logit_softcapping", "embedding_multiplier",
            "logits_scaling", "residual_multiplier", "attention_multiplier",
        ] where c.contains(key(k)) && !isNull(k) {
            throw refuse(k, "(set)")
        }
        for k in ["qk_norm", "use_qk_norm"] where (try? c.decode(Bool.self, forKey: key(k))) == true {
            throw refuse(k, "true")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numLayers, forKey: .numLayers)
        try c.encode(numHeads, forKey: .numHeads)
        try c.encode(numKVHeads, forKey: .numKVHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encodeIfPresent(ropeScaling, forKey: .ropeScaling)
        try c.encodeIfPresent(ropeFrequencyFactors, forKey: .ropeFrequencyFactors)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(maxPositions, forKey: .maxPositions)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(ropeLayout, forKey: .ropeLayout)
        // maxPositions already holds any sliding window: written configs never window again.
        try c.encode(false, forKey: .useSlidingWindow)
    }

    public var qDim: Int { numHeads * headDim }
    public var kvDim: Int { numKVHeads * headDim }

    /// Inverse frequency (radians per position) of each rotated pair i < D/2: θ^(−2i/D), then the
    /// configured scaling and the stored per-frequency factors.
    public var ropeFrequencies: [Double] {
        (0..<(headDim / 2)).map { i in
            var f = Foundation.pow(ropeTheta, -Double(2 * i) / Double(headDim))
            if let s = ropeScaling { f = s.scale(f) }
            if let factors = ropeFrequencyFactors { f /= factors[i] }
            return f
        }
    }

    /// Rejects configurations the forward pass cannot run.
    public func validate() throws {
        func bad(_ m: String) -> LowRAError { LowRAError(.invalidArgument, "model config: \(m)") }
        guard vocabSize > 0, hiddenSize > 0, intermediateSize > 0, numLayers > 0, numHeads > 0, numKVHeads > 0 else {
            throw bad("sizes must be positive")
        }
        // Far above any real model; keeps every size computed from them (vocab × hidden, a cache of
        // positions × layers × KV width) inside Int instead of trapping on overflow.
        for (name, v, most) in [
            ("vocab_size", vocabSize, 1 << 24), ("hidden_size", hiddenSize, 1 << 20),
            ("intermediate_size", intermediateSize, 1 << 22), ("num_hidden_layers", numLayers, 1 << 12),
            ("num_attention_heads", numHeads, 1 << 12), ("head_dim", headDim, 1 << 14),
            ("max_position_embeddings", maxPositions, 1 << 24),
        ] where v > most {
            throw bad("\(name) \(v) is beyond any supported model (at most \(most))")
        }
        guard numHeads % numKVHeads == 0 else {
            throw bad("\(numHeads) heads is not a multiple of \(numKVHeads) KV heads")
        }
        guard headDim > 0, headDim % 2 == 0 else { throw bad("head dimension \(headDim) must be even") }
        guard rmsNormEps > 0, ropeTheta > 0 else { throw bad("rms_norm_eps and rope_theta must be positive") }
        guard maxPositions > 0 else { throw bad("max_position_embeddings must be positive") }
        if let s = ropeScaling {
            guard s.factor >= 1, s.lowFreqFactor > 0, s.highFreqFactor > s.lowFreqFactor, s.originalMaxPositions > 0
            else {
                throw bad("rope_scaling needs factor >= 1 and 0 < low_freq_factor < high_freq_factor")
            }
        }
        if let f = ropeFrequencyFactors {
            guard f.count == headDim / 2, f.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                throw bad("RoPE frequency factors must be \(headDim / 2) positive numbers")
            }
        }
    }

    /// Reads the `<architecture>.*` keys of a GGUF file; keys that change the maths and are not
    /// implemented are refused.
    public init(gguf: GGUFFile) throws {
        let file = (gguf.path as NSString).lastPathComponent
        let arch = gguf.metadata["general.architecture"]?.string ?? "llama"
        let family: ModelFamily
        do { family = try ModelFamily.named(ggufArchitecture: arch) } catch let e as LowRAError {
            throw LowRAError(e.kind, "\(file): \(e.message)")
        }
        let meta = { (key: String) in gguf.metadata["\(arch).\(key)"] }
        func int(_ key: String) throws -> Int {
            guard let v = meta(key)?.int else { throw LowRAError.malformed(file, "metadata \(arch).\(key) missing") }
            return v
        }
        func refuse(_ key: String, _ value: String) -> LowRAError {
            LowRAError(.unsupported, "\(file): \(arch).\(key) = \(value) is not supported")
        }
        let heads = try int("attention.head_count")
        let hidden = try int("embedding_length")
        let headDim = meta("attention.key_length")?.int ?? hidden / heads
        if let n = meta("expert_count")?.int, n > 0 { throw refuse("expert_count", "\(n) (mixture of experts)") }
        if let v = meta("attention.value_length")?.int, v != headDim { throw refuse("attention.value_length", "\(v)") }
        if let n = meta("rope.dimension_count")?.int, n != headDim {
            throw refuse("rope.dimension_count", "\(n) (partial RoPE)")
        }
        var scaling: RopeScaling?
        switch meta("rope.scaling.type")?.string ?? "none" {
        case "none": break
        case "linear": scaling = RopeScaling(kind: .linear, factor: meta("rope.scaling.factor")?.double ?? 1)
        case let other: throw refuse("rope.scaling.type", other)
        }
        var maxPositions = meta("context_length")?.int ?? 2048
        if let window = meta("attention.sliding_window")?.int, window > 0 { maxPositions = min(maxPositions, window) }
        let vocab =
            meta("vocab_size")?.int
            ?? gguf.metadata["tokenizer.ggml.tokens"]?.array?.count
            ?? gguf.tensorInfo("token_embd.weight")?.shape.first ?? 0
        let factorsName = WeightNaming.gguf.name(.ropeFrequencyFactors)
        self.init(
            vocabSize: vocab, hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"),
            numLayers: try int("block_count"),
            numHeads: heads,
            numKVHeads: meta("attention.head_count_kv")?.int ?? heads,
            headDim: headDim,
            ropeTheta: meta("rope.freq_base")?.double ?? 10000,
            rmsNormEps: Float(meta("attention.layer_norm_rms_epsilon")?.double ?? 1e-5),
            maxPositions: maxPositions,
            tieWordEmbeddings: gguf.tensorInfo(WeightNaming.gguf.name(.head)) == nil,
            attentionBias: gguf.tensorInfo(WeightNaming.gguf.name(.bias(layer: 0, .q))) != nil,
            ropeLayout: family.ggufRopeLayout, modelType: family.name, ropeScaling: scaling,
            ropeFrequencyFactors: gguf.tensorInfo(factorsName) == nil
                ? nil : try gguf.floats(factorsName).map(Double.init))
    }
}
