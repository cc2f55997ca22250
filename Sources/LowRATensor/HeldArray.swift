/// A read-only array whose elements live either in memory of its own (copied from an array) or
/// in memory another object keeps alive — a memory-mapped file — read through one pointer
/// either way. Packed layers hold their codes in one, so a quantized model's codes are used
/// straight from its mapped file, never copied.
public struct HeldArray<Element: BitwiseCopyable>: @unchecked Sendable, RandomAccessCollection {
    public let base: UnsafePointer<Element>?
    public let count: Int
    /// Keeps the memory alive: an `Allocation` of ours, or the mapped file.
    public let owner: AnyObject?

    /// Owns a copy of `elements`.
    public init(_ elements: [Element]) {
        guard !elements.isEmpty else {
            (base, count, owner) = (nil, 0, nil)
            return
        }
        let allocation = Allocation<Element>(count: elements.count)
        elements.withUnsafeBufferPointer { allocation.pointer.initialize(from: $0.baseAddress!, count: $0.count) }
        (base, count, owner) = (UnsafePointer(allocation.pointer), elements.count, allocation)
    }

    /// `count` elements at `base`, which stay valid while `owner` lives (the caller checks `base`
    /// is aligned for `Element`).
    public init(borrowing base: UnsafePointer<Element>, count: Int, owner: AnyObject) {
        precondition(Int(bitPattern: base) % MemoryLayout<Element>.alignment == 0, "misaligned \(Element.self) array")
        (self.base, self.count, self.owner) = (count == 0 ? nil : base, count, owner)
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    @inline(__always)
    public subscript(i: Int) -> Element {
        precondition(i >= 0 && i < count, "index out of range")
        return base.unsafelyUnwrapped[i]
    }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Element>) throws -> R) rethrows -> R {
        try withExtendedLifetime(owner) { try body(UnsafeBufferPointer(start: base, count: count)) }
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBufferPointer { try body(UnsafeRawBufferPointer($0)) }
    }

    /// Whether the elements are read from another object's memory (a mapped file).
    public var isBorrowed: Bool { owner != nil && !(owner is Allocation<Element>) }
}

extension HeldArray: Equatable where Element: Equatable {
    public static func == (a: HeldArray, b: HeldArray) -> Bool { a.elementsEqual(b) }
}

/// Memory of our own behind a `HeldArray`.
final class Allocation<Element>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Element>
    init(count: Int) { pointer = .allocate(capacity: count) }
    deinit { pointer.deallocate() }
}

/// Memory of our own, 64-byte aligned, holding consecutive arrays whose sizes (in bytes) are given,
/// each starting on 64 bytes: the kernels' tiles.
public final class AlignedArrays: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    /// Bytes in all, the rounding included.
    public let bytes: Int
    private let starts: [Int]

    public init(_ sizes: [Int]) {
        var starts = [Int]()
        var at = 0
        for s in sizes {
            starts.append(at)
            at += Self.rounded(s)
        }
        (self.starts, bytes) = (starts, at)
        base = .allocate(byteCount: max(64, at), alignment: 64)
    }

    /// The bytes `init(sizes)` would take.
    public static func bytes(_ sizes: [Int]) -> Int { sizes.reduce(0) { $0 + rounded($1) } }
    private static func rounded(_ n: Int) -> Int { (n + 63) / 64 * 64 }

    /// Array i, as elements of T.
    public func array<T>(_ i: Int, as: T.Type) -> UnsafeMutablePointer<T> {
        (base + starts[i]).assumingMemoryBound(to: T.self)
    }

    deinit { base.deallocate() }
}
