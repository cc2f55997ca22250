/// How each point counts in the learner: the paper weighs a point by its block's absmax;
/// absmax² is what the squared error in the original scale weighs.
public enum LloydWeighting: String, Codable, Sendable, CaseIterable {
    case absmax, absmaxSquared = "absmax2"
}

/// Result of the weighted Lloyd-Max learner on one set of points.
public struct LloydMaxResult: Sendable {
    public var levels: [Float]
    public var thresholds: [Float]
    /// Weighted MSE before any update (the initial codebook), then after each iteration kept.
    public var history: [Double]
}

/// Weighted Lloyd-Max (the paper's Appendix G) on scalar points: assign each point to a bin by the
/// thresholds, move each level to the weighted centroid of its bin (an empty bin keeps its
/// level), put thresholds at the midpoints. Stops after `iterations` or as soon as the weighted
/// MSE stops falling, and returns the best codebook seen.
///
/// points (n), weights (n) > 0.
public func weightedLloydMax(
    points: UnsafePointer<Float>, weights: UnsafePointer<Float>, count n: Int,
    initialLevels: [Float], initialThresholds: [Float]? = nil, iterations: Int
) -> LloydMaxResult {
    let k = initialLevels.count
    var levels = initialLevels
    var thresholds = initialThresholds ?? midpointThresholds(levels)
    let sumW = UnsafeMutablePointer<Double>.allocate(capacity: k)
    let sumWX = UnsafeMutablePointer<Double>.allocate(capacity: k)
    let lv = UnsafeMutablePointer<Float>.allocate(capacity: k)
    let th = UnsafeMutablePointer<Float>.allocate(capacity: max(1, k - 1))
    defer {
        sumW.deallocate()
        sumWX.deallocate()
        lv.deallocate()
        th.deallocate()
    }

    // Weighted MSE of (levels, thresholds), filling the per-bin sums for the next update.
    func evaluate() -> Double {
        for i in 0..<k {
            sumW[i] = 0
            sumWX[i] = 0
            lv[i] = levels[i]
        }
        for i in 0..<(k - 1) { th[i] = thresholds[i] }
        var err = 0.0, total = 0.0
        for j in 0..<n {
            let x = points[j], w = Double(weights[j])
            let b = binIndex(x, th, k - 1)
            let d = Double(x - lv[b])
            err += w * d * d
            total += w
            sumW[b] += w
            sumWX[b] += w * Double(x)
        }
        return total > 0 ? err / total : 0
    }

    var history = [evaluate()]
    for _ in 0..<iterations {
        var next = levels
        for i in 0..<k where sumW[i] > 0 { next[i] = Float(sumWX[i] / sumW[i]) }
        next.sort()
        let saved = (levels, thresholds)
        levels = next
        thresholds = midpointThresholds(levels)
        let mse = evaluate()
        if mse >= history.last! {
            (levels, thresholds) = saved
            break
        }
        history.append(mse)
    }
    return LloydMaxResult(levels: levels, thresholds: thresholds, history: history)
}
