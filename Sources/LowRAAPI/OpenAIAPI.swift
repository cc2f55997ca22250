import Foundation
import LowRAModel
import LowRATokenizer

/// An error as OpenAI's API reports it: an HTTP status and `{"error": {message, type, param, code}}`.
public struct APIError: Error, CustomStringConvertible, Sendable {
    public let status: Int
    public let message: String
    public let type: String
    public let param: String?
    public let code: String?

    public init(_ status: Int, _ message: String, type: String? = nil, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? (status >= 500 ? "server_error" : "invalid_request_error")
        self.param = param
        self.code = code
    }

    public var description: String { "\(status) \(message)" }

    public var body: Data {
        let error: [String: Any] = [
            "message": message, "type": type, "param": param ?? NSNull(), "code": code ?? NSNull(),
        ]
        return (try? JSONSerialization.data(withJSONObject: ["error": error], options: [.sortedKeys])) ?? Data()
    }

    public static func invalid(_ message: String, param: String? = nil) -> APIError {
        APIError(400, message, param: param, code: "invalid_value")
    }
}

/// A completion request, from `/v1/chat/completions` (messages) or `/v1/completions` (prompt),
/// checked field by field; anything malformed is a 400 naming the field.
public struct CompletionRequest: Sendable {
    public enum Kind: Sendable { case chat, text }
    public var kind: Kind
    public var model: String
    public var messages: [ChatMessage] = []
    public var prompt = ""
    public var maxTokens: Int?
    public var temperature: Float = 1
    public var topP: Float = 1
    public var topK = 0
    public var seed: UInt64 = 0
    public var stop: [String] = []
    public var stream = false
    public var includeUsage = false

    /// Parses a JSON body.
    public init(json data: Data, kind: Kind) throws {
        self.kind = kind
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw APIError(400, "the request body is not valid JSON", code: "invalid_json")
        }
        guard case .object(let o) = root else {
            throw APIError(400, "the request body must be a JSON object", code: "invalid_json")
        }
        func number(_ key: String) throws -> Double? {
            switch o[key] {
            case nil, .null: return nil
            case .number(let d): return d
            default: throw APIError.invalid("\(key) must be a number", param: key)
            }
        }
        func integer(_ key: String) throws -> Int? {
            guard let d = try number(key) else { return nil }
            guard d == d.rounded(), abs(d) < 1e15 else {
                throw APIError.invalid("\(key) must be an integer", param: key)
            }
            return Int(d)
        }
        func bool(_ key: String) throws -> Bool? {
            switch o[key] {
            case nil, .null: return nil
            case .bool(let b): return b
            default: throw APIError.invalid("\(key) must be true or false", param: key)
            }
        }
        guard case .string(let model) = o["model"], !model.isEmpty else {
            throw APIError.invalid(
                "model is required (an adapter's name, name@version, or the base's name)", param: "model")
        }
        self.model = model
        switch kind {
        case .chat:
            guard case .array(let list) = o["messages"], !list.isEmpty else {
                throw APIError.invalid("messages must be a non-empty array", param: "messages")
            }
            guard list.count <= 1024 else { throw APIError.invalid("at most 1024 messages", param: "messages") }
            for m in list {
                guard case .object(let m) = m, case .string(let role) = m["role"],
                    ["system", "user", "assistant", "developer"].contains(role)
                else {
                    throw APIError.invalid(
                        "each message needs a role of system, developer, user or assistant", param: "messages")
                }
                let content: String
                switch m["content"] {
                case .string(let s): content = s
                case .array(let parts):
                    content = try parts.map { part -> String in
                        guard case .object(let p) = part, p["type"] == .string("text"), case .string(let t) = p["text"]
                        else { throw APIError.invalid("only text content parts are supported", param: "messages") }
                        return t
                    }.joined()
                default: throw APIError.invalid("each message needs a content string", param: "messages")
                }
                messages.append(ChatMessage(role: role == "developer" ? "system" : role, content: content))
            }
        case .text:
            switch o["prompt"] {
            case .string(let s): prompt = s
            case .array(let a) where a.count == 1:
                guard case .string(let s) = a[0] else { fallthrough }
                prompt = s
            default: throw APIError.invalid("prompt must be a string (or an array of one string)", param: "prompt")
            }
        }
        maxTokens = try integer("max_completion_tokens") ?? integer("max_tokens")
        if let t = try number("temperature") {
            guard (0...2).contains(t) else {
                throw APIError.invalid("temperature must be in [0, 2]", param: "temperature")
            }
            temperature = Float(t)
        }
        if let p = try number("top_p") {
            guard p > 0, p <= 1 else { throw APIError.invalid("top_p must be in (0, 1]", param: "top_p") }
            topP = Float(p)
        }
        if let k = try integer("top_k") {
            guard k >= 0 else { throw APIError.invalid("top_k must not be negative", param: "top_k") }
            topK = k
        }
        if let s = try integer("seed") {
            guard s >= 0 else { throw APIError.invalid("seed must not be negative", param: "seed") }
            seed = UInt64(s)
        }
        if let n = try integer("n"), n != 1 { throw APIError.invalid("only n = 1 is supported", param: "n") }
        switch o["stop"] {
        case nil, .null: break
        case .string(let s): stop = [s]
        case .array(let a) where a.count <= 4:
            stop = try a.map {
                guard case .string(let s) = $0 else {
                    throw APIError.invalid("stop must be a string or an array of up to 4 strings", param: "stop")
                }
                return s
            }
        default: throw APIError.invalid("stop must be a string or an array of up to 4 strings", param: "stop")
        }
        guard stop.allSatisfy({ !$0.isEmpty && $0.count <= 256 }) else {
            throw APIError.invalid("stop strings must hold 1–256 characters", param: "stop")
        }
        stream = try bool("stream") ?? false
        switch o["stream_options"] {
        case nil, .null: break
        case .object(let so): includeUsage = so["include_usage"] == .bool(true)
        default: throw APIError.invalid("stream_options must be an object", param: "stream_options")
        }
    }

    public var sampling: SamplingOptions {
        SamplingOptions(temperature: temperature, topK: topK, topP: topP, seed: seed)
    }
}

/// Turns generated token ids into text as it becomes final: whole UTF-8 characters only, and
/// text that could still turn into a stop sequence held back until it cannot.
public struct TextStreamer {
    let tokenizer: Tokenizer
    let stops: [String]
    private var ids = [Int]()
    private var emitted = 0  // characters of the decoded text already given out
    public private(set) var stopped = false
    public private(set) var text = ""

    public init(tokenizer: Tokenizer, stops: [String]) {
        self.tokenizer = tokenizer
        self.stops = stops
    }

    /// Adds a token; returns the text that is now final (possibly empty). After a stop sequence
    /// appears, `stopped` is set and the text ends before it.
    public mutating func add(_ id: Int) -> String {
        ids.append(id)
        var bytes = tokenizer.decodeBytes(ids)
        // An incomplete UTF-8 character at the end waits for the next token.
        var end = bytes.count
        while end > 0, end > bytes.count - 4, String(validating: bytes[0..<end], as: UTF8.self) == nil { end -= 1 }
        bytes.removeSubrange(end...)
        let full = String(decoding: bytes, as: UTF8.self)
        return release(full, final: false)
    }

    /// The rest of the text at the end of generation.
    public mutating func finish() -> String {
        release(String(decoding: tokenizer.decodeBytes(ids), as: UTF8.self), final: true)
    }

    private mutating func release(_ full: String, final: Bool) -> String {
        guard !stopped else { return "" }
        var limit = full.count
        for s in stops {
            if let r = full.range(of: s) {
                limit = min(limit, full.distance(from: full.startIndex, to: r.lowerBound))
                stopped = true
            }
        }
        if !stopped && !final {
            // Hold back a tail that is a prefix of a stop sequence.
            var hold = 0
            for s in stops {
                for n in stride(from: min(s.count - 1, full.count), to: 0, by: -1)
                where full.hasSuffix(String(s.prefix(n))) {
                    hold = max(hold, n)
                    break
                }
            }
            limit = full.count - hold
        }
        guard limit > emitted else { return "" }
        let start = full.index(full.startIndex, offsetBy: emitted)
        let piece = String(full[start..<full.index(full.startIndex, offsetBy: limit)])
        emitted = limit
        text += piece
        return piece
    }
}

/// Any JSON value, decoded without guessing: booleans stay booleans, numbers numbers.
public indirect enum JSONValue: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }
}
