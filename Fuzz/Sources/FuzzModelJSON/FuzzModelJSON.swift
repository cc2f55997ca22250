// A model directory's JSON under libFuzzer: the input is written as config.json (read and
// validated by `LoadedModel.readConfig`), as tokenizer.json and as tokenizer_config.json (built
// into a `Tokenizer`, whose chat template — the config's "chat_template" — renders a short
// conversation, and which encodes and decodes a short text). Bad input must end in a thrown
// LowRAError, never a trap, a hang or an unbounded allocation.
import Foundation
import FuzzSupport
import LowRAModel
import LowRATokenizer
import LowRAPipeline

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
        FileManager.default.createFile(atPath: tokenizer, contents: bytes),
        FileManager.default.createFile(atPath: directory + "/tokenizer_config.json", contents: bytes)
    else { return 0 }
    _ = try? LoadedModel.readConfig(directory)
    if let t = try? Tokenizer(tokenizerJSON: tokenizer) {
        _ = try? t.chatTemplate?.render([
            ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi <|im_end|>"),
            ChatMessage(role: "assistant", content: "Hello"), ChatMessage(role: "user", content: "Über 東京"),
        ])
        let ids = t.encode("Hello, world! 12345 <|im_start|>user\nÜber 東京 🙂")
        _ = t.decode(ids)
    }
    return 0
}

@_cdecl("FuzzModelJSON_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { fuzzModelJSON($0, $1) }
}
