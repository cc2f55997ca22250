import Foundation

/// A one-line progress bar on standard error, drawn only when standard error is a terminal.
final class ProgressBar {
    let label: String
    let interactive = isatty(STDERR_FILENO) != 0
    private var lastDraw = Date.distantPast
    private let start = Date()

    init(_ label: String) { self.label = label }

    func update(_ done: Int, _ total: Int, _ extra: String = "") {
        guard interactive, total > 0 else { return }
        let now = Date()
        guard done == total || now.timeIntervalSince(lastDraw) > 0.1 else { return }
        lastDraw = now
        let width = 30
        let filled = min(width, width * done / total)
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let elapsed = now.timeIntervalSince(start)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let line =
            "\r\(label) \(bar) \(done)/\(total) \(String(format: "%.0fs", elapsed))"
            + (done < total && done > 0 ? String(format: " eta %.0fs", eta) : "") + (extra.isEmpty ? "" : " \(extra)")
        FileHandle.standardError.write((line + "\u{1B}[K").data(using: .utf8)!)
        if done == total { finish() }
    }

    func finish() {
        guard interactive else { return }
        FileHandle.standardError.write("\n".data(using: .utf8)!)
    }
}

func printErr(_ s: String) {
    FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
}

func printJSON(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}
