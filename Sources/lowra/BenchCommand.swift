import ArgumentParser
import Foundation
import LowRAModel
import LowRAQuant
import LowRATensor
import LowRATrain
import LowRAPipeline
import LowRABench

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks (ratios measured in one run).",
        subcommands: [
            BenchDecode.self, BenchForward.self, BenchTrain.self, BenchAssign.self, BenchDequant.self, BenchBatch.self,
        ])
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
    @OptionGroup var runtimeOptions: RuntimeOptions
    @Option(help: "LoRA rank.") var rank: Int = 16
    @Option(help: "Sequences per step.") var batch: Int = 4
    @Option(help: "Tokens per sequence.") var seq: Int = 256
    @Option(help: "Timed steps (after one warm-up); the fastest is kept.") var steps: Int = 2
    @Flag(help: "Recompute blocks in backward (finetune --recompute).") var recompute = false
    @Flag(help: "Input gradients from fp32 panels even where the tiles could multiply them.")
    var fp32Backward = false
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        var loaded = try modelOptions.load()
        try runtimeOptions.apply(to: &loaded)
        let r = try TrainBenchmark.run(
            config: loaded.config, weights: loaded.model.weights, rank: rank, batch: batch, seq: seq, steps: steps,
            recompute: recompute, integerBackward: !fp32Backward
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

struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Decode and prefill tokens/s of each model, bytes read per token, and llama.cpp beside them.",
        discussion: """
            Every model is measured in each round, rounds alternating, so drift hits all alike; \
            then llama.cpp's llama-bench (--llama-bench) runs on each --gguf in the same process tree. \
            Prefill computes the logits of the last position only, as generation does.
            """)

    @Option(name: .customLong("model"), help: "A model to measure (repeat for several).") var models: [String] = []
    @Option(help: "A model to measure expanded to fp32: the fp32 runtime's baseline (repeatable).")
    var fp32: [String] = []
    @Option(help: "Prompt tokens for prefill.") var prefill: Int = 512
    @Option(help: "Tokens decoded per measurement.") var decode: Int = 128
    @Option(help: "Rounds; mean and standard deviation are reported.") var rounds: Int = 3
    @Option(
        help: """
            Kernel paths to compare in this run, comma-separated (scalar, avx2, avx512, neon; default: the fastest \
            this CPU runs): every model on every path in each round.
            """)
    var path: String?
    @Option(help: "Path of llama.cpp's llama-bench (scripts/build_llamacpp.sh builds it).") var llamaBench: String?
    @Option(help: "A GGUF file for llama-bench (repeatable).") var gguf: [String] = []
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func validate() throws {
        if models.isEmpty && fp32.isEmpty { throw ValidationError("give at least one --model or --fp32") }
        if rounds < 1 { throw ValidationError("--rounds must be at least 1") }
        if llamaBench != nil && gguf.isEmpty { throw ValidationError("--llama-bench needs at least one --gguf") }
        if llamaBench == nil && !gguf.isEmpty { throw ValidationError("--gguf needs --llama-bench") }
        if let llamaBench, !FileManager.default.isExecutableFile(atPath: llamaBench) {
            throw ValidationError("\(llamaBench): not an executable (scripts/build_llamacpp.sh builds llama-bench)")
        }
        if let missing = (models + fp32 + gguf).first(where: { !FileManager.default.fileExists(atPath: $0) }) {
            throw ValidationError("\(missing): no such file or directory")
        }
        _ = try paths()
    }

    /// The kernel paths to measure, each one this CPU runs.
    func paths() throws -> [Int] {
        guard let path else { return [KernelPath.current] }
        return try path.split(separator: ",").map { word in
            let name = word.trimmingCharacters(in: .whitespaces)
            guard let p = KernelPath.named(name) else {
                throw ValidationError("--path: unknown kernel path '\(name)' (scalar, avx2, avx512, neon)")
            }
            guard KernelPath.supported(p) else {
                let runs = KernelPath.all.map { KernelPath.name($0) }.joined(separator: ", ")
                throw ValidationError("--path: this CPU cannot run \(name) (it runs: \(runs))")
            }
            return p
        }
    }

    func run() throws {
        struct Entry {
            let label: String
            let model: LanguageModel
            let fileBits: Double
            var path = KernelPath.current
            var runs: [DecodeMeasurement] = []
        }
        var loaded = [Entry]()
        for file in models {
            printErr("bench: loading \(file)")
            let m = try LoadedModel.load(file)
            let params = Double(m.model.weights.parameterCount)
            loaded.append(Entry(label: file, model: m.model, fileBits: 8 * Double(m.fileBytes) / params))
        }
        for file in fp32 {
            printErr("bench: loading \(file) as fp32")
            let m = try LoadedModel.load(file)
            let expanded = try LanguageModel(config: m.config, weights: m.model.weights.expandedToFP32())
            loaded.append(Entry(label: "\(file) (fp32)", model: expanded, fileBits: 32))
        }
        let kernelPaths = try paths()
        var entries = kernelPaths.flatMap { p in loaded.map { var e = $0; e.path = p; return e } }
        for round in 1...rounds {
            for p in kernelPaths {
                try KernelPath.run(on: p) {
                    for i in entries.indices where entries[i].path == p {
                        printErr("bench: round \(round)/\(rounds) \(entries[i].label) on \(KernelPath.variant(p))")
                        entries[i].runs.append(
                            try DecodeBenchmark.measure(model: entries[i].model, prefill: prefill, decode: decode))
                    }
                }
            }
        }
        printErr("bench: memory bandwidth")
        let bandwidth = DequantBenchmark.copyBandwidth()
        var peers = [[String: Any]]()
        if let llamaBench {
            for g in gguf {
                printErr("bench: llama-bench \(g)")
                peers += try runLlamaBench(llamaBench, gguf: g)
            }
        }
        let fp32Decode = entries.first { $0.label.hasSuffix("(fp32)") && $0.path == kernelPaths[0] }
            .map { mean($0.runs.map(\.decodeTokensPerS)) }
        let peerDecode = peers.filter { ($0["test"] as? String) == "tg" }.compactMap { $0["tokens_per_s"] as? Double }
        let peerPrefill = peers.filter { ($0["test"] as? String) == "pp" }.compactMap { $0["tokens_per_s"] as? Double }
        var rows = [[String: Any]]()
        for e in entries {
            let d = e.runs.map(\.decodeTokensPerS)
            let p = e.runs.map(\.prefillTokensPerS)
            let bytes = e.runs[0].bytesPerToken
            var row: [String: Any] = [
                "model": e.label, "kernel_path": KernelPath.variant(e.path), "file_bits_per_param": e.fileBits,
                "decode_tokens_per_s": mean(d),
                "decode_sd": sd(d), "prefill_tokens_per_s": mean(p), "prefill_sd": sd(p), "bytes_per_token": bytes,
                "bound_tokens_per_s": bandwidth * 1e9 / Double(bytes),
            ]
            if let fp32Decode { row["decode_vs_fp32"] = mean(d) / fp32Decode }
            if let best = peerDecode.max() { row["decode_vs_llamacpp_best_tg"] = mean(d) / best }
            if let best = peerPrefill.max() { row["prefill_vs_llamacpp_best_pp"] = mean(p) / best }
            rows.append(row)
        }
        let setup: [String: Any] = [
            "kernel_paths": kernelPaths.map { KernelPath.variant($0) }, "threads": workerCount,
            "blas_core": blasCoreName,
            "blas_threads": blasThreadCount, "bandwidth_gbs": bandwidth, "prefill_tokens": prefill,
            "decode_tokens": decode, "rounds": rounds,
        ]
        if json {
            printJSON(["setup": setup, "models": rows, "llamacpp": peers])
            return
        }
        print(
            "kernels \(kernelPaths.map { KernelPath.variant($0) }.joined(separator: " / ")), \(workerCount) threads; "
                + "OpenBLAS \(blasCoreName), \(blasThreadCount) threads; "
                + String(format: "copy bandwidth %.1f GB/s; %d rounds", bandwidth, rounds))
        print(
            "| model | kernels | file bits/param | decode tok/s | prefill \(prefill) tok/s | MB/token | bound tok/s "
                + "| vs fp32 | vs llama.cpp tg |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows {
            func f(_ k: String, _ fmt: String) -> String { (r[k] as? Double).map { String(format: fmt, $0) } ?? "-" }
            print(
                "| \(r["model"]!) | \(r["kernel_path"]!) | \(f("file_bits_per_param", "%.2f")) | "
                    + "\(f("decode_tokens_per_s", "%.1f")) ± "
                    + "\(f("decode_sd", "%.1f")) | \(f("prefill_tokens_per_s", "%.0f")) ± "
                    + "\(f("prefill_sd", "%.0f")) | "
                    + String(format: "%.1f", Double(r["bytes_per_token"] as! Int) / 1e6)
                    + " | \(f("bound_tokens_per_s", "%.0f")) | \(f("decode_vs_fp32", "%.2f")) | "
                    + "\(f("decode_vs_llamacpp_best_tg", "%.2f")) |")
        }
        for p in peers {
            print(
                "llama.cpp \(p["gguf"]!) (\(p["type"]!)) \(p["test"]!)\(p["tokens"]!): "
                    + String(format: "%.1f ± %.1f tokens/s", p["tokens_per_s"] as! Double, p["sd"] as! Double))
        }
    }

    /// llama-bench's pp and tg results on `gguf`, with this run's threads, lengths and rounds.
    func runLlamaBench(_ path: String, gguf: String) throws -> [[String: Any]] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = [
            "-m", gguf, "-t", "\(workerCount)", "-p", "\(prefill)", "-n", "\(decode)", "-r", "\(rounds)", "-o", "json",
        ]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { throw LowRAError(.io, "\(path): cannot run llama-bench (\(error))") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
            let results = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]]
        else {
            throw LowRAError(.io, "llama-bench on \(gguf) failed (exit \(process.terminationStatus))")
        }
        return results.compactMap { r in
            guard let ts = r["avg_ts"] as? Double, let nPrompt = r["n_prompt"] as? Int, let nGen = r["n_gen"] as? Int
            else { return nil }
            return [
                "gguf": gguf, "type": r["model_type"] as? String ?? "?", "test": nGen > 0 ? "tg" : "pp",
                "tokens": nGen > 0 ? nGen : nPrompt, "tokens_per_s": ts, "sd": r["stddev_ts"] as? Double ?? 0,
            ]
        }
    }
}

private func mean(_ v: [Double]) -> Double { v.reduce(0, +) / Double(max(1, v.count)) }
private func sd(_ v: [Double]) -> Double {
    guard v.count > 1 else { return 0 }
    let m = mean(v)
    return (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count - 1)).squareRoot()
}

/// Batched decode steps in process (no HTTP): tokens/s with 1…N sequences over K adapters.
struct BenchBatch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch",
        abstract: "Mixed-adapter batched decode (BatchDecoder): tokens/s by number of sequences, a benchmark.")
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Sequences per step, comma-separated.") var rows = "1,4,8,16"
    @Option(help: "Distinct random adapters (rank 16) the sequences cycle through; 0: none.") var adapters = 3
    @Option(help: "Decode steps timed per size.") var steps = 32
    @Option(help: "Prompt tokens each sequence starts with.") var prompt = 32

    func run() throws {
        let loaded = try modelOptions.load(quiet: true)
        let c = loaded.config
        var list = [LoRAAdapter?]()
        var rng = SplitMix64(seed: 1)
        for _ in 0..<adapters {
            var a = try LoRAAdapter(config: c, rank: min(16, LoRAAdapter.defaultRank(c)))
            for i in a.values.indices { a.values[i] = Float(rng.nextUnit() - 0.5) * 0.02 }
            list.append(a)
        }
        if list.isEmpty { list = [nil] }
        let sizes = rows.split(separator: ",").compactMap { Int($0) }
        let decoder = BatchDecoder(model: loaded.model, maxRows: sizes.max() ?? 1)
        let tiles = loaded.model.weights.prepareDecode()  // built by the decoder already: their bytes
        print(
            "kernels: \(KernelPath.variant()), \(loaded.model.activations.rawValue) activations"
                + (tiles > 0 ? ", decode tiles \(tiles >> 20) MB" : ""))
        var one = 0.0
        for n in sizes {
            let caches = (0..<n).map { _ in KVCache(config: c, capacity: prompt + steps + 2) }
            for (i, cache) in caches.enumerated() {
                _ = try loaded.model.forward(Array(repeating: 1 + i, count: prompt), cache: cache, logits: .last)
            }
            let rowsOf = (0..<n).map { DecodeRow(token: 5, cache: caches[$0], adapter: list[$0 % list.count]) }
            _ = try decoder.step(rowsOf)  // warm the caches (the decoder built the kernels' tiles)
            let t0 = Date()
            for _ in 0..<steps { _ = try decoder.step(rowsOf) }
            let tps = Double(n * steps) / Date().timeIntervalSince(t0)
            if n == sizes.first { one = tps }
            print(String(format: "%3d sequences: %7.1f tokens/s  (%.2f× the first)", n, tps, tps / one))
        }
    }
}
