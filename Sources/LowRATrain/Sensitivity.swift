import Foundation
import LowRAModel
import LowRATensor

/// The output-channel Fisher of every linear layer: E[(∂L/∂y_r)²] per output channel r, L the
/// next-token cross-entropy of the unquantized model on `tokens` (a generic text), gathered by
/// backward passes in sequences of `seq`. A channel's quantization cost in the precision
/// assignment then becomes E[(∂L/∂y_r)²] · E[Δy_r²] — its estimated loss increase — instead of its
/// output error alone, so error goes where the loss feels it least. By Hugging Face layer name;
/// scaled so that the mean over all channels is 1. `recompute` (nil: when saving every block's
/// activations would take more than `recomputeAboveBytes`, 2.4 GB at LLaMA-2-7B's shape) keeps only
/// block inputs and replays each block in the backward pass, as fine-tuning's `--recompute` does.
public func outputSensitivity(
    config: ModelConfig, weights: ModelWeights, tokens: [Int], seq: Int, recompute: Bool? = nil,
    progress: ((Int, Int) -> Void)? = nil
) throws -> [String: [Float]] {
    let sequences = (tokens.count - 1) / seq
    guard sequences >= 1 else {
        throw LowRAError(.invalidArgument, "sensitivity needs more than \(seq) tokens, got \(tokens.count)")
    }
    let recompute = recompute ?? (sensitivityActivationBytes(config: config, seq: seq) > recomputeAboveBytes)
    let graph = try TrainingGraph(
        config: config, weights: weights, batch: 1, seq: seq, rank: 1, recompute: recompute)
    graph.releasesStoredWeights = true  // one layer of a model larger than memory resident at a time
    let adapter = try LoRAAdapter(config: config, rank: 1)  // B = 0: the model itself
    var sums = [String: [Double]]()
    for l in 0..<config.numLayers {
        for kind in LinearKind.allCases {
            sums[WeightNaming.huggingFace.linear(l, kind)] = [Double](repeating: 0, count: kind.shape(config).out)
        }
    }
    graph.observeOutputGradient = { l, kind, dy, rows, out in
        sums[WeightNaming.huggingFace.linear(l, kind)]!.withUnsafeMutableBufferPointer { acc in
            for r in 0..<rows {
                for j in 0..<out { acc[j] += Double(dy[r * out + j]) * Double(dy[r * out + j]) }
            }
        }
    }
    var gradient = [Float](repeating: 0, count: adapter.values.count)
    for s in 0..<sequences {
        progress?(s, sequences)
        let window = Array(tokens[(s * seq)...(s * seq + seq)])
        _ = try graph.lossAndGradient(
            inputs: Array(window.dropLast()), targets: Array(window.dropFirst()), adapter: adapter,
            gradient: &gradient)
    }
    progress?(sequences, sequences)
    // Summed in a fixed order (a dictionary's is not), so that the weights are the same each run.
    let total = sums.keys.sorted().reduce(0.0) { $0 + sums[$1]!.reduce(0, +) }
    let count = sums.values.reduce(0) { $0 + $1.count }
    let mean = max(total / Double(count), 1e-300)
    return sums.mapValues { $0.map { Float($0 / mean) } }
}

/// Above this many bytes of saved activations `outputSensitivity` recomputes blocks in its backward
/// passes (SmolLM2-135M saves 0.33 GB, Qwen2.5-0.5B 0.59 GB: neither recomputes).
public let recomputeAboveBytes = 1 << 30

/// Bytes of every block's saved activations in the Fisher's backward pass (rank-1 graph, one sequence).
func sensitivityActivationBytes(config: ModelConfig, seq: Int) -> Int {
    MemoryModel(config: config, bits: nil, rank: 1, batch: 1, seq: seq).savedActivationBytes
}
