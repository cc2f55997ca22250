import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRAReport
import LowRATensor
import LowRATrain
import LowRAPipeline

struct MemoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract:
            "Modeled memory of fine-tuning or inference per bit budget (the paper's Appendix C, for LowRA's formats).",
        discussion:
            "Give --model (a model whose shape to use) or --config (a Hugging Face config.json, or one of "
            + "\(MemoryModel.presetNames))."
    )

    @Option(help: "A model (GGUF, Hugging Face or quantized directory) whose shape to use.") var model: String?
    @Option(help: "A Hugging Face config.json, or a built-in shape: \(MemoryModel.presetNames).") var config: String?
    @Option(
        help: "Comma-separated budgets in code bits/param; the unquantized model (as stored) is always the first row.")
    var bits: String =
        "4,3,2,1.75,1.5,1.25,1.15"
    @Option(help: "LoRA rank.") var rank: Int = 64
    @Option(help: "Sequences per step.") var batch: Int = 1
    @Option(help: "Tokens per sequence.") var seq: Int = 512
    @Flag(help: "Model inference instead of fine-tuning.") var inference = false
    @Flag(help: "Fine-tuning with --recompute (block inputs saved, blocks recomputed in backward).") var recompute =
        false
    @Option(help: "Also draw the breakdown as stacked bars to this SVG file.") var svg: String?
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        let config: ModelConfig
        let name: String
        var stored: (embedding: Double, head: Double, linear: Double?)?
        switch (model, self.config) {
        case (let m?, nil):
            let loaded = try LoadedModel.load(m)
            config = loaded.config
            name = m
            let w = loaded.model.weights
            let values = Double(config.vocabSize * config.hiddenSize)
            let linears = w.blocks.flatMap(\.linears)
            let linear =
                linears.contains { $0.packed != nil }
                ? nil
                : Double(linears.reduce(0) { $0 + $1.weightBytes })
                    / Double(linears.reduce(0) { $0 + $1.outFeatures * $1.inFeatures })
            stored = (
                Double(w.embedding.weightBytes) / values, Double((w.head ?? w.embedding).weightBytes) / values, linear
            )
        case (nil, let c?):
            if let preset = MemoryModel.preset(named: c) {
                config = preset
            } else if c.hasSuffix(".json") || FileManager.default.fileExists(atPath: c) {
                guard FileManager.default.fileExists(atPath: c) else { throw LowRAError(.io, "\(c): no such file") }
                config = try LoadedModel.readConfig(c)
            } else {
                throw LowRAError(
                    .invalidArgument, "--config takes a config.json or one of \(MemoryModel.presetNames), got \(c)")
            }
            name = c
        default:
            throw LowRAError(.invalidArgument, "give exactly one of --model and --config")
        }
        let budgets = try bits.split(separator: ",").map { s -> Double in
            guard let b = Double(s.trimmingCharacters(in: .whitespaces)), b >= 1, b <= 4 else {
                throw ValidationError("--bits takes budgets in [1, 4]")
            }
            return b
        }
        guard rank >= 1, batch >= 1, seq >= 1 else {
            throw ValidationError("--rank, --batch and --seq must be positive")
        }
        let rows: [(String, [(String, Int)])] = ([nil] + budgets.map { Optional($0) }).map { b in
            var mm = MemoryModel(config: config, bits: b, rank: rank, batch: batch, seq: seq)
            mm.recompute = recompute
            if let stored {
                (mm.embeddingBytesPerValue, mm.headBytesPerValue) = (stored.embedding, stored.head)
                if let linear = stored.linear { mm.unquantizedBytesPerValue = linear }
            }
            return (
                b.map { ExperimentReport.bitsLabel($0) + " bits" } ?? "unquantized", mm.breakdown(training: !inference)
            )
        }
        let components = MemoryModel.components.filter { c in rows.contains { $0.1.contains { $0.0 == c } } }
        if let svg {
            let chart = SVGStackedBars(
                title:
                    "\(inference ? "Inference" : "Fine-tuning") memory of \(name) (rank \(rank)"
                    + (inference ? ")" : ", batch \(batch) × \(seq) tokens)"),
                unit: "MB", components: components,
                bars: rows.map { (label, parts) in
                    (label, components.map { c in Double(parts.first { $0.0 == c }?.1 ?? 0) / 1e6 })
                })
            try writeAtomically(Data(chart.render().utf8), to: svg)
        }
        if json {
            printJSON([
                "model": name, "rank": rank, "batch": batch, "seq": seq, "mode": inference ? "inference" : "finetune",
                "rows": rows.map { (label, parts) in
                    [
                        "budget": label, "total_bytes": parts.reduce(0) { $0 + $1.1 },
                        "components": Dictionary(uniqueKeysWithValues: parts.map { ($0.0, $0.1) }),
                    ] as [String: Any]
                },
            ])
            return
        }
        print(
            "\(inference ? "inference" : "fine-tuning") memory of \(name), MB"
                + (inference ? "" : " (rank \(rank), batch \(batch) x \(seq) tokens)"))
        let header = ["budget"] + components + ["total"]
        print(header.joined(separator: " | "))
        for (label, parts) in rows {
            let cells = components.map { c in String(format: "%.1f", Double(parts.first { $0.0 == c }?.1 ?? 0) / 1e6) }
            print(
                ([label] + cells + [String(format: "%.1f", Double(parts.reduce(0) { $0 + $1.1 }) / 1e6)]).joined(
                    separator: " | "))
        }
    }
}
