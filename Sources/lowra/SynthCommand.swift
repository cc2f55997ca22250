import ArgumentParser
import Foundation
import LowRAModel
import LowRATensor
import LowRATrain
import LowRATokenizer
import LowRAPipeline
import LowRABench

struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract:
            "Write a random model of a real shape as a sharded bf16 Hugging Face checkpoint (for memory and speed at "
            + "7B–13B)."
    )

    @Option(help: "A built-in shape (\(MemoryModel.presetNames)) or a Hugging Face config.json.") var config: String
    @Option(help: "Output directory (must not exist).") var out: String
    @Option(help: "Seed of the weights.") var seed: UInt64 = 0
    @Option(help: "Approximate shard size in MB.") var shardMb: Int = 2000
    @Option(help: "Take the tokenizer from this model (cut to the config's vocabulary).")
    var tokenizer: String = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        guard shardMb >= 1 else { throw ValidationError("--shard-mb must be positive") }
        let c: ModelConfig
        if let preset = MemoryModel.preset(named: config) {
            c = preset
        } else if FileManager.default.fileExists(atPath: config) {
            c = try LoadedModel.readConfig(config)
        } else {
            throw LowRAError(
                .invalidArgument, "--config takes a config.json or one of \(MemoryModel.presetNames), got \(config)")
        }
        let tok = try Tokenizer(modelPath: tokenizer).truncated(to: c.vocabSize)
        let t0 = Date()
        let bar = ProgressBar("synth")
        try SyntheticCheckpoint.write(
            config: c, tokenizer: tok, to: out, seed: seed, shardBytes: shardMb * 1_000_000
        ) { done, total in if !json { bar.update(done, total) } }
        let bytes = try FileManager.default.contentsOfDirectory(atPath: out).reduce(0) {
            $0
                + ((try? FileManager.default.attributesOfItem(atPath: (out as NSString).appendingPathComponent($1))[
                    .size] as? Int) ?? 0)
        }
        let params = SyntheticCheckpoint.tensors(c).reduce(0) { $0 + $1.shape.reduce(1, *) }
        let result: [String: Any] = [
            "out": out, "parameters": params, "bytes": bytes, "seconds": Date().timeIntervalSince(t0),
            "peak_rss_bytes": MemoryStats.current().peakResidentBytes,
        ]
        if json {
            printJSON(result)
        } else {
            print(
                String(
                    format: "%@: %.2fB parameters, %.2f GB on disk, %.1f s, peak RSS %.0f MB", out,
                    Double(params) / 1e9,
                    Double(bytes) / 1e9, Date().timeIntervalSince(t0),
                    Double(MemoryStats.current().peakResidentBytes) / 1e6))
        }
    }
}
