import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRATrain
import LowRAPipeline
import LowRAAdapters

/// The generic repair (RILQ's idea): before any task, the quantized model's initial adapter is
/// trained on a generic text to match the unquantized source model's next-token distribution
/// (KL only: `finetune --distill-weight 1`), and replaces the initial adapter, so every task
/// adapter starts from a repaired base.
struct RepairCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Distill a quantized model's initial adapter from its unquantized source on a generic text.",
        discussion: """
            Trains the initial adapter (quantize --init cloq or loftq) by KL(source ‖ quantized) on --data, the same \
            loop as finetune (its log, checkpoints and --resume in MODEL/repair), then installs the result as \
            MODEL/adapter, recorded in its manifest ("+repair").
            """)

    @Option(help: "A quantized model directory with an initial adapter.") var model: String
    @Option(help: "Generic text to repair on, not the task's data (default: calibration.txt, found as quantize does).")
    var data: String?
    @Option(help: "Optimizer steps.") var steps: Int = 40
    @Option(help: "Sequences per step.") var batch: Int = 2
    @Option(help: "Tokens per sequence.") var seq: Int = 256
    @Option(help: "Peak learning rate of the adapter (0: held, while --scale-lr or --codebook-lr tune the base).")
    var lr: Float = 1e-3
    @Option(help: "Seed of the data order.") var seed: UInt64 = 0
    @Option(
        help: ArgumentHelp(
            "Also tune the base's levels (every packed row's codebook) at this peak learning rate.",
            discussion: "The model is rewritten with the tuned levels (a new base fingerprint) beside its adapter."))
    var codebookLR: Float?
    @Option(
        help: ArgumentHelp(
            "Also tune the base's block scales at this peak learning rate (a relative step of each scale).",
            discussion: "Scales and levels together are EfficientQAT's end-to-end quantization parameters."))
    var scaleLR: Float?
    @Flag(help: "Continue an interrupted repair.") var resume = false

    func run() throws {
        guard QuantizedModelStore.isQuantizedDirectory(model) else {
            throw LowRAError(
                .invalidArgument, "\(model) is not a quantized model directory (lowra quantize writes one)")
        }
        let lock = try OutputLock(model)
        defer { withExtendedLifetime(lock) {} }
        let initial = (model as NSString).appendingPathComponent(AdapterStore.initialAdapterDirectory)
        let before = try AdapterStore.loadManifest(initial)
        let work = (model as NSString).appendingPathComponent("repair")
        let data = try self.data ?? DefaultData.locate(DefaultData.calibration, hint: "or pass --data TEXT")
        var arguments: [String] = [
            "--model", model, "--train", data, "--out", work, "--distill-weight", "1", "--steps", String(steps),
            "--batch", String(batch), "--seq", String(seq), "--lr", String(lr), "--seed", String(seed),
            "--save-every", String(max(10, steps / 4)), "--schedule", "cosine",
        ]
        if resume { arguments.append("--resume") }
        if let codebookLR { arguments += ["--codebook-lr", String(codebookLR)] }
        if let scaleLR { arguments += ["--scale-lr", String(scaleLR)] }
        let finetune = try FinetuneCommand.parse(arguments)
        try finetune.run()
        var manifest = try AdapterStore.loadManifest(work)
        manifest.initialization = before.initialization + "+repair"
        manifest.loftq = before.loftq
        let loaded = try LoadedModel.load(model)
        let config = loaded.config
        let (adapter, _) = try AdapterStore.load(work, config: config, fingerprint: manifest.baseFingerprint)
        if codebookLR != nil || scaleLR != nil {
            manifest.initialization += (codebookLR != nil ? "+codebooks" : "") + (scaleLR != nil ? "+scales" : "")
            try installTunedBase(loaded, adapter: adapter, manifest: manifest, work: work)
            return
        }
        QuantizedModelStore.removeStaleStaging(of: initial)
        let staging = initial + ".tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: staging)
        try AdapterStore.save(adapter, config: config, manifest: manifest, to: staging)
        try QuantizedModelStore.replaceDirectory(initial, with: staging)
        print("repaired initial adapter installed in \(initial) (the run's log and checkpoint stay in \(work))")
    }

    /// The model rewritten with the tuned levels and scales and the repaired adapter (made for the new base's
    /// fingerprint), the run's directory carried over, swapped in whole for the old directory.
    func installTunedBase(_ loaded: LoadedModel, adapter: LoRAAdapter, manifest: AdapterManifest, work: String) throws {
        let fm = FileManager.default
        QuantizedModelStore.removeStaleStaging(of: model)
        let staging = model + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: staging)
        do {
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
            let weights = try BaseTuner.apply(
                (work as NSString).appendingPathComponent(BaseTuner.file), to: loaded.model.weights)
            try QuantizedModelStore.save(
                to: staging, config: loaded.config, weights: weights, tokenizer: loaded.tokenizer,
                map: try PrecisionMap.read((model as NSString).appendingPathComponent("precision_map.json")),
                manifest: try QuantizedModelStore.loadManifest(model))
            var m = manifest
            m.baseFingerprint = try baseFingerprint(staging)
            let initial = (staging as NSString).appendingPathComponent(AdapterStore.initialAdapterDirectory)
            try AdapterStore.save(adapter, config: loaded.config, manifest: m, to: initial)
            try fm.copyItem(atPath: work, toPath: (staging as NSString).appendingPathComponent("repair"))
            try QuantizedModelStore.replaceDirectory(model, with: staging)
        } catch {
            try? fm.removeItem(atPath: staging)
            throw error
        }
        print("the tuned base and the repaired initial adapter installed in \(model) (new base fingerprint)")
    }
}
