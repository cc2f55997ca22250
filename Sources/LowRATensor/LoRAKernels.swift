import CLowRAPacked

// The LoRA path of a linear layer, h = W x + s · B A x with s = alpha / r, as a forward/backward
// pair over flat buffers. The frozen W's own product is done by the caller (dense or packed).

/// y (T, out) += s · (x (T, in) · A^T (in, r)) · B^T (r, out); xa (T, r) keeps x·A^T for backward.
public func loraForward(
    _ y: UnsafeMutablePointer<Float>, _ xa: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, rows t: Int, in inF: Int, out: Int, rank r: Int, scale s: Float
) {
    guard t <= KernelPath.columns else {
        matmulTransB(x, a, xa, m: t, n: r, k: inF)  // xa = x A^T
        matmulTransB(xa, b, y, m: t, n: out, k: r, alpha: s, beta: 1)  // y += s xa B^T
        return
    }
    // A few rows (decode): the fp32 kernels on LowRA's workers instead of two small BLAS calls.
    multiplyRowsF32(a, rows: r, cols: inF, x, columns: t, into: xa)
    let yb = UnsafeMutablePointer<Float>.allocate(capacity: t * out)
    defer { yb.deallocate() }
    multiplyRowsF32(b, rows: out, cols: r, xa, columns: t, into: yb)
    for i in 0..<(t * out) { y[i] += s * yb[i] }
}

/// Y (n, rows) = X (n, cols) · Wᵀ for fp32 W (rows, cols) and a few columns, by the stored-matrix
/// kernels (`lowra_stored_gemm`), rows split across the workers.
public func multiplyRowsF32(
    _ w: UnsafePointer<Float>, rows: Int, cols: Int, _ x: UnsafePointer<Float>, columns n: Int,
    into y: UnsafeMutablePointer<Float>, path: Int = KernelPath.best
) {
    let io = UncheckedSendable((UnsafeRawPointer(w).assumingMemoryBound(to: UInt8.self), x, y))
    parallelFor(rows, minPerChunk: 64) { range in
        lowra_stored_gemm(
            Int32(path), 0, io.value.0, UInt64(4 * cols), UInt64(cols), io.value.1, UInt64(n), io.value.2,
            UInt64(rows), UInt64(range.lowerBound), UInt64(range.upperBound))
    }
}

/// Given dy (T, out): dA (r, in) += s · (dy B)^T x, dB (out, r) += s · dy^T xa, and, when dx is
/// given, dx (T, in) += s · (dy B) A. dyB (T, r) is scratch.
public func loraBackward(
    dA: UnsafeMutablePointer<Float>, dB: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?,
    dyB: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, xa: UnsafePointer<Float>,
    a: UnsafePointer<Float>, b: UnsafePointer<Float>, rows t: Int, in inF: Int, out: Int, rank r: Int, scale s: Float
) {
    matmul(dy, b, dyB, m: t, n: r, k: out)  // dyB = dy B: (T, out)(out, r)
    matmulTransA(dyB, x, dA, m: r, n: inF, k: t, alpha: s, beta: 1)  // dA += s dyB^T x
    matmulTransA(dy, xa, dB, m: out, n: r, k: t, alpha: s, beta: 1)  // dB += s dy^T xa
    if let dx { matmul(dyB, a, dx, m: t, n: inF, k: r, alpha: s, beta: 1) }  // dx += s dyB A
}
