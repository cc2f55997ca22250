// The safetensors reader under libFuzzer: each input is written to a file in memory (/dev/shm),
// opened as a safetensors file, and every tensor it lists is read in fp32 (bounded in size).
// Bad input must end in a thrown LowRAError, never a trap, a hang or an unbounded allocation.
import Foundation
import LowRAIO

private let path = "/dev/shm/lowra-fuzz-safetensors-\(getpid()).safetensors"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes: data, count: size)) else { return 0 }
    guard let file = try? SafeTensorsFile(path: path) else { return 0 }
    for (name, info) in file.tensors where info.range.count <= 1 << 22 {
        _ = try? file.floats(name)
    }
    return 0
}

// SwiftPM links an executable's entry point as `<Target>_main`; it hands over to libFuzzer's
// driver (libFuzzer's own `main` is not the one linked).
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("FuzzSafeTensors_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return runDriver(&argc, &argv) { fuzzSafeTensors($0, $1) }
}
