/// Splits text into pieces that BPE encodes independently.
public protocol PreTokenizer: Sendable {
    func split(_ text: Substring) -> [Substring]
    /// The equivalent `pre_tokenizer` entry of a Hugging Face `tokenizer.json`.
    var huggingFaceSpec: [String: Any] { get }
    /// llama.cpp's name for it (`tokenizer.ggml.pre`; `Tokenizer(gguf:)` reads the same names), nil if it has none.
    var ggufName: String? { get }
}

/// Every numeric character becomes a piece of its own (Hugging Face `Digits(individual_digits)`),
/// the first step of SmolLM2's `smollm` pre-tokenizer.
public struct DigitSplitter: PreTokenizer {
    public init() {}
    public var huggingFaceSpec: [String: Any] { ["type": "Digits", "individual_digits": true] }
    public var ggufName: String? { nil }

    public func split(_ text: Substring) -> [Substring] {
        let scalars = text.unicodeScalars
        var out = [Substring]()
        var start = scalars.startIndex
        var i = scalars.startIndex
        while i < scalars.endIndex {
            let next = scalars.index(after: i)
            if isNumberScalar(scalars[i]) {
                if start < i { out.append(Substring(scalars[start..<i])) }
                out.append(Substring(scalars[i..<next]))
                start = next
            }
            i = next
        }
        if start < scalars.endIndex { out.append(Substring(scalars[start..<scalars.endIndex])) }
        return out
    }
}

/// The GPT-2 pattern, written out as a scanner over Unicode scalars:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
public struct GPT2Splitter: PreTokenizer {
    public init() {}
    public var huggingFaceSpec: [String: Any] {
        ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
    }
    public var ggufName: String? { "gpt2" }

    public func split(_ text: Substring) -> [Substring] {
        let scalars = text.unicodeScalars
        let (s, idx) = scalarArray(scalars)
        let n = s.count
        var out = [Substring]()
        var p = 0
        func run(_ from: Int, _ pred: (Unicode.Scalar) -> Bool) -> Int { scanRun(s, from, pred) }
        while p < n {
            var end = p
            let c = s[p]
            if c == "'", let e = contractionEnd(s, p, caseInsensitive: false) {
                end = e
            } else {
                let q = (c == " " && p + 1 < n) ? p + 1 : p  // optional leading space
                if isLetterScalar(s[q]) {
                    end = run(q, isLetterScalar)
                } else if isNumberScalar(s[q]) {
                    end = run(q, isNumberScalar)
                } else if !isSpaceScalar(s[q]) {
                    end = run(q) { !isSpaceScalar($0) && !isLetterScalar($0) && !isNumberScalar($0) }
                } else {
                    end = whitespaceEnd(s, p, throughNewlines: false)
                }
            }
            out.append(Substring(scalars[idx[p]..<idx[end]]))
            p = end
        }
        return out
    }

}

/// The pre-tokenizer of Llama 3 (`llama-bpe`, up to three digits a piece) and Qwen2 (`qwen2`,
/// one digit a piece), written out as a scanner over Unicode scalars. Its pattern is the alternation of
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)`, `[^\r\n\p{L}\p{N}]?\p{L}+`, `\p{N}{1,k}`, ` ?[^\s\p{L}\p{N}]+[\r\n]*`,
/// `\s*[\r\n]+`, `\s+(?!\S)` and `\s+`,
/// with the first alternative that matches winning, as in a regex engine.
public struct WordPieceSplitter: PreTokenizer {
    /// Digits per number piece: 3 for Llama 3, 1 for Qwen2.
    public let maxDigits: Int
    public init(maxDigits: Int) { self.maxDigits = maxDigits }
    public var ggufName: String? { [1: "qwen2", 3: "llama-bpe"][maxDigits] }

    public static func pattern(maxDigits: Int) -> String {
        let digits = maxDigits == 1 ? "\\p{N}" : "\\p{N}{1,\(maxDigits)}"
        return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\(digits)| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
            + "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
    }

    public var huggingFaceSpec: [String: Any] {
        [
            "type": "Sequence",
            "pretokenizers": [
                [
                    "type": "Split", "pattern": ["Regex": Self.pattern(maxDigits: maxDigits)], "behavior": "Isolated",
                    "invert": false,
                ],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false],
            ],
        ]
    }

    public func split(_ text: Substring) -> [Substring] {
        let scalars = text.unicodeScalars
        let (s, idx) = scalarArray(scalars)
        let n = s.count
        func run(_ from: Int, limit: Int = .max, _ pred: (Unicode.Scalar) -> Bool) -> Int {
            scanRun(s, from, limit: limit, pred)
        }
        func isNewline(_ c: Unicode.Scalar) -> Bool { c == "\r" || c == "\n" }
        func isOther(_ c: Unicode.Scalar) -> Bool { !isSpaceScalar(c) && !isLetterScalar(c) && !isNumberScalar(c) }
        var out = [Substring]()
        var p = 0
        while p < n {
            let c = s[p]
            var end: Int
            if c == "'", let e = contractionEnd(s, p, caseInsensitive: true) {
                end = e
            } else if isLetterScalar(c) {
                end = run(p, isLetterScalar)
            } else if !isNewline(c) && !isNumberScalar(c) && p + 1 < n && isLetterScalar(s[p + 1]) {
                end = run(p + 1, isLetterScalar)  // one leading non-letter (a space, a quote) joins the word
            } else if isNumberScalar(c) {
                end = run(p, limit: maxDigits, isNumberScalar)
            } else if isOther(c) || (c == " " && p + 1 < n && isOther(s[p + 1])) {
                end = run(run(c == " " ? p + 1 : p, isOther), isNewline)
            } else {
                end = whitespaceEnd(s, p, throughNewlines: true)
            }
            out.append(Substring(scalars[idx[p]..<idx[end]]))
            p = end
        }
        return out
    }

}

/// Applies pre-tokenizers one after another, each to every piece of the previous.
public struct SequencePreTokenizer: PreTokenizer {
    public let steps: [any PreTokenizer]
    public init(_ steps: [any PreTokenizer]) { self.steps = steps }
    public var huggingFaceSpec: [String: Any] { ["type": "Sequence", "pretokenizers": steps.map(\.huggingFaceSpec)] }
    public var ggufName: String? {
        let flat = flattened
        if flat.count == 1 { return flat[0].ggufName }
        return flat.count == 2 && flat[0] is DigitSplitter && flat[1] is GPT2Splitter ? "smollm" : nil
    }
    /// The steps with nested sequences spliced in; a step that splits nothing (an empty sequence:
    /// a ByteLevel step without its regex) is gone.
    var flattened: [any PreTokenizer] { steps.flatMap { ($0 as? SequencePreTokenizer)?.flattened ?? [$0] } }

    public func split(_ text: Substring) -> [Substring] {
        var pieces = [text]
        for step in steps { pieces = pieces.flatMap { step.split($0) } }
        return pieces
    }
}

/// The scalars of a text and the index of each (plus the end), for scanners that look ahead.
func scalarArray(_ scalars: Substring.UnicodeScalarView) -> ([Unicode.Scalar], [Substring.UnicodeScalarView.Index]) {
    var idx = [Substring.UnicodeScalarView.Index]()
    var s = [Unicode.Scalar]()
    for i in scalars.indices {
        idx.append(i)
        s.append(scalars[i])
    }
    idx.append(scalars.endIndex)
    return (s, idx)
}

/// End of the run of at most `limit` scalars from `from` that satisfy `pred`.
func scanRun(_ s: [Unicode.Scalar], _ from: Int, limit: Int = .max, _ pred: (Unicode.Scalar) -> Bool) -> Int {
    var e = from
    while e < s.count, e - from < limit, pred(s[e]) { e += 1 }
    return e
}

private let contractions: [[Unicode.Scalar]] = ["s", "t", "re", "ve", "m", "ll", "d"].map { Array($0.unicodeScalars) }

/// End of a contraction ('s, 't, 're, 've, 'm, 'll, 'd; with `caseInsensitive` also 'S, 'Re, …)
/// starting at the apostrophe p.
func contractionEnd(_ s: [Unicode.Scalar], _ p: Int, caseInsensitive: Bool) -> Int? {
    for suffix in contractions where p + 1 + suffix.count <= s.count {
        let piece = s[(p + 1)..<(p + 1 + suffix.count)]
        let folded = caseInsensitive ? piece.map { $0.isASCII ? Unicode.Scalar($0.value | 0x20)! : $0 } : Array(piece)
        if folded.elementsEqual(suffix) { return p + 1 + suffix.count }
    }
    return nil
}

/// End of the whitespace piece starting at p: `\s+(?!\S)|\s+` — the run, leaving its last
/// character to prefix the next word — or, `throughNewlines`, first `\s*[\r\n]+` (through the
/// run's last newline when it has one).
func whitespaceEnd(_ s: [Unicode.Scalar], _ p: Int, throughNewlines: Bool) -> Int {
    let e = scanRun(s, p, isSpaceScalar)
    if throughNewlines, let lastNewline = (p..<e).last(where: { s[$0] == "\r" || s[$0] == "\n" }) {
        return lastNewline + 1
    }
    return e == s.count || e - p == 1 ? e : e - 1
}

@inline(__always) func isLetterScalar(_ c: Unicode.Scalar) -> Bool {
    if c.isASCII { return (c.value | 0x20) >= 0x61 && (c.value | 0x20) <= 0x7A }
    switch c.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
    default: return false
    }
}

@inline(__always) func isNumberScalar(_ c: Unicode.Scalar) -> Bool {
    if c.isASCII { return c.value >= 0x30 && c.value <= 0x39 }
    switch c.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: return true
    default: return false
    }
}

@inline(__always) func isSpaceScalar(_ c: Unicode.Scalar) -> Bool {
    if c.isASCII { return c == " " || (c.value >= 9 && c.value <= 13) }
    return c.properties.isWhitespace
}
