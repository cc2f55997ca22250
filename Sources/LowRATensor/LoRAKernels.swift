import CLowRAPacked

// The LoRA path of a linear layer, h = W x + s · B A x with s = alpha / r, as a forward/backward
// pair over flat buffers. The frozen W's own product is done by the caller (dense or packed).

/// y (T, out) += s · (x (T, in) · A^T (in, r)) · B^T (r, out); xa (T, r) keeps x·A^T for backward.
public func loraForward(
    _ y: UnsafeMutablePointer<Float>, _ xa: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, rows t: Int, in inF: Int, out: Int, rank r: Int,
    scale s: Float
) {
    guard t <= KernelPath.batchColumns else {
        matmulTransB(x, a, xa, m: t, n: r, k: inF)  // xa = x A^T
        matmulTransB(xa, b, y, m: t, n: out, k: r, alpha: s, beta: 1)  // y += s xa B^T
        return
    }
    // A few rows (decode): xa by the stored fp32 kernel on this thread (r rows), then the
    // up-projection by `lowra_lora_up` (16 rows of B per register; the same bits for any t, so a
    // sequence's output does not depend on the others batched with it).
    let path = KernelPath.current
    let ab = UnsafeRawPointer(a).assumingMemoryBound(to: UInt8.self)
    lowra_stored_gemm(Int32(path), 0, ab, UInt64(4 * inF), UInt64(inF), x, UInt64(t), xa, UInt64(r), 0, UInt64(r))
    let io = UncheckedSendable((b, xa, y))
    parallelFor(out, minPerChunk: 512) { range in
        lowra_lora_up(
            Int32(path), io.value.0, UInt64(out), UInt64(r), io.value.1, UInt64(t), s, io.value.2, UInt64(out),
            UInt64(range.lowerBound), UInt64(range.upperBound))
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
