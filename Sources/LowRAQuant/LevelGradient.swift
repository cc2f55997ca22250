import Foundation
import LowRATensor

// Codebook tuning (the quantizer's levels trained through the loss, a repair of the base itself):
// the gradient of a loss with respect to each row's levels, and the same packed weight with
// other levels. A packed weight is W_rj = a_r,b(j) · level_r[code_rj] (block scale times the
// row's level for the code), so ∂L/∂level_r[k] = Σ_{j : code_rj = k} a_r,b(j) · ∂L/∂W_rj.

extension PackedLinear {
    /// The same codes and block scales with `newLevels` (the layout of `levels`).
    public func withLevels(_ newLevels: [Float]) throws -> PackedLinear {
        guard newLevels.count == levels.count else {
            throw LowRAError(.shapeMismatch, "\(newLevels.count) levels for a weight with \(levels.count)")
        }
        return try PackedLinear(
            outFeatures: outFeatures, inFeatures: inFeatures, bits: bits, codes: codes, absmax: absmax,
            levels: newLevels, scope: scope)
    }

    /// Adds ∂L/∂levels into `grad` (the layout of `levels`) given ∂L/∂W, (out, in) row-major.
    /// Channel scope only (each row its own codebook, so rows are summed in parallel).
    public func accumulateLevelGradient(_ dW: UnsafePointer<Float>, into grad: UnsafeMutablePointer<Float>) {
        precondition(scope == .channel, "level gradients need per-row codebooks")
        let (out, inF) = (outFeatures, inFeatures)
        let nb = (inF + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        let io = UncheckedSendable((dW, grad))
        codes.withUnsafeBufferPointer { cb in
            let codesBase = UncheckedSendable(cb.baseAddress!)
            parallelFor(out, minPerChunk: 16) { rows in
                let (dW, grad) = io.value
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { part in
                    withUnsafeTemporaryAllocation(of: Double.self, capacity: 16) { total in
                        for r in rows {
                            let b = Int(bits[r])
                            let (k1, mask) = (1 << b, (1 << b) - 1)
                            let row = codesBase.value + rowOffsets[r]
                            let g = dW + r * inF
                            total.initialize(repeating: 0)
                            for blk in 0..<nb {
                                part.initialize(repeating: 0)
                                let j0 = blk * AbsmaxStorage.block
                                for j in j0..<min(inF, j0 + AbsmaxStorage.block) {
                                    let bit = j * b
                                    part[Int(row[bit >> 3] >> UInt8(bit & 7)) & mask] += g[j]
                                }
                                let s = Double(absmax.value(r * nb + blk))
                                for k in 0..<k1 { total[k] += s * Double(part[k]) }
                            }
                            for k in 0..<k1 { grad[levelOffsets[r] + k] += Float(total[k]) }
                        }
                    }
                }
            }
        }
    }
}
