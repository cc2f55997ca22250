import Foundation
import LowRAModel
import LowRAIO
import LowRATensor
import LowRATokenizer

/// A model with its tokenizer, loaded from a GGUF file or a Hugging Face directory.
public struct LoadedModel: Sendable {
    public let path: String
    public let format: String  // "gguf" or "huggingface"
    public var model: LanguageModel
    public let tokenizer: Tokenizer
    /// Tensor name, dtype as stored, shape: for `inspect`.
    public let storedTensors: [(name: String, dtype: String, shape: [Int])]
    public let fileBytes: Int
    public let metadata: [String: String]
    /// Set for quantized LowRA directories.
    public var quantManifest: QuantManifest? = nil

    public var config: ModelConfig { model.config }

    /// Progress: (step, total) while tensors load.
    public static func load(_ path: String, progress: ((Int, Int) -> Void)? = nil) throws -> LoadedModel {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LowRAError(.io, "\(path): no such file or directory")
        }
        if isDir.boolValue && QuantizedModelStore.isQuantizedDirectory(path) { return try loadQuantized(path) }
        return isDir.boolValue ? try loadHuggingFace(path, progress: progress) : try loadGGUF(path, progress: progress)
    }

    /// A validated `config.json`.
    public static func readConfig(_ path: String) throws -> ModelConfig {
        let data = try mapFile(path)
        let config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: data)
        } catch {
            throw LowRAError.malformed("config.json", "cannot read the model config (\(error))")
        }
        try config.validate()
        return config
    }

    static func loadQuantized(_ dir: String) throws -> LoadedModel {
        func p(_ f: String) -> String { (dir as NSString).appendingPathComponent(f) }
        let manifest = try QuantizedModelStore.loadManifest(dir)
        let config = try readConfig(p("config.json"))
        let file = try SafeTensorsFile(path: p("model.safetensors"))
        let weights = try QuantizedModelStore.loadWeights(file, config: config)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: p("model.safetensors"))[.size] as? Int) ?? 0
        var meta = file.metadata
        meta["method"] = manifest.report.method.rawValue
        meta["code_bits_per_param"] = String(format: "%.4f", manifest.report.codeBitsPerParam)
        meta["stored_bits_per_param"] = String(format: "%.4f", manifest.report.storedBitsPerParam)
        return LoadedModel(
            path: dir,
            format: "lowra quantized (\(manifest.report.method.rawValue), \(manifest.report.targetBits) bits)",
            model: try LanguageModel(config: config, weights: weights),
            tokenizer: try Tokenizer(tokenizerJSON: p("tokenizer.json")),
            storedTensors: file.tensors.values.sorted { $0.name < $1.name }.map {
                ($0.name, $0.dtype.rawValue, $0.shape)
            },
            fileBytes: bytes, metadata: meta, quantManifest: manifest)
    }

    static func loadGGUF(_ path: String, progress: ((Int, Int) -> Void)?) throws -> LoadedModel {
        let gguf = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: gguf)
        try config.validate()
        let tokenizer = try Tokenizer(gguf: gguf)
        let weights = try ModelWeights.load(from: gguf, naming: .gguf, config: config, progress: progress)
        var meta = [String: String]()
        for (k, v) in gguf.metadata where !k.hasPrefix("tokenizer.ggml.") { meta[k] = v.summary }
        return LoadedModel(
            path: path, format: "gguf \(gguf.version)", model: try LanguageModel(config: config, weights: weights),
            tokenizer: tokenizer, storedTensors: gguf.tensors.map { ($0.name, $0.typeName, $0.shape) },
            fileBytes: gguf.fileSize, metadata: meta)
    }

    static func loadHuggingFace(_ dir: String, progress: ((Int, Int) -> Void)?) throws -> LoadedModel {
        func p(_ f: String) -> String { (dir as NSString).appendingPathComponent(f) }
        let config = try readConfig(p("config.json"))
        let shards = try checkpointShards(dir)
        let files = try shards.map { try SafeTensorsFile(path: p($0)) }
        let source = SafeTensorsSet(files: files, description: (dir as NSString).lastPathComponent)
        let tokenizer = try Tokenizer(tokenizerJSON: p("tokenizer.json"))
        let weights = try ModelWeights.load(from: source, naming: .huggingFace, config: config, progress: progress)
        var tensors = [(name: String, dtype: String, shape: [Int])]()
        for f in files {
            for t in f.tensors.values.sorted(by: { $0.name < $1.name }) {
                tensors.append((t.name, t.dtype.rawValue, t.shape))
            }
        }
        let bytes = shards.reduce(0) {
            $0 + ((try? FileManager.default.attributesOfItem(atPath: p($1))[.size] as? Int) ?? 0)
        }
        return LoadedModel(
            path: dir, format: "huggingface", model: try LanguageModel(config: config, weights: weights),
            tokenizer: tokenizer, storedTensors: tensors, fileBytes: bytes, metadata: files.first?.metadata ?? [:])
    }
}

/// The safetensors files of a Hugging Face checkpoint: those `model.safetensors.index.json`
/// names (each must exist; other .safetensors files beside them, such as Mistral's
/// `consolidated.safetensors`, are not read), or else every .safetensors file in the directory.
func checkpointShards(_ dir: String) throws -> [String] {
    let fm = FileManager.default
    let indexPath = (dir as NSString).appendingPathComponent("model.safetensors.index.json")
    guard fm.fileExists(atPath: indexPath) else {
        let all = try fm.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".safetensors") }.sorted()
        guard !all.isEmpty else { throw LowRAError(.io, "\(dir): no .safetensors files") }
        return all
    }
    guard let root = try? JSONSerialization.jsonObject(with: try mapFile(indexPath)) as? [String: Any],
        let map = root["weight_map"] as? [String: String], !map.isEmpty
    else { throw LowRAError.malformed("model.safetensors.index.json", "no weight_map of tensor name -> file") }
    let files = Set(map.values).sorted()
    for f in files {
        guard !f.contains("/"), f.hasSuffix(".safetensors") else {
            throw LowRAError.malformed(
                "model.safetensors.index.json", "shard '\(f)' is not a .safetensors file beside the index")
        }
        guard fm.fileExists(atPath: (dir as NSString).appendingPathComponent(f)) else {
            throw LowRAError(.io, "\(dir): model.safetensors.index.json names shard \(f), which is missing")
        }
    }
    return files
}

extension Tokenizer {
    /// The tokenizer of a GGUF file or a Hugging Face directory, without loading weights.
    public init(modelPath path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LowRAError(.io, "\(path): no such file or directory")
        }
        if isDir.boolValue {
            try self.init(tokenizerJSON: (path as NSString).appendingPathComponent("tokenizer.json"))
        } else {
            try self.init(gguf: try GGUFFile(path: path))
        }
    }
}
