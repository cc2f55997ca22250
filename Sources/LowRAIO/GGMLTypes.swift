import LowRATensor

/// ggml tensor types LowRA knows by name. Those with `blockSize` can be dequantized here.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22
    case iq4_xs = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30
    case tq1_0 = 34, tq2_0 = 35

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
    switch type {
    case .f32:
        for i in 0..<count { dst[i] = Float(bitPattern: u32(src, 4 * i)) }
    case .f16:
        for i in 0..<count { dst[i] = floatFromHalf(u16(src, 2 * i)) }
    case .bf16:
        for i in 0..<count { dst[i] = floatFromBFloat16(u16(src, 2 * i)) }
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
                default:
                    break
                }
            }
        }
    }
}
