import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRAPipeline
import LowRAReport
import LowRATensor

/// Methods × budgets, each cell run by this same binary's quantize / eval / finetune commands
/// as child processes (so each cell's peak memory is its own), cached step by step on disk.
struct ExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment",
        abstract: "Quantize, evaluate, fine-tune and re-evaluate every (method, bit budget): the paper's Table 2.",
        discussion: """
            Methods: none (the unquantized base with the same LoRA training: the ceiling row), qlora, loftq, lowra, \
            and the ablation lowra-pa (precision assigner with NormalFloat levels, no Lloyd-Max). Calibrated \
            methods, each adding one step to the one before (all need --calibration): lowra-diag (E[x²] weighs \
            Lloyd-Max and the error table), lowra-gptq (sequential error feedback, output-error costs, LoftQ), \
            lowra-fisher (each channel's cost weighted by its output-channel Fisher, precisions 1/2/4 at every \
            budget), lowra-cloq (the calibrated low-rank fit), lowra-repair (the initial adapter distilled from the \
            unquantized model on the calibration text for --repair-steps), lowra-distill (fine-tuning adds \
            --distill-weight of KL to the unquantized model). Budgets below 2 bits \
            are recorded as unsupported for the baselines; a run whose loss turns non-finite or ends above where it \
            started is recorded as "did not converge". With --drift, every cell before and after fine-tuning is \
            compared with the unquantized base on that text (KL divergence, top-1 agreement), on more tokens the fewer \
            bits it keeps. Writes results.md (with a "which precision should I ship?" table), results.json, \
            perplexity.svg, gap.svg (× full-precision LoRA), loss.svg and drift.svg to --out after every cell; \
            --resume continues an interrupted sweep (a cell's finished steps are kept, an interrupted fine-tuning \
            continues from its checkpoint).
            """)

    @Option(help: "The full-precision model (GGUF file or Hugging Face directory).") var model: String
    @Option(name: .customLong("methods"), help: "Comma-separated methods (default: none,qlora,loftq,lowra).")
    var methodsArg: String?
    @Option(
        name: .customLong("bits"),
        help: "Comma-separated bit budgets (default: 4,3,2.5,2.25,2,1.9,1.8,1.75,1.5; --quick: 2,1.5).")
    var bitsArg: String?
    @Option(help: "Training text (or .jsonl).") var train: String
    @Option(help: "Validation text (or .jsonl), for the loss during fine-tuning.") var valid: String
    @Option(help: "Test text for the perplexity table.") var test: String
    @Option(name: .customLong("steps"), help: "Fine-tuning steps per cell (default: 100; --quick: 10).") var stepsArg:
        Int?
    @Option(help: "LoRA rank.") var rank: Int = 16
    @Option(help: "Tokens per sequence (also the evaluation window).") var seq: Int = 256
    @Option(help: "Sequences per step.") var batch: Int = 2
    @Option(help: "Peak learning rate.") var lr: Double = 1e-3
    @Option(
        name: .customLong("eval-tokens"),
        help: "Evaluate on the first N tokens of --test (default: 8192; --quick: 1024).")
    var evalTokensArg: Int?
    @Option(
        help: """
            A text of another domain: measure every cell's drift from the unquantized base there (KL, top-1 \
            agreement).
            """
    )
    var drift: String?
    @Option(
        name: .customLong("drift-tokens"),
        help: """
            Drift tokens for the fp32 and 4-bit cells; a cell at b bits gets N × 4 / b: fewer bits, more testing \
            (default: 2048; --quick: 512).
            """
    )
    var driftTokensArg: Int?
    @Option(help: "Generic calibration text of the calibrated methods (lowra-diag … lowra-distill).")
    var calibration: String?
    @Option(help: "Tokens of the calibration text.") var calibrationTokens: Int = 4096
    @Option(help: "Repair steps of lowra-repair and lowra-distill.") var repairSteps: Int = 40
    @Option(help: "Distillation weight of lowra-distill's fine-tuning.") var distillWeight: Double = 0.5
    @Option(help: "Seed (data order, fresh adapters, K-Means).") var seed: UInt64 = 0
    @Option(help: "Output directory.") var out: String = "runs/experiment"
    @Flag(help: "Continue the sweep in --out, keeping finished cells.") var resume = false
    @Flag(
        help: """
            A short profile for a first look (about 10 minutes on 2 cores): none, qlora, loftq, lowra at 2 and 1.5 \
            bits, 10 steps, small evaluations. Options given explicitly still apply.
            """
    )
    var quick = false

    var methods: String { methodsArg ?? "none,qlora,loftq,lowra" }
    var bits: String { bitsArg ?? (quick ? "2,1.5" : "4,3,2.5,2.25,2,1.9,1.8,1.75,1.5") }
    var steps: Int { stepsArg ?? (quick ? 10 : 100) }
    var evalTokens: Int { evalTokensArg ?? (quick ? 1024 : 8192) }
    var driftTokens: Int { driftTokensArg ?? (quick ? 512 : 2048) }

    static let knownMethods = [
        "none", "qlora", "loftq", "lowra", "lowra-pa", "lowra-diag", "lowra-gptq", "lowra-fisher", "lowra-cloq",
        "lowra-repair", "lowra-distill",
    ]
    static let calibratedMethods: Set = [
        "lowra-diag", "lowra-gptq", "lowra-fisher", "lowra-cloq", "lowra-repair", "lowra-distill",
    ]

    func run() throws {
        let methodList = methods.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !methodList.isEmpty, let bad = Optional(methodList.filter { !Self.knownMethods.contains($0) }),
            bad.isEmpty
        else {
            throw ValidationError("--methods takes \(Self.knownMethods.joined(separator: ", "))")
        }
        let budgets = try bits.split(separator: ",").map { s -> Double in
            guard let b = Double(s.trimmingCharacters(in: .whitespaces)), b >= 1, b <= 4 else {
                throw ValidationError("--bits takes budgets between 1 and 4, got \(s)")
            }
            return b
        }
        guard steps >= 1, rank >= 1, seq >= 2, batch >= 1, evalTokens >= 2, lr > 0 else {
            throw ValidationError("--steps, --rank, --batch must be positive, --seq and --eval-tokens at least 2")
        }
        guard driftTokens >= 2 else { throw ValidationError("--drift-tokens must be at least 2") }
        let calibrated = !Self.calibratedMethods.isDisjoint(with: methodList)
        if calibrated && calibration == nil {
            throw LowRAError(.invalidArgument, "the calibrated methods need --calibration (a generic text)")
        }
        guard calibrationTokens >= 2, repairSteps >= 1, distillWeight > 0, distillWeight <= 1 else {
            throw ValidationError("--calibration-tokens, --repair-steps must be positive, --distill-weight in (0, 1]")
        }
        if let d = drift, d.lowercased().hasSuffix(".jsonl") {
            throw ValidationError("--drift takes a plain text file")
        }
        // Fail early on a missing or empty file.
        for f in [train, valid, test] + (drift.map { [$0] } ?? []) { _ = try readText(f) }
        guard FileManager.default.fileExists(atPath: model) else {
            throw LowRAError(.io, "\(model): no such file or directory")
        }
        var spec = ExperimentSpec(
            model: model, train: train, valid: valid, test: test, methods: methodList, bits: budgets, steps: steps,
            rank: rank,
            seq: seq, batch: batch, lr: lr, seed: seed, evalTokens: evalTokens, drift: drift,
            driftTokens: drift == nil ? nil : driftTokens)
        if calibrated {
            (spec.calibration, spec.calibrationTokens) = (calibration, calibrationTokens)
            if !Set(["lowra-repair", "lowra-distill"]).isDisjoint(with: methodList) { spec.repairSteps = repairSteps }
            if methodList.contains("lowra-distill") { spec.distillWeight = distillWeight }
        }

        let lock = try OutputLock(out)
        defer { withExtendedLifetime(lock) {} }
        let fm = FileManager.default
        func p(_ f: String) -> String { (out as NSString).appendingPathComponent(f) }
        let specFile = p("experiment.json")
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        if fm.fileExists(atPath: specFile) {
            guard resume else {
                throw LowRAError(
                    .invalidArgument,
                    "\(out) already holds an experiment; pass --resume to continue it or choose another --out")
            }
            let old = try JSONDecoder().decode(ExperimentSpec.self, from: try mapFile(specFile))
            var a = old, b = spec
            // The grid and the drift check may grow or change; the recipe may not.
            (a.methods, a.bits, b.methods, b.bits) = ([], [], [], [])
            (a.drift, a.driftTokens, b.drift, b.driftTokens) = (nil, nil, nil, nil)
            // Settings only some methods use may appear when those methods join the grid.
            if a.calibration == nil || b.calibration == nil {
                (a.calibration, a.calibrationTokens, b.calibration, b.calibrationTokens) = (nil, nil, nil, nil)
            }
            if a.repairSteps == nil || b.repairSteps == nil { (a.repairSteps, b.repairSteps) = (nil, nil) }
            if a.distillWeight == nil || b.distillWeight == nil { (a.distillWeight, b.distillWeight) = (nil, nil) }
            guard a == b else {
                throw LowRAError(
                    .invalidArgument, "\(out) holds an experiment with other settings (\(specFile)); use another --out")
            }
        }
        try fm.createDirectory(atPath: p("cells"), withIntermediateDirectories: true)
        try writeAtomically(try enc.encode(spec), to: specFile)

        var grid = [(String, Double?)]()
        for m in methodList {
            if m == "none" { grid.append((m, nil)) } else { grid += budgets.map { (m, $0) } }
        }
        var cells = [ExperimentCell]()
        for (i, (method, b)) in grid.enumerated() {
            var cell = ExperimentCell(method: method, bits: b, status: .ok)
            printErr("[\(i + 1)/\(grid.count)] \(cell.id)")
            cell = try runCell(cell, spec: spec, dir: p("cells/\(cell.id)"))
            cells.append(cell)
            try writeReport(spec: spec, cells: cells)
            let after =
                cell.after.map {
                    String(format: "perplexity %.2f → %.2f", cell.before?.perplexity ?? .nan, $0.perplexity)
                } ?? ""
            printErr("    \(cell.status.rawValue) \(after)\(cell.note.map { " (\($0))" } ?? "")")
        }
        print(try String(contentsOfFile: p("results.md"), encoding: .utf8))
    }

    private func writeReport(spec: ExperimentSpec, cells: [ExperimentCell]) throws {
        func p(_ f: String) -> String { (out as NSString).appendingPathComponent(f) }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let command = (["lowra"] + CommandLine.arguments.dropFirst()).map { a in
            a.contains(" ") || a.isEmpty ? "'\(a)'" : a
        }.joined(separator: " ")
        let machine = MachineInfo.describe()
        try writeAtomically(
            try enc.encode(ExperimentResults(spec: spec, command: command, machine: machine, cells: cells)),
            to: p("results.json"))
        let provenance = ["Command (run or resumed last): `\(command)`", "Machine: \(machine)"]
        try writeAtomically(
            Data(ExperimentReport.markdown(spec: spec, cells: cells, provenance: provenance).utf8), to: p("results.md"))
        try writeAtomically(
            Data(ExperimentReport.perplexityPlot(spec: spec, cells: cells).utf8), to: p("perplexity.svg"))
        try writeAtomically(Data(ExperimentReport.lossPlot(cells: cells).utf8), to: p("loss.svg"))
        try writeAtomically(
            Data(ExperimentReport.gapPlot(runs: [(spec.model, spec, cells)]).utf8), to: p("gap.svg"))
        if spec.drift != nil {
            try writeAtomically(Data(ExperimentReport.driftPlot(spec: spec, cells: cells).utf8), to: p("drift.svg"))
        }
    }

    // MARK: - One cell

    private struct Step {
        let status: Int32
        /// The step's JSON object, as cached (nil when it failed).
        let data: Data?
        let lastError: String?
        let seconds: Double

        /// The step's JSON as `T` (nil when the step failed or printed something else).
        func output<T: Decodable>(_: T.Type) -> T? { data.flatMap { try? JSONDecoder().decode(T.self, from: $0) } }
    }

    /// Runs `lowra args` with stdout captured (its JSON) and stderr appended to `log`; the JSON is
    /// also cached in `cache`, so a finished step is not run again. With `sameArgs`, a cached
    /// result counts only if it was made by the same arguments.
    private func step(_ args: [String], cache: String, log: String, sameArgs: Bool = false) throws -> Step {
        let line = args.joined(separator: " ")
        if let data = FileManager.default.contents(atPath: cache),
            let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            !sameArgs || obj["_args"] as? String == line
        {
            return Step(status: 0, data: data, lastError: nil, seconds: obj["_seconds"] as? Double ?? 0)
        }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let proc = Process()
        proc.executableURL = URL(fileURLWithPath: exe)
        proc.arguments = args
        let outPipe = Pipe()
        proc.standardOutput = outPipe
        if !FileManager.default.fileExists(atPath: log) {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
        }
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        logHandle.seekToEndOfFile()
        logHandle.write(Data(("$ lowra " + args.joined(separator: " ") + "\n").utf8))
        proc.standardError = logHandle
        let t0 = Date()
        try proc.run()
        let data = outPipe.fileHandleForReading.readDataToEndOfFile()
        proc.waitUntilExit()
        try logHandle.close()
        let seconds = Date().timeIntervalSince(t0)
        guard proc.terminationStatus == 0 else {
            let text = String(decoding: FileManager.default.contents(atPath: log) ?? Data(), as: UTF8.self)
            let last = text.split(separator: "\n").last { $0.hasPrefix("Error:") }.map(String.init)
            return Step(
                status: proc.terminationStatus, data: nil, lastError: last ?? "exit status \(proc.terminationStatus)",
                seconds: seconds)
        }
        guard var obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            return Step(status: 1, data: nil, lastError: "lowra \(args[0]) printed no JSON", seconds: seconds)
        }
        obj["_seconds"] = seconds
        obj["_args"] = line
        let cached = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
        try writeAtomically(cached, to: cache)
        return Step(status: 0, data: cached, lastError: nil, seconds: seconds)
    }

    private func runCell(_ start: ExperimentCell, spec: ExperimentSpec, dir: String) throws -> ExperimentCell {
        var cell = start
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func p(_ f: String) -> String { (dir as NSString).appendingPathComponent(f) }
        let log = p("log.txt")
        var rss = 0
        /// A step that failed: did not converge when the child said training diverged (its exit
        /// status), else failed.
        func failed(_ s: Step) -> ExperimentCell {
            cell.status = s.status == LowRAError.divergedExitStatus ? .didNotConverge : .failed
            cell.note = s.lastError
            return cell
        }
        /// One `lowra eval --json` step: its output, or nil with the cell marked failed.
        func evalStep(_ args: [String], _ name: String, sameArgs: Bool = false) throws -> EvalStepOutput? {
            let s = try step(["eval"] + args, cache: p("\(name).json"), log: log, sameArgs: sameArgs)
            cell.seconds[name] = s.seconds
            guard let out = s.output(EvalStepOutput.self) else {
                cell.status = .failed
                cell.note = "\(name): \(s.lastError ?? "no evaluation in the output")"
                return nil
            }
            rss = max(rss, out.peakRSSBytes ?? 0)
            return out
        }
        func eval(_ modelPath: String, _ extra: [String], _ name: String) throws -> EvalNumbers? {
            try evalStep(
                [
                    "--model", modelPath, "--data", test, "--max-tokens", String(evalTokens), "--context", String(seq),
                    "--json",
                ] + extra, name)?.numbers
        }
        /// Drift from the unquantized base on the drift text (.some(nil) when the sweep has none; nil on failure).
        func driftCheck(_ modelPath: String, _ extra: [String], _ name: String) throws -> DriftNumbers?? {
            guard let text = spec.drift, let n = spec.driftTokens(bits: cell.bits) else { return .some(nil) }
            guard
                let j = try evalStep(
                    [
                        "--model", modelPath, "--data", text, "--max-tokens", String(n), "--context", String(seq),
                        "--reference", model, "--json",
                    ] + extra, name, sameArgs: true)
            else { return nil }
            guard let kl = j.klDivergence, let top1 = j.top1Agreement else {
                cell.status = .failed
                cell.note = "\(name): no KL divergence in the output"
                return nil
            }
            return .some(DriftNumbers(kl: kl, top1: top1, perplexity: j.perplexity, tokens: j.tokens))
        }

        // 1. Quantize (with the method's initial adapter).
        var base = model
        if let b = cell.bits {
            let recipe = cellRecipe(cell.method, bits: b, spec: spec)
            do {
                try QuantizationRecipe.checkBudget(method: recipe.method, bits: b)
            } catch RecipeError.baselineBelowTwoBits(let method) {
                cell.status = .unsupported
                cell.note = RecipeError.noBudgetBelowTwo(method)
                return cell
            }
            let q = p("model")
            let args = ["quantize", "--model", model, "--out", q, "--json"] + recipe.quantizeArguments
            let s = try step(args, cache: p("quantize.json"), log: log)
            cell.seconds["quantize"] = s.seconds
            guard let j = s.output(QuantizeReport.self) else { return failed(s) }
            cell.codeBitsPerParam = j.codeBitsPerParam
            cell.storedBitsPerParam = j.storedBitsPerParam
            base = q
        }

        // 1b. The generic repair: the initial adapter distilled from the unquantized model.
        var start = [String]()
        if ["lowra-repair", "lowra-distill"].contains(cell.method) {
            let repaired = p("repair")
            let s = try step(
                [
                    "finetune", "--model", base, "--train", spec.calibration!, "--out", repaired, "--distill-weight",
                    "1",
                    "--steps", String(spec.repairSteps!), "--batch", String(batch), "--seq", String(seq),
                    "--lr", String(lr),
                    "--seed", String(seed), "--save-every", String(max(10, spec.repairSteps! / 4)), "--resume",
                    "--json",
                ],
                cache: p("repair.json"), log: log)
            cell.seconds["repair"] = s.seconds
            guard s.data != nil else { return failed(s) }
            start = ["--adapter", repaired]
        }

        // 2. Before fine-tuning, 3. fine-tune, 4. after.
        guard let before = try eval(base, start, "eval_before") else { return cell }
        cell.before = before
        guard let driftBefore = try driftCheck(base, start, "drift_before") else { return cell }
        cell.driftBefore = driftBefore
        let adapter = p("adapter")
        var ftArgs = [
            "finetune", "--model", base, "--train", train, "--valid", valid, "--out", adapter, "--steps", String(steps),
            "--batch", String(batch), "--seq", String(seq), "--lr", String(lr), "--seed", String(seed),
            "--save-every", String(max(10, steps / 10)), "--resume", "--json",
        ]
        if cell.bits == nil { ftArgs += ["--rank", String(rank)] }
        ftArgs += start
        if cell.method == "lowra-distill" { ftArgs += ["--distill-weight", String(spec.distillWeight!)] }
        let ft = try step(ftArgs, cache: p("finetune.json"), log: log)
        cell.seconds["finetune"] = ft.seconds
        guard let j = ft.output(FinetuneStepOutput.self) else { return failed(ft) }
        rss = max(rss, j.peakRSSBytes ?? 0)
        cell.validLossBefore = j.validLossBefore
        cell.validLossAfter = j.validLossAfter
        if let csv = try? String(
            contentsOfFile: (adapter as NSString).appendingPathComponent("train_log.csv"), encoding: .utf8)
        {
            cell.lossCurve = csv.split(separator: "\n").dropFirst().compactMap { line in
                let f = line.split(separator: ",", omittingEmptySubsequences: false)
                guard f.count > 2, let step = Double(f[0]), let loss = Double(f[2]) else { return nil }
                return [step, loss]
            }
        }
        guard let after = try eval(base, ["--adapter", adapter], "eval_after") else { return cell }
        cell.after = after
        guard let driftAfter = try driftCheck(base, ["--adapter", adapter], "drift_after") else { return cell }
        cell.driftAfter = driftAfter
        cell.peakRSSBytes = rss
        if let b = cell.validLossBefore, let a = cell.validLossAfter, a > b {
            cell.status = .didNotConverge
            cell.note = String(format: "validation loss rose from %.3f to %.3f", b, a)
        }
        return cell
    }

    /// The quantization recipe of a cell: every choice spelled out, so the data-free rows stay
    /// data-free whatever `quantize`'s defaults, and each calibrated step adds one to the one before.
    private func cellRecipe(_ method: String, bits: Double, spec: ExperimentSpec) -> QuantizationRecipe {
        var r = QuantizationRecipe(method: .lowra, bits: bits)
        (r.rank, r.seed) = (rank, seed)
        switch method {
        case "qlora", "loftq", "lowra-pa", "lowra":
            r.calibration = .dataFree
            r.method = method == "qlora" ? .qlora : method == "loftq" ? .loftq : .lowra
            r.initialization = method == "qlora" ? .zeros : .loftq
            if method == "lowra-pa" { r.lloydIterations = 0 }
        default:
            r.calibration = .text(spec.calibration!)
            r.calibrationTokens = spec.calibrationTokens!
            switch method {
            case "lowra-diag":
                (r.calibrationMethod, r.sensitivity, r.initialization) = (
                    .diag, QuantizationRecipe.Sensitivity.none, .loftq
                )
            case "lowra-gptq": (r.sensitivity, r.initialization) = (QuantizationRecipe.Sensitivity.none, .loftq)
            case "lowra-fisher": (r.precisions, r.sensitivity, r.initialization) = ([1, 2, 4], .fisher, .loftq)
            default: (r.precisions, r.sensitivity, r.initialization) = ([1, 2, 4], .fisher, .cloq)
            }
        }
        return r
    }
}
