import Dispatch
import Foundation

/// Number of worker threads for LowRA's own loops (BLAS manages its own threads).
public let workerCount: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

/// Runs `body` over `0..<n` split into contiguous chunks, one per worker, in parallel.
/// Falls back to a single call when the work is too small to be worth the threads.
public func parallelFor(_ n: Int, minPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    guard n > 0 else { return }
    let chunks = min(workerCount, max(1, n / max(1, minPerChunk)))
    if chunks <= 1 {
        body(0..<n)
        return
    }
    withoutActuallyEscaping(body) { escapable in
        let work = UncheckedSendable(escapable)
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = n * c / chunks
            let hi = n * (c + 1) / chunks
            if lo < hi { work.value(lo..<hi) }
        }
    }
}

/// Carries a value across threads where the caller guarantees the accesses do not race
/// (each parallel chunk writes only its own rows).
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
