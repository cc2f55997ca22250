/// Conversions from the 16-bit float formats found in model files.
@inline(__always)
public func floatFromHalf(_ bits: UInt16) -> Float {
    Float(Float16(bitPattern: bits))
}

@inline(__always)
public func floatFromBFloat16(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

@inline(__always)
public func halfFromFloat(_ x: Float) -> UInt16 {
    Float16(x).bitPattern
}

/// Round to nearest even, as PyTorch does.
@inline(__always)
public func bfloat16FromFloat(_ x: Float) -> UInt16 {
    if x.isNaN { return 0x7FC0 }
    let u = x.bitPattern
    let rounding = ((u >> 16) & 1) &+ 0x7FFF
    return UInt16(truncatingIfNeeded: (u &+ rounding) >> 16)
}
