import CLowRAPacked
import Foundation
import LowRATensor

// One decode step for many independent sequences at once (continuous batching, Punica/S-LoRA
// style): each row is one sequence's next token with its own KV cache, position and adapter. The
// base's products run once for all rows; each adapter's LoRA product runs over the rows that use
// it. Batch-invariant: a row's logits are bit for bit those of decoding that sequence alone
// (`LanguageModel.forward` with one token), whichever other rows share the step — the kernels take
// at most `KernelPath.batchColumns` columns per call and compute each column the same way in any
// company, and whatever has no such kernel (fp32 weights) runs row by row.

/// One sequence's part of a batched decode step.
public struct DecodeRow {
    public var token: Int
    public let cache: KVCache
    public let adapter: LoRAAdapter?

    public init(token: Int, cache: KVCache, adapter: LoRAAdapter?) {
        self.token = token
        self.cache = cache
        self.adapter = adapter
    }
}

/// Runs decode steps of up to `maxRows` sequences over one model, with buffers allocated once.
public final class BatchDecoder: @unchecked Sendable {
    public let model: LanguageModel
    public let maxRows: Int
    /// Rows one kernel call takes (`KernelPath.batchColumns`).
    private let width = KernelPath.batchColumns
    private let x, xn, q, k, v, att, proj, gate, up, act: UnsafeMutablePointer<Float>
    private var allocations = [UnsafeMutablePointer<Float>]()

    public init(model: LanguageModel, maxRows: Int) {
        precondition(maxRows >= 1)
        self.model = model
        self.maxRows = maxRows
        model.weights.prepareDecode()
        let c = model.config
        let n = maxRows
        var all = [UnsafeMutablePointer<Float>]()
        func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, count))
            p.initialize(repeating: 0, count: max(1, count))
            all.append(p)
            return p
        }
        x = buffer(n * c.hiddenSize)
        xn = buffer(n * c.hiddenSize)
        q = buffer(n * c.qDim)
        k = buffer(n * c.kvDim)
        v = buffer(n * c.kvDim)
        att = buffer(n * c.qDim)
        proj = buffer(n * c.hiddenSize)
        gate = buffer(n * c.intermediateSize)
        up = buffer(n * c.intermediateSize)
        act = buffer(n * c.intermediateSize)
        allocations = all
    }

    deinit { for p in allocations { p.deallocate() } }

    /// Feeds each row's token at its cache's next position, appends its keys and values, and
    /// returns the logits (rows, V) of the next token of every row.
    public func step(_ rows: [DecodeRow]) throws -> [Float] {
        let c = model.config
        let n = rows.count
        guard n >= 1, n <= maxRows else {
            throw LowRAError(.invalidArgument, "a decode step takes 1...\(maxRows) rows, got \(n)")
        }
        for r in rows {
            guard r.token >= 0, r.token < c.vocabSize else {
                throw LowRAError(.invalidArgument, "token id \(r.token) is outside the vocabulary (\(c.vocabSize))")
            }
            guard r.cache.length < r.cache.capacity else {
                throw LowRAError(.invalidArgument, "a sequence's cache is full (\(r.cache.capacity) positions)")
            }
            if let a = r.adapter, a.slots.count != c.numLayers * LinearKind.allCases.count {
                throw LowRAError(.shapeMismatch, "an adapter does not fit this model's layers")
            }
        }
        guard Set(rows.map { ObjectIdentifier($0.cache) }).count == n else {
            throw LowRAError(.invalidArgument, "two rows of a decode step share one cache")
        }
        let w = model.weights
        let C = c.hiddenSize
        for (i, r) in rows.enumerated() { w.embedding.row(r.token, into: x + i * C) }
        let ropes = rows.map { RopeTable(start: $0.cache.length, count: 1, frequencies: c.ropeFrequencies) }
        // Rows grouped by adapter (the identity of its values' storage, not a comparison of
        // millions of floats), in first-seen order.
        var groups = [(adapter: LoRAAdapter, rows: [Int])]()
        var keys = [UInt]()
        for (i, r) in rows.enumerated() {
            guard let a = r.adapter else { continue }
            let key = a.values.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
            if let g = keys.firstIndex(of: key) {
                groups[g].rows.append(i)
            } else {
                keys.append(key)
                groups.append((a, [i]))
            }
        }
        let buffers = BlockBuffers(
            xIn: nil, xn1: xn, q: q, k: k, v: v, att: att, proj: proj, xMid: nil, xn2: xn, gate: gate, up: up, act: act)
        let steps = BatchSteps(decoder: self, rows: rows, ropes: ropes, groups: groups)
        for l in w.blocks.indices { w.blockForward(l, config: c, x: x, rows: n, buffers: buffers, steps: steps) }
        for r in rows { r.cache.advance(1) }

        w.finalNorm.withUnsafeBufferPointer {
            rmsnormForward(xn, x, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps)
        }
        var logits = [Float](repeating: 0, count: n * c.vocabSize)
        logits.withUnsafeMutableBufferPointer { out in
            forChunks(n, direct: w.outputHead.multipliesDirectly(rows: width, upTo: width)) { r0, m in
                w.headForward(
                    xn + r0 * C, rows: m, into: out.baseAddress! + r0 * c.vocabSize, activations: model.activations,
                    directRows: width)
            }
        }
        return logits
    }

    /// Calls `body(first row, rows)` over [0, n) in chunks the kernels take at once, or row by row
    /// when the weight has no such kernel (`direct` false), so each row is computed as it is alone.
    private func forChunks(_ n: Int, direct: Bool, _ body: (Int, Int) -> Void) {
        let width = direct ? self.width : 1
        var r0 = 0
        while r0 < n {
            let m = min(width, n - r0)
            body(r0, m)
            r0 += m
        }
    }

    /// ys[i] (n, out_i) = input (n, in) · W_iᵀ + b_i, then each row's own adapter: s · B A x.
    fileprivate func linears(
        _ l: Int, _ kinds: [LinearKind], _ input: UnsafeMutablePointer<Float>, _ ys: [UnsafeMutablePointer<Float>],
        rows n: Int, groups: [(adapter: LoRAAdapter, rows: [Int])]
    ) {
        let block = model.weights.blocks[l]
        let layers = kinds.map { block[$0] }
        let inF = layers[0].inFeatures
        let direct = layers.allSatisfy { $0.multipliesDirectly(rows: width, upTo: width) }
        forChunks(n, direct: direct) { r0, m in
            Linear.forward(
                layers, input + r0 * inF, rows: m, into: zip(layers, ys).map { $1 + r0 * $0.outFeatures },
                lora: layers.map { _ in nil }, xa: layers.map { _ in nil }, activations: model.activations,
                directRows: width)
        }
        // Each (adapter's rows, up to `width` at a time; layer) is one task, the tasks shared by the
        // workers: every task writes only its own rows of its own output, through scratch of its own.
        var tasks = [(adapter: LoRAAdapter, rows: ArraySlice<Int>, layer: Int)]()
        for g in groups {
            for start in stride(from: 0, to: g.rows.count, by: width) {
                let chunk = g.rows[start..<min(g.rows.count, start + width)]
                for i in layers.indices { tasks.append((g.adapter, chunk, i)) }
            }
        }
        let io = UncheckedSendable((tasks, input, ys))
        parallelTasks(tasks.count) { t in
            let (tasks, input, ys) = io.value
            let (chunk, i) = (tasks[t].rows, tasks[t].layer)
            let (out, y) = (layers[i].outFeatures, ys[i])
            let rank = tasks[t].adapter.rank
            let gathered = UnsafeMutablePointer<Float>.allocate(capacity: chunk.count * (inF + out + rank))
            defer { gathered.deallocate() }
            let gatheredOut = gathered + chunk.count * inF
            let xa = gatheredOut + chunk.count * out
            for (j, r) in chunk.enumerated() {
                (gathered + j * inF).update(from: input + r * inF, count: inF)
                (gatheredOut + j * out).update(from: y + r * out, count: out)
            }
            tasks[t].adapter.withView { view in
                let f = view.factors(layer: l, kind: kinds[i])
                loraForward(
                    gatheredOut, xa, gathered, f.a, f.b, rows: chunk.count, in: inF, out: out, rank: f.rank,
                    scale: f.scale)
            }
            for (j, r) in chunk.enumerated() { (y + r * out).update(from: gatheredOut + j * out, count: out) }
        }
    }
}

/// The steps of a batched decode step (`ModelWeights.blockForward`): row i is one sequence's next
/// token at its own position, with its own cache and adapter. Each is computed as decoding that
/// sequence alone computes it.
private struct BatchSteps: BlockSteps {
    let decoder: BatchDecoder
    let rows: [DecodeRow]
    let ropes: [RopeTable]
    let groups: [(adapter: LoRAAdapter, rows: [Int])]

    var config: ModelConfig { decoder.model.config }

    func linears(
        _ l: Int, _ kinds: [LinearKind], _ input: UnsafeMutablePointer<Float>, _ ys: [UnsafeMutablePointer<Float>]
    ) {
        decoder.linears(l, kinds, input, ys, rows: rows.count, groups: groups)
    }

    func rope(_ l: Int, q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>) {
        let c = config
        for i in rows.indices {
            ropeForward(
                q + i * c.qDim, rows: 1, stride: c.qDim, heads: c.numHeads, headDim: c.headDim, table: ropes[i],
                layout: c.ropeLayout)
            ropeForward(
                k + i * c.kvDim, rows: 1, stride: c.kvDim, heads: c.numKVHeads, headDim: c.headDim, table: ropes[i],
                layout: c.ropeLayout)
        }
    }

    func attention(
        _ l: Int, q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        out att: UnsafeMutablePointer<Float>
    ) {
        let c = config
        let n = rows.count
        let (H, KV, D, qD, kvD) = (c.numHeads, c.numKVHeads, c.headDim, c.qDim, c.kvDim)
        for (i, r) in rows.enumerated() { r.cache.append(layer: l, keys: k + i * kvD, values: v + i * kvD, rows: 1) }
        // Every (row, head) of the step in one dispatch: one sequence's short context alone is too
        // little to split, n of them are not. Each head is computed as decoding alone computes it.
        let keys = rows.map { $0.cache.length + 1 }
        let longest = keys.max()!
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: n * H * longest)
        defer { scratch.deallocate() }
        let io = UncheckedSendable((rows.map { ($0.cache.keys(l), $0.cache.values(l)) }, keys, q, att, scratch))
        let path = KernelPath.current
        parallelFor(n * H, minPerChunk: max(1, 16_384 / (longest * D))) { range in
            let (cached, keys, q, att, scratch) = io.value
            for item in range {
                let (i, h) = (item / H, item % H)
                lowra_attention_decode_f16(
                    Int32(path), q + i * qD, cached[i].0, cached[i].1, UInt64(keys[i]), UInt64(H), UInt64(KV),
                    UInt64(D), scratch + i * H * longest, att + i * qD, UInt64(h), UInt64(h + 1))
            }
        }
    }

    /// Row by row, as decoding each sequence alone does.
    func swiglu(
        _ act: UnsafeMutablePointer<Float>, _ gate: UnsafeMutablePointer<Float>, _ up: UnsafeMutablePointer<Float>
    ) {
        let F = config.intermediateSize
        for i in rows.indices { swigluForward(act + i * F, gate + i * F, up + i * F, count: F) }
    }

    func observe(_ l: Int, _ site: LinearInput, _ input: UnsafeMutablePointer<Float>, cols: Int) {}
}
