import Foundation
import LowRAIO
import LowRAModel
import LowRATensor

/// Training examples cut to one sequence length: each has `seq` input ids and `seq` targets
/// (the next token, or -1 where no loss is taken).
public struct TrainingData: Sendable {
    public enum Kind: String, Codable, Sendable { case text, jsonl }
    public let kind: Kind
    public let seq: Int
    public let inputs: [[Int]]
    public let targets: [[Int]]
    /// sha256 of the file the examples were made from.
    public let sha256: String
    /// Tokens in the file (text) or in all examples (JSONL).
    public let tokens: Int
    public var count: Int { inputs.count }
    /// Targets that carry a loss, over all examples.
    public var targetCount: Int { targets.reduce(0) { $0 + $1.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } } }

    /// A `.jsonl` file (by extension) holds prompt/response pairs; anything else is plain text.
    public static func load(_ path: String, tokenizer: Tokenizer, seq: Int) throws -> TrainingData {
        path.lowercased().hasSuffix(".jsonl")
            ? try jsonl(path, tokenizer: tokenizer, seq: seq) : try text(path, tokenizer: tokenizer, seq: seq)
    }

    private static func read(_ path: String) throws -> (text: String, sha: String) {
        guard FileManager.default.fileExists(atPath: path) else { throw LowRAError(.io, "\(path): no such file") }
        let data = try mapFile(path)
        guard !data.isEmpty else { throw LowRAError(.invalidArgument, "\(path): the file is empty") }
        guard let text = String(data: data, encoding: .utf8) else { throw LowRAError(.invalidArgument, "\(path): not UTF-8 text") }
        var h = SHA256()
        data.withUnsafeBytes { h.update($0) }
        return (text, h.finalize())
    }

    /// Plain text: tokenized whole, cut into blocks of seq + 1 tokens that overlap by one (each
    /// block's last token is the next block's first input), every position trained.
    public static func text(_ path: String, tokenizer: Tokenizer, seq: Int) throws -> TrainingData {
        guard seq >= 1 else { throw LowRAError(.invalidArgument, "--seq must be positive") }
        let (text, sha) = try read(path)
        let ids = tokenizer.encode(text)
        let blocks = (ids.count - 1) / seq
        guard blocks >= 1 else {
            throw LowRAError(.invalidArgument, "\(path): \(ids.count) tokens is too short for one sequence of \(seq) (+1) tokens")
        }
        var inputs = [[Int]](), targets = [[Int]]()
        for b in 0..<blocks {
            inputs.append(Array(ids[(b * seq)..<(b * seq + seq)]))
            targets.append(Array(ids[(b * seq + 1)...(b * seq + seq)]))
        }
        return TrainingData(kind: .text, seq: seq, inputs: inputs, targets: targets, sha256: sha, tokens: ids.count)
    }

    /// JSONL with one {"prompt": …, "response": …} object per line, rendered with the model's
    /// ChatML template (prompt as the user turn, response as the assistant turn ending with
    /// <|im_end|>); the loss is taken on the response tokens only. Shorter examples are padded
    /// (padding carries no loss); a pair longer than seq + 1 tokens keeps its first seq + 1.
    public static func jsonl(_ path: String, tokenizer: Tokenizer, seq: Int) throws -> TrainingData {
        guard seq >= 1 else { throw LowRAError(.invalidArgument, "--seq must be positive") }
        let (text, sha) = try read(path)
        guard let template = tokenizer.chatTemplate, template.format == .chatML else {
            throw LowRAError(.unsupported, "\(path): prompt/response data needs a model with a ChatML chat template")
        }
        let pad = tokenizer.eosTokenId ?? 0
        var inputs = [[Int]](), targets = [[Int]]()
        var tokens = 0
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let obj = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any]
            guard let obj else { throw LowRAError(.invalidArgument, "\(path): line \(i + 1) is not a JSON object") }
            guard let prompt = obj["prompt"] as? String else {
                throw LowRAError(.invalidArgument, "\(path): line \(i + 1) has no string field \"prompt\"")
            }
            guard let response = obj["response"] as? String else {
                throw LowRAError(.invalidArgument, "\(path): line \(i + 1) has no string field \"response\"")
            }
            let promptIds = tokenizer.encode(try template.render([ChatMessage(role: "user", content: prompt)]))
            let responseIds = tokenizer.encode(response + "<|im_end|>\n")
            guard promptIds.count < seq else {
                throw LowRAError(.invalidArgument, "\(path): line \(i + 1): the prompt takes \(promptIds.count) tokens, --seq is \(seq); nothing of the response would be trained")
            }
            let ids = Array((promptIds + responseIds).prefix(seq + 1))
            tokens += ids.count
            var inp = Array(ids.dropLast()), tgt = Array(ids.dropFirst())
            for j in 0..<tgt.count where j + 1 < promptIds.count { tgt[j] = -1 }  // predicting prompt tokens: no loss
            while inp.count < seq {
                inp.append(pad)
                tgt.append(-1)
            }
            inputs.append(inp)
            targets.append(tgt)
        }
        guard !inputs.isEmpty else { throw LowRAError(.invalidArgument, "\(path): no prompt/response pairs") }
        return TrainingData(kind: .jsonl, seq: seq, inputs: inputs, targets: targets, sha256: sha, tokens: tokens)
    }

    private func permutation(epoch: Int, seed: UInt64) -> [Int] {
        var rng = SplitMix64(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(epoch) &+ 1)
        var p = Array(0..<count)
        for i in stride(from: count - 1, to: 0, by: -1) { p.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        return p
    }

    /// Flat inputs and targets of `size` examples from stream position `start`. The stream runs
    /// through the examples epoch after epoch, each epoch a fresh permutation seeded by (seed,
    /// epoch): a pure function of (seed, position), so a resumed run sees the same batches.
    public func batch(start: Int, size: Int, seed: UInt64, shuffle: Bool = true) -> (inputs: [Int], targets: [Int]) {
        var cache = [Int: [Int]]()
        var inp = [Int](), tgt = [Int]()
        for k in start..<(start + size) {
            let epoch = k / count
            if shuffle && cache[epoch] == nil { cache[epoch] = permutation(epoch: epoch, seed: seed) }
            let i = shuffle ? cache[epoch]![k % count] : k % count
            inp += inputs[i]
            tgt += targets[i]
        }
        return (inp, tgt)
    }
}
