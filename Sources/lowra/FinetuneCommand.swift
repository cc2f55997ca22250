import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRATrain
import LowRAPipeline
import LowRAAdapters

extension LRScheduleKind: ExpressibleByArgument {}

struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Train a LoRA adapter through the frozen (quantized) base.",
        discussion: """
            Starts from the quantized model's initial adapter (made by `quantize --init`), or from --adapter DIR, \
            or, when the model has none, from a fresh one (A Kaiming-uniform, B = 0) of --rank. Writes the adapter \
            in PEFT layout with lowra_manifest.json, train_log.csv and checkpoint.safetensors to --out.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Training data: plain text, or .jsonl with {\"prompt\", \"response\"} per line.") var train: String
    @Option(help: "Validation data (same formats).") var valid: String?
    @Option(help: "Output directory for the adapter, log and checkpoints.") var out: String
    @Option(help: "Start from this adapter instead of the model's initial one.") var adapter: String?
    @Option(
        name: .customLong("from"),
        help: ArgumentHelp(
            "Continue this adapter into its next version (its name, version + 1, the parent named on the card).",
            discussion: "`lowra card promote` then checks that the new version kept the parent's tasks."))
    var parent: String?
    @Option(help: "Optimizer steps.") var steps: Int = 200
    @Option(help: "Peak learning rate.") var lr: Float = 3e-4
    @Option(help: "Sequences per micro-batch.") var batch: Int = 4
    @Option(help: "Micro-batches per optimizer step.") var gradAccum: Int = 1
    @Option(help: "Tokens per sequence.") var seq: Int = 256
    @Option(help: "LoRA rank of a fresh adapter (must match a starting adapter's rank when given).") var rank: Int?
    @Option(help: "LoRA alpha of a fresh adapter (default: the rank).") var alpha: Float?
    @Option(help: "cosine | constant (after warmup).") var schedule: LRScheduleKind = .cosine
    @Option(help: "Warmup as a fraction of the steps.") var warmup: Double = 0.03
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 0
    @Option(help: "Clip the gradient to this global L2 norm (0: no clipping).") var maxGradNorm: Float = 0.3
    @Option(help: "Validate every N steps (0: before and after only).") var evalEvery: Int = 0
    @Option(help: "Checkpoint every N steps (0: at the end only).") var saveEvery: Int = 0
    @Option(help: "Validation sequences (the first N of --valid).") var validSequences: Int = 16
    @Option(help: "Seed of the data order (and of a fresh adapter).") var seed: UInt64 = 0
    @Flag(help: "Continue from the checkpoint in --out.") var resume = false
    @Flag(help: "Save only each block's input and recompute the block in backward (less memory, ~1/3 more compute).")
    var recompute = false
    @Option(
        help: """
            Distillation weight w in (0, 1]: loss (1 − w)·CE + w·KL(teacher ‖ model) against the teacher's logits \
            (default: none, plain cross-entropy; 1: distillation alone).
            """)
    var distillWeight: Float?
    @Option(help: "The teacher for --distill-weight (default: the quantized model's source model).")
    var teacher: String?
    @Option(
        help: ArgumentHelp(
            "Also tune the quantized base's levels at this peak learning rate (codebook tuning; lowra repair uses it).",
            discussion: "The tuned base goes to --out/tuned_base.safetensors; the adapter fits the tuned base only."))
    var codebookLR: Float?
    @Option(
        help: ArgumentHelp(
            "Also tune the quantized base's block scales at this peak learning rate (a relative step of each scale).",
            discussion: "With or without --codebook-lr; the tuned base goes to --out/tuned_base.safetensors."))
    var scaleLR: Float?
    @Flag(help: "Print one JSON object with the final metrics on stdout.") var json = false
    @Flag(
        help: ArgumentHelp(
            "Data-parallel over the ranks of `mpirun -np N` (each runs 1/N of every batch; rank 0 writes).",
            discussion: "The same global --batch, seed and steps give the single-process run's adapter."))
    var distributed = false

    func run() throws {
        let comm = distributed ? try Communicator.mpi() : .single
        do {
            try train(comm)
        } catch {
            // The other ranks would wait for this one in their next collective: end them all.
            if comm.size > 1 {
                printErr("Error on rank \(comm.rank): \((error as? LowRAError)?.message ?? "\(error)")")
                comm.abort(code: (error as? LowRAError)?.exitStatus ?? 1)
            }
            throw error
        }
        comm.finish()
    }

    func train(_ comm: Communicator) throws {
        // Rank 0 speaks and writes; the others only compute.
        let say: (String) -> Void = comm.isLeader ? { printErr($0) } : { _ in }
        var o = FinetuneOptions()
        (o.steps, o.lr, o.batch, o.gradAccum, o.seq) = (steps, lr, batch, gradAccum, seq)
        (o.schedule, o.warmup, o.weightDecay, o.maxGradNorm) = (schedule, warmup, weightDecay, maxGradNorm)
        (o.evalEvery, o.saveEvery, o.validSequences, o.seed) = (evalEvery, saveEvery, validSequences, seed)
        o.recompute = recompute
        o.distillWeight = distillWeight
        o.codebookLR = codebookLR
        o.scaleLR = scaleLR
        try o.validate()
        if teacher != nil && distillWeight == nil { throw ValidationError("--teacher needs --distill-weight") }
        if parent != nil && adapter != nil { throw ValidationError("--from starts from its adapter: drop --adapter") }
        if comm.size > 1 {
            say("distributed: \(comm.size) ranks (\(comm.localSize) on this host), \(workerCount) threads each")
        }
        let lock = comm.isLeader ? try OutputLock(out) : nil
        defer { withExtendedLifetime(lock) {} }
        let checkpoint = (out as NSString).appendingPathComponent(Trainer.checkpointFile)
        if !resume && FileManager.default.fileExists(atPath: checkpoint) {
            throw LowRAError(
                .invalidArgument,
                "\(out) already holds a training run; pass --resume to continue it or choose another --out")
        }
        let loaded = try modelOptions.load()
        guard seq <= loaded.config.maxPositions else {
            throw LowRAError(
                .invalidArgument, "--seq \(seq) is above the model's context of \(loaded.config.maxPositions) tokens")
        }
        let trainData = try TrainingData.load(train, tokenizer: loaded.tokenizer, seq: seq)
        let validData = try valid.map { try TrainingData.load($0, tokenizer: loaded.tokenizer, seq: seq) }
        let fingerprint = try baseFingerprint(modelOptions.model)
        var teacherModel: (model: LanguageModel, fingerprint: String)?
        var teacherPath: String?
        if distillWeight != nil {
            guard let path = teacher ?? loaded.quantManifest?.source else {
                throw ValidationError("--distill-weight needs --teacher (the model is not a quantized directory)")
            }
            let sha = teacher == nil ? loaded.quantManifest!.sourceSHA256 : try LowRAPipeline.fingerprint(path)
            teacherModel = (try LoadedModel.load(path).model, sha)
            teacherPath = path
            say("distilling from \(path) (weight \(distillWeight!))")
        }

        // The starting adapter.
        let initial = (modelOptions.model as NSString).appendingPathComponent(AdapterStore.initialAdapterDirectory)
        var start: LoRAAdapter
        var startManifest: AdapterManifest?
        if let dir = parent ?? adapter ?? (AdapterStore.isAdapterDirectory(initial) ? initial : nil) {
            guard AdapterStore.tunedBase(of: dir) == nil else {
                throw LowRAError(
                    .unsupported,
                    "\(dir) was fine-tuned over its own tuned base (\(AdapterStore.tunedBaseFile)); training cannot "
                        + "continue from it over this base: start from the model's initial adapter")
            }
            (start, startManifest) = try AdapterStore.load(dir, config: loaded.config, fingerprint: fingerprint)
            if let r = rank, r != start.rank {
                throw LowRAError(
                    .invalidArgument,
                    "--rank \(r) does not match the starting adapter's rank \(start.rank) (\(dir)); re-quantize with "
                        + "--rank \(r) or drop --rank"
                )
            }
            if let a = alpha, a != start.alpha {
                throw LowRAError(
                    .invalidArgument, "--alpha \(a) does not match the starting adapter's alpha \(start.alpha) (\(dir))"
                )
            }
            say("starting from \(dir) (rank \(start.rank), \(startManifest!.initialization) initialization)")
        } else {
            start = try LoRAAdapter(
                config: loaded.config, rank: rank ?? LoRAAdapter.defaultRank(loaded.config), alpha: alpha)
            start.initializeKaiming(seed: seed)
            say("starting from a fresh adapter (rank \(start.rank), A Kaiming-uniform, B = 0)")
        }

        let trainer = try Trainer(
            config: loaded.config, weights: loaded.model.weights, baseFingerprint: fingerprint, adapter: start,
            train: trainData, valid: validData, options: o, outDir: out, teacher: teacherModel, communicator: comm)
        // Progress goes to stderr, also with --json (which only shapes stdout).
        say(
            String(
                format:
                    "train: %d sequences of %d tokens (%@, %d tokens)%@; adapter %.2fM parameters; workspace %.0f MB",
                trainData.count, seq, trainData.kind.rawValue, trainData.tokens,
                validData.map { String(format: "; valid: %d sequences", min($0.count, validSequences)) } ?? "",
                Double(start.parameterCount) / 1e6, Double(trainer.workspaceBytes) / 1e6))
        let bar = ProgressBar("finetune")
        var lastReport = Date.distantPast
        let result = try trainer.run(resume: resume) { p in
            guard comm.isLeader else { return }
            let r = p.row
            if p.phase == "valid" {
                bar.update(p.step, p.steps, "validating…")
                return
            }
            var extra = String(format: "loss %.4f", r.trainLoss ?? .nan)
            if let v = r.validLoss { extra += String(format: " valid %.4f", v) }
            extra += String(format: " %.0f tok/s", r.tokensPerSecond ?? 0)
            bar.update(p.step, p.steps, extra)
            if !bar.interactive
                && (Date().timeIntervalSince(lastReport) > 30 || p.step == p.steps || r.validLoss != nil)
            {
                lastReport = Date()
                say("step \(p.step)/\(p.steps) \(extra)")
            }
        }

        guard comm.isLeader else { return }
        // The adapter, in PEFT layout, with what made it.
        var manifest = AdapterManifest(
            baseFingerprint: fingerprint, base: modelOptions.model,
            quantization: loaded.quantManifest.map { QuantSummary($0.report) }, rank: start.rank, alpha: start.alpha,
            initialization: startManifest?.initialization ?? "zeros")
        manifest.loftq = startManifest?.loftq
        manifest.training = TrainingRecord(
            options: o, trainFile: train, trainSHA256: trainData.sha256, validFile: valid,
            validSHA256: validData?.sha256,
            steps: result.steps, finalTrainLoss: result.finalTrainLoss, validLossBefore: result.validLossBefore,
            validLossAfter: result.validLossAfter, seconds: result.seconds)
        manifest.training?.teacher = teacherPath
        try AdapterStore.save(trainer.adapter, config: loaded.config, manifest: manifest, to: out)
        if let tuner = trainer.baseTuner {
            try tuner.save(to: (out as NSString).appendingPathComponent(BaseTuner.file))
        }
        try writeCard(manifest: manifest, result: result, validData: validData, fingerprint: fingerprint)
        let log = (out as NSString).appendingPathComponent(Trainer.logFile)
        if let csv = try? String(contentsOfFile: log, encoding: .utf8) {
            let svg = try trainingCurves(
                [((out as NSString).lastPathComponent, csv)], smooth: max(1, min(10, steps / 10)))
            try writeAtomically(Data(svg.utf8), to: (out as NSString).appendingPathComponent("loss.svg"))
        }
        let mem = MemoryStats.current()
        if json {
            var obj = try JSONSerialization.jsonObject(with: JSONEncoder().encode(result)) as! [String: Any]
            obj.removeValue(forKey: "log")
            obj["out"] = out
            obj["peak_rss_bytes"] = mem.peakResidentBytes
            if let v = result.validLossBefore { obj["valid_perplexity_before"] = exp(v) }
            if let v = result.validLossAfter { obj["valid_perplexity_after"] = exp(v) }
            printJSON(obj)
            return
        }
        if let b = result.validLossBefore, let a = result.validLossAfter {
            print(String(format: "valid loss %.4f → %.4f (perplexity %.2f → %.2f)", b, a, exp(b), exp(a)))
        } else if let a = result.validLossAfter {
            print(String(format: "valid loss %.4f (perplexity %.2f)", a, exp(a)))
        }
        print(
            String(
                format: "%d steps%@, final train loss %.4f, %.0f tokens/s, %.1fs, peak RSS %.0f MB",
                result.steps, result.resumedFrom.map { " (resumed at \($0))" } ?? "", result.finalTrainLoss ?? .nan,
                result.tokensPerSecond, result.seconds, Double(mem.peakResidentBytes) / 1e6))
        print(
            "saved \(out) (adapter_model.safetensors, adapter_config.json, \(AdapterStore.manifestFile), "
                + "\(AdapterCard.file), \(Trainer.logFile), loss.svg)")
    }

    /// The adapter's card: its identity kept from an earlier card in --out (name, version, task,
    /// owner, retirement), everything else from this run, the validation as its task evaluation.
    func writeCard(
        manifest: AdapterManifest, result: FinetuneResult, validData: TrainingData?, fingerprint: String
    ) throws {
        var card = AdapterCard(manifest: manifest, dir: out, trainingBytes: try fileBytes(train))
        if let parent {
            // The next version of the parent: its identity, one version up, the parent named.
            let p = try AdapterCard.loadOrMake(parent)
            (card.name, card.task, card.owner) = (p.name, p.task, p.owner)
            card.version = AdapterCard.nextVersion(p.version)
            let weights = (parent as NSString).appendingPathComponent(AdapterStore.loadedFiles(parent)[0])
            card.parent = AdapterCard.Parent(
                name: p.name, version: p.version, dir: URL(fileURLWithPath: parent).standardizedFileURL.path,
                weightsSHA256: try LowRAPipeline.fingerprint(weights))
        } else if let old = try? AdapterCard.load(out) {
            (card.name, card.version, card.task, card.owner) = (old.name, old.version, old.task, old.owner)
            card.retireAfter = old.retireAfter
        }
        if let after = result.validLossAfter, let validData, let valid {
            let tokens = validData.targetCount(first: validSequences)
            card.evaluations.append(
                AdapterCard.Evaluation(
                    role: .task,
                    dataset: AdapterCard.DataRecord(
                        file: valid, sha256: validData.sha256, bytes: try fileBytes(valid)),
                    tokens: tokens, perplexity: exp(after), baseFingerprint: fingerprint,
                    source: "finetune validation"))
        }
        try card.save(to: out)
    }
}
