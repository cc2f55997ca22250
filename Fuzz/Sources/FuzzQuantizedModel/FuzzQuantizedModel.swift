// A quantized LowRA model directory under libFuzzer. The input holds the directory's files
// (FuzzSupport's `writeParts`): lowra_quant.json, config.json, model.safetensors (the packed
// tensors), precision_map.json; tokenizer.json and tokenizer_config.json are the tiny fixture's
// unless the input carries them. The directory is loaded as `lowra` loads it, the precision map
// read and checked against the model as `quantize --precision-map` does, and a loaded model runs
// a forward over four tokens through its packed kernels. Bad input must end in a thrown
// LowRAError, never a trap, a hang or an unbounded allocation.
import Foundation
import FuzzSupport
import LowRAModel
import LowRAPipeline

let directory = "/dev/shm/lowra-fuzz-quantized-\(getpid())"
let names = [
    "lowra_quant.json", "config.json", "model.safetensors", "precision_map.json", "tokenizer.json",
    "tokenizer_config.json",
]
let fixture = repositoryRoot + "/Tests/Fixtures/tiny_hf/"
let defaults = names.suffix(2).map { ($0, FileManager.default.contents(atPath: fixture + $0)!) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQuantizedModel(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard writeParts(data, size, names: names, into: directory) else { return 0 }
    for (name, bytes) in defaults where !FileManager.default.fileExists(atPath: directory + "/" + name) {
        guard FileManager.default.createFile(atPath: directory + "/" + name, contents: bytes) else { return 0 }
    }
    guard let loaded = try? LoadedModel.load(directory) else { return 0 }
    let config = loaded.config
    if let map = try? PrecisionMap.read(directory + "/precision_map.json") {
        let layers = (0..<config.numLayers).flatMap { l in
            LinearKind.allCases.map { (WeightNaming.huggingFace.linear(l, $0), $0.shape(config).out) }
        }
        try? map.validate(layers)
    }
    let tokens = [1, 2, 3, 4].map { $0 % config.vocabSize }
    _ = try? loaded.model.evaluate(tokens: tokens, context: 4)
    return 0
}

@_cdecl("FuzzQuantizedModel_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { fuzzQuantizedModel($0, $1) }
}
