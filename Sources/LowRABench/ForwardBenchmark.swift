import Foundation
import LowRAModel
import LowRAQuant
import LowRATensor

/// Throughput of the runtime on one machine, measured in one run so the ratios are fair.
public struct ForwardBenchmark: Codable, Sendable {
    public var prefillTokens: Int
    /// OpenBLAS sgemm at the prefill's own shapes, weighted as one prefill uses them.
    public var sgemmGflops: Double
    public var prefillSeconds: Double
    /// FLOPs counted: 2·T·(linear + head parameters) + 4·L·H·T²·D (attention as computed).
    public var prefillFlops: Double
    public var prefillGflops: Double
    public var prefillToSgemmRatio: Double
    public var decodeTokensPerS: Double
    /// Large-copy bandwidth, bytes read + written per second.
    public var bandwidthGBs: Double
    /// fp32 weight bytes streamed per decoded token.
    public var decodeBytesPerToken: Double
    /// The decode rate the bandwidth allows: bandwidth / bytes per token.
    public var decodeBoundTokensPerS: Double

    enum CodingKeys: String, CodingKey {
        case prefillTokens = "prefill_tokens", sgemmGflops = "sgemm_gflops", prefillSeconds = "prefill_seconds"
        case prefillFlops = "prefill_flops", prefillGflops = "prefill_gflops", prefillToSgemmRatio =
            "prefill_to_sgemm_ratio"
        case decodeTokensPerS = "decode_tokens_per_s", bandwidthGBs = "bandwidth_gbs"
        case decodeBytesPerToken = "decode_bytes_per_token", decodeBoundTokensPerS = "decode_bound_tokens_per_s"
    }

    /// Runs each measurement `repeats` times and keeps the best. `progress` names the step.
    public static func run(
        model: LanguageModel, tokens t: Int = 512, decodeTokens: Int = 64, repeats: Int = 3,
        progress: ((String) -> Void)? = nil
    ) throws -> ForwardBenchmark {
        let c = model.config
        guard t >= 32, t + decodeTokens <= c.maxPositions, decodeTokens >= 1 else {
            throw LowRAError(
                .invalidArgument,
                "--tokens must be at least 32 and --tokens + --decode-tokens at most \(c.maxPositions)")
        }
        func best(_ body: () throws -> Void) rethrows -> Double {
            var b = Double.infinity
            for _ in 0..<repeats {
                let t0 = Date()
                try body()
                b = min(b, Date().timeIntervalSince(t0))
            }
            return b
        }
        // sgemm at each linear shape, weighted by how often a prefill runs it.
        progress?("sgemm")
        var shapes: [(n: Int, k: Int, count: Int)] = [
            (c.qDim, c.hiddenSize, c.numLayers), (c.kvDim, c.hiddenSize, 2 * c.numLayers),
            (c.hiddenSize, c.qDim, c.numLayers), (c.intermediateSize, c.hiddenSize, 2 * c.numLayers),
            (c.hiddenSize, c.intermediateSize, c.numLayers), (c.vocabSize, c.hiddenSize, 1),
        ]
        shapes = shapes.filter { $0.count > 0 }
        var gemmFlops = 0.0
        var gemmSeconds = 0.0
        for s in shapes {
            let x = [Float](repeating: 0.01, count: t * s.k)
            let w = [Float](repeating: 0.02, count: s.n * s.k)
            var y = [Float](repeating: 0, count: t * s.n)
            matmulTransB(x, w, &y, m: t, n: s.n, k: s.k)  // warm-up
            let sec = best { matmulTransB(x, w, &y, m: t, n: s.n, k: s.k) }
            gemmFlops += 2 * Double(t * s.n * s.k * s.count)
            gemmSeconds += sec * Double(s.count)
        }
        let sgemm = gemmFlops / gemmSeconds / 1e9

        progress?("prefill")
        let tokens = benchmarkTokens(t, vocabulary: c.vocabSize)
        let cache = KVCache(config: c, capacity: t + decodeTokens)
        _ = try model.forward(tokens, cache: cache, logits: .all)  // warm-up
        let prefill = try best {
            cache.reset()
            _ = try model.forward(tokens, cache: cache, logits: .all)
        }
        let linearParams = shapes.reduce(0.0) { $0 + Double($1.n * $1.k * $1.count) }
        let flops = 2 * Double(t) * linearParams + 4 * Double(c.numLayers * c.numHeads * c.headDim) * Double(t * t)

        progress?("decode")
        let prompt = Array(tokens.prefix(16))
        let decode = try best {
            cache.reset()
            _ = try model.forward(prompt, cache: cache, logits: .last)
            for i in 0..<decodeTokens {
                _ = try model.forward([tokens[16 + i % (t - 16)]], cache: cache, logits: .last)
            }
        }
        // Time decode alone: subtract a separately measured 16-token prefill.
        let shortPrefill = try best {
            cache.reset()
            _ = try model.forward(prompt, cache: cache, logits: .last)
        }
        let decodeRate = Double(decodeTokens) / max(1e-9, decode - shortPrefill)

        progress?("bandwidth")
        let bandwidth = DequantBenchmark.copyBandwidth(repeats: repeats)
        let bytesPerToken = 4 * linearParams
        return ForwardBenchmark(
            prefillTokens: t, sgemmGflops: sgemm, prefillSeconds: prefill, prefillFlops: flops,
            prefillGflops: flops / prefill / 1e9, prefillToSgemmRatio: flops / prefill / 1e9 / sgemm,
            decodeTokensPerS: decodeRate, bandwidthGBs: bandwidth, decodeBytesPerToken: bytesPerToken,
            decodeBoundTokensPerS: bandwidth * 1e9 / bytesPerToken)
    }
}
