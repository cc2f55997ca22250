import Foundation
import LowRATensor

// The decoder block, defined once for every way LowRA runs it: the single-sequence forward
// (evaluation, generation, prefill, calibration and the training forward, `SequenceSteps`) and the
// batched decode step of many sequences with their own caches and adapters (`BatchDecoder`). What
// differs between them is how a group of linear layers is multiplied (one adapter for all rows, or
// each row's own), and where positions and keys come from (one cache or none, or one cache per
// row); those are the `BlockSteps` a caller passes. The order of the operations is here alone.
// The backward pass (`TrainingGraph`, LowRATrain) mirrors this function step for step.

/// The block cut where its linear layers' inputs are ready: `.until(site)` runs from the previous
/// cut to the point where `site`'s input is computed (and observed), `.end` finishes the block.
public enum BlockSegment: Hashable, Sendable {
    case until(LinearInput)
    case end

    /// The segments that make one block.
    public static let inOrder: [BlockSegment] = LinearInput.allCases.map { .until($0) } + [.end]
}

/// The buffers one block reads and writes, for N rows (tokens) at once.
public struct BlockBuffers {
    public var xIn: UnsafeMutablePointer<Float>?  // (N, C) the residual entering the block, when saved
    public var xn1: UnsafeMutablePointer<Float>  // (N, C) normed for attention
    public var q: UnsafeMutablePointer<Float>  // (N, H*D)
    public var k: UnsafeMutablePointer<Float>  // (N, KV*D)
    public var v: UnsafeMutablePointer<Float>  // (N, KV*D)
    public var att: UnsafeMutablePointer<Float>  // (N, H*D) attention output
    public var proj: UnsafeMutablePointer<Float>  // (N, C) the output projection, then the down projection
    public var xMid: UnsafeMutablePointer<Float>?  // (N, C) the residual after attention, when saved
    public var xn2: UnsafeMutablePointer<Float>  // (N, C) normed for the MLP
    public var gate: UnsafeMutablePointer<Float>  // (N, F)
    public var up: UnsafeMutablePointer<Float>  // (N, F)
    public var act: UnsafeMutablePointer<Float>  // (N, F) silu(gate) * up

    public init(
        xIn: UnsafeMutablePointer<Float>?, xn1: UnsafeMutablePointer<Float>, q: UnsafeMutablePointer<Float>,
        k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, att: UnsafeMutablePointer<Float>,
        proj: UnsafeMutablePointer<Float>, xMid: UnsafeMutablePointer<Float>?, xn2: UnsafeMutablePointer<Float>,
        gate: UnsafeMutablePointer<Float>, up: UnsafeMutablePointer<Float>, act: UnsafeMutablePointer<Float>
    ) {
        (self.xIn, self.xn1, self.q, self.k, self.v, self.att, self.proj) = (xIn, xn1, q, k, v, att, proj)
        (self.xMid, self.xn2, self.gate, self.up, self.act) = (xMid, xn2, gate, up, act)
    }
}

/// How a caller runs the parts of a block that depend on what its rows are.
public protocol BlockSteps {
    /// ys[i] (N, out_i) = input (N, in) · W_iᵀ + b_i for layers `kinds` of block `l` (which share
    /// their input), plus each row's adapter.
    func linears(
        _ l: Int, _ kinds: [LinearKind], _ input: UnsafeMutablePointer<Float>, _ ys: [UnsafeMutablePointer<Float>])
    /// Rotates q (N, H*D) and k (N, KV*D) in place by each row's position (RoPE).
    func rope(_ l: Int, q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>)
    /// out (N, H*D) = causal grouped-query attention of the rotated q over the keys and values
    /// each row sees (its own, and any cached ones, which this step appends to).
    func attention(
        _ l: Int, q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        out: UnsafeMutablePointer<Float>)
    /// act (N, F) = silu(gate) · up.
    func swiglu(
        _ act: UnsafeMutablePointer<Float>, _ gate: UnsafeMutablePointer<Float>, _ up: UnsafeMutablePointer<Float>)
    /// Sees the input of the linear layers at `site` (calibration statistics); may do nothing.
    func observe(_ l: Int, _ site: LinearInput, _ input: UnsafeMutablePointer<Float>, cols: Int)
}

extension ModelWeights {
    /// Block `l` over x (N, C), in place: x += o(attention(RoPE(q, k), v)) of rmsnorm(x);
    /// x += down(silu(gate) · up) of rmsnorm(x) — norm → q/k/v → RoPE → attention → o → residual →
    /// norm → gate/up → SwiGLU → down → residual. Every intermediate goes to `b`.
    public func blockForward(
        _ l: Int, config c: ModelConfig, x: UnsafeMutablePointer<Float>, rows n: Int, buffers b: BlockBuffers,
        steps: some BlockSteps
    ) {
        for s in BlockSegment.inOrder { blockSegment(s, l, config: c, x: x, rows: n, buffers: b, steps: steps) }
    }

    /// One segment of `blockForward` (which is its segments in order): the part of block `l` from
    /// the previous cut up to `s`.
    public func blockSegment(
        _ s: BlockSegment, _ l: Int, config c: ModelConfig, x: UnsafeMutablePointer<Float>, rows n: Int,
        buffers b: BlockBuffers, steps: some BlockSteps
    ) {
        let C = c.hiddenSize
        switch s {
        case .until(.attention):
            b.xIn?.update(from: x, count: n * C)
            blocks[l].attnNorm.withUnsafeBufferPointer {
                rmsnormForward(b.xn1, x, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps)
            }
            steps.observe(l, .attention, b.xn1, cols: C)
        case .until(.output):
            steps.linears(l, [.q, .k, .v], b.xn1, [b.q, b.k, b.v])
            steps.rope(l, q: b.q, k: b.k)
            steps.attention(l, q: b.q, k: b.k, v: b.v, out: b.att)
            steps.observe(l, .output, b.att, cols: c.qDim)
        case .until(.mlp):
            steps.linears(l, [.o], b.att, [b.proj])
            addInPlace(x, b.proj, count: n * C)
            // SwiGLU MLP.
            b.xMid?.update(from: x, count: n * C)
            blocks[l].ffnNorm.withUnsafeBufferPointer {
                rmsnormForward(b.xn2, x, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps)
            }
            steps.observe(l, .mlp, b.xn2, cols: C)
        case .until(.down):
            steps.linears(l, [.gate, .up], b.xn2, [b.gate, b.up])
            steps.swiglu(b.act, b.gate, b.up)
            steps.observe(l, .down, b.act, cols: c.intermediateSize)
        case .end:
            steps.linears(l, [.down], b.act, [b.proj])
            addInPlace(x, b.proj, count: n * C)
        }
    }

    /// `blockSegment` for the single-sequence forward, its intermediates in `ws.activations(l)`
    /// except the values that cross a cut, which `carried` (where given) holds for a caller that runs each
    /// segment over more rows than one forward takes (calibration's sequential pass): xn1 and att
    /// (N, C) and (N, H*D) before attention's cuts, xn2 and act (N, C) and (N, F) before the MLP's.
    public func blockSegment(
        _ s: BlockSegment, _ l: Int, config c: ModelConfig, x: UnsafeMutablePointer<Float>,
        workspace ws: ForwardWorkspace, rope: RopeTable, adapter: AdapterView?, observe: LinearInputObserver?,
        carried: (xn1: UnsafeMutablePointer<Float>?, att: UnsafeMutablePointer<Float>?,
                  xn2: UnsafeMutablePointer<Float>?, act: UnsafeMutablePointer<Float>?)
    ) {
        let a = ws.activations(l)
        let buffers = BlockBuffers(
            xIn: nil, xn1: carried.xn1 ?? a.xn1, q: a.q, k: a.k, v: a.v, att: carried.att ?? a.att, proj: ws.proj,
            xMid: nil, xn2: carried.xn2 ?? a.xn2, gate: a.gate, up: a.up, act: carried.act ?? a.act)
        let steps = SequenceSteps(
            weights: self, config: c, workspace: ws, activations: a, rope: rope, cache: nil, adapter: adapter,
            observer: observe)
        blockSegment(s, l, config: c, x: x, rows: ws.batch * ws.tokens, buffers: buffers, steps: steps)
    }

    /// One block of the single-sequence forward over x (batch·T, C), in place, its activations in
    /// `ws.activations(l)` (what backward reads when they are saved).
    public func blockForward(
        _ l: Int, config c: ModelConfig, x: UnsafeMutablePointer<Float>, workspace ws: ForwardWorkspace,
        rope: RopeTable, cache: KVCache?, adapter: AdapterView?, observe: LinearInputObserver?
    ) {
        let a = ws.activations(l)
        let buffers = BlockBuffers(
            xIn: a.xIn, xn1: a.xn1, q: a.q, k: a.k, v: a.v, att: a.att, proj: ws.proj, xMid: a.xMid, xn2: a.xn2,
            gate: a.gate, up: a.up, act: a.act)
        let steps = SequenceSteps(
            weights: self, config: c, workspace: ws, activations: a, rope: rope, cache: cache, adapter: adapter,
            observer: observe)
        blockForward(l, config: c, x: x, rows: ws.batch * ws.tokens, buffers: buffers, steps: steps)
    }
}

/// The steps of the single-sequence forward: `batch` sequences of T tokens each sharing one
/// adapter; with a cache (batch 1) the tokens continue it, without one each sequence starts at 0.
struct SequenceSteps: BlockSteps {
    let weights: ModelWeights
    let config: ModelConfig
    let workspace: ForwardWorkspace
    let activations: BlockActivations
    let rope: RopeTable
    let cache: KVCache?
    let adapter: AdapterView?
    let observer: LinearInputObserver?

    var rows: Int { workspace.batch * workspace.tokens }

    func linears(
        _ l: Int, _ kinds: [LinearKind], _ input: UnsafeMutablePointer<Float>, _ ys: [UnsafeMutablePointer<Float>]
    ) {
        let block = weights.blocks[l]
        let ws = workspace
        // Layers that share their input take one product (`Linear.forward(_:_:rows:into:...)`; a
        // single layer is its own `forward`).
        Linear.forward(
            kinds.map { block[$0] }, input, rows: rows, into: ys, scratch: ws.weightScratch,
            lora: kinds.map { adapter?.factors(layer: l, kind: $0) },
            xa: kinds.map { adapter == nil ? nil : activations.xa[$0.rawValue] }, activations: ws.activations,
            directRows: ws.directRows)
    }

    func rope(_ l: Int, q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>) {
        let c = config
        let T = workspace.tokens
        for b in 0..<workspace.batch {
            ropeForward(
                q + b * T * c.qDim, rows: T, stride: c.qDim, heads: c.numHeads, headDim: c.headDim, table: rope,
                layout: c.ropeLayout)
            ropeForward(
                k + b * T * c.kvDim, rows: T, stride: c.kvDim, heads: c.numKVHeads, headDim: c.headDim, table: rope,
                layout: c.ropeLayout)
        }
    }

    func attention(
        _ l: Int, q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        out: UnsafeMutablePointer<Float>
    ) {
        let c = config
        let ws = workspace
        let (T, H, KV, D, qD, kvD) = (ws.tokens, c.numHeads, c.numKVHeads, c.headDim, c.qDim, c.kvDim)
        for b in 0..<ws.batch {
            let (q, k, v, out) = (q + b * T * qD, k + b * T * kvD, v + b * T * kvD, out + b * T * qD)
            if let cache {
                // Keys and values go to the f16 cache. One query (decode) reads them all from there;
                // a batch reads the past ones converted to fp32 and its own in fp32, so a prompt
                // prefilled from an empty cache computes exactly what a cache-less forward does.
                let past = cache.length
                cache.append(layer: l, keys: k, values: v, rows: T)
                if T == 1 {
                    attentionDecode(
                        out, q, cache.keys(l), cache.values(l), keys: past + 1, heads: H, kvHeads: KV, headDim: D,
                        scores: activations.probs)
                } else {
                    let keys = ws.cachedKeys!
                    let values = ws.cachedValues!
                    cache.load(layer: l, count: past, keys: keys, values: values)
                    (keys + past * kvD).update(from: k, count: T * kvD)
                    (values + past * kvD).update(from: v, count: T * kvD)
                    attentionForward(
                        out, activations.probs, q, keys, values, tokens: T, past: past, heads: H, kvHeads: KV,
                        headDim: D, probsPerHead: ws.keepsProbs)
                }
            } else {
                attentionForward(
                    out, activations.probs + (ws.keepsProbs ? b * H * T * T : 0), q, k, v, tokens: T, heads: H,
                    kvHeads: KV, headDim: D, probsPerHead: ws.keepsProbs)
            }
        }
    }

    func swiglu(
        _ act: UnsafeMutablePointer<Float>, _ gate: UnsafeMutablePointer<Float>, _ up: UnsafeMutablePointer<Float>
    ) {
        swigluForward(act, gate, up, count: rows * config.intermediateSize)
    }

    func observe(_ l: Int, _ site: LinearInput, _ input: UnsafeMutablePointer<Float>, cols: Int) {
        observer?(l, site, input, rows, cols)
    }
}
