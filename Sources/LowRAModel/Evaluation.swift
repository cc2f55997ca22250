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
            logits.withUnsafeBufferPointer { lp in
                for i in 0..<(window.count - 1) {
                    let row = lp.baseAddress! + i * v
                    let (lse, arg) = logSumExpAndArgmax(row, count: v)
                    let target = window[i + 1]
                    nll += lse - Double(row[target])
                    if arg == target { correct += 1 }
                    count += 1
                }
            }
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
