import Foundation
import LowRATensor

/// A layer's input second moments H = E[x xᵀ] (n, n) over a calibration text: with it a weight
/// error D (out, in) costs its output error tr(D H Dᵀ), the quantity calibrated quantization
/// minimizes instead of the paper's plain weight error.
public struct InputCovariance: Sendable {
    public let n: Int
    /// (n, n) row-major, symmetric.
    public var values: [Float]
    public let tokens: Int

    public init(n: Int, values: [Float], tokens: Int) {
        precondition(values.count == n * n)
        self.n = n
        self.values = values
        self.tokens = tokens
    }

    /// E[x_j²] per input column (the diagonal calibration's weights).
    public var diagonal: [Float] { (0..<n).map { values[$0 * n + $0] } }

    /// H + λI with λ = `fraction` of the mean diagonal (GPTQ's damping; a column no input ever
    /// used gets λ too): positive definite, and the fraction keeps the error's units.
    public func damped(_ fraction: Float) -> InputCovariance {
        var mean = 0.0
        for j in 0..<n { mean += Double(values[j * n + j]) }
        mean /= Double(max(n, 1))
        let lambda = Float(mean > 0 ? mean * Double(fraction) : 1)
        var v = values
        for j in 0..<n { v[j * n + j] += lambda }
        return InputCovariance(n: n, values: v, tokens: tokens)
    }

    /// tr(D H Dᵀ) per row of D (rows, n): each output channel's squared output error.
    public func rowErrors(_ d: [Float], rows: Int) -> [Double] {
        var dh = [Float](repeating: 0, count: rows * n)
        matmul(d, values, &dh, m: rows, n: n, k: n)
        return (0..<rows).map { r in
            var e = 0.0
            for j in 0..<n { e += Double(dh[r * n + j]) * Double(d[r * n + j]) }
            return e
        }
    }
}

/// Row r's codebook for error feedback: `levels` (sorted ascending) in units of the row's block
/// scales, which cover `blockSize` columns each. The packed format's codebooks (levels × block
/// absmax) are one case; GPTQ's uniform grid (one block, scale 1, levels scale·(i − zero)) another.
public struct RowCodebooks: Sendable {
    public let rows: Int
    public let columns: Int
    public let blockSize: Int
    /// Row r's levels are levels[offsets[r]..<offsets[r + 1]].
    public var levels: [Float]
    public var offsets: [Int]
    /// (rows, ⌈columns / blockSize⌉) scales.
    public var scales: [Float]

    public init(rows: Int, columns: Int, blockSize: Int, levels: [Float], offsets: [Int], scales: [Float]) {
        precondition(offsets.count == rows + 1 && offsets.last == levels.count)
        precondition(scales.count == rows * ((columns + blockSize - 1) / blockSize))
        self.rows = rows
        self.columns = columns
        self.blockSize = blockSize
        self.levels = levels
        self.offsets = offsets
        self.scales = scales
    }
}

/// Codes and errors of error-feedback quantization.
public struct ErrorFeedbackResult: Sendable {
    /// (out, in): each weight's index into its row's levels.
    public var codes: [UInt8]
    /// Per row: tr(D H Dᵀ) for D = W − Q and the (damped) H whose inverse factor was used.
    public var rowErrors: [Double]
}

/// GPTQ's error feedback on per-row codebooks (the GPTVQ-1D / SqueezeLLM direction): columns are
/// quantized in order, each to its row's nearest level (scaled by its block's scale), and the
/// error of column j, divided by U[j, j], is pushed onto the columns after it through row j of U,
/// the upper Cholesky factor of H⁻¹ (`inverseCholeskyUpper` of the damped H). Rows are
/// independent; columns go in blocks of `block`, each block's effect on the later columns applied
/// at once by one matrix product (GPTQ's lazy batch update). Then W − Q = E U with E the scaled
/// errors, so each row's output error tr(D H Dᵀ) is Σ_j E[r, j]², returned with the codes.
public func errorFeedbackQuantize(
    _ w: [Float], out: Int, in n: Int, inverseFactor u: [Float], codebooks: RowCodebooks, block: Int = 128
) -> ErrorFeedbackResult {
    precondition(w.count == out * n && u.count == n * n && codebooks.rows == out && codebooks.columns == n)
    let nb = (n + codebooks.blockSize - 1) / codebooks.blockSize
    // Each row's decision thresholds: the midpoints of its levels.
    var thresholds = [Float]()
    var tOffsets = [Int]()
    for r in 0..<out {
        tOffsets.append(thresholds.count)
        let lv = codebooks.levels[codebooks.offsets[r]..<codebooks.offsets[r + 1]]
        for (a, b) in zip(lv, lv.dropFirst()) { thresholds.append((a + b) / 2) }
    }
    thresholds.append(0)  // never empty
    var work = w
    var codes = [UInt8](repeating: 0, count: out * n)
    var errors = [Double](repeating: 0, count: out)
    let width = min(block, n)
    var scaled = [Float](repeating: 0, count: out * width)  // E for the current block
    work.withUnsafeMutableBufferPointer { wb in
        codes.withUnsafeMutableBufferPointer { cb in
            errors.withUnsafeMutableBufferPointer { eb in
                scaled.withUnsafeMutableBufferPointer { sb in
                    let io = UncheckedSendable((wb.baseAddress!, cb.baseAddress!, eb.baseAddress!, sb.baseAddress!))
                    for i1 in stride(from: 0, to: n, by: width) {
                        let i2 = min(i1 + width, n)
                        let cols = i2 - i1
                        parallelFor(out, minPerChunk: 8) { rows in
                            let (w, codes, errors, e) = io.value
                            u.withUnsafeBufferPointer { ub in
                                codebooks.levels.withUnsafeBufferPointer { lb in
                                    thresholds.withUnsafeBufferPointer { tb in
                                        let u = ub.baseAddress!
                                        for r in rows {
                                            let row = w + r * n
                                            let lv = lb.baseAddress! + codebooks.offsets[r]
                                            let k = codebooks.offsets[r + 1] - codebooks.offsets[r]
                                            let th = tb.baseAddress! + tOffsets[r]
                                            var sum = errors[r]
                                            for j in i1..<i2 {
                                                let s = codebooks.scales[r * nb + j / codebooks.blockSize]
                                                let x = row[j]
                                                let c = s > 0 ? binIndex(x / s, th, k - 1) : 0
                                                let q = s > 0 ? s * lv[c] : 0
                                                codes[r * n + j] = UInt8(c)
                                                let err = (x - q) / u[j * n + j]
                                                e[r * cols + (j - i1)] = err
                                                sum += Double(err) * Double(err)
                                                let uj = u + j * n
                                                for t in (j + 1)..<i2 { row[t] -= err * uj[t] }
                                            }
                                            errors[r] = sum
                                        }
                                    }
                                }
                            }
                        }
                        if i2 < n {
                            // W[:, i2...] −= E (out, cols) · U[i1..<i2, i2...].
                            u.withUnsafeBufferPointer { ub in
                                matmul(
                                    io.value.3, ub.baseAddress! + i1 * n + i2, io.value.0 + i2, m: out, n: n - i2,
                                    k: cols, alpha: -1, beta: 1, lda: cols, ldb: n, ldy: n)
                            }
                        }
                    }
                }
            }
        }
    }
    return ErrorFeedbackResult(codes: codes, rowErrors: errors)
}
