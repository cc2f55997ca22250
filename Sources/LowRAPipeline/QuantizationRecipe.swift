import Foundation
import LowRAIO
import LowRAModel
import LowRAQuant
import LowRATensor

/// Every choice of a quantization run, with its defaults and rules in one place. A caller (the
/// `quantize` command, `experiment`'s cells, tests) fills in what it wants and leaves the rest nil;
/// `resolved(defaultCalibrationText:)` applies the defaults — for `--method lowra` the calibrated
/// recipe measured in docs/results/below-2-bits.md: error feedback on a generic text,
/// Fisher-weighted 1/2/4-bit channels and a CLoQ adapter; for the baselines and `.dataFree` the
/// paper's data-free recipe — and refuses a combination that cannot run with a `RecipeError`.
public struct QuantizationRecipe: Codable, Sendable, Equatable {
    /// Where the calibration statistics come from.
    public enum Calibration: Codable, Sendable, Equatable {
        /// The generic calibration text for `.lowra`, none for the baselines.
        case automatic
        /// None: the paper's data-free recipe (squared weight error).
        case dataFree
        /// This text file.
        case text(String)
    }
    public enum CalibrationMethod: String, Codable, Sendable, CaseIterable {
        /// Error feedback through each layer's input covariance, gathered sequentially, and
        /// output-error costs in the assignment.
        case gptq
        /// E[x²] weighs Lloyd-Max and the error table only.
        case diag
    }
    public enum Sensitivity: String, Codable, Sendable, CaseIterable {
        /// Each channel's cost weighted by its output-channel Fisher on the calibration text.
        case fisher
        case none
    }
    public enum Initialization: String, Codable, Sendable, CaseIterable {
        case loftq, cloq, zeros, none
    }

    /// How much work `quantize` does where the recipe leaves a choice nil (`Effort`).
    public enum Preset: String, Codable, Sendable, CaseIterable {
        /// The paper's data-free recipe with three LoftQ steps: seconds, no calibration text.
        case fast
        /// The calibrated recipe at the effort measured to cost little accuracy (the default):
        /// analysis on 1,024 tokens, tables from 128 rows, 3 CLoQ steps; on a model of a billion
        /// quantized parameters or more only the last of them quantizes with error feedback.
        case standard
        /// The calibrated recipe at full effort: every calibration token for every step, exact
        /// error tables, five CLoQ steps.
        case thorough
    }

    /// What a preset fills in.
    public struct Effort: Sendable, Equatable {
        /// false: data-free unless a text is named.
        public var calibrate: Bool
        public var calibrationTokens: Int
        /// nil: all the calibration tokens.
        public var analysisTokens: Int?
        /// nil: every row.
        public var tableRows: Int?
        /// Alternating steps of CLoQ, and of LoftQ when calibrated.
        public var calibratedSteps: Int
        /// LoftQ's steps, data-free.
        public var dataFreeSteps: Int
        /// Of the calibrated steps, the last ones that quantize with error feedback on a model of
        /// `largeModelParameters` or more (nil: all; smaller models always take all).
        public var largeModelFeedbackSteps: Int? = nil
    }

    /// Quantized parameters (the linear layers') from which a preset's `largeModelFeedbackSteps`
    /// applies: error feedback costs out·in² per layer and step, the largest part of a 7B model's
    /// time, a small one of a 135M model's.
    public static let largeModelParameters = 1_000_000_000

    public static func effort(_ preset: Preset) -> Effort {
        switch preset {
        case .fast:
            Effort(
                calibrate: false, calibrationTokens: 1024, analysisTokens: nil, tableRows: 128, calibratedSteps: 3,
                dataFreeSteps: 3)
        case .standard:
            Effort(
                calibrate: true, calibrationTokens: 4096, analysisTokens: 1024, tableRows: 128, calibratedSteps: 3,
                dataFreeSteps: 5, largeModelFeedbackSteps: 1)
        case .thorough:
            Effort(
                calibrate: true, calibrationTokens: 4096, analysisTokens: nil, tableRows: nil, calibratedSteps: 5,
                dataFreeSteps: 5)
        }
    }

    public var method: QuantMethod
    /// Budget in code bits per quantized parameter.
    public var bits: Double
    public var preset = Preset.standard
    public var calibration = Calibration.automatic
    /// Tokens of the calibration text (whole windows of 512); nil: the preset's.
    public var calibrationTokens: Int?
    /// Of those, the first ones the Fisher and the assignment's error tables read (whole windows);
    /// nil: the preset's. Error feedback and CLoQ read every calibration token.
    public var analysisTokens: Int?
    /// Rows per layer whose error feedback the assignment's error tables measure; nil: the preset's.
    public var tableRows: Int?
    public var calibrationMethod = CalibrationMethod.gptq
    /// Damping of the input covariance, as a fraction of its mean diagonal.
    public var damping: Float = 0.01
    /// After error feedback, refit each row's levels to its codes through the input covariance.
    public var refitLevels = false
    /// Then sweeps of discrete code refinement through the input covariance (0: none).
    public var refineCodes = 0
    /// nil: Fisher with the calibrated recipe, else none.
    public var sensitivity: Sensitivity?
    /// Allowed per-channel precisions; nil: `defaultPrecisions`.
    public var precisions: [Int]?
    /// nil: per channel (lowra); the baselines use NormalFloat levels per tensor.
    public var codebook: CodebookScope?
    /// Weighted Lloyd-Max iterations (lowra; 0 keeps NormalFloat levels); nil: the quantizer's default.
    public var lloydIterations: Int?
    public var weighting = LloydWeighting.absmax
    /// nil: exact for lowra, layerwise for the baselines.
    public var assigner: AssignerKind?
    public var doubleQuant = true
    /// A precision map to reuse instead of assigning (`precision_map.json`).
    public var precisionMap: String?
    /// nil: CLoQ for the calibrated recipe, LoftQ for data-free lowra and loftq, zeros for qlora.
    public var initialization: Initialization?
    /// The initial adapter's rank (nil: `LoRAAdapter.defaultRank`) and alpha (nil: the rank).
    public var rank: Int?
    public var alpha: Float?
    /// LoftQ's / CLoQ's alternating steps; nil: the preset's.
    public var loftqSteps: Int?
    /// With error feedback, how many of those steps (the last ones) quantize through it; the
    /// earlier ones round to the codebooks. nil: the preset's.
    public var feedbackSteps: Int?
    /// The head's encoding (the embedding when tied): 8 (Q8_0), 4 (Q4_0) or 16 (the source's).
    public var headBits = 16
    /// Equivalence transforms before quantizing (measured, not adopted).
    public var rotate = false
    public var rotationBlock: Int?
    public var channelScaling: Float?
    /// After packing, train every block's codes, block scales and levels against the source
    /// block's outputs on the calibration text (block reconstruction, `lowra reconstruct`).
    public var reconstruct = false
    /// Seeds the two-level ILP's K-Means, LoftQ's randomized SVD, rotations and Kaiming init.
    public var seed: UInt64 = 0

    public init(method: QuantMethod = .lowra, bits: Double) {
        self.method = method
        self.bits = bits
    }

    /// The precisions a budget mixes by default: {1, 2, 4} below 2 bits or with the Fisher (which
    /// keeps 1-bit channels out of the layers that hurt), else {2, 4}.
    public static func defaultPrecisions(bits: Double, fisher: Bool = false) -> [Int] {
        bits < 2 || fisher ? [1, 2, 4] : [2, 4]
    }

    /// The budgets a method can reach: the baselines mix whole layers at 2 and 4 bits, so they
    /// have none below 2 (a precision map can still say otherwise).
    public static func checkBudget(method: QuantMethod, bits: Double, precisionMap: Bool = false) throws {
        guard bits >= 1, bits <= 4 else { throw RecipeError.bitsOutOfRange(bits) }
        if method != .lowra && bits < 2 && !precisionMap { throw RecipeError.baselineBelowTwoBits(method) }
    }

    /// The recipe with every default filled in, or the first rule it breaks. `defaultCalibrationText`
    /// finds the generic text (called only when `.automatic` calibration needs it; it throws when
    /// the text is missing).
    public func resolved(defaultCalibrationText: () throws -> String) throws -> ResolvedRecipe {
        try Self.checkBudget(method: method, bits: bits, precisionMap: precisionMap != nil)
        let effort = Self.effort(preset)
        let text: String?
        switch calibration {
        case .text(let path): text = path
        case .dataFree: text = nil
        case .automatic: text = method == .lowra && effort.calibrate ? try defaultCalibrationText() : nil
        }
        let calibrated = text != nil
        let errorFeedback = calibrated && calibrationMethod == .gptq
        let calibratedRecipe = errorFeedback && method == .lowra
        let sensitivity = self.sensitivity ?? (calibratedRecipe ? .fisher : .none)
        let initialization = self.initialization ?? (method == .qlora ? .zeros : calibratedRecipe ? .cloq : .loftq)
        if reconstruct && (method != .lowra || !calibrated) { throw RecipeError.reconstructNeedsCalibratedLowRA }
        guard damping > 0, damping.isFinite else { throw RecipeError.damping }
        if refitLevels && !errorFeedback { throw RecipeError.refitNeedsErrorFeedback }
        if refineCodes < 0 { throw RecipeError.refinePasses }
        if refineCodes > 0 && !errorFeedback { throw RecipeError.refineNeedsErrorFeedback }
        if sensitivity == .fisher && !calibrated { throw RecipeError.needsCalibration("--sensitivity fisher") }
        if channelScaling != nil && !calibrated { throw RecipeError.needsCalibration("--channel-scaling") }
        if let b = rotationBlock, !rotate || b < 1 { throw RecipeError.rotationBlock }
        if initialization == .cloq && !errorFeedback { throw RecipeError.cloqNeedsErrorFeedback }
        if let n = loftqSteps, n < 1 { throw RecipeError.loftqSteps }
        if let n = feedbackSteps, n < 1 { throw RecipeError.feedbackSteps }
        if let n = calibrationTokens, n < 2, calibrated { throw RecipeError.calibrationTokens }
        if let n = analysisTokens, n < 2 { throw RecipeError.analysisTokens }
        if let n = tableRows, n < 1 { throw RecipeError.tableRows }
        if let ps = precisions, ps.isEmpty || !ps.allSatisfy({ [1, 2, 4].contains($0) }) {
            throw RecipeError.precisions
        }
        if let n = lloydIterations, n < 0 { throw RecipeError.lloydIterations }
        if method != .lowra && (codebook != nil || (lloydIterations ?? 0) > 0) { throw RecipeError.codebookForBaseline }
        guard [4, 8, 16].contains(headBits) else { throw RecipeError.headBits(headBits) }
        let precisions =
            self.precisions.map { Array(Set($0)).sorted() }
            ?? (sensitivity == .fisher && precisionMap == nil ? Self.defaultPrecisions(bits: bits, fisher: true) : nil)
        return ResolvedRecipe(
            recipe: self, calibrationText: text, errorFeedback: errorFeedback, sensitivity: sensitivity,
            initialization: initialization, precisions: precisions,
            calibrationTokens: calibrationTokens ?? effort.calibrationTokens,
            analysisTokens: analysisTokens ?? effort.analysisTokens, tableRows: tableRows ?? effort.tableRows,
            loftqSteps: loftqSteps ?? (calibrated ? effort.calibratedSteps : effort.dataFreeSteps),
            feedbackSteps: feedbackSteps, largeModelFeedbackSteps: effort.largeModelFeedbackSteps)
    }
}

/// A recipe with its defaults applied: what a run does.
public struct ResolvedRecipe: Sendable {
    public let recipe: QuantizationRecipe
    /// The calibration text (nil: data-free).
    public let calibrationText: String?
    public let errorFeedback: Bool
    public let sensitivity: QuantizationRecipe.Sensitivity
    public let initialization: QuantizationRecipe.Initialization
    /// nil: the quantizer's default for the budget.
    public let precisions: [Int]?
    /// The recipe's or its preset's.
    public let calibrationTokens: Int
    public let analysisTokens: Int?
    public let tableRows: Int?
    public let loftqSteps: Int
    /// Asked for (nil: the preset's by model size, `feedbackSteps(config:)`).
    public let feedbackSteps: Int?
    let largeModelFeedbackSteps: Int?

    /// Of the alternating steps, the last ones that quantize with error feedback on a model of
    /// `config` (nil: every step).
    public func feedbackSteps(config: ModelConfig) -> Int? {
        if let feedbackSteps { return min(feedbackSteps, loftqSteps) }
        return config.linearParameters >= QuantizationRecipe.largeModelParameters ? largeModelFeedbackSteps : nil
    }

    public var calibrated: Bool { calibrationText != nil }
    /// Whether the initial adapter comes from an alternating low-rank fit (LoftQ or CLoQ).
    public var fitsAdapter: Bool { initialization == .loftq || initialization == .cloq }

    /// The head's encoding in the quantized directory (nil: the source's).
    public var headEncoding: GGMLType? { recipe.headBits == 16 ? nil : recipe.headBits == 8 ? .q8_0 : .q4_0 }

    /// The quantizer's request for a model of `config` whose initial adapter is `adapter` (from
    /// `initialAdapter(config:)`), without what needs the model's data (calibration tokens, the
    /// Fisher, transforms: `QuantizeRequest.calibration`, `.sensitivity`, `.transform`, set by the
    /// caller).
    public func request(config: ModelConfig, adapter: (rank: Int, alpha: Float)?) throws -> QuantizeRequest {
        let r = recipe
        var request = QuantizeRequest(method: r.method, bits: r.bits)
        if let ps = precisions { request.options.precisions = ps }
        if let c = r.codebook { request.options.scope = c }
        if let n = r.lloydIterations { request.options.lloydIterations = n }
        request.options.weighting = r.weighting
        request.options.doubleQuant = r.doubleQuant
        request.assigner = r.assigner
        request.seed = r.seed
        if let path = r.precisionMap { request.precisionMap = try PrecisionMap.read(path) }
        if let encoding = headEncoding {
            guard config.hiddenSize % 32 == 0 else { throw RecipeError.headBlocks(r.headBits, config.hiddenSize) }
            request.headEncoding = encoding
        }
        if let adapter, fitsAdapter {
            request.loftq = LoftQRequest(
                rank: adapter.rank, alpha: adapter.alpha, steps: loftqSteps, calibrated: initialization == .cloq,
                feedbackSteps: feedbackSteps(config: config))
        }
        return request
    }

    /// The calibration of a model of `config` on `tokens` of the recipe's text (`source` names it):
    /// windows of up to 512 tokens, with the recipe's error feedback, damping and level refit.
    public func calibration(config: ModelConfig, tokens: [Int], source: String) throws -> CalibrationRequest {
        var c = try CalibrationRequest(
            config: config, tokens: tokens, window: min(512, tokens.count, config.maxPositions), source: source)
        c.errorFeedback = errorFeedback
        c.damping = recipe.damping
        c.refitLevels = recipe.refitLevels
        c.refineCodes = recipe.refineCodes
        c.tableRows = tableRows
        if let n = analysisTokens { c.analysisTokens = max(c.window, min(n, c.usedTokens)) / c.window * c.window }
        return c
    }

    /// The initial adapter's rank and alpha (its factors come from pass 2, or Kaiming's A with B = 0),
    /// or nil for `--init none`; refuses a rank or alpha the model cannot take.
    public func initialAdapter(config: ModelConfig) throws -> (rank: Int, alpha: Float)? {
        guard initialization != .none else { return nil }
        let rank = recipe.rank ?? LoRAAdapter.defaultRank(config)
        _ = try LoRAAdapter.layout(config: config, rank: rank)  // refuses a rank the model cannot take
        return (rank, try LoRAAdapter.alpha(recipe.alpha, rank: rank))
    }
}

/// Why a recipe cannot run, in words for the user (`description`).
public enum RecipeError: Error, Equatable, Sendable, CustomStringConvertible {
    case bitsOutOfRange(Double)
    /// QLoRA and LoftQ mix whole layers at 2 and 4 bits: no budget below 2.
    case baselineBelowTwoBits(QuantMethod)
    case needsCalibration(String)
    case refitNeedsErrorFeedback
    case refineNeedsErrorFeedback
    case refinePasses
    case cloqNeedsErrorFeedback
    case damping
    case rotationBlock
    case loftqSteps
    case feedbackSteps
    case calibrationTokens
    case analysisTokens
    case tableRows
    case precisions
    case lloydIterations
    case codebookForBaseline
    case headBits(Int)
    case headBlocks(Int, Int)
    case reconstructNeedsCalibratedLowRA

    /// The ≥ 2-bit rule of the baselines, in words (a refusal's reason, and the experiment's note).
    public static func noBudgetBelowTwo(_ method: QuantMethod) -> String {
        "\(method.rawValue) mixes whole layers at 2 and 4 bits; it has no budget below 2"
    }

    public var description: String {
        switch self {
        case .bitsOutOfRange(let b): "--bits must be between 1 and 4, got \(b)"
        case .baselineBelowTwoBits(let m):
            "\(m.rawValue) supports budgets of 2 bits or more (it mixes whole layers at 2 and 4 bits); "
                + "use --method lowra below 2 bits"
        case .needsCalibration(let what): "\(what) needs --calibration (the text it is measured on)"
        case .refitNeedsErrorFeedback: "--refit-levels needs --calibration TEXT with --calibration-method gptq"
        case .refineNeedsErrorFeedback: "--refine-codes needs --calibration TEXT with --calibration-method gptq"
        case .refinePasses: "--refine-codes must not be negative"
        case .cloqNeedsErrorFeedback: "--init cloq needs --calibration (with --calibration-method gptq)"
        case .damping: "--damping must be positive"
        case .rotationBlock: "--rotation-block takes a positive size, with --rotate"
        case .loftqSteps: "--loftq-steps must be positive"
        case .feedbackSteps: "--feedback-steps must be positive"
        case .calibrationTokens: "--calibration-tokens must be at least 2"
        case .analysisTokens: "--analysis-tokens must be at least 2"
        case .tableRows: "--table-rows must be positive"
        case .precisions: "--precisions takes values from 1,2,4"
        case .lloydIterations: "--lloyd-iters must not be negative"
        case .codebookForBaseline: "--codebook and --lloyd-iters apply to --method lowra only"
        case .headBits(let b): "--head-bits takes 4, 8 or 16, got \(b)"
        case .reconstructNeedsCalibratedLowRA:
            "--reconstruct needs --method lowra and a calibration text (it trains per-row codebooks on it)"

        case .headBlocks(let b, let c):
            "--head-bits \(b) writes blocks of 32 values; hidden size \(c) is not a multiple of 32"
        }
    }

    /// A mistake in how the command was called (shown with its usage), rather than a combination
    /// the quantizer cannot run.
    public var isUsage: Bool {
        switch self {
        case .damping, .analysisTokens, .tableRows, .rotationBlock, .loftqSteps, .feedbackSteps, .precisions,
            .lloydIterations, .codebookForBaseline, .refitNeedsErrorFeedback, .refineNeedsErrorFeedback, .refinePasses:
            true
        default: false
        }
    }
}

extension RecipeError: LocalizedError {
    public var errorDescription: String? { description }
}
