import LowRATensor

/// ggml tensor types LowRA knows by name. Those with `blockSize` can be dequantized here.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q8_1 = 9
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case q8_K = 15
    case iq2_xxs = 16
    case iq2_xs = 17
    case iq3_xxs = 18
    case iq1_s = 19
    case iq4_nl = 20
    case iq3_s = 21
    case iq2_s = 22
    case iq4_xs = 23
    case i8 = 24
    case i16 = 25
    case i32 = 26
    case i64 = 27
    case f64 = 28
    case iq1_m = 29
    case bf16 = 30
    case tq1_0 = 34
    case tq2_0 = 35

    public var name: String { "\(self)".uppercased() }

    /// (elements per block, bytes per block) for the types LowRA reads; nil otherwise.
    public var blockLayout: (elements: Int, bytes: Int)? {
        switch self {
        case .f32: (1, 4)
        case .f16, .bf16: (1, 2)
        case .q4_0: (32, 18)  // f16 d, 16 bytes of nibbles: 4.5 bits/weight
        case .q4_1: (32, 20)  // f16 d, f16 m, 16 bytes of nibbles: 5 bits/weight
        case .q5_0: (32, 22)  // f16 d, 4 bytes high bits, 16 bytes nibbles: 5.5 bits/weight
        case .q5_1: (32, 24)  // f16 d, f16 m, 4 bytes high bits, 16 bytes nibbles: 6 bits/weight
        case .q8_0: (32, 34)  // f16 d, 32 int8: 8.5 bits/weight
        case .iq4_nl: (32, 18)  // f16 d, 16 bytes of nibbles indexing a fixed 16-level table: 4.5 bits/weight
        // k-quants: super-blocks of 256 in 16 (or 8) sub-blocks, each with its own scale (and min).
        case .q2_K: (256, 84)  // 16 bytes of 4-bit scale|min, 64 bytes of 2-bit codes, f16 d, f16 dmin: 2.625
        case .q3_K: (256, 110)  // 32 bytes high bits, 64 bytes 2-bit codes, 12 bytes of 6-bit scales, f16 d: 3.4375
        case .q4_K: (256, 144)  // f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes nibbles: 4.5
        case .q5_K: (256, 176)  // as q4_K plus 32 bytes of fifth bits: 5.5
        case .q6_K: (256, 210)  // 128 bytes low nibbles, 64 bytes 2-bit highs, 16 int8 scales, f16 d: 6.5625
        default: nil
        }
    }

    public static let readable: [GGMLType] = allCases.filter { $0.blockLayout != nil }
}

/// Dequantizes `count` elements of ggml type `type` from `src` into `dst`.
/// `count` must be a whole number of blocks (checked by the caller).
public func dequantizeGGML(
    _ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int
) {
    func u16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 {
        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self))
    }
    func u32(_ p: UnsafeRawPointer, _ o: Int) -> UInt32 {
        UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self))
    }
    let out = UncheckedSendable(dst)
    switch type {
    case .f32, .f16, .bf16:
        parallelFor(count, minPerChunk: 1 << 16) { range in
            let dst = out.value
            switch type {
            case .f32: for i in range { dst[i] = Float(bitPattern: u32(src, 4 * i)) }
            case .f16: for i in range { dst[i] = floatFromHalf(u16(src, 2 * i)) }
            default: for i in range { dst[i] = floatFromBFloat16(u16(src, 2 * i)) }
            }
        }
    default:
        guard let (qk, bytes) = type.blockLayout else { preconditionFailure("unreadable type \(type)") }
        let blocks = count / qk
        parallelFor(blocks, minPerChunk: 1024) { range in
            for b in range {
                let p = src + b * bytes
                let y = dst + b * qk
                switch type {
                case .q4_0:
                    let d = floatFromHalf(u16(p, 0))
                    let qs = p + 2
                    for j in 0..<16 {
                        let q = qs.load(fromByteOffset: j, as: UInt8.self)
                        y[j] = Float(Int(q & 0x0F) - 8) * d
                        y[j + 16] = Float(Int(q >> 4) - 8) * d
                    }
                case .q4_1:
                    let d = floatFromHalf(u16(p, 0))
                    let m = floatFromHalf(u16(p, 2))
                    let qs = p + 4
                    for j in 0..<16 {
                        let q = qs.load(fromByteOffset: j, as: UInt8.self)
                        y[j] = Float(q & 0x0F) * d + m
                        y[j + 16] = Float(q >> 4) * d + m
                    }
                case .q5_0, .q5_1:
                    let hasMin = type == .q5_1
                    let d = floatFromHalf(u16(p, 0))
                    let m: Float = hasMin ? floatFromHalf(u16(p, 2)) : 0
                    let qh = u32(p, hasMin ? 4 : 2)
                    let qs = p + (hasMin ? 8 : 6)
                    let offset = hasMin ? 0 : -16
                    for j in 0..<16 {
                        let q = qs.load(fromByteOffset: j, as: UInt8.self)
                        let h0 = Int((qh >> UInt32(j)) << 4) & 0x10
                        let h1 = Int(qh >> UInt32(j + 12)) & 0x10
                        y[j] = Float((Int(q & 0x0F) | h0) + offset) * d + m
                        y[j + 16] = Float((Int(q >> 4) | h1) + offset) * d + m
                    }
                case .q8_0:
                    let d = floatFromHalf(u16(p, 0))
                    for j in 0..<32 {
                        y[j] = Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) * d
                    }
                case .iq4_nl:
                    let d = floatFromHalf(u16(p, 0))
                    for j in 0..<16 {
                        let q = p.load(fromByteOffset: 2 + j, as: UInt8.self)
                        y[j] = d * iq4nlLevels[Int(q & 0x0F)]
                        y[j + 16] = d * iq4nlLevels[Int(q >> 4)]
                    }
                case .q2_K: dequantizeQ2K(p, y)
                case .q3_K: dequantizeQ3K(p, y)
                case .q4_K, .q5_K: dequantizeQ45K(p, y, fifthBit: type == .q5_K)
                case .q6_K: dequantizeQ6K(p, y)
                default:
                    break
                }
            }
        }
    }
}

/// Encodes `count` floats (a multiple of 32) as ggml Q8_0 or Q4_0 blocks, by ggml's reference
/// rules: Q8_0 d = max|x| / 127, q = round(x / d); Q4_0 d = m / −8 for m the value of largest
/// magnitude, q = min(15, trunc(x / d + 8.5)). d is stored as f16 (rounded), the codes use
/// the unrounded d, as ggml does.
public func quantizeGGML(
    _ type: GGMLType, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer
) {
    precondition((type == .q8_0 || type == .q4_0) && count % 32 == 0, "quantizeGGML: \(type.name) not written")
    let bytes = type.blockLayout!.bytes
    let io = UncheckedSendable((src, dst))
    parallelFor(count / 32, minPerChunk: 1024) { range in
        let (src, dst) = io.value
        for b in range {
            let x = src + 32 * b
            let p = dst + bytes * b
            if type == .q8_0 {
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(x[j])) }
                let d = amax / 127
                let id: Float = d != 0 ? 1 / d : 0
                p.storeBytes(of: halfFromFloat(d).littleEndian, as: UInt16.self)
                for j in 0..<32 {
                    let v = (x[j] * id).rounded()
                    p.storeBytes(of: Int8(v.isFinite ? max(-127, min(127, v)) : 0), toByteOffset: 2 + j, as: Int8.self)
                }
            } else {
                var amax: Float = 0
                var m: Float = 0
                for j in 0..<32 where abs(x[j]) > amax {
                    amax = abs(x[j])
                    m = x[j]
                }
                let d = m / -8
                let id: Float = d != 0 ? 1 / d : 0
                p.storeBytes(of: halfFromFloat(d).littleEndian, as: UInt16.self)
                for j in 0..<16 {
                    func code(_ v: Float) -> UInt8 { v.isFinite ? UInt8(max(0, min(15, v))) : 8 }
                    p.storeBytes(
                        of: code(x[j] * id + 8.5) | code(x[j + 16] * id + 8.5) << 4, toByteOffset: 2 + j, as: UInt8.self
                    )
                }
            }
        }
    }
}

/// The 16 signed levels of IQ4_NL (a non-uniform 4-bit grid), scaled by each block's d.
private let iq4nlLevels: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

@inline(__always) private func byte(_ p: UnsafeRawPointer, _ o: Int) -> Int {
    Int(p.load(fromByteOffset: o, as: UInt8.self))
}
@inline(__always) private func half(_ p: UnsafeRawPointer, _ o: Int) -> Float {
    floatFromHalf(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
}

/// Q2_K: 16 sub-blocks of 16; sub-block s has scale d·(sc[s] & 15) and min dmin·(sc[s] >> 4).
/// Codes are 2-bit, four per byte: byte l of half h holds weights 128h + 32j + l (+16) at bits 2j.
private func dequantizeQ2K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = half(p, 80)
    let dmin = half(p, 82)
    for h in 0..<2 {
        for j in 0..<4 {
            for part in 0..<2 {
                let sc = byte(p, h * 8 + j * 2 + part)
                let dl = d * Float(sc & 15)
                let ml = dmin * Float(sc >> 4)
                let out = y + h * 128 + j * 32 + part * 16
                for l in 0..<16 { out[l] = dl * Float((byte(p, 16 + h * 32 + part * 16 + l) >> (2 * j)) & 3) - ml }
            }
        }
    }
}

/// Q3_K: like Q2_K's codes, plus a high bit per weight in `hmask` (clear: subtract 4), and 16
/// signed 6-bit scales (4 low bits in bytes 0–7, 2 high bits in bytes 8–11), offset by 32.
private func dequantizeQ3K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = half(p, 108)
    let sc = p + 96
    var scales = [Int](repeating: 0, count: 16)
    for s in 0..<16 {
        let low = s < 8 ? byte(sc, s) & 15 : byte(sc, s - 8) >> 4
        let high = (byte(sc, 8 + s % 4) >> (2 * (s / 4))) & 3
        scales[s] = (low | high << 4) - 32
    }
    for h in 0..<2 {
        for j in 0..<4 {
            let bit = 1 << (h * 4 + j)
            for part in 0..<2 {
                let dl = d * Float(scales[h * 8 + j * 2 + part])
                let out = y + h * 128 + j * 32 + part * 16
                for l in 0..<16 {
                    let q = (byte(p, 32 + h * 32 + part * 16 + l) >> (2 * j)) & 3
                    let hi = byte(p, part * 16 + l) & bit == 0 ? 4 : 0
                    out[l] = dl * Float(q - hi)
                }
            }
        }
    }
}

/// The 6-bit scale and min of sub-block j (0..<8) of Q4_K / Q5_K from their 12 packed bytes.
@inline(__always) private func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (Int, Int) {
    if j < 4 { return (byte(q, j) & 63, byte(q, j + 4) & 63) }
    return ((byte(q, j + 4) & 15) | (byte(q, j - 4) >> 6) << 4, (byte(q, j + 4) >> 4) | (byte(q, j) >> 6) << 4)
}

/// Q4_K / Q5_K: 8 sub-blocks of 32, weight = d·sc·q − dmin·m; 4-bit codes (low nibbles give
/// sub-block 2i, high nibbles 2i+1), plus for Q5_K a fifth bit from `qh` (bit i of byte l).
private func dequantizeQ45K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, fifthBit: Bool) {
    let d = half(p, 0)
    let dmin = half(p, 2)
    let scales = p + 4
    let qs = p + (fifthBit ? 48 : 16)
    for i in 0..<4 {
        for part in 0..<2 {
            let (sc, m) = scaleMinK4(2 * i + part, scales)
            let dl = d * Float(sc)
            let ml = dmin * Float(m)
            let out = y + i * 64 + part * 32
            let bit = 1 << (2 * i + part)
            for l in 0..<32 {
                var q = (byte(qs, i * 32 + l) >> (4 * part)) & 15
                if fifthBit && byte(p, 16 + l) & bit != 0 { q += 16 }
                out[l] = dl * Float(q) - ml
            }
        }
    }
}

/// Q6_K: 16 sub-blocks of 16 with int8 scales; a 6-bit code is a nibble of `ql` plus two bits of
/// `qh`, minus 32. Each half of 128 uses 64 bytes of ql, 32 of qh and 8 scales.
private func dequantizeQ6K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = half(p, 208)
    for h in 0..<2 {
        let ql = p + h * 64
        let qh = p + 128 + h * 32
        let sc = p + 192 + h * 8
        for l in 0..<32 {
            for quarter in 0..<4 {
                let low = (byte(ql, l + (quarter & 1) * 32) >> (4 * (quarter >> 1))) & 15
                let q = (low | ((byte(qh, l) >> (2 * quarter)) & 3) << 4) - 32
                let s = Float(sc.load(fromByteOffset: l / 16 + 2 * quarter, as: Int8.self))
                y[h * 128 + quarter * 32 + l] = d * s * Float(q)
            }
        }
    }
}
