// What every harness shares: the input as a file (LowRA's readers open paths) and the entry
// point that hands over to libFuzzer's driver.
import Foundation

/// Writes the input to a file in memory (/dev/shm) named for this process and `suffix`, and
/// returns its path (nil if it could not be written).
public func inputFile(_ data: UnsafePointer<UInt8>, _ size: Int, suffix: String) -> String? {
    let path = "/dev/shm/lowra-fuzz-\(getpid()).\(suffix)"
    return FileManager.default.createFile(atPath: path, contents: Data(bytes: data, count: size)) ? path : nil
}

public typealias FuzzTarget = @convention(c) (UnsafePointer<UInt8>, Int) -> CInt

@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>, _ target: FuzzTarget
) -> CInt

/// libFuzzer's driver on `target`. SwiftPM links an executable's entry point as `<Target>_main`
/// (libFuzzer's own `main` is not the one linked), so each harness defines that and calls this.
public func runFuzzer(
    _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ target: FuzzTarget
) -> CInt {
    var argc = argc
    var argv = argv
    return runDriver(&argc, &argv, target)
}
