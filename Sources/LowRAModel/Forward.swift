import Foundation
import LowRATensor

// The one model forward (llm.c's gpt2_forward): embedding, then the same block forward for
// every layer, over flat buffers. Training runs it over a batch with every layer's activations
// saved for backward; evaluation, generation and calibration run it with a KV cache and one
// reused set of activations. An adapter is passed in, never merged into the weights, so one
// base serves any number of adapters.

/// Keys and values of every layer for positions [0, length), with room for `capacity`, stored as
/// IEEE half (half the memory of fp32; decode attention reads them directly, F16C on x86-64).
public final class KVCache: @unchecked Sendable {
    public let capacity: Int
    public private(set) var length = 0
    private let kvDim: Int
    private let storage: UnsafeMutablePointer<UInt16>  // (L, 2, capacity, KV*D)

    public init(config: ModelConfig, capacity: Int) {
        self.capacity = capacity
        kvDim = config.kvDim
        let count = max(1, config.numLayers * 2 * capacity * config.kvDim)
        storage = .allocate(capacity: count)
        storage.initialize(repeating: 0, count: count)
    }

    deinit { storage.deallocate() }

    /// Layer l's keys (capacity, KV*D), after RoPE.
    public func keys(_ l: Int) -> UnsafeMutablePointer<UInt16> { storage + (2 * l) * capacity * kvDim }
    /// Layer l's values (capacity, KV*D).
    public func values(_ l: Int) -> UnsafeMutablePointer<UInt16> { storage + (2 * l + 1) * capacity * kvDim }

    /// Stores `rows` keys and values (rows, KV*D) of layer l at positions length…
    func append(layer l: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, rows: Int) {
        halvesFromFloats(k, into: keys(l) + length * kvDim, count: rows * kvDim)
        halvesFromFloats(v, into: values(l) + length * kvDim, count: rows * kvDim)
    }

    /// Layer l's first `count` keys and values as fp32 (count, KV*D), for a batch of queries.
    func load(layer l: Int, count: Int, keys k: UnsafeMutablePointer<Float>, values v: UnsafeMutablePointer<Float>) {
        floatsFromHalves(keys(l), into: k, count: count * kvDim)
        floatsFromHalves(values(l), into: v, count: count * kvDim)
    }

    public func reset() { length = 0 }
    func advance(_ n: Int) { length += n }
}

/// Which rows of logits a forward pass computes.
public enum LogitRows: Sendable {
    case all, last
}

/// `observe(layer, site, x (rows, cols), rows, cols)` sees every linear layer's input.
public typealias LinearInputObserver = (Int, LinearInput, UnsafePointer<Float>, Int, Int) -> Void

/// The activations of one block over N = batch·T rows. Training keeps one set per layer for
/// backward; inference reuses one set for every layer.
public struct BlockActivations {
    public let xIn: UnsafeMutablePointer<Float>  // (N, C) the residual entering the block
    public let xn1: UnsafeMutablePointer<Float>  // (N, C) normed for attention
    public let q: UnsafeMutablePointer<Float>  // (N, H*D) after RoPE
    public let k: UnsafeMutablePointer<Float>  // (N, KV*D) after RoPE
    public let v: UnsafeMutablePointer<Float>  // (N, KV*D)
    public let probs: UnsafeMutablePointer<Float>  // (B, H, T, Tk) saved, or (T, Tk) reused per head
    public let att: UnsafeMutablePointer<Float>  // (N, H*D) attention output
    public let xMid: UnsafeMutablePointer<Float>  // (N, C) the residual after attention
    public let xn2: UnsafeMutablePointer<Float>  // (N, C) normed for the MLP
    public let gate: UnsafeMutablePointer<Float>  // (N, F)
    public let up: UnsafeMutablePointer<Float>  // (N, F)
    public let act: UnsafeMutablePointer<Float>  // (N, F) silu(gate) * up
    public let xa: [UnsafeMutablePointer<Float>]  // (N, r) x·Aᵀ per LinearKind, with an adapter
}

/// Every buffer one forward needs, allocated once: block activations (per layer or shared),
/// the projection output and the scratch a packed layer is dequantized into. Callers may take
/// more buffers from it (`allocate`) so that one figure counts them all.
public final class ForwardWorkspace: @unchecked Sendable {
    public let batch: Int
    public let tokens: Int
    /// Keys each query may see: T in training, past + T with a cache.
    public let keys: Int
    public let savesEveryLayer: Bool
    /// Attention probabilities are kept per head (B, H, T, Tk), as backward needs them.
    public let keepsProbs: Bool
    public private(set) var bytes = 0
    private var allocations = [UnsafeMutablePointer<Float>]()
    private var layers = [BlockActivations]()
    /// (N, C) output of o and down before the residual add.
    public private(set) var proj: UnsafeMutablePointer<Float>!
    /// W of the largest linear layer, for packed layers run on more than one row.
    public private(set) var weightScratch: UnsafeMutablePointer<Float>!
    /// With a KV cache: one layer's cached keys and values in fp32 (keys, KV*D) each, for a batch
    /// of queries; nil without one.
    public private(set) var cachedKeys: UnsafeMutablePointer<Float>?
    public private(set) var cachedValues: UnsafeMutablePointer<Float>?
    /// The activations the decode kernels take (`KernelActivations`).
    public var activations = KernelActivations.default
    /// The most rows multiplied straight from packed or stored weights (`Linear.forward`): the
    /// few-row default, or `KernelPath.batchColumns` for inference's short prompts.
    public var directRows = KernelPath.columns

    /// `rank` 0: no adapter. `weightScratch`: floats of dequantization scratch (0 for none).
    /// `cached`: the forward reads a KV cache (inference), whose layers batches of queries read in fp32.
    /// Training saves every layer (`saveEveryLayer`) or, recomputing, keeps one set with the
    /// probabilities backward needs (`keepProbs`); inference keeps one set and one head's scores.
    public init(
        config c: ModelConfig, batch: Int, tokens: Int, keys: Int, rank: Int, saveEveryLayer: Bool,
        keepProbs: Bool? = nil, weightScratch: Int, cached: Bool = false
    ) {
        self.batch = batch
        self.tokens = tokens
        self.keys = keys
        savesEveryLayer = saveEveryLayer
        keepsProbs = keepProbs ?? saveEveryLayer
        let n = batch * tokens
        let C = c.hiddenSize
        let F = c.intermediateSize
        let qD = c.qDim
        let kvD = c.kvDim
        // Per head (saved), or one (T, Tk) buffer reused by every head; a decode step scores every
        // head at once (H, Tk).
        let probs = keepsProbs ? batch * c.numHeads * tokens * keys : max(tokens, c.numHeads) * keys
        for _ in 0..<(saveEveryLayer ? c.numLayers : 1) {
            layers.append(
                BlockActivations(
                    xIn: allocate(n * C), xn1: allocate(n * C), q: allocate(n * qD), k: allocate(n * kvD),
                    v: allocate(n * kvD), probs: allocate(probs), att: allocate(n * qD), xMid: allocate(n * C),
                    xn2: allocate(n * C), gate: allocate(n * F), up: allocate(n * F), act: allocate(n * F),
                    xa: rank == 0 ? [] : LinearKind.allCases.map { _ in allocate(n * rank) }))
        }
        proj = allocate(n * C)
        self.weightScratch = allocate(weightScratch)
        if cached && tokens > 1 {
            cachedKeys = allocate(keys * kvD)
            cachedValues = allocate(keys * kvD)
        }
    }

    deinit { for p in allocations { free(p) } }

    /// A zeroed buffer of `count` floats that lives as long as the workspace. From calloc: a large
    /// one is fresh pages that the kernel zeroes when first touched, so a buffer a caller never
    /// uses (a forward run one segment at a time uses a few) costs neither memory nor a memset.
    public func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        guard let raw = calloc(max(count, 1), MemoryLayout<Float>.stride) else {
            fatalError("out of memory: a workspace buffer of \(count) floats")
        }
        let p = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        allocations.append(p)
        bytes += 4 * count
        return p
    }

    /// The activations layer l writes (and, when saved, backward reads).
    public func activations(_ l: Int) -> BlockActivations { layers[savesEveryLayer ? l : 0] }
}

extension ModelWeights {
    /// Embeds `tokens` (batch·T ids, row-major) into x (N, C) and runs every block on it. With a
    /// cache (batch 1), the T tokens sit at positions cache.length…, attend to the cached keys,
    /// and their keys and values are appended; without one, each sequence starts at position 0.
    /// `layerInputs` (one (N, C) buffer per layer) receives each block's input, for a backward
    /// that recomputes the blocks instead of saving their activations. `releaseStored` drops each
    /// block's mapped weight pages after its use (`BlockWeights.releaseStored`).
    public func forwardBlocks(
        _ tokens: [Int], config c: ModelConfig, x: UnsafeMutablePointer<Float>, workspace ws: ForwardWorkspace,
        cache: KVCache?, adapter: AdapterView?, layerInputs: [UnsafeMutablePointer<Float>]? = nil,
        observe: LinearInputObserver? = nil, releaseStored: Bool = false
    ) {
        let C = c.hiddenSize
        precondition(tokens.count == ws.batch * ws.tokens && (cache == nil || ws.batch == 1))
        for (r, tok) in tokens.enumerated() { embedding.row(tok, into: x + r * C) }
        let rope = RopeTable(start: cache?.length ?? 0, count: ws.tokens, frequencies: c.ropeFrequencies)
        for l in blocks.indices {
            layerInputs?[l].update(from: x, count: ws.batch * ws.tokens * C)
            blockForward(
                l, config: c, x: x, workspace: ws, rope: rope, cache: cache, adapter: adapter, observe: observe)
            if releaseStored { blocks[l].releaseStored() }
        }
        cache?.advance(ws.tokens)
    }

    /// logits (rows, V) = normed (rows, C) · Wᵀ, W the head or, when tied, the embedding.
    public func headForward(
        _ normed: UnsafePointer<Float>, rows: Int, into logits: UnsafeMutablePointer<Float>,
        scratch: UnsafeMutablePointer<Float>? = nil, activations: KernelActivations = .default,
        directRows: Int = KernelPath.columns
    ) {
        outputHead.forward(
            normed, rows: rows, into: logits, scratch: scratch, activations: activations, directRows: directRows)
    }
}

/// A Llama-family model ready to run: configuration and weights.
public final class LanguageModel: @unchecked Sendable {
    public let config: ModelConfig
    public let weights: ModelWeights
    /// The activations the decode kernels take: int16 by default, int8 (faster) or fp32 to compare.
    public var activations = KernelActivations.default

    public init(config: ModelConfig, weights: ModelWeights) throws {
        try config.validate()
        self.config = config
        self.weights = weights
    }

    /// Runs `tokens` at positions [cache.length, cache.length + T) with `adapter` (if any) on
    /// every linear layer, appends their keys and values to the cache, and returns logits
    /// (rows, V) for all T positions or only the last. `observe` sees every linear layer's input.
    public func forward(
        _ tokens: [Int], cache: KVCache, logits rows: LogitRows = .all, adapter: LoRAAdapter? = nil,
        observe: LinearInputObserver? = nil
    ) throws -> [Float] {
        let h = try hidden(tokens, cache: cache, adapter: adapter, observe: observe)
        let t = tokens.count
        let first = rows == .all ? 0 : t - 1
        return h.withUnsafeBufferPointer { logits($0.baseAddress! + first * config.hiddenSize, rows: t - first) }
    }

    /// logits (rows, V) of final hidden states (rows, C) from `hidden`: a caller that scores long
    /// windows asks for a few rows at a time instead of holding (T, V).
    public func logits(_ hidden: UnsafePointer<Float>, rows: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * config.vocabSize)
        out.withUnsafeMutableBufferPointer {
            weights.headForward(
                hidden, rows: rows, into: $0.baseAddress!, activations: activations,
                directRows: KernelPath.batchColumns)
        }
        return out
    }

    /// The forward without the head: the final RMS-normed hidden states (T, C) of `tokens`. With a
    /// cache they continue it; without one (scoring a window, where no later token will need
    /// these keys) they start at position 0 and attend to their own keys, and no cache is held.
    public func hidden(
        _ tokens: [Int], cache: KVCache?, adapter: LoRAAdapter? = nil, observe: LinearInputObserver? = nil
    ) throws -> [Float] {
        let c = config
        let t = tokens.count
        let pos0 = cache?.length ?? 0
        let capacity = cache?.capacity ?? c.maxPositions
        guard t > 0 else { throw LowRAError(.invalidArgument, "forward: no tokens") }
        guard pos0 + t <= capacity else {
            throw LowRAError(.invalidArgument, "\(pos0 + t) tokens do not fit the context of \(capacity)")
        }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= c.vocabSize }) {
            throw LowRAError(.invalidArgument, "token id \(bad) is outside the vocabulary (\(c.vocabSize))")
        }
        if let adapter, adapter.slots.count != c.numLayers * LinearKind.allCases.count {
            throw LowRAError(
                .shapeMismatch,
                "the adapter has \(adapter.slots.count) layers; the model needs "
                    + "\(c.numLayers * LinearKind.allCases.count)"
            )
        }
        let ws = ForwardWorkspace(
            config: c, batch: 1, tokens: t, keys: pos0 + t, rank: adapter?.rank ?? 0, saveEveryLayer: false,
            weightScratch: weights.scratchFloats(rows: t), cached: cache != nil)
        ws.activations = activations
        // Prompts go straight through the tiled decode kernels where the path has them (integer
        // activations, in chunks of columns), else up to 16 tokens through the row kernels, longer
        // ones through panels for sgemm.
        ws.directRows = KernelPath.promptRows(KernelPath.current, activations: activations)
        let x = ws.allocate(t * c.hiddenSize)  // (T, C) residual stream
        func run(_ view: AdapterView?) {
            weights.forwardBlocks(tokens, config: c, x: x, workspace: ws, cache: cache, adapter: view, observe: observe)
        }
        if let adapter { adapter.withView(run) } else { run(nil) }
        var normed = [Float](repeating: 0, count: t * c.hiddenSize)
        normed.withUnsafeMutableBufferPointer { out in
            weights.finalNorm.withUnsafeBufferPointer {
                rmsnormForward(out.baseAddress!, x, $0.baseAddress!, rows: t, cols: c.hiddenSize, eps: c.rmsNormEps)
            }
        }
        return normed
    }
}
