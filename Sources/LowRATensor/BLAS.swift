import CBLAS

/// y (M, N) = alpha * x (M, K) · W^T + beta * y, with W stored row-major as (N, K): the layout
/// of every linear weight in LowRA (out x in). Leading dimensions default to dense rows.
@inline(__always)
public func matmulTransB(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0,
    ldx: Int? = nil, ldw: Int? = nil, ldy: Int? = nil
) {
    cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), alpha,
        x, Int32(ldx ?? k), w, Int32(ldw ?? k), beta, y, Int32(ldy ?? n))
}

/// y (M, N) = alpha * a (M, K) · b (K, N) + beta * y, all row-major.
@inline(__always)
public func matmul(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0,
    lda: Int? = nil, ldb: Int? = nil, ldy: Int? = nil
) {
    cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha,
        a, Int32(lda ?? k), b, Int32(ldb ?? n), beta, y, Int32(ldy ?? n))
}

/// y (N) = W (N, K) · x (K).
@inline(__always)
public func matvec(
    _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    n: Int, k: Int, beta: Float = 0
) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), 1, w, Int32(k), x, 1, beta, y, 1)
}

/// Threads OpenBLAS uses.
public var blasThreadCount: Int { Int(openblas_get_num_threads()) }

/// y (M, N) = alpha * a^T · b + beta * y, with a stored (K, M) and b stored (K, N), row-major.
@inline(__always)
public func matmulTransA(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0,
    lda: Int? = nil, ldb: Int? = nil, ldy: Int? = nil
) {
    cblas_sgemm(
        CblasRowMajor, CblasTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha,
        a, Int32(lda ?? m), b, Int32(ldb ?? n), beta, y, Int32(ldy ?? n))
}
