import Foundation
import LowRATensor

// The architecture, described once: the linear layers of a block (names in both checkpoint
// conventions, shapes from the config, where their input comes from), the other tensors of a
// model, and the registry of model families. Loading, quantizing, adapters, calibration and
// training all iterate these tables.

/// Where a linear layer's input comes from inside a block.
public enum LinearInput: String, Sendable, CaseIterable {
    /// The RMS-normed residual stream before attention (q, k, v).
    case attention
    /// The attention output (o).
    case output
    /// The RMS-normed residual stream before the MLP (gate, up).
    case mlp
    /// The SwiGLU activation (down).
    case down
}

/// The seven linear layers of a Llama-family block, in model order.
public enum LinearKind: Int, CaseIterable, Sendable, Codable {
    case q, k, v, o, gate, up, down

    /// Short name: "q", …, "down".
    public var name: String { "\(self)" }

    /// Module path inside a Hugging Face block (`model.layers.{i}.` + this + `.weight`).
    public var huggingFaceName: String {
        switch self {
        case .q: "self_attn.q_proj"
        case .k: "self_attn.k_proj"
        case .v: "self_attn.v_proj"
        case .o: "self_attn.o_proj"
        case .gate: "mlp.gate_proj"
        case .up: "mlp.up_proj"
        case .down: "mlp.down_proj"
        }
    }

    /// The PEFT `target_modules` entry: the last component of the Hugging Face name.
    public var moduleName: String { String(huggingFaceName.split(separator: ".").last!) }

    /// Tensor name inside a GGUF block (`blk.{i}.` + this + `.weight`).
    public var ggufName: String {
        switch self {
        case .q: "attn_q"
        case .k: "attn_k"
        case .v: "attn_v"
        case .o: "attn_output"
        case .gate: "ffn_gate"
        case .up: "ffn_up"
        case .down: "ffn_down"
        }
    }

    public var input: LinearInput {
        switch self {
        case .q, .k, .v: .attention
        case .o: .output
        case .gate, .up: .mlp
        case .down: .down
        }
    }

    /// (out, in) of this layer's weight W, y = x Wᵀ.
    public func shape(_ c: ModelConfig) -> (out: Int, in: Int) {
        switch self {
        case .q: (c.qDim, c.hiddenSize)
        case .k, .v: (c.kvDim, c.hiddenSize)
        case .o: (c.hiddenSize, c.qDim)
        case .gate, .up: (c.intermediateSize, c.hiddenSize)
        case .down: (c.hiddenSize, c.intermediateSize)
        }
    }

    public func hasBias(_ c: ModelConfig) -> Bool { c.attentionBias && [.q, .k, .v].contains(self) }

    public init?(name: String) {
        guard let k = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = k
    }
}

/// Every tensor of a Llama-family model.
public enum ModelTensor: Sendable, Equatable {
    case embedding, finalNorm, head
    /// Rotary frequency factors (GGUF files of Llama 3.1+ store them as `rope_freqs.weight`).
    case ropeFrequencyFactors
    case attentionNorm(layer: Int), mlpNorm(layer: Int)
    case weight(layer: Int, LinearKind), bias(layer: Int, LinearKind)
}

/// Tensor names of the two checkpoint conventions.
public enum WeightNaming: Sendable {
    case huggingFace, gguf

    public func name(_ t: ModelTensor) -> String {
        switch (self, t) {
        case (.huggingFace, .embedding): "model.embed_tokens.weight"
        case (.huggingFace, .finalNorm): "model.norm.weight"
        case (.huggingFace, .head): "lm_head.weight"
        case (.huggingFace, .ropeFrequencyFactors): "lowra.rope_freqs.weight"
        case (.huggingFace, .attentionNorm(let l)): "model.layers.\(l).input_layernorm.weight"
        case (.huggingFace, .mlpNorm(let l)): "model.layers.\(l).post_attention_layernorm.weight"
        case (.gguf, .embedding): "token_embd.weight"
        case (.gguf, .finalNorm): "output_norm.weight"
        case (.gguf, .head): "output.weight"
        case (.gguf, .ropeFrequencyFactors): "rope_freqs.weight"
        case (.gguf, .attentionNorm(let l)): "blk.\(l).attn_norm.weight"
        case (.gguf, .mlpNorm(let l)): "blk.\(l).ffn_norm.weight"
        case (_, .weight(let l, let k)): linear(l, k) + ".weight"
        case (_, .bias(let l, let k)): linear(l, k) + ".bias"
        }
    }

    /// The module path of a linear layer, without `.weight`: the key of the precision map,
    /// calibration statistics and (under PEFT's prefix) the adapter.
    public func linear(_ layer: Int, _ kind: LinearKind) -> String {
        switch self {
        case .huggingFace: "model.layers.\(layer).\(kind.huggingFaceName)"
        case .gguf: "blk.\(layer).\(kind.ggufName)"
        }
    }
}

/// A family of Llama-shaped models: the registry keyed by Hugging Face `model_type` and GGUF
/// `general.architecture`. What differs between families is data here, not code in the forward.
public struct ModelFamily: Sendable, Equatable {
    /// `model_type` written to config.json.
    public let name: String
    /// Hugging Face `model_type` values and GGUF `general.architecture` values it covers.
    public let modelTypes: [String]
    public let ggufArchitectures: [String]
    /// q/k/v biases when config.json does not say (Qwen2's config has no `attention_bias`).
    public let defaultAttentionBias: Bool
    /// The row layout of Q/K in this family's GGUF files: llama.cpp permutes llama-arch Q/K for
    /// interleaved RoPE; Qwen2 files keep the Hugging Face half-split ("NEOX") layout.
    public let ggufRopeLayout: RopeLayout

    public static let llama = ModelFamily(
        name: "llama", modelTypes: ["llama"], ggufArchitectures: ["llama"], defaultAttentionBias: false,
        ggufRopeLayout: .interleaved)
    public static let mistral = ModelFamily(
        name: "mistral", modelTypes: ["mistral"], ggufArchitectures: [], defaultAttentionBias: false,
        ggufRopeLayout: .interleaved)
    public static let qwen2 = ModelFamily(
        name: "qwen2", modelTypes: ["qwen2"], ggufArchitectures: ["qwen2"], defaultAttentionBias: true,
        ggufRopeLayout: .halfSplit)

    public static let all: [ModelFamily] = [.llama, .mistral, .qwen2]

    /// Families people bring that are not Llama-shaped, with what sets them apart.
    static let refused: [String: String] = [
        "mixtral": "mixture of experts", "qwen2_moe": "mixture of experts", "qwen3_moe": "mixture of experts",
        "deepseek_v2": "mixture of experts", "deepseek_v3": "mixture of experts", "dbrx": "mixture of experts",
        "gemma": "GeGLU MLP, scaled embeddings", "gemma2": "soft-capping, sliding window",
        "gemma3": "sliding window, QK norm", "phi": "parallel attention, LayerNorm",
        "phi3": "fused QKV, sliding window",
        "qwen3": "QK norm", "gpt2": "LayerNorm, learned positions", "falcon": "parallel attention",
        "starcoder2": "LayerNorm, GELU", "olmo2": "QK norm", "cohere": "LayerNorm, parallel block",
    ]

    static func unsupported(_ what: String, _ value: String) -> LowRAError {
        let why = refused[value].map { " (\($0))" } ?? ""
        let names = all.map(\.name).joined(separator: ", ")
        return LowRAError(.unsupported, "\(what) '\(value)'\(why) is not supported; supported families: \(names)")
    }

    /// The family of a config.json `model_type`, or a one-line refusal.
    public static func named(modelType: String) throws -> ModelFamily {
        guard let f = all.first(where: { $0.modelTypes.contains(modelType) }) else {
            throw unsupported("model_type", modelType)
        }
        return f
    }

    /// The family of a GGUF `general.architecture`, or a one-line refusal.
    public static func named(ggufArchitecture arch: String) throws -> ModelFamily {
        guard let f = all.first(where: { $0.ggufArchitectures.contains(arch) }) else {
            throw unsupported("architecture", arch)
        }
        return f
    }
}

extension ModelConfig {
    /// Weights of every block's linear layers (the quantized parameters), biases not counted.
    public var linearParameters: Int {
        numLayers * LinearKind.allCases.reduce(0) { $0 + $1.shape(self).out * $1.shape(self).in }
    }
}
