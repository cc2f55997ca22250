// The safetensors reader under libFuzzer: each input is opened as a safetensors file and every
// tensor it lists is read in fp32 (bounded in size). Bad input must end in a thrown LowRAError,
// never a trap, a hang or an unbounded allocation.
import FuzzSupport
import LowRAIO

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let path = inputFile(data, size, suffix: "safetensors"), let file = try? SafeTensorsFile(path: path)
    else { return 0 }
    for (name, info) in file.tensors where info.range.count <= 1 << 22 {
        _ = try? file.floats(name)
    }
    return 0
}

@_cdecl("FuzzSafeTensors_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { fuzzSafeTensors($0, $1) }
}
