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

/// The calibration windows' residual stream, carried through the model one block at a time:
/// `run` passes it through a block (the original one, or its quantized replacement with the
/// initial adapter), gathering the second moments H = E[x xᵀ] of the block's four linear inputs.
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

    /// Runs `blk` (in place of block `block`; its LoRA factors per kind, if any, at scale
    /// `loraScale`) on every window. Returns H per linear input when `statistics`; with `advance`
    /// the carried stream becomes the block's output and `block` moves on.
    public func run(
        _ blk: BlockWeights, lora: [LinearKind: (a: [Float], b: [Float])] = [:], rank: Int = 0, alpha: Float = 1,
        statistics: Bool, advance: Bool
    ) throws -> [LinearInput: InputCovariance] {
        let started = Date()
        defer { seconds += Date().timeIntervalSince(started) }
        let c = request.config
        var one = weights
        one.blocks = [blk]
        var c1 = c
        c1.numLayers = 1
        var adapter: LoRAAdapter?
        if !lora.isEmpty {
            adapter = try LoRAAdapter(config: c1, rank: rank, alpha: alpha)
            for (kind, f) in lora { adapter!.setFactors(adapter!.slot(layer: 0, kind: kind), a: f.a, b: f.b) }
        }
        let t = request.window
        // Windows per forward: about 2048 rows, a divisor of the window count.
        var chunk = max(1, min(windows, 2048 / t))
        while windows % chunk != 0 { chunk -= 1 }
        let ws = ForwardWorkspace(
            config: c1, batch: chunk, tokens: t, keys: t, rank: adapter?.rank ?? 0, saveEveryLayer: false,
            weightScratch: one.scratchFloats(rows: chunk * t))
        let rows = chunk * t
        let buffer = ws.allocate(rows * c.hiddenSize)
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
            func forward(_ view: AdapterView?) {
                one.blockForward(
                    0, config: c1, x: buffer, workspace: ws, rope: rope, cache: nil, adapter: view, observe: observe)
            }
            if let adapter { adapter.withView(forward) } else { forward(nil) }
            if advance {
                x.withUnsafeMutableBufferPointer {
                    ($0.baseAddress! + span.lowerBound).update(from: buffer, count: span.count)
                }
            }
        }
        blk.releaseStored()  // each block is passed once per call: a model larger than memory goes through
        if advance { block += 1 }
        let tokens = windows * t
        // Each sum becomes its H in place and moves out: at LLaMA-2-7B's width the four are 677 MB.
        var out = [LinearInput: InputCovariance]()
        for site in Array(sums.keys) {
            var v = sums.removeValue(forKey: site)!
            let n = columns[site]!
            v.withUnsafeMutableBufferPointer { buf in
                mirrorUpper(buf.baseAddress!, n: n)
                let count = Float(tokens)
                for i in buf.indices { buf[i] /= count }
            }
            out[site] = InputCovariance(n: n, values: v, tokens: tokens)
        }
        return out
    }
}
