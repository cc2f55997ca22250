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
    var (a, b): ([Float], [Float])
    if usesRandomizedSVD(out: out, in: n, rank: r) {
        // R L by its products only (L x, then R ·; Rᵀ ·, then Lᵀ ·; yᵀ R, then · L): the randomized
        // SVD's thin products cost O(out·n·r + n²·r) where forming R L costs out·n².
        let svd = try residual.withUnsafeBufferPointer { rb in
            try l.withUnsafeBufferPointer { lb in
                let (rp, lp) = (rb.baseAddress!, lb.baseAddress!)
                var t = [Float]()
                let whitened = MatrixProducts(
                    rows: out, cols: n,
                    times: { x, y, k in
                        t = Array(UnsafeBufferPointer(start: x, count: n * k))
                        multiplyLowerTriangular(lp, n: n, &t, other: k, left: true)
                        matmul(rp, t, y, m: out, n: k, k: n)
                    },
                    transposeTimes: { y, z, k in
                        matmulTransA(rp, y, z, m: n, n: k, k: out)
                        multiplyLowerTriangular(lp, n: n, z, other: k, left: true, transpose: true)
                    },
                    leftTimes: { y, s, k in
                        matmulTransA(y, rp, s, m: k, n: n, k: out)
                        multiplyLowerTriangular(lp, n: n, s, other: k, left: false)
                    })
                return try truncatedSVDRandomized(whitened, rank: r, seed: seed)
            }
        }
        (a, b) = factors(svd, out: out, in: n, rank: r)
    } else {
        var whitened = [Float](repeating: 0, count: out * n)
        matmul(residual, l, &whitened, m: out, n: n, k: n)
        (a, b) = try plainLowRank(whitened, out: out, in: n, rank: r, seed: seed)
    }
    solveRightLowerTriangular(&a, rows: r, lower: l, n: n)
    return (a, b)
}
