import Foundation
import LowRATensor

/// Writes a safetensors file whose tensors arrive one at a time, so that no more than one of them
/// is ever in memory: the header (names, dtypes, shapes and precomputed offsets) is written
/// first, then each tensor's bytes in the declared order, into an `AtomicFileWriter`: `finish()`
/// puts the file in place; a writer dropped before that leaves nothing half-written.
public final class SafeTensorsStreamWriter {
    public struct Entry: Sendable {
        public let name: String
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        public init(name: String, dtype: SafeTensorsDType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
        public var byteCount: Int { shape.reduce(1, *) * dtype.size }
    }

    public var path: String { file.path }
    private let entries: [Entry]
    private let file: AtomicFileWriter
    private var next = 0

    /// Total bytes of the file: 8 + header + data.
    public let fileSize: Int

    public init(path: String, entries: [Entry], metadata: [String: String] = [:]) throws {
        var seen = Set<String>()
        for e in entries {
            guard seen.insert(e.name).inserted, e.name != "__metadata__" else {
                throw LowRAError(.invalidArgument, "tensor \(e.name) declared twice")
            }
            guard e.shape.allSatisfy({ $0 >= 0 }) else {
                throw LowRAError(.invalidArgument, "tensor \(e.name): negative shape")
            }
        }
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = [
                "dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.byteCount],
            ]
            offset += e.byteCount
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        self.entries = entries
        fileSize = 8 + json.count + offset
        file = try AtomicFileWriter(path: path)
        var prefix = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(json)
        try prefix.withUnsafeBytes { try file.write($0) }
    }

    /// The next declared tensor's name, or nil when all are written.
    public var nextName: String? { next < entries.count ? entries[next].name : nil }

    /// Appends the bytes of tensor `name`, which must be the next one declared, at its exact size.
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws {
        guard next < entries.count, entries[next].name == name else {
            throw LowRAError(.invalidArgument, "tensor \(name) written out of order (expected \(nextName ?? "none"))")
        }
        guard bytes.count == entries[next].byteCount else {
            throw LowRAError(
                .shapeMismatch, "tensor \(name): \(bytes.count) bytes, declared \(entries[next].byteCount)")
        }
        try file.write(bytes)
        next += 1
    }

    /// Checks every tensor was written and puts the file in place (`AtomicFileWriter.commit`).
    public func finish() throws {
        guard next == entries.count else {
            throw LowRAError(.invalidArgument, "\(path): \(entries.count - next) declared tensors were not written")
        }
        try file.commit()
    }
}

/// A safetensors file declared tensor by tensor, each with a closure that produces its bytes
/// when the file is written: only the tensor being written is ever materialized (an fp32
/// conversion, say), and arrays already in memory are written without a copy.
public struct SafeTensorsPlan {
    public var metadata: [String: String] = [:]
    private var items: [(entry: SafeTensorsStreamWriter.Entry, produce: (SafeTensorsStreamWriter) throws -> Void)] = []

    public init() {}

    /// `produce` hands the tensor's bytes to the writer (`writer.write(name, bytes:)`).
    public mutating func add(
        _ name: String, dtype: SafeTensorsDType, shape: [Int],
        produce: @escaping (SafeTensorsStreamWriter) throws -> Void
    ) {
        items.append((.init(name: name, dtype: dtype, shape: shape), produce))
    }

    public mutating func add(_ name: String, bytes: [UInt8], shape: [Int]? = nil) {
        add(name, dtype: .u8, shape: shape ?? [bytes.count]) { w in
            try bytes.withUnsafeBytes { try w.write(name, bytes: $0) }
        }
    }

    /// fp32 values, computed when written.
    public mutating func add(_ name: String, shape: [Int], floats: @escaping () throws -> [Float]) {
        add(name, dtype: .f32, shape: shape) { w in try floats().withUnsafeBytes { try w.write(name, bytes: $0) } }
    }

    public func write(to path: String) throws {
        let writer = try SafeTensorsStreamWriter(path: path, entries: items.map(\.entry), metadata: metadata)
        for item in items { try item.produce(writer) }
        try writer.finish()
    }
}
