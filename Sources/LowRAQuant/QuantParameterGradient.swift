import Foundation
import LowRATensor

// Tuning the quantized base itself (its levels and block scales trained through the loss, codes
// held): the gradient of a loss with respect to each row's levels and each block's scale, and the
// same packed weight with other levels or scales. A packed weight is W_rj = a_r,b(j) ·
// level_r[code_rj] (block scale times the row's level for the code), so
//   ∂L/∂level_r[k] = Σ_{j : code_rj = k} a_r,b(j) · ∂L/∂W_rj,
//   ∂L/∂a_r,b      = Σ_{j in block b} level_r[code_rj] · ∂L/∂W_rj.

extension PackedLinear {
    /// The same codes and block scales with `newLevels` (the layout of `levels`).
    public func withLevels(_ newLevels: [Float]) throws -> PackedLinear {
        try with(levels: newLevels, absmax: absmax)
    }

    /// The same codes with other levels (the layout of `levels`) and block scales (as many blocks).
    public func with(levels newLevels: [Float], absmax newAbsmax: AbsmaxStorage) throws -> PackedLinear {
        guard newLevels.count == levels.count else {
            throw LowRAError(.shapeMismatch, "\(newLevels.count) levels for a weight with \(levels.count)")
        }
        guard newAbsmax.count == blockCount else {
            throw LowRAError(.shapeMismatch, "\(newAbsmax.count) block scales for a weight with \(blockCount)")
        }
        return try PackedLinear(
            outFeatures: outFeatures, inFeatures: inFeatures, bits: bits, codes: codes, absmax: newAbsmax,
            levels: newLevels, scope: scope)
    }

    /// Blocks of 64 inputs over all rows (the count of block scales).
    public var blockCount: Int { outFeatures * ((inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block) }

    /// Adds ∂L/∂levels into `levels` (the layout of `levels`) and ∂L/∂(block scales) into `scales`
    /// (out · blocks per row), either may be nil, given ∂L/∂W, (out, in) row-major, in one pass.
    /// Channel scope only (each row its own codebook, so rows are summed in parallel).
    public func accumulateGradients(
        _ dW: UnsafePointer<Float>, levels gLevels: UnsafeMutablePointer<Float>?,
        scales gScales: UnsafeMutablePointer<Float>?
    ) {
        precondition(scope == .channel, "level and scale gradients need per-row codebooks")
        let (out, inF) = (outFeatures, inFeatures)
        let nb = (inF + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        let io = UncheckedSendable((dW, gLevels, gScales))
        codes.withUnsafeBufferPointer { cb in
            levels.withUnsafeBufferPointer { lb in
                let src = UncheckedSendable((cb.baseAddress!, lb.baseAddress!))
                parallelFor(out, minPerChunk: 16) { rows in
                    let (dW, gLevels, gScales) = io.value
                    let (codes, lv) = src.value
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { part in
                        withUnsafeTemporaryAllocation(of: Double.self, capacity: 16) { total in
                            for r in rows {
                                let b = Int(bits[r])
                                let (k1, mask) = (1 << b, (1 << b) - 1)
                                let row = codes + rowOffsets[r]
                                let level = lv + levelOffsets[r]
                                let g = dW + r * inF
                                total.initialize(repeating: 0)
                                for blk in 0..<nb {
                                    // Per code, the sum of ∂L/∂W over the block's inputs with that code.
                                    part.initialize(repeating: 0)
                                    let j0 = blk * AbsmaxStorage.block
                                    for j in j0..<min(inF, j0 + AbsmaxStorage.block) {
                                        let bit = j * b
                                        part[Int(row[bit >> 3] >> UInt8(bit & 7)) & mask] += g[j]
                                    }
                                    let s = Double(absmax.value(r * nb + blk))
                                    var ds = 0.0
                                    for k in 0..<k1 {
                                        total[k] += s * Double(part[k])
                                        ds += Double(level[k]) * Double(part[k])
                                    }
                                    if let gScales { gScales[r * nb + blk] += Float(ds) }
                                }
                                if let gLevels { for k in 0..<k1 { gLevels[levelOffsets[r] + k] += Float(total[k]) } }
                            }
                        }
                    }
                }
            }
        }
    }
}
