import Foundation
import LowRAIO
import LowRATensor

/// Text <-> token ids: added (special) tokens matched first, then pre-tokenization, then
/// byte-level BPE on each piece.
public struct Tokenizer: Sendable {
    public let bpe: ByteLevelBPE
    public let preTokenizer: any PreTokenizer
    /// Tokens matched verbatim before BPE (`<|im_start|>` and friends), by content.
    public let addedTokens: [String: Int]
    public let eosTokenId: Int?
    public let bosTokenId: Int?
    public let addBos: Bool
    /// When true, a piece that is itself a vocabulary entry maps to it without merging.
    public let ignoreMerges: Bool
    /// Text between added tokens is put in Unicode NFC before pre-tokenization (Qwen2).
    public let normalizesNFC: Bool
    public let chatTemplate: ChatTemplate?
    private let addedByFirstByte: [UInt8: [[UInt8]]]
    private let addedIds: [Int: String]

    public init(
        bpe: ByteLevelBPE, preTokenizer: any PreTokenizer, addedTokens: [String: Int], eosTokenId: Int?,
        bosTokenId: Int? = nil, addBos: Bool = false, ignoreMerges: Bool = false, normalizesNFC: Bool = false,
        chatTemplate: ChatTemplate? = nil
    ) {
        self.normalizesNFC = normalizesNFC
        self.bpe = bpe
        self.preTokenizer = preTokenizer
        self.addedTokens = addedTokens
        self.eosTokenId = eosTokenId
        self.bosTokenId = bosTokenId
        self.addBos = addBos
        self.ignoreMerges = ignoreMerges
        self.chatTemplate = chatTemplate
        var byFirst = [UInt8: [[UInt8]]]()
        for t in addedTokens.keys where !t.isEmpty {
            let u = Array(t.utf8)
            byFirst[u[0], default: []].append(u)
        }
        for k in byFirst.keys { byFirst[k]!.sort { $0.count > $1.count } }  // longest match first
        addedByFirstByte = byFirst
        addedIds = Dictionary(addedTokens.map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
    }

    public var vocabSize: Int { bpe.idToToken.count }

    /// Token ids of `text`. Added tokens written in the text are matched as themselves.
    public func encode(_ text: String) -> [Int] {
        var ids = [Int]()
        if addBos, let bos = bosTokenId { ids.append(bos) }
        var cache = [Substring: [Int]]()
        func encodePlain(_ bytes: ArraySlice<UInt8>) {
            guard !bytes.isEmpty else { return }
            let raw = String(decoding: bytes, as: UTF8.self)
            let s = normalizesNFC ? raw.precomposedStringWithCanonicalMapping : raw
            for piece in preTokenizer.split(s[...]) {
                if let hit = cache[piece] {
                    ids += hit
                    continue
                }
                var enc: [Int]
                if ignoreMerges, let id = bpe.vocab[ByteLevel.encode(piece.utf8)] {
                    enc = [id]
                } else {
                    enc = bpe.encode(piece)
                }
                cache[piece] = enc
                ids += enc
            }
        }
        let u = Array(text.utf8)
        var start = 0
        var i = 0
        while i < u.count {
            if let candidates = addedByFirstByte[u[i]],
                let match = candidates.first(where: {
                    i + $0.count <= u.count && u[i..<(i + $0.count)].elementsEqual($0)
                })
            {
                encodePlain(u[start..<i])
                ids.append(addedTokens[String(decoding: match, as: UTF8.self)]!)
                i += match.count
                start = i
            } else {
                i += 1
            }
        }
        encodePlain(u[start..<u.count])
        return ids
    }

    /// The bytes `ids` stand for (an incomplete UTF-8 sequence may end it).
    public func decodeBytes(_ ids: [Int]) -> [UInt8] {
        var out = [UInt8]()
        for id in ids {
            if let added = addedIds[id] {
                out += Array(added.utf8)
            } else if id >= 0, id < bpe.idToToken.count {
                let tok = bpe.idToToken[id]
                out += ByteLevel.decode(tok) ?? Array(tok.utf8)
            }
        }
        return out
    }

    public func decode(_ ids: [Int]) -> String {
        String(decoding: decodeBytes(ids), as: UTF8.self)
    }

    public func tokenString(_ id: Int) -> String {
        id >= 0 && id < bpe.idToToken.count ? bpe.idToToken[id] : "<\(id)>"
    }
}

extension Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's `tokenizer.*` metadata.
    public init(gguf: GGUFFile) throws {
        let file = (gguf.path as NSString).lastPathComponent
        let m = gguf.metadata
        let model = m["tokenizer.ggml.model"]?.string ?? "(none)"
        guard model == "gpt2" else {
            throw LowRAError(
                .unsupported, "\(file): tokenizer model '\(model)' is not supported (byte-level BPE 'gpt2' is)")
        }
        guard let tokenValues = m["tokenizer.ggml.tokens"]?.array, let mergeValues = m["tokenizer.ggml.merges"]?.array
        else {
            throw LowRAError.malformed(file, "tokenizer.ggml.tokens or tokenizer.ggml.merges missing")
        }
        let tokens = tokenValues.map { $0.string ?? "" }
        var merges = [(String, String)]()
        merges.reserveCapacity(mergeValues.count)
        for v in mergeValues {
            guard let s = v.string, let sp = s.firstIndex(of: " ") else {
                throw LowRAError.malformed(file, "tokenizer merge '\(v.string ?? "?")' is not 'left right'")
            }
            merges.append((String(s[..<sp]), String(s[s.index(after: sp)...])))
        }
        let pre = m["tokenizer.ggml.pre"]?.string ?? "gpt2"
        let preTokenizer: any PreTokenizer
        switch pre {
        case "smollm": preTokenizer = SequencePreTokenizer([DigitSplitter(), GPT2Splitter()])
        case "gpt2": preTokenizer = GPT2Splitter()
        case "qwen2": preTokenizer = WordPieceSplitter(maxDigits: 1)
        case "llama-bpe", "llama3": preTokenizer = WordPieceSplitter(maxDigits: 3)
        default:
            throw LowRAError(
                .unsupported, "\(file): pre-tokenizer '\(pre)' is not supported (smollm, gpt2, qwen2, llama-bpe are)")
        }
        var added = [String: Int]()
        if let types = m["tokenizer.ggml.token_type"]?.array {
            for (i, t) in types.enumerated() where (t.int == 3 || t.int == 4) && i < tokens.count {
                added[tokens[i]] = i
            }
        }
        self.init(
            bpe: try ByteLevelBPE(tokens: tokens, merges: merges), preTokenizer: preTokenizer,
            addedTokens: added, eosTokenId: m["tokenizer.ggml.eos_token_id"]?.int,
            bosTokenId: m["tokenizer.ggml.bos_token_id"]?.int,
            addBos: m["tokenizer.ggml.add_bos_token"]?.bool ?? false,
            // As the original models' tokenizer.json: Llama 3 ignores merges, Qwen2 normalizes to NFC.
            ignoreMerges: pre == "llama-bpe" || pre == "llama3", normalizesNFC: pre == "qwen2",
            chatTemplate: try m["tokenizer.chat_template"]?.string.map { try ChatTemplate(source: $0) })
    }

    /// Builds a tokenizer from Hugging Face `tokenizer.json` (and `tokenizer_config.json`
    /// beside it, for the chat template and the eos token, if present).
    public init(tokenizerJSON path: String) throws {
        let file = (path as NSString).lastPathComponent
        let data = try mapFile(path)
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LowRAError.malformed(file, "not a JSON object")
        }
        guard let model = root["model"] as? [String: Any], (model["type"] as? String ?? "BPE") == "BPE",
            let vocab = model["vocab"] as? [String: Int], let mergeList = model["merges"] as? [Any]
        else { throw LowRAError(.unsupported, "\(file): only BPE models with vocab and merges are supported") }
        var nfc = false
        if let norm = root["normalizer"], !(norm is NSNull) {
            guard (norm as? [String: Any])?["type"] as? String == "NFC" else {
                throw LowRAError(.unsupported, "\(file): normalizers other than NFC are not supported")
            }
            nfc = true
        }
        // Ids are dense in real files: every one below the number of vocabulary and added entries
        // (an id from the file sizes the token table, so a wild one is refused, not allocated).
        let addedList = root["added_tokens"] as? [Any] ?? []
        let limit = vocab.count + addedList.count
        if let bad = vocab.values.first(where: { $0 < 0 || $0 >= limit }) {
            throw LowRAError.malformed(
                file, "token id \(bad) is outside 0..<\(limit) (the vocabulary and added tokens)")
        }
        var tokens = [String](repeating: "", count: (vocab.values.max() ?? -1) + 1)
        for (t, i) in vocab { tokens[i] = t }
        var added = [String: Int]()
        for case let a as [String: Any] in addedList {
            if let id = a["id"] as? Int, let content = a["content"] as? String, id >= 0 {
                guard id < limit else {
                    throw LowRAError.malformed(file, "added token id \(id) is outside 0..<\(limit)")
                }
                added[content] = id
                if id >= tokens.count { tokens += Array(repeating: "", count: id - tokens.count + 1) }
                tokens[id] = content
            }
        }
        var merges = [(String, String)]()
        for entry in mergeList {
            if let s = entry as? String, let sp = s.firstIndex(of: " ") {
                merges.append((String(s[..<sp]), String(s[s.index(after: sp)...])))
            } else if let pair = entry as? [String], pair.count == 2 {
                merges.append((pair[0], pair[1]))
            } else {
                throw LowRAError.malformed(file, "merge entry \(entry) is not 'left right'")
            }
        }
        let preTokenizer = try Tokenizer.preTokenizer(from: root["pre_tokenizer"], file: file)
        // tokenizer_config.json: chat template and eos token.
        let configPath = (parentDirectory(of: path) as NSString).appendingPathComponent(
            "tokenizer_config.json")
        var template: ChatTemplate?
        var eos: Int? = added["<|im_end|>"] ?? added["<|endoftext|>"] ?? added["</s>"]
        // A BOS the post-processor puts first (Llama 3's TemplateProcessing "$A" after it).
        var bos: Int?
        if let post = root["post_processor"] as? [String: Any], post["type"] as? String == "TemplateProcessing",
            let first = (post["single"] as? [[String: Any]])?.first?["SpecialToken"] as? [String: Any],
            let name = first["id"] as? String
        {
            bos = added[name] ?? vocab[name]
        }
        var addBos = bos != nil
        if let cd = try? Data(contentsOf: URL(fileURLWithPath: configPath)),
            let cfg = try? JSONSerialization.jsonObject(with: cd) as? [String: Any]
        {
            if let t = cfg["chat_template"] as? String { template = try ChatTemplate(source: t) }
            if let e = cfg["eos_token"] as? String, let id = added[e] ?? vocab[e] { eos = id }
            if let b = cfg["bos_token"] as? String, let id = added[b] ?? vocab[b] { bos = id }
            if let a = cfg["add_bos_token"] as? Bool { addBos = a }
        }
        self.init(
            bpe: try ByteLevelBPE(tokens: tokens, merges: merges), preTokenizer: preTokenizer,
            addedTokens: added, eosTokenId: eos, bosTokenId: bos, addBos: addBos && bos != nil,
            ignoreMerges: model["ignore_merges"] as? Bool ?? false, normalizesNFC: nfc, chatTemplate: template)
    }

    static func preTokenizer(from spec: Any?, file: String) throws -> any PreTokenizer {
        guard let spec = spec as? [String: Any], let type = spec["type"] as? String else {
            throw LowRAError(
                .unsupported, "\(file): a pre_tokenizer is required (ByteLevel, Digits or a Sequence of them)")
        }
        switch type {
        case "Sequence":
            let steps = try (spec["pretokenizers"] as? [Any] ?? []).map { try preTokenizer(from: $0, file: file) }
            return SequencePreTokenizer(steps)
        case "Digits":
            guard spec["individual_digits"] as? Bool == true else {
                throw LowRAError(
                    .unsupported, "\(file): Digits pre-tokenizer without individual_digits is not supported")
            }
            return DigitSplitter()
        case "Split":
            let pattern = (spec["pattern"] as? [String: Any])?["Regex"] as? String
            guard spec["behavior"] as? String == "Isolated", spec["invert"] as? Bool != true,
                let digits = [1, 3].first(where: { WordPieceSplitter.pattern(maxDigits: $0) == pattern })
            else {
                throw LowRAError(
                    .unsupported,
                    "\(file): this Split pre-tokenizer is not supported (the Llama 3 and Qwen2 patterns are)")
            }
            return WordPieceSplitter(maxDigits: digits)
        case "ByteLevel":
            guard spec["add_prefix_space"] as? Bool != true else {
                throw LowRAError(.unsupported, "\(file): ByteLevel add_prefix_space is not supported")
            }
            return spec["use_regex"] as? Bool == false ? SequencePreTokenizer([]) : GPT2Splitter()
        default:
            throw LowRAError(
                .unsupported, "\(file): pre-tokenizer \(type) is not supported (ByteLevel, Digits, Split, Sequence are)"
            )
        }
    }
}

extension Tokenizer {
    /// This tokenizer as Hugging Face `tokenizer.json` and `tokenizer_config.json` contents.
    public func huggingFaceFiles() throws -> (tokenizer: Data, config: Data) {
        // The vocabulary (tens of thousands of entries) is written by hand in id order: sorting
        // its keys through JSONSerialization took seconds.
        var seen = Set<String>()
        var entries = [String]()
        for (i, t) in bpe.idToToken.enumerated() where seen.insert(t).inserted {
            entries.append(jsonQuoted(t) + ":\(i)")
        }
        let vocab = "{" + entries.joined(separator: ",") + "}"
        let placeholder = "lowra-vocabulary-placeholder"
        let added: [[String: Any]] = addedTokens.sorted { $0.value < $1.value }.map {
            [
                "id": $0.value, "content": $0.key, "special": true, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false,
            ]
        }
        let root: [String: Any] = [
            "version": "1.0", "added_tokens": added, "normalizer": normalizesNFC ? ["type": "NFC"] : NSNull(),
            "post_processor": NSNull(),
            "pre_tokenizer": preTokenizer.huggingFaceSpec,
            "decoder": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            "model": [
                "type": "BPE", "vocab": placeholder, "merges": bpe.mergeList.map { "\($0.0) \($0.1)" },
                "ignore_merges": ignoreMerges,
            ],
        ]
        var config: [String: Any] = [:]
        if let t = chatTemplate { config["chat_template"] = t.source }
        if let e = eosTokenId { config["eos_token"] = tokenString(e) }
        if let b = bosTokenId { config["bos_token"] = tokenString(b) }
        config["add_bos_token"] = addBos
        let json = String(
            decoding: try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys]), as: UTF8.self)
        let parts = json.components(separatedBy: jsonQuoted(placeholder))
        guard parts.count == 2 else {
            throw LowRAError(.invalidArgument, "tokenizer.json: cannot place the vocabulary")
        }
        return (
            Data((parts[0] + vocab + parts[1]).utf8),
            try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])
        )
    }
}

extension Tokenizer {
    /// This tokenizer as GGUF `tokenizer.*` metadata (what `init(gguf:)` reads), its token list
    /// padded with unused `[PADn]` entries to `vocabularySize` (the embedding's rows) as llama.cpp's
    /// converter does. Refused when llama.cpp has no pre-tokenizer that splits text as this one does.
    public func ggufMetadata(vocabularySize: Int) throws -> [(String, GGUFValue)] {
        guard let pre = preTokenizer.ggufName, ignoreMerges == (pre == "llama-bpe"), normalizesNFC == (pre == "qwen2")
        else {
            throw LowRAError(
                .unsupported,
                "this tokenizer's pre-tokenizer has no llama.cpp equivalent (known: smollm, gpt2, qwen2, llama-bpe)")
        }
        guard vocabularySize >= vocabSize else {
            throw LowRAError(
                .invalidArgument, "the tokenizer has \(vocabSize) tokens, more than the model's \(vocabularySize)")
        }
        let padding = (vocabSize..<vocabularySize).map { "[PAD\($0)]" }
        let added = Set(addedTokens.values)
        // Token types as llama.cpp numbers them: 1 normal, 3 control (added), 5 unused (padding).
        let types = (0..<vocabularySize).map { GGUFValue.int32($0 >= vocabSize ? 5 : added.contains($0) ? 3 : 1) }
        var m: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string(pre)),
            ("tokenizer.ggml.tokens", .array((bpe.idToToken + padding).map { .string($0) })),
            ("tokenizer.ggml.token_type", .array(types)),
            ("tokenizer.ggml.merges", .array(bpe.mergeList.map { .string("\($0.0) \($0.1)") })),
            ("tokenizer.ggml.add_bos_token", .bool(addBos)), ("tokenizer.ggml.add_eos_token", .bool(false)),
        ]
        if let b = bosTokenId { m.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(b)))) }
        if let e = eosTokenId { m.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(e)))) }
        if let t = chatTemplate { m.append(("tokenizer.chat_template", .string(t.source))) }
        return m
    }
}

/// `s` as a JSON string literal (RFC 8259: quote, backslash and control characters escaped).
func jsonQuoted(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}
