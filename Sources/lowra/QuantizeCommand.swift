import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRAQuant
import LowRATensor
import LowRATrain
import LowRAPipeline
import LowRAAdapters

extension QuantMethod: ExpressibleByArgument {}
extension AssignerKind: ExpressibleByArgument {}
extension CodebookScope: ExpressibleByArgument {}
extension LloydWeighting: ExpressibleByArgument {}

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize", abstract: "Quantize a model's linear layers to a bit budget and store them packed.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "lowra | qlora | loftq.") var method: QuantMethod = .lowra
    @Option(help: "Budget in code bits per quantized parameter, e.g. 1.75.") var bits: Double
    @Option(help: "Output directory.") var out: String
    @Option(help: "Codebook scope: channel (default) | tensor (lowra; the baselines use NormalFloat levels).")
    var codebook: CodebookScope?
    @Option(help: "Allowed precisions, e.g. 1,2,4 (default: 1,2,4 with the Fisher or below 2 bits, else 2,4).")
    var precisions: String?
    @Option(help: "Weighted Lloyd-Max iterations (lowra; 0 keeps NormalFloat levels).") var lloydIters: Int?
    @Option(help: "Lloyd-Max point weight: absmax (the paper) | absmax2.") var weighting: LloydWeighting = .absmax
    @Option(
        help:
            "Precision assigner: exact | ilp (the paper's two-level ILP) | layerwise (default: exact for lowra, layerwise for the baselines)."
    )
    var assigner: AssignerKind?
    @Option(help: "Reuse a precision map (precision_map.json) instead of assigning.") var precisionMap: String?
    @Flag(help: "Store block scales as fp32 instead of double-quantizing them.") var noDoubleQuant = false
    @Option(
        help: """
            A generic text whose activations turn the error into the layers' output error (default for lowra: \
            data/calibration.txt, made by setup, found from any folder (or in $LOWRA_DATA); the baselines' default \
            and `none`: the paper's data-free recipe).
            """)
    var calibration: String?
    @Option(help: "Tokens of the calibration text to use (whole windows of 512).") var calibrationTokens: Int = 4096
    @Option(
        help: """
            gptq: error feedback through each layer's input covariance, gathered sequentially, and output-error \
            costs in the assignment (default) | diag: E[x²] weighs Lloyd-Max and the error table only.
            """)
    var calibrationMethod: String = "gptq"
    @Option(help: "Damping of the input covariance, as a fraction of its mean diagonal.") var damping: Float = 0.01
    @Flag(help: "After error feedback, refit each row's levels to its codes through the input covariance (gptq).")
    var refitLevels = false
    @Option(
        help: """
            fisher: weigh each channel's error in the assignment by its output-channel Fisher E[(dL/dy)²] on the \
            calibration text (the default with --calibration-method gptq) | none.
            """)
    var sensitivity: String?
    @Option(help: "Seed of the two-level ILP's K-Means (recorded in lowra_quant.json; the rest is deterministic).")
    var seed: UInt64 = 0
    @Option(
        help:
            """
            Initial LoRA adapter stored beside the base: loftq | cloq (output-error fit, needs --calibration) | zeros \
            | none (default: cloq for calibrated lowra, loftq for data-free lowra and loftq, zeros for qlora).
            """
    )
    var `init`: String?
    @Option(help: "LoRA rank of the initial adapter (default: 64, or the smallest layer dimension if lower).") var rank:
        Int?
    @Option(help: "LoRA alpha (default: the rank).") var alpha: Float?
    @Option(help: "LoftQ alternating steps.") var loftqSteps: Int = 5
    @Option(
        help: """
            The head's encoding (the embedding when tied): 8 (Q8_0 blocks), 4 (Q4_0) or 16 \
            (keep the source's, the default).
            """
    ) var headBits: Int = 16
    @Flag(
        help: """
            Rotate the model first (an equivalent model without outlier columns; not adopted, see the README): the \
            residual stream by a random orthogonal matrix, norms folded into the layers, each value head by \
            another; the head is untied.
            """)
    var rotate = false
    @Option(help: "With --rotate: the residual rotation's block size (default: the whole hidden size).")
    var rotationBlock: Int?
    @Option(
        help: """
            AWQ-style channel scaling before quantization (not adopted, see the README): each linear input's \
            channels scaled by E[x²]^(α/2) from the calibration text, folded into the norms, v and up.
            """)
    var channelScaling: Float?
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        // The defaults (docs/results/below-2-bits.md): lowra calibrates on the generic text with error
        // feedback, Fisher-weighted assignment of 1/2/4-bit channels and CLoQ; `--calibration
        // none` is the paper's data-free recipe, and the baselines' default.
        let calibrationPath: String?
        if let c = calibration {
            calibrationPath = c == "none" ? nil : c
        } else if method == .lowra {
            calibrationPath = try DefaultData.locate(
                DefaultData.calibration,
                hint: "quantize --method lowra calibrates on it by default; pass --calibration TEXT, or "
                    + "--calibration none for the paper's data-free recipe")
        } else {
            calibrationPath = nil
        }
        let calibrated = calibrationPath != nil
        let errorFeedback = calibrated && calibrationMethod == "gptq"
        let recipe = errorFeedback && method == .lowra  // the calibrated recipe's defaults apply
        let sensitivity = self.sensitivity ?? (recipe ? "fisher" : "none")
        let initKind = `init` ?? (method == .qlora ? "zeros" : recipe ? "cloq" : "loftq")
        guard ["loftq", "cloq", "zeros", "none"].contains(initKind) else {
            throw ValidationError("--init takes loftq, cloq, zeros or none")
        }
        guard ["gptq", "diag"].contains(calibrationMethod) else {
            throw ValidationError("--calibration-method takes gptq or diag")
        }
        guard damping > 0, damping.isFinite else { throw ValidationError("--damping must be positive") }
        if refitLevels && !errorFeedback {
            throw ValidationError("--refit-levels needs --calibration TEXT with --calibration-method gptq")
        }
        guard ["fisher", "none"].contains(sensitivity) else {
            throw ValidationError("--sensitivity takes fisher or none")
        }
        if sensitivity == "fisher" && !calibrated {
            throw LowRAError(.invalidArgument, "--sensitivity fisher needs --calibration (the text it is measured on)")
        }
        if channelScaling != nil && !calibrated {
            throw LowRAError(.invalidArgument, "--channel-scaling needs --calibration (the text it is measured on)")
        }
        if let b = rotationBlock, !rotate || b < 1 {
            throw ValidationError("--rotation-block takes a positive size, with --rotate")
        }
        var sensitivitySeconds: Double?
        if initKind == "cloq" && !errorFeedback {
            throw LowRAError(.invalidArgument, "--init cloq needs --calibration (with --calibration-method gptq)")
        }
        guard loftqSteps >= 1 else { throw ValidationError("--loftq-steps must be positive") }
        var request = QuantizeRequest(method: method, bits: bits)
        if let s = precisions {
            let ps = s.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !ps.isEmpty, ps.allSatisfy({ [1, 2, 4].contains($0) }) else {
                throw ValidationError("--precisions takes values from 1,2,4")
            }
            request.options.precisions = Array(Set(ps)).sorted()
        } else if sensitivity == "fisher" && precisionMap == nil {
            // The Fisher keeps 1-bit channels out of the layers that hurt: mixing pays at every budget.
            request.options.precisions = [1, 2, 4]
        }
        if let c = codebook { request.options.scope = c }
        if let n = lloydIters {
            guard n >= 0 else { throw ValidationError("--lloyd-iters must not be negative") }
            request.options.lloydIterations = n
        }
        if method != .lowra && (codebook != nil || (lloydIters ?? 0) > 0) {
            throw ValidationError("--codebook and --lloyd-iters apply to --method lowra only")
        }
        request.options.weighting = weighting
        request.options.doubleQuant = !noDoubleQuant
        request.assigner = assigner
        request.seed = seed
        if let path = precisionMap { request.precisionMap = try PrecisionMap.read(path) }
        guard [4, 8, 16].contains(headBits) else {
            throw LowRAError(.invalidArgument, "--head-bits takes 4, 8 or 16, got \(headBits)")
        }
        let lock = try OutputLock(out)
        defer { withExtendedLifetime(lock) {} }
        var loaded = try modelOptions.load()
        if rotate || channelScaling != nil {
            // Both hold every layer in fp32.
            let bytes = 4 * loaded.model.weights.parameterCount
            guard UInt64(bytes) <= ProcessInfo.processInfo.physicalMemory / 2 else {
                throw LowRAError(
                    .invalidArgument,
                    "--rotate and --channel-scaling hold the model in fp32 (\(bytes >> 20) MB), more than half "
                        + "of this machine's memory")
            }
        }
        if rotate {
            let rotation = ResidualRotation(seed: seed, block: rotationBlock)
            let (w, c) = try rotation.apply(to: loaded.model.weights, config: loaded.config)
            loaded.model = try LlamaModel(config: c, weights: w)
            request.transform = rotation.description
        }
        if headBits != 16 {
            guard loaded.config.hiddenSize % 32 == 0 else {
                throw LowRAError(
                    .invalidArgument,
                    "--head-bits \(headBits) writes blocks of 32 values; hidden size \(loaded.config.hiddenSize) "
                        + "is not a multiple of 32"
                )
            }
            request.headEncoding = headBits == 8 ? .q8_0 : .q4_0
        }
        guard loaded.quantManifest == nil else {
            throw LowRAError(
                .invalidArgument, "\(modelOptions.model) is already quantized; quantize the original model")
        }
        var adapter: LoRAAdapter?
        if initKind != "none" {
            // Validates rank and alpha.
            adapter = try LoRAAdapter(
                config: loaded.config, rank: rank ?? LoRAAdapter.defaultRank(loaded.config), alpha: alpha)
            if initKind == "loftq" || initKind == "cloq" {
                request.loftq = LoftQRequest(
                    rank: adapter!.rank, alpha: adapter!.alpha, steps: loftqSteps, calibrated: initKind == "cloq")
            }
        }
        if let path = calibrationPath {
            let tokens = Array(loaded.tokenizer.encode(try readText(path)).prefix(calibrationTokens))
            request.calibration = try CalibrationRequest(
                config: loaded.config, tokens: tokens, window: min(512, tokens.count, loaded.config.maxPositions),
                source: (path as NSString).lastPathComponent)
            if let a = channelScaling {
                let m = try loaded.model.weights.inputSecondMoments(request.calibration!)
                let scaling = ChannelScaling(alpha: [.attention: a, .mlp: a, .output: a, .down: a])
                let w = scaling.apply(to: loaded.model.weights, config: loaded.config, secondMoments: m)
                loaded.model = try LlamaModel(config: loaded.config, weights: w)
                request.transform = [request.transform, scaling.description].compactMap { $0 }.joined(separator: ", ")
            }
            request.calibration!.errorFeedback = calibrationMethod == "gptq"
            request.calibration!.damping = damping
            request.calibration!.refitLevels = refitLevels
            if sensitivity == "fisher" {
                let bar = ProgressBar("fisher ")
                let t0 = Date()
                request.sensitivity = try outputSensitivity(
                    config: loaded.config, weights: loaded.model.weights, tokens: tokens,
                    seq: min(256, tokens.count - 1, loaded.config.maxPositions)
                ) { bar.update($0, $1) }
                sensitivitySeconds = Date().timeIntervalSince(t0)
            }
        }
        let bars = [
            "analyze": ProgressBar("analyze"), "assign": ProgressBar("assign "), "pack": ProgressBar("pack   "),
        ]
        // Pass 1 (analyze every layer) and the assignment, then pass 2 packs each layer while it is
        // written into the output: the packed model is never held whole.
        let plan = try loaded.model.weights.quantizationPlan(request) { stage, done, total in
            bars[stage]?.update(done, total)
        }
        let sourceSHA256 = try fingerprint(modelOptions.model)
        var finished: QuantManifest?
        let loftq = try QuantizedModelStore.saveStreaming(
            to: out, config: loaded.config, weights: loaded.model.weights, tokenizer: loaded.tokenizer, plan: plan,
            progress: { bars["pack"]?.update($0, $1) }
        ) { report in
            finished = QuantManifest(source: modelOptions.model, sourceSHA256: sourceSHA256, report: report)
            return finished!
        }
        let manifest = finished!
        let report = manifest.report
        // The whole file, embedding and head included, per parameter of the model.
        let fileBytes =
            (try? FileManager.default.attributesOfItem(
                atPath: (out as NSString).appendingPathComponent("model.safetensors"))[
                    .size] as? Int) ?? 0
        let fileBits = Double(fileBytes * 8) / Double(loaded.model.weights.parameterCount)
        let headLinear = loaded.model.weights.outputHead
        let headValues = headLinear.outFeatures * headLinear.inFeatures
        let headBytes = request.headEncoding.map { headValues / 32 * $0.blockLayout!.bytes } ?? headLinear.weightBytes
        let headName = request.headEncoding?.name ?? headLinear.storedType?.name ?? "F32"
        if var adapter {
            var adapterManifest = AdapterManifest(
                baseFingerprint: try baseFingerprint(out), base: out, quantization: QuantSummary(report),
                rank: adapter.rank, alpha: adapter.alpha, initialization: initKind)
            if initKind == "loftq" || initKind == "cloq" {
                for (s, f) in zip(adapter.slots, loftq) { adapter.setFactors(s, a: f.a, b: f.b) }
                adapterManifest.loftq = report.layers.map {
                    LoftQLayerReport(
                        name: $0.name, zeroInitError: $0.zeroInitError ?? 0, loftqError: $0.loftqError ?? 0)
                }
            } else {
                adapter.initializeKaiming(seed: seed)
            }
            try AdapterStore.save(
                adapter, config: loaded.config, manifest: adapterManifest,
                to: (out as NSString).appendingPathComponent(AdapterStore.initialAdapterDirectory))
        }
        if json {
            let data = try JSONEncoder().encode(report)
            var obj = try JSONSerialization.jsonObject(with: data) as! [String: Any]
            obj["out"] = out
            obj["source_sha256"] = manifest.sourceSHA256
            obj["init"] = initKind
            obj["file_bytes"] = fileBytes
            obj["file_bits_per_param"] = fileBits
            obj["head_encoding"] = headName
            obj["head_bytes"] = headBytes
            obj["head_bits_per_param"] = Double(headBytes * 8) / Double(headValues)
            if let s = sensitivitySeconds { obj["sensitivity_seconds"] = s }
            obj["peak_rss_bytes"] = MemoryStats.current().peakResidentBytes
            if let adapter { obj["rank"] = adapter.rank }
            printJSON(obj)
            return
        }
        printLayerTable(report)
        print(
            String(
                format:
                    "model.safetensors: %.1f MB, %.3f bits/param over all %.2fM parameters "
                    + "(embedding and head included); head %@, %.2f bits/param (%.1f MB)",
                Double(fileBytes) / 1e6, fileBits, Double(loaded.model.weights.parameterCount) / 1e6, headName,
                Double(headBytes * 8) / Double(headValues), Double(headBytes) / 1e6))
        print(
            String(
                format: "phases: analyze %.1fs, assign %.1fs, pack %.1fs%@", report.phaseSeconds?["analyze"] ?? 0,
                report.phaseSeconds?["assign"] ?? 0, report.phaseSeconds?["pack"] ?? 0,
                request.calibration == nil
                    ? ""
                    : String(
                        format: " (of which calibration forwards %.1fs; %@)", report.phaseSeconds?["calibrate"] ?? 0,
                        request.calibration!.description)))
        print(
            String(
                format:
                    "%@ at %.2f bits: code %.4f bits/param, stored %.4f bits/param (%.1f MB for %.1fM quantized params), %.1fs",
                report.method.rawValue, report.targetBits, report.codeBitsPerParam, report.storedBitsPerParam,
                Double(report.storedBytes) / 1e6, Double(report.quantizedParameters) / 1e6, report.seconds))
        if let lb = report.lowerBound {
            print(
                String(
                    format: "assigner %@: total squared error %.4g, LP lower bound %.4g (gap %.2e)", report.assigner,
                    report.totalSquaredError, lb, (report.totalSquaredError - lb) / max(report.totalSquaredError, 1e-30)
                ))
        }
        if initKind == "loftq" || initKind == "cloq" {
            let z = report.layers.compactMap(\.zeroInitError)
            let q = report.layers.compactMap(\.loftqError)
            print(
                String(
                    format:
                        "%@ (rank %d, %d steps): mean relative error ‖W − Q − sBA‖/‖W‖ %.4f vs %.4f with zero init "
                        + "(%.1f%% lower); initial adapter in %@/%@",
                    initKind == "cloq" ? "CLoQ" : "LoftQ", adapter?.rank ?? 0, loftqSteps,
                    q.reduce(0, +) / Double(q.count), z.reduce(0, +) / Double(z.count),
                    100 * (1 - q.reduce(0, +) / max(z.reduce(0, +), 1e-30)), out, AdapterStore.initialAdapterDirectory))
        } else if initKind == "zeros" {
            print(
                "initial adapter (rank \(adapter?.rank ?? 0), A Kaiming-uniform, B = 0) in \(out)/\(AdapterStore.initialAdapterDirectory)"
            )
        }
        print("saved \(out)")
    }
}

func printLayerTable(_ report: QuantizeReport) {
    let loftq = report.layers.first?.loftqError != nil
    print(
        "layer".padding(toLength: 34, withPad: " ", startingAt: 0)
            + "  shape       code b/p  stored b/p  rel.err  channels 1/2/4 bit" + (loftq ? "  zero-init→LoftQ err" : "")
    )
    for l in report.layers {
        let stored = Double(l.storedBytes * 8) / Double(l.outFeatures * l.inFeatures)
        let ch = ["1", "2", "4"].map { String(l.channelsAt[$0] ?? 0) }.joined(separator: "/")
        print(
            l.name.padding(toLength: 34, withPad: " ", startingAt: 0)
                + String(
                    format: "  %4dx%-5d  %8.3f  %10.3f  %7.4f  %@", l.outFeatures, l.inFeatures, l.codeBitsPerParam,
                    stored, l.relativeError, ch)
                + (loftq ? String(format: "  %.4f → %.4f", l.zeroInitError ?? 0, l.loftqError ?? 0) : ""))
    }
}
