import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRATokenizer

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
    public var targetCount: Int { targetCount(first: count) }

    /// Targets that carry a loss in the first `n` examples (what validation on them scores).
    public func targetCount(first n: Int) -> Int {
        targets.prefix(n).reduce(0) { $0 + $1.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }
    }

    /// A `.jsonl` file (by extension) holds conversations; anything else is plain text.
    public static func load(_ path: String, tokenizer: Tokenizer, seq: Int) throws -> TrainingData {
        path.lowercased().hasSuffix(".jsonl")
            ? try jsonl(path, tokenizer: tokenizer, seq: seq) : try text(path, tokenizer: tokenizer, seq: seq)
    }

    private static func read(_ path: String) throws -> (text: String, sha: String) {
        guard FileManager.default.fileExists(atPath: path) else { throw LowRAError(.io, "\(path): no such file") }
        let data = try mapFile(path)
        guard !data.isEmpty else { throw LowRAError(.invalidArgument, "\(path): the file is empty") }
        guard let text = String(data: data, encoding: .utf8) else {
            throw LowRAError(.invalidArgument, "\(path): not UTF-8 text")
        }
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
            throw LowRAError(
                .invalidArgument, "\(path): \(ids.count) tokens is too short for one sequence of \(seq) (+1) tokens")
        }
        var inputs = [[Int]](), targets = [[Int]]()
        for b in 0..<blocks {
            inputs.append(Array(ids[(b * seq)..<(b * seq + seq)]))
            targets.append(Array(ids[(b * seq + 1)...(b * seq + seq)]))
        }
        return TrainingData(kind: .text, seq: seq, inputs: inputs, targets: targets, sha256: sha, tokens: ids.count)
    }

    /// JSONL, one conversation per line: either {"prompt": …, "response": …} or
    /// {"messages": [{"role": "system"|"user"|"assistant", "content": …}, …]}, rendered with the
    /// model's ChatML template (with its default system message when the conversation has none).
    /// The loss is taken on the assistant turns only (their content and closing <|im_end|>).
    /// Shorter conversations are padded (padding carries no loss); a longer one keeps its first
    /// seq + 1 tokens and must reach an assistant token within them.
    public static func jsonl(_ path: String, tokenizer: Tokenizer, seq: Int) throws -> TrainingData {
        guard seq >= 1 else { throw LowRAError(.invalidArgument, "--seq must be positive") }
        let (text, sha) = try read(path)
        guard let template = tokenizer.chatTemplate, template.format == .chatML else {
            throw LowRAError(.unsupported, "\(path): conversation data needs a model with a ChatML chat template")
        }
        let pad = tokenizer.eosTokenId ?? 0
        var inputs = [[Int]](), targets = [[Int]]()
        var tokens = 0
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let where_ = "\(path): line \(i + 1)"
            let obj = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any]
            guard let obj else { throw LowRAError(.invalidArgument, "\(where_) is not a JSON object") }
            var messages = [ChatMessage]()
            if let list = obj["messages"] {
                guard let list = list as? [[String: Any]], !list.isEmpty else {
                    throw LowRAError(
                        .invalidArgument, "\(where_): \"messages\" must be a non-empty list of {\"role\", \"content\"}")
                }
                for m in list {
                    guard let role = m["role"] as? String, ["system", "user", "assistant"].contains(role),
                        let content = m["content"] as? String
                    else {
                        throw LowRAError(
                            .invalidArgument,
                            "\(where_): every message needs a role (system, user, assistant) and a string content")
                    }
                    messages.append(ChatMessage(role: role, content: content))
                }
            } else {
                guard let prompt = obj["prompt"] as? String else {
                    throw LowRAError(
                        .invalidArgument, "\(where_) has no string field \"prompt\" (or a \"messages\" list)")
                }
                guard let response = obj["response"] as? String else {
                    throw LowRAError(.invalidArgument, "\(where_) has no string field \"response\"")
                }
                messages = [
                    ChatMessage(role: "user", content: prompt), ChatMessage(role: "assistant", content: response),
                ]
            }
            guard messages.contains(where: { $0.role == "assistant" }) else {
                throw LowRAError(.invalidArgument, "\(where_) has no assistant turn to train on")
            }
            // Token ids piece by piece: the template around each turn carries no loss.
            var ids = [Int](), trained = [Bool]()
            func add(_ s: String, _ t: Bool) {
                let e = tokenizer.encode(s)
                ids += e
                trained += [Bool](repeating: t, count: e.count)
            }
            if let sys = template.defaultSystem, messages.first?.role != "system" {
                add("<|im_start|>system\n\(sys)<|im_end|>\n", false)
            }
            for m in messages {
                add("<|im_start|>\(m.role)\n", false)
                add(m.content + "<|im_end|>\n", m.role == "assistant")
            }
            ids = Array(ids.prefix(seq + 1))
            guard ids.count >= 2, trained[1..<ids.count].contains(true) else {
                throw LowRAError(
                    .invalidArgument,
                    "\(where_): no assistant token within the first \(seq + 1) tokens; raise --seq or shorten the "
                        + "prompt"
                )
            }
            tokens += ids.count
            var inp = Array(ids.dropLast())
            var tgt = (1..<ids.count).map { trained[$0] ? ids[$0] : -1 }
            while inp.count < seq {
                inp.append(pad)
                tgt.append(-1)
            }
            inputs.append(inp)
            targets.append(tgt)
        }
        guard !inputs.isEmpty else { throw LowRAError(.invalidArgument, "\(path): no conversations") }
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
