import CLowRAPacked
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
        var d = self
        d.damp(fraction)
        return d
    }

    /// `damped` in place (no copy of the n × n values when this is their only holder).
    public mutating func damp(_ fraction: Float) {
        var mean = 0.0
        for j in 0..<n { mean += Double(values[j * n + j]) }
        mean /= Double(max(n, 1))
        let lambda = Float(mean > 0 ? mean * Double(fraction) : 1)
        for j in 0..<n { values[j * n + j] += lambda }
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
    _ w: [Float], out: Int, in n: Int, inverseFactor u: [Float], codebooks: RowCodebooks, block: Int = 128,
    path: Int = KernelPath.current
) -> ErrorFeedbackResult {
    precondition(w.count == out * n && u.count == n * n && codebooks.rows == out && codebooks.columns == n)
    let nb = (n + codebooks.blockSize - 1) / codebooks.blockSize
    // Each row's levels (16, padded) and decision thresholds, the midpoints of its levels (15, padded
    // with +inf), as the kernel takes them.
    let slots = Int(LOWRA_EF_LEVELS)
    var levels = [Float](repeating: 0, count: out * slots)
    var thresholds = [Float](repeating: .infinity, count: out * (slots - 1))
    for r in 0..<out {
        let lv = codebooks.levels[codebooks.offsets[r]..<codebooks.offsets[r + 1]]
        precondition(lv.count <= slots, "error feedback takes at most \(slots) levels per row")
        for (i, v) in lv.enumerated() { levels[r * slots + i] = v }
        for (i, t) in midpointThresholds(Array(lv)).enumerated() { thresholds[r * (slots - 1) + i] = t }
    }
    var work = w
    var codes = [UInt8](repeating: 0, count: out * n)
    var errors = [Double](repeating: 0, count: out)
    let width = min(block, n)
    var scaled = [Float](repeating: 0, count: out * width)  // E for the current block
    let group = Int(LOWRA_EF_ROWS), groups = (out + group - 1) / group  // rows to the kernel a group at a time
    work.withUnsafeMutableBufferPointer { wb in
        codes.withUnsafeMutableBufferPointer { cb in
            errors.withUnsafeMutableBufferPointer { eb in
                scaled.withUnsafeMutableBufferPointer { sb in
                    let io = UncheckedSendable((wb.baseAddress!, cb.baseAddress!, eb.baseAddress!, sb.baseAddress!))
                    for i1 in stride(from: 0, to: n, by: width) {
                        let i2 = min(i1 + width, n)
                        let cols = i2 - i1
                        parallelFor(groups, minPerChunk: 1) { chunk in
                            let (w, codes, errors, e) = io.value
                            lowra_error_feedback(
                                Int32(path), w, UInt64(n), UInt64(chunk.lowerBound * group),
                                UInt64(min(chunk.upperBound * group, out)), UInt64(i1), UInt64(i2), u,
                                codebooks.scales, UInt64(nb), UInt64(codebooks.blockSize), levels, thresholds, codes,
                                errors, e)
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

/// Discrete code refinement (PV-Tuning's direction, for per-row scalar codebooks): with the levels
/// and block scales fixed, each row's codes move one at a time, column by column for `passes`
/// sweeps, to the level that lowers the row's output error (w − q) H (w − q)ᵀ most. With g = H(q − w)
/// kept current, moving q_j by Δ changes the error by Δ(2 g_j + Δ H_jj), and a code moves only when
/// that is negative, so no row's error ever rises; a sweep that moves nothing ends the row. `h` is
/// the (damped) input covariance (in, in). Returns how many codes moved.
@discardableResult
public func refineCodes(
    _ w: [Float], out: Int, in n: Int, codes: inout [UInt8], codebooks: RowCodebooks, covariance h: [Float],
    passes: Int
) -> Int {
    guard passes > 0, out > 0, n > 0 else { return 0 }
    let nb = codebooks.scales.count / out
    func scale(_ r: Int, _ j: Int) -> Float { codebooks.scales[r * nb + j / codebooks.blockSize] }
    // D = Q − W for every row, then G = D H by one matrix product.
    var d = [Float](repeating: 0, count: out * n)
    for r in 0..<out {
        let o = codebooks.offsets[r]
        for j in 0..<n { d[r * n + j] = codebooks.levels[o + Int(codes[r * n + j])] * scale(r, j) - w[r * n + j] }
    }
    var g = [Float](repeating: 0, count: out * n)
    matmul(d, h, &g, m: out, n: n, k: n)
    var moved = [Int](repeating: 0, count: out)
    codes.withUnsafeMutableBufferPointer { cb in
        moved.withUnsafeMutableBufferPointer { mb in
            let io = UncheckedSendable((cb.baseAddress!, mb.baseAddress!))
            parallelFor(out, minPerChunk: 4) { rows in
                let (codes, moved) = io.value
                var gr = [Double](repeating: 0, count: n)
                for r in rows {
                    for j in 0..<n { gr[j] = Double(g[r * n + j]) }
                    let o = codebooks.offsets[r], k = codebooks.offsets[r + 1] - o
                    for _ in 0..<passes {
                        var movedThisPass = 0
                        for j in 0..<n {
                            let s = Double(scale(r, j))
                            let c = Int(codes[r * n + j])
                            let q = Double(codebooks.levels[o + c]) * s
                            let hjj = Double(h[j * n + j])
                            var best = 0.0, bestCode = c
                            for v in 0..<k where v != c {
                                let delta = Double(codebooks.levels[o + v]) * s - q
                                let change = delta * (2 * gr[j] + delta * hjj)
                                if change < best {
                                    best = change
                                    bestCode = v
                                }
                            }
                            guard bestCode != c else { continue }
                            let delta = Double(codebooks.levels[o + bestCode]) * s - q
                            codes[r * n + j] = UInt8(bestCode)
                            for i in 0..<n { gr[i] += delta * Double(h[j * n + i]) }  // H symmetric: row j
                            movedThisPass += 1
                        }
                        moved[r] += movedThisPass
                        if movedThisPass == 0 { break }
                    }
                }
            }
        }
    }
    return moved.reduce(0, +)
}

/// Each row's levels refit to its codes (error feedback chose them for the old levels): with the
/// codes fixed, row r's weight is Σ_c L_c m_c (m_c the block scales where code c sits, 0
/// elsewhere), and the output error (w_r − Σ_c L_c m_c) H (w_r − Σ_c L_c m_c)ᵀ is a quadratic in
/// the row's k levels, minimized exactly by the k × k normal equations (M H Mᵀ) L = M H w_r. A
/// level no weight uses, or a row whose system is singular, keeps its old value. `h` is the
/// (damped) input covariance (in, in); returns the levels in `codebooks.levels`' layout.
public func refitLevels(
    _ w: [Float], out: Int, in n: Int, codes: [UInt8], codebooks: RowCodebooks, covariance h: [Float]
) -> [Float] {
    precondition(w.count == out * n && codes.count == out * n && h.count == n * n)
    precondition(codebooks.rows == out && codebooks.columns == n)
    let nb = (n + codebooks.blockSize - 1) / codebooks.blockSize
    func scale(_ r: Int, _ j: Int) -> Float { codebooks.scales[r * nb + j / codebooks.blockSize] }
    var levels = codebooks.levels
    // hw (out, n) = W H (H symmetric): the right-hand sides' inputs.
    var hw = [Float](repeating: 0, count: out * n)
    matmul(w, h, &hw, m: out, n: n, k: n)
    // Rows grouped by codebook size k; per group one product (rows·k, n) = S H, S's row (r, c)
    // holding row r's block scales where its code is c.
    let sizes = (0..<out).map { codebooks.offsets[$0 + 1] - codebooks.offsets[$0] }
    for k in Set(sizes).sorted() {
        let rows = (0..<out).filter { sizes[$0] == k }
        var sm = [Float](repeating: 0, count: rows.count * k * n)
        for (i, r) in rows.enumerated() {
            for j in 0..<n { sm[(i * k + Int(codes[r * n + j])) * n + j] = scale(r, j) }
        }
        var mh = [Float](repeating: 0, count: rows.count * k * n)
        matmul(sm, h, &mh, m: rows.count * k, n: n, k: n)
        for (i, r) in rows.enumerated() {
            // A = M H Mᵀ and the right-hand side M H w_r, in Double.
            var a = [Double](repeating: 0, count: k * k)
            var rhs = [Double](repeating: 0, count: k)
            var used = [Bool](repeating: false, count: k)
            for t in 0..<n {
                let c2 = Int(codes[r * n + t])
                let s = Double(scale(r, t))
                guard s != 0 else { continue }
                used[c2] = true
                rhs[c2] += s * Double(hw[r * n + t])
                for c in 0..<k { a[c * k + c2] += s * Double(mh[(i * k + c) * n + t]) }
            }
            let idx = (0..<k).filter { used[$0] }
            guard !idx.isEmpty, let x = solveSymmetric(a, rhs, k: k, indices: idx) else { continue }
            for (i, c) in idx.enumerated() where x[i].isFinite { levels[codebooks.offsets[r] + c] = Float(x[i]) }
        }
    }
    return levels
}

/// Solves the sub-system of the symmetric k × k `a` on `indices` (Gaussian elimination with
/// partial pivoting, in Double); nil when it is singular.
func solveSymmetric(_ a: [Double], _ b: [Double], k: Int, indices: [Int]) -> [Double]? {
    let m = indices.count
    var s = [Double](repeating: 0, count: m * (m + 1))
    for (i, ci) in indices.enumerated() {
        for (j, cj) in indices.enumerated() { s[i * (m + 1) + j] = a[ci * k + cj] }
        s[i * (m + 1) + m] = b[ci]
    }
    let scale = (0..<m).map { abs(s[$0 * (m + 1) + $0]) }.max() ?? 0
    guard scale > 0 else { return nil }
    for col in 0..<m {
        let p = (col..<m).max { abs(s[$0 * (m + 1) + col]) < abs(s[$1 * (m + 1) + col]) }!
        guard abs(s[p * (m + 1) + col]) > scale * 1e-12 else { return nil }
        if p != col { for t in 0...m { s.swapAt(p * (m + 1) + t, col * (m + 1) + t) } }
        for row in (col + 1)..<m {
            let f = s[row * (m + 1) + col] / s[col * (m + 1) + col]
            if f != 0 { for t in col...m { s[row * (m + 1) + t] -= f * s[col * (m + 1) + t] } }
        }
    }
    var x = [Double](repeating: 0, count: m)
    for i in stride(from: m - 1, through: 0, by: -1) {
        var v = s[i * (m + 1) + m]
        for t in (i + 1)..<m { v -= s[i * (m + 1) + t] * x[t] }
        x[i] = v / s[i * (m + 1) + i]
    }
    return x
}

extension TensorAnalysis {
    /// Every row's output error after error feedback at precision p (what `errorFeedbackQuantize`
    /// reports), estimated from `rows` evenly spaced rows: error feedback runs on those alone,
    /// and each row's E[x²]-weighted error (the analysis's table at p) is scaled by the measured
    /// rows' ratio of the two (with every row measured: error feedback's errors). Error feedback
    /// costs out·in² per layer and precision, this rows·in².
    public func sampledErrorFeedbackErrors(
        _ w: [Float], precision p: Int, inverseFactor u: [Float], rows n: Int
    ) -> [Double] {
        let picked = Self.spacedRows(n, of: outFeatures)
        let measured = errorFeedbackQuantize(
            rows(w, picked), out: n, in: inFeatures, inverseFactor: u, codebooks: codebooks(precision: p, rows: picked)
        ).rowErrors
        return Self.scaled(errors[p]!, measured: measured, at: picked)
    }

    /// Every row's output energy tr(w H wᵀ) through `covariance` (the relative error's denominator),
    /// estimated from `rows` evenly spaced rows as `sampledErrorFeedbackErrors` estimates errors,
    /// from the analysis's E[x²]-weighted energies.
    public func sampledRowEnergy(_ w: [Float], covariance: InputCovariance, rows n: Int) -> [Double] {
        let picked = Self.spacedRows(n, of: outFeatures)
        return Self.scaled(rowEnergy, measured: covariance.rowErrors(rows(w, picked), rows: n), at: picked)
    }

    static func spacedRows(_ n: Int, of out: Int) -> [Int] {
        precondition(n >= 1 && n <= out)
        return (0..<n).map { $0 * out / n }
    }

    /// Rows `picked` of w (out, in); w itself when every row is picked.
    private func rows(_ w: [Float], _ picked: [Int]) -> [Float] {
        precondition(w.count == outFeatures * inFeatures)
        guard picked.count < outFeatures else { return w }
        var sample = [Float]()
        sample.reserveCapacity(picked.count * inFeatures)
        for r in picked { sample += w[(r * inFeatures)..<((r + 1) * inFeatures)] }
        return sample
    }

    /// `proxy` scaled by the ratio of `measured` to it on the rows `picked`; `measured` itself when
    /// every row was.
    private static func scaled(_ proxy: [Double], measured: [Double], at picked: [Int]) -> [Double] {
        if picked.count == proxy.count { return measured }
        let base = picked.reduce(0.0) { $0 + proxy[$1] }
        let ratio = base > 0 ? measured.reduce(0, +) / base : 1
        return proxy.map { $0 * ratio }
    }
}
