import Foundation
import LowRATensor

/// The learning-rate schedule's shape after warmup (`LRSchedule` in LowRATrain computes the rates).
public enum LRScheduleKind: String, Codable, Sendable, CaseIterable { case cosine, constant }

/// Hyper-parameters of a fine-tuning run. A checkpoint resumes only under the same values.
public struct FinetuneOptions: Codable, Sendable, Equatable {
    public var steps = 200
    public var lr: Float = 3e-4
    public var batch = 4
    public var gradAccum = 1
    public var seq = 256
    public var schedule = LRScheduleKind.cosine
    /// Warmup as a fraction of the steps.
    public var warmup: Double = 0.03
    public var weightDecay: Float = 0
    public var maxGradNorm: Float = 0.3
    /// Validation every N steps (0: only before and after).
    public var evalEvery = 0
    /// Checkpoint every N steps (0: only at the end).
    public var saveEvery = 0
    /// Validation uses the first N sequences of the validation file.
    public var validSequences = 16
    public var seed: UInt64 = 0
    /// Recompute each block in backward instead of saving its activations. It does not change
    /// the numbers, so it is not part of a checkpoint's identity (not encoded).
    public var recompute = false
    /// Distillation weight w: the loss is (1 − w)·CE + w·KL(teacher ‖ model) against a teacher
    /// model's logits (nil: plain cross-entropy; 1: distillation alone, the generic repair).
    public var distillWeight: Float?
    /// Codebook tuning: peak learning rate of every packed layer's levels, trained beside the
    /// adapter on the same schedule (`BaseTuner`; nil: the levels stay frozen).
    public var codebookLR: Float?
    /// Scale tuning: peak learning rate of every packed layer's block scales, as a relative step of
    /// each scale, trained beside the adapter on the same schedule (`BaseTuner`; nil: frozen).
    public var scaleLR: Float?

    public init() {}

    /// Whether the quantized base's own parameters train beside the adapter.
    public var tunesBase: Bool { codebookLR != nil || scaleLR != nil }

    public var warmupSteps: Int { Int((warmup * Double(steps)).rounded()) }

    public func validate() throws {
        func bad(_ m: String) -> LowRAError { LowRAError(.invalidArgument, m) }
        guard steps >= 1 else { throw bad("--steps must be positive") }
        guard lr > 0 || lr == 0 && tunesBase, lr.isFinite else {
            throw bad("--lr must be positive (0, holding the adapter, only while the base's scales or levels train)")
        }
        guard batch >= 1, gradAccum >= 1 else { throw bad("--batch and --grad-accum must be positive") }
        guard seq >= 2 else { throw bad("--seq must be at least 2") }
        guard (0..<1).contains(warmup) else { throw bad("--warmup is a fraction of the steps in [0, 1)") }
        guard weightDecay >= 0, maxGradNorm >= 0 else {
            throw bad("--weight-decay and --max-grad-norm must not be negative")
        }
        guard evalEvery >= 0, saveEvery >= 0, validSequences >= 1 else {
            throw bad("--eval-every, --save-every must not be negative")
        }
        if let w = distillWeight, !(w > 0 && w <= 1) { throw bad("--distill-weight must be in (0, 1]") }
        if let c = codebookLR, !(c > 0 && c.isFinite) { throw bad("--codebook-lr must be positive") }
        if let c = scaleLR, !(c > 0 && c.isFinite) { throw bad("--scale-lr must be positive") }
    }

    enum CodingKeys: String, CodingKey {
        case steps, lr, batch
        case gradAccum = "grad_accum"
        case seq, schedule, warmup
        case weightDecay = "weight_decay"
        case maxGradNorm = "max_grad_norm"
        case evalEvery = "eval_every"
        case saveEvery = "save_every"
        case validSequences = "valid_sequences"
        case seed
        case distillWeight = "distill_weight"
        case codebookLR = "codebook_lr"
        case scaleLR = "scale_lr"
    }
}
