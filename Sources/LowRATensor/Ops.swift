import CLowRAPacked
import Foundation

// Plain forward kernels over flat row-major buffers. Shapes are given explicitly; each
// function's comment states the layout. These are the reference versions.

/// out (T, C) = x (T, C) / rms(x row) * weight (C).
public func rmsnormForward(
    _ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
    rows t: Int, cols c: Int, eps: Float
) {
    parallelFor(t, minPerChunk: 16) { range in
        for r in range {
            let xr = x + r * c
            let yr = out + r * c
            var ss: Float = 0
            for i in 0..<c { ss += xr[i] * xr[i] }
            let inv = 1 / (ss / Float(c) + eps).squareRoot()
            for i in 0..<c { yr[i] = xr[i] * inv * weight[i] }
        }
    }
}

/// How the two halves of each rotated pair are laid out inside a head.
public enum RopeLayout: String, Codable, Sendable {
    /// Pairs (2i, 2i+1): GGUF / llama.cpp, whose converter permutes Q and K rows.
    case interleaved
    /// Pairs (i, i + D/2): Hugging Face checkpoints.
    case halfSplit = "half_split"

    /// Row `r` of a q/k projection in interleaved (GGUF) order comes from this row in half-split (HF) order.
    public static func halfSplitRow(_ r: Int, headDim d: Int) -> Int {
        let head = r / d
        let j = r % d
        return head * d + (j % 2) * (d / 2) + j / 2
    }

    /// Row `r` of a q/k projection in half-split order comes from this row in interleaved order.
    public static func interleavedRow(_ r: Int, headDim d: Int) -> Int {
        let head = r / d
        let j = r % d
        return head * d + (j < d / 2 ? 2 * j : 2 * (j - d / 2) + 1)
    }

    /// For each of `count` q/k rows in `target`'s layout, the row in this layout it comes from.
    public func sourceRows(count: Int, headDim d: Int, to target: RopeLayout) -> [Int] {
        guard target != self else { return Array(0..<count) }
        let source = target == .interleaved ? Self.halfSplitRow : Self.interleavedRow
        return (0..<count).map { source($0, d) }
    }

    /// Rows of `rowLength` values (a q/k projection's rows, or its LoRA B's) moved from this layout to `target`.
    public func reorderRows(_ m: ArraySlice<Float>, rowLength: Int, headDim d: Int, to target: RopeLayout) -> [Float] {
        guard target != self else { return Array(m) }
        var out = [Float](repeating: 0, count: m.count)
        let base = m.startIndex
        for (r, src) in sourceRows(count: m.count / rowLength, headDim: d, to: target).enumerated() {
            for j in 0..<rowLength { out[r * rowLength + j] = m[base + src * rowLength + j] }
        }
        return out
    }
}

/// cos/sin tables for positions [start, start + count), each (count, D/2).
public struct RopeTable: Sendable {
    public let start: Int
    public let count: Int
    public let halfDim: Int
    public var cos: [Float]
    public var sin: [Float]

    /// Positions [start, start + count) at inverse frequencies `frequencies` (radians per
    /// position, one per rotated pair, D/2 of them).
    public init(start: Int, count: Int, frequencies: [Double]) {
        self.start = start
        self.count = count
        halfDim = frequencies.count
        cos = [Float](repeating: 0, count: count * halfDim)
        sin = [Float](repeating: 0, count: count * halfDim)
        for p in 0..<count {
            for (i, freq) in frequencies.enumerated() {
                let angle = Double(start + p) * freq
                cos[p * halfDim + i] = Float(Foundation.cos(angle))
                sin[p * halfDim + i] = Float(Foundation.sin(angle))
            }
        }
    }

    /// Unscaled RoPE: frequency θ^(−2i/D) for pair i.
    public init(start: Int, count: Int, headDim: Int, base: Double) {
        self.init(
            start: start, count: count,
            frequencies: (0..<(headDim / 2)).map { Foundation.pow(base, -Double(2 * $0) / Double(headDim)) })
    }
}

/// Rotates, in place, `heads` heads of size D in each of T rows of x (T, stride);
/// row t has position table.start + t.
public func ropeForward(
    _ x: UnsafeMutablePointer<Float>, rows t: Int, stride: Int, heads: Int, headDim d: Int,
    table: RopeTable, layout: RopeLayout
) {
    ropeRotate(x, rows: t, stride: stride, heads: heads, headDim: d, table: table, layout: layout, inverse: false)
}

/// Rotation by +θ (forward) or −θ (`inverse`: the transpose, which backward applies to gradients).
func ropeRotate(
    _ x: UnsafeMutablePointer<Float>, rows t: Int, stride: Int, heads: Int, headDim d: Int,
    table: RopeTable, layout: RopeLayout, inverse: Bool
) {
    let half = d / 2
    let sign: Float = inverse ? -1 : 1
    table.cos.withUnsafeBufferPointer { cosb in
        table.sin.withUnsafeBufferPointer { sinb in
            for r in 0..<t {
                let c = cosb.baseAddress! + r * half
                let s = sinb.baseAddress! + r * half
                for h in 0..<heads {
                    let v = x + r * stride + h * d
                    for i in 0..<half {
                        let (a, b) = layout == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                        let x0 = v[a], x1 = v[b], si = sign * s[i]
                        v[a] = x0 * c[i] - x1 * si
                        v[b] = x0 * si + x1 * c[i]
                    }
                }
            }
        }
    }
}

/// In place softmax over each of `rows` rows of length n (row stride `stride`), using only
/// the first `valid(r)` entries of row r (`lowra_softmax`); the rest are set to 0 (the causal mask).
public func softmaxRowsForward(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols n: Int, stride: Int,
    valid: (Int) -> Int, path: Int = KernelPath.current
) {
    parallelFor(rows, minPerChunk: 8) { range in
        for r in range {
            let row = x + r * stride
            let m = min(n, valid(r))
            lowra_softmax(Int32(path), row, UInt64(m))
            for i in m..<n { row[i] = 0 }
        }
    }
}

/// out (N) = silu(gate) * up, elementwise: the SwiGLU activation (`lowra_swiglu`; its vector
/// paths' exp is within 1e-6 relative of expf's).
public func swigluForward(
    _ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
    count n: Int, path: Int = KernelPath.current
) {
    parallelFor(n, minPerChunk: 16384) { range in
        lowra_swiglu(
            Int32(path), gate + range.lowerBound, up + range.lowerBound, out + range.lowerBound, UInt64(range.count))
    }
}

/// x (N) += y (N).
public func addInPlace(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) {
    for i in 0..<n { x[i] += y[i] }
}

/// log(sum(exp(x))) over a row of n values, as training's losses take it (cross-entropy, distillation):
/// the exponentials by `lowra_sum_exp` on `path`, summed in double.
public func logSumExp(_ x: UnsafePointer<Float>, count n: Int, path: Int = KernelPath.current) -> Double {
    var mx = -Float.infinity
    for i in 0..<n where x[i] > mx { mx = x[i] }
    return Double(mx) + Foundation.log(lowra_sum_exp(Int32(path), x, UInt64(n), mx))
}

/// log(sum(exp(x))) and argmax over a row of n values (evaluation: `expf` in Swift, summed in double).
public func logSumExpAndArgmax(_ x: UnsafePointer<Float>, count n: Int) -> (lse: Double, argmax: Int) {
    var mx = -Float.infinity
    var arg = 0
    for i in 0..<n where x[i] > mx {
        mx = x[i]
        arg = i
    }
    var sum: Double = 0
    for i in 0..<n { sum += Double(expf(x[i] - mx)) }
    return (Double(mx) + Foundation.log(sum), arg)
}
