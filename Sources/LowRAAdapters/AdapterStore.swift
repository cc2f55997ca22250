import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRAPipeline

/// What `lowra_manifest.json` records beside a PEFT adapter: the base it belongs to and how it
/// was made.
public struct AdapterManifest: Codable, Sendable {
    public var format = "lowra-adapter-v1"
    public var toolVersion = LowRAVersion.string
    /// `baseFingerprint(_:)` of the model the adapter was made on; loading checks it.
    public var baseFingerprint: String
    public var base: String
    /// The base's quantization: method, bits (nil for an unquantized base).
    public var quantization: QuantSummary?
    public var rank: Int
    public var alpha: Float
    /// "loftq" or "zeros".
    public var initialization: String
    /// Per-layer LoftQ numbers, when LoftQ made the initial adapter.
    public var loftq: [LoftQLayerReport]?
    public var training: TrainingRecord?
    /// Set when the factors are stored compressed (`adapter_model.lowra.safetensors`): 8, 4 or 2.
    public var compressionBits: Int?
    /// Set for an adapter trained elsewhere and imported (`lowra adapter import`): where it came from.
    public var imported: PEFTImport.Source?

    public init(
        baseFingerprint: String, base: String, quantization: QuantSummary?, rank: Int, alpha: Float,
        initialization: String
    ) {
        self.baseFingerprint = baseFingerprint
        self.base = base
        self.quantization = quantization
        self.rank = rank
        self.alpha = alpha
        self.initialization = initialization
    }

    enum CodingKeys: String, CodingKey {
        case format
        case toolVersion = "tool_version"
        case baseFingerprint = "base_fingerprint"
        case base, quantization, rank, alpha
        case initialization, loftq, training
        case compressionBits = "compression_bits"
        case imported
    }
}

public struct QuantSummary: Codable, Sendable, Equatable {
    public var method: String
    public var targetBits: Double
    public var codeBitsPerParam: Double
    public var storedBitsPerParam: Double
    public var assigner: String

    public init(_ r: QuantizeReport) {
        method = r.method.rawValue
        targetBits = r.targetBits
        codeBitsPerParam = r.codeBitsPerParam
        storedBitsPerParam = r.storedBitsPerParam
        assigner = r.assigner
    }

    enum CodingKeys: String, CodingKey {
        case method
        case targetBits = "target_bits"
        case codeBitsPerParam = "code_bits_per_param"
        case storedBitsPerParam = "stored_bits_per_param"
        case assigner
    }
}

public struct LoftQLayerReport: Codable, Sendable {
    public var name: String
    /// ‖W − Q‖_F / ‖W‖_F with plain quantization (zero init), and ‖W − Q − sBA‖_F / ‖W‖_F after LoftQ.
    public var zeroInitError: Double
    public var loftqError: Double

    public init(name: String, zeroInitError: Double, loftqError: Double) {
        self.name = name
        self.zeroInitError = zeroInitError
        self.loftqError = loftqError
    }

    enum CodingKeys: String, CodingKey {
        case name
        case zeroInitError = "zero_init_error"
        case loftqError = "loftq_error"
    }
}

/// How an adapter was trained.
public struct TrainingRecord: Codable, Sendable {
    public var options: FinetuneOptions
    public var trainFile: String
    public var trainSHA256: String
    public var validFile: String?
    public var validSHA256: String?
    public var steps: Int
    public var finalTrainLoss: Double?
    public var validLossBefore: Double?
    public var validLossAfter: Double?
    public var seconds: Double
    /// The teacher model distillation matched (with `options.distillWeight`).
    public var teacher: String?

    public init(
        options: FinetuneOptions, trainFile: String, trainSHA256: String, validFile: String?, validSHA256: String?,
        steps: Int,
        finalTrainLoss: Double?, validLossBefore: Double?, validLossAfter: Double?, seconds: Double
    ) {
        self.options = options
        self.trainFile = trainFile
        self.trainSHA256 = trainSHA256
        self.validFile = validFile
        self.validSHA256 = validSHA256
        self.steps = steps
        self.finalTrainLoss = finalTrainLoss
        self.validLossBefore = validLossBefore
        self.validLossAfter = validLossAfter
        self.seconds = seconds
    }

    enum CodingKeys: String, CodingKey {
        case options
        case trainFile = "train_file"
        case trainSHA256 = "train_sha256"
        case validFile = "valid_file"
        case validSHA256 = "valid_sha256"
        case steps
        case finalTrainLoss = "final_train_loss"
        case validLossBefore = "valid_loss_before"
        case validLossAfter = "valid_loss_after"
        case seconds, teacher
    }
}

/// The fingerprint an adapter records of its base: for a quantized LowRA directory the sha256 of
/// its `config.json` and `model.safetensors` (not of adapters stored beside them), otherwise of
/// the model file or directory.
public func baseFingerprint(_ path: String) throws -> String {
    guard QuantizedModelStore.isQuantizedDirectory(path) else { return try fingerprint(path) }
    var h = SHA256()
    for f in ["config.json", "model.safetensors"] {
        h.update(Array(f.utf8))
        try hashFile((path as NSString).appendingPathComponent(f), into: &h)
    }
    return h.finalize()
}

/// Adapters in Hugging Face PEFT layout: `adapter_config.json`, `adapter_model.safetensors`
/// with keys `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (r, in) and
/// `….lora_B.weight` (out, r), plus LowRA's `lowra_manifest.json`. When the base keeps GGUF's
/// interleaved-RoPE row order for q and k, lora_B rows of q_proj and k_proj are stored in the
/// Hugging Face (half-split) order, so the file works with the Hugging Face model.
public enum AdapterStore {
    public static let manifestFile = "lowra_manifest.json"
    /// Where `quantize --init` keeps the initial adapter inside a quantized model directory.
    public static let initialAdapterDirectory = "adapter"
    /// The base's tuned levels and block scales beside an adapter fine-tuned with them (`finetune
    /// --codebook-lr / --scale-lr`): such an adapter runs only over that tuned base, never on a shelf.
    public static let tunedBaseFile = "tuned_base.safetensors"

    /// The tuned base beside the adapter in `dir`, if it was fine-tuned over one (nil: it fits the shared base).
    public static func tunedBase(of dir: String) -> String? {
        let file = (dir as NSString).appendingPathComponent(tunedBaseFile)
        return FileManager.default.fileExists(atPath: file) ? file : nil
    }

    /// The files of `dir` that loading its adapter reads (weights, configuration, manifest, card):
    /// what a signature must cover.
    public static func loadedFiles(_ dir: String) -> [String] {
        ["adapter_model.safetensors", compressedFile, "adapter_config.json", manifestFile, AdapterCard.file].filter {
            FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent($0))
        }
    }

    public static func isAdapterDirectory(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(manifestFile))
    }

    static func key(_ s: LoRAAdapter.Slot, _ factor: String) -> String {
        "base_model.model.\(WeightNaming.huggingFace.linear(s.layer, s.kind)).lora_\(factor).weight"
    }

    public static func save(
        _ adapter: LoRAAdapter, config: ModelConfig, manifest: AdapterManifest, to dir: String
    ) throws {
        try save(rank: adapter.rank, alpha: adapter.alpha, config: config, manifest: manifest, to: dir) { s in
            let f = adapter.factors(s)
            return (Array(f.a), Array(f.b))
        }
    }

    /// `save` for an adapter that is never whole in memory: `factors` gives each slot's A (rank, in)
    /// and B (out, rank) in the runtime's row order, once, in slot order, while the file is written.
    public static func save(
        rank: Int, alpha: Float, config: ModelConfig, manifest: AdapterManifest, to dir: String,
        factors: @escaping (LoRAAdapter.Slot) throws -> (a: [Float], b: [Float])
    ) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func p(_ f: String) -> String { (dir as NSString).appendingPathComponent(f) }
        // Streamed one factor at a time (no in-memory copy of the whole file).
        var w = SafeTensorsPlan()
        w.metadata["format"] = "pt"
        var pendingB: [Float]?
        for s in try LoRAAdapter.layout(config: config, rank: rank).slots {
            w.add(key(s, "A"), shape: [rank, s.inFeatures]) {
                let f = try factors(s)
                precondition(f.a.count == rank * s.inFeatures && f.b.count == s.outFeatures * rank)
                pendingB = f.b
                return f.a
            }
            let permuted = config.ropeLayout == .interleaved && [.q, .k].contains(s.kind)
            w.add(key(s, "B"), shape: [s.outFeatures, rank]) {
                let b = pendingB!
                pendingB = nil
                return permuted
                    ? RopeLayout.interleaved.reorderRows(
                        b[...], rowLength: rank, headDim: config.headDim, to: .halfSplit) : b
            }
        }
        try w.write(to: p("adapter_model.safetensors"))
        try writeConfigAndManifest(
            manifest, rank: rank, alpha: alpha,
            peft: [
                "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false, "inference_mode": true,
                "init_lora_weights": manifest.initialization == "loftq" ? "loftq" : true,
            ], to: dir)
    }

    /// `adapter_config.json` (PEFT's keys plus `peft`), then the manifest, last: it marks the
    /// adapter complete.
    static func writeConfigAndManifest(
        _ manifest: AdapterManifest, rank: Int, alpha: Float, peft extra: [String: Any], to dir: String
    ) throws {
        let peft: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": Double(alpha),
            "target_modules": LinearKind.allCases.map(\.moduleName), "base_model_name_or_path": manifest.base,
        ].merging(extra) { a, _ in a }
        try writeAtomically(
            try JSONSerialization.data(withJSONObject: peft, options: [.prettyPrinted, .sortedKeys]),
            to: (dir as NSString).appendingPathComponent("adapter_config.json"))
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(manifest), to: (dir as NSString).appendingPathComponent(manifestFile))
    }

    /// The factors of a compressed adapter (`CompressedAdapter`), in the runtime's row order.
    public static let compressedFile = "adapter_model.lowra.safetensors"

    static func compressedKey(_ s: LoRAAdapter.Slot, _ factor: String) -> String {
        "base_model.model.\(WeightNaming.huggingFace.linear(s.layer, s.kind)).lora_\(factor)"
    }

    /// Writes a compressed adapter: its factors (packed, or Q8_0 bytes), the PEFT config for
    /// reference, and the manifest (with `compression_bits`) last.
    public static func saveCompressed(
        _ c: CompressedAdapter, config: ModelConfig, manifest: AdapterManifest, to dir: String
    ) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let slots = try LoRAAdapter.layout(config: config, rank: c.rank).slots
        var w = SafeTensorsPlan()
        w.metadata["format"] = "lowra-compressed-adapter-v1"
        w.metadata["bits"] = String(c.bits)
        for (s, f) in zip(slots, c.factors) {
            for (name, m) in [(compressedKey(s, "A"), f.a), (compressedKey(s, "BT"), f.bT)] {
                switch m {
                case .packed(let p): QuantizedModelStore.addPackedTensors(&w, name, p)
                case .q8(_, let cols, let blocks):
                    w.add(name + ".q8_0", bytes: blocks)
                    w.metadata[name + ".cols"] = String(cols)
                }
            }
        }
        try w.write(to: (dir as NSString).appendingPathComponent(compressedFile))
        var m = manifest
        m.compressionBits = c.bits
        try writeConfigAndManifest(m, rank: c.rank, alpha: c.alpha, peft: ["lowra_compression_bits": c.bits], to: dir)
    }

    /// A compressed adapter for the base with `fingerprint`, kept compressed.
    public static func loadCompressed(
        _ dir: String, config: ModelConfig, fingerprint: String
    ) throws -> (CompressedAdapter, AdapterManifest) {
        let manifest = try checkedManifest(dir, fingerprint: fingerprint)
        guard let bits = manifest.compressionBits, CompressedAdapter.supportedBits.contains(bits) else {
            throw LowRAError(.malformedFile, "\(dir): not a compressed adapter (no compression_bits in its manifest)")
        }
        let file = try SafeTensorsFile(path: (dir as NSString).appendingPathComponent(compressedFile))
        let slots = try LoRAAdapter.layout(config: config, rank: manifest.rank).slots
        var factors = [(a: CompressedAdapter.Matrix, bT: CompressedAdapter.Matrix)]()
        for s in slots {
            func matrix(_ factor: String, cols: Int) throws -> CompressedAdapter.Matrix {
                let name = compressedKey(s, factor)
                if bits != 8 {
                    return .packed(try QuantizedModelStore.readPacked(file, name, out: manifest.rank, in: cols))
                }
                let count = manifest.rank * cols / 32 * 34
                guard cols % 32 == 0, file.tensors[name + ".q8_0"]?.dtype == .u8,
                    file.tensors[name + ".q8_0"]?.shape == [count], Int(file.metadata[name + ".cols"] ?? "") == cols
                else {
                    throw LowRAError(.malformedFile, "\(dir): \(name).q8_0 is missing or not \(count) bytes")
                }
                let blocks = Array(try file.held(name + ".q8_0", as: UInt8.self))
                return .q8(rows: manifest.rank, cols: cols, blocks: blocks)
            }
            factors.append((try matrix("A", cols: s.inFeatures), try matrix("BT", cols: s.outFeatures)))
        }
        return (CompressedAdapter(rank: manifest.rank, alpha: manifest.alpha, bits: bits, factors: factors), manifest)
    }

    static func checkedManifest(_ dir: String, fingerprint: String) throws -> AdapterManifest {
        let manifest = try loadManifest(dir)
        guard manifest.baseFingerprint == fingerprint else {
            throw LowRAError(
                .invalidArgument,
                "\(dir): this adapter was made for another base (\(manifest.base), fingerprint "
                    + "\(manifest.baseFingerprint.prefix(12))…), not this model (\(fingerprint.prefix(12))…)")
        }
        return manifest
    }

    public static func loadManifest(_ dir: String) throws -> AdapterManifest {
        let path = (dir as NSString).appendingPathComponent(manifestFile)
        guard FileManager.default.fileExists(atPath: path) else {
            throw LowRAError(.io, "\(dir): not a LowRA adapter (no \(manifestFile); LowRA needs it to check the base)")
        }
        do {
            return try JSONDecoder().decode(AdapterManifest.self, from: try mapFile(path))
        } catch {
            throw LowRAError.malformed(path, "cannot read the adapter manifest (\(error))")
        }
    }

    /// Slot `s`'s factors A (rank × in) and B (out × rank) from a PEFT file, stored under keys `a`
    /// and `b`: shapes checked, B's q/k rows taken from Hugging Face order into the base's.
    static func readFactors(
        _ file: SafeTensorsFile, _ s: LoRAAdapter.Slot, a: String, b: String, rank: Int, config: ModelConfig,
        dir: String
    ) throws -> (a: [Float], b: [Float]) {
        for (k, shape) in [(a, [rank, s.inFeatures]), (b, [s.outFeatures, rank])] {
            guard let info = file.tensors[k] else {
                throw LowRAError(.missingTensor, "\(dir): adapter tensor \(k) not found")
            }
            guard info.shape == shape else {
                throw LowRAError(
                    .shapeMismatch,
                    "\(dir): adapter tensor \(k) has shape \(info.shape), expected \(shape) for this base")
            }
        }
        var factorB = try file.floats(b)
        if config.ropeLayout == .interleaved && [.q, .k].contains(s.kind) {
            factorB = RopeLayout.halfSplit.reorderRows(
                factorB[...], rowLength: rank, headDim: config.headDim, to: .interleaved)
        }
        return (try file.floats(a), factorB)
    }

    /// Loads the adapter in `dir` for the base whose fingerprint is `fingerprint`; an adapter made
    /// for another base, or whose tensors do not fit the model, is refused.
    public static func load(
        _ dir: String, config: ModelConfig, fingerprint: String
    ) throws -> (LoRAAdapter, AdapterManifest) {
        let manifest = try checkedManifest(dir, fingerprint: fingerprint)
        if manifest.compressionBits != nil {
            let (c, m) = try loadCompressed(dir, config: config, fingerprint: fingerprint)
            return (try c.expanded(config: config), m)
        }
        var adapter = try LoRAAdapter(config: config, rank: manifest.rank, alpha: manifest.alpha)
        let file = try SafeTensorsFile(path: (dir as NSString).appendingPathComponent("adapter_model.safetensors"))
        for s in adapter.slots {
            let (a, b) = try readFactors(
                file, s, a: key(s, "A"), b: key(s, "B"), rank: adapter.rank, config: config, dir: dir)
            adapter.setFactors(s, a: a, b: b)
        }
        guard adapter.values.allSatisfy(\.isFinite) else {
            throw LowRAError(.malformedFile, "\(dir): the adapter holds non-finite values")
        }
        return (adapter, manifest)
    }
}
