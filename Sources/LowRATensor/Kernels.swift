import CLowRAPacked
import Foundation

/// The C kernels' instruction-set paths (`lowra_kernels.h`): the one this CPU runs, by name.
public enum KernelPath {
    /// AVX-512, AVX2, NEON or scalar: the fastest this CPU runs, unless the environment variable
    /// LOWRA_KERNEL=scalar|avx2 forces a slower one.
    public static let best = Int(lowra_kernel_best_path())
    nonisolated(unsafe) private static var selected = best
    /// The path kernel calls run when not told otherwise: `best`, or the one `run(on:_:)` selects.
    public static var current: Int { selected }
    /// Runs `body` with every kernel call of the process on `path` (a benchmark comparing paths in one
    /// run; nothing else may run kernels meanwhile), then restores the previous path.
    public static func run<R>(on path: Int, _ body: () throws -> R) throws -> R {
        guard supported(path) else {
            let runs = all.map { name($0) }.joined(separator: ", ")
            throw LowRAError(.unsupported, "this CPU cannot run the \(name(path)) kernels (it runs: \(runs))")
        }
        let previous = selected
        selected = path
        defer { selected = previous }
        return try body()
    }
    /// The path called `name` ("scalar", "avx2", "avx512", "neon"), or nil.
    public static func named(_ name: String) -> Int? {
        (0..<Int(LOWRA_PATH_COUNT.rawValue)).first { Self.name($0) == name }
    }
    public static func name(_ path: Int = current) -> String { String(cString: lowra_kernel_path_name(Int32(path))) }
    /// The path's name with the instructions its integer kernels use ("avx512 vnni vbmi", ...).
    public static func variant(_ path: Int = current) -> String {
        String(cString: lowra_kernel_variant_name(Int32(path)))
    }
    /// The AVX-512 integer kernels with and without VBMI on CPUs that have it (`[true]` or `[false]`
    /// elsewhere): `body` runs once per variant with that variant switched on.
    public static func eachVBMIVariant(_ body: () throws -> Void) rethrows {
        let has = lowra_kernel_vbmi() != 0
        defer { lowra_kernel_set_vbmi(has ? 1 : 0) }
        for on in has ? [false, true] : [false] {
            lowra_kernel_set_vbmi(on ? 1 : 0)
            try body()
        }
    }
    /// Whether this CPU runs `path` (0 scalar, 1 AVX2, 2 AVX-512, 3 NEON).
    public static func supported(_ path: Int) -> Bool { lowra_kernel_path_supported(Int32(path)) != 0 }
    public static var all: [Int] { (0..<Int(LOWRA_PATH_COUNT.rawValue)).filter(supported) }
    /// Rows a forward multiplies straight from packed or stored weights (decode, short prompts);
    /// more are converted a panel at a time for sgemm.
    public static let columns = Int(LOWRA_MAX_COLUMNS)
    /// Rows a batched decode step multiplies in one call (`BatchDecoder`): the tiled kernels keep
    /// 16 columns in flight, the row kernels take them 8 at a time; each column is computed as it
    /// is alone either way.
    public static let batchColumns = Int(LOWRA_TILE_COLUMNS)
    /// Prompt rows (prefill) multiplied straight from the codes on `path`: every row where the path
    /// runs the tiled kernels with integer `activations` (faster than converting panels for sgemm:
    /// 1.4× on AVX-512 VNNI + VBMI, 1.15× on AVX2 for 512 tokens of SmolLM2), else `batchColumns`.
    public static func promptRows(_ path: Int, activations: KernelActivations) -> Int {
        usesTiles(path) && activations != .float ? Int.max : batchColumns
    }
    /// Columns quantized and multiplied per call of the tiled kernels: a long prompt goes through in
    /// chunks, so its quantized activations (about 1 KB per column and block of 64 inputs) stay a few MB.
    public static let tiledChunkColumns = 256
    /// `body(c0, count)` for each chunk of at most `tiledChunkColumns` of `n` columns, in order.
    public static func inColumnChunks(_ n: Int, _ body: (Int, Int) -> Void) {
        for c0 in stride(from: 0, to: n, by: tiledChunkColumns) { body(c0, min(tiledChunkColumns, n - c0)) }
    }
    /// Whether `path` multiplies packed weights and Q8_0 rows by the tiled kernels
    /// (`lowra_tiled_gemm_q8`, `lowra_q8_0_tiled_gemm_q8`: AVX-512 VNNI + VBMI, AVX2 or NEON,
    /// unless LOWRA_TILES=0); else by the row kernels.
    public static func usesTiles(_ path: Int) -> Bool { lowra_tiled_supported(Int32(path)) != 0 }
    /// Whether `path` multiplies training's input gradient dY · W of packed weights from their tiles
    /// (`lowra_tiled_gemm_t`: AVX-512 VNNI + VBMI, tiles on); else from fp32 panels.
    public static func usesTransposedTiles(_ path: Int) -> Bool { lowra_tiled_t_supported(Int32(path)) != 0 }
    /// Row kernels for the rest of the process (`lowra_tiled_disable`).
    public static func disableTiles() { lowra_tiled_disable() }
}

/// The activations the decode kernels multiply, with exact integer dot products (`lowra_q8_*`):
/// 16 bits per value as two int8 halves (the default: both roundings within fp32 noise), int8
/// per block of 64 inputs (one dot product instead of two; perplexity moves by up to ~1% on the
/// least robust models), or fp32 as the reference computes.
public enum KernelActivations: String, Sendable, CaseIterable, Codable {
    case int16, int8, float
    /// int16, unless the environment variable LOWRA_ACTIVATIONS names another.
    public static let `default`: KernelActivations =
        ProcessInfo.processInfo.environment["LOWRA_ACTIVATIONS"].flatMap(KernelActivations.init) ?? .int16
}

/// The tiled kernels' products over `n` columns of X (n, inFeatures): each chunk of
/// `KernelPath.tiledChunkColumns` columns quantized once, then `kernel(q, c0, range)` for ranges of
/// the `tiles` tiles split across the workers (`c0`: the chunk's first column, for the outputs).
public func multiplyTilesInChunks(
    _ x: UnsafePointer<Float>, columns n: Int, inFeatures: Int, orders: UInt32 = 0, as kind: KernelActivations,
    tiles: Int, _ kernel: (UnsafePointer<lowra_q8_activations>, Int, Range<Int>) -> Void
) {
    KernelPath.inColumnChunks(n) { c0, count in
        let part = x + c0 * inFeatures
        withQuantizedActivations(part, columns: count, inFeatures: inFeatures, orders: orders, as: kind) { q in
            parallelFor(tiles, minPerChunk: 4) { kernel(q, c0, $0) }
        }
    }
}

/// X (n, in) quantized for the integer kernels (`.int16` or `.int8`), valid inside `body`;
/// `orders` as `lowra_q8_quantize` takes them (the code widths to be multiplied; 0 for Q8_0).
public func withQuantizedActivations<R>(
    _ x: UnsafePointer<Float>, columns n: Int, inFeatures: Int, orders: UInt32 = 0, as kind: KernelActivations,
    _ body: (UnsafePointer<lowra_q8_activations>) -> R
) -> R {
    precondition(kind != .float, "fp32 activations are not quantized")
    let bytes = Int(lowra_q8_activation_bytes(UInt64(n), UInt64(inFeatures)))
    // The thread's reused scratch: a long prompt's products would otherwise each fault in fresh pages.
    guard let buffer = lowra_thread_scratch(UInt64(max(bytes, 64))) else { fatalError("out of memory") }
    var a = lowra_q8_activations()
    lowra_q8_quantize(x, UInt64(n), UInt64(inFeatures), orders, kind == .int16 ? 1 : 0, buffer, &a)
    return withUnsafePointer(to: &a) { body($0) }
}
