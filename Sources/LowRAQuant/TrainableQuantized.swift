import Foundation
import LowRATensor

// Block reconstruction's view of a packed weight: everything the packed format holds made
// trainable. Q_rj = s_r,b(j) · level_r[code_rj] with code_rj the level nearest to the latent
// weight v_rj = w'_rj / s_r,b(j): moving the continuous latent w' moves the codes (a straight-
// through estimator: ∂Q/∂w' taken as 1 where |v| ≤ 1, the absmax range; 0 outside it), while
// the block scales and the levels have the exact derivative with the codes held:
//   ∂L/∂s_r,b = Σ_{j in b} level_r[code_rj] · ∂L/∂Q_rj,
//   ∂L/∂level_r[k] = Σ_{j : code_rj = k} s_r,b(j) · ∂L/∂Q_rj.

/// A packed weight with continuous latent weights, fp32 block scales and per-row levels, all
/// trainable; `packed()` freezes them back into the packed format (channel-scope codebooks).
public struct TrainableQuantized: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    public let bits: [UInt8]
    /// Where row r's levels start in `levels` (out + 1 entries).
    public let levelOffsets: [Int]
    /// The latent weights (out, in), the block scales (out, blocks per row), the levels.
    public var latent: [Float]
    public var scales: [Float]
    public var levels: [Float]
    /// Whether the source stored its scales double-quantized (`packed()` does the same).
    public let doubleQuant: Bool

    public var blocksPerRow: Int { (inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block }

    /// Starts exactly at `packed`: the latent weights are its dequantized values, so every code is
    /// the one it stored and the first forward equals the packed weight.
    public init(_ packed: PackedLinear) throws {
        guard packed.scope == .channel else {
            throw LowRAError(.invalidArgument, "block reconstruction needs per-row codebooks (channel scope)")
        }
        outFeatures = packed.outFeatures
        inFeatures = packed.inFeatures
        bits = packed.bits
        levelOffsets = packed.levelOffsets + [packed.levels.count]
        latent = packed.dequantized()
        scales = packed.absmax.decoded(
            count: packed.outFeatures * ((packed.inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block))
        levels = packed.levels
        doubleQuant = packed.absmax.isDoubleQuant
    }

    /// Q (out, in) into `weight` and each element's code into `codes` (out · in).
    public func forward(weight: UnsafeMutablePointer<Float>, codes: UnsafeMutablePointer<UInt8>) {
        let (inF, nb) = (inFeatures, blocksPerRow)
        let io = UncheckedSendable((weight, codes))
        latent.withUnsafeBufferPointer { lat in
            scales.withUnsafeBufferPointer { sc in
                levels.withUnsafeBufferPointer { lv in
                    let src = UncheckedSendable((lat.baseAddress!, sc.baseAddress!, lv.baseAddress!))
                    parallelFor(outFeatures, minPerChunk: 8) { rows in
                        let (weight, codes) = io.value
                        let (lat, sc, lv) = src.value
                        for r in rows {
                            let row = lv + levelOffsets[r]
                            let k = levelOffsets[r + 1] - levelOffsets[r]
                            for j in 0..<inF {
                                let s = sc[r * nb + j / AbsmaxStorage.block]
                                let v = s > 0 ? lat[r * inF + j] / s : 0
                                var best = 0
                                var bestDistance = abs(v - row[0])
                                for c in 1..<k where abs(v - row[c]) < bestDistance {
                                    (best, bestDistance) = (c, abs(v - row[c]))
                                }
                                codes[r * inF + j] = UInt8(best)
                                weight[r * inF + j] = s * row[best]
                            }
                        }
                    }
                }
            }
        }
    }

    /// Given ∂L/∂Q (out, in) and the codes of the forward that produced Q, sets the gradients of
    /// the latent weights, the scales and the levels (the layouts of `latent`, `scales`, `levels`).
    public func backward(
        _ dQ: UnsafePointer<Float>, codes: UnsafePointer<UInt8>, latent gLatent: UnsafeMutablePointer<Float>,
        scales gScales: UnsafeMutablePointer<Float>, levels gLevels: UnsafeMutablePointer<Float>
    ) {
        let (inF, nb) = (inFeatures, blocksPerRow)
        let io = UncheckedSendable((dQ, codes, gLatent, gScales, gLevels))
        latent.withUnsafeBufferPointer { lat in
            scales.withUnsafeBufferPointer { sc in
                levels.withUnsafeBufferPointer { lv in
                    let src = UncheckedSendable((lat.baseAddress!, sc.baseAddress!, lv.baseAddress!))
                    parallelFor(outFeatures, minPerChunk: 8) { rows in
                        let (dQ, codes, gLatent, gScales, gLevels) = io.value
                        let (lat, sc, lv) = src.value
                        withUnsafeTemporaryAllocation(of: Double.self, capacity: 16) { levelSums in
                            for r in rows {
                                let row = lv + levelOffsets[r]
                                let k = levelOffsets[r + 1] - levelOffsets[r]
                                levelSums.initialize(repeating: 0)
                                for blk in 0..<nb {
                                    let s = sc[r * nb + blk]
                                    var scaleSum = 0.0
                                    for j in (blk * AbsmaxStorage.block)..<min(inF, (blk + 1) * AbsmaxStorage.block) {
                                        let i = r * inF + j
                                        let g = dQ[i]
                                        let c = Int(codes[i])
                                        scaleSum += Double(g) * Double(row[c])
                                        levelSums[c] += Double(s) * Double(g)
                                        gLatent[i] = s > 0 && abs(lat[i]) <= s ? g : 0
                                    }
                                    gScales[r * nb + blk] = Float(scaleSum)
                                }
                                for c in 0..<k { gLevels[levelOffsets[r] + c] = Float(levelSums[c]) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Freezes the codes of the current latent weights into a packed weight: levels snapped to
    /// each row's uint8 grid (what the integer kernels need), scales stored as the source stored
    /// its own (double-quantized to the nearest code), and the codes then chosen again for the
    /// stored scales and levels, so the packed weight is the nearest one to the latent weights.
    /// Returns it with those codes (out · in, one per byte).
    public func packed() throws -> (packed: PackedLinear, codes: [UInt8]) {
        var lv = levels
        snapToIntegerLevels(&lv, rowOffsets: levelOffsets)
        let storage = AbsmaxStorage(raw: scales.map { max($0, 0) }, doubleQuant: doubleQuant, roundUp: false)
        var frozen = self
        frozen.levels = lv
        frozen.scales = storage.decoded(count: scales.count)
        var weight = [Float](repeating: 0, count: outFeatures * inFeatures)
        var codes = [UInt8](repeating: 0, count: outFeatures * inFeatures)
        weight.withUnsafeMutableBufferPointer { w in
            codes.withUnsafeMutableBufferPointer { frozen.forward(weight: w.baseAddress!, codes: $0.baseAddress!) }
        }
        let packed = try PackedLinear(
            outFeatures: outFeatures, inFeatures: inFeatures, bits: bits,
            codes: packCodes(codes, bits: bits, in: inFeatures), absmax: storage, levels: lv, scope: .channel)
        return (packed, codes)
    }
}

/// Codes (out, in), one per byte, packed LSB-first at each row's width, each row starting on a byte.
public func packCodes(_ codes: [UInt8], bits: [UInt8], in inF: Int) -> [UInt8] {
    var offsets = [0]
    for b in bits { offsets.append(offsets.last! + (inF * Int(b) + 7) / 8) }
    var packed = [UInt8](repeating: 0, count: offsets.last!)
    packed.withUnsafeMutableBufferPointer { pb in
        codes.withUnsafeBufferPointer { cb in
            let io = UncheckedSendable((pb.baseAddress!, cb.baseAddress!))
            parallelFor(bits.count, minPerChunk: 8) { rows in
                let (dst, codes) = io.value
                for r in rows {
                    let b = Int(bits[r])
                    for j in 0..<inF { dst[offsets[r] + j * b / 8] |= codes[r * inF + j] << UInt8((j * b) % 8) }
                }
            }
        }
    }
    return packed
}
