import LowRATensor

/// A chat message.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The model's chat format. LowRA does not evaluate Jinja; it recognizes the ChatML template
/// (`<|im_start|>role\ncontent<|im_end|>\n`) and reads the template's default system message,
/// and refuses other templates with a clear error when a chat prompt is requested.
public struct ChatTemplate: Sendable {
    public enum Format: String, Sendable { case chatML }
    public let source: String
    public let format: Format?
    /// Inserted when the conversation does not start with a system message.
    public let defaultSystem: String?

    public init(source: String) throws {
        self.source = source
        guard source.contains("<|im_start|>") && source.contains("<|im_end|>") else {
            format = nil
            defaultSystem = nil
            return
        }
        format = .chatML
        let normalized = source.replacingOccurrences(of: "\\n", with: "\n")
        if let start = normalized.range(of: "<|im_start|>system\n"),
            let end = normalized.range(of: "<|im_end|>", range: start.upperBound..<normalized.endIndex)
        {
            defaultSystem = String(normalized[start.upperBound..<end.lowerBound])
        } else {
            defaultSystem = nil
        }
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener when asked.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws -> String {
        guard format == .chatML else {
            throw LowRAError(.unsupported, "this model's chat template is not ChatML; LowRA supports ChatML templates only")
        }
        var out = ""
        if let sys = defaultSystem, messages.first?.role != "system" {
            out += "<|im_start|>system\n\(sys)<|im_end|>\n"
        }
        for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }
}
