import CLowRAPacked

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

/// dst[i] = halfFromFloat(src[i]) for `count` values: F16C (`lowra_floats_to_halves`) where the
/// kernel path has it, Swift's Float16 otherwise.
public func halvesFromFloats(
    _ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<UInt16>, count: Int, path: Int = KernelPath.current
) {
    guard lowra_floats_to_halves(Int32(path), src, dst, UInt64(count)) == 0 else { return }
    for i in 0..<count { dst[i] = halfFromFloat(src[i]) }
}

/// dst[i] = floatFromHalf(src[i]) for `count` values (`lowra_halves_to_floats`, F16C where the
/// kernel path has it).
public func floatsFromHalves(
    _ src: UnsafePointer<UInt16>, into dst: UnsafeMutablePointer<Float>, count: Int, path: Int = KernelPath.current
) {
    lowra_halves_to_floats(Int32(path), src, dst, UInt64(count))
}
