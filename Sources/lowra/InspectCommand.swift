import ArgumentParser
import Foundation
import LowRAModel
import LowRATensor

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Architecture, tensors and memory of a model.")

    @OptionGroup var modelOptions: ModelOptions
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func run() throws {
        let loaded = try modelOptions.load()
        let c = loaded.config
        let params = loaded.model.weights.parameterCount
        let mem = MemoryStats.current()
        if json {
            let data = try JSONEncoder().encode(c)
            if let m = loaded.quantManifest {
                printJSON([
                    "format": loaded.format, "config": try JSONSerialization.jsonObject(with: data),
                    "parameters": params,
                    "file_bytes": loaded.fileBytes, "resident_weight_bytes": loaded.model.weights.weightBytes,
                    "rss_bytes": mem.residentBytes,
                    "quantization": try JSONSerialization.jsonObject(with: JSONEncoder().encode(m)),
                ])
                return
            }
            printJSON([
                "format": loaded.format, "config": try JSONSerialization.jsonObject(with: data), "parameters": params,
                "file_bytes": loaded.fileBytes, "fp32_weight_bytes": params * 4, "rss_bytes": mem.residentBytes,
                "tensors": loaded.storedTensors.map { ["name": $0.name, "dtype": $0.dtype, "shape": $0.shape] },
            ])
            return
        }
        print("model      \(loaded.path) (\(loaded.format))")
        print(
            "arch       \(c.numLayers) layers, hidden \(c.hiddenSize), ffn \(c.intermediateSize), "
                + "\(c.numHeads) heads / \(c.numKVHeads) kv heads of \(c.headDim), vocab \(c.vocabSize)")
        print(
            "           rope base \(c.ropeTheta) (\(c.ropeLayout.rawValue)), rms eps \(c.rmsNormEps), context "
                + "\(c.maxPositions), "
                + "\(c.tieWordEmbeddings ? "tied" : "untied") head\(c.attentionBias ? ", q/k/v bias" : "")")
        print(String(format: "parameters %.2fM", Double(params) / 1e6))
        var byType = [String: (count: Int, elements: Int)]()
        for t in loaded.storedTensors {
            let n = t.shape.reduce(1, *)
            byType[t.dtype, default: (0, 0)].count += 1
            byType[t.dtype, default: (0, 0)].elements += n
        }
        print(
            "tensors    \(loaded.storedTensors.count): "
                + byType.sorted { $0.key < $1.key }.map {
                    "\($0.value.count) \($0.key) (\(String(format: "%.2fM", Double($0.value.elements) / 1e6)) elements)"
                }.joined(separator: ", "))
        print(
            String(
                format: "memory     file %.1f MB (%.2f bits/param), fp32 would be %.1f MB, resident now %.1f MB",
                Double(loaded.fileBytes) / 1e6, Double(loaded.fileBytes) * 8 / Double(params),
                Double(params * 4) / 1e6, Double(mem.residentBytes) / 1e6))
        print(
            String(
                format: "           weights resident as loaded: %.1f MB", Double(loaded.model.weights.weightBytes) / 1e6
            ))
        if let m = loaded.quantManifest {
            let r = m.report
            print(
                String(
                    format:
                        "quantized  %@ at %.2f bits (assigner %@, codebook %@, Lloyd-Max %d iterations, %@ weighting, "
                        + "%@ scales)",
                    r.method.rawValue, r.targetBits, r.assigner, r.options.scope.rawValue, r.options.lloydIterations,
                    r.options.weighting.rawValue, r.options.doubleQuant ? "double-quantized" : "fp32"))
            print(
                String(
                    format:
                        "           code %.4f bits/param, stored %.4f bits/param over %.2fM quantized params; source "
                        + "sha256 %@",
                    r.codeBitsPerParam, r.storedBitsPerParam, Double(r.quantizedParameters) / 1e6,
                    String(m.sourceSHA256.prefix(16))))
            print("")
            printLayerTable(r)
            return
        }
        print("")
        print(
            "name".padding(toLength: 34, withPad: " ", startingAt: 0)
                + "dtype".padding(toLength: 8, withPad: " ", startingAt: 0) + "shape")
        for t in loaded.storedTensors {
            print(
                t.name.padding(toLength: 34, withPad: " ", startingAt: 0)
                    + t.dtype.padding(toLength: 8, withPad: " ", startingAt: 0)
                    + t.shape.map(String.init).joined(separator: " x "))
        }
    }
}
