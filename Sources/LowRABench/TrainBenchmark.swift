import LowRATrain
import Foundation
import LowRAModel
import LowRATensor

/// Training throughput against the machine's own sgemm, measured in one run.
public enum TrainBenchmark {
    /// FLOPs of one training step as counted for the report: 4 · (linear + head parameters) per
    /// token (forward and the input-gradient backward; the frozen base gets no weight gradient)
    /// plus attention, 12 · L · H · T² · D per sequence (QKᵀ and PV forward, four products
    /// backward). LoRA's own products are not counted.
    public static func stepFlops(_ c: ModelConfig, batch: Int, seq: Int) -> Double {
        let linear = Double(c.linearParameters)
        let head = Double(c.vocabSize * c.hiddenSize)
        let tokens = Double(batch * seq)
        return 4 * (linear + head) * tokens + 12 * Double(c.numLayers * c.numHeads * c.headDim) * Double(seq * seq)
            * Double(batch)
    }

    public static func run(
        config c: ModelConfig, weights: ModelWeights, rank: Int, batch: Int, seq: Int, steps: Int,
        recompute: Bool = false, integerBackward: Bool = true,
        progress: ((String) -> Void)? = nil
    ) throws -> [String: Any] {
        guard steps >= 1 else { throw LowRAError(.invalidArgument, "--steps must be positive") }
        let n = batch * seq
        // sgemm at the step's shapes: forward (N, out, in) with W transposed, backward (N, in, out).
        progress?("sgemm")
        let shapes =
            LinearKind.allCases.map { (out: $0.shape(c).out, in: $0.shape(c).in, count: c.numLayers) }
            + [(out: c.vocabSize, in: c.hiddenSize, count: 1)]
        var gemmFlops = 0.0, gemmSeconds = 0.0
        for s in shapes {
            let rows = s.out == c.vocabSize ? min(n, 128) : n  // the head runs in chunks of 128 rows
            let x = [Float](repeating: 0.01, count: rows * max(s.in, s.out))
            let w = [Float](repeating: 0.02, count: s.out * s.in)
            var y = [Float](repeating: 0, count: rows * max(s.in, s.out))
            matmulTransB(x, w, &y, m: rows, n: s.out, k: s.in)
            var t0 = Date()
            matmulTransB(x, w, &y, m: rows, n: s.out, k: s.in)
            var sec = Date().timeIntervalSince(t0)
            t0 = Date()
            matmul(x, w, &y, m: rows, n: s.in, k: s.out)
            sec += Date().timeIntervalSince(t0)
            gemmFlops += 4 * Double(rows * s.out * s.in) * Double(s.count)
            gemmSeconds += sec * Double(s.count)
        }
        let sgemm = gemmFlops / gemmSeconds / 1e9

        progress?("setup")
        var adapter = try LoRAAdapter(config: c, rank: rank)
        adapter.initializeKaiming(seed: 1)
        let graph = try TrainingGraph(
            config: c, weights: weights, batch: batch, seq: seq, rank: rank, recompute: recompute,
            integerBackward: integerBackward)
        var adam = AdamW(count: adapter.values.count)
        var grad = [Float](repeating: 0, count: adapter.values.count)
        let inputs = benchmarkTokens(n, vocabulary: c.vocabSize)
        let targets = (0..<n).map { ($0 * 104_729 + 7) % c.vocabSize }
        func step() throws {
            for i in grad.indices { grad[i] = 0 }
            _ = try graph.lossAndGradient(inputs: inputs, targets: targets, adapter: adapter, gradient: &grad)
            clipGradientNorm(&grad, maxNorm: 0.3)
            adam.update(&adapter.values, gradient: grad, lr: 1e-4)
        }
        progress?("warm-up step")
        try step()
        var best = Double.infinity
        for i in 0..<steps {
            progress?("step \(i + 1)/\(steps)")
            let t0 = Date()
            try step()
            best = min(best, Date().timeIntervalSince(t0))
        }
        let flops = stepFlops(c, batch: batch, seq: seq)
        let achieved = flops / best / 1e9
        let mem = MemoryStats.current()
        return [
            "batch": batch, "seq": seq, "rank": rank, "step_seconds": best, "tokens_per_s": Double(n) / best,
            "step_gflop": flops / 1e9, "train_gflops": achieved, "sgemm_gflops": sgemm,
            "train_to_sgemm_ratio": achieved / sgemm,
            "peak_rss_bytes": mem.peakResidentBytes, "workspace_bytes": graph.workspaceBytes, "recompute": recompute,
            "resident_weight_bytes": weights.weightBytes, "adapter_parameters": adapter.parameterCount,
            "kernel_path": KernelPath.variant(), "forward": graph.forwardThroughTiles ? "integer tiles" : "fp32",
            "backward": graph.integerBackward ? "integer tiles" : "fp32",
        ]
    }
}
