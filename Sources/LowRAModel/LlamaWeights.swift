import Foundation
import LowRAIO
import LowRAQuant
import LowRATensor

/// A linear layer y = x W^T (+ b), W (out, in) either dense fp32 or packed low-bit. A packed
/// weight is dequantized into a scratch buffer for each call and never kept expanded.
public struct Linear: Sendable {
    public enum Storage: Sendable {
        case dense([Float])  // (out, in)
        case packed(PackedLinear)
    }

    public let outFeatures: Int
    public let inFeatures: Int
    public var storage: Storage
    public var bias: [Float]?  // (out)
    /// An optional LoRA adapter: y += scale · B A x.
    public var lora: LoRAFactors?

    public init(outFeatures: Int, inFeatures: Int, weight: [Float], bias: [Float]? = nil) {
        precondition(weight.count == outFeatures * inFeatures)
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        storage = .dense(weight)
        self.bias = bias
    }

    public init(packed: PackedLinear, bias: [Float]? = nil) {
        outFeatures = packed.outFeatures
        inFeatures = packed.inFeatures
        storage = .packed(packed)
        self.bias = bias
    }

    /// The weight in fp32 (dequantized when packed).
    public var weight: [Float] {
        switch storage {
        case .dense(let w): w
        case .packed(let p): p.dequantized()
        }
    }

    public var packed: PackedLinear? { if case .packed(let p) = storage { p } else { nil } }

    public var parameterCount: Int { outFeatures * inFeatures + (bias?.count ?? 0) }

    /// Bytes this layer keeps resident for its weight.
    public var weightBytes: Int {
        switch storage {
        case .dense(let w): 4 * w.count
        case .packed(let p): p.storedBytes
        }
    }

    /// Calls `body` with W (out, in) in fp32: the dense storage itself, or the packed weight
    /// dequantized into `scratch` (room for out·in floats).
    public func withWeight<R>(scratch: UnsafeMutablePointer<Float>, _ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        switch storage {
        case .dense(let w):
            return try w.withUnsafeBufferPointer { try body($0.baseAddress!) }
        case .packed(let p):
            p.dequantize(into: scratch)
            return try body(scratch)
        }
    }

    /// y (T, out) = x (T, in) · W^T + b.
    public func forward(_ x: UnsafePointer<Float>, rows t: Int, into y: UnsafeMutablePointer<Float>) {
        func run(_ w: UnsafePointer<Float>) {
            if t == 1 {
                matvec(w, x, y, n: outFeatures, k: inFeatures)
            } else {
                matmulTransB(x, w, y, m: t, n: outFeatures, k: inFeatures)
            }
        }
        if t == 1, let p = packed {
            p.matvec(x, into: y)
        } else {
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: packed == nil ? 0 : outFeatures * inFeatures)
            defer { scratch.deallocate() }
            withWeight(scratch: scratch, run)
        }
        if let bias {
            for r in 0..<t {
                let yr = y + r * outFeatures
                for i in 0..<outFeatures { yr[i] += bias[i] }
            }
        }
        if let lora {
            var xa = [Float](repeating: 0, count: t * lora.rank)  // (T, r)
            lora.a.withUnsafeBufferPointer { a in
                lora.b.withUnsafeBufferPointer { b in
                    loraForward(y, &xa, x, a.baseAddress!, b.baseAddress!, rows: t, in: inFeatures, out: outFeatures,
                                rank: lora.rank, scale: lora.scale)
                }
            }
        }
    }
}

/// LoRA factors of one linear layer: A (r, in), B (out, r), and scale = alpha / r.
public struct LoRAFactors: Sendable, Equatable {
    public var rank: Int
    public var a: [Float]  // (r, in)
    public var b: [Float]  // (out, r)
    public var scale: Float

    public init(rank: Int, a: [Float], b: [Float], scale: Float) {
        self.rank = rank
        self.a = a
        self.b = b
        self.scale = scale
    }
}

/// One transformer block's weights.
public struct LlamaBlock: Sendable {
    public var attnNorm: [Float]  // (C)
    public var q: Linear  // (H*D, C)
    public var k: Linear  // (KV*D, C)
    public var v: Linear  // (KV*D, C)
    public var o: Linear  // (C, H*D)
    public var ffnNorm: [Float]  // (C)
    public var gate: Linear  // (F, C)
    public var up: Linear  // (F, C)
    public var down: Linear  // (C, F)

    public var linears: [(name: String, linear: Linear)] {
        [("q", q), ("k", k), ("v", v), ("o", o), ("gate", gate), ("up", up), ("down", down)]
    }
}

/// All weights of a Llama-family model, fp32.
public struct LlamaWeights: Sendable {
    public var embedding: [Float]  // (V, C)
    public var blocks: [LlamaBlock]
    public var finalNorm: [Float]  // (C)
    public var head: Linear?  // (V, C); nil when tied to the embedding

    /// Bytes of weights resident in memory (packed layers at their packed size).
    public var weightBytes: Int {
        4 * (embedding.count + finalNorm.count) + (head?.weightBytes ?? 0)
            + blocks.reduce(0) { acc, b in
                acc + 4 * (b.attnNorm.count + b.ffnNorm.count) + b.linears.reduce(0) { $0 + $1.linear.weightBytes + 4 * ($1.linear.bias?.count ?? 0) }
            }
    }

    public var parameterCount: Int {
        embedding.count + finalNorm.count + (head?.parameterCount ?? 0)
            + blocks.reduce(0) { acc, b in
                acc + b.attnNorm.count + b.ffnNorm.count + b.linears.reduce(0) { $0 + $1.linear.parameterCount }
            }
    }
}

/// Where tensors come from: a GGUF file or a set of safetensors files, under their own names.
public protocol TensorSource {
    var description: String { get }
    func shape(_ name: String) -> [Int]?
    func floats(_ name: String) throws -> [Float]
}

extension GGUFFile: TensorSource {
    public var description: String { (path as NSString).lastPathComponent }
    public func shape(_ name: String) -> [Int]? { tensorInfo(name)?.shape }
}

/// Several safetensors shards read as one.
public struct SafeTensorsSet: TensorSource {
    public let files: [SafeTensorsFile]
    public let description: String

    public init(files: [SafeTensorsFile], description: String) {
        self.files = files
        self.description = description
    }

    public func shape(_ name: String) -> [Int]? {
        files.lazy.compactMap { $0.tensors[name]?.shape }.first
    }

    public func floats(_ name: String) throws -> [Float] {
        guard let f = files.first(where: { $0.tensors[name] != nil }) else {
            throw LowRAError(.missingTensor, "\(description): tensor \(name) not found")
        }
        return try f.floats(name)
    }
}

/// Tensor names of the two checkpoint conventions.
public enum WeightNaming: Sendable {
    case huggingFace, gguf

    func name(_ kind: String, layer: Int? = nil) -> String {
        switch self {
        case .huggingFace:
            let hf = [
                "embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "head": "lm_head.weight",
                "attn_norm": "input_layernorm.weight", "ffn_norm": "post_attention_layernorm.weight",
                "q": "self_attn.q_proj.weight", "k": "self_attn.k_proj.weight", "v": "self_attn.v_proj.weight",
                "o": "self_attn.o_proj.weight", "q_bias": "self_attn.q_proj.bias", "k_bias": "self_attn.k_proj.bias",
                "v_bias": "self_attn.v_proj.bias", "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight",
                "down": "mlp.down_proj.weight",
            ][kind]!
            return layer.map { "model.layers.\($0).\(hf)" } ?? hf
        case .gguf:
            let g = [
                "embed": "token_embd.weight", "norm": "output_norm.weight", "head": "output.weight",
                "attn_norm": "attn_norm.weight", "ffn_norm": "ffn_norm.weight", "q": "attn_q.weight",
                "k": "attn_k.weight", "v": "attn_v.weight", "o": "attn_output.weight", "q_bias": "attn_q.bias",
                "k_bias": "attn_k.bias", "v_bias": "attn_v.bias", "gate": "ffn_gate.weight", "up": "ffn_up.weight",
                "down": "ffn_down.weight",
            ][kind]!
            return layer.map { "blk.\($0).\(g)" } ?? g
        }
    }
}

extension LlamaWeights {
    /// Loads and shape-checks every tensor the configuration calls for.
    public static func load(
        from source: TensorSource, naming: WeightNaming, config: LlamaConfig,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> LlamaWeights {
        let c = config
        func tensor(_ kind: String, _ layer: Int?, _ shape: [Int]) throws -> [Float] {
            let name = naming.name(kind, layer: layer)
            guard let actual = source.shape(name) else {
                throw LowRAError(.missingTensor, "\(source.description): tensor \(name) not found")
            }
            guard actual == shape else {
                throw LowRAError(.shapeMismatch, "\(source.description): tensor \(name) has shape \(actual), expected \(shape) from the model config")
            }
            return try source.floats(name)
        }
        func linear(_ kind: String, _ layer: Int, out: Int, in inF: Int, bias: Bool = false) throws -> Linear {
            Linear(
                outFeatures: out, inFeatures: inF, weight: try tensor(kind, layer, [out, inF]),
                bias: bias ? try tensor(kind + "_bias", layer, [out]) : nil)
        }
        let embedding = try tensor("embed", nil, [c.vocabSize, c.hiddenSize])
        var blocks = [LlamaBlock]()
        for l in 0..<c.numLayers {
            progress?(l, c.numLayers)
            blocks.append(
                LlamaBlock(
                    attnNorm: try tensor("attn_norm", l, [c.hiddenSize]),
                    q: try linear("q", l, out: c.qDim, in: c.hiddenSize, bias: c.attentionBias),
                    k: try linear("k", l, out: c.kvDim, in: c.hiddenSize, bias: c.attentionBias),
                    v: try linear("v", l, out: c.kvDim, in: c.hiddenSize, bias: c.attentionBias),
                    o: try linear("o", l, out: c.hiddenSize, in: c.qDim),
                    ffnNorm: try tensor("ffn_norm", l, [c.hiddenSize]),
                    gate: try linear("gate", l, out: c.intermediateSize, in: c.hiddenSize),
                    up: try linear("up", l, out: c.intermediateSize, in: c.hiddenSize),
                    down: try linear("down", l, out: c.hiddenSize, in: c.intermediateSize)))
        }
        progress?(c.numLayers, c.numLayers)
        let finalNorm = try tensor("norm", nil, [c.hiddenSize])
        let head: Linear? =
            c.tieWordEmbeddings
            ? nil
            : Linear(
                outFeatures: c.vocabSize, inFeatures: c.hiddenSize,
                weight: try tensor("head", nil, [c.vocabSize, c.hiddenSize]))
        return LlamaWeights(embedding: embedding, blocks: blocks, finalNorm: finalNorm, head: head)
    }
}
