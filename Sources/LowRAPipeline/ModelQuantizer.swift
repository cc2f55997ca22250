import Foundation
import LowRAModel
import LowRAIO
import LowRAQuant
import LowRATensor

/// Which quantizer family: ours, or the baselines (QLoRA, LoftQ) implemented in the same code.
public enum QuantMethod: String, Codable, Sendable, CaseIterable {
    /// Learned codebooks (weighted Lloyd-Max) and per-channel precision under the budget.
    case lowra
    /// NormalFloat levels, one precision per tensor, layer-wise mixing between integers.
    case qlora
    /// qlora's quantizer (LoftQ's initialization comes with fine-tuning).
    case loftq
}

public enum AssignerKind: String, Codable, Sendable, CaseIterable {
    /// Global multiple-choice knapsack via its LP relaxation, with a certified gap.
    case exact
    /// The paper's two-level ILP (K-Means clusters, cluster-level and intra-cluster ILPs, CBC).
    case ilp
    /// One precision per tensor (the baselines').
    case layerwise
}

/// Per-channel precisions of every quantized layer, by Hugging Face tensor name: plain data,
/// separate from the solver that made it, reusable with `--precision-map`.
public struct PrecisionMap: Codable, Sendable, Equatable {
    public var version = 1
    public var layers: [String: [UInt8]]

    public init(layers: [String: [UInt8]]) { self.layers = layers }

    /// Reads a `precision_map.json` (`--precision-map`).
    public static func read(_ path: String) throws -> PrecisionMap {
        do {
            return try JSONDecoder().decode(PrecisionMap.self, from: try mapFile(path))
        } catch let error as LowRAError {
            throw error
        } catch {
            throw LowRAError(.invalidArgument, "\(path): not a precision map (\(error.localizedDescription))")
        }
    }

    /// Checks that every layer (Hugging Face name, output channels) has one precision from
    /// {1, 2, 4} per channel.
    public func validate(_ expected: [(name: String, rows: Int)]) throws {
        for (name, rows) in expected {
            guard let b = layers[name], b.count == rows, b.allSatisfy({ [1, 2, 4].contains($0) }) else {
                throw LowRAError(
                    .invalidArgument,
                    "precision map: layer \(name) is missing or does not list \(rows) precisions from {1, 2, 4}")
            }
        }
    }
}

public struct QuantizeRequest: Sendable {
    public var method: QuantMethod = .lowra
    public var bits: Double
    public var options = QuantizerOptions()
    public var assigner: AssignerKind?
    public var precisionMap: PrecisionMap?
    /// A calibration text whose input statistics turn the error into the layers' output error
    /// (nil: data-free, the paper's recipe).
    public var calibration: CalibrationRequest?
    /// Per layer (Hugging Face name), each output channel's sensitivity E[(∂L/∂y_r)²] (the
    /// output-channel Fisher, `outputSensitivity` in LowRATrain): the assignment weighs each
    /// channel's error by it (nil: every channel counts the same).
    public var sensitivity: [String: [Float]]?
    /// Seeds the K-Means of the two-level ILP and LoftQ's randomized SVD.
    public var seed: UInt64 = 0
    /// LoftQ initialization (`alternatingLowRankInitialize`): each layer's base becomes quantize(W − s·BA) after
    /// `steps` alternations and its initial LoRA factors are attached to the layer.
    public var loftq: LoftQRequest?
    /// The head's encoding in the quantized directory (`--head-bits 8`: Q8_0, `4`: Q4_0; nil keeps
    /// the source's). For a tied head, the embedding.
    public var headEncoding: GGMLType?
    /// An equivalence transform the model went through before quantization (`ResidualRotation`,
    /// `ChannelScaling`), as the report names it; nil for none.
    public var transform: String?

    public init(method: QuantMethod, bits: Double) {
        self.method = method
        self.bits = bits
        options.precisions = QuantizationRecipe.defaultPrecisions(bits: bits)
        if method != .lowra {
            options.lloydIterations = 0
            options.scope = .tensor
        }
    }
}

public struct LoftQRequest: Sendable, Codable, Equatable {
    public var rank: Int
    public var alpha: Float
    public var steps: Int = 5
    /// CLoQ: each low-rank fit minimizes the output error through the calibration's H (closed
    /// form, `calibratedLowRank`) instead of the plain weight error. Needs error feedback.
    public var calibrated = false
    /// With error feedback, only the last this many steps quantize through it; the earlier ones
    /// round W − s·BA to the row's codebooks (out·in instead of out·in² each). nil: every step.
    public var feedbackSteps: Int?

    /// The adapter's scale s = alpha / rank: the fits are of s·BA.
    public var scale: Float { alpha / Float(rank) }

    public init(rank: Int, alpha: Float, steps: Int = 5, calibrated: Bool = false, feedbackSteps: Int? = nil) {
        self.rank = rank
        self.alpha = alpha
        self.steps = steps
        self.calibrated = calibrated
        self.feedbackSteps = feedbackSteps
    }
}

public struct LayerQuantReport: Codable, Sendable {
    public var name: String
    public var outFeatures: Int
    public var inFeatures: Int
    public var codeBitsPerParam: Double
    public var storedBytes: Int
    /// ‖W − Q‖ / ‖W‖ over the layer.
    public var relativeError: Double
    /// Channels at 1, 2 and 4 bits.
    public var channelsAt: [String: Int]
    /// With LoftQ: ‖W − Q‖_F / ‖W‖_F of plain quantization (zero-initialized adapter) and
    /// ‖W − Q − sBA‖_F / ‖W‖_F after LoftQ (unweighted Frobenius norms).
    public var zeroInitError: Double? = nil
    public var loftqError: Double? = nil

    enum CodingKeys: String, CodingKey {
        case name
        case outFeatures = "out_features"
        case inFeatures = "in_features"
        case codeBitsPerParam = "code_bits_per_param"
        case storedBytes = "stored_bytes"
        case relativeError = "relative_error"
        case channelsAt = "channels_at_bits"
        case zeroInitError = "zero_init_error"
        case loftqError = "loftq_error"
    }
}

public struct QuantizeReport: Codable, Sendable {
    public var method: QuantMethod
    public var targetBits: Double
    public var assigner: String
    public var options: QuantizerOptions
    public var quantizedParameters: Int
    public var codeBitsPerParam: Double
    public var storedBitsPerParam: Double
    public var storedBytes: Int
    /// Σ squared error over all quantized weights, and its certified lower bound (exact assigner).
    public var totalSquaredError: Double
    /// sqrt(Σ squared error / Σ w²) over all quantized weights.
    public var relativeError: Double?
    public var lowerBound: Double?
    public var seconds: Double
    /// Wall time of each phase: analyze (scales, Lloyd-Max, error table), assign, pack.
    public var phaseSeconds: [String: Double]?
    public var layers: [LayerQuantReport]
    /// "file (N tokens)" when the error was weighted by calibration statistics.
    public var calibration: String?
    public var seed: UInt64?
    /// The equivalence transform applied before quantization, if any (`QuantizeRequest.transform`).
    public var transform: String?
    /// LoftQ's / CLoQ's alternating steps, when the initial adapter was fitted.
    public var loftqSteps: Int?
    /// Of those, the last ones that quantized with error feedback, when not all of them did.
    public var feedbackSteps: Int?

    enum CodingKeys: String, CodingKey {
        case calibration, seed, transform
        case loftqSteps = "loftq_steps"
        case feedbackSteps = "feedback_steps"
        case phaseSeconds = "phase_seconds"
        case method
        case targetBits = "target_bits"
        case assigner, options
        case quantizedParameters = "quantized_parameters"
        case codeBitsPerParam = "code_bits_per_param"
        case storedBitsPerParam = "stored_bits_per_param"
        case storedBytes = "stored_bytes"
        case totalSquaredError = "total_squared_error"
        case lowerBound = "lower_bound"
        case relativeError = "relative_error"
        case seconds, layers
    }
}

extension ModelWeights {
    /// (HF name, block, kind) of every linear layer that gets quantized, in model order (the
    /// order of an adapter's slots).
    public var quantizableLinears: [(name: String, block: Int, kind: LinearKind)] {
        blocks.indices.flatMap { l in LinearKind.allCases.map { (WeightNaming.huggingFace.linear(l, $0), l, $0) } }
    }

    /// Quantizes every block's linear layers, all in memory; embeddings, norms and the head stay
    /// as they are. progress(stage, done, total) with stage "analyze", "assign" (ILP) then "pack"
    /// (which runs LoftQ when requested). With LoftQ, `loftq` holds each layer's initial factors,
    /// in `quantizableLinears` order (an adapter's slot order). `quantize` streams instead:
    /// `quantizationPlan`, then `packLayer` one layer at a time straight into the output.
    public func quantized(
        _ request: QuantizeRequest, progress: ((String, Int, Int) -> Void)? = nil
    ) throws -> (weights: ModelWeights, map: PrecisionMap, report: QuantizeReport, loftq: [(a: [Float], b: [Float])]) {
        let plan = try quantizationPlan(request, progress: progress)
        var out = self
        var loftq = [(a: [Float], b: [Float])]()
        for (i, l) in plan.layers.enumerated() {
            progress?("pack", i, plan.layers.count)
            let (packed, factors) = try packLayer(i, of: plan)
            out.blocks[l.block][l.kind] = Linear(packed: packed, bias: blocks[l.block][l.kind].bias)
            if let factors { loftq.append(factors) }
        }
        progress?("pack", plan.layers.count, plan.layers.count)
        return (out, plan.map, plan.report(), loftq)
    }

    /// Pass 1 and the assignment: every layer analyzed one at a time (codebooks and per-channel
    /// errors for each precision; the layer's fp32 copy and its file pages dropped afterwards),
    /// then every channel's precision chosen under the budget.
    public func quantizationPlan(
        _ request: QuantizeRequest, progress: ((String, Int, Int) -> Void)? = nil
    ) throws -> QuantizationPlan {
        let t0 = Date()
        let layers = quantizableLinears
        try QuantizationRecipe.checkBudget(
            method: request.method, bits: request.bits, precisionMap: request.precisionMap != nil)
        var options = request.options
        if let map = request.precisionMap {
            try map.validate(layers.map { ($0.name, blocks[$0.block][$0.kind].outFeatures) })
            options.precisions = Array(Set(map.layers.values.flatMap { $0.map(Int.init) })).sorted()
        }
        guard !options.precisions.isEmpty, options.precisions.allSatisfy({ [1, 2, 4].contains($0) }) else {
            throw LowRAError(.invalidArgument, "precisions must be from {1, 2, 4}, got \(options.precisions)")
        }
        let params = layers.reduce(0) { $0 + blocks[$1.block][$1.kind].parameterCount }
        let budget = Int((request.bits * Double(params)).rounded(.down))

        if let cal = request.calibration {
            guard cal.config.numLayers == blocks.count else {
                throw LowRAError(
                    .shapeMismatch,
                    "calibration: its config has \(cal.config.numLayers) layers, the model \(blocks.count)")
            }
            if request.loftq?.calibrated == true && !cal.errorFeedback {
                throw LowRAError(.invalidArgument, "the calibrated initialization (cloq) needs error feedback")
            }
        } else if request.loftq?.calibrated == true {
            throw LowRAError(.invalidArgument, "the calibrated initialization (cloq) needs a calibration text")
        }
        // With calibration, each block's input statistics come from the full-precision model,
        // one block at a time (pass 2 gathers them again, sequentially, where error feedback is on).
        let calibrator = request.calibration.map { BlockCalibrator($0.analysis, weights: self) }
        var stats = [LinearInput: InputCovariance]()
        var diagonals = [LinearInput: [Float]]()  // E[x_j²] per site of the current block
        // Per input site of the current block, the damped H (taken out of `stats`, so never held
        // twice) and the upper Cholesky factor of its inverse: factored once for the layers that
        // share the site (q, k, v; gate, up) and dropped when the next site begins.
        var factored = [LinearInput: (damped: InputCovariance, u: [Float])]()
        let errorFeedback = request.calibration?.errorFeedback == true
        var columnWeights = [[Float]?]()
        var analyses = [TensorAnalysis]()
        for (i, l) in layers.enumerated() {
            progress?("analyze", i, layers.count)
            if let calibrator, calibrator.block == l.block {
                stats = try calibrator.run(blocks[l.block], statistics: true, advance: true)
                diagonals = stats.mapValues(\.diagonal)
                if !errorFeedback { stats = [:] }
                factored = [:]
            }
            let lin = blocks[l.block][l.kind]
            let w = lin.weight
            let site = l.kind.input
            let diagonal = diagonals[site]
            var a = analyzeTensor(
                w, out: lin.outFeatures, in: lin.inFeatures, options: options, columnWeights: diagonal)
            if errorFeedback {
                // Each channel's cost at each precision: its output error after error feedback.
                factored = factored.filter { $0.key == site }  // a block's layers come site by site
                if factored[site] == nil, var d = stats.removeValue(forKey: site) {
                    d.damp(request.calibration!.damping)
                    factored[site] = (d, try inverseCholeskyUpper(d.values, n: d.n))
                }
                let (damped, u) = factored[site]!
                let rows = min(request.calibration!.tableRows ?? lin.outFeatures, lin.outFeatures)
                for p in options.precisions {
                    a.errors[p] = a.sampledErrorFeedbackErrors(w, precision: p, inverseFactor: u, rows: rows)
                }
                a.rowEnergy = a.sampledRowEnergy(w, covariance: damped, rows: rows)
            }
            // CLoQ quantizes what it fits afresh: the plan keeps only the errors of this one. LoftQ
            // without error feedback quantizes W itself first, with this analysis's codebooks.
            analyses.append(request.loftq == nil || request.calibration?.errorFeedback != true ? a : a.errorsOnly)
            columnWeights.append(diagonal)
            lin.releaseStored()  // one layer at a time: a model larger than memory passes through
            MemoryStats.returnFreeMemory()
        }
        progress?("analyze", layers.count, layers.count)
        let tAnalyzed = Date()

        // Precision of every row of every layer.
        var bits = [[UInt8]]()
        var lowerBound: Double?
        let assignerName: String
        if let map = request.precisionMap {
            assignerName = "precision-map"
            for (l, a) in zip(layers, analyses) {
                guard let b = map.layers[l.name], b.count == a.outFeatures else {
                    throw LowRAError(
                        .invalidArgument,
                        "precision map: layer \(l.name) missing or has the wrong number of channels (model has "
                            + "\(a.outFeatures))"
                    )
                }
                bits.append(b)
            }
        } else if [.exact, .ilp].contains(request.assigner ?? (request.method == .lowra ? .exact : .layerwise)) {
            let kind = request.assigner ?? .exact
            assignerName = kind.rawValue
            let ps = options.precisions.sorted()
            var channels = [ChannelErrors]()
            for (l, a) in zip(layers, analyses) {
                let weight = request.sensitivity?[l.name]
                if let weight, weight.count != a.outFeatures {
                    throw LowRAError(
                        .shapeMismatch,
                        "sensitivity of \(l.name) has \(weight.count) channels, the layer \(a.outFeatures)")
                }
                for r in 0..<a.outFeatures {
                    let s = Double(weight?[r] ?? 1)
                    channels.append(ChannelErrors(parameters: a.inFeatures, errors: ps.map { s * a.errors[$0]![r] }))
                }
            }
            let result =
                kind == .exact
                ? try PrecisionAssigner.exact(channels, precisions: ps, budgetBits: budget)
                : try PrecisionAssigner.twoLevelILP(channels, precisions: ps, budgetBits: budget, seed: request.seed) {
                    progress?("assign", $0, $1)
                }
            // Certified for the error the plan assigned with; error feedback's sequential pass and
            // the sensitivity weighting measure another one.
            if request.calibration?.errorFeedback != true && request.sensitivity == nil {
                lowerBound = result.lowerBound
            }
            var at = 0
            for a in analyses {
                bits.append(Array(result.bits[at..<(at + a.outFeatures)]))
                at += a.outFeatures
            }
        } else {
            assignerName = AssignerKind.layerwise.rawValue
            let perTensor = try PrecisionAssigner.layerwise(
                tensorParameters: analyses.map { $0.outFeatures * $0.inFeatures }, precisions: options.precisions,
                budgetBits: budget)
            bits = zip(perTensor, analyses).map { [UInt8](repeating: UInt8($0), count: $1.outFeatures) }
        }
        return QuantizationPlan(
            request: request, options: options, layers: layers, analyses: analyses, columnWeights: columnWeights,
            bits: bits, assigner: assignerName, lowerBound: lowerBound, parameters: params, started: t0,
            phaseSeconds: [
                "analyze": tAnalyzed.timeIntervalSince(t0), "assign": Date().timeIntervalSince(tAnalyzed),
                "calibrate": calibrator?.seconds ?? 0,
            ])
    }

    /// Pass 2 for layer i of the plan: packs it at its precisions (through LoftQ's alternation
    /// when asked, returning the initial factors), records its report row in the plan, and drops
    /// its analysis and its file pages.
    public func packLayer(_ i: Int, of plan: QuantizationPlan) throws -> (PackedLinear, (a: [Float], b: [Float])?) {
        try packLayers(i..<(i + 1), of: plan)[0]
    }

    /// Layers at most this large (out · in) are packed several at a time, one per core, each with
    /// its own loops and BLAS on one thread: their parallel sections are too short to keep the
    /// cores busy (SmolLM2's LoftQ spends a third of its time handing work between threads
    /// otherwise). Larger layers keep the memory of one layer in flight.
    public static let concurrentPackElements = 8 << 20

    /// `packLayer` for consecutive layers `range`, packed concurrently (see `concurrentPackElements`)
    /// and recorded in order; results are the same as packing them one by one. With error
    /// feedback, layers must come in model order and are packed one site at a time (the
    /// calibration stream reaches a site's input once the layers before it are packed).
    public func packLayers(
        _ range: Range<Int>, of plan: QuantizationPlan
    ) throws -> [(PackedLinear, (a: [Float], b: [Float])?)] {
        if plan.packStarted == nil { plan.packStarted = Date() }
        let block = plan.layers[range.lowerBound].block
        precondition(range.allSatisfy { plan.layers[$0].block == block })
        if plan.sequential {
            // Site by site: each site's H is gathered once the layers before it are packed.
            var start = range.lowerBound
            var out = [(PackedLinear, (a: [Float], b: [Float])?)]()
            while start < range.upperBound {
                let site = plan.layers[start].kind.input
                var end = start + 1
                while end < range.upperBound, plan.layers[end].kind.input == site { end += 1 }
                try plan.prepareSite(block, site, weights: self)
                out += try packConcurrently(start..<end, of: plan)
                start = end
            }
            return out
        }
        return try packConcurrently(range, of: plan)
    }

    private func packConcurrently(
        _ range: Range<Int>, of plan: QuantizationPlan
    ) throws -> [(PackedLinear, (a: [Float], b: [Float])?)] {
        var results = [Result<PackedLayer, Error>?](repeating: nil, count: range.count)
        results.withUnsafeMutableBufferPointer { buf in
            let out = UncheckedSendable(buf.baseAddress!)
            let work = { (k: Int) in out.value[k] = Result { try self.computePacked(range.lowerBound + k, of: plan) } }
            if range.count == 1 {
                work(0)
            } else {
                // Largest first, so that no thread is left with a big layer while the others idle.
                let order = (0..<range.count).sorted { a, b in
                    let (la, lb) = (plan.layers[range.lowerBound + a], plan.layers[range.lowerBound + b])
                    let (wa, wb) = (blocks[la.block][la.kind], blocks[lb.block][lb.kind])
                    return (wa.outFeatures * wa.inFeatures, b) > (wb.outFeatures * wb.inFeatures, a)
                }
                withBLASThreads(1) { parallelTasks(range.count) { work(order[$0]) } }
            }
        }
        defer { MemoryStats.returnFreeMemory() }
        return try (0..<range.count).map { k in
            let i = range.lowerBound + k
            let r = try results[k]!.get()
            blocks[plan.layers[i].block][plan.layers[i].kind].releaseStored()
            plan.record(i, r)
            return (r.packed, r.factors)
        }
    }

    /// Packs layer i (LoftQ or CLoQ when asked; with error feedback through its input's H from
    /// the sequential calibration) without touching the plan's records: safe to run for two
    /// layers at once.
    private func computePacked(_ i: Int, of plan: QuantizationPlan) throws -> PackedLayer {
        let l = plan.layers[i]
        let request = plan.request
        guard let a = plan.analyses[i] else { throw LowRAError(.invalidArgument, "layer \(l.name) was packed already") }
        let lin = blocks[l.block][l.kind]
        let (out, inF) = (lin.outFeatures, lin.inFeatures)
        let bits = plan.bits[i]
        let w = lin.weight
        let site = plan.sequential ? plan.siteFactors[l.kind.input] : nil
        let cal = request.calibration
        guard let lq = request.loftq else {
            guard let site else { return PackedLayer(packed: try a.pack(w, bits: bits)) }
            let r = try a.packWithErrorFeedback(
                w, bits: bits, inverseFactor: site.u, covariance: site.covariance,
                refit: cal?.refitLevels ?? false, refinePasses: cal?.refineCodes ?? 0)
            return PackedLayer(packed: r.packed, rowErrors: r.rowErrors)
        }
        let scale = lq.scale
        let seed = request.seed &+ UInt64(i)
        let r: LoftQResult
        if let site {
            let options = plan.options.restricted(to: bits)
            r = try alternatingLowRankInitialize(
                w, out: out, in: inF, rank: lq.rank, steps: lq.steps, scale: scale,
                quantize: { target, step in
                    let ta = analyzeTensor(
                        target, out: out, in: inF, options: options, columnWeights: site.diagonal, rowBits: bits)
                    // Steps before the last `feedbackSteps` round to the codebooks (out·in, not out·in²).
                    if step < lq.steps - (lq.feedbackSteps ?? lq.steps) { return try ta.pack(target, bits: bits) }
                    return try ta.packWithErrorFeedback(
                        target, bits: bits, inverseFactor: site.u, covariance: site.covariance,
                        refit: cal?.refitLevels ?? false, refinePasses: cal?.refineCodes ?? 0
                    ).packed
                },
                lowRank: { residual, step in
                    if let lower = site.lower {
                        return try calibratedLowRank(
                            residual, out: out, in: inF, lower: lower, rank: lq.rank, seed: seed &+ UInt64(step))
                    }
                    return try plainLowRank(residual, out: out, in: inF, rank: lq.rank, seed: seed &+ UInt64(step))
                })
        } else {
            r = try loftqInitialize(
                w, out: out, in: inF, bits: bits, options: plan.options, rank: lq.rank, steps: lq.steps, scale: scale,
                columnWeights: plan.columnWeights[i], seed: seed, analysis: a)
        }
        let norm = w.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        return PackedLayer(
            packed: r.packed, factors: (r.a, r.b),
            loftqErrors: (r.errors.first! / max(norm, 1e-30), r.errors.last! / max(norm, 1e-30)))
    }
}

/// One layer as pass 2 leaves it: packed, its initial LoRA factors (LoftQ, CLoQ), the relative
/// errors of zero and low-rank initialization, and its rows' output errors when error feedback
/// measured them.
struct PackedLayer {
    var packed: PackedLinear
    var factors: (a: [Float], b: [Float])? = nil
    var loftqErrors: (Double, Double)? = nil
    var rowErrors: [Double]? = nil
}

/// The factors of one linear input's damped H for error feedback and CLoQ.
struct SiteFactors {
    /// Upper Cholesky factor of H⁻¹.
    var u: [Float]
    /// Lower Cholesky factor of H (CLoQ only).
    var lower: [Float]?
    /// E[x_j²], Lloyd-Max's column weights.
    var diagonal: [Float]
    /// The damped H, when levels are refit to the codes.
    var covariance: [Float]? = nil
}

/// What pass 1 and the assignment decided (see `ModelWeights.quantizationPlan`), and the report
/// rows pass 2 adds as it packs each layer.
public final class QuantizationPlan: @unchecked Sendable {
    public let request: QuantizeRequest
    public let options: QuantizerOptions
    public let layers: [(name: String, block: Int, kind: LinearKind)]
    /// Per layer, each channel's precision.
    public let bits: [[UInt8]]
    public let assigner: String
    public let lowerBound: Double?
    public let parameters: Int
    let started: Date
    var phaseSeconds: [String: Double]
    /// Dropped as each layer is packed.
    var analyses: [TensorAnalysis?]
    /// Per layer, E[x_j²] of its input from pass 1's calibration (nil: data-free).
    let columnWeights: [[Float]?]
    /// Error feedback: pass 2 carries the calibration stream through the packed blocks.
    var sequential: Bool { request.calibration?.errorFeedback == true }
    private var calibrator: BlockCalibrator?
    /// The input `siteFactors` describe, and the packed layers of blocks the stream has not
    /// passed yet.
    private var factorsSite: (block: Int, site: LinearInput)?
    private(set) var siteFactors = [LinearInput: SiteFactors]()
    private var packedBlocks = [Int: [LinearKind: PackedLayer]]()
    private var rows: [Int: LayerQuantReport] = [:]
    private var codeBits = 0, stored = 0, totalError = 0.0, totalEnergy = 0.0
    var packStarted: Date?

    init(
        request: QuantizeRequest, options: QuantizerOptions, layers: [(name: String, block: Int, kind: LinearKind)],
        analyses: [TensorAnalysis], columnWeights: [[Float]?], bits: [[UInt8]], assigner: String, lowerBound: Double?,
        parameters: Int,
        started: Date, phaseSeconds: [String: Double]
    ) {
        self.request = request
        self.options = options
        self.layers = layers
        self.analyses = analyses
        self.columnWeights = columnWeights
        self.bits = bits
        self.assigner = assigner
        self.lowerBound = lowerBound
        self.parameters = parameters
        self.started = started
        self.phaseSeconds = phaseSeconds
    }

    public var map: PrecisionMap {
        PrecisionMap(layers: Dictionary(uniqueKeysWithValues: zip(layers.map(\.name), bits)))
    }

    /// Sequential calibration up to `site` of block l: the stream passes through every block before l
    /// (all packed by now, with their initial adapter), then through block l up to the site's input,
    /// with the layers before it already quantized; that input's H is gathered and factored.
    func prepareSite(_ l: Int, _ site: LinearInput, weights: ModelWeights) throws {
        guard factorsSite?.block != l || factorsSite?.site != site else { return }
        let cal = request.calibration!
        if calibrator == nil { calibrator = BlockCalibrator(cal, weights: weights) }
        let stream = calibrator!
        /// Block b with the packed layers that the stream's next segments up to `last` run, each
        /// dequantized with its initial adapter merged (W_q + s·BA, one fp32 product per chunk
        /// instead of a dequantized panel and two low-rank products); the others as they are.
        func quantized(_ b: Int, through last: BlockSegment) -> BlockWeights {
            var blk = weights.blocks[b]
            let run = BlockSegment.inOrder[stream.segment...BlockSegment.inOrder.firstIndex(of: last)!]
            for (kind, p) in packedBlocks[b] ?? [:] {
                let runs = LinearInput.allCases.firstIndex(of: kind.input)! + 1  // the segment it runs in
                guard run.contains(BlockSegment.inOrder[runs]) else { continue }
                var w = p.packed.dequantized()
                if let f = p.factors, let lq = request.loftq {
                    let (out, inF) = (p.packed.outFeatures, p.packed.inFeatures)
                    matmul(f.b, f.a, &w, m: out, n: inF, k: lq.rank, alpha: lq.scale, beta: 1)
                }
                blk[kind] = Linear(
                    outFeatures: p.packed.outFeatures, inFeatures: p.packed.inFeatures, weight: w, bias: blk[kind].bias)
            }
            return blk
        }
        while stream.block < l {
            let b = stream.block
            guard packedBlocks[b]?.count == LinearKind.allCases.count else {
                throw LowRAError(
                    .invalidArgument, "sequential calibration packs layers in order; block \(b) is incomplete")
            }
            try stream.finishBlock(quantized(b, through: .end))
            packedBlocks[b] = nil
        }
        siteFactors = [:]  // the previous site's factors go before this one's H arrives
        var d = try stream.statistics(at: site, of: quantized(l, through: .until(site)))
        let diagonal = d.diagonal
        d.damp(cal.damping)
        siteFactors[site] = SiteFactors(
            u: try inverseCholeskyUpper(d.values, n: d.n),
            lower: request.loftq?.calibrated == true ? try choleskyFactor(d.values, n: d.n) : nil,
            diagonal: diagonal, covariance: cal.refitLevels || cal.refineCodes > 0 ? d.values : nil)
        factorsSite = (l, site)
    }

    func record(_ i: Int, _ p: PackedLayer) {
        let a = analyses[i]!
        if sequential {
            let (block, site) = (layers[i].block, layers[i].kind.input)
            packedBlocks[block, default: [:]][layers[i].kind] = p
            // A site's factors go once its last layer is packed (down_proj's are the largest).
            if !layers[(i + 1)...].contains(where: { $0.block == block && $0.kind.input == site }) {
                siteFactors[site] = nil
            }
        }
        var err = 0.0
        var energy = 0.0
        for r in 0..<a.outFeatures {
            err += p.rowErrors?[r] ?? a.errors[Int(bits[i][r])]![r]
            energy += a.rowEnergy[r]
        }
        totalError += err
        totalEnergy += energy
        let packed = p.packed
        codeBits += packed.codeBits
        stored += packed.storedBytes
        var hist = [String: Int]()
        for b in bits[i] { hist[String(b), default: 0] += 1 }
        rows[i] = LayerQuantReport(
            name: layers[i].name, outFeatures: a.outFeatures, inFeatures: a.inFeatures,
            codeBitsPerParam: Double(packed.codeBits) / Double(a.outFeatures * a.inFeatures),
            storedBytes: packed.storedBytes, relativeError: energy > 0 ? (err / energy).squareRoot() : 0,
            channelsAt: hist, zeroInitError: p.loftqErrors?.0, loftqError: p.loftqErrors?.1)
        analyses[i] = nil
    }

    /// The report of every layer packed so far (all of them, once pass 2 is done).
    public func report() -> QuantizeReport {
        var phases = phaseSeconds
        phases["pack"] = packStarted.map { Date().timeIntervalSince($0) } ?? 0
        // The calibration forwards of both passes (inside analyze and pack).
        phases["calibrate", default: 0] += calibrator?.seconds ?? 0
        return QuantizeReport(
            method: request.method, targetBits: request.bits, assigner: assigner, options: options,
            quantizedParameters: parameters, codeBitsPerParam: Double(codeBits) / Double(parameters),
            storedBitsPerParam: Double(stored * 8) / Double(parameters), storedBytes: stored,
            totalSquaredError: totalError, relativeError: totalEnergy > 0 ? (totalError / totalEnergy).squareRoot() : 0,
            lowerBound: lowerBound, seconds: Date().timeIntervalSince(started), phaseSeconds: phases,
            layers: rows.keys.sorted().map { rows[$0]! },
            calibration: request.calibration.map {
                $0.description + (request.sensitivity == nil ? "" : "; Fisher-weighted assignment")
            }, seed: request.seed, transform: request.transform, loftqSteps: request.loftq?.steps,
            feedbackSteps: request.loftq?.feedbackSteps)
    }
}
