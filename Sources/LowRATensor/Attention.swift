// Causal grouped-query attention for training, as a forward/backward pair over flat buffers.
// Head h reads key/value head h / (H / KV). Inference uses the KV-cached path in LlamaForward.

/// out (T, H*D) = softmax(q_h k_g^T / √D, causal) v_g per head; probs (H, T, T) is saved for
/// backward. q (T, H*D), k and v (T, KV*D).
public func attentionForward(
    _ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
    _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
    tokens t: Int, heads h: Int, kvHeads kv: Int, headDim d: Int
) {
    let qDim = h * d, kvDim = kv * d, group = h / kv
    let scale = 1 / Float(d).squareRoot()
    for head in 0..<h {
        let g = head / group
        let p = probs + head * t * t
        matmulTransB(q + head * d, k + g * d, p, m: t, n: t, k: d, alpha: scale, ldx: qDim, ldw: kvDim, ldy: t)
        softmaxRowsForward(p, rows: t, cols: t, stride: t) { $0 + 1 }
        matmul(p, v + g * d, out + head * d, m: t, n: d, k: t, lda: t, ldb: kvDim, ldy: qDim)
    }
}

/// dq (T, H*D), dk and dv (T, KV*D) += gradients given dout (T, H*D); scratch (T, T).
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
        matmul(scratch, k + g * d, dq + head * d, m: t, n: d, k: t, alpha: scale, beta: 1, lda: t, ldb: kvDim, ldy: qDim)
        matmulTransA(scratch, q + head * d, dk + g * d, m: t, n: d, k: t, alpha: scale, beta: 1, lda: t, ldb: qDim, ldy: kvDim)
    }
}
