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
    /// Against a reference model on the same windows: mean KL(p_ref ‖ p_model) in nats and the
    /// fraction of positions whose top-1 token agrees.
    public var klDivergence: Double? = nil
    public var top1Agreement: Double? = nil

    public init(
        perplexity: Double, accuracy: Double, tokens: Int, predictions: Int, meanNLL: Double, windows: Int,
        context: Int,
        seconds: Double, klDivergence: Double? = nil, top1Agreement: Double? = nil
    ) {
        self.perplexity = perplexity
        self.accuracy = accuracy
        self.tokens = tokens
        self.predictions = predictions
        self.meanNLL = meanNLL
        self.windows = windows
        self.context = context
        self.seconds = seconds
        self.klDivergence = klDivergence
        self.top1Agreement = top1Agreement
    }
}

extension LanguageModel {
    /// Rows of logits scored at once by `evaluate`.
    static let scoreChunk = 64

    /// Cuts `tokens` into consecutive windows of `context` tokens (the last may be shorter), runs
    /// each from an empty cache, and scores every position's prediction of the next token, with
    /// `adapter` (if any) on the model and none on `reference`. `progress(done, total)` reports windows.
    /// `stepwise` runs the generation path instead: each token decoded alone through a KV cache and
    /// its logits computed alone, so the decode kernels (and their `activations`) are what is scored.
    /// `scoredFrom` > 0 scores only the predictions made at positions ≥ it in each window (the
    /// earlier tokens are context), as llama.cpp's perplexity tool scores the second half.
    public func evaluate(
        tokens: [Int], context: Int, adapter: LoRAAdapter? = nil, reference: LanguageModel? = nil,
        stepwise: Bool = false, scoredFrom: Int = 0,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> EvalResult {
        if let reference, reference.config.vocabSize != config.vocabSize {
            throw LowRAError(
                .invalidArgument,
                "the reference model's vocabulary (\(reference.config.vocabSize)) differs from the model's "
                    + "(\(config.vocabSize))"
            )
        }
        var klSum = 0.0
        var agree = 0
        guard tokens.count >= 2 else {
            throw LowRAError(.invalidArgument, "evaluation needs at least 2 tokens, got \(tokens.count)")
        }
        guard context >= 2 else { throw LowRAError(.invalidArgument, "--context must be at least 2") }
        guard scoredFrom >= 0, scoredFrom < context - 1 else {
            throw LowRAError(.invalidArgument, "scored positions must start before the window's last")
        }
        guard context <= config.maxPositions else {
            throw LowRAError(
                .invalidArgument, "--context \(context) exceeds the model's context of \(config.maxPositions)")
        }
        let t0 = Date()
        var nll = 0.0
        var correct = 0
        var count = 0
        var windows = 0
        let starts = Array(stride(from: 0, to: tokens.count, by: context))
        for (w, start) in starts.enumerated() {
            let window = Array(tokens[start..<min(start + context, tokens.count)])
            progress?(w, starts.count)
            guard window.count >= scoredFrom + 2 else { continue }
            // Hidden states for the window (no KV cache: nothing attends to these keys later), then
            // logits a chunk of rows at a time: a (T, V) array of a large vocabulary (512 × 151,936
            // floats = 311 MB) is never held.
            func states(_ model: LanguageModel, _ adapter: LoRAAdapter?) throws -> [Float] {
                guard stepwise else { return try model.hidden(window, cache: nil, adapter: adapter) }
                let cache = KVCache(config: model.config, capacity: window.count)
                return try window.flatMap { try model.hidden([$0], cache: cache, adapter: adapter) }
            }
            let hidden = try states(self, adapter)
            let refHidden = try reference.map { try states($0, nil) }
            let v = config.vocabSize
            let c = config.hiddenSize
            let n = window.count - 1  // predictions in the window
            for r0 in stride(from: scoredFrom, to: n, by: stepwise ? 1 : Self.scoreChunk) {
                let m = stepwise ? 1 : min(Self.scoreChunk, n - r0)
                let logits = hidden.withUnsafeBufferPointer { self.logits($0.baseAddress! + r0 * c, rows: m) }
                // Per-position scores, computed in parallel, summed in order (deterministic).
                var rowNLL = [Double](repeating: 0, count: m)
                var rowHit = [Bool](repeating: false, count: m)
                logits.withUnsafeBufferPointer { lp in
                    rowNLL.withUnsafeMutableBufferPointer { nb in
                        rowHit.withUnsafeMutableBufferPointer { hb in
                            let out = UncheckedSendable((nb.baseAddress!, hb.baseAddress!))
                            let base = UncheckedSendable(lp.baseAddress!)
                            parallelFor(m, minPerChunk: 16) { range in
                                for i in range {
                                    let row = base.value + i * v
                                    let (lse, arg) = logSumExpAndArgmax(row, count: v)
                                    out.value.0[i] = lse - Double(row[window[r0 + i + 1]])
                                    out.value.1[i] = arg == window[r0 + i + 1]
                                }
                            }
                        }
                    }
                }
                for i in 0..<m {
                    nll += rowNLL[i]
                    if rowHit[i] { correct += 1 }
                }
                if let reference, let refHidden {
                    let refLogits = refHidden.withUnsafeBufferPointer {
                        reference.logits($0.baseAddress! + r0 * c, rows: m)
                    }
                    let (kl, same) = klAndAgreement(refLogits, logits, rows: m, vocab: v)
                    klSum += kl
                    agree += same
                }
            }
            count += n - scoredFrom
            windows += 1
        }
        progress?(starts.count, starts.count)
        let mean = nll / Double(count)
        return EvalResult(
            perplexity: exp(mean), accuracy: Double(correct) / Double(count), tokens: tokens.count,
            predictions: count, meanNLL: mean, windows: windows, context: context,
            seconds: Date().timeIntervalSince(t0),
            klDivergence: reference == nil ? nil : klSum / Double(count),
            top1Agreement: reference == nil ? nil : Double(agree) / Double(count))
    }
}

/// Σ over rows of KL(softmax(p) ‖ softmax(q)) and the number of rows whose argmax agree.
/// p, q: (rows, V) logits.
func klAndAgreement(_ p: [Float], _ q: [Float], rows: Int, vocab v: Int) -> (Double, Int) {
    var kl = [Double](repeating: 0, count: rows)
    var same = [Bool](repeating: false, count: rows)
    p.withUnsafeBufferPointer { pb in
        q.withUnsafeBufferPointer { qb in
            kl.withUnsafeMutableBufferPointer { kb in
                same.withUnsafeMutableBufferPointer { sb in
                    let io = UncheckedSendable((pb.baseAddress!, qb.baseAddress!, kb.baseAddress!, sb.baseAddress!))
                    parallelFor(rows, minPerChunk: 8) { range in
                        for r in range {
                            let pr = io.value.0 + r * v
                            let qr = io.value.1 + r * v
                            let (lp, ap) = logSumExpAndArgmax(pr, count: v)
                            let (lq, aq) = logSumExpAndArgmax(qr, count: v)
                            var s = 0.0
                            for i in 0..<v {
                                let a = Double(pr[i]) - lp
                                s += exp(a) * (a - (Double(qr[i]) - lq))
                            }
                            io.value.2[r] = s
                            io.value.3[r] = ap == aq
                        }
                    }
                }
            }
        }
    }
    return (kl.reduce(0, +), same.filter { $0 }.count)
}
