import CBLAS

/// A rank-r factorization M ≈ U diag(S) Vt of a row-major (m, n) matrix.
public struct TruncatedSVD: Sendable {
    public var u: [Float]  // (m, r)
    public var s: [Float]  // (r), descending
    public var vt: [Float]  // (r, n)
    public let rank: Int
}

/// Full SVD by LAPACK (`sgesdd`), truncated to rank r: the reference.
public func truncatedSVDExact(_ matrix: [Float], rows m: Int, cols n: Int, rank r: Int) throws -> TruncatedSVD {
    let kMin = min(m, n)
    guard r >= 1, r <= kMin else { throw LowRAError(.invalidArgument, "rank \(r) must be in 1...\(kMin)") }
    var a = matrix
    var s = [Float](repeating: 0, count: kMin)
    var u = [Float](repeating: 0, count: m * kMin)
    var vt = [Float](repeating: 0, count: kMin * n)
    let info = lowra_sgesdd(Int32(m), Int32(n), &a, &s, &u, &vt)
    guard info == 0 else { throw LowRAError(.invalidArgument, "LAPACK sgesdd failed (info \(info))") }
    var ur = [Float](repeating: 0, count: m * r)
    for i in 0..<m { for j in 0..<r { ur[i * r + j] = u[i * kMin + j] } }
    return TruncatedSVD(u: ur, s: Array(s.prefix(r)), vt: Array(vt.prefix(r * n)), rank: r)
}

/// Randomized rank-r SVD (range finder with `oversample` extra columns and `powerIterations`
/// subspace iterations, then an exact SVD of the small projected matrix): O(m·n·r) instead of
/// a full SVD, for LoftQ's repeated factorizations.
public func truncatedSVDRandomized(
    _ matrix: [Float], rows m: Int, cols n: Int, rank r: Int, oversample: Int = 8, powerIterations: Int = 2,
    seed: UInt64 = 0
) throws -> TruncatedSVD {
    precondition(matrix.count == m * n)
    return try matrix.withUnsafeBufferPointer { mb in
        let a = mb.baseAddress!
        let products = MatrixProducts(
            rows: m, cols: n,
            times: { x, y, k in matmul(a, x, y, m: m, n: k, k: n) },
            transposeTimes: { y, z, k in matmulTransA(a, y, z, m: n, n: k, k: m) },
            leftTimes: { y, s, k in matmulTransA(y, a, s, m: k, n: n, k: m) })
        return try truncatedSVDRandomized(
            products, rank: r, oversample: oversample, powerIterations: powerIterations, seed: seed)
    }
}

/// A matrix M (rows, cols) known only by its products with thin matrices, which is all the
/// randomized SVD needs of it: a product of factors (CLoQ's whitened residual R·L) need not be
/// formed. Buffers are row-major; k is the thin dimension.
public struct MatrixProducts {
    public let rows: Int
    public let cols: Int
    /// y (rows, k) = M x for x (cols, k).
    public let times: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    /// z (cols, k) = Mᵀ y for y (rows, k).
    public let transposeTimes: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    /// s (k, cols) = yᵀ M for y (rows, k).
    public let leftTimes: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void

    public init(
        rows: Int, cols: Int, times: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void,
        transposeTimes: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void,
        leftTimes: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    ) {
        (self.rows, self.cols, self.times, self.transposeTimes, self.leftTimes) =
            (rows, cols, times, transposeTimes, leftTimes)
    }
}

/// The randomized rank-r SVD of a matrix given by its products (see the matrix version).
public func truncatedSVDRandomized(
    _ matrix: MatrixProducts, rank r: Int, oversample: Int = 8, powerIterations: Int = 2, seed: UInt64 = 0
) throws -> TruncatedSVD {
    let (m, n) = (matrix.rows, matrix.cols)
    let l = min(min(m, n), r + oversample)
    guard r >= 1, r <= l else { throw LowRAError(.invalidArgument, "rank \(r) must be in 1...\(min(m, n))") }
    var rng = SplitMix64(seed: seed)
    let omega = (0..<(n * l)).map { _ in Float(rng.nextUnit() * 2 - 1) }  // (n, l)
    var y = [Float](repeating: 0, count: m * l)  // (m, l) = M Ω
    matrix.times(omega, &y, l)
    func orthonormalize(_ x: inout [Float], rows: Int) throws { try orthonormalizeColumns(&x, rows: rows, cols: l) }
    try orthonormalize(&y, rows: m)
    var z = [Float](repeating: 0, count: n * l)  // (n, l) = M^T Q
    for _ in 0..<powerIterations {
        matrix.transposeTimes(y, &z, l)
        try orthonormalize(&z, rows: n)
        matrix.times(z, &y, l)
        try orthonormalize(&y, rows: m)
    }
    var small = [Float](repeating: 0, count: l * n)  // (l, n) = Q^T M
    matrix.leftTimes(y, &small, l)
    let inner = try truncatedSVDExact(small, rows: l, cols: n, rank: r)
    var u = [Float](repeating: 0, count: m * r)  // Q (m, l) · U_small (l, r)
    matmul(y, inner.u, &u, m: m, n: r, k: l)
    return TruncatedSVD(u: u, s: inner.s, vt: inner.vt, rank: r)
}

/// The Q of A = QR (A row-major (rows, cols), rows ≥ cols) by LAPACK, each column's sign taken
/// from R's diagonal so that Q is unique: for a Gaussian A, Haar-distributed.
public func orthonormalColumns(_ a: [Float], rows m: Int, cols n: Int) throws -> [Float] {
    var q = a
    try orthonormalizeColumns(&q, rows: m, cols: n, signsFromR: true)
    return q
}

/// x (rows, cols) replaced by the Q of its QR factorization (LAPACK `sgeqrf` + `sorgqr`); with
/// `signsFromR`, each column multiplied by the sign of R's diagonal entry.
func orthonormalizeColumns(_ x: inout [Float], rows m: Int, cols n: Int, signsFromR: Bool = false) throws {
    precondition(x.count == m * n && m >= n)
    var diagonal = [Float](repeating: 0, count: n)
    guard lowra_orthonormalize(Int32(m), Int32(n), &x, &diagonal) == 0 else {
        throw LowRAError(.invalidArgument, "LAPACK QR failed")
    }
    if signsFromR { for i in 0..<m { for j in 0..<n where diagonal[j] < 0 { x[i * n + j] = -x[i * n + j] } } }
}
