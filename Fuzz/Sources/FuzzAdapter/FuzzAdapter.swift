// An adapter directory under libFuzzer, read the way `lowra serve`'s shelf and `--adapter` read
// it. The input holds the directory's files (FuzzSupport's `writeParts`): lowra_manifest.json,
// adapter_config.json, adapter_card.json, adapter_model.safetensors and the compressed
// adapter_model.lowra.safetensors. The base is the quantized tiny model that scripts/fuzz.sh
// makes in runs/fuzz/base (LOWRA_FUZZ_BASE to choose another): the card is read and checked for
// admission, the adapter loaded (expanded when compressed, and kept compressed as the shelf
// does), and a loaded adapter runs a forward over four tokens. Bad input must end in a thrown
// LowRAError, never a trap, a hang or an unbounded allocation.
import Foundation
import FuzzSupport
import LowRAModel
import LowRAPipeline
import LowRAAdapters

let directory = "/dev/shm/lowra-fuzz-adapter-\(getpid())"
let names = [
    AdapterStore.manifestFile, "adapter_config.json", AdapterCard.file, "adapter_model.safetensors",
    AdapterStore.compressedFile,
]
let basePath = ProcessInfo.processInfo.environment["LOWRA_FUZZ_BASE"] ?? repositoryRoot + "/runs/fuzz/base"
let base: LoadedModel = {
    do { return try LoadedModel.load(basePath) } catch { fatalError("the fuzzing base \(basePath): \(error)") }
}()
let baseFingerprintValue = try! baseFingerprint(basePath)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAdapter(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard writeParts(data, size, names: names, into: directory), AdapterStore.isAdapterDirectory(directory)
    else { return 0 }
    if let card = try? AdapterCard.loadOrMake(directory) {
        _ = card.admission(fingerprint: baseFingerprintValue, minTokens: 1024)
        try? card.validate()
    }
    let config = base.config
    if let manifest = try? AdapterStore.loadManifest(directory), manifest.compressionBits != nil {
        _ = try? AdapterStore.loadCompressed(directory, config: config, fingerprint: baseFingerprintValue)
    }
    guard let (adapter, _) = try? AdapterStore.load(directory, config: config, fingerprint: baseFingerprintValue)
    else { return 0 }
    _ = try? base.model.evaluate(tokens: [1, 2, 3, 4], context: 4, adapter: adapter)
    return 0
}

@_cdecl("FuzzAdapter_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { fuzzAdapter($0, $1) }
}
