// Training data under libFuzzer: each input is read as plain text (train.txt) and as
// conversations (train.jsonl, ChatML with the tiny fixture's tokenizer), cut into sequences of
// 16 tokens, and a shuffled batch is drawn. Bad input must end in a thrown LowRAError, never a
// trap, a hang or an unbounded allocation.
import Foundation
import FuzzSupport
import LowRAModel
import LowRATrain
import LowRATokenizer

let tokenizer = try! Tokenizer(tokenizerJSON: repositoryRoot + "/Tests/Fixtures/tiny_hf/tokenizer.json")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTrainingData(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    for suffix in ["txt", "jsonl"] {
        guard let path = inputFile(data, size, suffix: suffix),
            let d = try? TrainingData.load(path, tokenizer: tokenizer, seq: 16)
        else { continue }
        _ = d.batch(start: 0, size: 2, seed: 1)
        _ = d.targetCount
    }
    return 0
}

@_cdecl("FuzzTrainingData_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { fuzzTrainingData($0, $1) }
}
