import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRATrain
import LowRATokenizer
import LowRAPipeline
import LowRAAdapters
import LowRABench

extension KernelActivations: ExpressibleByArgument {}

@main
struct LowRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lowra",
        abstract: "LoRA fine-tuning of LLMs on a frozen base quantized under 2 bits.",
        subcommands: [
            QuantizeCommand.self, RepairCommand.self, FinetuneCommand.self, EvalCommand.self, GenerateCommand.self,
            CardCommand.self, KeysCommand.self, AdapterCommand.self, ServeCommand.self, TokenizeCommand.self,
            InspectCommand.self, ExperimentCommand.self, ReconstructCommand.self, MemoryCommand.self, SynthCommand.self,
            PlotCommand.self, BenchCommand.self, ExportCommand.self,
        ])

    /// Re-executes once with the OpenBLAS settings it lacks (`preferredBLASEnvironment`), then
    /// parses the arguments and runs.
    static func main() {
        // Ranks of an MPI job on one host share its cores; OpenBLAS reads its thread count when it loads.
        for (k, v) in Communicator.threadEnvironment() { setenv(k, v, 1) }
        #if os(Linux)
        let missing = preferredBLASEnvironment()
        if !missing.isEmpty {
            for (k, v) in missing { setenv(k, v, 1) }
            execv("/proc/self/exe", CommandLine.unsafeArgv)  // returns only on failure: run as we are
        }
        #endif
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as LowRAError {
            printErr("Error: \(error.message)")
            Foundation.exit(error.exitStatus)
        } catch {
            exit(withError: error)
        }
    }
}

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "A GGUF file or a Hugging Face model directory.")
    var model: String

    func load(quiet: Bool = false) throws -> LoadedModel {
        let bar = ProgressBar("loading")
        let m = try LoadedModel.load(model) { done, total in if !quiet { bar.update(done, total) } }
        return m
    }
}

/// The runtime a loaded model runs on, for comparisons (eval, generate, bench train).
struct RuntimeOptions: ParsableArguments {
    @Flag(help: "Expand every matrix to fp32 after loading: the fp32 runtime's baseline, for comparisons.")
    var fp32 = false

    func apply(to loaded: inout LoadedModel) throws {
        guard fp32 else { return }
        loaded.model = try LanguageModel(config: loaded.config, weights: loaded.model.weights.expandedToFP32())
    }
}

/// Which LoRA adapter eval and generate apply.
struct AdapterOptions: ParsableArguments {
    @Option(help: "A LoRA adapter directory to apply (default: the quantized model's initial adapter, if it has one).")
    var adapter: String?
    @Flag(help: "Apply no adapter, not even the quantized model's initial one.") var noAdapter = false

    /// The adapter to run on `loaded`, and a line saying which adapter that is (nil: none). An adapter
    /// fine-tuned with the base's levels or scales (`finetune --codebook-lr / --scale-lr`) fits only
    /// that tuned base: with `tunedBase` it is put into `loaded` (its layers rewritten), else refused.
    func load(for loaded: inout LoadedModel, tunedBase: Bool = true) throws -> (LoRAAdapter?, String?) {
        if adapter != nil && noAdapter { throw ValidationError("--adapter and --no-adapter exclude each other") }
        if noAdapter { return (nil, nil) }
        let initial = (loaded.path as NSString).appendingPathComponent(AdapterStore.initialAdapterDirectory)
        guard
            let dir = adapter
                ?? (loaded.quantManifest != nil && AdapterStore.isAdapterDirectory(initial) ? initial : nil)
        else {
            return (nil, nil)
        }
        let (a, manifest) = try AdapterStore.load(
            dir, config: loaded.config, fingerprint: try baseFingerprint(loaded.path))
        let what =
            manifest.training.map { "fine-tuned \($0.steps) steps" } ?? "\(manifest.initialization) initialization"
        guard let tuned = AdapterStore.tunedBase(of: dir) else {
            return (a, "adapter \(dir) (rank \(a.rank), \(what))")
        }
        guard tunedBase else {
            throw LowRAError(
                .unsupported,
                "\(dir) was fine-tuned with its base's levels or scales (\(BaseTuner.file)): it runs only over that "
                    + "tuned base, which eval, generate and a merged export apply; not here")
        }
        let activations = loaded.model.activations
        loaded.model = try LanguageModel(
            config: loaded.config, weights: try BaseTuner.apply(tuned, to: loaded.model.weights))
        loaded.model.activations = activations
        return (a, "adapter \(dir) (rank \(a.rank), \(what), over its tuned base)")
    }
}

func readText(_ path: String) throws -> String {
    guard FileManager.default.fileExists(atPath: path) else { throw LowRAError(.io, "\(path): no such file") }
    guard let data = FileManager.default.contents(atPath: path) else { throw LowRAError(.io, "\(path): cannot read") }
    guard !data.isEmpty else { throw LowRAError(.invalidArgument, "\(path): the file is empty") }
    guard let text = String(data: data, encoding: .utf8) else {
        throw LowRAError(.invalidArgument, "\(path): not UTF-8 text")
    }
    return text
}

/// The files `make setup` writes into the repository's `data/` that commands read by default
/// (the generic calibration text). Found from any working directory: `$LOWRA_DATA/<name>`
/// when set, else `data/<name>` under the working directory, else under the nearest folder
/// above the executable that has it (the repository of `.build/release/lowra`).
enum DefaultData {
    static let calibration = "calibration.txt"

    /// `$LOWRA_DATA`, when set: the only folder searched.
    private static var environmentFolder: String? {
        ProcessInfo.processInfo.environment["LOWRA_DATA"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The places searched, in order.
    static func candidates(_ name: String) -> [String] {
        if let dir = environmentFolder { return [(dir as NSString).appendingPathComponent(name)] }
        var out = [(FileManager.default.currentDirectoryPath as NSString).appendingPathComponent("data/" + name)]
        if let exe = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            var dir = exe.deletingLastPathComponent()
            while dir.path != "/" && !dir.path.isEmpty {
                out.append(dir.appendingPathComponent("data").appendingPathComponent(name).path)
                dir = dir.deletingLastPathComponent()
            }
        }
        return out
    }

    /// The first candidate that exists, or an error saying where it looked and `hint`.
    static func locate(_ name: String, hint: String) throws -> String {
        let places = candidates(name)
        if let found = places.first(where: { FileManager.default.fileExists(atPath: $0) }) { return found }
        let looked =
            environmentFolder != nil
            ? places[0] + " (LOWRA_DATA)"
            : places[0] + " and data/\(name) in every folder above " + (Bundle.main.executablePath ?? "lowra")
        throw LowRAError(
            .invalidArgument,
            "\(name) not found (looked at \(looked)); make setup writes it, LOWRA_DATA names the folder that has it; "
                + hint)
    }
}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Perplexity and next-token accuracy on a text file, or on the assistant turns of JSONL conversations."
    )

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var runtimeOptions: RuntimeOptions
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "Text file to evaluate on, or .jsonl conversations (scored on the assistant turns only).") var data:
        String
    @Option(help: "Evaluate the first N tokens (default: all); for .jsonl, the first N conversations.") var maxTokens:
        Int?
    @Option(help: "Window length in tokens; windows do not overlap (default: 512, or the model's context if shorter).")
    var context: Int?
    @Option(help: "A reference model (e.g. the unquantized one): also report KL divergence and top-1 agreement.")
    var reference: String?
    @Flag(
        help: """
            Score through the generation path: each token decoded alone with a KV cache, its logits alone \
            (the decode kernels, with --activations).
            """)
    var stepwise = false
    @Flag(
        help: """
            Score as llama.cpp's llama-perplexity does, to compare with it: BOS first when the tokenizer adds one, \
            whole windows only, each window's first token BOS (if added), its second half scored.
            """)
    var llamaPerplexity = false
    @Option(help: "Activations of the decode kernels: int16 (two int8 halves, default), int8 (faster) or float.")
    var activations: KernelActivations = .default
    @Flag(help: "Append this evaluation to the --adapter's card (adapter_card.json).") var record = false
    @Option(help: "The recorded evaluation's role: task or drift (default: drift with --reference, else task).")
    var role: AdapterCard.Role?
    @Flag(help: "Print one JSON object on stdout.") var json = false

    var conversationsData: Bool { data.lowercased().hasSuffix(".jsonl") }

    func run() throws {
        if let n = maxTokens, n < 2 { throw ValidationError("--max-tokens must be at least 2") }
        if (stepwise || llamaPerplexity) && conversationsData {
            throw ValidationError("--stepwise and --llama-perplexity apply to plain text data")
        }
        if record && adapterOptions.adapter == nil {
            throw LowRAError(.invalidArgument, "--record needs --adapter (the adapter whose card records it)")
        }
        if role != nil && !record { throw LowRAError(.invalidArgument, "--role applies with --record") }
        if role == .drift && reference == nil {
            throw LowRAError(.invalidArgument, "a drift evaluation needs --reference (the unquantized base)")
        }
        let lock = try record ? OutputLock(adapterOptions.adapter!) : nil
        defer { withExtendedLifetime(lock) {} }
        let conversations = data.lowercased().hasSuffix(".jsonl")
        let text = try readText(data)
        var loaded = try modelOptions.load()
        let (adapter, adapterLine) = try adapterOptions.load(for: &loaded)
        try runtimeOptions.apply(to: &loaded)
        loaded.model.activations = activations
        if let adapterLine, !json { printErr(adapterLine) }
        let bar = ProgressBar("eval")
        let window = context ?? min(512, loaded.config.maxPositions)
        guard window >= 2, window <= loaded.config.maxPositions else {
            throw LowRAError(.invalidArgument, "--context must be in 2...\(loaded.config.maxPositions)")
        }
        let r: EvalResult
        if conversations {
            // JSONL conversations: perplexity on the assistant turns only; --max-tokens limits conversations.
            if reference != nil { throw ValidationError("--reference applies to plain text data") }
            let examples = try TrainingData.jsonl(data, tokenizer: loaded.tokenizer, seq: window)
            r = try loaded.model.evaluate(examples: examples, limit: maxTokens, adapter: adapter) { bar.update($0, $1) }
        } else {
            var tokens = loaded.tokenizer.encode(text)
            if let n = maxTokens { tokens = Array(tokens.prefix(n)) }
            if llamaPerplexity { tokens = try llamaPerplexityWindows(tokens, window: window, loaded.tokenizer) }
            let ref = try reference.map { try LoadedModel.load($0).model }
            ref?.activations = activations
            r = try loaded.model.evaluate(
                tokens: tokens, context: window, adapter: adapter, reference: ref, stepwise: stepwise,
                scoredFrom: llamaPerplexity ? window / 2 : 0
            ) { bar.update($0, $1) }
        }
        if record { try recordEvaluation(r, adapterDir: adapterOptions.adapter!) }
        let mem = MemoryStats.current()
        if json {
            printJSON(
                [
                    "perplexity": r.perplexity, "accuracy": r.accuracy, "tokens": r.tokens,
                    "predictions": r.predictions,
                    "mean_nll": r.meanNLL, "windows": r.windows, "context": r.context, "seconds": r.seconds,
                    "tokens_per_s": Double(r.tokens) / r.seconds, "peak_rss_bytes": mem.peakResidentBytes,
                    "model": modelOptions.model, "data": data, "adapter": adapterLine ?? "none",
                    "stepwise": stepwise, "activations": activations.rawValue, "llama_perplexity": llamaPerplexity,
                ].merging(r.klDivergence.map { ["kl_divergence": $0, "top1_agreement": r.top1Agreement!] } ?? [:]) {
                    a, _ in a
                })
        } else {
            print(
                String(
                    format: "perplexity %.4f  accuracy %.4f  (%d tokens, %d windows of %d, %.1fs, %.0f tok/s)",
                    r.perplexity, r.accuracy, r.tokens, r.windows, r.context, r.seconds, Double(r.tokens) / r.seconds))
            if let kl = r.klDivergence {
                print(
                    String(
                        format: "vs reference: KL divergence %.4f nats/token, top-1 agreement %.4f", kl,
                        r.top1Agreement!))
            }
        }
    }
}

extension EvalCommand {
    /// The tokens llama.cpp's perplexity tool scores (tools/perplexity: `perplexity`): the text's
    /// tokens (BOS first when the tokenizer adds one) cut to whole windows, each window's first
    /// token replaced by BOS when the tokenizer adds one.
    func llamaPerplexityWindows(_ tokens: [Int], window: Int, _ tokenizer: Tokenizer) throws -> [Int] {
        let whole = tokens.count / window * window
        guard whole > 0 else {
            throw LowRAError(.invalidArgument, "\(data): \(tokens.count) tokens, fewer than one window of \(window)")
        }
        var out = Array(tokens.prefix(whole))
        if tokenizer.addBos, let bos = tokenizer.bosTokenId {
            for start in stride(from: 0, to: whole, by: window) { out[start] = bos }
        }
        return out
    }

    /// Appends `r` to the adapter's card (made from its manifest if it has none), atomically.
    func recordEvaluation(_ r: EvalResult, adapterDir: String) throws {
        var card = try AdapterCard.loadOrMake(adapterDir)
        var e = AdapterCard.Evaluation(
            role: role ?? (reference == nil ? .task : .drift),
            dataset: AdapterCard.DataRecord(file: data, sha256: try fingerprint(data), bytes: try fileBytes(data)),
            tokens: r.predictions, perplexity: r.perplexity, baseFingerprint: try baseFingerprint(modelOptions.model),
            source: "lowra eval")
        e.accuracy = r.accuracy
        (e.klDivergence, e.top1Agreement, e.reference) = (r.klDivergence, r.top1Agreement, reference)
        card.evaluations.append(e)
        try card.save(to: adapterDir)
        if !json { printErr("recorded a \(e.role.rawValue) evaluation of \(e.tokens) tokens on \(adapterDir)'s card") }
    }
}

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "Token ids of a text file.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Text file to tokenize.") var file: String
    @Flag(help: "Print the ids as a JSON array.") var json = false

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw LowRAError(.io, "\(file): no such file")
        }
        let tokenizer = try Tokenizer(modelPath: modelOptions.model)
        let ids = tokenizer.encode(String(decoding: data, as: UTF8.self))
        if json {
            print("[" + ids.map(String.init).joined(separator: ",") + "]")
        } else {
            for id in ids { print(id, tokenizer.tokenString(id)) }
        }
    }
}

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Generate text from a prompt.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var runtimeOptions: RuntimeOptions
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "The prompt.") var prompt: String
    @Flag(help: "Wrap the prompt in the model's chat template as a user message.") var chat = false
    @Option(help: "Tokens to generate at most.") var maxNewTokens: Int = 128
    @Option(help: "0 picks the most likely token (greedy).") var temperature: Float = 0.7
    @Option(help: "Sample among the K most likely tokens (0: all).") var topK: Int = 0
    @Option(help: "Sample within the top-p probability mass (1: all).") var topP: Float = 1
    @Option(help: "Random seed.") var seed: UInt64 = 0

    func run() throws {
        guard maxNewTokens > 0 else { throw ValidationError("--max-new-tokens must be positive") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard topK >= 0, temperature >= 0 else {
            throw ValidationError("--top-k and --temperature must not be negative")
        }
        var loaded = try modelOptions.load()
        let (adapter, adapterLine) = try adapterOptions.load(for: &loaded)
        try runtimeOptions.apply(to: &loaded)
        if let adapterLine { printErr(adapterLine) }
        let tok = loaded.tokenizer
        var text = prompt
        if chat {
            guard let template = tok.chatTemplate else {
                throw LowRAError(.unsupported, "\(modelOptions.model): the model has no chat template")
            }
            text = try template.render([ChatMessage(role: "user", content: prompt)])
        }
        let ids = tok.encode(text)
        var pending = [Int]()
        var printedBytes = 0
        let result = try loaded.model.generate(
            prompt: ids, maxNewTokens: maxNewTokens,
            sampling: SamplingOptions(temperature: temperature, topK: topK, topP: topP, seed: seed),
            eos: tok.eosTokenId, adapter: adapter
        ) { id in
            // Print whole UTF-8 characters as they complete.
            pending.append(id)
            let bytes = tok.decodeBytes(pending)
            var end = bytes.count
            while end > printedBytes, end > bytes.count - 4,
                String(validating: bytes[printedBytes..<end], as: UTF8.self) == nil
            {
                end -= 1
            }
            if end > printedBytes, let s = String(validating: bytes[printedBytes..<end], as: UTF8.self) {
                FileHandle.standardOutput.write(s.data(using: .utf8)!)
                printedBytes = end
            }
            return true
        }
        let rest = tok.decodeBytes(pending)
        if printedBytes < rest.count { FileHandle.standardOutput.write(Data(rest[printedBytes...])) }
        print("")
        fflush(nil)
        printErr(
            String(
                format: "[%d prompt tokens, prefill %.2fs; %d new tokens, %.1f tokens/s%@]",
                result.promptTokens, result.prefillSeconds, result.tokens.count,
                result.decodeTokensPerSecond, result.stoppedAtEOS ? ", stopped at end of turn" : ""))
    }
}

/// The size of a file in bytes.
func fileBytes(_ path: String) throws -> Int {
    guard let attrs = try? FileManager.default.attributesOfItem(atPath: path), let size = attrs[.size] as? NSNumber
    else { throw LowRAError(.io, "\(path): no such file") }
    return size.intValue
}
