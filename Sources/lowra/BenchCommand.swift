import ArgumentParser
import Foundation
import LowRAModel
import LowRAQuant
import LowRATrain

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks (ratios measured in one run).",
        subcommands: [BenchForward.self, BenchTrain.self, BenchAssign.self, BenchDequant.self])
}

struct BenchForward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward", abstract: "sgemm, prefill, decode and memory bandwidth of the fp32 runtime.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Prefill length in tokens.") var tokens: Int = 512
    @Option(help: "Decode steps to time.") var decodeTokens: Int = 64
    @Option(help: "Repeats per measurement; the best is kept.") var repeats: Int = 3
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        let loaded = try modelOptions.load()
        let r = try ForwardBenchmark.run(
            model: loaded.model, tokens: tokens, decodeTokens: decodeTokens, repeats: repeats
        ) { step in printErr("bench: \(step)") }
        if json {
            let data = try JSONEncoder().encode(r)
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print(String(format: "sgemm at prefill shapes  %8.1f GFLOP/s", r.sgemmGflops))
        print(
            String(
                format: "prefill %4d tokens      %8.1f GFLOP/s  (%.3fs, %.0f%% of sgemm)",
                r.prefillTokens, r.prefillGflops, r.prefillSeconds, 100 * r.prefillToSgemmRatio))
        print(String(format: "decode                   %8.1f tokens/s", r.decodeTokensPerS))
        print(
            String(
                format: "memory bandwidth         %8.1f GB/s -> decode bound %.1f tokens/s (%.0f MB/token)",
                r.bandwidthGBs, r.decodeBoundTokensPerS, r.decodeBytesPerToken / 1e6))
    }
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "LoRA training step throughput (GFLOP/s) beside sgemm at the same shapes, and peak memory.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "LoRA rank.") var rank: Int = 16
    @Option(help: "Sequences per step.") var batch: Int = 4
    @Option(help: "Tokens per sequence.") var seq: Int = 256
    @Option(help: "Timed steps (after one warm-up); the fastest is kept.") var steps: Int = 2
    @Flag(help: "Recompute blocks in backward (finetune --recompute).") var recompute = false
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        let loaded = try modelOptions.load()
        let r = try TrainBenchmark.run(
            config: loaded.config, weights: loaded.model.weights, rank: rank, batch: batch, seq: seq, steps: steps,
            recompute: recompute
        ) { printErr("bench: \($0)") }
        printMeasurements(r.merging(["model": modelOptions.model]) { a, _ in a }, json: json)
    }
}

struct BenchAssign: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "assign",
        abstract: "Time the exact precision assigner on a synthetic problem (default: LLaMA-2-7B's 1.36M channels).")

    @Option(help: "Output channels.") var channels: Int = 1_359_872
    @Option(help: "Budget in bits per parameter.") var bits: Double = 1.75
    @Flag(help: "Also run the two-level ILP (slow at this size).") var ilp = false
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        printMeasurements(try AssignerBenchmark.run(channels: channels, bits: bits, includeILP: ilp), json: json)
    }
}

struct BenchDequant: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dequant", abstract: "Dequantization throughput (GB/s of fp32 written) beside copy bandwidth.")

    @Option(help: "Rows.") var rows: Int = 4096
    @Option(help: "Columns.") var cols: Int = 4096
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        printMeasurements(try DequantBenchmark.run(out: rows, in: cols), json: json)
    }
}

/// One JSON object, or one "key: value" line per measurement in key order.
func printMeasurements(_ r: [String: Any], json: Bool) {
    if json {
        printJSON(r)
    } else {
        for (k, v) in r.sorted(by: { $0.key < $1.key }) { print("\(k): \(v)") }
    }
}
