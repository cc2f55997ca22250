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

    /// y (T, out) = x (T, in) · W^T + b, plus s · B A x when LoRA factors are given (xa (T, r)
    /// keeps x Aᵀ for backward). One row of a packed layer is multiplied straight from its codes;
    /// more rows dequantize W into `scratch` (out·in floats; allocated here when nil).
    public func forward(
        _ x: UnsafePointer<Float>, rows t: Int, into y: UnsafeMutablePointer<Float>,
        scratch: UnsafeMutablePointer<Float>? = nil, lora: LoRAFactors? = nil, xa: UnsafeMutablePointer<Float>? = nil
    ) {
        func multiply(_ w: UnsafePointer<Float>) {
            if t == 1 {
                matvec(w, x, y, n: outFeatures, k: inFeatures)
            } else {
                matmulTransB(x, w, y, m: t, n: outFeatures, k: inFeatures)
            }
        }
        switch storage {
        case .dense(let w):
            w.withUnsafeBufferPointer { multiply($0.baseAddress!) }
        case .packed(let p) where t == 1:
            p.matvec(x, into: y)
        case .packed(let p):
            let own = scratch == nil ? UnsafeMutablePointer<Float>.allocate(capacity: outFeatures * inFeatures) : nil
            defer { own?.deallocate() }
            p.dequantize(into: scratch ?? own!)
            multiply(scratch ?? own!)
        }
        if let bias {
            for r in 0..<t {
                let yr = y + r * outFeatures
                for i in 0..<outFeatures { yr[i] += bias[i] }
            }
        }
        if let lora {
            let own = xa == nil ? UnsafeMutablePointer<Float>.allocate(capacity: t * lora.rank) : nil
            defer { own?.deallocate() }
            loraForward(y, xa ?? own!, x, lora.a, lora.b, rows: t, in: inFeatures, out: outFeatures, rank: lora.rank,
                        scale: lora.scale)
        }
    }
}

/// The LoRA factors of one linear layer as the forward reads them: A (r, in), B (out, r) and
/// scale = alpha / r.
public struct LoRAFactors {
    public let a: UnsafePointer<Float>
    public let b: UnsafePointer<Float>
    public let rank: Int
    public let scale: Float

    public init(a: UnsafePointer<Float>, b: UnsafePointer<Float>, rank: Int, scale: Float) {
        self.a = a
        self.b = b
        self.rank = rank
        self.scale = scale
    }
}

/// One transformer block's weights: two RMSNorm gains and the linear layers, indexed by kind.
public struct LlamaBlock: Sendable {
    public var attnNorm: [Float]  // (C)
    public var ffnNorm: [Float]  // (C)
    /// One per `LinearKind`, in its order: q (H*D, C), k and v (KV*D, C), o (C, H*D),
    /// gate and up (F, C), down (C, F).
    public var linears: [Linear]

    public init(attnNorm: [Float], ffnNorm: [Float], linears: [Linear]) {
        precondition(linears.count == LinearKind.allCases.count)
        self.attnNorm = attnNorm
        self.ffnNorm = ffnNorm
        self.linears = linears
    }

    public subscript(kind: LinearKind) -> Linear {
        get { linears[kind.rawValue] }
        set { linears[kind.rawValue] = newValue }
    }
}

/// All weights of a Llama-family model: fp32, with packed linear layers after quantization.
public struct LlamaWeights: Sendable {
    public var embedding: [Float]  // (V, C)
    public var blocks: [LlamaBlock]
    public var finalNorm: [Float]  // (C)
    public var head: Linear?  // (V, C); nil when tied to the embedding

    /// Bytes of weights resident in memory (packed layers at their packed size).
    public var weightBytes: Int {
        4 * (embedding.count + finalNorm.count) + (head?.weightBytes ?? 0)
            + blocks.reduce(0) { acc, b in
                acc + 4 * (b.attnNorm.count + b.ffnNorm.count)
                    + b.linears.reduce(0) { $0 + $1.weightBytes + 4 * ($1.bias?.count ?? 0) }
            }
    }

    public var parameterCount: Int {
        embedding.count + finalNorm.count + (head?.parameterCount ?? 0)
            + blocks.reduce(0) { acc, b in acc + b.attnNorm.count + b.ffnNorm.count + b.linears.reduce(0) { $0 + $1.parameterCount } }
    }

    /// Floats of the largest linear weight: the scratch a packed layer is dequantized into.
    public var largestLinear: Int {
        blocks.lazy.flatMap { $0.linears }.map { $0.outFeatures * $0.inFeatures }.max() ?? 0
    }

    /// True when some linear layer is packed (so multi-row products need dequantization scratch).
    public var hasPacked: Bool { blocks.contains { $0.linears.contains { $0.packed != nil } } }
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

extension LlamaWeights {
    /// Loads and shape-checks every tensor the configuration calls for, by the architecture's
    /// names (`WeightNaming`) and shapes (`LinearKind.shape`).
    public static func load(
        from source: TensorSource, naming: WeightNaming, config c: LlamaConfig,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> LlamaWeights {
        func tensor(_ t: ModelTensor, _ shape: [Int]) throws -> [Float] {
            let name = naming.name(t)
            guard let actual = source.shape(name) else {
                throw LowRAError(.missingTensor, "\(source.description): tensor \(name) not found")
            }
            guard actual == shape else {
                throw LowRAError(.shapeMismatch,
                                 "\(source.description): tensor \(name) has shape \(actual), expected \(shape) from the model config")
            }
            return try source.floats(name)
        }
        let embedding = try tensor(.embedding, [c.vocabSize, c.hiddenSize])
        var blocks = [LlamaBlock]()
        for l in 0..<c.numLayers {
            progress?(l, c.numLayers)
            let linears = try LinearKind.allCases.map { kind in
                let (out, inF) = kind.shape(c)
                return Linear(
                    outFeatures: out, inFeatures: inF, weight: try tensor(.weight(layer: l, kind), [out, inF]),
                    bias: kind.hasBias(c) ? try tensor(.bias(layer: l, kind), [out]) : nil)
            }
            blocks.append(LlamaBlock(
                attnNorm: try tensor(.attentionNorm(layer: l), [c.hiddenSize]),
                ffnNorm: try tensor(.mlpNorm(layer: l), [c.hiddenSize]), linears: linears))
        }
        progress?(c.numLayers, c.numLayers)
        let finalNorm = try tensor(.finalNorm, [c.hiddenSize])
        let head: Linear? = c.tieWordEmbeddings
            ? nil
            : Linear(outFeatures: c.vocabSize, inFeatures: c.hiddenSize, weight: try tensor(.head, [c.vocabSize, c.hiddenSize]))
        return LlamaWeights(embedding: embedding, blocks: blocks, finalNorm: finalNorm, head: head)
    }
}
