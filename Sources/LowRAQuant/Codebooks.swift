import Foundation

/// Initial codebooks (the paper's Listing 1) and the NormalFloat construction they come from.
public enum NormalFloat {
    /// NF4 levels, as pinned in the paper's Listing 1 (and QLoRA).
    public static let nf4: [Float] = [
        -1.0, -0.6961928, -0.5250731, -0.3949175, -0.28444138, -0.18477343, -0.09105, 0.0,
        0.0795803, 0.1609302, 0.2461123, 0.33791524, 0.44070983, 0.562617, 0.72295684, 1.0,
    ]
    /// 2-bit levels of Listing 1 (NormalFloat with 2 bits, rounded as the paper prints them).
    public static let nf2: [Float] = [-1.0, 0.0, 0.3379, 1.0]
    /// 1-bit levels of Listing 1: NormalFloat has no 1-bit form, so the paper uses ±1.
    public static let nf1: [Float] = [-1.0, 1.0]
    /// Listing 1's 2-bit thresholds (midpoints of `nf2`).
    public static let nf2Thresholds: [Float] = [-0.5, 0.16895762, 0.66895762]

    /// Pinned initial levels for a precision in {1, 2, 4}.
    public static func levels(bits: Int) -> [Float] {
        switch bits {
        case 1: nf1
        case 2: nf2
        case 4: nf4
        default: preconditionFailure("precision \(bits) is not 1, 2 or 4")
        }
    }

    /// NormalFloat levels for `bits` built from normal quantiles, as QLoRA builds NF4:
    /// 2^(b-1) positive quantiles of N(0,1) between `offset` and 1/2, 2^(b-1) - 1 negative ones,
    /// and an exact zero, scaled to [-1, 1].
    public static func generate(bits: Int, offset: Double = 0.9677083) -> [Float] {
        let half = 1 << (bits - 1)
        func linspace(_ a: Double, _ b: Double, _ n: Int) -> [Double] {
            n == 1 ? [a] : (0..<n).map { a + (b - a) * Double($0) / Double(n - 1) }
        }
        let pos = linspace(offset, 0.5, half + 1).dropLast().map(normalQuantile)
        let neg = linspace(offset, 0.5, half).dropLast().map { -normalQuantile($0) }
        let values = (pos + [0] + neg).sorted()
        let mx = values.map(abs).max()!
        return values.map { Float($0 / mx) }
    }

    /// Inverse CDF of the standard normal, by bisection on erfc (exact to double precision).
    static func normalQuantile(_ p: Double) -> Double {
        var lo = -40.0, hi = 40.0
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if 0.5 * erfc(-mid / 2.0.squareRoot()) < p { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }
}

/// Midpoints between consecutive sorted levels: the nearest-level decision thresholds.
public func midpointThresholds(_ levels: [Float]) -> [Float] {
    (0..<(levels.count - 1)).map { (levels[$0] + levels[$0 + 1]) / 2 }
}

/// Index of the bin of x given sorted thresholds: the number of thresholds below x. For the
/// precisions' threshold counts (1, 3, 15) a branch-free binary search; otherwise a scan.
@inline(__always)
public func binIndex(_ x: Float, _ thresholds: UnsafePointer<Float>, _ count: Int) -> Int {
    switch count {
    case 1:
        return x > thresholds[0] ? 1 : 0
    case 3:
        var k = x > thresholds[1] ? 2 : 0
        k += x > thresholds[k] ? 1 : 0
        return k
    case 15:
        var k = x > thresholds[7] ? 8 : 0
        k += x > thresholds[k + 3] ? 4 : 0
        k += x > thresholds[k + 1] ? 2 : 0
        k += x > thresholds[k] ? 1 : 0
        return k
    default:
        var k = 0
        while k < count && x > thresholds[k] { k += 1 }
        return k
    }
}
