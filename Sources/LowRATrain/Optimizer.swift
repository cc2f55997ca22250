import Foundation
import LowRAAdapters

/// AdamW (decoupled weight decay) over one flat parameter vector, with bias correction.
public struct AdamW: Sendable, Equatable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public var weightDecay: Float
    /// First and second moments; `step` updates taken so far.
    public var m: [Float]
    public var v: [Float]
    public var step = 0

    public init(count: Int, weightDecay: Float = 0) {
        self.weightDecay = weightDecay
        m = [Float](repeating: 0, count: count)
        v = [Float](repeating: 0, count: count)
    }

    public mutating func update(_ params: inout [Float], gradient g: [Float], lr: Float) {
        precondition(params.count == g.count && g.count == m.count)
        step += 1
        let c1 = 1 - Float(pow(Double(beta1), Double(step)))
        let c2 = 1 - Float(pow(Double(beta2), Double(step)))
        let (b1, b2, eps, decay) = (beta1, beta2, epsilon, 1 - lr * weightDecay)
        params.withUnsafeMutableBufferPointer { p in
            m.withUnsafeMutableBufferPointer { m in
                v.withUnsafeMutableBufferPointer { v in
                    for i in 0..<p.count {
                        m[i] = b1 * m[i] + (1 - b1) * g[i]
                        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                        let update = (m[i] / c1) / ((v[i] / c2).squareRoot() + eps)
                        p[i] = p[i] * decay - lr * update
                    }
                }
            }
        }
    }
}

/// Learning rate per step: linear warmup from 0, then cosine decay to 0 or constant.
public struct LRSchedule: Sendable, Equatable {
    public var kind: LRScheduleKind
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(kind: LRScheduleKind, peak: Float, warmupSteps: Int, totalSteps: Int) {
        self.kind = kind
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    /// The rate for update `step` (0-based).
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step + 1) / Float(warmupSteps) }
        switch kind {
        case .constant: return peak
        case .cosine:
            let span = max(1, totalSteps - warmupSteps)
            let progress = min(1, Double(step - warmupSteps) / Double(span))
            return peak * Float(0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}

/// Scales g in place so that its L2 norm is at most maxNorm (no-op when maxNorm <= 0); returns
/// the norm before clipping. The sum runs in a fixed order, so the result is reproducible.
@discardableResult
public func clipGradientNorm(_ g: inout [Float], maxNorm: Float) -> Double {
    var ss = 0.0
    for x in g { ss += Double(x) * Double(x) }
    let norm = ss.squareRoot()
    if maxNorm > 0, norm > Double(maxNorm) {
        let k = Float(Double(maxNorm) / (norm + 1e-6))
        for i in g.indices { g[i] *= k }
    }
    return norm
}
