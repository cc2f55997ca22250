import Foundation

// What `lowra experiment` reads of its steps, each a `lowra` child process (so a killed sweep
// loses at most the step it was in, and each step's memory is its own): the JSON that
// `quantize --json`, `eval --json` and `finetune --json` print, decoded by the keys those commands
// write (snake_case, `stepDecoder`), and the exit status that tells a diverged training run from
// other failures.

/// Decodes a step's JSON: its snake_case keys are the properties' names.
public func stepDecoder() -> JSONDecoder {
    let d = JSONDecoder()
    d.keyDecodingStrategy = .convertFromSnakeCase
    return d
}

/// `lowra quantize --json`: the budget the model reached.
public struct QuantizeStepOutput: Decodable, Sendable {
    public var codeBitsPerParam: Double
    public var storedBitsPerParam: Double
    public var peakRssBytes: Int?
}

/// `lowra eval --json`: perplexity and accuracy, and with `--reference` the drift.
public struct EvalStepOutput: Decodable, Sendable {
    public var perplexity: Double
    public var accuracy: Double
    public var tokens: Int
    public var peakRssBytes: Int?
    public var klDivergence: Double?
    public var top1Agreement: Double?

    public var numbers: EvalNumbers { EvalNumbers(perplexity: perplexity, accuracy: accuracy, tokens: tokens) }
}

/// `lowra finetune --json`: the validation loss before and after.
public struct FinetuneStepOutput: Decodable, Sendable {
    public var validLossBefore: Double?
    public var validLossAfter: Double?
    public var peakRssBytes: Int?
}
