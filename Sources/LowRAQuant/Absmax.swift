import CLowRAPacked
import LowRATensor

/// Block scales of a packed weight: fp32 per block, or double-quantized (uint8 code per block,
/// fp32 scale per 256 blocks, as QLoRA), see `lowra_packed.h`.
public enum AbsmaxStorage: Sendable, Equatable {
    case plain(HeldArray<Float>)  // (out * nb)
    case doubleQuant(codes: HeldArray<UInt8>, scales: [Float])  // (out * nb), (ceil(out * nb / 256))

    public static let block = Int(LOWRA_BLOCK)
    public static let group = Int(LOWRA_DQ_GROUP)

    /// Scales for `raw` block absmax values. Double quantization rounds each code up, so the
    /// decoded scale is never below the block's true absmax and normalized weights stay in [-1, 1];
    /// `roundUp: false` rounds to the nearest code instead (trained scales, which bound nothing).
    public init(raw: [Float], doubleQuant: Bool, roundUp: Bool = true) {
        guard doubleQuant else {
            self = .plain(HeldArray(raw))
            return
        }
        let groups = (raw.count + Self.group - 1) / Self.group
        var scales = [Float](repeating: 0, count: groups)
        var codes = [UInt8](repeating: 0, count: raw.count)
        for g in 0..<groups {
            let range = (g * Self.group)..<min(raw.count, (g + 1) * Self.group)
            let s = raw[range].max() ?? 0
            scales[g] = s
            guard s > 0 else { continue }
            for i in range {
                guard roundUp else {
                    codes[i] = UInt8(min(255, max(0, (raw[i] / s * 255).rounded())))
                    continue
                }
                var c = min(255, Int((raw[i] / s * 255).rounded(.up)))
                while c < 255 && Float(c) / 255 * s < raw[i] { c += 1 }
                codes[i] = UInt8(c)
            }
        }
        self = .doubleQuant(codes: HeldArray(codes), scales: scales)
    }

    public var isDoubleQuant: Bool { if case .doubleQuant = self { true } else { false } }

    /// Decoded scale of flattened block i.
    @inline(__always)
    public func value(_ i: Int) -> Float {
        switch self {
        case .plain(let v): v[i]
        case .doubleQuant(let codes, let scales): Float(codes[i]) / 255 * scales[i / Self.group]
        }
    }

    public func decoded(count: Int) -> [Float] { (0..<count).map(value) }

    /// Blocks held.
    public var count: Int {
        switch self {
        case .plain(let v): v.count
        case .doubleQuant(let c, _): c.count
        }
    }

    public var storedBytes: Int {
        switch self {
        case .plain(let v): 4 * v.count
        case .doubleQuant(let c, let s): c.count + 4 * s.count
        }
    }
}

/// Raw absmax of every block of 64 inputs of every row of w (out, in): (out * nb).
public func blockAbsmax(_ w: UnsafePointer<Float>, out: Int, in inF: Int) -> [Float] {
    let nb = (inF + AbsmaxStorage.block - 1) / AbsmaxStorage.block
    var a = [Float](repeating: 0, count: out * nb)
    a.withUnsafeMutableBufferPointer { ab in
        let dst = UncheckedSendable(ab.baseAddress!)
        parallelFor(out, minPerChunk: 16) { rows in
            for r in rows {
                for b in 0..<nb {
                    var m: Float = 0
                    for j in (b * AbsmaxStorage.block)..<min(inF, (b + 1) * AbsmaxStorage.block) {
                        m = max(m, abs(w[r * inF + j]))
                    }
                    dst.value[r * nb + b] = m
                }
            }
        }
    }
    return a
}
