import Foundation
import LowRATensor

/// Float arrays set aside on disk instead of the heap, to be read back later in any order: an
/// unlinked file in `directory` (its name removed as soon as it is opened, so nothing is left
/// behind when the process ends, killed or not). The quantizer keeps each layer's initial LoRA
/// factors here until the adapter is written: rank 64 at LLaMA-2-7B's shape, 640 MB.
public final class ScratchFile {
    private var fd: Int32
    private var end = 0
    private var entries = [(offset: Int, count: Int)]()
    private let directory: String

    public init(directory: String) throws {
        self.directory = directory
        let name = ".lowra-scratch.\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let path = (directory as NSString).appendingPathComponent(name)
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.failure(directory, "create a scratch file in it") }
        unlink(path)
    }

    deinit { close(fd) }

    /// Arrays appended so far.
    public var count: Int { entries.count }

    /// Appends `values`; returns its index.
    @discardableResult
    public func append(_ values: [Float]) throws -> Int {
        let bytes = values.count * MemoryLayout<Float>.size
        try values.withUnsafeBytes { buf in
            var done = 0
            while done < bytes {
                let n = pwrite(fd, buf.baseAddress! + done, bytes - done, off_t(end + done))
                guard n > 0 else { throw Self.failure(directory, "write a scratch file in it") }
                done += n
            }
        }
        entries.append((end, values.count))
        end += bytes
        return entries.count - 1
    }

    /// Array `index` as appended.
    public func read(_ index: Int) throws -> [Float] {
        let (offset, count) = entries[index]
        let bytes = count * MemoryLayout<Float>.size
        guard count > 0 else { return [] }
        return try [Float](unsafeUninitializedCapacity: count) { buf, initialized in
            let raw = UnsafeMutableRawPointer(buf.baseAddress!)
            var done = 0
            while done < bytes {
                let n = pread(fd, raw + done, bytes - done, off_t(offset + done))
                guard n > 0 else { throw Self.failure(directory, "read back a scratch file in it") }
                done += n
            }
            initialized = count
        }
    }

    static func failure(_ dir: String, _ what: String) -> LowRAError {
        LowRAError(.io, "\(dir): cannot \(what) (\(String(cString: strerror(errno))))")
    }
}
