import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRAPipeline
import LowRATensor

extension GGUFExportType: ExpressibleByArgument {}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model (adapter merged) or an adapter alone as GGUF for llama.cpp and Ollama.",
        discussion: """
            The base is dequantized from its codes and the adapter's scale·B·A added (the quantized model's \
            initial adapter when no --adapter is given; --no-adapter for the bare base). --adapter-only writes \
            the adapter as a GGUF LoRA to use over a base exported with --no-adapter \
            (llama-cli -m base.gguf --lora adapter.gguf).
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "The GGUF file to write.") var gguf: String
    @Option(help: "Tensor type of the matrices: f16, q8_0 or f32 (norms and biases stay f32).")
    var type: GGUFExportType = .f16
    @Flag(help: "Write only the adapter, as a GGUF LoRA (general.type = adapter).") var adapterOnly = false
    @Option(help: "general.name in the file (default: the output's file name).") var name: String?

    func run() throws {
        guard gguf.lowercased().hasSuffix(".gguf") else { throw ValidationError("--gguf must name a .gguf file") }
        var loaded = try modelOptions.load()
        let (adapter, adapterLine) = try adapterOptions.load(for: &loaded, tunedBase: !adapterOnly)
        let title = name ?? ((gguf as NSString).lastPathComponent as NSString).deletingPathExtension
        let bar = ProgressBar("export")
        if adapterOnly {
            guard let adapter else {
                throw LowRAError(.invalidArgument, "--adapter-only needs an adapter (--adapter DIR)")
            }
            try GGUFExport.writeAdapter(adapter, config: loaded.config, name: title, to: gguf)
        } else {
            try GGUFExport.writeModel(
                loaded.model, tokenizer: loaded.tokenizer, adapter: adapter, type: type, name: title, to: gguf
            ) { bar.update($0, $1) }
        }
        let bytes = (try? FileManager.default.attributesOfItem(atPath: gguf)[.size] as? Int) ?? 0
        let what = adapterOnly ? "LoRA adapter" : "model (\(type.rawValue))"
        print(String(format: "wrote %@: %@, %.1f MB", gguf, what, Double(bytes) / 1e6))
        print(adapterOnly ? "from \(adapterLine!)" : "merged: \(adapterLine ?? "no adapter")")
    }
}
