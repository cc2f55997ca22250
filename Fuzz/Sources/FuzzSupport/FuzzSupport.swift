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

/// The separator between the files of a multi-file input (a model or adapter directory).
public let partSeparator = Array("\n@@LOWRA-FILE@@\n".utf8)

/// Splits the input at `partSeparator` and writes part i as `names[i]` in a fresh directory `dir`
/// (emptied first); an empty or missing part leaves its file out, parts past `names` are ignored.
/// Returns false if the directory could not be written.
public func writeParts(_ data: UnsafePointer<UInt8>, _ size: Int, names: [String], into dir: String) -> Bool {
    let fm = FileManager.default
    for name in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] { try? fm.removeItem(atPath: dir + "/" + name) }
    guard (try? fm.createDirectory(atPath: dir, withIntermediateDirectories: true)) != nil else { return false }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    var start = 0, part = 0, i = 0
    func emit(_ end: Int) -> Bool {
        defer { part += 1 }
        guard part < names.count, end > start else { return true }
        return fm.createFile(atPath: dir + "/" + names[part], contents: Data(bytes[start..<end]))
    }
    while i + partSeparator.count <= size {
        if bytes[i] == partSeparator[0] && bytes[i..<(i + partSeparator.count)].elementsEqual(partSeparator) {
            guard emit(i) else { return false }
            i += partSeparator.count
            start = i
        } else {
            i += 1
        }
    }
    return emit(size)
}

/// The repository's root, from this file's path at build time (Fuzz/Sources/FuzzSupport/…).
public let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<4 { url.deleteLastPathComponent() }
    return url.path
}()
