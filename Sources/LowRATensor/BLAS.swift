import Foundation
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

/// The CPU core type OpenBLAS chose its kernels for ("SkylakeX", "Haswell", …).
public var blasCoreName: String { String(cString: openblas_get_corename()) }

/// A better OpenBLAS core type for this CPU than the one it detected, or nil. OpenBLAS picks its
/// kernels once, when it loads, from the CPU's model number; a CPU newer than the library (a
/// Xeon it does not know, as on this project's build machines) falls back to "Prescott", SSE3
/// kernels that run sgemm 2-3x slower than the AVX-512 ones the CPU has. Only an environment
/// variable read at load (OPENBLAS_CORETYPE) changes that choice, so the CLI re-executes itself
/// with it (`LowRACommand.main`). nil when the variable is already set or the choice is fine.
public func betterBLASCore(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
    guard environment["OPENBLAS_CORETYPE"] == nil, KernelPath.supported(1) else { return nil }
    let preAVX2 = [
        "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2", "penryn", "dunnington",
        "nehalem", "sandybridge", "unknown",
    ]
    guard preAVX2.contains(blasCoreName.lowercased()) else { return nil }
    return KernelPath.supported(2) ? "SkylakeX" : "Haswell"
}

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
