import Foundation
import LowRAModel
import LowRATensor

/// The modeled memory of fine-tuning and inference with LowRA's formats (the paper's Appendix C,
/// done for this implementation): byte counts per component, from the model shape, the bit
/// budget and the training shape. The embedding and head stay in their stored encoding, the
/// packed codes and double-quantized block scales in theirs, everything else is fp32;
/// activations follow `TrainingGraph`'s buffers exactly.
public struct MemoryModel: Sendable {
    public var config: ModelConfig
    /// Code bits per quantized parameter (nil: the linear layers stay fp32).
    public var bits: Double?
    public var rank: Int
    public var batch: Int
    public var seq: Int
    /// Double-quantized absmax (the default) or fp32 absmax.
    public var doubleQuant = true
    /// Codebook levels per row (channel scope, the default) or per tensor.
    public var channelCodebooks = true
    /// Fine-tuning with `--recompute`: only block inputs saved, one layer's activations live.
    public var recompute = false
    /// Bytes per value of the embedding and the head as stored (they stay in their file's
    /// encoding and are converted a row or a chunk at a time): 2 for a 16-bit checkpoint, the
    /// model's own with `lowra memory --model`.
    public var embeddingBytesPerValue: Double = 2
    public var headBytesPerValue: Double = 2
    /// Bytes per value of the linear layers of the unquantized model (`bits` nil), kept in their
    /// file's encoding too: 2 for a 16-bit checkpoint, or the model's own.
    public var unquantizedBytesPerValue: Double = 2

    /// Whether fine-tuning multiplies from integer tiles on this machine's kernel path
    /// (`TrainingGraph.integerForwardByDefault`): then a quantized model's tiles are counted for training
    /// while they fit `TrainingGraph.tileBudget` (1/32 of `physicalMemory`), as the graph builds them. Inference is
    /// modeled without them: decode builds tiles up to a quarter of memory, and the mapped codes they
    /// are packed from then leave resident memory, so they stand in for the codes rather than adding.
    public var tiledKernels = TrainingGraph.integerForwardByDefault
    /// Bytes of the machine's memory the tile budgets are fractions of.
    public var physicalMemory = Int(ProcessInfo.processInfo.physicalMemory)

    public init(config: ModelConfig, bits: Double?, rank: Int, batch: Int = 1, seq: Int = 512) {
        self.config = config
        self.bits = bits
        self.rank = rank
        self.batch = batch
        self.seq = seq
    }

    /// Floats of the one buffer weights are converted into: a panel of rows of a packed layer, or
    /// a chunk of rows of a layer (or of the head) kept in its file's encoding.
    var dequantizationScratch: Int {
        let layers = blockLinears.map { out, inF in min(out, Linear.panelRows(inFeatures: inF)) * inF }.max()!
        return max(layers, min(config.vocabSize, Linear.panelRows(inFeatures: config.hiddenSize)) * config.hiddenSize)
    }

    /// (out, in) of every linear layer of one block.
    var blockLinears: [(Int, Int)] {
        LinearKind.allCases.map {
            let s = $0.shape(config)
            return (s.out, s.in)
        }
    }

    /// The integer tiles' bytes (`PackedLinear.tileBytesEstimate`, modeled): per lane of a tile, the
    /// row's codes again, its fp32 block scales, a sixteenth of the tile's 256-byte table of levels and
    /// 12 bytes (min, step, row); a layer's lanes are its rows plus 16 (each width's last tile is
    /// padded); a Q8_0 head's tiles (stored at 34/32 bytes a value) one byte and an fp32 scale per 32
    /// values.
    public var tileBytes: Int {
        guard let bits else { return 0 }
        let perBlock = blockLinears.reduce(0.0) { sum, layer in
            let (out, inF) = (Double(layer.0), Double(layer.1))
            return sum + (out + 16) * (bits * inF / 8 + 4 * ceil(inF / 64) + 256.0 / 16 + 12)
        }
        let packed = Double(config.numLayers) * perBlock
        let headIsQ8_0 = abs(headBytesPerValue - 34.0 / 32) < 1e-9
        let q8Head = headIsQ8_0 ? Double(config.vocabSize * config.hiddenSize) * 1.125 : 0
        return Int(packed + q8Head)
    }

    public var linearParameters: Int { config.linearParameters }
    public var linearRows: Int { config.numLayers * blockLinears.reduce(0) { $0 + $1.0 } }

    /// Component → bytes. Inference: base weights, scales, codebooks, other fp32 weights, the
    /// adapter. Fine-tuning adds the adapter's gradient and AdamW moments, the saved activations
    /// and scratch of one step.
    public func breakdown(training: Bool) -> [(String, Int)] {
        let c = config
        let params = Double(linearParameters)
        var out = [(String, Int)]()
        if let bits {
            let blocks =
                Double(config.numLayers) * blockLinears.reduce(0.0) { $0 + Double($1.0) * ceil(Double($1.1) / 64) }
            // + one precision byte per row
            out.append(("packed codes", Int((bits * params / 8).rounded(.up)) + linearRows))
            let scales = doubleQuant ? blocks + 4 * ceil(blocks / 256) : 4 * blocks
            out.append(("block scales", Int(scales)))
            // Levels: 2^p fp32 per row at the row's precision. Rows are modeled as a mix of the two
            // precisions around the budget ({2, 4} from 2 bits up, else {1, 2}) averaging `bits`.
            let (lo, hi) = bits >= 2 ? (2.0, 4.0) : (1.0, 2.0)
            let f = min(1, max(0, (bits - lo) / (hi - lo)))
            let perRow = f * pow(2, hi) + (1 - f) * pow(2, lo)
            let levels = channelCodebooks ? Double(linearRows) * perRow * 4 : Double(c.numLayers * 7) * 22 * 4
            out.append(("codebooks", Int(levels)))
        } else {
            out.append(("unquantized linear weights", Int(unquantizedBytesPerValue * params)))
        }
        // The head is read whole for every logit; an untied embedding only in the rows of the
        // tokens seen (one step's, bounded by the vocabulary), the rest of it never paged in.
        let vc = Double(c.vocabSize * c.hiddenSize)
        let head = c.tieWordEmbeddings ? vc * max(headBytesPerValue, embeddingBytesPerValue) : vc * headBytesPerValue
        let rowsTouched = c.tieWordEmbeddings ? 0 : min(c.vocabSize, batch * seq)
        let embedding = Double(rowsTouched * c.hiddenSize) * embeddingBytesPerValue
        let norms = 4 * c.hiddenSize * (2 * c.numLayers + 1)
        out.append(("embeddings, norms, head", Int(head + embedding) + norms))
        if training && tiledKernels && bits != nil && tileBytes <= physicalMemory / 32 {
            out.append(("integer tiles", tileBytes))
        }
        let adapter = c.numLayers * blockLinears.reduce(0) { $0 + rank * ($1.0 + $1.1) }
        out.append(("LoRA adapter", 4 * adapter))
        guard training else { return out }
        out.append(("adapter gradient", 4 * adapter))
        out.append(("AdamW moments", 8 * adapter))
        let n = batch * seq
        let C = c.hiddenSize
        let F = c.intermediateSize
        let qD = c.qDim
        let kvD = c.kvDim
        out.append(("saved activations", savedActivationBytes))
        let chunk = min(128, n)
        let scratch =
            n * (6 * C + 2 * qD + 2 * kvD + 3 * F + rank) + seq * seq + 2 * chunk * c.vocabSize
            + dequantizationScratch
        out.append(("step scratch", 4 * scratch))  // activation gradients, a logits chunk, one dequantized layer
        return out
    }

    /// The activations one fine-tuning step saves for its backward pass (`TrainingGraph`'s buffers).
    public var savedActivationBytes: Int {
        let c = config
        let n = batch * seq
        let perLayer =
            n * (4 * c.hiddenSize + 2 * c.qDim + 2 * c.kvDim + 3 * c.intermediateSize) + batch * c.numHeads * seq * seq
            + 7 * n * rank
        // Recomputing keeps every block's input (N, C) and one layer's activations, plus the
        // (N, C) residual the replayed block writes.
        let C = c.hiddenSize
        return 4 * (recompute ? c.numLayers * n * C + perLayer + n * C : c.numLayers * perLayer)
    }

    /// Every component name, in display order (base weights first).
    public static let components = [
        "unquantized linear weights", "packed codes", "block scales", "codebooks", "embeddings, norms, head",
        "integer tiles", "LoRA adapter",
        "adapter gradient", "AdamW moments", "saved activations", "step scratch",
    ]

    public func total(training: Bool) -> Int { breakdown(training: training).reduce(0) { $0 + $1.1 } }

    /// A built-in shape by name, spelled with or without the dash after "llama" ("llama2-7b" or "llama-2-7b").
    public static func preset(named name: String) -> ModelConfig? {
        presets[name.lowercased()] ?? presets[name.lowercased().replacingOccurrences(of: "llama2-", with: "llama-2-")]
    }

    public static var presetNames: String { presets.keys.sorted().joined(separator: ", ") }

    /// Published shapes for the paper's models (LLaMA-2 7B and 13B, LLaMA 33B).
    public static let presets: [String: ModelConfig] = [
        "llama-2-7b": ModelConfig(
            vocabSize: 32000, hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32,
            numKVHeads: 32, headDim: 128, ropeTheta: 10000, rmsNormEps: 1e-5, maxPositions: 4096,
            tieWordEmbeddings: false),
        "llama-2-13b": ModelConfig(
            vocabSize: 32000, hiddenSize: 5120, intermediateSize: 13824, numLayers: 40, numHeads: 40,
            numKVHeads: 40, headDim: 128, ropeTheta: 10000, rmsNormEps: 1e-5, maxPositions: 4096,
            tieWordEmbeddings: false),
        "llama-33b": ModelConfig(
            vocabSize: 32000, hiddenSize: 6656, intermediateSize: 17920, numLayers: 60, numHeads: 52,
            numKVHeads: 52, headDim: 128, ropeTheta: 10000, rmsNormEps: 1e-6, maxPositions: 2048,
            tieWordEmbeddings: false),
    ]
}
