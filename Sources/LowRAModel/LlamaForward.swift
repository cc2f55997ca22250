import Foundation
import LowRATensor

/// Keys and values of every layer for positions [0, length), with room for `capacity`.
public final class KVCache: @unchecked Sendable {
    public let capacity: Int
    public private(set) var length = 0
    var keys: [[Float]]  // L x (capacity, KV*D)
    var values: [[Float]]  // L x (capacity, KV*D)

    public init(config: LlamaConfig, capacity: Int) {
        self.capacity = capacity
        keys = Array(repeating: [Float](repeating: 0, count: capacity * config.kvDim), count: config.numLayers)
        values = keys
    }

    public func reset() { length = 0 }
    func advance(_ n: Int) { length += n }
}

/// Which rows of logits a forward pass computes.
public enum LogitRows: Sendable {
    case all, last
}

/// A Llama-family model ready to run: configuration and fp32 weights.
public final class LlamaModel: @unchecked Sendable {
    public let config: LlamaConfig
    public let weights: LlamaWeights

    public init(config: LlamaConfig, weights: LlamaWeights) throws {
        try config.validate()
        self.config = config
        self.weights = weights
    }

    /// Runs `tokens` at positions [cache.length, cache.length + T), appends their keys and values
    /// to the cache, and returns logits (rows, V) for all T positions or only the last.
    /// Where a linear layer's input is observed: the input of q/k/v, of o, of gate/up, of down.
    public enum LinearInput: String, Sendable, CaseIterable { case attention, output, mlp, down }

    /// `observe(layer, site, x (T, cols), T, cols)` sees every linear layer's input (calibration).
    public func forward(
        _ tokens: [Int], cache: KVCache, logits rows: LogitRows = .all,
        observe: ((Int, LinearInput, UnsafePointer<Float>, Int, Int) -> Void)? = nil
    ) throws -> [Float] {
        let c = config
        let t = tokens.count
        let pos0 = cache.length
        guard t > 0 else { throw LowRAError(.invalidArgument, "forward: no tokens") }
        guard pos0 + t <= cache.capacity else {
            throw LowRAError(.invalidArgument, "\(pos0 + t) tokens do not fit the context of \(cache.capacity)")
        }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= c.vocabSize }) {
            throw LowRAError(.invalidArgument, "token id \(bad) is outside the vocabulary (\(c.vocabSize))")
        }
        let C = c.hiddenSize, F = c.intermediateSize, H = c.numHeads, KV = c.numKVHeads, D = c.headDim
        let qDim = c.qDim, kvDim = c.kvDim
        let tk = pos0 + t  // keys visible to the last query
        let group = H / KV
        let scale = 1 / Float(D).squareRoot()

        var x = [Float](repeating: 0, count: t * C)  // (T, C) residual stream
        var xn = [Float](repeating: 0, count: t * C)  // (T, C) normalized
        var q = [Float](repeating: 0, count: t * qDim)  // (T, H*D)
        var kNew = [Float](repeating: 0, count: t * kvDim)  // (T, KV*D)
        var vNew = [Float](repeating: 0, count: t * kvDim)  // (T, KV*D)
        var att = [Float](repeating: 0, count: t * qDim)  // (T, H*D) attention output
        var scores = [Float](repeating: 0, count: t * tk)  // (T, Tk) one head at a time
        var proj = [Float](repeating: 0, count: t * C)  // (T, C)
        var gate = [Float](repeating: 0, count: t * F)  // (T, F)
        var up = [Float](repeating: 0, count: t * F)  // (T, F)
        let rope = RopeTable(start: pos0, count: t, headDim: D, base: c.ropeTheta)

        weights.embedding.withUnsafeBufferPointer { emb in
            for (r, tok) in tokens.enumerated() {
                for i in 0..<C { x[r * C + i] = emb[tok * C + i] }
            }
        }

        for (l, block) in weights.blocks.enumerated() {
            // Attention.
            rmsnormForward(&xn, x, block.attnNorm, rows: t, cols: C, eps: c.rmsNormEps)
            observe?(l, .attention, xn, t, C)
            block.q.forward(xn, rows: t, into: &q)
            block.k.forward(xn, rows: t, into: &kNew)
            block.v.forward(xn, rows: t, into: &vNew)
            ropeForward(&q, rows: t, stride: qDim, heads: H, headDim: D, table: rope, layout: c.ropeLayout)
            ropeForward(&kNew, rows: t, stride: kvDim, heads: KV, headDim: D, table: rope, layout: c.ropeLayout)
            cache.keys[l].withUnsafeMutableBufferPointer { kc in
                cache.values[l].withUnsafeMutableBufferPointer { vc in
                    for i in 0..<(t * kvDim) {
                        kc[pos0 * kvDim + i] = kNew[i]
                        vc[pos0 * kvDim + i] = vNew[i]
                    }
                    let kBase = UnsafePointer(kc.baseAddress!)
                    let vBase = UnsafePointer(vc.baseAddress!)
                    for h in 0..<H {
                        let kvh = h / group
                        // scores (T, Tk) = q_h (T, D) · K_kvh (Tk, D)^T * scale
                        matmulTransB(q.withUnsafeBufferPointer { $0.baseAddress! + h * D }, kBase + kvh * D, &scores,
                                     m: t, n: tk, k: D, alpha: scale, ldx: qDim, ldw: kvDim, ldy: tk)
                        softmaxRowsForward(&scores, rows: t, cols: tk, stride: tk) { pos0 + $0 + 1 }
                        // att_h (T, D) = scores (T, Tk) · V_kvh (Tk, D)
                        att.withUnsafeMutableBufferPointer { a in
                            matmul(scores, vBase + kvh * D, a.baseAddress! + h * D, m: t, n: D, k: tk,
                                   lda: tk, ldb: kvDim, ldy: qDim)
                        }
                    }
                }
            }
            observe?(l, .output, att, t, qDim)
            block.o.forward(att, rows: t, into: &proj)
            addInPlace(&x, proj, count: t * C)

            // SwiGLU MLP.
            rmsnormForward(&xn, x, block.ffnNorm, rows: t, cols: C, eps: c.rmsNormEps)
            observe?(l, .mlp, xn, t, C)
            block.gate.forward(xn, rows: t, into: &gate)
            block.up.forward(xn, rows: t, into: &up)
            swigluForward(&gate, gate, up, count: t * F)
            observe?(l, .down, gate, t, F)
            block.down.forward(gate, rows: t, into: &proj)
            addInPlace(&x, proj, count: t * C)
        }
        cache.advance(t)

        let first = rows == .all ? 0 : t - 1
        let n = t - first
        var normed = [Float](repeating: 0, count: n * C)
        x.withUnsafeBufferPointer { xb in
            rmsnormForward(&normed, xb.baseAddress! + first * C, weights.finalNorm, rows: n, cols: C, eps: c.rmsNormEps)
        }
        var logits = [Float](repeating: 0, count: n * c.vocabSize)
        if let head = weights.head {
            head.forward(normed, rows: n, into: &logits)
        } else {
            Linear(outFeatures: c.vocabSize, inFeatures: C, weight: weights.embedding)
                .forward(normed, rows: n, into: &logits)
        }
        return logits
    }
}
