import CLowRAPacked
import Foundation
import LowRATensor

/// How one weight tensor is quantized, apart from the precision of each channel.
public struct QuantizerOptions: Codable, Sendable, Equatable {
    /// Precisions a channel may take, from {1, 2, 4}.
    public var precisions: [Int] = [1, 2, 4]
    /// Weighted Lloyd-Max iterations; 0 keeps the NormalFloat levels (the qlora baseline).
    public var lloydIterations: Int = 2
    public var weighting: LloydWeighting = .absmax
    public var scope: CodebookScope = .channel
    public var doubleQuant: Bool = true

    public init() {}

    /// These options with only the precisions that `bits` (one per row) use: a layer re-fitted
    /// at precisions already assigned (LoftQ, CLoQ).
    public func restricted(to bits: [UInt8]) -> QuantizerOptions {
        var o = self
        o.precisions = Array(Set(bits.map(Int.init))).sorted()
        return o
    }

    enum CodingKeys: String, CodingKey {
        case precisions
        case lloydIterations = "lloyd_iterations"
        case weighting, scope
        case doubleQuant = "double_quant"
    }
}

/// Everything about one tensor that precision assignment and packing need: block scales,
/// codebooks for every allowed precision, and the error table SSE(row, precision).
public struct TensorAnalysis: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    public let options: QuantizerOptions
    public let absmax: AbsmaxStorage
    /// Per precision: levels (out, 2^p) and thresholds (out, 2^p - 1), one row per channel
    /// (identical rows under tensor scope).
    public var levels: [Int: [Float]]
    public var thresholds: [Int: [Float]]
    /// Per precision: squared reconstruction error of each row in the original scale, (out).
    public var errors: [Int: [Double]]
    /// Per precision: weighted MSE of the learner on each row, before and after (out, 2).
    public var learnerMSE: [Int: [(before: Double, after: Double)]]

    /// Σ_j c_j w[r][j]² (c the column weights): the error of dropping a row, for relative errors.
    public var rowEnergy: [Double]
}

extension TensorAnalysis {
    /// Only what the assignment and the report read — each row's errors at each precision and its
    /// energy — for a layer that will be quantized afresh (LoftQ and CLoQ re-analyze what they
    /// quantize): codebooks, thresholds and block scales dropped, 13.5 MB → 1.3 MB a LLaMA-2-7B block.
    public var errorsOnly: TensorAnalysis {
        TensorAnalysis(
            outFeatures: outFeatures, inFeatures: inFeatures, options: options,
            absmax: AbsmaxStorage(raw: [], doubleQuant: options.doubleQuant), levels: [:], thresholds: [:],
            errors: errors, learnerMSE: [:], rowEnergy: rowEnergy)
    }
}

/// Learns codebooks for each precision and measures each row's error at each precision (with
/// `rowBits` and channel codebooks: only at each row's own precision, as LoftQ needs).
/// w: (out, in) row-major. `columnWeights` (in), when given, weighs each input column's squared
/// error (E[x_j²] from calibration: the error becomes that of the layer's output); without it the
/// error is the plain squared weight error, as in the paper.
public func analyzeTensor(
    _ w: [Float], out: Int, in inF: Int, options: QuantizerOptions, columnWeights: [Float]? = nil,
    rowBits: [UInt8]? = nil
) -> TensorAnalysis {
    // With channel codebooks and the rows' precisions known (LoftQ re-quantizing a layer), each
    // row is fitted and scored at its own precision only; the other entries stay zero.
    let only = options.scope == .channel ? rowBits : nil
    let nb = (inF + AbsmaxStorage.block - 1) / AbsmaxStorage.block
    let absmax = w.withUnsafeBufferPointer {
        AbsmaxStorage(raw: blockAbsmax($0.baseAddress!, out: out, in: inF), doubleQuant: options.doubleQuant)
    }
    let scales = UnsafeMutablePointer<Float>.allocate(capacity: out * nb)
    scales.initialize(from: absmax.decoded(count: out * nb), count: out * nb)
    let colW = UnsafeMutablePointer<Float>.allocate(capacity: inF)
    colW.initialize(from: columnWeights ?? [Float](repeating: 1, count: inF), count: inF)
    defer {
        scales.deallocate()
        colW.deallocate()
    }
    var levels = [Int: [Float]]()
    var thresholds = [Int: [Float]]()
    var errors = [Int: [Double]]()
    var learner = [Int: [(before: Double, after: Double)]]()
    var energy = [Double](repeating: 0, count: out)
    w.withUnsafeBufferPointer { wb in
        let wp = wb.baseAddress!
        for r in 0..<out {
            var e = 0.0
            for j in 0..<inF { e += Double(colW[j]) * Double(wp[r * inF + j]) * Double(wp[r * inF + j]) }
            energy[r] = e
        }
        for p in options.precisions {
            let k = 1 << p
            let initial = NormalFloat.levels(bits: p)
            let initialT = p == 2 ? NormalFloat.nf2Thresholds : midpointThresholds(initial)
            var lv = [Float](repeating: 0, count: out * k)
            var th = [Float](repeating: 0, count: out * (k - 1))
            var mse = [(before: Double, after: Double)](repeating: (0, 0), count: out)
            lv.withUnsafeMutableBufferPointer { lvb in
                th.withUnsafeMutableBufferPointer { thb in
                    mse.withUnsafeMutableBufferPointer { mb in
                        let dst = UncheckedSendable((lvb.baseAddress!, thb.baseAddress!, mb.baseAddress!))
                        let inputs = UncheckedSendable((wp, scales, colW))
                        parallelFor(out, minPerChunk: 4) { rows in
                            let (wp, scales, colW) = inputs.value
                            let x = UnsafeMutablePointer<Float>.allocate(capacity: inF)
                            let wt = UnsafeMutablePointer<Float>.allocate(capacity: inF)
                            defer {
                                x.deallocate()
                                wt.deallocate()
                            }
                            for r in rows where only == nil || Int(only![r]) == p {
                                normalizeRow(wp, scales, r, inF, nb, options.weighting, colW, x, wt)
                                let res = weightedLloydMax(
                                    points: x, weights: wt, count: inF, initialLevels: initial,
                                    initialThresholds: initialT, iterations: options.lloydIterations)
                                for i in 0..<k { dst.value.0[r * k + i] = res.levels[i] }
                                for i in 0..<(k - 1) { dst.value.1[r * (k - 1) + i] = res.thresholds[i] }
                                dst.value.2[r] = (res.history.first!, res.history.last!)
                            }
                        }
                    }
                }
            }
            if options.scope == .tensor {
                // The paper's implementation: average the channels' levels and thresholds.
                var avgL = [Double](repeating: 0, count: k)
                var avgT = [Double](repeating: 0, count: k - 1)
                for r in 0..<out {
                    for i in 0..<k { avgL[i] += Double(lv[r * k + i]) }
                    for i in 0..<(k - 1) { avgT[i] += Double(th[r * (k - 1) + i]) }
                }
                for r in 0..<out {
                    for i in 0..<k { lv[r * k + i] = Float(avgL[i] / Double(out)) }
                    for i in 0..<(k - 1) { th[r * (k - 1) + i] = Float(avgT[i] / Double(out)) }
                }
            }
            lv.withUnsafeMutableBufferPointer { lb in
                for r in 0..<out { snapToIntegerLevels(lb.baseAddress! + r * k, count: k) }
            }
            levels[p] = lv
            thresholds[p] = th
            learner[p] = mse
            var err = [Double](repeating: 0, count: out)
            err.withUnsafeMutableBufferPointer { eb in
                lv.withUnsafeBufferPointer { lb in
                    th.withUnsafeBufferPointer { tb in
                        let io = UncheckedSendable(
                            (eb.baseAddress!, wp, scales, colW, lb.baseAddress!, tb.baseAddress!))
                        parallelFor(out, minPerChunk: 8) { rows in
                            let (dst, wp, scales, colW, lv, th) = io.value
                            for r in rows where only == nil || Int(only![r]) == p {
                                dst[r] = rowError(
                                    wp, scales, r, inF, nb, levels: lv + r * k, thresholds: th + r * (k - 1), k: k,
                                    colW: colW)
                            }
                        }
                    }
                }
            }
            errors[p] = err
        }
    }
    return TensorAnalysis(
        outFeatures: out, inFeatures: inF, options: options, absmax: absmax, levels: levels,
        thresholds: thresholds, errors: errors, learnerMSE: learner, rowEnergy: energy)
}

/// Moves a row's `count` levels onto its uint8 grid min + step · u (`lowra_snap_levels_row`), so the
/// integer kernels multiply exactly the levels the model stores: each level moves by at most 1/510 of
/// the row's range. Idempotent, bit for bit: a row already on its grid is left as it is.
public func snapToIntegerLevels(_ levels: UnsafeMutablePointer<Float>, count: Int) {
    lowra_snap_levels_row(levels, UInt32(count))
}

/// The same for every row of per-row codebooks: row r's levels are levels[offsets[r]..<offsets[r + 1]].
public func snapToIntegerLevels(_ levels: inout [Float], rowOffsets offsets: [Int]) {
    levels.withUnsafeMutableBufferPointer { b in
        for r in 0..<(offsets.count - 1) {
            snapToIntegerLevels(b.baseAddress! + offsets[r], count: offsets[r + 1] - offsets[r])
        }
    }
}

/// x = w / scale of its block, clamped to [-1, 1]; wt = the learner weight of its block.
@inline(__always)
func normalizeRow(
    _ w: UnsafePointer<Float>, _ scales: UnsafePointer<Float>, _ r: Int, _ inF: Int, _ nb: Int,
    _ weighting: LloydWeighting, _ colW: UnsafePointer<Float>, _ x: UnsafeMutablePointer<Float>,
    _ wt: UnsafeMutablePointer<Float>
) {
    let row = w + r * inF
    for blk in 0..<nb {
        let s = scales[r * nb + blk]
        // A zero block carries no error; a tiny weight keeps the learner's sums well defined.
        let v = weighting == .absmax ? s : s * s
        for j in (blk * AbsmaxStorage.block)..<min(inF, (blk + 1) * AbsmaxStorage.block) {
            x[j] = s > 0 ? min(1, max(-1, row[j] / s)) : 0
            wt[j] = max(v * colW[j], 1e-30)
        }
    }
}

/// Σ_j colW_j (w_rj − q_rj)² for row r quantized with its levels (k) and thresholds (k − 1).
@inline(__always)
func rowError(
    _ w: UnsafePointer<Float>, _ scales: UnsafePointer<Float>, _ r: Int, _ inF: Int, _ nb: Int,
    levels: UnsafePointer<Float>, thresholds: UnsafePointer<Float>, k: Int, colW: UnsafePointer<Float>
) -> Double {
    var e = 0.0
    let row = w + r * inF
    for blk in 0..<nb {
        let s = scales[r * nb + blk]
        for j in (blk * AbsmaxStorage.block)..<min(inF, (blk + 1) * AbsmaxStorage.block) {
            let v = row[j]
            let x = s > 0 ? min(1, max(-1, v / s)) : 0
            let q = s * levels[binIndex(x, thresholds, k - 1)]
            e += Double(colW[j]) * Double(v - q) * Double(v - q)
        }
    }
    return e
}

extension TensorAnalysis {
    /// Packs w with the given per-row precisions (each must be one of the analyzed ones), each
    /// weight rounded to its bin (round to nearest, the paper's quantizer).
    public func pack(_ w: [Float], bits: [UInt8]) throws -> PackedLinear {
        try checkPrecisions(bits)
        let out = outFeatures
        let inF = inFeatures
        let nb = (inF + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        let scales = absmax.decoded(count: out * nb)
        var codes = [UInt8](repeating: 0, count: out * inF)
        codes.withUnsafeMutableBufferPointer { cb in
            w.withUnsafeBufferPointer { wb in
                scales.withUnsafeBufferPointer { sb in
                    let io = UncheckedSendable((cb.baseAddress!, wb.baseAddress!, sb.baseAddress!))
                    parallelFor(out, minPerChunk: 8) { rows in
                        let (dst, w, scales) = io.value
                        for r in rows {
                            let b = Int(bits[r])
                            let k = 1 << b
                            thresholds[b]!.withUnsafeBufferPointer { tb in
                                let t = tb.baseAddress! + r * (k - 1)
                                let wr = w + r * inF
                                for blk in 0..<nb {
                                    let s = scales[r * nb + blk]
                                    for j in (blk * AbsmaxStorage.block)..<min(inF, (blk + 1) * AbsmaxStorage.block) {
                                        let x = s > 0 ? min(1, max(-1, wr[j] / s)) : 0
                                        dst[r * inF + j] = UInt8(binIndex(x, t, k - 1))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return try pack(codes: codes, bits: bits)
    }

    /// Packs w at the given per-row precisions with error feedback (`errorFeedbackQuantize`)
    /// through `inverseFactor`, the upper Cholesky factor of the damped H⁻¹; returns each row's
    /// output error tr(D H Dᵀ) too.
    /// With `covariance` (the damped H itself, per-row codebooks only) each row's levels are then
    /// refit to its codes (`refitLevels`, when `refit`) and snapped to the kernels' grid, its codes
    /// refined for those levels (`refineCodes`, `refinePasses` sweeps), and the row errors measured
    /// again for what is kept.
    public func packWithErrorFeedback(
        _ w: [Float], bits: [UInt8], inverseFactor u: [Float], covariance: [Float]? = nil, refit: Bool = true,
        refinePasses: Int = 0
    ) throws -> (packed: PackedLinear, rowErrors: [Double]) {
        try checkPrecisions(bits)
        let books = codebooks(bits)
        let r = errorFeedbackQuantize(w, out: outFeatures, in: inFeatures, inverseFactor: u, codebooks: books)
        guard let h = covariance, options.scope == .channel, refit || refinePasses > 0 else {
            return (try pack(codes: r.codes, bits: bits), r.rowErrors)
        }
        var levels = books.levels
        if refit {
            levels = refitLevels(w, out: outFeatures, in: inFeatures, codes: r.codes, codebooks: books, covariance: h)
            snapToIntegerLevels(&levels, rowOffsets: books.offsets)
        }
        var codes = r.codes
        var refined = books
        refined.levels = levels
        refineCodes(
            w, out: outFeatures, in: inFeatures, codes: &codes, codebooks: refined, covariance: h, passes: refinePasses)
        let packed = try pack(codes: codes, bits: bits, levels: levels)
        let d = zip(w, packed.dequantized()).map { $0 - $1 }
        return (packed, InputCovariance(n: inFeatures, values: h, tokens: 0).rowErrors(d, rows: outFeatures))
    }

    /// Each row's codebook at its precision, in units of its blocks' absmax.
    public func codebooks(_ bits: [UInt8]) -> RowCodebooks {
        var lv = [Float]()
        var offsets = [0]
        for r in 0..<outFeatures {
            let k = 1 << Int(bits[r])
            lv += levels[Int(bits[r])]![(r * k)..<((r + 1) * k)]
            offsets.append(lv.count)
        }
        let nb = (inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        return RowCodebooks(
            rows: outFeatures, columns: inFeatures, blockSize: AbsmaxStorage.block, levels: lv, offsets: offsets,
            scales: absmax.decoded(count: outFeatures * nb))
    }

    /// The codebooks of `rows` (in that order) at precision p, as a layer of those rows alone.
    public func codebooks(precision p: Int, rows: [Int]) -> RowCodebooks {
        let k = 1 << p
        let all = levels[p]!
        let nb = (inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        let scales = absmax.decoded(count: outFeatures * nb)
        return RowCodebooks(
            rows: rows.count, columns: inFeatures, blockSize: AbsmaxStorage.block,
            levels: rows.flatMap { all[($0 * k)..<(($0 + 1) * k)] }, offsets: (0...rows.count).map { $0 * k },
            scales: rows.flatMap { scales[($0 * nb)..<(($0 + 1) * nb)] })
    }

    private func checkPrecisions(_ bits: [UInt8]) throws {
        guard bits.count == outFeatures else {
            throw LowRAError(.shapeMismatch, "pack: \(bits.count) precisions for \(outFeatures) rows")
        }
        for b in Set(bits) where levels[Int(b)] == nil {
            throw LowRAError(.invalidArgument, "pack: precision \(b) was not analyzed (have \(options.precisions))")
        }
    }

    /// Packs per-weight codes (out, in), each an index into its row's levels at its precision.
    /// `levels`: per-row codebooks in the packed layout to use instead of the analyzed ones.
    public func pack(codes: [UInt8], bits: [UInt8], levels override: [Float]? = nil) throws -> PackedLinear {
        let out = outFeatures
        let inF = inFeatures
        let packedCodes = packCodes(codes, bits: bits, in: inF)
        var lv = [Float]()
        if let override {
            lv = override
        } else if options.scope == .channel {
            for r in 0..<out {
                let k = 1 << Int(bits[r])
                lv += levels[Int(bits[r])]![(r * k)..<((r + 1) * k)]
            }
        } else {
            for p in [1, 2, 4] {
                lv += levels[p].map { Array($0.prefix(1 << p)) } ?? NormalFloat.levels(bits: p)
            }
        }
        return try PackedLinear(
            outFeatures: out, inFeatures: inF, bits: bits, codes: packedCodes, absmax: absmax, levels: lv,
            scope: options.scope)
    }
}
