import Foundation
import CBLAS
import CLowRAPacked

/// y (M, N) = alpha * x (M, K) · W^T + beta * y, with W stored row-major as (N, K): the layout
/// of every linear weight in LowRA (out x in). Leading dimensions default to dense rows.
@inline(__always)
public func matmulTransB(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0,
    ldx: Int? = nil, ldw: Int? = nil, ldy: Int? = nil
) {
    sgemm(CblasTrans, x, w, y, m: m, n: n, k: k, alpha: alpha, beta: beta, lda: ldx ?? k, ldb: ldw ?? k, ldy: ldy)
}

/// y (M, N) = alpha * a (M, K) · b (K, N) + beta * y, all row-major.
@inline(__always)
public func matmul(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0,
    lda: Int? = nil, ldb: Int? = nil, ldy: Int? = nil
) {
    sgemm(CblasNoTrans, a, b, y, m: m, n: n, k: k, alpha: alpha, beta: beta, lda: lda ?? k, ldb: ldb ?? n, ldy: ldy)
}

/// The one call into BLAS's sgemm (row-major, a not transposed), after parking the kernel pool's threads.
@inline(__always)
private func sgemm(
    _ transB: CBLAS_TRANSPOSE, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, alpha: Float, beta: Float, lda: Int, ldb: Int, ldy: Int?
) {
    lowra_pool_park()
    cblas_sgemm(
        CblasRowMajor, CblasNoTrans, transB, Int32(m), Int32(n), Int32(k), alpha,
        a, Int32(lda), b, Int32(ldb), beta, y, Int32(ldy ?? n))
}

/// y (N) = W (N, K) · x (K).
@inline(__always)
public func matvec(
    _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    n: Int, k: Int, beta: Float = 0
) {
    lowra_pool_park()
    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), 1, w, Int32(k), x, 1, beta, y, 1)
}

/// Threads OpenBLAS uses.
public var blasThreadCount: Int { Int(lowra_blas_threads()) }

/// Runs `body` with OpenBLAS on `n` threads, then restores its count: for work that runs BLAS
/// calls on several of LowRA's own threads at once.
public func withBLASThreads<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
    let previous = blasThreadCount
    lowra_set_blas_threads(Int32(n))
    defer { lowra_set_blas_threads(Int32(previous)) }
    return try body()
}

/// The CPU core type OpenBLAS chose its kernels for ("SkylakeX", "Haswell", …).
public var blasCoreName: String { String(cString: lowra_blas_core()) }

/// Environment variables OpenBLAS should have been started with, or [:] when it was. OpenBLAS
/// reads its settings once, when it loads, so only a process started with them gets them; the
/// CLI re-executes itself once with these set (`LowRACommand.main`).
/// - OPENBLAS_CORETYPE: OpenBLAS picks its kernels from the CPU's model number; a CPU newer than
///   the library (a Xeon it does not know, as on this project's build machines) falls back to
///   "Prescott", SSE3 kernels that run sgemm 2-3x slower than the AVX-512 ones the CPU has.
/// - OPENBLAS_THREAD_TIMEOUT: after each call OpenBLAS's threads spin and yield for 2^28 cycles
///   (~0.1 s) by default, taking the cores from LowRA's own workers between two sgemm calls;
///   2^16 cycles (~20 µs) keeps them warm across back-to-back calls only (eval 4-10% faster).
public func preferredBLASEnvironment(
    environment: [String: String] = ProcessInfo.processInfo.environment
) -> [String: String] {
    var out = [String: String]()
    if environment["OPENBLAS_THREAD_TIMEOUT"] == nil { out["OPENBLAS_THREAD_TIMEOUT"] = "16" }
    let preAVX2 = [
        "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2", "penryn", "dunnington",
        "nehalem", "sandybridge", "unknown",
    ]
    if environment["OPENBLAS_CORETYPE"] == nil, KernelPath.supported(1), preAVX2.contains(blasCoreName.lowercased()) {
        out["OPENBLAS_CORETYPE"] = KernelPath.supported(2) ? "SkylakeX" : "Haswell"
    }
    return out
}

/// The upper triangle of c (N, N) += aᵀ a, with a stored (K, N) row-major: a Gram matrix (a layer's
/// input second moments) at half the products of `matmulTransA(a, a, …)`. The strict lower
/// triangle is left as it was: `mirrorUpper` fills it once the sum is complete.
@inline(__always)
public func gramUpdate(_ a: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, n: Int, k: Int) {
    lowra_pool_park()
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(k), 1, a, Int32(n), 1, c, Int32(n))
}

/// Copies the upper triangle of the symmetric (n, n) row-major c into its lower one.
public func mirrorUpper(_ c: UnsafeMutablePointer<Float>, n: Int) {
    for i in 0..<n {
        for j in 0..<i { c[i * n + j] = c[j * n + i] }
    }
}

/// y (M, N) = alpha * a^T · b + beta * y, with a stored (K, M) and b stored (K, N), row-major.
@inline(__always)
public func matmulTransA(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0,
    lda: Int? = nil, ldb: Int? = nil, ldy: Int? = nil
) {
    lowra_pool_park()
    cblas_sgemm(
        CblasRowMajor, CblasTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha,
        a, Int32(lda ?? m), b, Int32(ldb ?? n), beta, y, Int32(ldy ?? n))
}
