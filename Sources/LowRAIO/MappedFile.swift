import CLowRAPacked
import Foundation
import LowRATensor

/// A read-only memory map of a whole file. Pages are read from disk when first touched and may
/// be dropped again by the kernel under memory pressure, so a mapped model costs resident memory
/// only for what is in use. Pointers into `bytes` stay valid while this object lives.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer
    private let mapped: Bool

    public init(path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LowRAError(.io, "\(path): no such file")
        }
        guard !isDir.boolValue else { throw LowRAError(.io, "\(path): is a directory, expected a file") }
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw LowRAError(.io, "\(path): cannot open (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw LowRAError(.io, "\(path): cannot stat (\(String(cString: strerror(errno))))")
        }
        let size = Int(st.st_size)
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            mapped = false
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw LowRAError(.io, "\(path): cannot map (\(String(cString: strerror(errno))))")
        }
        bytes = UnsafeRawBufferPointer(start: p, count: size)
        mapped = true
    }

    deinit {
        if mapped, let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    public var count: Int { bytes.count }

    /// Drops every page of the file from the process's resident memory (they stay in the page
    /// cache; what is read again maps back in): after copying what is needed out of it.
    public func releaseAll() {
        if mapped, let base = bytes.baseAddress {
            madvise(UnsafeMutableRawPointer(mutating: base), bytes.count, MADV_DONTNEED)
        }
    }

    /// Drops the whole pages inside [p, p + count) from resident memory, as `releaseAll` does, if
    /// they lie in this file's mapping (nothing otherwise: memory of our own must stay).
    public func release(_ p: UnsafeRawPointer, count: Int) {
        guard mapped, let base = bytes.baseAddress, count > 0, p >= base, p + count <= base + bytes.count else {
            return
        }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = (Int(bitPattern: p) + page - 1) / page * page
        let hi = (Int(bitPattern: p) + count) / page * page
        if hi > lo { madvise(UnsafeMutableRawPointer(bitPattern: lo), hi - lo, MADV_DONTNEED) }
    }
}

/// A 2-D tensor (rows, cols) as stored in a mapped file — F32, F16, BF16 or ggml blocks — converted
/// to fp32 a range of rows at a time. A row of a block type is a whole number of blocks (checked
/// when the file is opened), so rows convert independently.
public struct StoredMatrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    public let type: GGMLType
    public let file: MappedFile
    /// Byte offset of row 0 in the file.
    public let offset: Int
    /// Q8_0 rows regrouped into tiles for the decode products, built on first use and shared by
    /// the copies of this matrix.
    private let builtTiles = [BuiltOnce<Q8_0Tiles>(), BuiltOnce<Q8_0Tiles>()]
    /// The tiles in the layout `path`'s kernel reads (`lowra_tile_layout`).
    func tiles(for path: Int) -> Q8_0Tiles {
        let layout = Int(lowra_tile_layout(Int32(path)))
        return builtTiles[layout].get { Q8_0Tiles(self, layout: layout) }
    }

    public init(rows: Int, cols: Int, type: GGMLType, file: MappedFile, offset: Int) throws {
        guard let (qk, _) = type.blockLayout else {
            throw LowRAError(.unsupported, "\(file.path): type \(type.name) cannot be read")
        }
        guard rows >= 0, cols > 0, cols % qk == 0 else {
            throw LowRAError.malformed(
                file.path, "a \(rows) x \(cols) matrix of \(type.name) does not split into rows of whole blocks")
        }
        self.rows = rows
        self.cols = cols
        self.type = type
        self.file = file
        self.offset = offset
        guard offset >= 0, offset + rows * rowBytes <= file.count else {
            throw LowRAError.malformed(
                file.path, "truncated: a tensor needs bytes up to \(offset + rows * rowBytes), file has \(file.count)")
        }
    }

    public var rowBytes: Int {
        let (qk, bytes) = type.blockLayout!
        return cols / qk * bytes
    }

    public var byteCount: Int { rows * rowBytes }

    /// The stored bytes of rows `range`.
    public func rawRows(_ range: Range<Int>) -> UnsafeRawPointer {
        file.bytes.baseAddress! + offset + range.lowerBound * rowBytes
    }

    /// Rows `range` as fp32 into dst ((range.count, cols)).
    public func dequantizeRows(_ range: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        dequantizeGGML(type, rawRows(range), dst, count: range.count * cols)
    }

    /// `dequantizeRows` on the calling thread, by the C kernels for the types they read (a panel
    /// for sgemm, while the workers are parked); the same values.
    public func dequantizePanel(
        _ range: Range<Int>, into dst: UnsafeMutablePointer<Float>, path: Int = KernelPath.current
    ) {
        guard multipliesDirectly else { return dequantizeRows(range, into: dst) }
        lowra_stored_dequantize(
            Int32(path), type.rawValue, rawRows(0..<rows).assumingMemoryBound(to: UInt8.self), UInt64(rowBytes),
            UInt64(cols), UInt64(range.lowerBound), UInt64(range.upperBound), dst)
    }

    /// Whether `multiply` reads this encoding directly (F32, F16, BF16, Q4_0, Q4_1, Q8_0).
    public var multipliesDirectly: Bool { lowra_stored_gemm_supports(type.rawValue) != 0 }

    /// Y (n, rows) = X (n, cols) · Wᵀ straight from the stored encoding (decode, small batches),
    /// rows split across the workers; requires `multipliesDirectly`.
    /// Q8_0 rows with integer `activations` (.int16, .int8) use the integer kernels: the tiled one
    /// (`lowra_q8_0_tiled_gemm_q8`) where `KernelPath.usesTiles`, else `lowra_q8_0_gemm_q8`.
    public func multiply(
        _ x: UnsafePointer<Float>, columns n: Int, into y: UnsafeMutablePointer<Float>, path: Int = KernelPath.current,
        activations: KernelActivations = .default
    ) {
        precondition(multipliesDirectly, "\(type.name) rows are converted, not multiplied directly")
        let base = rawRows(0..<rows).assumingMemoryBound(to: UInt8.self)
        if type == .q8_0 && activations != .float && KernelPath.usesTiles(path) {
            let t = tiles(for: path)
            multiplyTilesInChunks(x, columns: n, inFeatures: cols, as: activations, tiles: t.count) { q, c0, range in
                var v = t.view
                lowra_q8_0_tiled_gemm_q8(
                    Int32(path), &v, q, y + c0 * rows, UInt64(rows), UInt64(range.lowerBound),
                    UInt64(range.upperBound))
            }
            withExtendedLifetime(t) {}
            return
        }
        if type == .q8_0 && activations != .float {
            withQuantizedActivations(x, columns: n, inFeatures: cols, as: activations) { q in
                let io = UncheckedSendable((base, q, y))
                parallelFor(rows, minPerChunk: 64) { range in
                    lowra_q8_0_gemm_q8(
                        Int32(path), io.value.0, UInt64(rowBytes), io.value.1, io.value.2, UInt64(rows),
                        UInt64(range.lowerBound), UInt64(range.upperBound))
                }
            }
            return
        }
        let io = UncheckedSendable((base, x, y))
        parallelFor(rows, minPerChunk: 64) { range in
            lowra_stored_gemm(
                Int32(path), type.rawValue, io.value.0, UInt64(rowBytes), UInt64(cols), io.value.1, UInt64(n),
                io.value.2, UInt64(rows), UInt64(range.lowerBound), UInt64(range.upperBound))
        }
    }

    /// Builds the tiles of a Q8_0 matrix's decode products now (otherwise built on first use);
    /// returns their bytes (0 for other types).
    public func prepareTiles(path: Int = KernelPath.current) -> Int { type == .q8_0 ? tiles(for: path).bytes : 0 }

    /// The bytes `prepareTiles` builds, without building them.
    public var tileBytesEstimate: Int {
        type == .q8_0 ? AlignedArrays.bytes(Q8_0Tiles.sizes(rows: rows, cols: cols)) : 0
    }

    /// Drops this tensor's pages from the process's resident memory (they stay in the page cache,
    /// and a later read maps them back): for one pass over a model larger than memory.
    public func release() {
        guard byteCount > 0, let base = file.bytes.baseAddress else { return }
        file.release(base + offset, count: byteCount)
    }

    /// The whole matrix as fp32.
    public func floats() -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        out.withUnsafeMutableBufferPointer { dequantizeRows(0..<rows, into: $0.baseAddress!) }
        return out
    }
}

/// A Q8_0 matrix's tiles (`lowra_q8_0_tiled_view`) in memory of their own.
final class Q8_0Tiles: @unchecked Sendable {
    let view: lowra_q8_0_tiled_view
    let count: Int
    private let memory: AlignedArrays
    var bytes: Int { memory.bytes }

    /// The arrays' sizes in bytes: codes, scales, rows.
    static func sizes(rows: Int, cols: Int) -> [Int] {
        let tiles = (rows + 15) / 16
        return [512 * tiles * (cols / 32), 64 * tiles * (cols / 32), 64 * tiles]
    }

    init(_ m: StoredMatrix, layout: Int) {
        let memory = AlignedArrays(Self.sizes(rows: m.rows, cols: m.cols))
        var b = lowra_q8_0_tiled_buffers(
            codes: memory.array(0, as: UInt8.self), scales: memory.array(1, as: Float.self),
            rows: memory.array(2, as: Int32.self))
        lowra_q8_0_tile_pack(
            m.rawRows(0..<m.rows).assumingMemoryBound(to: UInt8.self), UInt64(m.rowBytes), UInt64(m.rows),
            UInt64(m.cols), Int32(layout), &b)
        (self.memory, count) = (memory, (m.rows + 15) / 16)
        view = lowra_q8_0_tiled_view(
            out: UInt64(m.rows), in: UInt64(m.cols), tiles: UInt64(count), layout: Int32(layout), codes: b.codes,
            scales: b.scales, rows: b.rows)
    }
}
