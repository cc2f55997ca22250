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
extension QuantizationRecipe.Preset: ExpressibleByArgument {}

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize", abstract: "Quantize a model's linear layers to a bit budget and store them packed.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "lowra | qlora | loftq.") var method: QuantMethod = .lowra
    @Option(help: "Budget in code bits per quantized parameter, e.g. 1.75.") var bits: Double
    @Option(help: "Output directory.") var out: String
    @Option(
        help: """
            fast: the paper's data-free recipe with 3 LoftQ steps (seconds) | standard: the calibrated recipe \
            (default) | thorough: the calibrated recipe at full effort (all calibration tokens everywhere, exact error \
            tables, 5 CLoQ steps). Flags below override the preset's choices.
            """)
    var preset: QuantizationRecipe.Preset = .standard
    @Option(help: "Codebook scope: channel (default) | tensor (lowra; the baselines use NormalFloat levels).")
    var codebook: CodebookScope?
    @Option(help: "Allowed precisions, e.g. 1,2,4 (default: 1,2,4 with the Fisher or below 2 bits, else 2,4).")
    var precisions: String?
    @Option(help: "Weighted Lloyd-Max iterations (lowra; 0 keeps NormalFloat levels).") var lloydIters: Int?
    @Option(help: "Lloyd-Max point weight: absmax (the paper) | absmax2.") var weighting: LloydWeighting = .absmax
    @Option(
        help: """
            Precision assigner: exact | ilp (the paper's two-level ILP) | layerwise (default: exact for lowra, \
            layerwise for the baselines).
            """
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
    @Option(help: "Tokens of the calibration text to use (whole windows of 512; default: 4096, fast 1024).")
    var calibrationTokens: Int?
    @Option(
        help: """
            Of the calibration tokens, the first ones the Fisher and the assignment's error tables read (default: \
            1024, thorough all); error feedback and CLoQ read every one.
            """)
    var analysisTokens: Int?
    @Option(
        help: """
            Rows per layer whose error feedback the assignment's error tables measure at each precision (default: \
            128, thorough all); the other rows' errors are scaled from their E[x²]-weighted errors.
            """)
    var tableRows: Int?
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
            Sweeps of discrete code refinement after error feedback (gptq): each code moved to the level that \
            lowers its row's output error through the input covariance most (0: none).
            """)
    var refineCodes: Int = 0
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
    @Option(help: "LoftQ / CLoQ alternating steps (default: 3, thorough 5; data-free LoftQ 5, fast 3).")
    var loftqSteps: Int?
    @Option(
        help: """
            Of those steps, how many (the last) quantize with error feedback; the earlier ones round to \
            the codebooks (default: all; the standard preset 1 on a model of 1B quantized parameters or more).
            """)
    var feedbackSteps: Int?
    @Option(
        help: """
            The head's encoding (the embedding when tied): 8 (Q8_0 blocks), 4 (Q4_0) or 16 \
            (keep the source's, the default).
            """
    ) var headBits: Int = 16
    @Flag(
        help: """
            Rotate the model first (an equivalent model without outlier columns; not adopted, see \
            docs/results/below-2-bits.md): the residual stream by a random orthogonal matrix, norms folded into \
            the layers, each value head by another; the head is untied.
            """)
    var rotate = false
    @Option(help: "With --rotate: the residual rotation's block size (default: the whole hidden size).")
    var rotationBlock: Int?
    @Option(
        help: """
            AWQ-style channel scaling before quantization (not adopted, see docs/results/below-2-bits.md): each \
            linear input's channels scaled by E[x²]^(α/2) from the calibration text, folded into the norms, v and up.
            """)
    var channelScaling: Float?
    @Flag(
        help: ArgumentHelp(
            "After packing, train every block's codes, scales and levels against the source on the calibration text.",
            discussion: """
                Block reconstruction with its default effort (lowra reconstruct sets it); the initial adapter \
                trains beside each block. Slower: minutes on SmolLM2-135M. See docs/results/below-2-bits.md.
                """))
    var reconstruct = false
    @Flag(help: "Print one JSON object on stdout.") var json = false

    /// The recipe these flags describe (`QuantizationRecipe` owns the defaults and the rules).
    func recipe() throws -> QuantizationRecipe {
        var r = QuantizationRecipe(method: method, bits: bits)
        r.preset = preset
        r.calibration = calibration.map { $0 == "none" ? .dataFree : .text($0) } ?? .automatic
        r.calibrationTokens = calibrationTokens
        r.analysisTokens = analysisTokens
        r.tableRows = tableRows
        guard let calibrationMethod = QuantizationRecipe.CalibrationMethod(rawValue: calibrationMethod) else {
            throw ValidationError("--calibration-method takes gptq or diag")
        }
        r.calibrationMethod = calibrationMethod
        r.damping = damping
        r.refitLevels = refitLevels
        r.refineCodes = refineCodes
        if let s = sensitivity {
            guard let v = QuantizationRecipe.Sensitivity(rawValue: s) else {
                throw ValidationError("--sensitivity takes fisher or none")
            }
            r.sensitivity = v
        }
        if let i = `init` {
            guard let v = QuantizationRecipe.Initialization(rawValue: i) else {
                throw ValidationError("--init takes loftq, cloq, zeros or none")
            }
            r.initialization = v
        }
        r.precisions = precisions.map {
            $0.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        }
        (r.codebook, r.lloydIterations, r.weighting, r.assigner) = (codebook, lloydIters, weighting, assigner)
        (r.doubleQuant, r.precisionMap, r.seed) = (!noDoubleQuant, precisionMap, seed)
        (r.rank, r.alpha, r.loftqSteps, r.headBits) = (rank, alpha, loftqSteps, headBits)
        r.feedbackSteps = feedbackSteps
        (r.rotate, r.rotationBlock, r.channelScaling) = (rotate, rotationBlock, channelScaling)
        r.reconstruct = reconstruct
        return r
    }

    func run() throws {
        let resolved: ResolvedRecipe
        do {
            resolved = try recipe().resolved {
                try DefaultData.locate(
                    DefaultData.calibration,
                    hint: "quantize --method lowra calibrates on it by default; pass --calibration TEXT, or "
                        + "--calibration none for the paper's data-free recipe")
            }
        } catch let e as RecipeError where e.isUsage {
            throw ValidationError(e.description)
        }
        // From here on the recipe, not the flags, says what to do.
        let r = resolved.recipe
        let initKind = resolved.initialization.rawValue
        var sensitivitySeconds: Double?
        let lock = try OutputLock(out)
        defer { withExtendedLifetime(lock) {} }
        var loaded = try modelOptions.load()
        if r.rotate || r.channelScaling != nil {
            // Both hold every layer in fp32.
            let bytes = 4 * loaded.model.weights.parameterCount
            guard UInt64(bytes) <= ProcessInfo.processInfo.physicalMemory / 2 else {
                throw LowRAError(
                    .invalidArgument,
                    "--rotate and --channel-scaling hold the model in fp32 (\(bytes >> 20) MB), more than half "
                        + "of this machine's memory")
            }
        }
        var transform: String?
        if r.rotate {
            let rotation = ResidualRotation(seed: r.seed, block: r.rotationBlock)
            let (w, c) = try rotation.apply(to: loaded.model.weights, config: loaded.config)
            loaded.model = try LanguageModel(config: c, weights: w)
            transform = rotation.description
        }
        guard loaded.quantManifest == nil else {
            throw LowRAError(
                .invalidArgument, "\(modelOptions.model) is already quantized; quantize the original model")
        }
        let adapter = try resolved.initialAdapter(config: loaded.config)
        var request = try resolved.request(config: loaded.config, adapter: adapter)
        request.transform = transform
        var calibrationTokens = [Int]()
        if let path = resolved.calibrationText {
            let tokens = Array(loaded.tokenizer.encode(try readText(path)).prefix(resolved.calibrationTokens))
            calibrationTokens = tokens
            request.calibration = try resolved.calibration(
                config: loaded.config, tokens: tokens, source: (path as NSString).lastPathComponent)
            if let a = r.channelScaling {
                let m = try loaded.model.weights.inputSecondMoments(request.calibration!)
                let scaling = ChannelScaling(alpha: [.attention: a, .mlp: a, .output: a, .down: a])
                let w = scaling.apply(to: loaded.model.weights, config: loaded.config, secondMoments: m)
                loaded.model = try LanguageModel(config: loaded.config, weights: w)
                request.transform = [request.transform, scaling.description].compactMap { $0 }.joined(separator: ", ")
            }
            if resolved.sensitivity == .fisher {
                let bar = ProgressBar("fisher ")
                let t0 = Date()
                request.sensitivity = try outputSensitivity(
                    config: loaded.config, weights: loaded.model.weights,
                    tokens: Array(tokens.prefix(request.calibration!.analysisTokens + 1)),
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
        if let adapter {
            var adapterManifest = AdapterManifest(
                baseFingerprint: try baseFingerprint(out), base: out, quantization: QuantSummary(report),
                rank: adapter.rank, alpha: adapter.alpha, initialization: initKind)
            let dir = (out as NSString).appendingPathComponent(AdapterStore.initialAdapterDirectory)
            if resolved.fitsAdapter {
                adapterManifest.loftq = report.layers.map {
                    LoftQLayerReport(
                        name: $0.name, zeroInitError: $0.zeroInitError ?? 0, loftqError: $0.loftqError ?? 0)
                }
                // Read back a layer at a time from where pass 2 set them aside.
                try AdapterStore.save(
                    rank: adapter.rank, alpha: adapter.alpha, config: loaded.config, manifest: adapterManifest, to: dir
                ) { try loftq.factors($0.layer * LinearKind.allCases.count + $0.kind.rawValue) }
            } else {
                var kaiming = try LoRAAdapter(config: loaded.config, rank: adapter.rank, alpha: adapter.alpha)
                kaiming.initializeKaiming(seed: r.seed)
                try AdapterStore.save(kaiming, config: loaded.config, manifest: adapterManifest, to: dir)
            }
        }
        var reconstruction: [BlockReconstructionReport]?
        if r.reconstruct {
            let bar = ProgressBar("blocks ")
            let quantized = try LoadedModel.load(out)
            reconstruction = try reconstructDirectory(
                quantized, source: loaded.model.weights, tokens: calibrationTokens,
                options: ReconstructionOptions().fitted(
                    tokenCount: calibrationTokens.count, context: loaded.config.maxPositions),
                out: out, seed: r.seed
            ) { bar.update($0.block + 1, loaded.config.numLayers) }
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
            if let reconstruction {
                let encoder = JSONEncoder()
                encoder.keyEncodingStrategy = .convertToSnakeCase
                obj["reconstruction"] = try JSONSerialization.jsonObject(with: encoder.encode(reconstruction))
            }
            printJSON(obj)
            return
        }
        printLayerTable(report)
        if let reconstruction { printReconstructionTable(reconstruction) }
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
                    "%@ at %.2f bits: code %.4f bits/param, stored %.4f bits/param (%.1f MB for %.1fM quantized "
                    + "params), %.1fs",
                report.method.rawValue, report.targetBits, report.codeBitsPerParam, report.storedBitsPerParam,
                Double(report.storedBytes) / 1e6, Double(report.quantizedParameters) / 1e6, report.seconds))
        if let lb = report.lowerBound {
            print(
                String(
                    format: "assigner %@: total squared error %.4g, LP lower bound %.4g (gap %.2e)", report.assigner,
                    report.totalSquaredError, lb, (report.totalSquaredError - lb) / max(report.totalSquaredError, 1e-30)
                ))
        }
        if resolved.fitsAdapter {
            let z = report.layers.compactMap(\.zeroInitError)
            let q = report.layers.compactMap(\.loftqError)
            print(
                String(
                    format:
                        "%@ (rank %d, %d steps): mean relative error ‖W − Q − sBA‖/‖W‖ %.4f vs %.4f with zero init "
                        + "(%.1f%% lower); initial adapter in %@/%@",
                    resolved.initialization == .cloq ? "CLoQ" : "LoftQ", adapter?.rank ?? 0, resolved.loftqSteps,
                    q.reduce(0, +) / Double(q.count), z.reduce(0, +) / Double(z.count),
                    100 * (1 - q.reduce(0, +) / max(z.reduce(0, +), 1e-30)), out, AdapterStore.initialAdapterDirectory))
        } else if resolved.initialization == .zeros {
            print(
                "initial adapter (rank \(adapter?.rank ?? 0), A Kaiming-uniform, B = 0) in "
                    + "\(out)/\(AdapterStore.initialAdapterDirectory)"
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

extension QuantizationRecipe {
    /// The `lowra quantize` flags that describe this recipe — the inverse of
    /// `QuantizeCommand.recipe()` — with every choice the recipe makes spelled out.
    var quantizeArguments: [String] {
        var a = ["--method", method.rawValue, "--bits", String(bits)]
        switch calibration {
        case .automatic: break
        case .dataFree: a += ["--calibration", "none"]
        case .text(let path): a += ["--calibration", path]
        }
        if preset != .standard { a += ["--preset", preset.rawValue] }
        if let n = calibrationTokens { a += ["--calibration-tokens", String(n)] }
        if let n = analysisTokens { a += ["--analysis-tokens", String(n)] }
        if let n = tableRows { a += ["--table-rows", String(n)] }
        if calibrationMethod != .gptq { a += ["--calibration-method", calibrationMethod.rawValue] }
        if damping != 0.01 { a += ["--damping", String(damping)] }
        if refitLevels { a.append("--refit-levels") }
        if refineCodes > 0 { a += ["--refine-codes", String(refineCodes)] }
        if let s = sensitivity { a += ["--sensitivity", s.rawValue] }
        if let p = precisions { a += ["--precisions", p.map(String.init).joined(separator: ",")] }
        if let c = codebook { a += ["--codebook", c.rawValue] }
        if let n = lloydIterations { a += ["--lloyd-iters", String(n)] }
        if weighting != .absmax { a += ["--weighting", weighting.rawValue] }
        if let k = assigner { a += ["--assigner", k.rawValue] }
        if !doubleQuant { a.append("--no-double-quant") }
        if let m = precisionMap { a += ["--precision-map", m] }
        if let i = initialization { a += ["--init", i.rawValue] }
        if let r = rank { a += ["--rank", String(r)] }
        if let x = alpha { a += ["--alpha", String(x)] }
        if let n = loftqSteps { a += ["--loftq-steps", String(n)] }
        if let n = feedbackSteps { a += ["--feedback-steps", String(n)] }
        if headBits != 16 { a += ["--head-bits", String(headBits)] }
        if rotate { a.append("--rotate") }
        if reconstruct { a.append("--reconstruct") }
        if let b = rotationBlock { a += ["--rotation-block", String(b)] }
        if let x = channelScaling { a += ["--channel-scaling", String(x)] }
        return a + ["--seed", String(seed)]
    }
}
