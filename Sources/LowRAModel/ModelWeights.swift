import Foundation
import LowRAIO
import LowRAQuant
import LowRATensor

/// A linear layer y = x W^T (+ b), W (out, in) dense fp32, packed low-bit, or stored in its
/// file's dtype behind a memory map (F16/BF16/ggml blocks). Packed and stored weights are
/// converted to fp32 only into scratch while they are multiplied, never kept expanded.
public struct Linear: Sendable {
    public enum Storage: Sendable {
        case dense([Float])  // (out, in)
        case packed(PackedLinear)
        case stored(StoredMatrix)
    }

    public let outFeatures: Int
    public let inFeatures: Int
    public var storage: Storage
    public var bias: [Float]?  // (out)

    public init(outFeatures: Int, inFeatures: Int, weight: [Float], bias: [Float]? = nil) {
        precondition(weight.count == outFeatures * inFeatures)
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        storage = .dense(weight)
        self.bias = bias
    }

    public init(packed: PackedLinear, bias: [Float]? = nil) {
        outFeatures = packed.outFeatures
        inFeatures = packed.inFeatures
        storage = .packed(packed)
        self.bias = bias
    }

    public init(stored: StoredMatrix, bias: [Float]? = nil) {
        outFeatures = stored.rows
        inFeatures = stored.cols
        storage = .stored(stored)
        self.bias = bias
    }

    /// The weight in fp32 (dequantized when packed or stored).
    public var weight: [Float] {
        switch storage {
        case .dense(let w): w
        case .packed(let p): p.dequantized()
        case .stored(let m): m.floats()
        }
    }

    /// The file encoding of a stored weight (nil for one held in memory).
    public var storedType: GGMLType? { if case .stored(let m) = storage { m.type } else { nil } }

    /// Drops a stored weight's pages from resident memory (see `StoredMatrix.release`).
    public func releaseStored() {
        if case .stored(let m) = storage { m.release() }
    }

    /// Row r of W in fp32 into y (in): an embedding lookup.
    public func row(_ r: Int, into y: UnsafeMutablePointer<Float>) {
        switch storage {
        case .dense(let w):
            w.withUnsafeBufferPointer { y.update(from: $0.baseAddress! + r * inFeatures, count: inFeatures) }
        case .packed(let p): p.dequantizeRow(r, into: y)
        case .stored(let m): m.dequantizeRows(r..<(r + 1), into: y)
        }
    }

    public var packed: PackedLinear? { if case .packed(let p) = storage { p } else { nil } }

    public var parameterCount: Int { outFeatures * inFeatures + (bias?.count ?? 0) }

    /// Bytes of this layer's weight as held: fp32, packed, or as stored in its file.
    public var weightBytes: Int {
        switch storage {
        case .dense(let w): 4 * w.count
        case .packed(let p): p.storedBytes
        case .stored(let m): m.byteCount
        }
    }

    /// Floats of scratch `forward` needs for `rows` rows (`backwardInput`: `rows: .max`): none for
    /// dense weights or for the few rows the kernels multiply straight from a packed or stored
    /// encoding, a cache-sized panel of rows of a packed one, a chunk of rows of a stored one.
    public func scratchFloats(rows: Int) -> Int {
        if multipliesDirectly(rows: rows) { return 0 }
        switch storage {
        case .dense: return 0
        case .packed: return min(outFeatures, Self.panelRows(inFeatures: inFeatures)) * inFeatures
        case .stored: return min(outFeatures, Self.panelRows(inFeatures: inFeatures)) * inFeatures
        }
    }

    /// Whether `forward` multiplies `rows` rows straight from the weight's packed or stored encoding
    /// (the kernels of `lowra_kernels.h`) rather than converting it into scratch first.
    /// More than `KernelPath.batchColumns` rows only where tiled kernels take them (packed, Q8_0).
    func multipliesDirectly(rows: Int, upTo limit: Int = KernelPath.columns) -> Bool {
        guard rows <= limit else { return false }
        switch storage {
        case .dense: return false
        case .packed: return true
        case .stored(let m): return m.multipliesDirectly && (rows <= KernelPath.batchColumns || m.type == .q8_0)
        }
    }

    /// Rows of a packed or stored weight converted to fp32 per sgemm: about 1 MB, so the panel is
    /// still in the core's cache when sgemm reads it; a multiple of 16, at least 64.
    public static func panelRows(inFeatures: Int) -> Int { max(64, (1 << 18) / max(1, inFeatures) / 16 * 16) }

    /// The bytes of the decode tiles `prepareTiles` builds (packed weights, Q8_0 matrices; else 0).
    var tileBytesEstimate: Int {
        switch storage {
        case .packed(let p): p.tileBytesEstimate
        case .stored(let m): m.tileBytesEstimate
        case .dense: 0
        }
    }

    /// Builds the decode tiles; returns their bytes. Packing reads every code and decode then reads
    /// only the tiles, so the mapped file's pages leave resident memory (a longer prompt's panels
    /// map them back from the page cache).
    func prepareTiles(path: Int) -> Int {
        switch storage {
        case .packed(let p):
            let bytes = p.prepareTiles(path: path)
            if let file = p.codes.owner as? MappedFile, let base = p.codes.base {
                file.release(UnsafeRawPointer(base), count: p.codes.count)
            }
            return bytes
        case .stored(let m):
            let bytes = m.prepareTiles(path: path)
            if bytes > 0 { m.release() }
            return bytes
        case .dense: return 0
        }
    }

    /// y (T, out) = x (T, in) · W^T + b, plus s · B A x when LoRA factors are given (xa (T, r)
    /// keeps x Aᵀ for backward). A few rows are multiplied straight from a packed or stored
    /// encoding (with `activations` int8 or fp32); more rows convert W a panel of rows at a time
    /// into `scratch` (`forEachPanel`). `directRows`: the most rows multiplied straight (a batched
    /// decode step raises it to `KernelPath.batchColumns`).
    public func forward(
        _ x: UnsafePointer<Float>, rows t: Int, into y: UnsafeMutablePointer<Float>,
        scratch: UnsafeMutablePointer<Float>? = nil, lora: LoRAFactors? = nil, xa: UnsafeMutablePointer<Float>? = nil,
        activations: KernelActivations = .default, directRows: Int = KernelPath.columns
    ) {
        switch storage {
        case .dense(let w):
            w.withUnsafeBufferPointer {
                if t == 1 {
                    matvec($0.baseAddress!, x, y, n: outFeatures, k: inFeatures)
                } else {
                    matmulTransB(x, $0.baseAddress!, y, m: t, n: outFeatures, k: inFeatures)
                }
            }
        case .packed(let p) where multipliesDirectly(rows: t, upTo: directRows):
            p.multiply(x, columns: t, into: y, activations: activations)  // straight from the codes
        case .stored(let m) where multipliesDirectly(rows: t, upTo: directRows):
            m.multiply(x, columns: t, into: y, activations: activations)  // straight from the file's encoding
        case .packed, .stored:
            if t >= Self.parallelPanelRows && workerCount > 1 {
                // Batches (prefill, eval, training): each worker converts its own panels and
                // multiplies them with single-threaded sgemm, so conversion runs on every core too.
                let panels = Self.panels(outFeatures: outFeatures, inFeatures: inFeatures)
                let io = UncheckedSendable((x, y))
                withBLASThreads(1) {
                    parallelTasks(panels.count) { i in
                        let rows = panels[i]
                        let w = UnsafeMutablePointer<Float>.allocate(capacity: rows.count * inFeatures)
                        defer { w.deallocate() }
                        convertPanel(rows, into: w)
                        matmulTransB(
                            io.value.0, w, io.value.1 + rows.lowerBound, m: t, n: rows.count, k: inFeatures,
                            ldy: outFeatures)
                    }
                }
            } else {
                // A panel of rows at a time: convert, then y[:, panel] = x · panelᵀ.
                forEachPanel(scratch: scratch) { r0, n, w in
                    if t == 1 {
                        matvec(w, x, y + r0, n: n, k: inFeatures)
                    } else {
                        matmulTransB(x, w, y + r0, m: t, n: n, k: inFeatures, ldy: outFeatures)
                    }
                }
            }
        }
        addBiasAndLoRA(x, rows: t, into: y, lora: lora, xa: xa)
    }

    /// The products of several layers that share their input x (q, k and v; gate and up), each
    /// as `forward` computes it; packed weights multiplied straight from their codes take x
    /// quantized once, in one dispatch (`PackedLinear.multiply(_:_:columns:into:)`).
    public static func forward(
        _ layers: [Linear], _ x: UnsafePointer<Float>, rows t: Int, into ys: [UnsafeMutablePointer<Float>],
        scratch: UnsafeMutablePointer<Float>? = nil, lora: [LoRAFactors?], xa: [UnsafeMutablePointer<Float>?],
        activations: KernelActivations = .default, directRows: Int = KernelPath.columns
    ) {
        let packed = layers.compactMap { $0.multipliesDirectly(rows: t, upTo: directRows) ? $0.packed : nil }
        guard packed.count == layers.count, layers.count > 1, activations != .float else {
            for i in layers.indices {
                layers[i].forward(
                    x, rows: t, into: ys[i], scratch: scratch, lora: lora[i], xa: xa[i], activations: activations,
                    directRows: directRows)
            }
            return
        }
        PackedLinear.multiply(packed, x, columns: t, into: ys, activations: activations)
        for i in layers.indices { layers[i].addBiasAndLoRA(x, rows: t, into: ys[i], lora: lora[i], xa: xa[i]) }
    }

    private func addBiasAndLoRA(
        _ x: UnsafePointer<Float>, rows t: Int, into y: UnsafeMutablePointer<Float>, lora: LoRAFactors?,
        xa: UnsafeMutablePointer<Float>?
    ) {
        if let bias {
            for r in 0..<t {
                let yr = y + r * outFeatures
                for i in 0..<outFeatures { yr[i] += bias[i] }
            }
        }
        if let lora {
            let own = xa == nil ? UnsafeMutablePointer<Float>.allocate(capacity: t * lora.rank) : nil
            defer { own?.deallocate() }
            loraForward(
                y, xa ?? own!, x, lora.a, lora.b, rows: t, in: inFeatures, out: outFeatures, rank: lora.rank,
                scale: lora.scale)
        }
    }
}

extension Linear {
    /// dx (T, in) = dy (T, out) · W, or += with `accumulate`: the input gradient of y = x Wᵀ. W
    /// is converted as in `forward`, a panel (packed) or chunk (stored) of rows at a time; with
    /// `integer`, a packed W on a path with the transposed tiled kernel is multiplied from its tiles
    /// (`PackedLinear.multiplyTransposed`: int8 gradients, exact integer sums).
    public func backwardInput(
        _ dy: UnsafePointer<Float>, rows t: Int, into dx: UnsafeMutablePointer<Float>, accumulate: Bool,
        scratch: UnsafeMutablePointer<Float>? = nil, integer: Bool = false
    ) {
        var beta: Float = accumulate ? 1 : 0
        switch storage {
        case .packed(let p) where integer && KernelPath.usesTransposedTiles(KernelPath.current):
            p.multiplyTransposed(dy, columns: t, into: dx, accumulate: accumulate)
        case .dense(let w):
            w.withUnsafeBufferPointer {
                matmul(dy, $0.baseAddress!, dx, m: t, n: inFeatures, k: outFeatures, beta: beta)
            }
        case .packed, .stored:
            forEachPanel(scratch: scratch) { r0, n, w in
                matmul(dy + r0, w, dx, m: t, n: inFeatures, k: n, beta: beta, lda: outFeatures)
                beta = 1
            }
        }
    }

    /// Rows from which `forward` splits a packed or stored weight's panels across the workers.
    static let parallelPanelRows = 32

    /// Panels of about `panelRows` rows, at least two per worker and a multiple of their number,
    /// of near-equal size (multiples of 16 rows): the tasks of a parallel batch product.
    static func panels(outFeatures: Int, inFeatures: Int) -> [Range<Int>] {
        let byCache = (outFeatures + panelRows(inFeatures: inFeatures) - 1) / panelRows(inFeatures: inFeatures)
        let count = (max(byCache, 2 * workerCount) + workerCount - 1) / workerCount * workerCount
        let size = max(16, (outFeatures + count - 1) / count + 15) / 16 * 16
        return stride(from: 0, to: outFeatures, by: size).map { $0..<min(outFeatures, $0 + size) }
    }

    /// Rows `range` of a packed or stored W in fp32 into dst, on the calling thread.
    func convertPanel(_ range: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        switch storage {
        case .dense: preconditionFailure("dense weights are multiplied whole")
        case .packed(let p): p.dequantizePanel(range, into: dst)
        case .stored(let m): m.dequantizePanel(range, into: dst)
        }
    }

    /// body(r0, n, panel) for consecutive panels of `panelRows` rows of a packed or stored W,
    /// each converted to fp32 into `scratch` (`scratchFloats(rows: .max)` floats; allocated here
    /// when nil) on this thread: the workers are parked while sgemm runs between panels, and
    /// waking them costs more than converting a panel.
    func forEachPanel(
        scratch: UnsafeMutablePointer<Float>?, _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void
    ) {
        let own = scratch == nil ? UnsafeMutablePointer<Float>.allocate(capacity: scratchFloats(rows: .max)) : nil
        defer { own?.deallocate() }
        let buf = scratch ?? own!
        let panel = Self.panelRows(inFeatures: inFeatures)
        for r0 in stride(from: 0, to: outFeatures, by: panel) {
            let n = min(panel, outFeatures - r0)
            convertPanel(r0..<(r0 + n), into: buf)
            body(r0, n, buf)
        }
    }
}

/// The LoRA factors of one linear layer as the forward reads them: A (r, in), B (out, r) and
/// scale = alpha / r.
public struct LoRAFactors {
    public let a: UnsafePointer<Float>
    public let b: UnsafePointer<Float>
    public let rank: Int
    public let scale: Float

    public init(a: UnsafePointer<Float>, b: UnsafePointer<Float>, rank: Int, scale: Float) {
        self.a = a
        self.b = b
        self.rank = rank
        self.scale = scale
    }
}

/// One transformer block's weights: two RMSNorm gains and the linear layers, indexed by kind.
public struct BlockWeights: Sendable {
    public var attnNorm: [Float]  // (C)
    public var ffnNorm: [Float]  // (C)
    /// One per `LinearKind`, in its order: q (H*D, C), k and v (KV*D, C), o (C, H*D),
    /// gate and up (F, C), down (C, F).
    public var linears: [Linear]

    public init(attnNorm: [Float], ffnNorm: [Float], linears: [Linear]) {
        precondition(linears.count == LinearKind.allCases.count)
        self.attnNorm = attnNorm
        self.ffnNorm = ffnNorm
        self.linears = linears
    }

    /// Drops the pages of its stored weights from resident memory (`Linear.releaseStored`): after
    /// its use in one pass over a model larger than memory.
    public func releaseStored() {
        for l in linears { l.releaseStored() }
    }

    public subscript(kind: LinearKind) -> Linear {
        get { linears[kind.rawValue] }
        set { linears[kind.rawValue] = newValue }
    }
}

/// All weights of a Llama-family model: linear layers dense, packed or stored; norms and biases fp32.
public struct ModelWeights: Sendable {
    /// (V, C): looked up a row at a time, and the head when tied.
    public var embedding: Linear
    public var blocks: [BlockWeights]
    public var finalNorm: [Float]  // (C)
    public var head: Linear?  // (V, C); nil when tied to the embedding

    public init(embedding: Linear, blocks: [BlockWeights], finalNorm: [Float], head: Linear?) {
        (self.embedding, self.blocks, self.finalNorm, self.head) = (embedding, blocks, finalNorm, head)
    }

    /// Bytes of weights resident in memory (packed layers at their packed size).
    public var weightBytes: Int {
        embedding.weightBytes + 4 * finalNorm.count + (head?.weightBytes ?? 0)
            + blocks.reduce(0) { acc, b in
                acc + 4 * (b.attnNorm.count + b.ffnNorm.count)
                    + b.linears.reduce(0) { $0 + $1.weightBytes + 4 * ($1.bias?.count ?? 0) }
            }
    }

    public var parameterCount: Int {
        embedding.parameterCount + finalNorm.count + (head?.parameterCount ?? 0)
            + blocks.reduce(0) { acc, b in
                acc + b.attnNorm.count + b.ffnNorm.count + b.linears.reduce(0) { $0 + $1.parameterCount }
            }
    }

    /// Floats of the largest linear weight: the scratch a packed or stored layer is converted into.
    public var largestLinear: Int {
        blocks.lazy.flatMap { $0.linears }.map { $0.outFeatures * $0.inFeatures }.max() ?? 0
    }

    /// Floats of scratch a forward over `rows` rows needs: the largest of every layer's and the head's.
    public func scratchFloats(rows: Int) -> Int {
        max(
            outputHead.scratchFloats(rows: rows),
            blocks.lazy.flatMap { $0.linears }.map { $0.scratchFloats(rows: rows) }.max() ?? 0)
    }

    /// The output head: its own weight, or the embedding when tied.
    public var outputHead: Linear { head ?? embedding }

    /// The weights a decode step multiplies: every block's linear layers and the head.
    private var decodeLinears: [Linear] { blocks.flatMap { $0.linears } + [outputHead] }

    /// The bytes `prepareDecode` builds, without building them.
    public var decodeTileBytesEstimate: Int { decodeLinears.reduce(0) { $0 + $1.tileBytesEstimate } }

    /// Builds now, on the workers, the tiles the decode products read (`KernelPath.usesTiles`:
    /// packed layers and a Q8_0 head), instead of at each weight's first product; returns the
    /// bytes they hold (0 where the CPU runs the row kernels). For whatever decodes: the server,
    /// `generate`, the benchmarks.
    /// Tiles that would take more than a quarter of the machine's memory are not built: the
    /// process turns to the row kernels instead (a model mapped from a file larger than memory
    /// must not gain an in-memory copy).
    @discardableResult
    public func prepareDecode(path: Int = KernelPath.current) -> Int {
        guard KernelPath.usesTiles(path) else { return 0 }
        guard decodeTileBytesEstimate <= Int(ProcessInfo.processInfo.physicalMemory / 4) else {
            KernelPath.disableTiles()
            return 0
        }
        let all = decodeLinears
        let bytes = UncheckedSendable(UnsafeMutablePointer<Int>.allocate(capacity: all.count))
        defer { bytes.value.deallocate() }
        parallelTasks(all.count) { bytes.value[$0] = all[$0].prepareTiles(path: path) }
        return (0..<all.count).reduce(0) { $0 + bytes.value[$1] }
    }
}

/// Where tensors come from: a GGUF file or a set of safetensors files, under their own names.
public protocol TensorSource {
    var description: String { get }
    func shape(_ name: String) -> [Int]?
    func floats(_ name: String) throws -> [Float]
    /// The tensor as stored, behind the file's memory map.
    func matrix(_ name: String) throws -> StoredMatrix
}

extension GGUFFile: TensorSource {
    public var description: String { (path as NSString).lastPathComponent }
    public func shape(_ name: String) -> [Int]? { tensorInfo(name)?.shape }
}

/// Several safetensors shards read as one.
public struct SafeTensorsSet: TensorSource {
    public let files: [SafeTensorsFile]
    public let description: String

    public init(files: [SafeTensorsFile], description: String) {
        self.files = files
        self.description = description
    }

    public func shape(_ name: String) -> [Int]? {
        files.lazy.compactMap { $0.tensors[name]?.shape }.first
    }

    public func floats(_ name: String) throws -> [Float] { try file(name).floats(name) }

    public func matrix(_ name: String) throws -> StoredMatrix { try file(name).matrix(name) }

    private func file(_ name: String) throws -> SafeTensorsFile {
        guard let f = files.first(where: { $0.tensors[name] != nil }) else {
            throw LowRAError(.missingTensor, "\(description): tensor \(name) not found")
        }
        return f
    }
}

extension ModelWeights {
    /// Opens and shape-checks every tensor the configuration calls for, by the architecture's
    /// names (`WeightNaming`) and shapes (`LinearKind.shape`). Matrices (embedding, linear layers,
    /// head) stay in their stored dtype behind the file's memory map; norms and biases are read
    /// as fp32.
    public static func load(
        from source: TensorSource, naming: WeightNaming, config c: ModelConfig,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> ModelWeights {
        func checked(_ t: ModelTensor, _ shape: [Int]) throws -> String {
            let name = naming.name(t)
            guard let actual = source.shape(name) else {
                throw LowRAError(.missingTensor, "\(source.description): tensor \(name) not found")
            }
            guard actual == shape else {
                throw LowRAError(
                    .shapeMismatch,
                    "\(source.description): tensor \(name) has shape \(actual), expected \(shape) from the model config"
                )
            }
            return name
        }
        func tensor(_ t: ModelTensor, _ shape: [Int]) throws -> [Float] { try source.floats(try checked(t, shape)) }
        func matrix(_ t: ModelTensor, _ shape: [Int]) throws -> Linear {
            Linear(stored: try source.matrix(try checked(t, shape)))
        }
        let embedding = try matrix(.embedding, [c.vocabSize, c.hiddenSize])
        var blocks = [BlockWeights]()
        for l in 0..<c.numLayers {
            progress?(l, c.numLayers)
            let linears = try LinearKind.allCases.map { kind in
                let (out, inF) = kind.shape(c)
                var linear = try matrix(.weight(layer: l, kind), [out, inF])
                linear.bias = kind.hasBias(c) ? try tensor(.bias(layer: l, kind), [out]) : nil
                return linear
            }
            blocks.append(
                BlockWeights(
                    attnNorm: try tensor(.attentionNorm(layer: l), [c.hiddenSize]),
                    ffnNorm: try tensor(.mlpNorm(layer: l), [c.hiddenSize]), linears: linears))
        }
        progress?(c.numLayers, c.numLayers)
        let finalNorm = try tensor(.finalNorm, [c.hiddenSize])
        let head: Linear? = c.tieWordEmbeddings ? nil : try matrix(.head, [c.vocabSize, c.hiddenSize])
        return ModelWeights(embedding: embedding, blocks: blocks, finalNorm: finalNorm, head: head)
    }
}
