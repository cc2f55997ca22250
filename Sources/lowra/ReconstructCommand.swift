import ArgumentParser
import Foundation
import LowRAAdapters
import LowRAIO
import LowRAModel
import LowRAPipeline
import LowRATensor
import LowRATrain

/// Block reconstruction of a quantized model (`reconstructBlocks`): its codes, block scales and
/// levels trained block by block to match the unquantized source's block outputs on a generic
/// text, written as a new quantized model directory.
struct ReconstructCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconstruct",
        abstract: "Train a quantized model's codes, scales and levels block by block against its source model.",
        discussion: """
            Each block in order: its packed layers are trained through the quantizer (latent weights choose the \
            codes by a straight-through estimator; block scales and per-row levels by their gradients) so that the \
            block, on the hidden states of the blocks reconstructed before it, matches the unquantized block's \
            outputs (mean squared error); then codes, scales and levels are frozen. A block that comes out worse \
            keeps its layers. The model's initial adapter (CLoQ's, LoftQ's or zeros) runs with each block and its \
            factors train beside it.
            """)

    @Option(help: "A quantized model directory (lowra quantize writes one).") var model: String
    @Option(help: "The unquantized source model (default: the one the quantized model records).") var source: String?
    @Option(help: "Generic text to reconstruct on (default: calibration.txt, found as quantize does).")
    var calibration: String?
    @Option(help: "Output directory: the reconstructed quantized model.") var out: String
    @Option(help: "Calibration sequences.") var sequences: Int = 32
    @Option(help: "Tokens per sequence.") var tokens: Int = 128
    @Option(help: "Sequences per step.") var batch: Int = 4
    @Option(help: "Passes over the calibration sequences per block.") var epochs: Int = 4
    @Option(help: "Adam learning rate of the latent weights (relative to a layer's mean scale).")
    var weightLR: Float = 5e-3
    @Option(help: "Adam learning rate of the block scales (relative to a layer's mean scale).")
    var scaleLR: Float = 5e-3
    @Option(help: "Adam learning rate of the levels (normalized units).") var levelLR: Float = 1e-3
    @Option(help: "Adam learning rate of the initial adapter's factors.") var adapterLR: Float = 1e-3
    @Option(help: "Seed of the sequences' order.") var seed: UInt64 = 0
    @Flag(help: "Print one JSON object with every block's report on stdout.") var json = false

    func run() throws {
        guard QuantizedModelStore.isQuantizedDirectory(model) else {
            throw LowRAError(
                .invalidArgument, "\(model) is not a quantized model directory (lowra quantize writes one)")
        }
        var o = ReconstructionOptions()
        (o.sequences, o.tokens, o.batch, o.epochs, o.seed) = (sequences, tokens, batch, epochs, seed)
        (o.weightLR, o.scaleLR, o.levelLR, o.adapterLR) = (weightLR, scaleLR, levelLR, adapterLR)
        try o.validate()
        let lock = try OutputLock(out)
        defer { withExtendedLifetime(lock) {} }
        let loaded = try LoadedModel.load(model)
        guard let manifest = loaded.quantManifest else {
            throw LowRAError(.invalidArgument, "\(model) has no quantization manifest")
        }
        if let transform = manifest.report.transform {
            // Its source is the transformed model, which only `quantize` holds.
            throw LowRAError(
                .invalidArgument,
                "\(model) was quantized after an equivalence transform (\(transform)); reconstruct it in the same "
                    + "run: lowra quantize ... --reconstruct")
        }
        let sourcePath = source ?? manifest.source
        let sourceModel = try LoadedModel.load(sourcePath)
        guard sourceModel.config.numLayers == loaded.config.numLayers,
            sourceModel.config.hiddenSize == loaded.config.hiddenSize
        else {
            throw LowRAError(.shapeMismatch, "\(sourcePath) is not the model \(model) was quantized from")
        }
        let text = try calibration ?? DefaultData.locate(DefaultData.calibration, hint: "or pass --calibration TEXT")
        let bar = ProgressBar("blocks ")
        let t0 = Date()
        let reports = try reconstructDirectory(
            loaded, source: sourceModel.model.weights, tokens: loaded.tokenizer.encode(try readText(text)), options: o,
            out: out, seed: seed
        ) { bar.update($0.block + 1, loaded.config.numLayers) }
        if json {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            printJSON([
                "out": out, "seconds": Date().timeIntervalSince(t0),
                "options": try JSONSerialization.jsonObject(with: encoder.encode(o)),
                "blocks": try JSONSerialization.jsonObject(with: encoder.encode(reports)),
                "peak_rss_bytes": MemoryStats.current().peakResidentBytes,
            ])
            return
        }
        printReconstructionTable(reports)
        print(String(format: "reconstructed %@ in %.1fs; saved %@", model, Date().timeIntervalSince(t0), out))
    }
}

/// Reconstructs the quantized model `loaded` against `source` on `tokens` and writes it to `out`
/// (which may be the directory it was loaded from): the model, its precision map, its initial adapter
/// (trained beside the blocks, recorded as "+reconstruct") and `reconstruction.json` (options and
/// every block's report), all in a staging directory renamed into place at the end.
func reconstructDirectory(
    _ loaded: LoadedModel, source: ModelWeights, tokens: [Int], options: ReconstructionOptions, out: String,
    seed: UInt64, progress: ((BlockReconstructionReport) -> Void)? = nil
) throws -> [BlockReconstructionReport] {
    guard let manifest = loaded.quantManifest else {
        throw LowRAError(.invalidArgument, "\(loaded.path) has no quantization manifest")
    }
    let fm = FileManager.default
    try QuantizedModelStore.checkOutputDirectory(out)
    let t0 = Date()
    let initial = (loaded.path as NSString).appendingPathComponent(AdapterStore.initialAdapterDirectory)
    var initialAdapter: (LoRAAdapter, AdapterManifest)?
    if fm.fileExists(atPath: initial) {
        let m = try AdapterStore.loadManifest(initial)
        initialAdapter = (try AdapterStore.load(initial, config: loaded.config, fingerprint: m.baseFingerprint).0, m)
    }
    let (weights, adapter, reports) = try reconstructBlocks(
        source: source, quantized: loaded.model.weights, config: loaded.config, calibration: tokens,
        adapter: initialAdapter?.0, options: options, progress: progress)
    var newManifest = manifest
    newManifest.report.seconds += Date().timeIntervalSince(t0)
    QuantizedModelStore.removeStaleStaging(of: out)
    let staging = out + ".tmp-\(getpid())"
    try? fm.removeItem(atPath: staging)
    do {
        try QuantizedModelStore.save(
            to: staging, config: loaded.config, weights: weights, tokenizer: loaded.tokenizer,
            map: try PrecisionMap.read((loaded.path as NSString).appendingPathComponent("precision_map.json")),
            manifest: newManifest)
        if let adapter, let old = initialAdapter?.1 {
            var m = old
            m.baseFingerprint = try baseFingerprint(staging)
            m.base = out
            m.initialization = old.initialization + "+reconstruct"
            try AdapterStore.save(
                adapter, config: loaded.config, manifest: m,
                to: (staging as NSString).appendingPathComponent(AdapterStore.initialAdapterDirectory))
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let record = ReconstructionRecord(options: options, blocks: reports)
        try writeAtomically(
            try encoder.encode(record), to: (staging as NSString).appendingPathComponent("reconstruction.json"))
        try QuantizedModelStore.replaceDirectory(out, with: staging)
    } catch {
        try? fm.removeItem(atPath: staging)
        throw error
    }
    return reports
}

/// `reconstruction.json`: how a quantized model was reconstructed.
struct ReconstructionRecord: Codable {
    var options: ReconstructionOptions
    var blocks: [BlockReconstructionReport]
}

func printReconstructionTable(_ reports: [BlockReconstructionReport]) {
    print("block  loss before  loss after  codes moved  kept  seconds")
    for r in reports {
        print(
            String(
                format: "%5d  %11.4g  %10.4g  %10.2f%%  %4@  %7.1f", r.block, r.lossBefore, r.lossAfter,
                100 * r.codesChanged, r.kept ? "yes" : "no", r.seconds))
    }
}
