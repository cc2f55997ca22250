import LowRATensor

/// The LoftQ initialization of one layer: a packed base Q and LoRA factors (A, B) with
/// W ≈ Q + scale · B A.
public struct LoftQResult: Sendable {
    public var packed: PackedLinear
    public var a: [Float]  // (r, in)
    public var b: [Float]  // (out, r)
    /// ‖W − Q − scale·BA‖_F after each step; entry 0 is plain quantization (B = 0).
    public var errors: [Double]
}

/// LoftQ (alternating quantize / truncated SVD; Li et al., 2023): for T steps, Q = quantize(W − s·BA)
/// with the layer's precisions and quantizer options (codebooks re-learned on the residual
/// target), then (B, A) = rank-r truncated SVD of W − dequant(Q), singular values split as √
/// between the factors. w: (out, in). `analysis`, when given, is W's own (`analyzeTensor` with these
/// options and column weights), whose codebooks step 0 uses instead of fitting them again.
public func loftqInitialize(
    _ w: [Float], out: Int, in inF: Int, bits: [UInt8], options: QuantizerOptions, rank r: Int,
    steps: Int = 5, scale s: Float = 1, columnWeights: [Float]? = nil, seed: UInt64 = 0,
    analysis: TensorAnalysis? = nil
) throws -> LoftQResult {
    let layerOptions = options.restricted(to: bits)
    return try alternatingLowRankInitialize(
        w, out: out, in: inF, rank: r, steps: steps, scale: s,
        quantize: { target, step in
            // Step 0 quantizes W itself: `analysis` (of W, with these options and column weights)
            // has its codebooks already.
            if step == 0, let analysis { return try analysis.pack(target, bits: bits) }
            let fitted = analyzeTensor(
                target, out: out, in: inF, options: layerOptions, columnWeights: columnWeights, rowBits: bits)
            return try fitted.pack(target, bits: bits)
        },
        lowRank: { residual, step in
            try plainLowRank(residual, out: out, in: inF, rank: r, seed: seed &+ UInt64(step))
        })
}

/// Whether LoftQ's and CLoQ's rank-r fits of an (out, in) layer use the randomized SVD: for
/// layers past 64 × 64 with a rank under a quarter of the smaller side; the exact SVD otherwise.
public func usesRandomizedSVD(out: Int, in n: Int, rank r: Int) -> Bool {
    n * out > 64 * 64 && r < min(out, n) / 4
}

/// B (out, r), A (r, in) from a rank-r SVD: √σ on each side.
func factors(_ svd: TruncatedSVD, out: Int, in inF: Int, rank r: Int) -> (a: [Float], b: [Float]) {
    var a = [Float](repeating: 0, count: r * inF)
    var b = [Float](repeating: 0, count: out * r)
    for i in 0..<out {
        for j in 0..<r { b[i * r + j] = svd.u[i * r + j] * svd.s[j].squareRoot() }
    }
    for i in 0..<r {
        for j in 0..<inF { a[i * inF + j] = svd.s[i].squareRoot() * svd.vt[i * inF + j] }
    }
    return (a, b)
}

/// The rank-r truncated SVD of `residual` (out, in) split as √σ between B (out, r) and A (r, in)
/// (randomized for large layers): LoftQ's factors, unweighted.
public func plainLowRank(
    _ residual: [Float], out: Int, in inF: Int, rank r: Int, seed: UInt64
) throws -> (a: [Float], b: [Float]) {
    let svd =
        usesRandomizedSVD(out: out, in: inF, rank: r)
        ? try truncatedSVDRandomized(residual, rows: out, cols: inF, rank: r, seed: seed)
        : try truncatedSVDExact(residual, rows: out, cols: inF, rank: r)
    return factors(svd, out: out, in: inF, rank: r)
}

/// LoftQ's alternation with its two halves given: for `steps` steps, Q = quantize(W − s·BA), then
/// B A = lowRank(W − Q, step) (the product B·A, before the LoRA scale s). Returns the last step's
/// Q and factors (B divided by s so that s·BA is the fitted product).
public func alternatingLowRankInitialize(
    _ w: [Float], out: Int, in inF: Int, rank r: Int, steps: Int, scale s: Float,
    quantize: ([Float], Int) throws -> PackedLinear, lowRank: ([Float], Int) throws -> (a: [Float], b: [Float])
) throws -> LoftQResult {
    guard r >= 1, r <= min(out, inF) else {
        throw LowRAError(.invalidArgument, "LoRA rank \(r) must be in 1...\(min(out, inF)) for a \(out)x\(inF) layer")
    }
    guard steps >= 1 else { throw LowRAError(.invalidArgument, "LoftQ needs at least one step, got \(steps)") }
    func frobenius(_ x: [Float]) -> Double { x.reduce(0.0) { $0 + Double($1) * Double($1) } }
    var a = [Float](repeating: 0, count: r * inF)
    var b = [Float](repeating: 0, count: out * r)
    var target = w
    var packed: PackedLinear!
    var errors = [Double]()
    // Buffers of the layer's size, reused across steps (each is a fresh mapping otherwise).
    var residual = [Float](repeating: 0, count: out * inF)
    var ba = [Float](repeating: 0, count: out * inF)
    for step in 0..<steps {
        packed = try quantize(target, step)
        residual.withUnsafeMutableBufferPointer { packed.dequantize(into: $0.baseAddress!) }
        for i in residual.indices { residual[i] = w[i] - residual[i] }  // W − Q
        if step == 0 { errors.append(frobenius(residual).squareRoot()) }
        (a, b) = try lowRank(residual, step)
        matmul(b, a, &ba, m: out, n: inF, k: r)
        for i in b.indices { b[i] /= s }
        for i in residual.indices { residual[i] -= ba[i] }  // W − Q − sBA
        errors.append(frobenius(residual).squareRoot())
        for i in target.indices { target[i] = w[i] - ba[i] }  // the next step quantizes W − sBA
    }
    return LoftQResult(packed: packed, a: a, b: b, errors: errors)
}
