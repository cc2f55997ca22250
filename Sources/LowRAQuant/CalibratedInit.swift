import LowRATensor

/// CLoQ's closed form: the rank-r product M = B A that minimizes the output error
/// ‖(R − M)‖²_H = tr((R − M) H (R − M)ᵀ) of a residual R = W − Q (out, in), for H = L Lᵀ (L the
/// lower Cholesky factor of the damped input covariance). In the whitened space the problem is
/// plain: M L = [R L]_r, the rank-r truncated SVD of R L, so M = [R L]_r L⁻¹. The singular values
/// are split as √σ between B (out, r) and A (r, in), as LoftQ splits them.
public func calibratedLowRank(
    _ residual: [Float], out: Int, in n: Int, lower l: [Float], rank r: Int, seed: UInt64 = 0
) throws -> (a: [Float], b: [Float]) {
    precondition(residual.count == out * n && l.count == n * n)
    var whitened = [Float](repeating: 0, count: out * n)
    matmul(residual, l, &whitened, m: out, n: n, k: n)
    var (a, b) = try plainLowRank(whitened, out: out, in: n, rank: r, seed: seed)
    solveRightLowerTriangular(&a, rows: r, lower: l, n: n)
    return (a, b)
}
