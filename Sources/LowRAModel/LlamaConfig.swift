import Foundation
import LowRAIO
import LowRATensor

/// Hyper-parameters of a Llama-family model. Coding keys are Hugging Face `config.json` names.
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var ropeTheta: Double
    public var rmsNormEps: Float
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
        case rmsNormEps = "rms_norm_eps"
        case maxPositions = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias"
        case ropeLayout = "lowra_rope_layout"
        case modelType = "model_type"
    }

    public init(
        vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numLayers: Int, numHeads: Int,
        numKVHeads: Int, headDim: Int? = nil, ropeTheta: Double = 10000, rmsNormEps: Float = 1e-5,
        maxPositions: Int = 2048, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
        ropeLayout: RopeLayout = .halfSplit
    ) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim ?? hiddenSize / numHeads
        self.ropeTheta = ropeTheta
        self.rmsNormEps = rmsNormEps
        self.maxPositions = maxPositions
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.ropeLayout = ropeLayout
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        let heads = try c.decode(Int.self, forKey: .numHeads)
        let hidden = try c.decode(Int.self, forKey: .hiddenSize)
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
            maxPositions: try c.decodeIfPresent(Int.self, forKey: .maxPositions) ?? 2048,
            tieWordEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false,
            attentionBias: try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? (modelType == "qwen2"),
            ropeLayout: try c.decodeIfPresent(RopeLayout.self, forKey: .ropeLayout) ?? .halfSplit)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numLayers, forKey: .numLayers)
        try c.encode(numHeads, forKey: .numHeads)
        try c.encode(numKVHeads, forKey: .numKVHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(maxPositions, forKey: .maxPositions)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(ropeLayout, forKey: .ropeLayout)
        try c.encode("llama", forKey: .modelType)
    }

    public var qDim: Int { numHeads * headDim }
    public var kvDim: Int { numKVHeads * headDim }

    /// (kind, out, in) of every linear layer of one block, in model order (q, k, v, o, gate, up, down).
    public var blockLinearShapes: [(kind: String, out: Int, in: Int)] {
        [("q", qDim, hiddenSize), ("k", kvDim, hiddenSize), ("v", kvDim, hiddenSize), ("o", hiddenSize, qDim),
         ("gate", intermediateSize, hiddenSize), ("up", intermediateSize, hiddenSize), ("down", hiddenSize, intermediateSize)]
    }

    /// Rejects configurations the forward pass cannot run.
    public func validate() throws {
        func bad(_ m: String) -> LowRAError { LowRAError(.invalidArgument, "model config: \(m)") }
        guard vocabSize > 0, hiddenSize > 0, intermediateSize > 0, numLayers > 0, numHeads > 0, numKVHeads > 0 else {
            throw bad("sizes must be positive")
        }
        guard numHeads % numKVHeads == 0 else { throw bad("\(numHeads) heads is not a multiple of \(numKVHeads) KV heads") }
        guard headDim > 0, headDim % 2 == 0 else { throw bad("head dimension \(headDim) must be even") }
        guard rmsNormEps > 0, ropeTheta > 0 else { throw bad("rms_norm_eps and rope_theta must be positive") }
    }

    /// Reads the `llama.*` (or other architecture) keys of a GGUF file.
    public init(gguf: GGUFFile) throws {
        let file = (gguf.path as NSString).lastPathComponent
        let arch = gguf.metadata["general.architecture"]?.string ?? "llama"
        guard ["llama", "qwen2"].contains(arch) else {
            throw LowRAError(.unsupported, "\(file): architecture \(arch) is not supported (llama, qwen2 are)")
        }
        func int(_ key: String) throws -> Int {
            guard let v = gguf.metadata["\(arch).\(key)"]?.int else {
                throw LowRAError.malformed(file, "metadata \(arch).\(key) missing")
            }
            return v
        }
        let heads = try int("attention.head_count")
        let hidden = try int("embedding_length")
        let vocab = gguf.metadata["\(arch).vocab_size"]?.int
            ?? gguf.metadata["tokenizer.ggml.tokens"]?.array?.count
            ?? gguf.tensorInfo("token_embd.weight")?.shape.first ?? 0
        self.init(
            vocabSize: vocab, hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"),
            numLayers: try int("block_count"),
            numHeads: heads,
            numKVHeads: gguf.metadata["\(arch).attention.head_count_kv"]?.int ?? heads,
            headDim: gguf.metadata["\(arch).attention.key_length"]?.int ?? hidden / heads,
            ropeTheta: gguf.metadata["\(arch).rope.freq_base"]?.double ?? 10000,
            rmsNormEps: Float(gguf.metadata["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
            maxPositions: gguf.metadata["\(arch).context_length"]?.int ?? 2048,
            tieWordEmbeddings: gguf.tensorInfo("output.weight") == nil,
            attentionBias: gguf.tensorInfo("blk.0.attn_q.bias") != nil,
            // llama.cpp permutes Q/K for llama; qwen2 GGUFs keep the half-split (NEOX) layout.
            ropeLayout: arch == "llama" ? .interleaved : .halfSplit)
    }
}
