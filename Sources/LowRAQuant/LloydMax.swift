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
    // Four sets of per-bin sums, point j into set j % 4, merged after the pass: consecutive points
    // of one bin no longer wait on each other's stores, nor the error's sums on their own adds.
    let lanes = 4
    let sumW = UnsafeMutablePointer<Double>.allocate(capacity: lanes * k)
    let sumWX = UnsafeMutablePointer<Double>.allocate(capacity: lanes * k)
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
        sumW.initialize(repeating: 0, count: lanes * k)
        sumWX.initialize(repeating: 0, count: lanes * k)
        for i in 0..<k { lv[i] = levels[i] }
        for i in 0..<(k - 1) { th[i] = thresholds[i] }
        var err = (0.0, 0.0, 0.0, 0.0), total = (0.0, 0.0, 0.0, 0.0)
        @inline(__always) func point(_ j: Int, _ lane: Int, _ e: inout Double, _ t: inout Double) {
            let x = points[j], w = Double(weights[j])
            let b = binIndex(x, th, k - 1)
            let d = Double(x - lv[b])
            e += w * d * d
            t += w
            sumW[lane * k + b] += w
            sumWX[lane * k + b] += w * Double(x)
        }
        var j = 0
        while j + 4 <= n {
            point(j, 0, &err.0, &total.0)
            point(j + 1, 1, &err.1, &total.1)
            point(j + 2, 2, &err.2, &total.2)
            point(j + 3, 3, &err.3, &total.3)
            j += 4
        }
        while j < n {
            point(j, 0, &err.0, &total.0)
            j += 1
        }
        for lane in 1..<lanes {
            for i in 0..<k {
                sumW[i] += sumW[lane * k + i]
                sumWX[i] += sumWX[lane * k + i]
            }
        }
        let e = (err.0 + err.1) + (err.2 + err.3), t = (total.0 + total.1) + (total.2 + total.3)
        return t > 0 ? e / t : 0
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
