import Foundation
import LowRATensor

/// A file written under a temporary name beside its destination (`.NAME.PID.tmp`) and put in
/// place by `commit()`: flushed to disk (fsync), renamed over the real name, then the folder
/// flushed, so neither a killed process nor a crash of the machine leaves a half-written file
/// under the real name. Dropped before `commit()` (an error, a full disk), it removes its
/// temporary file and leaves the previous file as it was.
public final class AtomicFileWriter {
    public let path: String
    private let temporary: String
    private var fd: Int32
    private var committed = false

    public init(path: String) throws {
        self.path = path
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        temporary = (dir as NSString).appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        Self.removeStaleTemporaries(of: url.lastPathComponent, in: dir)
        fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Self.failure(path, "create a temporary file beside it") }
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !committed { unlink(temporary) }
    }

    /// Removes `.NAME.PID.tmp` files left by writers that were killed (their process is gone).
    static func removeStaleTemporaries(of name: String, in dir: String) {
        let prefix = ".\(name)."
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for e in entries where e.hasPrefix(prefix) && e.hasSuffix(".tmp") {
            guard let pid = Int32(e.dropFirst(prefix.count).dropLast(4)), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink((dir as NSString).appendingPathComponent(e)) }
        }
    }

    /// Appends `bytes`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = posixWrite(fd, bytes.baseAddress! + done, min(bytes.count - done, 1 << 30))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Self.failure(path, "write") }
            done += n
        }
    }

    /// Flushes the file to disk, renames it into place and flushes the folder.
    public func commit() throws {
        guard fsync(fd) == 0 else { throw Self.failure(path, "flush to disk") }
        close(fd)
        fd = -1
        guard rename(temporary, path) == 0 else { throw Self.failure(path, "rename into place") }
        committed = true
        syncDirectory(parentDirectory(of: path))
    }

    private static func failure(_ path: String, _ what: String) -> LowRAError {
        LowRAError(.io, "\(path): cannot \(what) (\(String(cString: strerror(errno))))")
    }
}

private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }

/// Writes `data` to `path` atomically and durably (`AtomicFileWriter`): a failed write (a full
/// disk) throws and leaves the previous file as it was.
public func writeAtomically(_ data: Data, to path: String) throws {
    let file = try AtomicFileWriter(path: path)
    try data.withUnsafeBytes { try file.write($0) }
    try file.commit()
}

/// Flushes a folder's entries (a rename into it) to disk; "" is the current folder. Best effort:
/// some file systems refuse fsync on a directory, and the rename has happened either way.
public func syncDirectory(_ dir: String) {
    let fd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    _ = fsync(fd)
    close(fd)
}

/// The folder holding `path` ("." for a bare name, "/" for a name at the root), by plain string
/// rules. (Foundation's `NSString.deletingLastPathComponent` traps on a one-character relative
/// path such as `--out q`.)
public func parentDirectory(of path: String) -> String {
    var p = Substring(path)
    while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
    guard let slash = p.lastIndex(of: "/") else { return "." }
    var parent = p[..<slash]
    while parent.count > 1 && parent.hasSuffix("/") { parent = parent.dropLast() }
    return parent.isEmpty ? "/" : String(parent)
}

/// An exclusive claim on an output path for as long as this process holds it: an advisory
/// `flock` on the hidden sibling file `.NAME.lock`, which the kernel releases when the process
/// ends in any way (kill -9 included), so a lock never outlives its writer. A second writer into
/// the same output gets a clear error instead of interleaving its files with the first's.
public final class OutputLock {
    public let path: String
    private let fd: Int32

    public init(_ output: String) throws {
        let url = URL(fileURLWithPath: output).standardizedFileURL
        let dir = url.deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        path = (dir as NSString).appendingPathComponent(".\(url.lastPathComponent).lock")
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw LowRAError(.io, "\(path): cannot create a lock file (\(String(cString: strerror(errno))))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let owner = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            close(fd)
            throw LowRAError(
                .invalidArgument,
                "\(output) is being written by another lowra process\(owner.isEmpty ? "" : " (pid \(owner))"); "
                    + "wait for it or choose another output")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    deinit { close(fd) }  // releases the lock
}
