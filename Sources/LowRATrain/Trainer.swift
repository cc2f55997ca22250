import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRAPipeline
import LowRAAdapters

/// One row of the loss log (`train_log.csv`).
public struct TrainLogRow: Codable, Sendable, Equatable {
    public var step: Int
    public var lr: Float
    public var trainLoss: Double?
    public var gradNorm: Double?
    public var tokensPerSecond: Double?
    public var validLoss: Double?

    enum CodingKeys: String, CodingKey {
        case step, lr
        case trainLoss = "train_loss"
        case gradNorm = "grad_norm"
        case tokensPerSecond = "tokens_per_s"
        case validLoss =
            "valid_loss"
    }
}

public struct TrainProgress: Sendable {
    public var step: Int
    public var steps: Int
    public var row: TrainLogRow
    public var elapsed: Double
    /// "train", "valid" (validation running) or "checkpoint".
    public var phase: String
}

public struct FinetuneResult: Codable, Sendable {
    public var steps: Int
    public var resumedFrom: Int?
    public var finalTrainLoss: Double?
    public var validLossBefore: Double?
    public var validLossAfter: Double?
    public var tokensPerSecond: Double
    public var seconds: Double
    public var trainedTokens: Int
    public var adapterParameters: Int
    public var workspaceBytes: Int
    /// Data-parallel ranks (1: one process), the seconds this rank spent waiting for the others at
    /// each step's end, and then in the all-reduce itself.
    public var ranks: Int = 1
    public var waitSeconds: Double = 0
    public var communicationSeconds: Double = 0
    public var log: [TrainLogRow]

    enum CodingKeys: String, CodingKey {
        case steps
        case resumedFrom = "resumed_from"
        case finalTrainLoss = "final_train_loss"
        case validLossBefore =
            "valid_loss_before"
        case validLossAfter = "valid_loss_after"
        case tokensPerSecond = "tokens_per_s"
        case seconds
        case trainedTokens =
            "trained_tokens"
        case adapterParameters = "adapter_parameters"
        case workspaceBytes = "workspace_bytes"
        case ranks
        case waitSeconds = "wait_seconds"
        case communicationSeconds = "communication_seconds"
        case log
    }
}

/// The fine-tuning loop: AdamW on the adapter only, warmup + cosine/constant schedule, global
/// norm clipping, gradient accumulation, periodic validation, atomic checkpoints and an exact
/// resume. Deterministic for a given seed: batches are a pure function of (seed, step), and
/// every reduction runs in a fixed order.
///
/// Data-parallel over a `Communicator` of n ranks: each rank runs its n-th of every micro-batch
/// (the batch must divide), the gradients are summed over the ranks in one buffer per step, each
/// share weighted by its targets so that the sum is the single-process mean; every rank then
/// takes the same step. Validation is split the same way; rank 0 alone writes checkpoints and logs.
public final class Trainer {
    public static let checkpointFile = "checkpoint.safetensors"
    public static let logFile = "train_log.csv"

    public let config: ModelConfig
    public let options: FinetuneOptions
    public let train: TrainingData
    public let valid: TrainingData?
    public let outDir: String
    /// Identifies the run a checkpoint belongs to (base, data, options, initial adapter shape).
    public let runKey: String
    private let graph: TrainingGraph
    /// With distillation: the model whose logits the adapter learns to match.
    private let teacher: LanguageModel?
    public let communicator: Communicator
    /// Sequences of each micro-batch this rank runs.
    private let localBatch: Int

    public private(set) var adapter: LoRAAdapter
    private var adam: AdamW
    /// With `options.codebookLR` / `scaleLR`: the base's levels and block scales being tuned.
    public let baseTuner: BaseTuner?
    private var log = [TrainLogRow]()
    private var step = 0

    public init(
        config: ModelConfig, weights: ModelWeights, baseFingerprint: String, adapter: LoRAAdapter, train: TrainingData,
        valid: TrainingData?, options: FinetuneOptions, outDir: String,
        teacher: (model: LanguageModel, fingerprint: String)? = nil, communicator: Communicator = .single
    ) throws {
        try options.validate()
        if communicator.size > 1 {
            guard options.batch % communicator.size == 0 else {
                throw LowRAError(
                    .invalidArgument,
                    "--batch \(options.batch) does not split over \(communicator.size) ranks: use a multiple of the "
                        + "ranks")
            }
            guard teacher == nil, !options.tunesBase else {
                throw LowRAError(
                    .unsupported, "distributed training trains the adapter alone (no distillation or base tuning)")
            }
        }
        self.communicator = communicator
        localBatch = options.batch / communicator.size
        guard (options.distillWeight != nil) == (teacher != nil) else {
            throw LowRAError(.invalidArgument, "distillation needs both a weight and a teacher model")
        }
        if let t = teacher?.model.config {
            guard t.vocabSize == config.vocabSize, t.hiddenSize == config.hiddenSize else {
                throw LowRAError(
                    .shapeMismatch,
                    "the teacher (vocabulary \(t.vocabSize), hidden \(t.hiddenSize)) does not match the model")
            }
        }
        self.teacher = teacher?.model
        guard train.seq == options.seq, valid.map({ $0.seq == options.seq }) ?? true else {
            throw LowRAError(.invalidArgument, "training data was cut for another sequence length")
        }
        self.config = config
        self.options = options
        self.train = train
        self.valid = valid
        self.outDir = outDir
        self.adapter = adapter
        adam = AdamW(count: adapter.values.count, weightDecay: options.weightDecay)
        graph = try TrainingGraph(
            config: config, weights: weights, batch: localBatch, seq: options.seq, rank: adapter.rank,
            recompute: options.recompute, distill: teacher != nil)
        baseTuner =
            options.tunesBase
            ? try BaseTuner(weights: weights, levels: options.codebookLR != nil, scales: options.scaleLR != nil) : nil
        if let baseTuner { baseTuner.attach(to: graph) }
        let enc = JSONEncoder()
        enc.outputFormatting = .sortedKeys
        let opts = String(decoding: try enc.encode(options), as: UTF8.self)
        runKey =
            "base=\(baseFingerprint) train=\(train.sha256) valid=\(valid?.sha256 ?? "-") "
            + "rank=\(adapter.rank) alpha=\(adapter.alpha) options=\(opts)"
            + (teacher.map { " teacher=\($0.fingerprint)" } ?? "")
    }

    public var workspaceBytes: Int { graph.workspaceBytes }

    private func path(_ f: String) -> String { (outDir as NSString).appendingPathComponent(f) }

    /// Mean loss over the first `validSequences` validation sequences (each rank its share of
    /// every batch, the sums added over the ranks).
    public func validationLoss() throws -> Double? {
        guard let valid else { return nil }
        let n = min(valid.count, options.validSequences)
        var sums = [0.0, 0.0]  // loss, targets
        var start = communicator.rank * localBatch
        while start < n {
            var (inp, tgt) = valid.batch(start: start, size: min(localBatch, n - start), seed: 0, shuffle: false)
            while inp.count < localBatch * options.seq {  // pad a short last batch with masked rows
                inp.append(inp[0])
                tgt.append(-1)
            }
            let r = try graph.loss(inputs: inp, targets: tgt, adapter: adapter)
            sums[0] += r.loss
            sums[1] += Double(r.count)
            start += options.batch
        }
        try communicator.sum(&sums)
        return sums[1] > 0 ? sums[0] / sums[1] : nil
    }

    // MARK: - Checkpoints

    private struct CheckpointState: Codable {
        var runKey: String
        var step: Int
        var adamStep: Int
        var log: [TrainLogRow]
        var codebookAdamStep: Int?
        var scaleAdamStep: Int?
    }

    /// Streamed from the arrays themselves (no in-memory copy of the file: at 7B the adapter and
    /// its moments are 480 MB), into a temporary file renamed into place.
    private func saveCheckpoint() throws {
        guard communicator.isLeader else { return }
        var w = SafeTensorsPlan()
        let state = CheckpointState(
            runKey: runKey, step: step, adamStep: adam.step, log: log, codebookAdamStep: baseTuner?.levelAdam.step,
            scaleAdamStep: baseTuner?.scaleAdam.step)
        w.metadata["lowra_checkpoint"] = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
        let (values, m, v) = (adapter.values, adam.m, adam.v)
        w.add("adapter", shape: [values.count]) { values }
        w.add("adam_m", shape: [m.count]) { m }
        w.add("adam_v", shape: [v.count]) { v }
        if let t = baseTuner, t.tunesLevels {
            let (levels, cm, cv) = (t.levels, t.levelAdam.m, t.levelAdam.v)
            w.add("codebook_levels", shape: [levels.count]) { levels }
            w.add("codebook_m", shape: [cm.count]) { cm }
            w.add("codebook_v", shape: [cv.count]) { cv }
        }
        if let t = baseTuner, t.tunesScales {
            let (factors, sm, sv) = (t.scaleFactors, t.scaleAdam.m, t.scaleAdam.v)
            w.add("scale_factors", shape: [factors.count]) { factors }
            w.add("scale_m", shape: [sm.count]) { sm }
            w.add("scale_v", shape: [sv.count]) { sv }
        }
        try w.write(to: path(Self.checkpointFile))
    }

    /// Restores the last checkpoint in the output directory; returns its step (nil: none).
    public func resume() throws -> Int? {
        let file = path(Self.checkpointFile)
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        let st = try SafeTensorsFile(path: file)
        guard let json = st.metadata["lowra_checkpoint"],
            let state = try? JSONDecoder().decode(CheckpointState.self, from: Data(json.utf8))
        else { throw LowRAError.malformed(file, "not a LowRA training checkpoint") }
        guard state.runKey == runKey else {
            throw LowRAError(
                .invalidArgument,
                "\(file) belongs to another run (different base, data, rank or hyper-parameters); use another --out or "
                    + "drop --resume"
            )
        }
        let values = try st.floats("adapter")
        let m = try st.floats("adam_m")
        let v = try st.floats("adam_v")
        guard values.count == adapter.values.count, m.count == values.count, v.count == values.count else {
            throw LowRAError(.shapeMismatch, "\(file): checkpoint tensors do not fit the adapter")
        }
        if let t = baseTuner {
            func floats(_ name: String, if tuned: Bool) throws -> [Float] { tuned ? try st.floats(name) : [] }
            var (la, sa) = (t.levelAdam, t.scaleAdam)
            (la.m, la.v, la.step) = (
                try floats("codebook_m", if: t.tunesLevels), try floats("codebook_v", if: t.tunesLevels),
                state.codebookAdamStep ?? 0
            )
            (sa.m, sa.v, sa.step) = (
                try floats("scale_m", if: t.tunesScales), try floats("scale_v", if: t.tunesScales),
                state.scaleAdamStep ?? 0
            )
            try t.restore(
                levels: try floats("codebook_levels", if: t.tunesLevels), levelAdam: la,
                scaleFactors: try floats("scale_factors", if: t.tunesScales), scaleAdam: sa, graph: graph)
        }
        adapter.values = values
        adam.m = m
        adam.v = v
        adam.step = state.adamStep
        step = state.step
        log = state.log
        return step
    }

    private func writeLog() throws {
        guard communicator.isLeader else { return }
        func f(_ x: Double?) -> String { x.map { String(format: "%.6f", $0) } ?? "" }
        var csv = "step,lr,train_loss,grad_norm,tokens_per_s,valid_loss\n"
        for r in log {
            csv +=
                "\(r.step),\(String(format: "%.6g", r.lr)),\(f(r.trainLoss)),\(f(r.gradNorm)),"
                + "\(r.tokensPerSecond.map { String(format: "%.1f", $0) } ?? ""),\(f(r.validLoss))\n"
        }
        try writeAtomically(Data(csv.utf8), to: path(Self.logFile))
    }

    /// The teacher's final normed hidden states for a batch of inputs (each sequence from
    /// position 0), for the distillation loss; nil without a teacher.
    private func teacherTarget(_ inputs: [Int]) throws -> TrainingGraph.Teacher? {
        guard let teacher, let w = options.distillWeight else { return nil }
        var hidden = [Float]()
        hidden.reserveCapacity(inputs.count * config.hiddenSize)
        for b in 0..<options.batch {
            hidden += try teacher.hidden(Array(inputs[(b * options.seq)..<((b + 1) * options.seq)]), cache: nil)
        }
        return TrainingGraph.Teacher(hidden: hidden, head: teacher.weights.outputHead, weight: w)
    }

    // MARK: - The loop

    /// Trains to `options.steps` (or stops after step `until`, as an interrupted run would), from
    /// the checkpoint when `resume` is set and one exists.
    public func run(
        resume: Bool = false, until: Int? = nil, progress: ((TrainProgress) -> Void)? = nil
    ) throws -> FinetuneResult {
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let resumedFrom = resume ? try self.resume() : nil
        if resumedFrom == nil {
            step = 0
            log = []
            progress?(
                TrainProgress(
                    step: 0, steps: options.steps, row: TrainLogRow(step: 0, lr: 0), elapsed: 0, phase: "valid"))
            if let v = try validationLoss() { log.append(TrainLogRow(step: 0, lr: 0, validLoss: v)) }
        }
        let schedule = LRSchedule(
            kind: options.schedule, peak: options.lr, warmupSteps: options.warmupSteps, totalSteps: options.steps)
        // The same shape at peak 1: the base's rates are their peaks times it.
        var shape = schedule
        shape.peak = 1
        let t0 = Date()
        let (communicated, waited) = (communicator.seconds, communicator.waitSeconds)
        var trainedTokens = 0
        var grad = [Float](repeating: 0, count: adapter.values.count)
        while step < min(options.steps, until ?? options.steps) {
            let ts = Date()
            for i in grad.indices { grad[i] = 0 }
            baseTuner?.zeroGradients()
            var sums = [0.0, 0.0]  // loss, targets
            for micro in 0..<options.gradAccum {
                let start = (step * options.gradAccum + micro) * options.batch
                var (inp, tgt) = train.batch(start: start, size: options.batch, seed: options.seed)
                var gradScale = 1 / Float(options.gradAccum)
                if communicator.size > 1 {
                    // This rank's share of the micro-batch, weighted by its share of the targets.
                    let all = TrainingGraph.targetCount(tgt)
                    let rows = (communicator.rank * localBatch * options.seq)..<((communicator.rank + 1) * localBatch
                        * options.seq)
                    (inp, tgt) = (Array(inp[rows]), Array(tgt[rows]))
                    let mine = TrainingGraph.targetCount(tgt)
                    gradScale = all > 0 ? Float(mine) / Float(all) / Float(options.gradAccum) : 0
                }
                let r = try graph.lossAndGradient(
                    inputs: inp, targets: tgt, adapter: adapter, gradient: &grad,
                    gradScale: gradScale, teacher: try teacherTarget(inp))
                sums[0] += r.loss
                sums[1] += Double(r.count)
            }
            try communicator.barrier()  // apart, so that the sum's time is the communication alone
            try communicator.sum(&grad)
            try communicator.sum(&sums)
            let loss = sums[1] > 0 ? sums[0] / sums[1] : 0
            let norm = clipGradientNorm(&grad, maxNorm: options.maxGradNorm)
            guard loss.isFinite, norm.isFinite else {
                throw LowRAError(
                    .diverged, "training diverged at step \(step + 1): loss \(loss), gradient norm \(norm)")
            }
            let lr = schedule.rate(at: step)
            if options.lr > 0 { adam.update(&adapter.values, gradient: grad, lr: lr) }  // lr 0: the adapter is held
            if let baseTuner {
                let f = shape.rate(at: step)
                try baseTuner.step(
                    levelLR: options.codebookLR.map { $0 * f }, scaleLR: options.scaleLR.map { $0 * f }, graph: graph)
            }
            step += 1
            let tokens = options.batch * options.gradAccum * options.seq
            trainedTokens += tokens
            var row = TrainLogRow(
                step: step, lr: lr, trainLoss: loss, gradNorm: norm,
                tokensPerSecond: Double(tokens) / Date().timeIntervalSince(ts))
            let last = step == options.steps
            if options.evalEvery > 0 && step % options.evalEvery == 0 || last {
                progress?(
                    TrainProgress(
                        step: step, steps: options.steps, row: row, elapsed: Date().timeIntervalSince(t0),
                        phase: "valid"))
                row.validLoss = try validationLoss()
            }
            log.append(row)
            progress?(
                TrainProgress(
                    step: step, steps: options.steps, row: row, elapsed: Date().timeIntervalSince(t0), phase: "train"))
            if options.saveEvery > 0 && step % options.saveEvery == 0 || last {
                try saveCheckpoint()
                try writeLog()
            }
        }
        let seconds = Date().timeIntervalSince(t0)
        let trainRows = log.filter { $0.trainLoss != nil }
        return FinetuneResult(
            steps: step, resumedFrom: resumedFrom, finalTrainLoss: trainRows.last?.trainLoss,
            validLossBefore: log.first { $0.step == 0 }?.validLoss, validLossAfter: log.last?.validLoss,
            tokensPerSecond: seconds > 0 ? Double(trainedTokens) / seconds : 0, seconds: seconds,
            trainedTokens: trainedTokens,
            adapterParameters: adapter.parameterCount, workspaceBytes: graph.workspaceBytes, ranks: communicator.size,
            waitSeconds: communicator.waitSeconds - waited, communicationSeconds: communicator.seconds - communicated,
            log: log)
    }
}
