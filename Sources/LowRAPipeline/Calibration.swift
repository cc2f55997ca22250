import Foundation
import LowRAModel
import LowRAQuant
import LowRATensor

/// What calibrated quantization reads: a generic text (neither the task's data nor the drift
/// text, so the base stays task-agnostic) cut into windows, and which of its uses are on.
public struct CalibrationRequest: Sendable {
    public var config: ModelConfig
    public var tokens: [Int]
    /// Tokens per window; each window starts at position 0. Whole windows only.
    public var window: Int
    /// Named in the report: "file (N tokens)".
    public var source: String
    /// GPTQ-style error feedback on each row's codebook through the full H, with H gathered
    /// sequentially (layer l sees the already-quantized layers before it) and each channel's
    /// cost in the precision assignment its output error. Off: the diagonal E[x_j²] only weighs
    /// Lloyd-Max and the error table (`--calibration-method diag`).
    public var errorFeedback: Bool = true
    /// H + λI with λ this fraction of H's mean diagonal.
    public var damping: Float = 0.01
    /// After error feedback, each row's levels refit to its codes through H (`refitLevels`).
    public var refitLevels = false
    /// After error feedback (and the refit), sweeps of discrete code refinement through H (`refineCodes`).
    public var refineCodes = 0
    /// Rows per layer whose error feedback the assignment's error tables measure at each
    /// precision (nil: every row). The other rows' errors are their E[x²]-weighted errors scaled by
    /// the layer's ratio of the two on the measured rows: error feedback costs out·in² per layer
    /// and precision, this rows·in².
    public var tableRows: Int?
    /// The first tokens (whole windows) that pass 1 reads for the assignment's error tables;
    /// pass 2 (error feedback, CLoQ) reads them all.
    public var analysisTokens: Int

    /// The request pass 1 runs on: the first `analysisTokens` only.
    public var analysis: CalibrationRequest {
        var r = self
        r.tokens = Array(tokens.prefix(analysisTokens))
        return r
    }

    public init(config: ModelConfig, tokens: [Int], window: Int, source: String) throws {
        guard window >= 2, tokens.count >= window else {
            throw LowRAError(
                .invalidArgument,
                "calibration needs at least one window of \(max(window, 2)) tokens, got \(tokens.count) tokens")
        }
        self.config = config
        self.tokens = tokens
        self.window = window
        self.source = source
        analysisTokens = tokens.count / window * window
    }

    /// Tokens actually used: whole windows.
    public var usedTokens: Int { tokens.count / window * window }
    public var description: String {
        let analysis = analysisTokens < usedTokens ? ", the first \(analysisTokens) for analysis" : ""
        let tables = tableRows.map { ", error tables from \($0) rows per layer" } ?? ""
        return "\(source) (\(usedTokens) tokens\(analysis); "
            + (errorFeedback ? "error feedback, damping \(damping)\(tables))" : "diagonal)")
    }
}

/// A workspace up to this size serves every call of a `BlockCalibrator`, and carried values up to it
/// stay allocated: on SmolLM2 (81 MB) a fresh workspace per call (five a block) cost its pages
/// again, a fifth of the calibration forwards' time in page faults. Larger ones (7B width: about
/// 1 GB, of which a call touches what its segments use) are taken fresh, so that only the buffers
/// in use are resident.
private let keptWorkspaceBytes = 256 << 20

/// The calibration windows' residual stream, carried through the model one block at a time:
/// `run` passes it through an original block (pass 1), `statistics(at:of:)` and `finishBlock`
/// through one being quantized (pass 2), gathering the second moments H = E[x xᵀ] of the block's
/// linear inputs.
/// Holds (tokens, hidden) floats, never the model's activations for more than a few windows.
public final class BlockCalibrator: @unchecked Sendable {
    public let request: CalibrationRequest
    /// The block the carried stream enters next.
    public private(set) var block = 0
    /// Wall time spent in `run` so far.
    public private(set) var seconds = 0.0
    private let weights: ModelWeights
    private var x: [Float]  // (windows · window, C)
    private let windows: Int

    public init(_ request: CalibrationRequest, weights: ModelWeights) {
        self.request = request
        self.weights = weights
        let c = request.config
        windows = request.tokens.count / request.window
        x = [Float](repeating: 0, count: windows * request.window * c.hiddenSize)
        x.withUnsafeMutableBufferPointer { xb in
            for (r, tok) in request.tokens.prefix(windows * request.window).enumerated() {
                weights.embedding.row(tok, into: xb.baseAddress! + r * c.hiddenSize)
            }
        }
    }

    /// Runs `blk` (in place of block `block`, the original weights: pass 1) on every window.
    /// Returns H per linear input when `statistics`; with `advance` the carried stream becomes the
    /// block's output and `block` moves on.
    public func run(_ blk: BlockWeights, statistics: Bool, advance: Bool) throws -> [LinearInput: InputCovariance] {
        let started = Date()
        defer { seconds += Date().timeIntervalSince(started) }
        let c = request.config
        let (one, c1, chunk, ws, buffer) = oneBlock(blk)
        let t = request.window
        let rope = RopeTable(start: 0, count: t, frequencies: c.ropeFrequencies)
        var sums = [LinearInput: [Float]]()
        var columns = [LinearInput: Int]()
        if statistics {
            for kind in LinearKind.allCases { columns[kind.input] = kind.shape(c).in }
            for (site, n) in columns { sums[site] = [Float](repeating: 0, count: n * n) }
        }
        let observe: LinearInputObserver? =
            statistics
            ? { _, site, input, rows, n in
                sums[site]!.withUnsafeMutableBufferPointer { gramUpdate(input, $0.baseAddress!, n: n, k: rows) }
            } : nil
        for first in stride(from: 0, to: windows, by: chunk) {
            let span = (first * t * c.hiddenSize)..<((first + chunk) * t * c.hiddenSize)
            x.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress! + span.lowerBound, count: span.count) }
            one.blockForward(
                0, config: c1, x: buffer, workspace: ws, rope: rope, cache: nil, adapter: nil, observe: observe)
            if advance {
                x.withUnsafeMutableBufferPointer {
                    ($0.baseAddress! + span.lowerBound).update(from: buffer, count: span.count)
                }
            }
        }
        blk.releaseStored()  // each block is passed once per call: a model larger than memory goes through
        if advance { block += 1 }
        // Each sum becomes its H in place and moves out: at LLaMA-2-7B's width the four are 677 MB.
        var out = [LinearInput: InputCovariance]()
        for site in Array(sums.keys) { out[site] = covariance(sums.removeValue(forKey: site)!, n: columns[site]!) }
        return out
    }

    /// H = E[x xᵀ] from the upper triangle of Σ x xᵀ over every window, in place.
    private func covariance(_ sum: [Float], n: Int) -> InputCovariance {
        var v = sum
        let tokens = windows * request.window
        v.withUnsafeMutableBufferPointer { buf in
            mirrorUpper(buf.baseAddress!, n: n)
            let count = Float(tokens)
            for i in buf.indices { buf[i] /= count }
        }
        return InputCovariance(n: n, values: v, tokens: tokens)
    }

    /// A one-block model of `blk`, the windows per forward (about 2048 rows, a divisor of the
    /// window count), its workspace and a (rows, C) buffer of that workspace.
    private func oneBlock(
        _ blk: BlockWeights
    ) -> (ModelWeights, ModelConfig, Int, ForwardWorkspace, UnsafeMutablePointer<Float>) {
        var one = weights
        one.blocks = [blk]
        var c1 = request.config
        c1.numLayers = 1
        let t = request.window
        var chunk = max(1, min(windows, 2048 / t))
        while windows % chunk != 0 { chunk -= 1 }
        let scratch = one.scratchFloats(rows: chunk * t)
        if let kept = keptWorkspace, kept.scratch >= scratch { return (one, c1, chunk, kept.ws, kept.buffer) }
        let ws = ForwardWorkspace(
            config: c1, batch: chunk, tokens: t, keys: t, rank: 0, saveEveryLayer: false, weightScratch: scratch)
        let buffer = ws.allocate(chunk * t * c1.hiddenSize)
        if ws.bytes <= keptWorkspaceBytes { keptWorkspace = (ws, buffer, scratch) }
        return (one, c1, chunk, ws, buffer)
    }

    private var keptWorkspace: (ws: ForwardWorkspace, buffer: UnsafeMutablePointer<Float>, scratch: Int)?

    // MARK: The sequential pass through quantized layers

    /// The next segment of block `block` that `statistics(at:)` and `finishBlock` run (an index
    /// into `BlockSegment.inOrder`), and the values crossing its cuts for every window.
    public private(set) var segment = 0
    /// Created on the first sequential call; empty between blocks (each value is freed after its last segment).
    private lazy var carried = Carried(rows: windows * request.window, config: request.config)

    /// Every window's xn1 or xn2 (tokens, C), attention output (tokens, H*D) and SwiGLU
    /// activation (tokens, F): each written by one segment, read by the next, and freed once
    /// spent, so that while the layers of a site are packed only what the rest of the block still
    /// reads is held (at LLaMA-2-7B's width, act's 180 MB while down_proj is packed).
    private final class Carried {
        enum Value: CaseIterable {
            /// xn1, then xn2 (one buffer: xn1 is spent before xn2 is made).
            case normed
            case attention
            case activation

            func columns(_ c: ModelConfig) -> Int {
                switch self {
                case .normed: c.hiddenSize
                case .attention: c.qDim
                case .activation: c.intermediateSize
                }
            }

            /// The values segment `s` reads or writes.
            static func used(by s: BlockSegment) -> [Value] {
                switch s {
                case .until(.attention): [.normed]
                case .until(.output), .until(.mlp): [.normed, .attention]
                case .until(.down): [.normed, .activation]
                case .end: [.activation]
                }
            }

            /// The value no segment after `s` reads.
            static func spent(after s: BlockSegment) -> Value? {
                switch s {
                case .until(.mlp): .attention
                case .until(.down): .normed
                case .end: .activation
                default: nil
                }
            }
        }

        private let rows: Int
        private let config: ModelConfig
        private var buffers = [Value: UnsafeMutablePointer<Float>]()
        /// Small values stay allocated from block to block (SmolLM2: 44 MB), sparing their pages.
        private let keeps: Bool

        init(rows: Int, config: ModelConfig) {
            (self.rows, self.config) = (rows, config)
            keeps = 4 * rows * Value.allCases.reduce(0) { $0 + $1.columns(config) } <= keptWorkspaceBytes
        }

        /// Row r of `value` when segment `s` uses it (allocated on first use), else nil.
        func pointer(_ value: Value, for s: BlockSegment, row r: Int) -> UnsafeMutablePointer<Float>? {
            guard Value.used(by: s).contains(value) else { return nil }
            let p = buffers[value] ?? .allocate(capacity: rows * value.columns(config))
            buffers[value] = p
            return p + r * value.columns(config)
        }

        func free(after s: BlockSegment) {
            if !keeps, let v = Value.spent(after: s) { buffers.removeValue(forKey: v)?.deallocate() }
        }

        deinit { for p in buffers.values { p.deallocate() } }
    }

    /// Pass 2's stream, one site of block `block` at a time (GPTQ's true-sequential order): runs
    /// the block up to `site`'s input with `blk`, whose layers before the site are already the
    /// quantized ones (with their initial adapter), and returns H of that input.
    /// Every linear layer runs once: a block costs one forward, where gathering all four sites
    /// from the original block and then passing the quantized one costs two. Sites come in
    /// model order; `finishBlock` ends the block.
    public func statistics(at site: LinearInput, of blk: BlockWeights) throws -> InputCovariance {
        let target = BlockSegment.inOrder.firstIndex(of: .until(site))!
        guard target >= segment else {
            throw LowRAError(
                .invalidArgument, "sequential calibration: \(site)'s input of block \(block) was passed already")
        }
        let n = LinearKind.allCases.first { $0.input == site }!.shape(request.config).in
        var sum = [Float](repeating: 0, count: n * n)
        try runSegments(through: target, blk) { observed, input, rows, cols in
            guard observed == site else { return }
            sum.withUnsafeMutableBufferPointer { gramUpdate(input, $0.baseAddress!, n: cols, k: rows) }
        }
        return covariance(sum, n: n)
    }

    /// Runs the rest of block `block` with `blk` (every layer quantized by now); the stream moves
    /// on to the next block.
    public func finishBlock(_ blk: BlockWeights) throws {
        try runSegments(through: BlockSegment.inOrder.count - 1, blk) { _, _, _, _ in }
        blk.releaseStored()
        segment = 0
        block += 1
    }

    private func runSegments(
        through last: Int, _ blk: BlockWeights, observe: @escaping (LinearInput, UnsafePointer<Float>, Int, Int) -> Void
    ) throws {
        guard segment <= last else { return }
        let started = Date()
        defer { seconds += Date().timeIntervalSince(started) }
        let c = request.config
        let (one, c1, chunk, ws, _) = oneBlock(blk)
        let t = request.window
        let kept = carried
        let rope = RopeTable(start: 0, count: t, frequencies: c.ropeFrequencies)
        let observer: LinearInputObserver = { _, site, input, rows, cols in observe(site, input, rows, cols) }
        x.withUnsafeMutableBufferPointer { xb in
            for part in BlockSegment.inOrder[segment...last] {
                for first in stride(from: 0, to: windows, by: chunk) {
                    let r = first * t
                    let xn = kept.pointer(.normed, for: part, row: r)
                    let att = kept.pointer(.attention, for: part, row: r)
                    let act = kept.pointer(.activation, for: part, row: r)
                    one.blockSegment(
                        part, 0, config: c1, x: xb.baseAddress! + r * c.hiddenSize, workspace: ws, rope: rope,
                        adapter: nil, observe: observer, carried: (xn, att, xn, act))
                }
                kept.free(after: part)
            }
        }
        withExtendedLifetime(ws) {}
        segment = last + 1
    }
}
