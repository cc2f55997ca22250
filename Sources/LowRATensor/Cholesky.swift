import CBLAS
import CLowRAPacked

// Symmetric positive definite matrices (a layer's input covariance H) by LAPACK: the factors that
// calibrated quantization (error feedback) and calibrated LoRA initialization need.

/// The Cholesky factor of a symmetric positive definite (n, n) row-major matrix: lower L with
/// A = L Lᵀ, or upper U with A = Uᵀ U; the other triangle is zero.
public func choleskyFactor(_ a: [Float], n: Int, upper: Bool = false) throws -> [Float] {
    precondition(a.count == n * n)
    var f = a
    try factorInPlace(&f, n: n, upper: upper)
    return f
}

private func factorInPlace(_ f: inout [Float], n: Int, upper: Bool) throws {
    let info = lowra_spotrf(upper ? 1 : 0, Int32(n), &f)
    guard info == 0 else {
        throw LowRAError(
            .invalidArgument,
            "matrix of order \(n) is not positive definite (Cholesky failed at column \(info)); raise the damping")
    }
    for i in 0..<n {
        for j in 0..<n where upper ? j < i : j > i { f[i * n + j] = 0 }
    }
}

/// The upper Cholesky factor U of A⁻¹ (A⁻¹ = Uᵀ U) of a symmetric positive definite (n, n)
/// matrix: GPTQ's factor, whose row j carries column j's quantization error onto the columns
/// after it. With J the order reversal, J A J = L Lᵀ (Cholesky) gives A = R Rᵀ for the upper
/// R = J L J, so A⁻¹ = R⁻ᵀ R⁻¹ and U = R⁻¹: a Cholesky and a triangular inverse, 2n³/3 flops
/// (inverting A and factoring the inverse again costs 4n³/3), in one n × n buffer beside `a`
/// (at 7B width down_proj's is 485 MB). Reversing both indices of a row-major matrix reverses
/// its storage.
public func inverseCholeskyUpper(_ a: [Float], n: Int) throws -> [Float] {
    precondition(a.count == n * n)
    var f = [Float](a.reversed())
    try factorInPlace(&f, n: n, upper: false)
    f.reverse()
    guard lowra_strtri_upper(Int32(n), &f) == 0 else {
        throw LowRAError(.invalidArgument, "matrix of order \(n) could not be inverted")
    }
    return f
}

/// x ← L x, Lᵀ x (x (n, cols), `left`) or x L (x (rows, n)) for lower-triangular L (n, n): a
/// whitening by H's Cholesky factor without a product of the full size.
public func multiplyLowerTriangular(
    _ l: UnsafePointer<Float>, n: Int, _ x: UnsafeMutablePointer<Float>, other: Int, left: Bool,
    transpose: Bool = false
) {
    precondition(left || !transpose)
    lowra_pool_park()
    cblas_strmm(
        CblasRowMajor, left ? CblasLeft : CblasRight, CblasLower, transpose ? CblasTrans : CblasNoTrans, CblasNonUnit,
        Int32(left ? n : other), Int32(left ? other : n), 1, l, Int32(n), x, Int32(left ? other : n))
}

/// x (rows, n) ← x · L⁻¹ for lower-triangular L (n, n): un-whitens factors found in the space
/// x · L (calibrated LoRA initialization).
public func solveRightLowerTriangular(_ x: inout [Float], rows: Int, lower l: [Float], n: Int) {
    precondition(x.count == rows * n && l.count == n * n)
    cblas_strsm(
        CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, Int32(rows), Int32(n), 1, l, Int32(n),
        &x, Int32(n))
}
