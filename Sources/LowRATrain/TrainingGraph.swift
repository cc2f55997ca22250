import Foundation
import LowRAModel
import LowRATensor

/// The training forward and backward pass of a Llama model with LoRA on every linear layer of
/// every block (llm.c style: flat buffers, one hand-written backward per forward op). The base
/// weights are frozen; a packed layer is dequantized into one shared scratch buffer in forward
/// and again in backward and never kept expanded. Gradients flow only to the adapter's A and B.
///
/// All buffers for a batch of `batch` sequences of `seq` tokens are allocated once, here, and
/// reused by every step: activations saved for backward per layer, plus shared scratch.
public final class TrainingGraph: @unchecked Sendable {
    public let config: LlamaConfig
    public let weights: LlamaWeights
    public let batch: Int
    public let seq: Int
    public let rank: Int
    /// Rows of logits computed at once by the head (bounds the (rows, V) buffers).
    public let headChunk: Int

    private let n: Int  // batch * seq rows
    private var allocations = [UnsafeMutablePointer<Float>]()
    private let rope: RopeTable

    private struct Saved {
        var xIn, xn1, q, k, v, probs, att, xMid, xn2, gate, up, act: UnsafeMutablePointer<Float>
        var xa: [UnsafeMutablePointer<Float>]  // (N, r) per target, for the LoRA backward
    }
    private let saved: [Saved]
    private let x, xFinal, normed, dnormed, proj, logits, dlogits: UnsafeMutablePointer<Float>
    private let dx, dxn, dq, dk, dv, datt, dact, dgate, dup, dyB, attnScratch, weightScratch: UnsafeMutablePointer<Float>

    /// Bytes of the buffers this graph holds (activations and scratch).
    public private(set) var workspaceBytes = 0

    public init(config: LlamaConfig, weights: LlamaWeights, batch: Int, seq: Int, rank: Int, headChunk: Int = 128) throws {
        guard batch >= 1, seq >= 1 else { throw LowRAError(.invalidArgument, "batch and sequence length must be positive") }
        guard seq <= config.maxPositions else {
            throw LowRAError(.invalidArgument, "sequence length \(seq) is above the model's context of \(config.maxPositions)")
        }
        self.config = config
        self.weights = weights
        self.batch = batch
        self.seq = seq
        self.rank = rank
        self.headChunk = min(headChunk, batch * seq)
        let n = batch * seq, chunk = min(headChunk, batch * seq)
        self.n = n
        rope = RopeTable(start: 0, count: seq, headDim: config.headDim, base: config.ropeTheta)
        let c = config
        let C = c.hiddenSize, F = c.intermediateSize, qD = c.qDim, kvD = c.kvDim, V = c.vocabSize
        var allocs = [UnsafeMutablePointer<Float>]()
        var bytes = 0
        func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            allocs.append(p)
            bytes += 4 * count
            return p
        }
        let outs = [qD, kvD, kvD, C, F, F, C]
        var layers = [Saved]()
        for _ in 0..<c.numLayers {
            layers.append(Saved(
                xIn: buffer(n * C), xn1: buffer(n * C), q: buffer(n * qD), k: buffer(n * kvD), v: buffer(n * kvD),
                probs: buffer(batch * c.numHeads * seq * seq), att: buffer(n * qD), xMid: buffer(n * C),
                xn2: buffer(n * C), gate: buffer(n * F), up: buffer(n * F), act: buffer(n * F),
                xa: outs.map { _ in buffer(n * rank) }))
        }
        x = buffer(n * C); xFinal = buffer(n * C); normed = buffer(n * C); dnormed = buffer(n * C)
        proj = buffer(n * C); logits = buffer(chunk * V); dlogits = buffer(chunk * V)
        dx = buffer(n * C); dxn = buffer(n * C); dq = buffer(n * qD); dk = buffer(n * kvD); dv = buffer(n * kvD)
        datt = buffer(n * qD); dact = buffer(n * F); dgate = buffer(n * F); dup = buffer(n * F)
        dyB = buffer(n * rank); attnScratch = buffer(seq * seq)
        weightScratch = buffer(max(qD * C, kvD * C, F * C))
        saved = layers
        allocations = allocs
        workspaceBytes = bytes
    }

    deinit { for p in allocations { p.deallocate() } }

    private func check(_ inputs: [Int], _ targets: [Int], _ adapter: LoRAAdapter) throws {
        guard inputs.count == n, targets.count == n else {
            throw LowRAError(.shapeMismatch, "a training batch needs \(n) inputs and targets (\(batch) x \(seq)), got \(inputs.count) and \(targets.count)")
        }
        guard adapter.rank == rank, adapter.slots.count == config.numLayers * LoRAAdapter.targetKinds.count else {
            throw LowRAError(.shapeMismatch, "the adapter (rank \(adapter.rank), \(adapter.slots.count) layers) does not fit this graph (rank \(rank))")
        }
        let v = config.vocabSize
        if let bad = inputs.first(where: { $0 < 0 || $0 >= v }) ?? targets.first(where: { $0 >= v }) {
            throw LowRAError(.invalidArgument, "token id \(bad) is outside the vocabulary (\(v))")
        }
    }

    /// Mean cross-entropy over the unmasked targets (target < 0 is masked) without backward.
    public func loss(inputs: [Int], targets: [Int], adapter: LoRAAdapter) throws -> (loss: Double, count: Int) {
        try check(inputs, targets, adapter)
        return adapter.values.withUnsafeBufferPointer { p in
            forward(inputs, p.baseAddress!, adapter)
            return head(targets, gradScale: nil)
        }
    }

    /// Forward and backward: adds ∂L/∂(A, B) × gradScale to `gradient` (same layout as the
    /// adapter's values), where L is the mean cross-entropy over this batch's unmasked targets.
    /// Returns the summed loss and the number of targets.
    public func lossAndGradient(
        inputs: [Int], targets: [Int], adapter: LoRAAdapter, gradient: inout [Float], gradScale: Float = 1
    ) throws -> (loss: Double, count: Int) {
        try check(inputs, targets, adapter)
        guard gradient.count == adapter.values.count else {
            throw LowRAError(.shapeMismatch, "gradient has \(gradient.count) entries, the adapter \(adapter.values.count)")
        }
        let count = targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
        guard count > 0 else { return (0, 0) }
        return adapter.values.withUnsafeBufferPointer { p in
            gradient.withUnsafeMutableBufferPointer { g in
                forward(inputs, p.baseAddress!, adapter)
                let r = head(targets, gradScale: gradScale / Float(count))
                backward(p.baseAddress!, g.baseAddress!, adapter)
                return r
            }
        }
    }

    // MARK: - Forward

    private func linearForward(
        _ lin: Linear, _ slot: LoRAAdapter.Slot, _ params: UnsafePointer<Float>, scale: Float,
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, xa: UnsafeMutablePointer<Float>
    ) {
        lin.withWeight(scratch: weightScratch) { w in
            matmulTransB(x, w, y, m: n, n: lin.outFeatures, k: lin.inFeatures)
        }
        if let bias = lin.bias {
            for r in 0..<n {
                let yr = y + r * lin.outFeatures
                for i in 0..<lin.outFeatures { yr[i] += bias[i] }
            }
        }
        loraForward(y, xa, x, params + slot.offsetA, params + slot.offsetB, rows: n, in: lin.inFeatures,
                    out: lin.outFeatures, rank: rank, scale: scale)
    }

    private func forward(_ inputs: [Int], _ params: UnsafePointer<Float>, _ adapter: LoRAAdapter) {
        let c = config
        let C = c.hiddenSize, F = c.intermediateSize, H = c.numHeads, KV = c.numKVHeads, D = c.headDim
        let qD = c.qDim, kvD = c.kvDim, T = seq
        let s = adapter.scale
        weights.embedding.withUnsafeBufferPointer { emb in
            for (r, tok) in inputs.enumerated() { (x + r * C).update(from: emb.baseAddress! + tok * C, count: C) }
        }
        for (l, block) in weights.blocks.enumerated() {
            let sv = saved[l]
            func slot(_ k: Int) -> LoRAAdapter.Slot { adapter.slots[l * 7 + k] }
            sv.xIn.update(from: x, count: n * C)
            block.attnNorm.withUnsafeBufferPointer { rmsnormForward(sv.xn1, x, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps) }
            linearForward(block.q, slot(0), params, scale: s, x: sv.xn1, y: sv.q, xa: sv.xa[0])
            linearForward(block.k, slot(1), params, scale: s, x: sv.xn1, y: sv.k, xa: sv.xa[1])
            linearForward(block.v, slot(2), params, scale: s, x: sv.xn1, y: sv.v, xa: sv.xa[2])
            for b in 0..<batch {
                ropeForward(sv.q + b * T * qD, rows: T, stride: qD, heads: H, headDim: D, table: rope, layout: c.ropeLayout)
                ropeForward(sv.k + b * T * kvD, rows: T, stride: kvD, heads: KV, headDim: D, table: rope, layout: c.ropeLayout)
                attentionForward(sv.att + b * T * qD, sv.probs + b * H * T * T, sv.q + b * T * qD, sv.k + b * T * kvD,
                                 sv.v + b * T * kvD, tokens: T, heads: H, kvHeads: KV, headDim: D)
            }
            linearForward(block.o, slot(3), params, scale: s, x: sv.att, y: proj, xa: sv.xa[3])
            addInPlace(x, proj, count: n * C)
            sv.xMid.update(from: x, count: n * C)
            block.ffnNorm.withUnsafeBufferPointer { rmsnormForward(sv.xn2, x, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps) }
            linearForward(block.gate, slot(4), params, scale: s, x: sv.xn2, y: sv.gate, xa: sv.xa[4])
            linearForward(block.up, slot(5), params, scale: s, x: sv.xn2, y: sv.up, xa: sv.xa[5])
            swigluForward(sv.act, sv.gate, sv.up, count: n * F)
            linearForward(block.down, slot(6), params, scale: s, x: sv.act, y: proj, xa: sv.xa[6])
            addInPlace(x, proj, count: n * C)
        }
        xFinal.update(from: x, count: n * C)
        weights.finalNorm.withUnsafeBufferPointer { rmsnormForward(normed, xFinal, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps) }
    }

    /// Logits chunk by chunk, cross-entropy, and (when gradScale is set) ∂L/∂normed into dnormed.
    private func head(_ targets: [Int], gradScale: Float?) -> (loss: Double, count: Int) {
        let C = config.hiddenSize, V = config.vocabSize
        var total = 0.0
        var count = 0
        let headWeight = weights.head?.weight ?? weights.embedding
        headWeight.withUnsafeBufferPointer { wb in
            let w = wb.baseAddress!
            var r0 = 0
            while r0 < n {
                let rows = min(headChunk, n - r0)
                matmulTransB(normed + r0 * C, w, logits, m: rows, n: V, k: C)
                var rowLoss = [Double](repeating: 0, count: rows)
                var rowCount = [Int](repeating: 0, count: rows)
                let out = UncheckedSendable((logits, dlogits))
                rowLoss.withUnsafeMutableBufferPointer { lossB in
                    rowCount.withUnsafeMutableBufferPointer { countB in
                        let lb = UncheckedSendable(lossB), cb = UncheckedSendable(countB)
                        parallelFor(rows, minPerChunk: 4) { range in
                            for i in range {
                                let (lg, dl) = out.value
                                let r = crossEntropyForwardBackward(
                                    gradScale == nil ? nil : dl + i * V, lg + i * V, targets: [targets[r0 + i]], vocab: V,
                                    scale: gradScale ?? 1)
                                lb.value[i] = r.loss
                                cb.value[i] = r.count
                            }
                        }
                    }
                }
                for i in 0..<rows {
                    total += rowLoss[i]
                    count += rowCount[i]
                }
                if gradScale != nil {
                    matmul(dlogits, w, dnormed + r0 * C, m: rows, n: C, k: V)
                }
                r0 += rows
            }
        }
        return (total, count)
    }

    // MARK: - Backward

    /// dxIn (N, in) += dy W + LoRA input gradient; adds the A and B gradients.
    private func linearBackward(
        _ lin: Linear, _ slot: LoRAAdapter.Slot, _ params: UnsafePointer<Float>, _ grad: UnsafeMutablePointer<Float>,
        scale: Float, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, xa: UnsafePointer<Float>,
        dxIn: UnsafeMutablePointer<Float>
    ) {
        lin.withWeight(scratch: weightScratch) { w in
            matmul(dy, w, dxIn, m: n, n: lin.inFeatures, k: lin.outFeatures, beta: 1)
        }
        loraBackward(dA: grad + slot.offsetA, dB: grad + slot.offsetB, dx: dxIn, dyB: dyB, dy: dy, x: x, xa: xa,
                     a: params + slot.offsetA, b: params + slot.offsetB, rows: n, in: lin.inFeatures,
                     out: lin.outFeatures, rank: rank, scale: scale)
    }

    private func backward(_ params: UnsafePointer<Float>, _ grad: UnsafeMutablePointer<Float>, _ adapter: LoRAAdapter) {
        let c = config
        let C = c.hiddenSize, F = c.intermediateSize, H = c.numHeads, KV = c.numKVHeads, D = c.headDim
        let qD = c.qDim, kvD = c.kvDim, T = seq
        let s = adapter.scale
        dx.update(repeating: 0, count: n * C)
        weights.finalNorm.withUnsafeBufferPointer { rmsnormBackward(dx, dnormed, xFinal, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps) }
        for l in stride(from: c.numLayers - 1, through: 0, by: -1) {
            let block = weights.blocks[l]
            let sv = saved[l]
            func slot(_ k: Int) -> LoRAAdapter.Slot { adapter.slots[l * 7 + k] }
            // MLP: x_out = xMid + down(swiglu(gate(xn2), up(xn2))).
            dact.update(repeating: 0, count: n * F)
            linearBackward(block.down, slot(6), params, grad, scale: s, dy: dx, x: sv.act, xa: sv.xa[6], dxIn: dact)
            dgate.update(repeating: 0, count: n * F)
            dup.update(repeating: 0, count: n * F)
            swigluBackward(dgate, dup, dact, sv.gate, sv.up, count: n * F)
            dxn.update(repeating: 0, count: n * C)
            linearBackward(block.gate, slot(4), params, grad, scale: s, dy: dgate, x: sv.xn2, xa: sv.xa[4], dxIn: dxn)
            linearBackward(block.up, slot(5), params, grad, scale: s, dy: dup, x: sv.xn2, xa: sv.xa[5], dxIn: dxn)
            block.ffnNorm.withUnsafeBufferPointer { rmsnormBackward(dx, dxn, sv.xMid, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps) }
            // Attention: xMid = xIn + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1))).
            datt.update(repeating: 0, count: n * qD)
            linearBackward(block.o, slot(3), params, grad, scale: s, dy: dx, x: sv.att, xa: sv.xa[3], dxIn: datt)
            dq.update(repeating: 0, count: n * qD)
            dk.update(repeating: 0, count: n * kvD)
            dv.update(repeating: 0, count: n * kvD)
            for b in 0..<batch {
                attentionBackward(
                    dq: dq + b * T * qD, dk: dk + b * T * kvD, dv: dv + b * T * kvD, scratch: attnScratch,
                    dout: datt + b * T * qD, probs: sv.probs + b * H * T * T, q: sv.q + b * T * qD,
                    k: sv.k + b * T * kvD, v: sv.v + b * T * kvD, tokens: T, heads: H, kvHeads: KV, headDim: D)
                ropeBackward(dq + b * T * qD, rows: T, stride: qD, heads: H, headDim: D, table: rope, layout: c.ropeLayout)
                ropeBackward(dk + b * T * kvD, rows: T, stride: kvD, heads: KV, headDim: D, table: rope, layout: c.ropeLayout)
            }
            dxn.update(repeating: 0, count: n * C)
            linearBackward(block.q, slot(0), params, grad, scale: s, dy: dq, x: sv.xn1, xa: sv.xa[0], dxIn: dxn)
            linearBackward(block.k, slot(1), params, grad, scale: s, dy: dk, x: sv.xn1, xa: sv.xa[1], dxIn: dxn)
            linearBackward(block.v, slot(2), params, grad, scale: s, dy: dv, x: sv.xn1, xa: sv.xa[2], dxIn: dxn)
            if l > 0 {  // the embedding is frozen: nothing needs the gradient below block 0
                block.attnNorm.withUnsafeBufferPointer { rmsnormBackward(dx, dxn, sv.xIn, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps) }
            }
        }
    }
}
