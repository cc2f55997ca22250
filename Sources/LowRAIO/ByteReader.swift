import Foundation
import LowRATensor

/// Bounds-checked little-endian reads over a byte buffer; every overrun is a clear error
/// naming the file, never a crash.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let file: String
    var offset: Int = 0

    init(_ bytes: UnsafeRawBufferPointer, file: String) {
        self.bytes = bytes
        self.file = file
    }

    mutating func need(_ n: Int, _ what: String) throws {
        guard n >= 0, offset <= bytes.count, bytes.count - offset >= n else {
            throw LowRAError.malformed(
                file, "truncated: needs \(n) bytes for \(what) at offset \(offset), file has \(bytes.count)")
        }
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        try need(MemoryLayout<T>.size, what)
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func readFloat(_ what: String) throws -> Float {
        Float(bitPattern: try read(UInt32.self, what))
    }

    mutating func readDouble(_ what: String) throws -> Double {
        Double(bitPattern: try read(UInt64.self, what))
    }

    mutating func readBytes(_ n: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        try need(n, what)
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
        offset += n
        return slice
    }
}

/// Maps a file into memory, with a clear error if it cannot be read.
public func mapFile(_ path: String) throws -> Data {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw LowRAError(.io, "\(path): no such file")
    }
    guard !isDir.boolValue else { throw LowRAError(.io, "\(path): is a directory, expected a file") }
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    } catch {
        throw LowRAError(.io, "\(path): cannot read (\(error.localizedDescription))")
    }
}

/// Feeds a file's bytes to `hash` through a fixed buffer (`read`, not a map): hashing a model
/// larger than memory adds nothing to the process's resident memory.
public func hashFile(_ path: String, into hash: inout SHA256) throws {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw LowRAError(.io, "\(path): cannot open (\(String(cString: strerror(errno))))") }
    defer { close(fd) }
    let size = 8 << 20
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    defer { buffer.deallocate() }
    while true {
        let n = read(fd, buffer, size)
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw LowRAError(.io, "\(path): cannot read (\(String(cString: strerror(errno))))") }
        if n == 0 { return }
        hash.update(UnsafeRawBufferPointer(start: buffer, count: n))
    }
}
