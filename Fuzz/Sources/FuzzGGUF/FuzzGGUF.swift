// The GGUF reader under libFuzzer: each input is opened as a GGUF file and every tensor it lists
// is read as the runtime would (bounded in size). Bad input must end in a thrown LowRAError,
// never a trap, a hang or an unbounded allocation.
import FuzzSupport
import LowRAIO

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUF(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let path = inputFile(data, size, suffix: "gguf"), let file = try? GGUFFile(path: path) else { return 0 }
    for t in file.tensors {
        guard let matrix = try? file.matrix(t.name), matrix.rows * matrix.cols <= 1 << 20 else { continue }
        _ = matrix.floats()
    }
    return 0
}

@_cdecl("FuzzGGUF_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { fuzzGGUF($0, $1) }
}
