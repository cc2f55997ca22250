import Foundation
import LowRATensor

/// How the next token is chosen.
public struct SamplingOptions: Sendable {
    public var temperature: Float = 0.7
    public var topK: Int = 0  // 0: off
    public var topP: Float = 1  // 1: off
    public var seed: UInt64 = 0
    public init(temperature: Float = 0.7, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }
}

/// Picks a token from one row of logits: greedy at temperature 0, else softmax sampling
/// restricted to the top-k and the top-p nucleus.
public struct Sampler {
    public let options: SamplingOptions
    private var rng: SplitMix64

    public init(_ options: SamplingOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
    }

    public mutating func sample(_ logits: ArraySlice<Float>) -> Int {
        let base = logits.startIndex
        if options.temperature <= 0 {
            var best = base
            for i in logits.indices where logits[i] > logits[best] { best = i }
            return best - base
        }
        if options.topK <= 0 || options.topK >= logits.count, options.topP >= 1 {
            return sampleWhole(logits)
        }
        var order = Array(0..<logits.count)
        order.sort { logits[base + $0] > logits[base + $1] }
        if options.topK > 0 { order = Array(order.prefix(options.topK)) }
        let mx = logits[base + order[0]]
        var probs = order.map { Double(expf((logits[base + $0] - mx) / options.temperature)) }
        let total = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= total }
        var keep = probs.count
        if options.topP < 1 {
            var acc = 0.0
            for (i, p) in probs.enumerated() {
                acc += p
                if acc >= Double(options.topP) {
                    keep = i + 1
                    break
                }
            }
        }
        return order[draw(probs.prefix(keep))]
    }

    /// Softmax sampling over the whole vocabulary, walked in index order: no sort (which costs
    /// more than a small model's decode step).
    private mutating func sampleWhole(_ logits: ArraySlice<Float>) -> Int {
        let mx = logits.max()!
        return draw(logits.map { Double(expf(($0 - mx) / options.temperature)) }[...])
    }

    /// An index of `weights` (unnormalized, from index 0) drawn in proportion to its weight; the
    /// last positive one when rounding leaves the walk short.
    private mutating func draw(_ weights: ArraySlice<Double>) -> Int {
        var u = rng.nextUnit() * weights.reduce(0, +)
        for i in weights.indices {
            u -= weights[i]
            if u <= 0 { return i }
        }
        return weights.lastIndex { $0 > 0 }!
    }
}

/// What a generation run produced.
public struct GenerationResult: Sendable {
    public var tokens: [Int]
    public var promptTokens: Int
    public var prefillSeconds: Double
    public var decodeSeconds: Double
    public var stoppedAtEOS: Bool
    public var decodeTokensPerSecond: Double {
        tokens.count > 1 ? Double(tokens.count - 1) / decodeSeconds : 0
    }
}

extension LanguageModel {
    /// Generates up to `maxNewTokens` after `prompt`, calling `onToken` with each new id;
    /// `onToken` returns false to stop. Stops at `eos`. `adapter` (if any) runs on every linear layer.
    public func generate(
        prompt: [Int], maxNewTokens: Int, sampling: SamplingOptions, eos: Int?, adapter: LoRAAdapter? = nil,
        onToken: (Int) -> Bool = { _ in true }
    ) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw LowRAError(.invalidArgument, "the prompt is empty") }
        guard prompt.count < config.maxPositions else {
            throw LowRAError(
                .invalidArgument, "the prompt has \(prompt.count) tokens; the model's context is \(config.maxPositions)"
            )
        }
        let capacity = min(config.maxPositions, prompt.count + maxNewTokens)
        let cache = KVCache(config: config, capacity: capacity)
        var sampler = Sampler(sampling)
        weights.prepareDecode()  // the decode kernels' tiles, once per model, outside the timings
        let t0 = Date()
        var logits = try forward(prompt, cache: cache, logits: .last, adapter: adapter)
        let prefill = Date().timeIntervalSince(t0)
        var out = [Int]()
        var stopped = false
        let t1 = Date()
        while out.count < maxNewTokens {
            let next = sampler.sample(logits[...])
            out.append(next)
            if next == eos {
                stopped = true
                break
            }
            if !onToken(next) || cache.length >= capacity { break }
            logits = try forward([next], cache: cache, logits: .last, adapter: adapter)
        }
        return GenerationResult(
            tokens: out, promptTokens: prompt.count, prefillSeconds: prefill,
            decodeSeconds: Date().timeIntervalSince(t1), stoppedAtEOS: stopped)
    }
}
