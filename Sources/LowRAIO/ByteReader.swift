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

/// Writes `data` to `path` atomically and durably: a temporary file in the same folder, flushed
/// to disk (fsync), renamed over the real name, then the folder flushed, so neither a killed
/// process nor a crash of the machine leaves a half-written file under the real name. A failed
/// write (a full disk) throws and leaves the previous file as it was.
public func writeAtomically(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let tmp = (dir as NSString).appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
    func failure(_ what: String) -> LowRAError {
        LowRAError(.io, "\(path): cannot \(what) (\(String(cString: strerror(errno))))")
    }
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw failure("create a temporary file beside it") }
    var renamed = false
    defer { if !renamed { unlink(tmp) } }
    do {
        defer { close(fd) }
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw failure("write") }
                done += n
            }
        }
        guard fsync(fd) == 0 else { throw failure("flush to disk") }
    }
    guard rename(tmp, path) == 0 else { throw failure("rename into place") }
    renamed = true
    syncDirectory(dir)
}

/// Flushes a folder's entries (a rename into it) to disk. Best effort: some file systems refuse
/// fsync on a directory, and the rename has happened either way.
public func syncDirectory(_ dir: String) {
    let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    _ = fsync(fd)
    close(fd)
}
