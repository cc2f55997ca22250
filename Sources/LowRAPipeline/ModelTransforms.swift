import Foundation
import LowRAModel
import LowRATensor

/// Incoherence by rotation, folded into the weights before quantization (the idea of QuIP and
/// QuaRot): the model is rewritten into an exactly equivalent one whose weights have no outlier
/// columns. Not a default: LowRA's 64-element absmax blocks and per-row codebooks already adapt to
/// the weights' structure, and on SmolLM2 the rotated model quantizes worse (docs/results/below-2-bits.md).
///
/// - The residual stream is rotated by a random orthogonal Q (C × C): every block's RMSNorm
///   weight is folded into the layers that read it (RMSNorm commutes with Q once it has no weight
///   of its own), so q, k, v, gate and up read Q·x (W ← W diag(γ) Qᵀ), o and down write into the
///   rotated stream (W ← Q W, bias ← Q b), the embedding's rows are rotated (E ← E Qᵀ) and the
///   head reads the rotated final state (E_head diag(γ_final) Qᵀ, untied from the embedding).
/// - Each value head's output is rotated by one random orthogonal R (D × D), undone by o's
///   input: attention mixes positions, not the elements of a head, so it commutes with R.
/// - down's input (after the SwiGLU product) is not rotated: no rotation commutes with it.
///
/// Every logit is the source model's up to rounding; adapters trained over the rotated model
/// act in its basis.
public struct ResidualRotation: Sendable {
    public let seed: UInt64
    /// The residual stream's rotation is block-diagonal with blocks of this size (nil: one block).
    public let block: Int?

    public init(seed: UInt64, block: Int? = nil) {
        self.seed = seed
        self.block = block
    }

    /// As the quantize report names it (`QuantizeRequest.transform`).
    public var description: String { "rotated (seed \(seed)" + (block.map { ", blocks of \($0)" } ?? "") + ")" }

    /// The rotated model: all weights dense fp32 (the source's are read once and released).
    public func apply(to weights: ModelWeights, config: ModelConfig) throws -> (ModelWeights, ModelConfig) {
        let c = config.hiddenSize
        let d = config.headDim
        let qb = block ?? c
        guard c % qb == 0 else {
            throw LowRAError(.invalidArgument, "rotation blocks of \(qb) do not divide the hidden size \(c)")
        }
        let q = try randomOrthogonal(qb, seed: seed)
        let r = try randomOrthogonal(d, seed: seed &+ 1)
        let ones = [Float](repeating: 1, count: c)
        var out = weights
        out.embedding = rotateInputs(weights.embedding, norm: nil, blockDiagonal: q, block: qb)
        out.head = rotateInputs(weights.outputHead, norm: weights.finalNorm, blockDiagonal: q, block: qb)
        out.finalNorm = ones
        weights.embedding.releaseStored()
        for l in weights.blocks.indices {
            let src = weights.blocks[l]
            var blk = src
            for kind in LinearKind.allCases where kind.input == .attention || kind.input == .mlp {
                let norm = kind.input == .attention ? src.attnNorm : src.ffnNorm
                blk[kind] = rotateInputs(src[kind], norm: norm, blockDiagonal: q, block: qb)
            }
            blk[.v] = rotateOutputs(blk[.v], blockDiagonal: r, block: d)
            let o = rotateInputs(src[.o], norm: nil, blockDiagonal: r, block: d)
            blk[.o] = rotateOutputs(o, blockDiagonal: q, block: qb)
            blk[.down] = rotateOutputs(src[.down], blockDiagonal: q, block: qb)
            blk.attnNorm = ones
            blk.ffnNorm = ones
            src.releaseStored()
            out.blocks[l] = blk
        }
        var cfg = config
        cfg.tieWordEmbeddings = false
        return (out, cfg)
    }

    /// W diag(γ) Rᵀ with R block-diagonal (blocks of `block` × `block`).
    private func rotateInputs(_ lin: Linear, norm: [Float]?, blockDiagonal r: [Float], block: Int) -> Linear {
        let w = norm.map { scaleColumns(lin, $0).weight } ?? lin.weight
        let y = timesTransposed(w, r, block: block)
        return Linear(outFeatures: lin.outFeatures, inFeatures: lin.inFeatures, weight: y, bias: lin.bias)
    }

    /// R W (and R b) with R block-diagonal over the output rows.
    private func rotateOutputs(_ lin: Linear, blockDiagonal r: [Float], block: Int) -> Linear {
        let (n, k) = (lin.outFeatures, lin.inFeatures)
        let w = lin.weight
        var y = [Float](repeating: 0, count: n * k)
        w.withUnsafeBufferPointer { wp in
            y.withUnsafeMutableBufferPointer { yp in
                for b in stride(from: 0, to: n, by: block) {
                    matmul(r, wp.baseAddress! + b * k, yp.baseAddress! + b * k, m: block, n: k, k: block)
                }
            }
        }
        // Each block of b is a row of (n / block, block): R b_block = (b_block Rᵀ).
        let bias = lin.bias.map { timesTransposed($0, r, block: block) }
        return Linear(outFeatures: n, inFeatures: k, weight: y, bias: bias)
    }

    /// a · blockdiag(R)ᵀ for a whose length is a multiple of `block`: every `block` consecutive
    /// values (a row's columns of one block) times Rᵀ, as one product of (count / block, block).
    private func timesTransposed(_ a: [Float], _ r: [Float], block: Int) -> [Float] {
        var y = [Float](repeating: 0, count: a.count)
        matmulTransB(a, r, &y, m: a.count / block, n: block, k: block)
        return y
    }
}

/// A random orthogonal n × n matrix (row-major), Haar-distributed: the Q of a Gaussian matrix's
/// QR factorization with the signs of R's diagonal folded in.
public func randomOrthogonal(_ n: Int, seed: UInt64) throws -> [Float] {
    var rng = SplitMix64(seed: seed)
    var a = [Float](repeating: 0, count: n * n)
    for i in 0..<(n * n) {
        // Box–Muller.
        let u1 = max(rng.nextUnit(), 1e-300)
        let u2 = rng.nextUnit()
        a[i] = Float((-2 * Foundation.log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
    return try orthonormalColumns(a, rows: n, cols: n)
}

/// Per-input-channel scales folded into the weights (AWQ's idea): each linear input's channel j
/// is divided by s_j and the columns that read it multiplied by s_j, with s_j = E[x_j²]^(α/2)
/// (normalized to a geometric mean of 1). The division is folded into what produces the
/// input — the RMSNorm weight before q/k/v and gate/up, v's rows before o (one scale per value
/// head's element, shared by the query heads that read it), up's rows before down — so the
/// model stays the same function. Not a default: error feedback through H already accounts for
/// the activations' scales, and no α beat 0 on SmolLM2 (docs/results/below-2-bits.md).
public struct ChannelScaling: Sendable {
    /// Per site, α (0: no scaling).
    public var alpha: [LinearInput: Float]

    public init(alpha: [LinearInput: Float]) { self.alpha = alpha }

    /// As the quantize report names it (`QuantizeRequest.transform`): the α of each site.
    public var description: String {
        let values = Set(alpha.values)
        if values.count == 1, alpha.count == LinearInput.allCases.count { return "channel scaling α=\(values.first!)" }
        let sites = LinearInput.allCases.compactMap { site in alpha[site].map { "\(site.rawValue) \($0)" } }
        return "channel scaling α: " + sites.joined(separator: ", ")
    }

    /// `secondMoments[l][site]`: E[x_j²] of block l's inputs in the source model.
    public func apply(
        to weights: ModelWeights, config c: ModelConfig, secondMoments: [[LinearInput: [Float]]]
    ) -> ModelWeights {
        var out = weights
        for l in weights.blocks.indices {
            var blk = weights.blocks[l]
            func scales(_ site: LinearInput, _ d: [Float]) -> [Float]? {
                guard let a = alpha[site], a != 0 else { return nil }
                let raw = d.map { Foundation.pow(Double(max($0, 1e-12)), Double(a) / 2) }
                let g = Foundation.exp(raw.reduce(0) { $0 + Foundation.log($1) } / Double(raw.count))
                return raw.map { Float($0 / g) }
            }
            let m = secondMoments[l]
            if let s = scales(.attention, m[.attention]!) {
                for kind in [LinearKind.q, .k, .v] { blk[kind] = scaleColumns(blk[kind], s) }
                blk.attnNorm = zip(blk.attnNorm, s).map { $0 / $1 }
            }
            if let s = scales(.mlp, m[.mlp]!) {
                for kind in [LinearKind.gate, .up] { blk[kind] = scaleColumns(blk[kind], s) }
                blk.ffnNorm = zip(blk.ffnNorm, s).map { $0 / $1 }
            }
            if let s = scales(.down, m[.down]!) {
                blk[.down] = scaleColumns(blk[.down], s)
                blk[.up] = scaleRows(blk[.up], s.map { 1 / $0 })
            }
            // o's input: a value head's element, averaged over the query heads that read it.
            let d = c.headDim
            let group = c.numHeads / c.numKVHeads
            let o = m[.output]!
            var kv = [Float](repeating: 0, count: c.numKVHeads * d)
            for h in 0..<c.numHeads {
                for e in 0..<d { kv[(h / group) * d + e] += o[h * d + e] / Float(group) }
            }
            if let s = scales(.output, kv) {
                let full = (0..<c.numHeads).flatMap { h in s[((h / group) * d)..<((h / group) * d + d)] }
                blk[.o] = scaleColumns(blk[.o], full)
                blk[.v] = scaleRows(blk[.v], s.map { 1 / $0 })
            }
            weights.blocks[l].releaseStored()
            out.blocks[l] = blk
        }
        return out
    }

}

/// W diag(s): column j of the weight times s_j.
private func scaleColumns(_ lin: Linear, _ s: [Float]) -> Linear {
    var w = lin.weight
    let k = lin.inFeatures
    for i in 0..<lin.outFeatures { for j in 0..<k { w[i * k + j] *= s[j] } }
    return Linear(outFeatures: lin.outFeatures, inFeatures: k, weight: w, bias: lin.bias)
}

/// diag(s) W (and its bias): row i times s_i.
private func scaleRows(_ lin: Linear, _ s: [Float]) -> Linear {
    var w = lin.weight
    let k = lin.inFeatures
    for i in 0..<lin.outFeatures { for j in 0..<k { w[i * k + j] *= s[i] } }
    return Linear(outFeatures: lin.outFeatures, inFeatures: k, weight: w, bias: lin.bias.map { zip($0, s).map(*) })
}

extension ModelWeights {
    /// E[x_j²] of every block's four linear inputs over the calibration windows, in the model as it is.
    public func inputSecondMoments(_ request: CalibrationRequest) throws -> [[LinearInput: [Float]]] {
        let stream = BlockCalibrator(request, weights: self)
        return try blocks.map { blk in try stream.run(blk, statistics: true, advance: true).mapValues(\.diagonal) }
    }
}
