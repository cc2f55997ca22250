// A model directory's JSON under libFuzzer: the input is written as config.json (read and
// validated by `LoadedModel.readConfig`) and as tokenizer.json (built into a `Tokenizer`, which
// then encodes and decodes a short text). Bad input must end in a thrown LowRAError, never a
// trap, a hang or an unbounded allocation.
import Foundation
import FuzzSupport
import LowRAModel

let directory: String = {
    let d = "/dev/shm/lowra-fuzz-model-\(getpid())"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(bytes: data, count: size)
    let config = directory + "/config.json"
    let tokenizer = directory + "/tokenizer.json"
    guard FileManager.default.createFile(atPath: config, contents: bytes),
        FileManager.default.createFile(atPath: tokenizer, contents: bytes)
    else { return 0 }
    _ = try? LoadedModel.readConfig(directory)
    if let t = try? Tokenizer(tokenizerJSON: tokenizer) {
        let ids = t.encode("Hello, world! 12345 <|im_start|>user\nÜber 東京 🙂")
        _ = t.decode(ids)
    }
    return 0
}

@_cdecl("FuzzModelJSON_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { fuzzModelJSON($0, $1) }
}
