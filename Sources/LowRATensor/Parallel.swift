import CLowRAPacked
import Foundation

/// Number of threads LowRA's own loops run on, the caller included (BLAS manages its own):
/// LOWRA_THREADS if set, else the processors online.
public let workerCount: Int = Int(lowra_pool_threads())

/// Runs `body` over `0..<n` split into contiguous chunks, one per worker, on the persistent
/// pool (`lowra_pool.h`). Falls back to a single call when the work is too small to be worth
/// the threads; a call from inside another `parallelFor` runs on its caller.
public func parallelFor(_ n: Int, minPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    guard n > 0 else { return }
    let chunks = min(workerCount, max(1, n / max(1, minPerChunk)))
    if chunks <= 1 {
        body(0..<n)
        return
    }
    withoutActuallyEscaping(body) { escapable in
        var job = ChunkedJob(n: n, chunks: chunks, body: escapable)
        withUnsafeMutablePointer(to: &job) { p in
            lowra_pool_run(
                Int64(chunks),
                { ctx, c in
                    let job = ctx!.assumingMemoryBound(to: ChunkedJob.self)
                    let n = job.pointee.n
                    let chunks = job.pointee.chunks
                    let lo = n * Int(c) / chunks
                    let hi = n * (Int(c) + 1) / chunks
                    if lo < hi { job.pointee.body(lo..<hi) }
                }, p)
        }
    }
}

/// Runs `body(i)` for every i in 0..<n, each task taken by whichever thread is free: for a few
/// tasks of uneven size. A call from inside another parallel loop runs on its caller.
public func parallelTasks(_ n: Int, _ body: (Int) -> Void) {
    guard n > 0 else { return }
    withoutActuallyEscaping(body) { escapable in
        var job = escapable
        withUnsafeMutablePointer(to: &job) { p in
            lowra_pool_run(
                Int64(n),
                { ctx, i in
                    ctx!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(i))
                }, p)
        }
    }
}

private struct ChunkedJob {
    let n: Int
    let chunks: Int
    let body: (Range<Int>) -> Void
}

/// Carries a value across threads where the caller guarantees the accesses do not race
/// (each parallel chunk writes only its own rows).
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

/// A value built on first use, under a lock, and kept: for threads that may ask for it at once.
public final class BuiltOnce<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?

    public init() {}

    /// The value, `build` making it if it does not exist yet.
    public func get(_ build: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        if let value { return value }
        let v = build()
        value = v
        return v
    }
}
