import CLowRAPacked

/// The C kernels' instruction-set paths (`lowra_kernels.h`): the one this CPU runs, by name.
public enum KernelPath {
    /// AVX-512, AVX2 or scalar: the fastest this CPU runs, unless the environment variable
    /// LOWRA_KERNEL=scalar|avx2 forces a slower one.
    public static let best = Int(lowra_kernel_best_path())
    public static func name(_ path: Int = best) -> String { String(cString: lowra_kernel_path_name(Int32(path))) }
    /// Whether this CPU runs `path` (0 scalar, 1 AVX2, 2 AVX-512).
    public static func supported(_ path: Int) -> Bool { lowra_kernel_path_supported(Int32(path)) != 0 }
    public static var all: [Int] { (0...2).filter(supported) }
    /// Columns one kernel call multiplies while reading the weights once.
    public static let columns = Int(LOWRA_MAX_COLUMNS)
}
