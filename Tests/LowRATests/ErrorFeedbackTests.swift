import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRAQuant
@testable import LowRATensor

/// Calibrated quantization: error feedback against an independent numpy GPTQ and a
/// plain column-by-column loop, CLoQ against its closed-form minimum and an independent solver.
final class ErrorFeedbackTests: XCTestCase {
    private func gaussian(_ rng: inout SplitMix64) -> Double {
        let u1 = max(1e-12, rng.nextUnit())
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * rng.nextUnit())
    }

    /// H = E[x xᵀ] (n, n) of `tokens` correlated random inputs.
    private func covariance(n: Int, tokens: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        let mix = (0..<(n * n)).map { i in Float(gaussian(&rng) / Double(n).squareRoot()) + (i % (n + 1) == 0 ? 1 : 0) }
        let z = (0..<(tokens * n)).map { _ in Float(gaussian(&rng)) }
        var x = [Float](repeating: 0, count: tokens * n)
        matmul(z, mix, &x, m: tokens, n: n, k: n)
        var h = [Float](repeating: 0, count: n * n)
        matmulTransA(x, x, &h, m: n, n: n, k: tokens, alpha: 1 / Float(tokens))
        return h
    }

    /// Dequantized weights of error-feedback codes.
    private func dequantize(_ codes: [UInt8], _ cb: RowCodebooks) -> [Float] {
        let nb = (cb.columns + cb.blockSize - 1) / cb.blockSize
        return (0..<(cb.rows * cb.columns)).map { i in
            let (r, j) = (i / cb.columns, i % cb.columns)
            return cb.scales[r * nb + j / cb.blockSize] * cb.levels[cb.offsets[r] + Int(codes[i])]
        }
    }

    /// Per-row codebooks of 2, 4 and 16 random sorted levels (by row, in turn) over absmax blocks
    /// of 64 of `w` (out, n), the last one partial when 64 does not divide n.
    private func randomCodebooks(_ w: [Float], out: Int, n: Int, rng: inout SplitMix64) -> RowCodebooks {
        let nb = (n + 63) / 64
        var levels = [Float]()
        var offsets = [0]
        var scales = [Float]()
        for r in 0..<out {
            let k = [2, 4, 16][r % 3]
            levels += (0..<k).map { _ in Float(rng.nextUnit() * 2 - 1) }.sorted()
            offsets.append(levels.count)
            for b in 0..<nb { scales.append((b * 64..<min(n, b * 64 + 64)).map { abs(w[r * n + $0]) }.max()!) }
        }
        return RowCodebooks(rows: out, columns: n, blockSize: 64, levels: levels, offsets: offsets, scales: scales)
    }

    /// GPTQ's uniform grid written as per-row codebooks reproduces the numpy GPTQ
    /// (`scripts/gptq_reference.py`) code for code.
    func testUniformGridMatchesNumpyGPTQ() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("gptq_reference.json")))
        let f = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let (rows, cols, bits, block) = (f["rows"] as! Int, f["cols"] as! Int, f["bits"] as! Int, f["block"] as! Int)
        func floats(_ k: String) -> [Float] { (f[k] as! [NSNumber]).map { $0.floatValue } }
        let (w, h, q, scale, zero) = (floats("w"), floats("h"), floats("q"), floats("scale"), floats("zero"))
        var levels = [Float]()
        for r in 0..<rows { for i in 0..<(1 << bits) { levels.append(scale[r] * (Float(i) - zero[r])) } }
        let cb = RowCodebooks(
            rows: rows, columns: cols, blockSize: cols, levels: levels,
            offsets: (0...rows).map { $0 << bits }, scales: [Float](repeating: 1, count: rows))
        let damped = InputCovariance(n: cols, values: h, tokens: 1).damped(Float(f["percdamp"] as! Double))
        let u = try inverseCholeskyUpper(damped.values, n: cols)
        let r = errorFeedbackQuantize(w, out: rows, in: cols, inverseFactor: u, codebooks: cb, block: block)
        let mine = dequantize(r.codes, cb)
        let same = zip(mine, q).filter { abs($0 - $1) < 1e-5 }.count
        XCTAssertEqual(same, q.count, "\(q.count - same) of \(q.count) weights differ from numpy's GPTQ")
    }

    /// The blocked, threaded kernel equals a plain column-by-column loop in double precision
    /// (H⁻¹ and its Cholesky factor by hand) with per-row codebooks of 2, 4 and 16 levels over
    /// absmax blocks, a partial last block and a GPTQ block width that does not divide the columns;
    /// its row errors are the output errors tr(D H Dᵀ); and it beats rounding to nearest.
    func testErrorFeedbackMatchesColumnSequentialLoop() throws {
        let (out, n) = (9, 150)
        var rng = SplitMix64(seed: 3)
        let w = (0..<(out * n)).map { _ in Float(gaussian(&rng) * 0.05) }
        let h = covariance(n: n, tokens: 600, seed: 4)
        let damped = InputCovariance(n: n, values: h, tokens: 600).damped(0.01)
        let nb = (n + 63) / 64
        let cb = randomCodebooks(w, out: out, n: n, rng: &rng)
        let (levels, offsets, scales) = (cb.levels, cb.offsets, cb.scales)
        let fast = errorFeedbackQuantize(
            w, out: out, in: n, inverseFactor: try inverseCholeskyUpper(damped.values, n: n), codebooks: cb, block: 32)

        // Reference: H⁻¹ by Gauss-Jordan, U its upper Cholesky factor, then one column at a time.
        let hd = damped.values.map(Double.init)
        var aug = [Double](repeating: 0, count: n * 2 * n)
        for i in 0..<n {
            for j in 0..<n { aug[i * 2 * n + j] = hd[i * n + j] }
            aug[i * 2 * n + n + i] = 1
        }
        for c in 0..<n {
            let p = (c..<n).max { abs(aug[$0 * 2 * n + c]) < abs(aug[$1 * 2 * n + c]) }!
            for j in 0..<(2 * n) { aug.swapAt(c * 2 * n + j, p * 2 * n + j) }
            let d = aug[c * 2 * n + c]
            for j in 0..<(2 * n) { aug[c * 2 * n + j] /= d }
            for i in 0..<n where i != c {
                let m = aug[i * 2 * n + c]
                if m != 0 { for j in 0..<(2 * n) { aug[i * 2 * n + j] -= m * aug[c * 2 * n + j] } }
            }
        }
        let inv = (0..<(n * n)).map { aug[($0 / n) * 2 * n + n + $0 % n] }
        var u = [Double](repeating: 0, count: n * n)  // inv = Uᵀ U
        for i in 0..<n {
            var s = inv[i * n + i]
            for k in 0..<i { s -= u[k * n + i] * u[k * n + i] }
            u[i * n + i] = s.squareRoot()
            for j in (i + 1)..<n {
                var t = inv[i * n + j]
                for k in 0..<i { t -= u[k * n + i] * u[k * n + j] }
                u[i * n + j] = t / u[i * n + i]
            }
        }
        var refCodes = [UInt8](repeating: 0, count: out * n)
        for r in 0..<out {
            var row = (0..<n).map { Double(w[r * n + $0]) }
            let lv = levels[offsets[r]..<offsets[r + 1]].map(Double.init)
            for j in 0..<n {
                let s = Double(scales[r * nb + j / 64])
                let c = lv.indices.min { abs(row[j] / s - lv[$0]) < abs(row[j] / s - lv[$1]) }!
                refCodes[r * n + j] = UInt8(c)
                let err = (row[j] - s * lv[c]) / u[j * n + j]
                for t in (j + 1)..<n { row[t] -= err * u[j * n + t] }
            }
        }
        let same = zip(fast.codes, refCodes).filter { $0 == $1 }.count
        XCTAssertGreaterThanOrEqual(Double(same), 0.995 * Double(out * n), "\(out * n - same) codes differ")
        let q = dequantize(fast.codes, cb)
        let direct = damped.rowErrors(zip(w, q).map { $0 - $1 }, rows: out)
        let reference = damped.rowErrors(zip(w, dequantize(refCodes, cb)).map { $0 - $1 }, rows: out)
        for r in 0..<out {
            XCTAssertEqual(fast.rowErrors[r], direct[r], accuracy: 1e-3 * direct[r], "row \(r): Σ E² ≠ tr(D H Dᵀ)")
            XCTAssertEqual(fast.rowErrors[r], reference[r], accuracy: 0.01 * reference[r], "row \(r)")
        }
        // Rounding each weight to its nearest level, without feedback.
        var nearest = [Float](repeating: 0, count: out * n)
        for i in 0..<(out * n) {
            let (r, j) = (i / n, i % n)
            let s = scales[r * nb + j / 64]
            let lv = levels[offsets[r]..<offsets[r + 1]]
            nearest[i] = s * lv.min { abs(w[i] / s - $0) < abs(w[i] / s - $1) }!
        }
        // Better in every row; much better with 4 and 16 levels (with 2 levels, little is left to
        // trade between columns).
        let rounding = damped.rowErrors(zip(w, nearest).map { $0 - $1 }, rows: out)
        for r in 0..<out {
            XCTAssertLessThan(fast.rowErrors[r], (r % 3 == 0 ? 1 : 0.8) * rounding[r], "row \(r)")
        }
    }

    /// The C sweep (`lowra_error_feedback`) on every kernel path is the plain column loop, bit for
    /// bit: codes, the row errors Σ E² and, through them, every rounding of the feedback (one block
    /// of columns, so that no product intervenes; 37 rows leave 5 to the vector paths' remainder).
    /// With blocks of 32 columns every path gives the same codes and errors too.
    func testErrorFeedbackKernelIsTheColumnLoopBitForBit() throws {
        let (out, n) = (37, 150)
        var rng = SplitMix64(seed: 31)
        let w = (0..<(out * n)).map { _ in Float(gaussian(&rng) * 0.05) }
        let damped = InputCovariance(n: n, values: covariance(n: n, tokens: 600, seed: 32), tokens: 600).damped(0.01)
        let u = try inverseCholeskyUpper(damped.values, n: n)
        var cb = randomCodebooks(w, out: out, n: n, rng: &rng)
        cb.scales[3] = 0  // a block with nothing to scale: code 0, value 0
        let nb = (n + 63) / 64
        var codes = [UInt8](repeating: 0, count: out * n)
        var errors = [Double](repeating: 0, count: out)
        for r in 0..<out {
            var row = Array(w[(r * n)..<((r + 1) * n)])
            let lv = Array(cb.levels[cb.offsets[r]..<cb.offsets[r + 1]])
            let th = zip(lv, lv.dropFirst()).map { ($0 + $1) / 2 }
            var sum = 0.0
            for j in 0..<n {
                let s = cb.scales[r * nb + j / 64]
                let c = s > 0 ? th.filter { row[j] / s > $0 }.count : 0
                let q = s > 0 ? s * lv[c] : 0
                codes[r * n + j] = UInt8(c)
                let err = (row[j] - q) / u[j * n + j]
                sum += Double(err) * Double(err)
                for t in (j + 1)..<n { row[t] -= err * u[j * n + t] }
            }
            errors[r] = sum
        }
        var blocked: ErrorFeedbackResult?
        for path in KernelPath.all {
            let one = errorFeedbackQuantize(w, out: out, in: n, inverseFactor: u, codebooks: cb, block: n, path: path)
            XCTAssertEqual(one.codes, codes, KernelPath.name(path))
            XCTAssertEqual(one.rowErrors, errors, KernelPath.name(path))
            let b = errorFeedbackQuantize(w, out: out, in: n, inverseFactor: u, codebooks: cb, block: 32, path: path)
            if let blocked {
                XCTAssertEqual(b.codes, blocked.codes, KernelPath.name(path))
                XCTAssertEqual(b.rowErrors, blocked.rowErrors, KernelPath.name(path))
            }
            blocked = b
        }
    }

    /// Levels refit to error feedback's codes reach the minimum of each row's output error over
    /// its levels: the gradient 2 M H (Mᵀ L − w_r) of tr(D H Dᵀ) in the levels, computed here in
    /// double precision from the dequantized weights, vanishes for every used level, and the
    /// output error is no larger than with the codebooks the codes were chosen for.
    func testRefitLevelsReachTheMinimumForTheCodes() throws {
        let (out, n) = (7, 150)
        var rng = SplitMix64(seed: 11)
        let w = (0..<(out * n)).map { _ in Float(gaussian(&rng) * 0.05) }
        let h = InputCovariance(n: n, values: covariance(n: n, tokens: 500, seed: 12), tokens: 500).damped(0.01)
        let nb = (n + 63) / 64
        let cb = randomCodebooks(w, out: out, n: n, rng: &rng)
        let (offsets, scales) = (cb.offsets, cb.scales)
        let codes = errorFeedbackQuantize(
            w, out: out, in: n, inverseFactor: try inverseCholeskyUpper(h.values, n: n), codebooks: cb
        ).codes
        var refit = cb
        refit.levels = refitLevels(w, out: out, in: n, codes: codes, codebooks: cb, covariance: h.values)
        let before = h.rowErrors(zip(w, dequantize(codes, cb)).map { $0 - $1 }, rows: out)
        let d = zip(w, dequantize(codes, refit)).map { $0 - $1 }
        let after = h.rowErrors(d, rows: out)
        for r in 0..<out {
            XCTAssertLessThanOrEqual(after[r], before[r] * (1 + 1e-5), "row \(r)")
            // ∂/∂L_c tr(D H Dᵀ) = −2 Σ_{j: code c} s_j (D H)_j, against the terms' magnitudes.
            let dh = (0..<n).map { j in
                (0..<n).reduce(0.0) { $0 + Double(d[r * n + $1]) * Double(h.values[$1 * n + j]) }
            }
            let k = offsets[r + 1] - offsets[r]
            var g = [Double](repeating: 0, count: k)
            var mag = [Double](repeating: 0, count: k)
            for j in 0..<n {
                let c = Int(codes[r * n + j])
                let t = Double(scales[r * nb + j / 64]) * dh[j]
                g[c] += t
                mag[c] += abs(t)
            }
            let scale = mag.max()!  // the row's: a level used by one weight has a tiny, noisy sum
            for c in 0..<k where mag[c] > 0 { XCTAssertLessThan(abs(g[c]), 2e-3 * scale, "row \(r) level \(c)") }
        }
        XCTAssertLessThan(after.reduce(0, +), 0.99 * before.reduce(0, +))
    }

    /// Row r's output error (w − q) H (w − q)ᵀ in Double, computed from scratch.
    private func rowError(_ w: [Float], _ q: [Float], _ h: [Float], row r: Int, n: Int) -> Double {
        let d = (0..<n).map { Double(q[r * n + $0]) - Double(w[r * n + $0]) }
        var e = 0.0
        for i in 0..<n { for j in 0..<n { e += d[i] * Double(h[i * n + j]) * d[j] } }
        return e
    }

    /// Code refinement after error feedback never raises a row's output error, lowers the total, and
    /// stops where no single code can move down: every one-code change, tried by brute force and
    /// measured from scratch, leaves the error where it is or raises it.
    func testCodeRefinementNeverRaisesTheErrorAndEndsCoordinatewiseOptimal() throws {
        let (out, n) = (6, 100)  // two blocks, the second partial; rows of 2, 4 and 16 levels
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970))
        let w = (0..<(out * n)).map { _ in Float(gaussian(&rng) * 0.05) }
        let h = InputCovariance(n: n, values: covariance(n: n, tokens: 300, seed: rng.next()), tokens: 300).damped(0.01)
        let cb = randomCodebooks(w, out: out, n: n, rng: &rng)
        var codes = errorFeedbackQuantize(
            w, out: out, in: n, inverseFactor: try inverseCholeskyUpper(h.values, n: n), codebooks: cb
        ).codes
        let before = (0..<out).map { rowError(w, dequantize(codes, cb), h.values, row: $0, n: n) }
        let moved = refineCodes(w, out: out, in: n, codes: &codes, codebooks: cb, covariance: h.values, passes: 50)
        XCTAssertGreaterThan(moved, 0, "error feedback's codes are not coordinate-wise optimal")
        let q = dequantize(codes, cb)
        let after = (0..<out).map { rowError(w, q, h.values, row: $0, n: n) }
        for r in 0..<out { XCTAssertLessThanOrEqual(after[r], before[r] * (1 + 1e-9), "row \(r)") }
        XCTAssertLessThan(after.reduce(0, +), before.reduce(0, +))
        for r in 0..<out {
            let k = cb.offsets[r + 1] - cb.offsets[r]
            for j in 0..<n {
                for v in 0..<k where v != Int(codes[r * n + j]) {
                    var other = codes
                    other[r * n + j] = UInt8(v)
                    let e = rowError(w, dequantize(other, cb), h.values, row: r, n: n)
                    XCTAssertGreaterThanOrEqual(e, after[r] * (1 - 1e-9), "row \(r) column \(j) level \(v)")
                }
            }
        }
    }

    /// With a diagonal H the error is a sum over columns, so refinement must reach the global
    /// minimum: the best of all 4⁶ code assignments of a 2-bit row of 6 weights, found by brute force.
    func testCodeRefinementEqualsBruteForceWhenTheErrorSeparates() throws {
        let n = 6
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 1)
        let w = (0..<n).map { _ in Float(gaussian(&rng)) }
        var h = [Float](repeating: 0, count: n * n)
        for j in 0..<n { h[j * n + j] = Float(0.1 + rng.nextUnit()) }
        let levels = (0..<4).map { _ in Float(rng.nextUnit() * 2 - 1) }.sorted()
        let cb = RowCodebooks(rows: 1, columns: n, blockSize: 64, levels: levels, offsets: [0, 4], scales: [1.5])
        var best = Double.infinity
        for combo in 0..<(1 << (2 * n)) {
            let c = (0..<n).map { UInt8((combo >> (2 * $0)) & 3) }
            best = min(best, rowError(w, dequantize(c, cb), h, row: 0, n: n))
        }
        var codes = (0..<n).map { _ in UInt8(rng.next() % 4) }
        refineCodes(w, out: 1, in: n, codes: &codes, codebooks: cb, covariance: h, passes: 3)
        XCTAssertEqual(rowError(w, dequantize(codes, cb), h, row: 0, n: n), best, accuracy: 1e-9 * max(1, best))
    }

    /// CLoQ's factors reach the closed-form minimum of ‖R − sBA‖²_H (the tail of R L's singular
    /// values) and the minimum an independent solver (alternating least squares in H's metric)
    /// converges to; the plain SVD of R (LoftQ's fit) does worse in that metric.
    func testCalibratedLowRankReachesTheMinimum() throws {
        let (out, n, rank) = (20, 24, 3)
        var rng = SplitMix64(seed: 9)
        let residual = (0..<(out * n)).map { _ in Float(gaussian(&rng)) }
        let h = InputCovariance(n: n, values: covariance(n: n, tokens: 200, seed: 10), tokens: 200).damped(0.01)
        let lower = try choleskyFactor(h.values, n: n)
        func error(_ a: [Float], _ b: [Float]) -> Double {
            var ba = [Float](repeating: 0, count: out * n)
            matmul(b, a, &ba, m: out, n: n, k: rank)
            return h.rowErrors(zip(residual, ba).map { $0 - $1 }, rows: out).reduce(0, +)
        }
        let f = try calibratedLowRank(residual, out: out, in: n, lower: lower, rank: rank)
        let cloq = error(f.a, f.b)
        // The closed-form minimum: Σ_{i > r} σ_i² of R L.
        var rl = [Float](repeating: 0, count: out * n)
        matmul(residual, lower, &rl, m: out, n: n, k: n)
        let sv = try truncatedSVDExact(rl, rows: out, cols: n, rank: min(out, n)).s
        let minimum = sv[rank...].reduce(0.0) { $0 + Double($1) * Double($1) }
        XCTAssertEqual(cloq, minimum, accuracy: 1e-3 * minimum)
        // Alternating least squares: B = R H Aᵀ (A H Aᵀ)⁻¹, then A = (BᵀB)⁻¹ Bᵀ R, from random A.
        let rd = residual.map(Double.init)
        let hd = h.values.map(Double.init)
        var a = (0..<(rank * n)).map { _ in gaussian(&rng) }
        var b = [Double](repeating: 0, count: out * rank)
        func mul(_ x: [Double], _ y: [Double], _ m: Int, _ k: Int, _ p: Int) -> [Double] {
            (0..<(m * p)).map { i in (0..<k).reduce(0.0) { $0 + x[(i / p) * k + $1] * y[$1 * p + i % p] } }
        }
        func transpose(_ x: [Double], _ m: Int, _ p: Int) -> [Double] { (0..<(m * p)).map { x[($0 % m) * p + $0 / m] } }
        func solve(_ m: [Double], _ rhs: [Double], _ k: Int, _ cols: Int) -> [Double] {  // m⁻¹ rhs, m (k, k)
            var aug = m
            var x = rhs
            for c in 0..<k {
                let d = aug[c * k + c]
                for i in 0..<k where i != c {
                    let f = aug[i * k + c] / d
                    for j in 0..<k { aug[i * k + j] -= f * aug[c * k + j] }
                    for j in 0..<cols { x[i * cols + j] -= f * x[c * cols + j] }
                }
            }
            for i in 0..<k { for j in 0..<cols { x[i * cols + j] /= aug[i * k + i] } }
            return x
        }
        for _ in 0..<300 {
            let ha = mul(hd, transpose(a, rank, n), n, n, rank)  // H Aᵀ (n, r)
            let aha = mul(a, ha, rank, n, rank)  // A H Aᵀ (r, r)
            b = transpose(solve(aha, transpose(mul(rd, ha, out, n, rank), out, rank), rank, out), rank, out)
            let bt = transpose(b, out, rank)
            a = solve(mul(bt, b, rank, out, rank), mul(bt, rd, rank, out, n), rank, n)
        }
        let als = error(a.map(Float.init), b.map(Float.init))
        XCTAssertEqual(cloq, als, accuracy: 2e-3 * als)
        let plain = try plainLowRank(residual, out: out, in: n, rank: rank, seed: 0)
        XCTAssertLessThan(cloq, error(plain.a, plain.b))
    }

    /// On layers large enough for the randomized SVD, CLoQ never forms R L (it multiplies by R and
    /// by L's triangle in turn): the factors equal those of the randomized SVD of the formed R L
    /// with the same sketch, and on a residual of decaying spectrum reach the closed-form minimum.
    func testCalibratedLowRankByProductsMatchesTheFormedWhitening() throws {
        let (out, n, rank) = (96, 80, 4)
        XCTAssertTrue(usesRandomizedSVD(out: out, in: n, rank: rank))
        var rng = SplitMix64(seed: 21)
        // Singular values 2⁻ⁱ: the randomized range finder captures the top ones.
        let u = try orthonormalColumns((0..<(out * n)).map { _ in Float(gaussian(&rng)) }, rows: out, cols: n)
        let v = try orthonormalColumns((0..<(n * n)).map { _ in Float(gaussian(&rng)) }, rows: n, cols: n)
        var residual = [Float](repeating: 0, count: out * n)
        for i in 0..<out {
            for j in 0..<n {
                var x = 0.0
                for k in 0..<n { x += Double(u[i * n + k]) * pow(0.5, Double(k)) * Double(v[j * n + k]) }
                residual[i * n + j] = Float(x)
            }
        }
        let h = InputCovariance(n: n, values: covariance(n: n, tokens: 300, seed: 22), tokens: 300).damped(0.01)
        let lower = try choleskyFactor(h.values, n: n)
        let f = try calibratedLowRank(residual, out: out, in: n, lower: lower, rank: rank, seed: 5)
        var rl = [Float](repeating: 0, count: out * n)
        matmul(residual, lower, &rl, m: out, n: n, k: n)
        let svd = try truncatedSVDRandomized(rl, rows: out, cols: n, rank: rank, seed: 5)
        var ba = [Float](repeating: 0, count: out * n)
        matmul(f.b, f.a, &ba, m: out, n: n, k: rank)
        var baL = [Float](repeating: 0, count: out * n)  // (B A) L, to compare in the whitened space
        matmul(ba, lower, &baL, m: out, n: n, k: n)
        var usvt = [Float](repeating: 0, count: out * n)
        for i in 0..<out {
            for j in 0..<n {
                var x: Float = 0
                for k in 0..<rank { x += svd.u[i * rank + k] * svd.s[k] * svd.vt[k * n + j] }
                usvt[i * n + j] = x
            }
        }
        let scale = usvt.map { Double($0 * $0) }.reduce(0, +).squareRoot()
        let diff = zip(baL, usvt).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
        XCTAssertLessThan(diff, 1e-4 * scale)
        let error = h.rowErrors(zip(residual, ba).map { $0 - $1 }, rows: out).reduce(0, +)
        let sv = try truncatedSVDExact(rl, rows: out, cols: n, rank: n).s
        let minimum = sv[rank...].reduce(0.0) { $0 + Double($1) * Double($1) }
        XCTAssertEqual(error, minimum, accuracy: 1e-2 * minimum)

    }

    /// The error tables' sampled estimate: with every row measured it is error feedback's own row
    /// errors; on a layer whose rows are one row times powers of two (so that every row gets the
    /// same normalized codes and its errors scale by the square of its factor, in both the
    /// E[x²]-weighted table and error feedback) the estimate from 3 of 24 rows equals error
    /// feedback's errors of every row; the row energies likewise.
    func testSampledErrorTablesMatchErrorFeedbackWhereRowsScale() throws {
        let (out, n) = (24, 80)
        var rng = SplitMix64(seed: 31)
        let base = (0..<n).map { _ in Float(gaussian(&rng)) }
        let factors = (0..<out).map { Float(1 << ($0 % 5)) / 4 }
        let w = (0..<(out * n)).map { factors[$0 / n] * base[$0 % n] }
        let h = InputCovariance(n: n, values: covariance(n: n, tokens: 300, seed: 32), tokens: 300).damped(0.01)
        let u = try inverseCholeskyUpper(h.values, n: n)
        var options = QuantizerOptions()
        options.doubleQuant = false  // scales exactly proportional to the rows
        for p in [1, 2, 4] {
            options.precisions = [p]
            let a = analyzeTensor(w, out: out, in: n, options: options, columnWeights: h.diagonal)
            let exact = errorFeedbackQuantize(
                w, out: out, in: n, inverseFactor: u, codebooks: a.codebooks([UInt8](repeating: UInt8(p), count: out))
            ).rowErrors
            let all = a.sampledErrorFeedbackErrors(w, precision: p, inverseFactor: u, rows: out)
            let sampled = a.sampledErrorFeedbackErrors(w, precision: p, inverseFactor: u, rows: 3)
            for r in 0..<out {
                XCTAssertEqual(all[r], exact[r], accuracy: 1e-9 * exact[r], "row \(r) at \(p) bits")
                XCTAssertEqual(sampled[r], exact[r], accuracy: 1e-4 * exact[r], "row \(r) at \(p) bits")
            }
            // The relative error's denominator, tr(w H wᵀ) per row, the same way.
            let energy = h.rowErrors(w, rows: out)
            let sampledEnergy = a.sampledRowEnergy(w, covariance: h, rows: 3)
            XCTAssertEqual(a.sampledRowEnergy(w, covariance: h, rows: out), energy)
            for r in 0..<out { XCTAssertEqual(sampledEnergy[r], energy[r], accuracy: 1e-4 * energy[r]) }
        }
    }
}
