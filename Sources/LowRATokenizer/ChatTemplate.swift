import Foundation
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

/// The model's chat format. LowRA does not evaluate Jinja: it recognizes the two formats the
/// supported families use — ChatML (`<|im_start|>role\ncontent<|im_end|>\n`: SmolLM2, Qwen2) and
/// Llama 3's header format (`<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`) —
/// reads the template's default system message, and refuses other templates with a clear error
/// when a chat prompt is requested.
public struct ChatTemplate: Sendable {
    public enum Format: String, Sendable { case chatML, llama3 }
    public let source: String
    public let format: Format?
    /// Inserted when the conversation does not start with a system message.
    public let defaultSystem: String?
    /// Llama 3.1+ templates open the system turn with the knowledge cutoff and a date.
    public let datePreamble: String?

    public init(source: String) throws {
        self.source = source
        let normalized = source.replacingOccurrences(of: "\\n", with: "\n")
        var preamble: String?
        if source.contains("<|im_start|>") && source.contains("<|im_end|>") {
            format = .chatML
            defaultSystem = Self.literal(in: normalized, after: "<|im_start|>system\n", before: "<|im_end|>")
        } else if source.contains("<|start_header_id|>") && source.contains("<|eot_id|>") {
            format = .llama3
            defaultSystem = nil
            if normalized.contains("Cutting Knowledge Date: December 2023") {
                // Without a date_string, Llama 3.1's template writes this fixed date.
                preamble = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
            }
        } else {
            format = nil
            defaultSystem = nil
        }
        datePreamble = preamble
    }

    /// The first text between `open` and `close` that is a plain literal (no template syntax):
    /// the default system message of templates that write it out.
    static func literal(in text: String, after open: String, before close: String) -> String? {
        var from = text.startIndex
        while let start = text.range(of: open, range: from..<text.endIndex) {
            from = start.upperBound
            guard let end = text.range(of: close, range: start.upperBound..<text.endIndex) else { return nil }
            let body = text[start.upperBound..<end.lowerBound]
            if !body.contains(where: { "'\"{}+".contains($0) }) { return String(body) }
        }
        return nil
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener when asked. A BOS
    /// token is not written: the tokenizer adds it when the model wants one.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws -> String {
        switch format {
        case .chatML:
            var out = ""
            if let sys = defaultSystem, messages.first?.role != "system" {
                out += "<|im_start|>system\n\(sys)<|im_end|>\n"
            }
            for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
            return out
        case .llama3:
            func turn(_ role: String, _ content: String) -> String {
                "<|start_header_id|>\(role)<|end_header_id|>\n\n\(content)<|eot_id|>"
            }
            var out = ""
            var rest = messages[...]
            if let preamble = datePreamble {
                var system = ""
                if let first = rest.first, first.role == "system" {
                    system = first.content.trimmingCharacters(in: .whitespacesAndNewlines)
                    rest = rest.dropFirst()
                }
                out += turn("system", preamble + system)
            }
            for m in rest { out += turn(m.role, m.content.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
            return out
        case nil:
            throw LowRAError(
                .unsupported, "this model's chat template is neither ChatML nor Llama 3's; LowRA supports those two")
        }
    }
}
