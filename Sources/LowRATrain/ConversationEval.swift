import Foundation
import LowRAModel
import LowRATensor

extension LanguageModel {
    /// Perplexity and next-token accuracy over the trained positions of conversation examples
    /// (the assistant turns of JSONL data): each example runs alone from an empty cache, cut
    /// after its last scored position. `tokens` in the result counts the scored targets.
    public func evaluate(
        examples data: TrainingData, limit: Int? = nil, adapter: LoRAAdapter? = nil,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> EvalResult {
        let t0 = Date()
        let n = min(data.count, limit ?? data.count)
        var nll = 0.0
        var correct = 0, count = 0
        for i in 0..<n {
            progress?(i, n)
            let tgt = data.targets[i]
            guard let last = tgt.lastIndex(where: { $0 >= 0 }) else { continue }
            let inputs = Array(data.inputs[i][0...last])
            let logits = try forward(inputs, cache: KVCache(config: config, capacity: inputs.count), adapter: adapter)
            let v = config.vocabSize
            logits.withUnsafeBufferPointer { lp in
                for r in 0...last where tgt[r] >= 0 {
                    let row = lp.baseAddress! + r * v
                    let (lse, argmax) = logSumExpAndArgmax(row, count: v)
                    nll += lse - Double(row[tgt[r]])
                    if argmax == tgt[r] { correct += 1 }
                    count += 1
                }
            }
        }
        progress?(n, n)
        guard count > 0 else { throw LowRAError(.invalidArgument, "no scored (assistant) tokens to evaluate") }
        return EvalResult(
            perplexity: exp(nll / Double(count)), accuracy: Double(correct) / Double(count), tokens: count,
            predictions: count,
            meanNLL: nll / Double(count), windows: n, context: data.seq, seconds: Date().timeIntervalSince(t0))
    }
}
