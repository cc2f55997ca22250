import Foundation
import LowRAModel
import LowRATensor

/// Generation speed of one model as a user sees it: prefill of a prompt (logits of its last
/// position only, as generation computes them) and greedy decoding, plus the weight bytes each
/// decoded token reads and the rate memory bandwidth alone would allow.
public struct DecodeMeasurement: Codable, Sendable {
    public var decodeTokensPerS: Double
    public var prefillTokensPerS: Double
    /// Weight bytes one decoded token reads: every linear layer and the head as stored, plus one
    /// embedding row (the KV cache, a few hundred KB at these lengths, is not counted).
    public var bytesPerToken: Int

    enum CodingKeys: String, CodingKey {
        case decodeTokensPerS = "decode_tokens_per_s", prefillTokensPerS = "prefill_tokens_per_s"
        case bytesPerToken = "bytes_per_token"
    }
}

public enum DecodeBenchmark {
    /// Weight bytes a decoded token reads from `weights`.
    public static func bytesPerToken(_ w: ModelWeights) -> Int {
        let layers = w.blocks.reduce(0) { acc, b in acc + b.linears.reduce(0) { $0 + $1.weightBytes } }
        return layers + w.outputHead.weightBytes + w.embedding.weightBytes / max(1, w.embedding.outFeatures)
    }

    /// One measurement: a `prefill`-token prompt, then `decode` tokens from a 16-token prompt,
    /// each timed alone. Token ids are a fixed pseudo-random sequence, so runs compare.
    public static func measure(model: LanguageModel, prefill: Int = 512, decode: Int = 128) throws -> DecodeMeasurement
    {
        let c = model.config
        guard prefill >= 1, decode >= 1, prefill <= c.maxPositions, 16 + decode <= c.maxPositions else {
            throw LowRAError(
                .invalidArgument, "prefill and 16 + decode tokens must each fit the context (\(c.maxPositions))")
        }
        let tokens = benchmarkTokens(max(prefill, 16), vocabulary: c.vocabSize)
        let prefillCache = KVCache(config: c, capacity: prefill)
        model.weights.prepareDecode()
        let t0 = Date()
        _ = try model.forward(Array(tokens.prefix(prefill)), cache: prefillCache, logits: .last)
        let prefillSeconds = Date().timeIntervalSince(t0)

        let cache = KVCache(config: c, capacity: 16 + decode)
        var logits = try model.forward(Array(tokens.prefix(16)), cache: cache, logits: .last)
        let t1 = Date()
        for _ in 0..<decode {
            let next = logits.indices.max { logits[$0] < logits[$1] } ?? 0
            logits = try model.forward([next], cache: cache, logits: .last)
        }
        let decodeSeconds = Date().timeIntervalSince(t1)
        return DecodeMeasurement(
            decodeTokensPerS: Double(decode) / decodeSeconds, prefillTokensPerS: Double(prefill) / prefillSeconds,
            bytesPerToken: bytesPerToken(model.weights))
    }
}

/// A fixed pseudo-random token sequence, so that benchmark runs compare.
public func benchmarkTokens(_ count: Int, vocabulary: Int) -> [Int] {
    (0..<count).map { ($0 * 7919 + 13) % vocabulary }
}

extension ModelWeights {
    /// The same model with every matrix expanded to fp32 (the fp32 runtime's baseline).
    public func expandedToFP32() -> ModelWeights {
        func dense(_ l: Linear) -> Linear {
            Linear(outFeatures: l.outFeatures, inFeatures: l.inFeatures, weight: l.weight, bias: l.bias)
        }
        var w = self
        w.embedding = dense(embedding)
        w.head = head.map(dense)
        for i in w.blocks.indices { w.blocks[i].linears = blocks[i].linears.map(dense) }
        return w
    }
}
