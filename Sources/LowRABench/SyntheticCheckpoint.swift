import Foundation
import LowRAModel
import LowRAIO
import LowRATensor
import LowRATokenizer

/// A random model of a real shape, written as a sharded bf16 Hugging Face checkpoint — for
/// measuring memory and time at 7B–13B scale, which no model in the reachable registries has.
/// Its quality is meaningless; its sizes, file layout and access patterns are real.
///
/// Weights: linear layers N(0, 0.02) with a few outlier input columns (×8, as activation
/// outliers leave in real checkpoints), embedding and head N(0, 0.02), norms 1. Every tensor is
/// drawn from its own stream seeded by (seed, name), so the files are deterministic and one
/// tensor at a time is ever in memory.
public enum SyntheticCheckpoint {
    public static let outlierColumns = 4
    public static let outlierScale: Float = 8

    /// (name, shape) of every tensor of `config`, in model order, under Hugging Face names.
    public static func tensors(_ c: ModelConfig) -> [(name: String, shape: [Int])] {
        let hf = WeightNaming.huggingFace
        var out: [(String, [Int])] = [(hf.name(.embedding), [c.vocabSize, c.hiddenSize])]
        for l in 0..<c.numLayers {
            out.append((hf.name(.attentionNorm(layer: l)), [c.hiddenSize]))
            for kind in LinearKind.allCases {
                let (o, i) = kind.shape(c)
                out.append((hf.name(.weight(layer: l, kind)), [o, i]))
                if kind.hasBias(c) { out.append((hf.name(.bias(layer: l, kind)), [o])) }
            }
            out.append((hf.name(.mlpNorm(layer: l)), [c.hiddenSize]))
        }
        out.append((hf.name(.finalNorm), [c.hiddenSize]))
        if !c.tieWordEmbeddings { out.append((hf.name(.head), [c.vocabSize, c.hiddenSize])) }
        return out
    }

    /// Writes config.json, the shards, model.safetensors.index.json and the tokenizer files into
    /// `dir` (built beside it and renamed into place). `progress(done, total)` counts tensors.
    public static func write(
        config c: ModelConfig, tokenizer: Tokenizer, to dir: String, seed: UInt64 = 0, shardBytes: Int = 2_000_000_000,
        progress: ((Int, Int) -> Void)? = nil
    ) throws {
        try c.validate()
        guard tokenizer.vocabSize <= c.vocabSize else {
            throw LowRAError(
                .invalidArgument,
                "the tokenizer has \(tokenizer.vocabSize) tokens, the config's vocabulary \(c.vocabSize)")
        }
        let fm = FileManager.default
        guard !fm.fileExists(atPath: dir) else {
            throw LowRAError(.invalidArgument, "\(dir) exists; choose another --out")
        }
        let staging = dir + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: staging)
        try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        do {
            try writeContents(
                config: c, tokenizer: tokenizer, to: staging, seed: seed, shardBytes: shardBytes, progress: progress)
            try fm.moveItem(atPath: staging, toPath: dir)
        } catch {
            try? fm.removeItem(atPath: staging)
            throw error
        }
    }

    private static func writeContents(
        config c: ModelConfig, tokenizer: Tokenizer, to dir: String, seed: UInt64, shardBytes: Int,
        progress: ((Int, Int) -> Void)?
    ) throws {
        func p(_ f: String) -> String { (dir as NSString).appendingPathComponent(f) }
        let all = tensors(c)
        // Consecutive tensors fill shards of about shardBytes.
        var shards = [[(name: String, shape: [Int])]]()
        var size = 0
        for t in all {
            let bytes = 2 * t.shape.reduce(1, *)
            if shards.isEmpty || (size + bytes > shardBytes && size > 0) {
                shards.append([])
                size = 0
            }
            shards[shards.count - 1].append(t)
            size += bytes
        }
        var weightMap = [String: String]()
        var total = 0
        var done = 0
        for (i, shard) in shards.enumerated() {
            let file = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            let writer = try SafeTensorsStreamWriter(
                path: p(file), entries: shard.map { .init(name: $0.name, dtype: .bf16, shape: $0.shape) },
                metadata: ["format": "pt", "lowra_synthetic_seed": String(seed)])
            for t in shard {
                progress?(done, all.count)
                let values = sample(t.name, shape: t.shape, seed: seed)
                try values.withUnsafeBytes { try writer.write(t.name, bytes: $0) }
                weightMap[t.name] = file
                total += 2 * values.count
                done += 1
            }
            try writer.finish()
        }
        progress?(all.count, all.count)
        let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
        try writeAtomically(
            try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys]),
            to: p("model.safetensors.index.json"))
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let tok = try tokenizer.huggingFaceFiles()
        try writeAtomically(tok.tokenizer, to: p("tokenizer.json"))
        try writeAtomically(tok.config, to: p("tokenizer_config.json"))
        try writeAtomically(try enc.encode(c), to: p("config.json"))  // last: marks the checkpoint complete
    }

    /// The bf16 values of one tensor: rows filled in parallel, each from its own stream.
    static func sample(_ name: String, shape: [Int], seed: UInt64) -> [UInt16] {
        let count = shape.reduce(1, *)
        if name.hasSuffix("norm.weight") { return [UInt16](repeating: bfloat16FromFloat(1), count: count) }
        let cols = shape.last ?? 1, rows = count / max(cols, 1)
        var key = seed ^ 0x5359_4E54_4845_5449  // "SYNTHETI"
        for b in name.utf8 { key = (key ^ UInt64(b)) &* 0x100_0000_01B3 }
        let isLinear = shape.count == 2 && name.hasPrefix("model.layers.")
        var scale = [Float](repeating: 0.02, count: cols)  // per input column
        var pick = SplitMix64(seed: key)
        for _ in 0..<(isLinear ? outlierColumns : 0) { scale[Int(pick.next() % UInt64(cols))] = 0.02 * outlierScale }
        var out = [UInt16](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { buf in
            let dst = UncheckedSendable(buf.baseAddress!)
            scale.withUnsafeBufferPointer { sc in
                let colScale = UncheckedSendable(sc.baseAddress!)
                parallelFor(rows, minPerChunk: 16) { range in
                    for r in range {
                        var rng = SplitMix64(seed: key &+ UInt64(r) &* 0x9E37_79B9_7F4A_7C15)
                        let row = dst.value + r * cols
                        var j = 0
                        while j < cols {
                            // Box-Muller: two standard normals per pair of uniforms.
                            let u1 = max(rng.nextUnit(), 1e-300), u2 = rng.nextUnit()
                            let radius = (-2 * Foundation.log(u1)).squareRoot()
                            row[j] = bfloat16FromFloat(Float(radius * Foundation.cos(2 * .pi * u2)) * colScale.value[j])
                            if j + 1 < cols {
                                row[j + 1] = bfloat16FromFloat(
                                    Float(radius * Foundation.sin(2 * .pi * u2)) * colScale.value[j + 1])
                            }
                            j += 2
                        }
                    }
                }
            }
        }
        return out
    }
}

extension Tokenizer {
    /// The same tokenizer restricted to its first `size` ids: tokens past it are dropped, and so
    /// are the merges that would produce or use them (BPE then stops earlier). A stand-in
    /// tokenizer for a synthetic model of a smaller vocabulary.
    public func truncated(to size: Int) throws -> Tokenizer {
        guard size < vocabSize else { return self }
        let tokens = Array(bpe.idToToken.prefix(size))
        let keep = Set(tokens)
        let merges = bpe.mergeList.filter { keep.contains($0.0) && keep.contains($0.1) && keep.contains($0.0 + $0.1) }
        return Tokenizer(
            bpe: try ByteLevelBPE(tokens: tokens, merges: merges), preTokenizer: preTokenizer,
            addedTokens: addedTokens.filter { $0.value < size },
            eosTokenId: eosTokenId.flatMap { $0 < size ? $0 : nil },
            bosTokenId: bosTokenId.flatMap { $0 < size ? $0 : nil }, addBos: addBos, ignoreMerges: ignoreMerges,
            normalizesNFC: normalizesNFC, chatTemplate: chatTemplate)
    }
}
