import Foundation
import LowRATensor

/// Perplexity and next-token accuracy over a token stream.
public struct EvalResult: Codable, Sendable {
    public var perplexity: Double
    public var accuracy: Double
    /// Tokens evaluated (the stream's length).
    public var tokens: Int
    /// Predictions scored: tokens minus one per window.
    public var predictions: Int
    public var meanNLL: Double
    public var windows: Int
    public var context: Int
    public var seconds: Double
}

extension LlamaModel {
    /// Cuts `tokens` into consecutive windows of `context` tokens (the last may be shorter), runs
    /// each from an empty cache, and scores every position's prediction of the next token.
    /// `progress(done, total)` reports windows.
    public func evaluate(
        tokens: [Int], context: Int, progress: ((Int, Int) -> Void)? = nil
    ) throws -> EvalResult {
        guard tokens.count >= 2 else {
            throw LowRAError(.invalidArgument, "evaluation needs at least 2 tokens, got \(tokens.count)")
        }
        guard context >= 2 else { throw LowRAError(.invalidArgument, "--context must be at least 2") }
        guard context <= config.maxPositions else {
            throw LowRAError(.invalidArgument, "--context \(context) exceeds the model's context of \(config.maxPositions)")
        }
        let t0 = Date()
        let cache = KVCache(config: config, capacity: context)
        var nll = 0.0
        var correct = 0
        var count = 0
        var windows = 0
        let starts = Array(stride(from: 0, to: tokens.count, by: context))
        for (w, start) in starts.enumerated() {
            let window = Array(tokens[start..<min(start + context, tokens.count)])
            progress?(w, starts.count)
            guard window.count >= 2 else { continue }
            cache.reset()
            let logits = try forward(window, cache: cache, logits: .all)
            let v = config.vocabSize
            // Per-position scores, computed in parallel, summed in order (deterministic).
            let n = window.count - 1
            var rowNLL = [Double](repeating: 0, count: n)
            var rowHit = [Bool](repeating: false, count: n)
            logits.withUnsafeBufferPointer { lp in
                rowNLL.withUnsafeMutableBufferPointer { nb in
                    rowHit.withUnsafeMutableBufferPointer { hb in
                        let out = UncheckedSendable((nb.baseAddress!, hb.baseAddress!))
                        let base = UncheckedSendable(lp.baseAddress!)
                        parallelFor(n, minPerChunk: 16) { range in
                            for i in range {
                                let row = base.value + i * v
                                let (lse, arg) = logSumExpAndArgmax(row, count: v)
                                out.value.0[i] = lse - Double(row[window[i + 1]])
                                out.value.1[i] = arg == window[i + 1]
                            }
                        }
                    }
                }
            }
            for i in 0..<n {
                nll += rowNLL[i]
                if rowHit[i] { correct += 1 }
            }
            count += n
            windows += 1
        }
        progress?(starts.count, starts.count)
        let mean = nll / Double(count)
        return EvalResult(
            perplexity: exp(mean), accuracy: Double(correct) / Double(count), tokens: tokens.count,
            predictions: count, meanNLL: mean, windows: windows, context: context,
            seconds: Date().timeIntervalSince(t0))
    }
}
