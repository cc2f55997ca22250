import Foundation

/// Perplexity and next-token accuracy of one evaluation.
public struct EvalNumbers: Codable, Sendable, Equatable {
    public var perplexity: Double
    public var accuracy: Double
    public var tokens: Int

    public init(perplexity: Double, accuracy: Double, tokens: Int) {
        self.perplexity = perplexity
        self.accuracy = accuracy
        self.tokens = tokens
    }
}

/// How far a model's next-token distribution is from the unquantized base's on a text of
/// another domain: the regression check against the base's general abilities.
public struct DriftNumbers: Codable, Sendable, Equatable {
    /// Mean KL(base ‖ model) in nats per predicted token.
    public var kl: Double
    /// Fraction of positions where both models' most likely next token agree.
    public var top1: Double
    /// The model's own perplexity on the drift text.
    public var perplexity: Double
    public var tokens: Int

    public init(kl: Double, top1: Double, perplexity: Double, tokens: Int) {
        self.kl = kl
        self.top1 = top1
        self.perplexity = perplexity
        self.tokens = tokens
    }
}

/// One (method, budget) cell of an experiment, as cached on disk.
public struct ExperimentCell: Codable, Sendable {
    public enum Status: String, Codable, Sendable {
        case ok
        case unsupported
        case didNotConverge = "did not converge"
        case failed
    }

    public var method: String
    /// Code bits per quantized parameter asked for; nil for the unquantized base ("none").
    public var bits: Double?
    public var status: Status
    public var note: String?
    public var codeBitsPerParam: Double?
    public var storedBitsPerParam: Double?
    public var before: EvalNumbers?
    public var after: EvalNumbers?
    public var validLossBefore: Double?
    public var validLossAfter: Double?
    /// Drift from the unquantized base on the spec's drift text, before and after fine-tuning.
    public var driftBefore: DriftNumbers?
    public var driftAfter: DriftNumbers?
    /// (step, training loss) of the fine-tuning run.
    public var lossCurve: [[Double]]?
    /// The largest peak resident set of the cell's processes (quantize, eval, fine-tune).
    public var peakRSSBytes: Int?
    /// Wall time of each phase in seconds: quantize, eval_before, finetune, eval_after.
    public var seconds: [String: Double]

    public init(method: String, bits: Double?, status: Status) {
        self.method = method
        self.bits = bits
        self.status = status
        seconds = [:]
    }

    public var id: String { bits.map { "\(method)-\(ExperimentReport.bitsLabel($0))" } ?? method }
    public var wallSeconds: Double { seconds.values.reduce(0, +) }

    enum CodingKeys: String, CodingKey {
        case method, bits, status, note, codeBitsPerParam = "code_bits_per_param", storedBitsPerParam =
            "stored_bits_per_param"
        case before, after, validLossBefore = "valid_loss_before", validLossAfter = "valid_loss_after", lossCurve =
            "loss_curve"
        case driftBefore = "drift_before", driftAfter = "drift_after"
        case peakRSSBytes = "peak_rss_bytes", seconds
    }
}

/// What the experiment ran: recorded in results.json and at the top of results.md.
/// What `lowra experiment` writes to results.json: the sweep, the command that ran it (or resumed
/// it last), the machine and every cell.
public struct ExperimentResults: Codable, Sendable {
    public var spec: ExperimentSpec
    public var command: String
    public var machine: String
    public var cells: [ExperimentCell]

    public init(spec: ExperimentSpec, command: String, machine: String, cells: [ExperimentCell]) {
        (self.spec, self.command, self.machine, self.cells) = (spec, command, machine, cells)
    }
}

public struct ExperimentSpec: Codable, Sendable, Equatable {
    public var model: String
    public var train: String
    public var valid: String
    public var test: String
    public var methods: [String]
    public var bits: [Double]
    public var steps: Int
    public var rank: Int
    public var seq: Int
    public var batch: Int
    public var lr: Double
    public var seed: UInt64
    public var evalTokens: Int
    /// A text of another domain on which every cell's drift from the unquantized base is measured.
    public var drift: String?
    /// Drift tokens for a 4-bit cell; a cell at b bits is tested on `driftTokens(bits:)`.
    public var driftTokens: Int?
    /// The generic calibration text of the calibrated methods (lowra-diag … lowra-distill), its
    /// tokens, the repair's steps on it and the distillation weight of lowra-distill's fine-tuning.
    public var calibration: String?
    public var calibrationTokens: Int?
    public var repairSteps: Int?
    public var distillWeight: Double?

    public init(
        model: String, train: String, valid: String, test: String, methods: [String], bits: [Double], steps: Int,
        rank: Int,
        seq: Int, batch: Int, lr: Double, seed: UInt64, evalTokens: Int, drift: String? = nil, driftTokens: Int? = nil
    ) {
        self.model = model
        self.train = train
        self.valid = valid
        self.test = test
        self.methods = methods
        self.bits = bits
        self.steps = steps
        self.rank = rank
        self.seq = seq
        self.batch = batch
        self.lr = lr
        self.seed = seed
        self.evalTokens = evalTokens
        self.drift = drift
        self.driftTokens = driftTokens
    }

    /// The testing budget moves with the precision budget: a cell kept at b bits is checked for
    /// drift on driftTokens × 4 / b tokens (the unquantized and 4-bit cells on driftTokens),
    /// rounded up to whole windows of `seq`.
    public func driftTokens(bits: Double?) -> Int? {
        guard let n = driftTokens else { return nil }
        let scaled = Double(n) * 4 / min(4, bits ?? 4)
        return Int((scaled / Double(seq)).rounded(.up)) * seq
    }

    enum CodingKeys: String, CodingKey {
        case model, train, valid, test, methods, bits, steps, rank, seq, batch, lr, seed, evalTokens = "eval_tokens"
        case drift, driftTokens = "drift_tokens"
        case calibration, calibrationTokens = "calibration_tokens", repairSteps = "repair_steps"
        case distillWeight = "distill_weight"
    }
}

/// The experiment's report: a markdown table shaped like the paper's Table 2 and SVG plots.
public enum ExperimentReport {
    public static func bitsLabel(_ b: Double) -> String {
        b == b.rounded() ? String(format: "%.0f", b) : String(format: "%g", b)
    }

    static func ppl(_ e: EvalNumbers?) -> String {
        guard let e else { return "—" }
        if !e.perplexity.isFinite { return "inf" }
        return e.perplexity >= 1e4 ? String(format: "%.2e", e.perplexity) : String(format: "%.2f", e.perplexity)
    }

    /// A ratio to the ceiling: two decimals while readable, then three significant digits.
    static func gapLabel(_ r: Double) -> String {
        guard r.isFinite else { return "inf" }
        return r < 1000 ? String(format: "%.2f×", r) : String(format: "%.2e×", r)
    }

    static func acc(_ e: EvalNumbers?) -> String { e.map { String(format: "%.3f", $0.accuracy) } ?? "—" }

    /// Rows in the order methods then budgets (high to low), with the full-precision LoRA row
    /// ("none") first; a cell that did not run says why instead of numbers.
    /// `provenance`: lines saying how and where the report was made (command, machine).
    public static func markdown(spec: ExperimentSpec, cells: [ExperimentCell], provenance: [String] = []) -> String {
        let ceiling = cells.first { $0.method == "none" && $0.status == .ok }?.after?.perplexity
        var s = "# LowRA experiment\n\n"
        if !provenance.isEmpty { s += provenance.map { "- \($0)\n" }.joined() + "\n" }
        s +=
            "Model `\(spec.model)`; fine-tuning on `\(spec.train)` for \(spec.steps) steps of \(spec.batch) × "
            + "\(spec.seq) tokens "
        s += "(LoRA rank \(spec.rank), lr \(spec.lr), seed \(spec.seed)); "
        s +=
            spec.test.lowercased().hasSuffix(".jsonl")
            ? "perplexity and accuracy on the assistant turns of the first \(spec.evalTokens) conversations of "
                + "`\(spec.test)` (at most \(spec.seq) tokens each). "
            : "perplexity and accuracy on the first \(spec.evalTokens) tokens of `\(spec.test)` in windows of "
                + "\(spec.seq). "
        s += "\"Before\" is the quantized model as `quantize` leaves it (with its LoftQ adapter for loftq and lowra; "
        s += "qlora's zero-initialized adapter changes nothing); \"after\" adds the fine-tuned adapter. "
        s += "Gap = perplexity after / full-precision LoRA's (method none) perplexity after.\n\n"
        s +=
            "| method | bits | code b/p | stored b/p | ppl before | acc before | ppl after | acc after | gap | peak "
            + "RSS | wall time |\n"
        s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for c in cells {
            let bits = c.bits.map(bitsLabel) ?? "fp32"
            let code = c.codeBitsPerParam.map { String(format: "%.3f", $0) } ?? (c.method == "none" ? "32" : "—")
            let stored = c.storedBitsPerParam.map { String(format: "%.3f", $0) } ?? (c.method == "none" ? "32" : "—")
            let rss = c.peakRSSBytes.map { String(format: "%.0f MB", Double($0) / 1e6) } ?? "—"
            let wall = c.wallSeconds > 0 ? String(format: "%.0f s", c.wallSeconds) : "—"
            switch c.status {
            case .ok, .didNotConverge:
                let gap = ceiling.flatMap { ce in c.after.map { gapLabel($0.perplexity / ce) } } ?? "—"
                let after = c.status == .ok ? ppl(c.after) : "did not converge (\(ppl(c.after)))"
                s +=
                    "| \(c.method) | \(bits) | \(code) | \(stored) | \(ppl(c.before)) | \(acc(c.before)) | \(after) | "
                    + "\(acc(c.after)) | \(gap) | \(rss) | \(wall) |\n"
            case .unsupported, .failed:
                let why = c.status == .unsupported ? "unsupported" : "failed"
                s += "| \(c.method) | \(bits) | — | — | \(why) | — | \(why) | — | — | — | — |\n"
            }
        }
        let notes = cells.compactMap { c in c.note.map { "- \(c.id): \($0)" } }
        if !notes.isEmpty { s += "\n" + notes.joined(separator: "\n") + "\n" }
        let hasDrift = cells.contains { $0.driftBefore != nil || $0.driftAfter != nil }
        if let drift = spec.drift, hasDrift {
            s += "\n" + driftTable(spec: spec, drift: drift, cells: cells)
        }
        if ceiling != nil { s += "\n" + shipTable(spec: spec, cells: cells) }
        s += "\nPlots: [perplexity vs bits](perplexity.svg), [× full-precision LoRA](gap.svg), "
        s += "[training loss](loss.svg)"
        s += hasDrift ? ", [drift from the base](drift.svg).\n" : ".\n"
        return s
    }

    static func driftCells(_ d: DriftNumbers?) -> String {
        guard let d else { return "— | — | —" }
        return String(
            format: "%.4f | %.3f | %@", d.kl, d.top1,
            ppl(EvalNumbers(perplexity: d.perplexity, accuracy: 0, tokens: d.tokens)))
    }

    /// Drift from the unquantized base, before and after fine-tuning.
    static func driftTable(spec: ExperimentSpec, drift: String, cells: [ExperimentCell]) -> String {
        var s = "## Drift from the base\n\n"
        s +=
            "Every cell against the unquantized base model (no adapter) on `\(drift)`, a text of another domain, in "
            + "windows of \(spec.seq): "
        s +=
            "KL(base ‖ model) in nats per token, top-1 agreement of the two models' next-token choices, and the "
            + "model's own perplexity there. "
        s += "Fewer bits, more testing: a cell at b bits is checked on \(spec.driftTokens ?? 0) × 4 / b tokens.\n\n"
        s += "| method | bits | tokens | KL before | top-1 before | ppl before | KL after | top-1 after | ppl after |\n"
        s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for c in cells where c.status == .ok || c.status == .didNotConverge {
            let tokens = (c.driftAfter ?? c.driftBefore).map { String($0.tokens) } ?? "—"
            s +=
                "| \(c.method) | \(c.bits.map(bitsLabel) ?? "fp32") | \(tokens) | "
                + "\(driftCells(c.driftBefore)) | \(driftCells(c.driftAfter)) |\n"
        }
        return s
    }

    /// The answer to "which precision should I ship?": for each tolerated gap to full-precision
    /// LoRA, the lowest budget that meets it after fine-tuning, with the drift it costs.
    static func shipTable(spec: ExperimentSpec, cells: [ExperimentCell]) -> String {
        guard let none = cells.first(where: { $0.method == "none" && $0.status == .ok }),
            let ceiling = none.after?.perplexity
        else { return "" }
        var s = "## Which precision should I ship?\n\n"
        s +=
            "For each perplexity gap you can accept against full-precision LoRA (\(ppl(none.after)) after "
            + "fine-tuning), the lowest budget that "
        s += "meets it in this sweep, and how far that model has drifted from the base"
        s +=
            none.driftAfter.map { String(format: " (full-precision LoRA itself: KL %.4f, top-1 %.3f)", $0.kl, $0.top1) }
            ?? ""
        s +=
            ". Fewer bits kept means more evaluation owed: test the chosen cell on your own task and regression suite "
            + "before shipping it.\n\n"
        s += "| accepted gap | lowest bits | method | ppl after | gap | KL after | top-1 after |\n"
        s += "| --- | --- | --- | --- | --- | --- | --- |\n"
        let quantized = cells.filter { $0.status == .ok && $0.bits != nil && $0.after != nil }
        for tol in [1.05, 1.1, 1.25, 1.5, 2, 4] {
            let meets = quantized.filter { $0.after!.perplexity <= tol * ceiling }
            let best = meets.min { a, b in
                a.bits! != b.bits! ? a.bits! < b.bits! : a.after!.perplexity < b.after!.perplexity
            }
            let t = String(format: "%g×", tol)
            guard let c = best else {
                s += "| \(t) | none in this sweep | — | — | — | — | — |\n"
                continue
            }
            let kl = c.driftAfter.map { String(format: "%.4f", $0.kl) } ?? "—"
            let top1 = c.driftAfter.map { String(format: "%.3f", $0.top1) } ?? "—"
            s +=
                "| \(t) | \(bitsLabel(c.bits!)) | \(c.method) | \(ppl(c.after)) | "
                + "\(gapLabel(c.after!.perplexity / ceiling)) | \(kl) | \(top1) |\n"
        }
        return s
    }

    /// A chart of one number against the bit budget: one colour per method, solid after
    /// fine-tuning and dashed before (log y axis, fewer bits to the right).
    static func budgetChart(
        title: String, yLabel: String, spec: ExperimentSpec, cells: [ExperimentCell],
        before: (ExperimentCell) -> Double?, after: (ExperimentCell) -> Double?
    ) -> SVGChart {
        var chart = SVGChart(title: title, xLabel: "code bits per parameter", yLabel: yLabel, yScale: .log10)
        chart.reverseX = true
        for (i, m) in spec.methods.filter({ $0 != "none" }).enumerated() {
            let color = SVGChart.palette[i % SVGChart.palette.count]
            let mine = cells.filter {
                $0.method == m && ($0.status == .ok || $0.status == .didNotConverge) && $0.bits != nil
            }
            chart.series.append(
                .init(name: "\(m) after", points: mine.compactMap { c in after(c).map { (c.bits!, $0) } }, color: color)
            )
            chart.series.append(
                .init(
                    name: "\(m) before", points: mine.compactMap { c in before(c).map { (c.bits!, $0) } }, color: color,
                    dashed: true))
        }
        return chart
    }

    /// KL divergence from the base against the bit budget; full-precision LoRA's as a reference line.
    public static func driftPlot(spec: ExperimentSpec, cells: [ExperimentCell]) -> String {
        let kl: (DriftNumbers?) -> Double? = { $0.map { max($0.kl, 1e-6) } }  // a log axis has no zero
        var chart = budgetChart(
            title: "Drift from the unquantized base"
                + (spec.drift.map { " on \(($0 as NSString).lastPathComponent)" } ?? ""),
            yLabel: "KL(base ‖ model), nats/token (log scale)", spec: spec, cells: cells,
            before: { kl($0.driftBefore) }, after: { kl($0.driftAfter) })
        if let a = kl(cells.first(where: { $0.method == "none" && $0.status == .ok })?.driftAfter) {
            chart.references.append(("fp32 + LoRA", a, "#000000"))
        }
        return chart.render()
    }

    /// Test perplexity against the bit budget; the full-precision model before and after LoRA as
    /// reference lines.
    public static func perplexityPlot(spec: ExperimentSpec, cells: [ExperimentCell]) -> String {
        var chart = budgetChart(
            title: "Test perplexity vs bit budget", yLabel: "perplexity (log scale)", spec: spec, cells: cells,
            before: { $0.before?.perplexity }, after: { $0.after?.perplexity })
        if let none = cells.first(where: { $0.method == "none" && $0.status == .ok }) {
            if let b = none.before { chart.references.append(("fp32 base", b.perplexity, "#555555")) }
            if let a = none.after { chart.references.append(("fp32 + LoRA", a.perplexity, "#000000")) }
        }
        return chart.render()
    }

    /// Perplexity after fine-tuning as a multiple of full-precision LoRA's (each experiment's
    /// method none, same data, steps, rank and seed) against the bit budget: one colour per
    /// experiment (a model, a fine-tuning budget), one dash pattern per method; 1× and 1.5× as
    /// reference lines. `runs` names each experiment.
    public static func gapPlot(runs: [(name: String, spec: ExperimentSpec, cells: [ExperimentCell])]) -> String {
        var chart = SVGChart(
            title: "After fine-tuning, × full-precision LoRA", xLabel: "code bits per parameter",
            yLabel: "perplexity / full-precision LoRA's (log scale)", yScale: .log10)
        chart.reverseX = true
        let dashes: [String?] = [nil, "8 3", "3 3", "10 3 2 3", "1 3"]
        var methods = [String]()
        for run in runs { for m in run.spec.methods where m != "none" && !methods.contains(m) { methods.append(m) } }
        for (i, run) in runs.enumerated() {
            guard let ceiling = run.cells.first(where: { $0.method == "none" && $0.status == .ok })?.after?.perplexity
            else { continue }
            for m in run.spec.methods where m != "none" {
                let points = run.cells.filter { $0.method == m && $0.bits != nil && $0.after != nil }
                    .map { (x: $0.bits!, y: $0.after!.perplexity / ceiling) }.sorted { $0.x > $1.x }
                guard !points.isEmpty else { continue }
                let dash = dashes[methods.firstIndex(of: m)! % dashes.count]
                chart.series.append(
                    .init(
                        name: runs.count > 1 ? "\(run.name) \(m)" : m, points: points,
                        color: SVGChart.palette[i % SVGChart.palette.count], dashPattern: dash))
            }
        }
        chart.references.append(("1× (full-precision LoRA)", 1, "#000000"))
        chart.references.append(("1.5×", 1.5, "#888888"))
        return chart.render()
    }

    /// Training loss against the step for every cell that trained.
    public static func lossPlot(cells: [ExperimentCell]) -> String {
        var chart = SVGChart(title: "Training loss", xLabel: "step", yLabel: "training loss (nats/token)")
        let trained = cells.filter { ($0.lossCurve?.isEmpty == false) }
        // Colour by method as in the perplexity plot (fp32 in black), dash pattern by budget (solid for the highest).
        var methods = [String](), budgets = [Double]()
        for c in trained {
            if c.method != "none" && !methods.contains(c.method) { methods.append(c.method) }
            if let b = c.bits, !budgets.contains(b) { budgets.append(b) }
        }
        budgets.sort(by: >)
        let dashes = [nil, "8 3", "3 3", "10 3 2 3", "1 3", "14 4", "5 2 1 2", "2 6", "12 2 2 2 2 2", "6 6"]
        for c in trained {
            // Light smoothing (running mean over 5 steps) keeps the curves apart.
            let raw = c.lossCurve!
            var pts = [(x: Double, y: Double)]()
            for j in raw.indices {
                let lo = max(0, j - 4)
                let window = raw[lo...j].map { $0[1] }
                pts.append((raw[j][0], window.reduce(0, +) / Double(window.count)))
            }
            let dash = c.bits.flatMap { b in budgets.firstIndex(of: b).flatMap { dashes[$0 % dashes.count] } }
            chart.series.append(
                .init(
                    name: c.bits.map { "\(c.method) \(bitsLabel($0))" } ?? "\(c.method) fp32", points: pts,
                    color: methods.firstIndex(of: c.method).map { SVGChart.palette[$0 % SVGChart.palette.count] }
                        ?? "#000000",
                    markers: false, dashPattern: dash))
        }
        return chart.render()
    }
}
