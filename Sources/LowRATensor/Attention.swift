import CLowRAPacked

// Causal grouped-query attention as a forward/backward pair over flat buffers. Head h reads
// key/value head h / (H / KV). The forward serves training (keys = the T queries' own) and
// KV-cached inference (keys = the cache's `past` positions followed by the T new ones).

/// out (T, H*D) = softmax(q_h k_g^T / √D, causal) v_g per head, for T queries at positions
/// past..<past+T over Tk = past + T keys. q (T, H*D); k and v (Tk, KV*D). probs receives the probabilities: (H, T, Tk)
/// when `probsPerHead` (saved for backward), else one (T, Tk) buffer reused by every head.
public func attentionForward(
    _ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
    _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
    tokens t: Int, past: Int = 0, heads h: Int, kvHeads kv: Int, headDim d: Int, probsPerHead: Bool = true
) {
    let qDim = h * d, kvDim = kv * d, group = h / kv, tk = past + t
    let scale = 1 / Float(d).squareRoot()
    for head in 0..<h {
        let g = head / group
        let p = probs + (probsPerHead ? head * t * tk : 0)
        matmulTransB(q + head * d, k + g * d, p, m: t, n: tk, k: d, alpha: scale, ldx: qDim, ldw: kvDim, ldy: tk)
        softmaxRowsForward(p, rows: t, cols: tk, stride: tk) { past + $0 + 1 }
        matmul(p, v + g * d, out + head * d, m: t, n: d, k: tk, lda: tk, ldb: kvDim, ldy: qDim)
    }
}

/// out (H*D) = one query's attention over `keys` cached positions: keys and values (keys, KV*D)
/// in IEEE half, scores (H, keys) scratch. Heads run in parallel once the cache is long enough.
public func attentionDecode(
    _ out: UnsafeMutablePointer<Float>, _ q: UnsafePointer<Float>, _ k: UnsafePointer<UInt16>,
    _ v: UnsafePointer<UInt16>, keys tk: Int, heads h: Int, kvHeads kv: Int, headDim d: Int,
    scores: UnsafeMutablePointer<Float>, path: Int = KernelPath.current
) {
    let io = UncheckedSendable((out, q, k, v, scores))
    parallelFor(h, minPerChunk: max(1, 16_384 / max(1, tk * d))) { range in
        lowra_attention_decode_f16(
            Int32(path), io.value.1, io.value.2, io.value.3, UInt64(tk), UInt64(h), UInt64(kv), UInt64(d),
            io.value.4, io.value.0, UInt64(range.lowerBound), UInt64(range.upperBound))
    }
}

/// dq (T, H*D), dk and dv (T, KV*D) += gradients given dout (T, H*D); scratch (T, T). No past
/// keys: the training case, probs (H, T, T) as saved by the forward.
public func attentionBackward(
    dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
    scratch: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, probs: UnsafePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    tokens t: Int, heads h: Int, kvHeads kv: Int, headDim d: Int
) {
    let qDim = h * d, kvDim = kv * d, group = h / kv
    let scale = 1 / Float(d).squareRoot()
    for head in 0..<h {
        let g = head / group
        let p = probs + head * t * t
        // dv_g += P^T dout_h
        matmulTransA(p, dout + head * d, dv + g * d, m: t, n: d, k: t, beta: 1, lda: t, ldb: qDim, ldy: kvDim)
        // dP = dout_h v_g^T, then through the softmax: dS = P ⊙ (dP − rowsum(P ⊙ dP))
        matmulTransB(dout + head * d, v + g * d, scratch, m: t, n: t, k: d, ldx: qDim, ldw: kvDim, ldy: t)
        softmaxRowsBackward(scratch, p, rows: t, cols: t, stride: t) { $0 + 1 }
        // dq_h += scale dS k_g ; dk_g += scale dS^T q_h
        matmul(
            scratch, k + g * d, dq + head * d, m: t, n: d, k: t, alpha: scale, beta: 1, lda: t, ldb: kvDim, ldy: qDim)
        matmulTransA(
            scratch, q + head * d, dk + g * d, m: t, n: d, k: t, alpha: scale, beta: 1, lda: t, ldb: qDim, ldy: kvDim)
    }
}
