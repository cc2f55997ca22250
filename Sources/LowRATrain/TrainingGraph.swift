import Foundation
import LowRAModel
import LowRATensor

/// The training pass of a Llama model with LoRA on every linear layer of every block (llm.c
/// style: flat buffers, one hand-written backward per forward op). The forward is the model's
/// own (`ModelWeights.forwardBlocks`, shared with evaluation and generation), run over the batch
/// with every layer's activations saved; this class adds the head's loss and the backward pass.
/// The base weights are frozen; the forward multiplies packed and Q8_0 layers from their tiles
/// where the kernel path has them (else, as backward does always, dequantizes a cache-sized panel
/// of rows at a time into one shared scratch buffer for sgemm); they are never kept expanded.
/// Gradients flow only to A and B.
///
/// All buffers for a batch of `batch` sequences of `seq` tokens are allocated once, here, and
/// reused by every step. With `recompute` (activation checkpointing) only each block's input is
/// saved; backward runs the block's forward again into one shared set of activations before
/// taking its gradient — about a third more compute for a fraction of the memory.
public final class TrainingGraph: @unchecked Sendable {
    public let config: ModelConfig
    /// Frozen during a step; codebook tuning swaps a packed layer for one with new levels between
    /// steps (`replaceLinear`).
    public private(set) var weights: ModelWeights
    public let batch: Int
    public let seq: Int
    public let rank: Int
    /// Rows of logits computed at once by the head (bounds the (rows, V) buffers).
    public let headChunk: Int
    public let recompute: Bool

    private let n: Int  // batch * seq rows
    private let layerInputs: [UnsafeMutablePointer<Float>]?  // L x (N, C) block inputs, with recompute
    private let replay: UnsafeMutablePointer<Float>  // (N, C) residual a recomputed block writes
    private let rope: RopeTable
    private let workspace: ForwardWorkspace
    private let x, normed, dnormed, logits, dlogits: UnsafeMutablePointer<Float>
    private let teacherLogits: UnsafeMutablePointer<Float>?  // (headChunk, V), with distillation
    private let dx, dxn, dq, dk, dv, datt, dact, dgate, dup, dyB, attnScratch: UnsafeMutablePointer<Float>

    /// Sees ∂L/∂y (rows, out) of every linear layer's output in backward: (layer, kind, dy, rows,
    /// out). The output-channel Fisher (`outputSensitivity`) sums its squares.
    public var observeOutputGradient: ((Int, LinearKind, UnsafePointer<Float>, Int, Int) -> Void)?

    /// Sees every linear layer's ∂L/∂y (rows, out) with its input x (rows, in) in backward:
    /// (layer, kind, dy, x, rows), from which ∂L/∂W = dyᵀ x (codebook tuning).
    public var observeLinearGradient: ((Int, LinearKind, UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Void)?

    /// Drops each block's stored (memory-mapped) weight pages from resident memory after its use
    /// in forward and in backward, so that a pass over a model larger than memory holds one layer
    /// of it (a later use reads the pages again from the page cache). For passes over an
    /// unquantized source (`outputSensitivity`); a packed base's codes stay.
    public var releasesStoredWeights = false

    /// Puts `linear` (same shape) in place of block `l`'s `kind` layer for the next steps.
    public func replaceLinear(_ l: Int, _ kind: LinearKind, with linear: Linear) {
        precondition(linear.outFeatures == weights.blocks[l][kind].outFeatures)
        precondition(linear.inFeatures == weights.blocks[l][kind].inFeatures)
        weights.blocks[l][kind] = linear
    }

    /// Bytes of the buffers this graph holds (activations and scratch).
    public var workspaceBytes: Int { workspace.bytes }

    /// Whether backward multiplies the packed layers' input gradients from the tiles (`integerBackward`).
    public let integerBackward: Bool

    /// Whether the forward multiplies packed layers through the tiles (`integerForward` on a path that
    /// has them, a packed base) rather than fp32 panels.
    public var forwardThroughTiles: Bool {
        guard workspace.directRows == Int.max else { return false }
        return weights.blocks.contains { b in
            LinearKind.allCases.contains { if case .packed = b[$0].storage { true } else { false } }
        }
    }

    /// The most bytes of tiles the integer forward builds: 1/32 of the machine's memory (768 MB of
    /// 24 GiB: SmolLM2 and Qwen2.5-0.5B at 2 bits, not a 7B model's ~2 GB, which trains on panels).
    public static var tileBudget: Int { Int(ProcessInfo.processInfo.physicalMemory / 32) }

    /// Whether training multiplies through the tiles unless told (`integerForward` nil): only where the kernel
    /// path has the transposed tiled kernel (`KernelPath.usesTransposedTiles`: VNNI's int8 products); with
    /// AVX2's `vpmaddwd` the tiles have no edge over sgemm and the panels train faster. `MemoryModel` follows it.
    public static var integerForwardByDefault: Bool { KernelPath.usesTransposedTiles(KernelPath.current) }

    /// `integerForward`: the forward multiplies packed and Q8_0 layers straight from their tiles
    /// with 16-bit integer activations where the tiles fit `tileBudget`, as a prompt does (1.14× the
    /// tokens/s of a SmolLM2 step; the loss within 0.02% over 40 steps); false runs the fp32 panels,
    /// the exact function whose gradient backward takes; nil: `integerForwardByDefault`.
    /// `integerBackward` (with the integer forward, on a path with `KernelPath.usesTransposedTiles`):
    /// the packed layers' input gradients dY · W from the same tiles, with int8 gradients.
    public init(
        config: ModelConfig, weights: ModelWeights, batch: Int, seq: Int, rank: Int, headChunk: Int = 128,
        recompute: Bool = false, distill: Bool = false, integerForward: Bool? = nil, integerBackward: Bool = true
    ) throws {
        guard batch >= 1, seq >= 1 else {
            throw LowRAError(.invalidArgument, "batch and sequence length must be positive")
        }
        guard seq <= config.maxPositions else {
            throw LowRAError(
                .invalidArgument, "sequence length \(seq) is above the model's context of \(config.maxPositions)")
        }
        self.config = config
        self.weights = weights
        self.batch = batch
        self.seq = seq
        self.rank = rank
        self.headChunk = min(headChunk, batch * seq)
        self.recompute = recompute
        let n = batch * seq
        let chunk = min(headChunk, batch * seq)
        self.n = n
        rope = RopeTable(start: 0, count: seq, frequencies: config.ropeFrequencies)
        let c = config
        let C = c.hiddenSize
        let F = c.intermediateSize
        let qD = c.qDim
        let kvD = c.kvDim
        let V = c.vocabSize
        let ws = ForwardWorkspace(
            config: c, batch: batch, tokens: seq, keys: seq, rank: rank, saveEveryLayer: !recompute, keepProbs: true,
            weightScratch: weights.scratchFloats(rows: .max))
        // The tiles are a second copy of the packed weights beside the codes (mapped, and read by the
        // fp32 panels where backward has no transposed tiled kernel): taken only while small, so that
        // fine-tuning a model larger than memory holds no extra copy (`MemoryModel` counts them).
        let tiles = integerForward ?? Self.integerForwardByDefault
        if tiles && weights.decodeTileBytesEstimate <= Self.tileBudget {
            ws.directRows = KernelPath.promptRows(KernelPath.current, activations: ws.activations)
            self.integerBackward = integerBackward && ws.directRows == Int.max
                && KernelPath.usesTransposedTiles(KernelPath.current)
        } else {
            self.integerBackward = false
        }
        workspace = ws
        layerInputs = recompute ? (0..<c.numLayers).map { _ in ws.allocate(n * C) } : nil
        replay = ws.allocate(recompute ? n * C : 0)
        x = ws.allocate(n * C)
        normed = ws.allocate(n * C)
        dnormed = ws.allocate(n * C)
        logits = ws.allocate(chunk * V)
        dlogits = ws.allocate(chunk * V)
        teacherLogits = distill ? ws.allocate(chunk * V) : nil
        dx = ws.allocate(n * C)
        dxn = ws.allocate(n * C)
        dq = ws.allocate(n * qD)
        dk = ws.allocate(n * kvD)
        dv = ws.allocate(n * kvD)
        datt = ws.allocate(n * qD)
        dact = ws.allocate(n * F)
        dgate = ws.allocate(n * F)
        dup = ws.allocate(n * F)
        dyB = ws.allocate(n * rank)
        attnScratch = ws.allocate(seq * seq)
    }

    private func check(_ inputs: [Int], _ targets: [Int], _ adapter: LoRAAdapter) throws {
        guard inputs.count == n, targets.count == n else {
            throw LowRAError(
                .shapeMismatch,
                "a training batch needs \(n) inputs and targets (\(batch) x \(seq)), got \(inputs.count) and "
                    + "\(targets.count)"
            )
        }
        guard adapter.rank == rank, adapter.slots.count == config.numLayers * LinearKind.allCases.count else {
            throw LowRAError(
                .shapeMismatch,
                "the adapter (rank \(adapter.rank), \(adapter.slots.count) layers) does not fit this graph (rank "
                    + "\(rank))"
            )
        }
        let v = config.vocabSize
        if let bad = inputs.first(where: { $0 < 0 || $0 >= v }) ?? targets.first(where: { $0 >= v }) {
            throw LowRAError(.invalidArgument, "token id \(bad) is outside the vocabulary (\(v))")
        }
    }

    /// What the model learns from besides the targets: a teacher's final normed hidden states
    /// (N, C) for the batch's inputs and its head, at weight w of the loss
    /// (1 − w)·CE + w·KL(teacher ‖ model) (`distillationForwardBackward`).
    public struct Teacher {
        public var hidden: [Float]
        public var head: Linear
        public var weight: Float

        public init(hidden: [Float], head: Linear, weight: Float) {
            self.hidden = hidden
            self.head = head
            self.weight = weight
        }
    }

    private func check(_ teacher: Teacher?) throws {
        guard let teacher else { return }
        guard teacherLogits != nil else {
            throw LowRAError(.invalidArgument, "this training graph was built without distillation")
        }
        guard teacher.hidden.count == n * config.hiddenSize, teacher.head.outFeatures == config.vocabSize,
            teacher.head.inFeatures == config.hiddenSize
        else { throw LowRAError(.shapeMismatch, "the teacher's hidden states or head do not fit this batch") }
    }

    /// Mean loss over the unmasked targets (target < 0 is masked) without backward: cross-entropy,
    /// or with a teacher the distillation loss.
    public func loss(
        inputs: [Int], targets: [Int], adapter: LoRAAdapter, teacher: Teacher? = nil
    ) throws -> (loss: Double, count: Int) {
        try check(inputs, targets, adapter)
        try check(teacher)
        return adapter.values.withUnsafeBufferPointer { p in
            forward(inputs, p.baseAddress!, adapter)
            return head(targets, gradScale: nil, teacher: teacher)
        }
    }

    /// The positions a loss counts (masked ones are negative).
    static func targetCount<C: Collection<Int>>(_ targets: C) -> Int { targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }

    /// Forward and backward: adds ∂L/∂(A, B) × gradScale to `gradient` (same layout as the
    /// adapter's values), where L is the mean cross-entropy over this batch's unmasked targets.
    /// Returns the summed loss and the number of targets.
    public func lossAndGradient(
        inputs: [Int], targets: [Int], adapter: LoRAAdapter, gradient: inout [Float], gradScale: Float = 1,
        teacher: Teacher? = nil
    ) throws -> (loss: Double, count: Int) {
        try check(inputs, targets, adapter)
        try check(teacher)
        guard gradient.count == adapter.values.count else {
            throw LowRAError(
                .shapeMismatch, "gradient has \(gradient.count) entries, the adapter \(adapter.values.count)")
        }
        let count = Self.targetCount(targets)
        guard count > 0 else { return (0, 0) }
        return adapter.values.withUnsafeBufferPointer { p in
            gradient.withUnsafeMutableBufferPointer { g in
                forward(inputs, p.baseAddress!, adapter)
                let r = head(targets, gradScale: gradScale / Float(count), teacher: teacher)
                backward(p.baseAddress!, g.baseAddress!, adapter)
                return r
            }
        }
    }

    // MARK: - Forward

    /// The model's forward over the batch, every layer's activations saved (or, recomputing, every
    /// layer's input); then the final norm.
    private func forward(_ inputs: [Int], _ params: UnsafePointer<Float>, _ adapter: LoRAAdapter) {
        let c = config
        weights.forwardBlocks(
            inputs, config: c, x: x, workspace: workspace, cache: nil, adapter: AdapterView(adapter, params: params),
            layerInputs: layerInputs, releaseStored: releasesStoredWeights)
        weights.finalNorm.withUnsafeBufferPointer {
            rmsnormForward(normed, x, $0.baseAddress!, rows: n, cols: c.hiddenSize, eps: c.rmsNormEps)
        }
    }

    /// Logits chunk by chunk, cross-entropy (or distillation), and (when gradScale is set)
    /// ∂L/∂normed into dnormed.
    private func head(_ targets: [Int], gradScale: Float?, teacher: Teacher?) -> (loss: Double, count: Int) {
        let C = config.hiddenSize
        let V = config.vocabSize
        var total = 0.0
        var count = 0
        let head = weights.outputHead  // multiplied from its stored form, a chunk of vocabulary at a time
        do {
            var r0 = 0
            while r0 < n {
                let rows = min(headChunk, n - r0)
                head.forward(
                    normed + r0 * C, rows: rows, into: logits, scratch: workspace.weightScratch,
                    activations: workspace.activations, directRows: workspace.directRows)
                if let teacher, let tl = teacherLogits {
                    teacher.hidden.withUnsafeBufferPointer {
                        teacher.head.forward(
                            $0.baseAddress! + r0 * C, rows: rows, into: tl, scratch: workspace.weightScratch)
                    }
                }
                let soft = teacher.map { UncheckedSendable(($0.weight, teacherLogits!)) }
                var rowLoss = [Double](repeating: 0, count: rows)
                var rowCount = [Int](repeating: 0, count: rows)
                let out = UncheckedSendable((logits, dlogits))
                rowLoss.withUnsafeMutableBufferPointer { lossB in
                    rowCount.withUnsafeMutableBufferPointer { countB in
                        let lb = UncheckedSendable(lossB)
                        let cb = UncheckedSendable(countB)
                        parallelFor(rows, minPerChunk: 4) { range in
                            for i in range {
                                let (lg, dl) = out.value
                                let r =
                                    soft.map {
                                        distillationForwardBackward(
                                            gradScale == nil ? nil : dl + i * V, lg + i * V,
                                            teacher: $0.value.1 + i * V, target: targets[r0 + i], vocab: V,
                                            weight: $0.value.0, scale: gradScale ?? 1)
                                    }
                                    ?? crossEntropyForwardBackward(
                                        gradScale == nil ? nil : dl + i * V, lg + i * V, targets: [targets[r0 + i]],
                                        vocab: V, scale: gradScale ?? 1)
                                lb.value[i] = r.loss
                                cb.value[i] = r.count
                            }
                        }
                    }
                }
                for i in 0..<rows {
                    total += rowLoss[i]
                    count += rowCount[i]
                }
                if gradScale != nil {
                    head.backwardInput(
                        dlogits, rows: rows, into: dnormed + r0 * C, accumulate: false, scratch: workspace.weightScratch
                    )
                }
                r0 += rows
            }
        }
        return (total, count)
    }

    // MARK: - Backward

    /// The adapter a backward pass takes gradients for: its values and where their gradients go.
    private struct AdapterGradient {
        let adapter: LoRAAdapter
        let params: UnsafePointer<Float>
        let grad: UnsafeMutablePointer<Float>
    }

    /// dxIn (N, in) += dy W + LoRA input gradient; adds the A and B gradients (with an adapter).
    private func linearBackward(
        _ l: Int, _ kind: LinearKind, _ lora: AdapterGradient?, dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
        dxIn: UnsafeMutablePointer<Float>
    ) {
        let lin = weights.blocks[l][kind]
        observeOutputGradient?(l, kind, dy, n, lin.outFeatures)
        observeLinearGradient?(l, kind, dy, x, n)
        lin.backwardInput(
            dy, rows: n, into: dxIn, accumulate: true, scratch: workspace.weightScratch, integer: integerBackward)
        guard let lora else { return }
        let slot = lora.adapter.slot(layer: l, kind: kind)
        loraBackward(
            dA: lora.grad + slot.offsetA, dB: lora.grad + slot.offsetB, dx: dxIn, dyB: dyB, dy: dy, x: x,
            xa: workspace.activations(l).xa[kind.rawValue], a: lora.params + slot.offsetA,
            b: lora.params + slot.offsetB, rows: n, in: lin.inFeatures, out: lin.outFeatures, rank: rank,
            scale: lora.adapter.scale)
    }

    private func backward(_ params: UnsafePointer<Float>, _ grad: UnsafeMutablePointer<Float>, _ adapter: LoRAAdapter) {
        let c = config
        dx.update(repeating: 0, count: n * c.hiddenSize)
        weights.finalNorm.withUnsafeBufferPointer {
            rmsnormBackward(dx, dnormed, x, $0.baseAddress!, rows: n, cols: c.hiddenSize, eps: c.rmsNormEps)
        }
        let lora = AdapterGradient(adapter: adapter, params: params, grad: grad)
        for l in stride(from: c.numLayers - 1, through: 0, by: -1) {
            if let layerInputs {  // run block l again from its saved input: its activations are back
                replay.update(from: layerInputs[l], count: n * c.hiddenSize)
                weights.blockForward(
                    l, config: c, x: replay, workspace: workspace, rope: rope, cache: nil,
                    adapter: AdapterView(adapter, params: params), observe: nil)
            }
            blockBackward(l, lora, inputGradient: l > 0)  // the embedding is frozen: nothing needs it below block 0
            if releasesStoredWeights { weights.blocks[l].releaseStored() }
        }
    }

    /// Backward through block l, whose activations are in the workspace: dx holds ∂L/∂(block output)
    /// on entry and, with `inputGradient`, ∂L/∂(block input) on return.
    private func blockBackward(_ l: Int, _ lora: AdapterGradient?, inputGradient: Bool) {
        let c = config
        let (C, F, qD, kvD, T) = (c.hiddenSize, c.intermediateSize, c.qDim, c.kvDim, seq)
        let block = weights.blocks[l]
        let sv = workspace.activations(l)
        // MLP: x_out = xMid + down(swiglu(gate(xn2), up(xn2))).
        dact.update(repeating: 0, count: n * F)
        linearBackward(l, .down, lora, dy: dx, x: sv.act, dxIn: dact)
        dgate.update(repeating: 0, count: n * F)
        dup.update(repeating: 0, count: n * F)
        swigluBackward(dgate, dup, dact, sv.gate, sv.up, count: n * F)
        dxn.update(repeating: 0, count: n * C)
        linearBackward(l, .gate, lora, dy: dgate, x: sv.xn2, dxIn: dxn)
        linearBackward(l, .up, lora, dy: dup, x: sv.xn2, dxIn: dxn)
        block.ffnNorm.withUnsafeBufferPointer {
            rmsnormBackward(dx, dxn, sv.xMid, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps)
        }
        // Attention: xMid = xIn + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1))).
        datt.update(repeating: 0, count: n * qD)
        linearBackward(l, .o, lora, dy: dx, x: sv.att, dxIn: datt)
        dq.update(repeating: 0, count: n * qD)
        dk.update(repeating: 0, count: n * kvD)
        dv.update(repeating: 0, count: n * kvD)
        for b in 0..<batch {
            attentionBackward(
                dq: dq + b * T * qD, dk: dk + b * T * kvD, dv: dv + b * T * kvD, scratch: attnScratch,
                dout: datt + b * T * qD, probs: sv.probs + b * c.numHeads * T * T, q: sv.q + b * T * qD,
                k: sv.k + b * T * kvD, v: sv.v + b * T * kvD, tokens: T, heads: c.numHeads, kvHeads: c.numKVHeads,
                headDim: c.headDim)
            ropeBackward(
                dq + b * T * qD, rows: T, stride: qD, heads: c.numHeads, headDim: c.headDim, table: rope,
                layout: c.ropeLayout)
            ropeBackward(
                dk + b * T * kvD, rows: T, stride: kvD, heads: c.numKVHeads, headDim: c.headDim, table: rope,
                layout: c.ropeLayout)
        }
        dxn.update(repeating: 0, count: n * C)
        linearBackward(l, .q, lora, dy: dq, x: sv.xn1, dxIn: dxn)
        linearBackward(l, .k, lora, dy: dk, x: sv.xn1, dxIn: dxn)
        linearBackward(l, .v, lora, dy: dv, x: sv.xn1, dxIn: dxn)
        if inputGradient {
            block.attnNorm.withUnsafeBufferPointer {
                rmsnormBackward(dx, dxn, sv.xIn, $0.baseAddress!, rows: n, cols: C, eps: c.rmsNormEps)
            }
        }
    }

    // MARK: - Block reconstruction

    /// One step of block reconstruction: block l (its weights as they are in this graph, with
    /// `adapter` when given) runs on hidden states `input` (N, C) of the graph's batch, and L is the
    /// mean squared error of its output to `target` (N, C). With `gradient`, backward runs through
    /// the block alone: `observeLinearGradient` sees each of its linear layers' ∂L/∂y and input
    /// (their ∂L/∂W = dyᵀ x), and the gradient of the adapter's block-l factors is added to
    /// `adapterGradient` (the layout of its values). Returns L. The adapter's rank is the graph's.
    public func blockReconstructionLoss(
        _ l: Int, input: UnsafePointer<Float>, target: UnsafePointer<Float>, gradient: Bool,
        adapter: LoRAAdapter? = nil, adapterGradient: UnsafeMutablePointer<Float>? = nil
    ) -> Double {
        precondition(l >= 0 && l < config.numLayers && (adapter?.rank ?? 0) == rank)
        precondition(!gradient || adapter == nil || adapterGradient != nil)
        x.update(from: input, count: n * config.hiddenSize)
        func run(_ view: AdapterView?, _ lora: AdapterGradient?) -> Double {
            weights.blockForward(
                l, config: config, x: x, workspace: workspace, rope: rope, cache: nil, adapter: view, observe: nil)
            return reconstructionLoss(l, target: target, gradient: gradient, lora: lora)
        }
        guard let adapter else { return run(nil, nil) }
        return adapter.values.withUnsafeBufferPointer { p in
            run(
                AdapterView(adapter, params: p.baseAddress!),
                adapterGradient.map { AdapterGradient(adapter: adapter, params: p.baseAddress!, grad: $0) })
        }
    }

    /// The mean squared error of block l's output (in x) to `target`; with `gradient`, its
    /// backward through the block.
    private func reconstructionLoss(
        _ l: Int, target: UnsafePointer<Float>, gradient: Bool, lora: AdapterGradient?
    ) -> Double {
        let count = n * config.hiddenSize
        var loss = 0.0
        let g = 2 / Float(count)
        for i in 0..<count {
            let d = x[i] - target[i]
            loss += Double(d) * Double(d)
            dx[i] = g * d
        }
        if gradient { blockBackward(l, lora, inputGradient: false) }
        return loss / Double(count)
    }
}
