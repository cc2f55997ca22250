import CLowRAPacked
import Foundation

// Backward kernels, one per forward kernel in Ops.swift, over the same flat buffers. Gradients
// accumulate (+=) into the d* outputs, as llm.c does, so a buffer shared by two uses sums both.
// Norm weights stay frozen in LoRA fine-tuning, so only input gradients are produced.

/// dx (T, C) += ∂L/∂x of out = rmsnorm(x) * weight, given dout (T, C).
public func rmsnormBackward(
    _ dx: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
    _ weight: UnsafePointer<Float>, rows t: Int, cols c: Int, eps: Float
) {
    parallelFor(t, minPerChunk: 16) { range in
        for r in range {
            let xr = x + r * c, gr = dout + r * c, dr = dx + r * c
            var ss: Float = 0
            var dot: Float = 0  // Σ dout_i w_i x_i
            for i in 0..<c {
                ss += xr[i] * xr[i]
                dot += gr[i] * weight[i] * xr[i]
            }
            let inv = 1 / (ss / Float(c) + eps).squareRoot()
            let k = dot * inv * inv * inv / Float(c)
            for i in 0..<c { dr[i] += gr[i] * weight[i] * inv - k * xr[i] }
        }
    }
}

/// In place: turns ∂L/∂(rotated x) into ∂L/∂x (the rotation's transpose), same layout as
/// `ropeForward`.
public func ropeBackward(
    _ dx: UnsafeMutablePointer<Float>, rows t: Int, stride: Int, heads: Int, headDim d: Int,
    table: RopeTable, layout: RopeLayout
) {
    ropeRotate(dx, rows: t, stride: stride, heads: heads, headDim: d, table: table, layout: layout, inverse: true)
}

/// dgate, dup (N) += gradients of out = silu(gate) * up, given dout (N) (`lowra_swiglu_backward`).
public func swigluBackward(
    _ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
    _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count n: Int, path: Int = KernelPath.current
) {
    parallelFor(n, minPerChunk: 4096) { range in
        let i = range.lowerBound
        lowra_swiglu_backward(Int32(path), gate + i, up + i, dout + i, dgate + i, dup + i, UInt64(range.count))
    }
}

/// In place softmax backward for rows of probabilities p (rows, n; the first valid(r) entries
/// used): dp becomes ∂L/∂(scores) = p ⊙ (dp − Σ p·dp).
public func softmaxRowsBackward(
    _ dp: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>, rows: Int, cols n: Int, stride: Int,
    valid: (Int) -> Int
) {
    parallelFor(rows, minPerChunk: 8) { range in
        for r in range {
            let m = min(n, valid(r))
            let pr = p + r * stride, gr = dp + r * stride
            var dot: Float = 0
            for i in 0..<m { dot += pr[i] * gr[i] }
            for i in 0..<m { gr[i] = pr[i] * (gr[i] - dot) }
            for i in m..<n { gr[i] = 0 }
        }
    }
}

/// Mean cross-entropy over the rows whose target is >= 0 (a negative target is masked out), and
/// its gradient written into dlogits (rows, V) (not accumulated), the exponentials by `lowra_sum_exp` and
/// `lowra_exp_scaled` on the current kernel path. Returns (summed loss, count).
public func crossEntropyForwardBackward(
    _ dlogits: UnsafeMutablePointer<Float>?, _ logits: UnsafePointer<Float>, targets: [Int], vocab v: Int,
    scale: Float = 1
) -> (loss: Double, count: Int) {
    var loss = 0.0
    var count = 0
    for (r, target) in targets.enumerated() {
        let row = logits + r * v
        guard target >= 0 else {
            if let d = dlogits { (d + r * v).update(repeating: 0, count: v) }
            continue
        }
        let lse = logSumExp(row, count: v)
        loss += lse - Double(row[target])
        count += 1
        if let d = dlogits {
            let dr = d + r * v
            lowra_exp_scaled(Int32(KernelPath.current), row, UInt64(v), lse, scale, dr)
            dr[target] -= scale
        }
    }
    return (loss, count)
}

/// Distillation on one row of logits (V): loss = (1 − w)·CE(target) + w·KL(p_teacher ‖ p_student)
/// with p = softmax(logits), and its gradient (scaled by `scale`) written into dlogits (not
/// accumulated): softmax(student) − (1 − w)·onehot(target) − w·p_teacher. A negative target masks
/// the row (no loss, zero gradient). Returns (loss, count) as `crossEntropyForwardBackward`.
public func distillationForwardBackward(
    _ dlogits: UnsafeMutablePointer<Float>?, _ logits: UnsafePointer<Float>, teacher: UnsafePointer<Float>,
    target: Int, vocab v: Int, weight w: Float, scale: Float = 1
) -> (loss: Double, count: Int) {
    guard target >= 0 else {
        dlogits?.update(repeating: 0, count: v)
        return (0, 0)
    }
    let lse = logSumExp(logits, count: v), tlse = logSumExp(teacher, count: v)  // as cross-entropy's
    let wd = Double(w)
    var kl = 0.0
    for i in 0..<v {
        let logPt = Double(teacher[i]) - tlse
        let pt = exp(logPt)
        kl += pt * (logPt - (Double(logits[i]) - lse))
        if let d = dlogits { d[i] = Float(exp(Double(logits[i]) - lse) - wd * pt) * scale }
    }
    if let d = dlogits { d[target] -= (1 - w) * scale }
    return ((1 - wd) * (lse - Double(logits[target])) + wd * kl, 1)
}
