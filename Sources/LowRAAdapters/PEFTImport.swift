import Foundation
import LowRAIO
import LowRAModel
import LowRAPipeline
import LowRATensor

/// A Hugging Face PEFT LoRA adapter trained elsewhere (`adapter_config.json` and
/// `adapter_model.safetensors`), read into LowRA's layout for a base of the same architecture:
/// every tensor's name and shape checked against the base, the modules PEFT did not target left
/// at zero, the scaling (α/r, or α/√r with rsLoRA) kept, q/k rows put in the base's RoPE order.
public enum PEFTImport {
    /// What the PEFT adapter said and what was read.
    public struct Source: Codable, Sendable, Equatable {
        public var path: String
        public var sha256: String
        public var rank: Int
        public var loraAlpha: Double
        public var rsLoRA: Bool
        public var targetModules: [String]
        public var baseModel: String?
        public var tensors: Int

        enum CodingKeys: String, CodingKey {
            case path, sha256, rank, tensors
            case loraAlpha = "lora_alpha"
            case rsLoRA = "use_rslora"
            case targetModules = "target_modules"
            case baseModel = "base_model_name_or_path"
        }
    }

    /// The adapter in `dir` for a model of `config`; its α is set so that LowRA's scale α/r is the
    /// PEFT adapter's (α/r, or α/√r with rsLoRA).
    public static func read(_ dir: String, config: ModelConfig) throws -> (LoRAAdapter, Source) {
        let configPath = (dir as NSString).appendingPathComponent("adapter_config.json")
        let weightsPath = (dir as NSString).appendingPathComponent("adapter_model.safetensors")
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw LowRAError(.io, "\(dir): no adapter_config.json (not a PEFT adapter directory)")
        }
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            let bin = (dir as NSString).appendingPathComponent("adapter_model.bin")
            throw LowRAError(
                .unsupported,
                FileManager.default.fileExists(atPath: bin)
                    ? "\(dir): adapter_model.bin is a pickle, which LowRA does not read; save the adapter with "
                        + "safe_serialization=True (adapter_model.safetensors)"
                    : "\(dir): no adapter_model.safetensors")
        }
        guard let peft = try? JSONSerialization.jsonObject(with: try mapFile(configPath)) as? [String: Any] else {
            throw LowRAError.malformed(configPath, "not a JSON object")
        }
        func refuse(_ why: String) -> LowRAError { LowRAError(.unsupported, "\(configPath): \(why)") }
        if let t = peft["peft_type"] as? String, t != "LORA" {
            throw refuse("peft_type \(t); only LORA adapters import")
        }
        guard let rank = peft["r"] as? Int, rank > 0 else { throw LowRAError.malformed(configPath, "no positive r") }
        let alpha = (peft["lora_alpha"] as? NSNumber)?.doubleValue ?? Double(rank)
        guard alpha > 0, alpha.isFinite else { throw LowRAError.malformed(configPath, "lora_alpha must be positive") }
        let rs = peft["use_rslora"] as? Bool ?? false
        if peft["use_dora"] as? Bool == true { throw refuse("DoRA adapters (use_dora) do not import") }
        if let b = peft["bias"] as? String, b != "none" { throw refuse("bias \"\(b)\": only bias \"none\" imports") }
        if let m = peft["modules_to_save"] as? [Any], !m.isEmpty {
            throw refuse("modules_to_save \(m): whole trained modules do not import, only LoRA factors")
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let p = peft[key] as? [String: Any], !p.isEmpty {
                throw refuse("\(key) (per-module ranks or alphas) is not supported")
            }
        }
        let layers = (peft["layers_to_transform"] as? [Int]) ?? (peft["layers_to_transform"] as? Int).map { [$0] }
        let targeted: (LoRAAdapter.Slot) -> Bool
        if let list = peft["target_modules"] as? [String] {
            targeted = { s in list.contains(s.kind.moduleName) && (layers?.contains(s.layer) ?? true) }
        } else if let pattern = peft["target_modules"] as? String {
            // PEFT: a string is a regular expression matched against the whole module name.
            let re = try NSRegularExpression(pattern: "^(?:\(pattern))$")
            targeted = { s in
                let name = WeightNaming.huggingFace.linear(s.layer, s.kind)
                let module = String(name.dropLast(".weight".count))
                return re.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil
                    && (layers?.contains(s.layer) ?? true)
            }
        } else {
            throw LowRAError.malformed(configPath, "no target_modules")
        }

        // PEFT's scale is α/r (α/√r with rsLoRA); LowRA's is α'/r.
        let scale = rs ? alpha / Double(rank).squareRoot() : alpha / Double(rank)
        var adapter = try LoRAAdapter(config: config, rank: rank, alpha: Float(scale * Double(rank)))
        let file = try SafeTensorsFile(path: weightsPath)
        var used = Set<String>()
        // PEFT saves `…lora_A.weight`; some writers keep the adapter's name (`…lora_A.default.weight`).
        func tensorKey(_ s: LoRAAdapter.Slot, _ factor: String) -> String? {
            let k = AdapterStore.key(s, factor)
            let named = k.replacingOccurrences(of: ".weight", with: ".default.weight")
            return file.tensors[k] != nil ? k : file.tensors[named] != nil ? named : nil
        }
        var tensors = 0
        for s in adapter.slots {
            let keys = (tensorKey(s, "A"), tensorKey(s, "B"))
            guard targeted(s) else {
                if let k = keys.0 ?? keys.1 {
                    throw LowRAError(.invalidArgument, "\(dir): \(k) is not in target_modules")
                }
                continue
            }
            guard let ka = keys.0, let kb = keys.1 else {
                throw LowRAError(
                    .missingTensor, "\(dir): no LoRA factors for \(WeightNaming.huggingFace.linear(s.layer, s.kind))")
            }
            let (a, b) = try AdapterStore.readFactors(file, s, a: ka, b: kb, rank: rank, config: config, dir: dir)
            adapter.setFactors(s, a: a, b: b)
            used.formUnion([ka, kb])
            tensors += 2
        }
        if let extra = file.tensors.keys.sorted().first(where: { !used.contains($0) }) {
            throw LowRAError(.invalidArgument, "\(dir): \(extra) is not a LoRA factor of this base's linear layers")
        }
        guard tensors > 0 else {
            throw LowRAError(.invalidArgument, "\(dir): target_modules match no layer of this base")
        }
        guard adapter.values.allSatisfy(\.isFinite) else {
            throw LowRAError(.malformedFile, "\(weightsPath): the adapter holds non-finite values")
        }
        let source = Source(
            path: URL(fileURLWithPath: dir).standardizedFileURL.path,
            sha256: try fingerprint(weightsPath), rank: rank, loraAlpha: alpha,
            rsLoRA: rs,
            targetModules: (peft["target_modules"] as? [String]) ?? [(peft["target_modules"] as? String) ?? ""],
            baseModel: peft["base_model_name_or_path"] as? String, tensors: tensors)
        return (adapter, source)
    }
}
