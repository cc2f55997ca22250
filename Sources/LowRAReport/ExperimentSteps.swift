import Foundation

// What `lowra experiment` reads of its steps, each a `lowra` child process (so a killed sweep
// loses at most the step it was in, and each step's memory is its own): the JSON that
// `eval --json` and `finetune --json` print, decoded by the keys those commands write, and the
// exit status that tells a diverged training run from other failures. (`quantize --json` prints
// its `QuantizeReport`, which the experiment decodes as it is.)

/// `lowra eval --json`: perplexity and accuracy, and with `--reference` the drift.
public struct EvalStepOutput: Decodable, Sendable {
    public var perplexity: Double
    public var accuracy: Double
    public var tokens: Int
    public var peakRSSBytes: Int?
    public var klDivergence: Double?
    public var top1Agreement: Double?

    enum CodingKeys: String, CodingKey {
        case perplexity, accuracy, tokens
        case peakRSSBytes = "peak_rss_bytes"
        case klDivergence = "kl_divergence"
        case top1Agreement = "top1_agreement"
    }

    public var numbers: EvalNumbers { EvalNumbers(perplexity: perplexity, accuracy: accuracy, tokens: tokens) }
}

/// `lowra finetune --json`: the validation loss before and after (its `FinetuneResult` without the
/// log, which the command leaves out).
public struct FinetuneStepOutput: Decodable, Sendable {
    public var validLossBefore: Double?
    public var validLossAfter: Double?
    public var peakRSSBytes: Int?

    enum CodingKeys: String, CodingKey {
        case validLossBefore = "valid_loss_before"
        case validLossAfter = "valid_loss_after"
        case peakRSSBytes = "peak_rss_bytes"
    }
}
