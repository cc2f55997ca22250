import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRATrain
import LowRAPipeline
import LowRAAdapters

/// `lowra adapter compress|import`: low-bit adapters for the shelf; adapters trained elsewhere.
struct AdapterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adapter", abstract: "Operations on adapters.",
        subcommands: [AdapterCompress.self, AdapterImport.self])
}

/// An evaluation on a card, run again with another adapter on the same data (by sha256) and at
/// least as many tokens: what `adapter compress` and `card promote` compare.
struct Replay {
    let evaluation: AdapterCard.Evaluation
    let loaded: LoadedModel
    let reference: LanguageModel?

    /// nil when the evaluation's dataset is gone or changed.
    init?(_ e: AdapterCard.Evaluation, loaded: LoadedModel) throws {
        guard FileManager.default.fileExists(atPath: e.dataset.file),
            (try? LowRAPipeline.fingerprint(e.dataset.file)) == e.dataset.sha256
        else { return nil }
        (evaluation, self.loaded) = (e, loaded)
        reference = try e.reference.map { try LoadedModel.load($0).model }
    }

    func run(_ a: LoRAAdapter) throws -> EvalResult {
        let e = evaluation
        if e.dataset.file.lowercased().hasSuffix(".jsonl") {
            let data = try TrainingData.jsonl(e.dataset.file, tokenizer: loaded.tokenizer, seq: 512)
            return try loaded.model.evaluate(examples: data, adapter: a)
        }
        let window = min(512, loaded.config.maxPositions)
        let n = e.tokens + (e.tokens + window - 2) / (window - 1) + 1  // predictions ≥ e.tokens
        let tokens = Array(loaded.tokenizer.encode(try readText(e.dataset.file)).prefix(n))
        return try loaded.model.evaluate(tokens: tokens, context: window, adapter: a, reference: reference)
    }
}

struct AdapterImport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Bring a Hugging Face PEFT LoRA adapter (trained elsewhere) onto a base of the same architecture.",
        discussion: """
            Reads adapter_config.json (r, lora_alpha, use_rslora, target_modules, layers_to_transform) and \
            adapter_model.safetensors; checks every tensor's name and shape against the base; writes the adapter in \
            LowRA's layout with a card that names its source. It is not servable until evaluated on this base: \
            `lowra eval --record` on the task data and on the drift text.
            """)

    @Argument(help: "The PEFT adapter directory.") var peft: String
    @Option(help: "The base it is to run over (a quantized directory, GGUF or Hugging Face model).") var model: String
    @Option(help: "The imported adapter's directory.") var out: String

    func run() throws {
        let lock = try OutputLock(out)
        defer { withExtendedLifetime(lock) {} }
        guard !FileManager.default.fileExists(atPath: out) else {
            throw LowRAError(.invalidArgument, "\(out) exists; choose another --out")
        }
        let loaded = try LoadedModel.load(model)
        let (adapter, source) = try PEFTImport.read(peft, config: loaded.config)
        var manifest = AdapterManifest(
            baseFingerprint: try baseFingerprint(model), base: model,
            quantization: loaded.quantManifest.map { QuantSummary($0.report) }, rank: adapter.rank,
            alpha: adapter.alpha, initialization: "imported")
        manifest.imported = source
        let staging = out + ".tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: staging)
        try AdapterStore.save(adapter, config: loaded.config, manifest: manifest, to: staging)
        var card = AdapterCard(manifest: manifest, dir: out)
        card.task = "imported from \((peft as NSString).lastPathComponent)"
        try card.save(to: staging)
        try QuantizedModelStore.replaceDirectory(out, with: staging)
        print(
            String(
                format: "imported %@: rank %d, scale %.4g (lora_alpha %g%@), %d tensors over %@ → %@", peft,
                source.rank, adapter.scale, source.loraAlpha, source.rsLoRA ? ", rsLoRA" : "", source.tensors,
                source.targetModules.joined(separator: ","), out))
        print("not servable until evaluated on this base: lowra eval --model \(model) --adapter \(out) --record …")
    }
}

struct AdapterCompress: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compress",
        abstract: "Quantize an adapter's factors to 8, 4 or 2 bits and re-measure its card's evaluations.",
        discussion: """
            A and Bᵀ are quantized row by row: 4 and 2 bits with the model's own quantizer (64-element absmax \
            blocks, a Lloyd-Max codebook per row), 8 bits as Q8_0 blocks. Every evaluation on the card whose \
            dataset is still there (same sha256) is run again with the original and the compressed adapter on \
            the same tokens; the new card records both perplexities. The server keeps compressed adapters \
            compressed in memory.
            """)

    @Argument(help: "The adapter directory.") var dir: String
    @Option(help: "8, 4 or 2.") var bits: Int
    @Option(help: "The compressed adapter's directory.") var out: String
    @Option(help: "The base (default: the one the adapter's manifest names).") var model: String?

    func run() throws {
        guard CompressedAdapter.supportedBits.contains(bits) else { throw ValidationError("--bits takes 8, 4 or 2") }
        let lock = try OutputLock(out)
        defer { withExtendedLifetime(lock) {} }
        guard !FileManager.default.fileExists(atPath: out) else {
            throw LowRAError(.invalidArgument, "\(out) exists; choose another --out")
        }
        let manifest = try AdapterStore.loadManifest(dir)
        guard manifest.compressionBits == nil else {
            throw LowRAError(.invalidArgument, "\(dir) is compressed already")
        }
        let base = model ?? manifest.base
        let loaded = try LoadedModel.load(base)
        let fingerprint = try baseFingerprint(base)
        let (adapter, _) = try AdapterStore.load(dir, config: loaded.config, fingerprint: fingerprint)
        let compressed = try CompressedAdapter(adapter, bits: bits)
        let small = try compressed.expanded(config: loaded.config)
        let fp32Bytes = 4 * adapter.parameterCount
        printErr(
            String(
                format: "%@: %.2f MB in fp32 → %.2f MB at %d bits (%.1f×); relative error of the factors %.4f",
                dir, Double(fp32Bytes) / 1e6, Double(compressed.byteCount) / 1e6, bits,
                Double(fp32Bytes) / Double(compressed.byteCount), relativeError(adapter.values, small.values)))

        // The card: its evaluations measured again, original and compressed on the same tokens.
        var card = try AdapterCard.loadOrMake(dir)
        var measured = [AdapterCard.Evaluation]()
        for e in card.evaluations where e.baseFingerprint == fingerprint {
            guard let replay = try Replay(e, loaded: loaded) else {
                printErr("skipping the \(e.role.rawValue) evaluation on \(e.dataset.file): the file is gone or changed")
                continue
            }
            let before = try replay.run(adapter)
            let after = try replay.run(small)
            var m = AdapterCard.Evaluation(
                role: e.role, dataset: e.dataset, tokens: after.predictions, perplexity: after.perplexity,
                baseFingerprint: fingerprint, source: "lowra adapter compress")
            m.accuracy = after.accuracy
            (m.klDivergence, m.top1Agreement, m.reference) = (after.klDivergence, after.top1Agreement, e.reference)
            m.uncompressedPerplexity = before.perplexity
            measured.append(m)
            print(
                String(
                    format: "%@ %@: perplexity %.3f → %.3f (%+.2f%%) over %d tokens", e.role.rawValue, e.dataset.file,
                    before.perplexity, after.perplexity, 100 * (after.perplexity / before.perplexity - 1),
                    after.predictions))
        }
        card.version += "+q\(bits)"
        card.evaluations = measured
        card.created = AdapterCard.now()
        // Written whole beside --out, then renamed into place: a killed run leaves no half adapter
        // (its staging directory is removed by the next run).
        QuantizedModelStore.removeStaleStaging(of: out)
        let staging = out + ".tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: staging)
        do {
            try AdapterStore.saveCompressed(compressed, config: loaded.config, manifest: manifest, to: staging)
            try card.save(to: staging)
            try QuantizedModelStore.replaceDirectory(out, with: staging)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        print(
            String(
                format: "saved %@ (%@@%@): %.2f MB; adapters per GB: %d at %d bits, %d in fp32", out, card.name,
                card.version, Double(compressed.byteCount) / 1e6, (1 << 30) / compressed.byteCount, bits,
                (1 << 30) / fp32Bytes))
    }
}

func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    var num = 0.0
    var den = 0.0
    for (x, y) in zip(a, b) {
        num += Double(x - y) * Double(x - y)
        den += Double(x) * Double(x)
    }
    return (num / max(den, 1e-30)).squareRoot()
}
