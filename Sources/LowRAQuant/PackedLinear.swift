import Foundation
import CLowRAPacked
import LowRATensor

/// Where output channels find their codebooks.
public enum CodebookScope: String, Codable, Sendable, CaseIterable {
    /// Each output channel has its own levels for its precision.
    case channel
    /// One codebook per precision for the whole tensor (the paper's implementation averages
    /// the per-channel thresholds and levels).
    case tensor
}

/// A linear weight (out x in) stored packed at per-row precision, as `lowra_packed.h` defines.
public struct PackedLinear: Sendable, Equatable {
    public let outFeatures: Int
    public let inFeatures: Int
    public let bits: [UInt8]  // (out), each 1, 2 or 4
    public let codes: HeldArray<UInt8>  // rows packed LSB-first, each starting on a byte
    public let absmax: AbsmaxStorage
    public let levels: [Float]  // channel scope: concatenated per row; tensor scope: 22 levels
    public let scope: CodebookScope
    /// Derived: byte offset of each row in `codes` (out + 1), and each row's first level.
    public let rowOffsets: [Int]
    public let levelOffsets: [Int]
    /// `lowra_q8_order` of every width present: the activation orders its kernel reads.
    let activationOrders: UInt32
    /// What the C kernels read, built once (`PackedKernelView`).
    let kernel: PackedKernelView

    public init(
        outFeatures: Int, inFeatures: Int, bits: [UInt8], codes: [UInt8], absmax: AbsmaxStorage,
        levels: [Float], scope: CodebookScope
    ) throws {
        try self.init(
            outFeatures: outFeatures, inFeatures: inFeatures, bits: bits, codes: HeldArray(codes), absmax: absmax,
            levels: levels, scope: scope)
    }

    /// Codes held anywhere: a quantized model's are read straight from its mapped file.
    public init(
        outFeatures: Int, inFeatures: Int, bits: [UInt8], codes: HeldArray<UInt8>, absmax: AbsmaxStorage,
        levels: [Float], scope: CodebookScope
    ) throws {
        guard bits.count == outFeatures, bits.allSatisfy({ $0 == 1 || $0 == 2 || $0 == 4 }) else {
            throw LowRAError(.malformedFile, "packed weight: bits must be \(outFeatures) values in {1, 2, 4}")
        }
        var offsets = [0]
        offsets.reserveCapacity(outFeatures + 1)
        var lo = [Int]()
        lo.reserveCapacity(outFeatures)
        var levelCount = 0
        for b in bits {
            offsets.append(offsets.last! + Int(lowra_row_bytes(UInt64(inFeatures), UInt32(b))))
            lo.append(scope == .channel ? levelCount : Int(lowra_tensor_level_offset(UInt32(b))))
            levelCount += 1 << Int(b)
        }
        let nb = (inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        let absCount: Int
        switch absmax {
        case .plain(let v): absCount = v.count
        case .doubleQuant(let c, let s):
            absCount = c.count
            guard s.count == (c.count + AbsmaxStorage.group - 1) / AbsmaxStorage.group else {
                throw LowRAError(
                    .malformedFile, "packed weight: \(s.count) double-quantization scales for \(c.count) blocks")
            }
        }
        guard codes.count == offsets.last!, absCount == outFeatures * nb,
            levels.count == (scope == .channel ? levelCount : Int(LOWRA_TENSOR_LEVELS))
        else {
            throw LowRAError(
                .malformedFile,
                "packed weight \(outFeatures)x\(inFeatures): sizes of codes, scales or levels do not match its bits")
        }
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.bits = bits
        self.codes = codes
        self.absmax = absmax
        self.levels = levels
        self.scope = scope
        rowOffsets = offsets
        levelOffsets = lo
        activationOrders = Set(bits).reduce(0) { $0 | lowra_q8_order(UInt32($1)) }
        kernel = PackedKernelView(
            out: outFeatures, in: inFeatures, bits: bits, codes: codes, rowOffsets: offsets, levels: levels,
            levelOffsets: lo, absmax: absmax)
    }

    public static func == (a: PackedLinear, b: PackedLinear) -> Bool {
        a.outFeatures == b.outFeatures && a.inFeatures == b.inFeatures && a.bits == b.bits && a.codes == b.codes
            && a.absmax == b.absmax && a.levels == b.levels && a.scope == b.scope
    }

    /// Each row's levels as uint8 codes (out, 16), with level ≈ levelMin[r] + levelStep[r] · code
    /// (`lowra_integer_levels_row`): what the integer kernels multiply. Copies of the kernel view's
    /// arrays, made on each access.
    var levelCodes: [UInt8] { Array(UnsafeBufferPointer(start: kernel.view.levels_u8, count: 16 * outFeatures)) }
    var levelMin: [Float] { Array(UnsafeBufferPointer(start: kernel.view.level_min, count: outFeatures)) }
    var levelStep: [Float] { Array(UnsafeBufferPointer(start: kernel.view.level_step, count: outFeatures)) }

    /// Element counts of each stored array of a layer with these precisions, known before it is
    /// packed (a streaming writer declares them in its header first): code bytes, block scales
    /// (fp32 values, or uint8 codes when double-quantized), double-quantization scales, levels.
    public static func arraySizes(
        outFeatures: Int, inFeatures: Int, bits: [UInt8], doubleQuant: Bool, scope: CodebookScope
    ) -> (codes: Int, absmax: Int, absmaxScales: Int, levels: Int) {
        let codes = bits.reduce(0) { $0 + Int(lowra_row_bytes(UInt64(inFeatures), UInt32($1))) }
        let blocks = outFeatures * ((inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block)
        let levels = scope == .channel ? bits.reduce(0) { $0 + (1 << Int($1)) } : Int(LOWRA_TENSOR_LEVELS)
        return (codes, blocks, doubleQuant ? (blocks + AbsmaxStorage.group - 1) / AbsmaxStorage.group : 0, levels)
    }

    /// Σ in · bits[r]: the code bits the budget counts.
    public var codeBits: Int { bits.reduce(0) { $0 + Int($1) } * inFeatures }

    /// Exact stored size, by the header's formula.
    public var storedBytes: Int {
        bits.withUnsafeBufferPointer {
            Int(
                lowra_packed_bytes(
                    UInt64(outFeatures), UInt64(inFeatures), $0.baseAddress!,
                    absmax.isDoubleQuant ? 1 : 0, scope == .channel ? 0 : 1))
        }
    }

    /// W (out, in) in fp32, rows split across the workers (`lowra_packed_dequantize`: the same
    /// values as `dequantizeRow`).
    public func dequantize(into dst: UnsafeMutablePointer<Float>, path: Int = KernelPath.current) {
        let out = UncheckedSendable(dst)
        parallelFor(outFeatures, minPerChunk: 16) { rows in
            dequantizePanel(rows, into: out.value + rows.lowerBound * inFeatures, path: path)
        }
    }

    /// Rows `range` of W in fp32 into dst (range.count, in), on the calling thread: a panel for
    /// sgemm (`Linear.forEachPanel`), as `StoredMatrix.dequantizePanel` is for stored weights.
    public func dequantizePanel(
        _ range: Range<Int>, into dst: UnsafeMutablePointer<Float>, path: Int = KernelPath.current
    ) {
        withView { lowra_packed_dequantize(Int32(path), $0, UInt64(range.lowerBound), UInt64(range.upperBound), dst) }
    }

    public func dequantized() -> [Float] {
        var w = [Float](repeating: 0, count: outFeatures * inFeatures)
        w.withUnsafeMutableBufferPointer { dequantize(into: $0.baseAddress!) }
        return w
    }

    @inline(__always)
    public func dequantizeRow(_ r: Int, into y: UnsafeMutablePointer<Float>) {
        let b = Int(bits[r])
        let nb = (inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        codes.withUnsafeBufferPointer { cb in
            levels.withUnsafeBufferPointer { lb in
                let row = cb.baseAddress! + rowOffsets[r]
                let lv = lb.baseAddress! + levelOffsets[r]
                // Blocks of 64 start on a byte for every width, so bytes never straddle blocks.
                let sl = UnsafeMutablePointer<Float>.allocate(capacity: 16)
                defer { sl.deallocate() }
                for blk in 0..<nb {
                    let scale = absmax.value(r * nb + blk)
                    let j0 = blk * AbsmaxStorage.block
                    let j1 = min(inFeatures, j0 + AbsmaxStorage.block)
                    let full = (j1 - j0) * b / 8  // whole bytes in this block
                    let src = row + j0 * b / 8
                    let dst = y + j0
                    // The block's levels, scaled once: the inner loops are pure lookups.
                    let k = 1 << b
                    for i in 0..<k { sl[i] = scale * lv[i] }
                    switch b {
                    case 4:
                        for i in 0..<full {
                            let v = src[i]
                            dst[2 * i] = sl[Int(v & 15)]
                            dst[2 * i + 1] = sl[Int(v >> 4)]
                        }
                    case 2:
                        for i in 0..<full {
                            let v = src[i]
                            dst[4 * i] = sl[Int(v & 3)]
                            dst[4 * i + 1] = sl[Int((v >> 2) & 3)]
                            dst[4 * i + 2] = sl[Int((v >> 4) & 3)]
                            dst[4 * i + 3] = sl[Int(v >> 6)]
                        }
                    default:
                        let l0 = sl[0]
                        let l1 = sl[1]
                        for i in 0..<full {
                            let v = src[i]
                            for k in 0..<8 { dst[8 * i + k] = (v >> UInt8(k)) & 1 == 0 ? l0 : l1 }
                        }
                    }
                    // A partial last byte (row length not a multiple of 8 / b).
                    let mask = UInt8((1 << b) - 1)
                    for j in (j0 + full * 8 / b)..<j1 {
                        y[j] = scale * lv[Int((row[j * b / 8] >> UInt8((j * b) % 8)) & mask)]
                    }
                }
            }
        }
    }

    /// Y (n, out) = X (n, in) · Wᵀ straight from the codes, W never expanded (decode, and small
    /// batches): the kernels of `lowra_kernels.h`, rows split across the workers.
    /// `activations` .int16/.int8 quantizes X per block of 64 once and multiplies with integer dot
    /// products (`lowra_packed_gemm_q8`); .float runs the fp32 kernels.
    public func multiply(
        _ x: UnsafePointer<Float>, columns n: Int, into y: UnsafeMutablePointer<Float>, path: Int = KernelPath.current,
        activations: KernelActivations = .default
    ) {
        withView { view in
            // Enough rows per worker to amortize the dispatch; a multiple of 16 keeps chunks aligned.
            switch activations {
            case .float:
                let io = UncheckedSendable((view, x, y))
                parallelFor(outFeatures, minPerChunk: 64) { rows in
                    lowra_packed_gemm(
                        Int32(path), io.value.0, io.value.1, UInt64(n), io.value.2, UInt64(outFeatures),
                        UInt64(rows.lowerBound), UInt64(rows.upperBound))
                }
            case .int16 where KernelPath.usesTiles(path), .int8 where KernelPath.usesTiles(path):
                Self.multiplyTiles([self], x, columns: n, into: [y], path: path, activations: activations)
            case .int16, .int8:
                withQuantizedActivations(
                    x, columns: n, inFeatures: inFeatures, orders: activationOrders, as: activations
                ) { q in
                    let io = UncheckedSendable((view, q, y))
                    parallelFor(outFeatures, minPerChunk: 64) { rows in
                        lowra_packed_gemm_q8(
                            Int32(path), io.value.0, io.value.1, io.value.2, UInt64(outFeatures),
                            UInt64(rows.lowerBound), UInt64(rows.upperBound))
                    }
                }
            }
        }
    }

    /// Y_i (n, out_i) = X (n, in) · W_iᵀ for weights that share their input (q, k and v; gate and
    /// up): as `multiply` on each, but X is quantized once and the rows of all are split across
    /// the workers in one dispatch.
    public static func multiply(
        _ weights: [PackedLinear], _ x: UnsafePointer<Float>, columns n: Int, into ys: [UnsafeMutablePointer<Float>],
        path: Int = KernelPath.current, activations: KernelActivations = .default
    ) {
        precondition(weights.count == ys.count && weights.allSatisfy { $0.inFeatures == weights[0].inFeatures })
        guard activations != .float, weights.count > 1 else {
            for (w, y) in zip(weights, ys) { w.multiply(x, columns: n, into: y, path: path, activations: activations) }
            return
        }
        if KernelPath.usesTiles(path) {
            multiplyTiles(weights, x, columns: n, into: ys, path: path, activations: activations)
            return
        }
        let starts = weights.reduce(into: [0]) { $0.append($0.last! + $1.outFeatures) }
        let orders = weights.reduce(0) { $0 | $1.activationOrders }
        withExtendedLifetime(weights) {
            withQuantizedActivations(
                x, columns: n, inFeatures: weights[0].inFeatures, orders: orders, as: activations
            ) { q in
                let io = UncheckedSendable((weights.map { $0.kernel.pointer }, ys, starts, q))
                parallelFor(starts.last!, minPerChunk: 64) { rows in
                    let (views, ys, starts, q) = io.value
                    for i in views.indices where starts[i] < rows.upperBound && rows.lowerBound < starts[i + 1] {
                        let lo = max(rows.lowerBound, starts[i]) - starts[i]
                        let hi = min(rows.upperBound, starts[i + 1]) - starts[i]
                        lowra_packed_gemm_q8(
                            Int32(path), views[i], q, ys[i], UInt64(starts[i + 1] - starts[i]), UInt64(lo), UInt64(hi))
                    }
                }
            }
        }
    }

    /// The tiled kernels' products for weights sharing an input (one weight, or q, k and v; gate and
    /// up): X quantized once per chunk of `KernelPath.tiledChunkColumns` columns, the tiles of all the
    /// weights split across the workers in one dispatch.
    private static func multiplyTiles(
        _ weights: [PackedLinear], _ x: UnsafePointer<Float>, columns n: Int, into ys: [UnsafeMutablePointer<Float>],
        path: Int, activations: KernelActivations
    ) {
        let tiles = weights.map { $0.kernel.tiles(for: path) }
        let starts = tiles.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        let views = tiles.map { $0.view }, outs = weights.map { $0.outFeatures }
        multiplyTilesInChunks(
            x, columns: n, inFeatures: weights[0].inFeatures, orders: 1, as: activations, tiles: starts.last!
        ) { q, c0, range in
            for i in views.indices where starts[i] < range.upperBound && range.lowerBound < starts[i + 1] {
                let lo = max(range.lowerBound, starts[i]) - starts[i]
                let hi = min(range.upperBound, starts[i + 1]) - starts[i]
                var v = views[i]
                lowra_tiled_gemm_q8(Int32(path), &v, q, ys[i] + c0 * outs[i], UInt64(outs[i]), UInt64(lo), UInt64(hi))
            }
        }
        withExtendedLifetime(tiles) {}
    }

    /// dX (n, in) = dY (n, out) · W, or += with `accumulate`, from the tiles (`lowra_tiled_gemm_t`:
    /// the rows' gradients quantized to int8 per group of 64 rows, exact integer sums against the
    /// levels), the columns split across the workers. Only where `KernelPath.usesTransposedTiles(path)`.
    public func multiplyTransposed(
        _ dy: UnsafePointer<Float>, columns n: Int, into dx: UnsafeMutablePointer<Float>, accumulate: Bool,
        path: Int = KernelPath.current
    ) {
        precondition(KernelPath.usesTransposedTiles(path), "no transposed tiled kernel on this path")
        let tiles = kernel.tiles(for: path)
        let io = UncheckedSendable((dy, dx))
        // Whole column groups of the kernel's pairs; a few per worker so an uneven split evens out.
        parallelFor((n + 15) / 16, minPerChunk: 1) { groups in
            var v = tiles.view
            let c0 = groups.lowerBound * 16, c1 = min(n, groups.upperBound * 16)
            let status = lowra_tiled_gemm_t(
                Int32(path), &v, io.value.0, UInt64(outFeatures), io.value.1, UInt64(inFeatures), accumulate ? 1 : 0,
                UInt64(c0), UInt64(c1))
            if status != 0 { fatalError("out of memory") }
        }
        withExtendedLifetime(tiles) {}
    }

    /// Builds the tiles of the decode products now (they are otherwise built on first use);
    /// returns their bytes.
    public func prepareTiles(path: Int = KernelPath.current) -> Int { kernel.tiles(for: path).bytes }

    /// About the bytes `prepareTiles` would take, without building them.
    public var tileBytesEstimate: Int {
        var tiles: UInt64 = 0
        var codeBytes: UInt64 = 0
        lowra_tile_sizes(kernel.pointer, &tiles, &codeBytes)
        let nb = (inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        return AlignedArrays.bytes(TiledWeight.sizes(tiles: Int(tiles), codeBytes: Int(codeBytes), blocks: nb))
    }

    /// The C kernels' view of this weight, valid inside `body`.
    @inline(__always)
    func withView<R>(_ body: (UnsafePointer<lowra_packed_view>) -> R) -> R {
        withExtendedLifetime(kernel) { body(kernel.pointer) }
    }

    /// The plain C reference (`lowra_dequantize_row_ref`) for row r.
    public func dequantizeRowReference(_ r: Int) -> [Float] {
        let nb = (inFeatures + AbsmaxStorage.block - 1) / AbsmaxStorage.block
        let scales = (0..<nb).map { absmax.value(r * nb + $0) }
        var y = [Float](repeating: 0, count: inFeatures)
        codes.withUnsafeBufferPointer { cb in
            levels.withUnsafeBufferPointer { lb in
                lowra_dequantize_row_ref(
                    cb.baseAddress! + rowOffsets[r], UInt32(bits[r]), UInt64(inFeatures),
                    scales, lb.baseAddress! + levelOffsets[r], &y)
            }
        }
        return y
    }
}

/// Everything the C kernels read of one packed weight, in memory that does not move, and the
/// `lowra_packed_view` pointing into it: built once per weight, so a product sets nothing up.
/// The codes stay where they are (their owner, often a mapped file, is kept alive); the small
/// arrays (precisions, offsets, levels, block scales, integer levels) are copied here.
final class PackedKernelView: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<lowra_packed_view>
    var view: lowra_packed_view { pointer.pointee }
    private var memory = [UnsafeMutableRawPointer]()
    private let codes: HeldArray<UInt8>
    private let builtTiles = [BuiltOnce<TiledWeight>(), BuiltOnce<TiledWeight>()]

    /// The weight's tiles in the layout `path`'s tiled kernel reads (`lowra_tile_pack`), built on
    /// first use and kept: the decode products' copy of the codes where the CPU runs a tiled kernel
    /// (`KernelPath.usesTiles`). A process that switches paths may hold both layouts.
    func tiles(for path: Int) -> TiledWeight {
        let layout = Int(lowra_tile_layout(Int32(path)))
        return builtTiles[layout].get { TiledWeight(pointer, layout: layout) }
    }

    init(
        out: Int, in inF: Int, bits: [UInt8], codes: HeldArray<UInt8>, rowOffsets: [Int], levels: [Float],
        levelOffsets: [Int], absmax: AbsmaxStorage
    ) {
        self.codes = codes
        pointer = .allocate(capacity: 1)
        func copy<T>(_ a: [T]) -> UnsafeMutablePointer<T>? {
            guard !a.isEmpty else { return nil }
            let p = UnsafeMutablePointer<T>.allocate(capacity: a.count)
            a.withUnsafeBufferPointer { p.initialize(from: $0.baseAddress!, count: a.count) }
            memory.append(UnsafeMutableRawPointer(p))
            return p
        }
        func copy<T>(_ a: HeldArray<T>) -> UnsafeMutablePointer<T>? { copy(Array(a)) }
        var u = [UInt8](repeating: 0, count: 16 * out)
        var mins = [Float](repeating: 0, count: out)
        var steps = [Float](repeating: 0, count: out)
        levels.withUnsafeBufferPointer { lb in
            u.withUnsafeMutableBufferPointer { ub in
                for r in 0..<out {
                    lowra_integer_levels_row(
                        lb.baseAddress! + levelOffsets[r], UInt32(1 << Int(bits[r])), ub.baseAddress! + 16 * r,
                        &mins[r], &steps[r])
                }
            }
        }
        var v = lowra_packed_view(
            out: UInt64(out), in: UInt64(inF), bits: copy(bits), codes: codes.base,
            row_offsets: copy(rowOffsets.map(Int64.init)), levels: copy(levels),
            level_offsets: copy(levelOffsets.map(Int64.init)), absmax: nil, absmax_codes: nil, absmax_scales: nil,
            levels_u8: copy(u), level_min: copy(mins), level_step: copy(steps), order: nil)
        // Mixed widths: each stretch of 64 rows visited grouped by width (a stable sort), so the
        // kernels' width branch predicts; stretches keep every part of a split the same mix.
        if Set(bits).count > 1 {
            let order = stride(from: 0, to: out, by: 64).flatMap { start in
                (start..<min(out, start + 64)).sorted { (bits[$0], $0) < (bits[$1], $1) }.map(Int64.init)
            }
            v.order = UnsafePointer(copy(order))
        }
        switch absmax {
        case .plain(let a): v.absmax = UnsafePointer(copy(a))
        case .doubleQuant(let c, let s):
            v.absmax_codes = UnsafePointer(copy(c))
            v.absmax_scales = UnsafePointer(copy(s))
        }
        pointer.initialize(to: v)
    }

    deinit {
        for m in memory { m.deallocate() }
        pointer.deallocate()
    }
}

/// A packed weight's rows regrouped into tiles of 16 rows of one width (`lowra_tiled_view`), in
/// memory of its own: what the tiled kernel reads.
final class TiledWeight: @unchecked Sendable {
    let view: lowra_tiled_view
    let count: Int
    private let memory: AlignedArrays
    var bytes: Int { memory.bytes }

    init(_ packed: UnsafePointer<lowra_packed_view>, layout: Int) {
        var tiles: UInt64 = 0
        var codeBytes: UInt64 = 0
        lowra_tile_sizes(packed, &tiles, &codeBytes)
        let nb = Int(lowra_blocks_per_row(packed.pointee.in))
        let m = AlignedArrays(Self.sizes(tiles: Int(tiles), codeBytes: Int(codeBytes), blocks: nb))
        var buffers = lowra_tiled_buffers(
            bits: m.array(7, as: UInt8.self), offsets: m.array(6, as: UInt64.self), codes: m.array(0, as: UInt8.self),
            tables: m.array(1, as: UInt8.self), scales: m.array(2, as: Float.self),
            level_min: m.array(3, as: Float.self), level_step: m.array(4, as: Float.self),
            rows: m.array(5, as: Int32.self))
        let packedOK = lowra_tile_pack(packed, Int32(layout), &buffers) == 0
        precondition(packedOK, "out of memory while tiling a packed weight")
        (memory, count) = (m, Int(tiles))
        view = lowra_tiled_view(
            out: packed.pointee.out, in: packed.pointee.in, nb: UInt64(nb), tiles: tiles, layout: Int32(layout),
            bits: buffers.bits,
            offsets: buffers.offsets, codes: buffers.codes, tables: buffers.tables, scales: buffers.scales,
            level_min: buffers.level_min, level_step: buffers.level_step, rows: buffers.rows)
    }

    /// The arrays' sizes in bytes: codes, tables, scales, min, step, rows, offsets, widths.
    static func sizes(tiles t: Int, codeBytes: Int, blocks nb: Int) -> [Int] {
        [codeBytes, 256 * t, 64 * t * nb, 64 * t, 64 * t, 64 * t, 8 * t, t]
    }
}
