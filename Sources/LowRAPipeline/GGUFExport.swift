import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRATokenizer

/// The tensor type of an exported model's matrices (norms, biases and RoPE factors stay F32).
public enum GGUFExportType: String, CaseIterable, Sendable {
    case f32, f16, q8_0

    var ggml: GGMLType { [.f32: .f32, .f16: .f16, .q8_0: .q8_0][self]! }
    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_ALL_F32` / `MOSTLY_F16` / `MOSTLY_Q8_0`).
    var fileType: UInt32 { [.f32: 0, .f16: 1, .q8_0: 7][self]! }
}

/// Models and adapters written for llama.cpp (and what loads its files: Ollama, LM Studio, …):
/// the base dequantized from its codes (codebook level × block scale) with an adapter's
/// scale · B·A added, as a GGUF of the source's architecture with this tokenizer; or an adapter
/// alone as a GGUF LoRA (`general.type = adapter`) to apply over such a base with `--lora`.
/// Q/K rows go into the layout llama.cpp's architecture expects (interleaved for `llama`).
public enum GGUFExport {
    /// llama.cpp's architecture for a model family (Mistral runs as `llama`, as llama.cpp converts it).
    static func architecture(_ c: ModelConfig) throws -> (name: String, ropeLayout: RopeLayout) {
        let family = try ModelFamily.named(modelType: c.modelType)
        return (family.ggufArchitectures.first ?? "llama", family.ggufRopeLayout)
    }

    /// Writes `model` with `adapter` (if any) merged into its linear layers to `path`.
    public static func writeModel(
        _ model: LanguageModel, tokenizer: Tokenizer, adapter: LoRAAdapter?, type: GGUFExportType, name: String,
        to path: String, progress: ((Int, Int) -> Void)? = nil
    ) throws {
        let c = model.config
        let w = model.weights
        let (arch, layout) = try architecture(c)
        var g = GGUFWriter()
        g.set("general.architecture", .string(arch))
        g.set("general.type", .string("model"))
        g.set("general.name", .string(name))
        g.set("general.file_type", .uint32(type.fileType))
        if type == .q8_0 { g.set("general.quantization_version", .uint32(2)) }
        for (k, v) in hyperparameters(c, architecture: arch) { g.set(k, v) }
        for (k, v) in try tokenizer.ggufMetadata(vocabularySize: c.vocabSize) { g.set(k, v) }

        let names = WeightNaming.gguf
        try g.add(names.name(.embedding), shape: [c.vocabSize, c.hiddenSize], type: type.ggml) {
            try encodeRows(w.embedding, rows: Array(0..<c.vocabSize), type: type.ggml)
        }
        for (l, block) in w.blocks.enumerated() {
            try addVector(&g, names.name(.attentionNorm(layer: l)), block.attnNorm)
            try addVector(&g, names.name(.mlpNorm(layer: l)), block.ffnNorm)
            for kind in LinearKind.allCases {
                let lin = block[kind]
                let from = [.q, .k].contains(kind) ? c.ropeLayout : layout
                let rows = from.sourceRows(count: lin.outFeatures, headDim: c.headDim, to: layout)
                let merge = adapter.flatMap { a in
                    a.slots.first { $0.layer == l && $0.kind == kind }.map { (a, $0) }
                }
                let shape = [lin.outFeatures, lin.inFeatures]
                try g.add(names.name(.weight(layer: l, kind)), shape: shape, type: type.ggml) {
                    try encodeRows(lin, rows: rows, type: type.ggml, merging: merge)
                }
                if let bias = lin.bias { try addVector(&g, names.name(.bias(layer: l, kind)), rows.map { bias[$0] }) }
            }
        }
        try addVector(&g, names.name(.finalNorm), w.finalNorm)
        if let head = w.head {
            try g.add(names.name(.head), shape: [c.vocabSize, c.hiddenSize], type: type.ggml) {
                try encodeRows(head, rows: Array(0..<c.vocabSize), type: type.ggml)
            }
        }
        if let factors = try ropeFrequencyFactors(c, architecture: arch) {
            try addVector(&g, names.name(.ropeFrequencyFactors), factors)
        }
        try g.write(to: path, progress: progress)
    }

    /// Writes `adapter` alone as a GGUF LoRA for the export of `config`'s base: `lora_a` (r, in)
    /// and `lora_b` (out, r) per layer in F32, `adapter.lora.alpha` = scale · r (llama.cpp scales
    /// by alpha / r, so rsLoRA's α/√r survives).
    public static func writeAdapter(
        _ adapter: LoRAAdapter, config c: ModelConfig, name: String, to path: String
    ) throws {
        let (arch, layout) = try architecture(c)
        var g = GGUFWriter()
        g.set("general.architecture", .string(arch))
        g.set("general.type", .string("adapter"))
        g.set("general.name", .string(name))
        g.set("adapter.type", .string("lora"))
        g.set("adapter.lora.alpha", .float32(adapter.scale * Float(adapter.rank)))
        for s in adapter.slots {
            let base = WeightNaming.gguf.name(.weight(layer: s.layer, s.kind))
            let (a, b) = adapter.factors(s)
            try g.add(base + ".lora_a", shape: [adapter.rank, s.inFeatures], type: .f32) { floatBytes(Array(a)) }
            let from = [.q, .k].contains(s.kind) ? c.ropeLayout : layout
            try g.add(base + ".lora_b", shape: [s.outFeatures, adapter.rank], type: .f32) {
                floatBytes(from.reorderRows(b, rowLength: adapter.rank, headDim: c.headDim, to: layout))
            }
        }
        try g.write(to: path)
    }

    /// `<arch>.*` keys as llama.cpp's converter writes them.
    static func hyperparameters(_ c: ModelConfig, architecture a: String) -> [(String, GGUFValue)] {
        var m: [(String, GGUFValue)] = [
            ("\(a).vocab_size", .uint32(UInt32(c.vocabSize))),
            ("\(a).context_length", .uint32(UInt32(c.maxPositions))),
            ("\(a).embedding_length", .uint32(UInt32(c.hiddenSize))),
            ("\(a).feed_forward_length", .uint32(UInt32(c.intermediateSize))),
            ("\(a).block_count", .uint32(UInt32(c.numLayers))),
            ("\(a).attention.head_count", .uint32(UInt32(c.numHeads))),
            ("\(a).attention.head_count_kv", .uint32(UInt32(c.numKVHeads))),
            ("\(a).attention.key_length", .uint32(UInt32(c.headDim))),
            ("\(a).attention.value_length", .uint32(UInt32(c.headDim))),
            ("\(a).rope.dimension_count", .uint32(UInt32(c.headDim))),
            ("\(a).rope.freq_base", .float32(Float(c.ropeTheta))),
            ("\(a).attention.layer_norm_rms_epsilon", .float32(c.rmsNormEps)),
        ]
        if let s = c.ropeScaling, s.kind == .linear, c.ropeFrequencyFactors == nil {
            m.append(("\(a).rope.scaling.type", .string("linear")))
            m.append(("\(a).rope.scaling.factor", .float32(Float(s.factor))))
        }
        return m
    }

    /// Per-frequency divisors (`rope_freqs.weight`) for any scaling other than plain linear:
    /// unscaled inverse frequency / the model's. Only llama.cpp's `llama` architecture reads them.
    static func ropeFrequencyFactors(_ c: ModelConfig, architecture a: String) throws -> [Float]? {
        let linearOnly = c.ropeFrequencyFactors == nil && [nil, .linear, .standard].contains(c.ropeScaling?.kind)
        guard !linearOnly else { return nil }
        guard a == "llama" else {
            throw LowRAError(.unsupported, "RoPE frequency scaling cannot be exported for llama.cpp's \(a) models")
        }
        return c.ropeFrequencies.enumerated().map { i, f in
            Float(Foundation.pow(c.ropeTheta, -Double(2 * i) / Double(c.headDim)) / f)
        }
    }

    static func addVector(_ g: inout GGUFWriter, _ name: String, _ v: [Float]) throws {
        try g.add(name, shape: [v.count], type: .f32) { floatBytes(v) }
    }

    static func floatBytes(_ v: [Float]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }

    /// Rows `rows` of `linear` in fp32 (plus scale · B·A of `merging`'s slot, its B rows taken in
    /// the same order), encoded as `type`, a chunk of rows at a time.
    static func encodeRows(
        _ linear: Linear, rows order: [Int], type: GGMLType, merging: (LoRAAdapter, LoRAAdapter.Slot)? = nil
    ) throws -> [UInt8] {
        let cols = linear.inFeatures
        let (qk, blockBytes) = type.blockLayout!
        let rowBytes = cols / qk * blockBytes
        var out = [UInt8](repeating: 0, count: order.count * rowBytes)
        let chunk = max(1, min(order.count, (1 << 20) / cols))
        var buf = [Float](repeating: 0, count: chunk * cols)
        var gathered = [Float](repeating: 0, count: chunk * (merging?.0.rank ?? 0))
        let factorA = merging.map { Array($0.0.factors($0.1).a) } ?? []
        for r0 in stride(from: 0, to: order.count, by: chunk) {
            let n = min(chunk, order.count - r0)
            buf.withUnsafeMutableBufferPointer { b in
                for i in 0..<n { linear.row(order[r0 + i], into: b.baseAddress! + i * cols) }
            }
            if let (a, s) = merging {
                let fb = a.factors(s).b
                let r = a.rank
                for i in 0..<n {
                    for j in 0..<r { gathered[i * r + j] = fb[fb.startIndex + order[r0 + i] * r + j] }
                }
                matmul(gathered, factorA, &buf, m: n, n: cols, k: r, alpha: a.scale, beta: 1)
            }
            out.withUnsafeMutableBytes { o in
                let dst = o.baseAddress! + r0 * rowBytes
                switch type {
                case .f32: memcpy(dst, buf, n * cols * 4)
                case .f16: halvesFromFloats(buf, into: dst.assumingMemoryBound(to: UInt16.self), count: n * cols)
                default: quantizeGGML(type, buf, count: n * cols, into: dst)
                }
            }
        }
        linear.releaseStored()
        return out
    }
}
