import Foundation
import LowRATensor

/// A GGUF file (version 3) written in one pass: metadata, the tensor directory, then each
/// tensor's bytes as its `produce` closure makes them — one tensor in memory at a time — into a
/// temporary file put in place at the end (`AtomicFileWriter`), so a killed export leaves no
/// half-written model under the real name. The reader is `GGUFFile`.
public struct GGUFWriter {
    /// Tensor data offsets are multiples of this (GGUF's default `general.alignment`).
    public static let alignment = 32

    struct Entry {
        let name: String
        let dims: [Int]  // ggml order: fastest first
        let type: GGMLType
        let byteCount: Int
        let produce: () throws -> [UInt8]
    }

    public private(set) var metadata: [(key: String, value: GGUFValue)] = []
    private var entries: [Entry] = []

    public init() {}

    public var tensorNames: [String] { entries.map(\.name) }

    /// Sets `key` (replacing an earlier value, keeping its place).
    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.key == key }) { metadata[i].value = value } else {
            metadata.append((key, value))
        }
    }

    /// Adds a tensor of row-major `shape` ([rows, cols] or [n]) stored as `type`; `produce`
    /// returns its bytes when the file is written.
    public mutating func add(
        _ name: String, shape: [Int], type: GGMLType, produce: @escaping () throws -> [UInt8]
    ) throws {
        guard !entries.contains(where: { $0.name == name }) else {
            throw LowRAError(.invalidArgument, "GGUF tensor \(name) added twice")
        }
        guard let (qk, bytes) = type.blockLayout, let cols = shape.last, shape.allSatisfy({ $0 > 0 }),
            cols % qk == 0
        else {
            throw LowRAError(
                .invalidArgument, "GGUF tensor \(name): shape \(shape) cannot be stored as \(type.name)")
        }
        let count = shape.reduce(1, *)
        entries.append(
            Entry(name: name, dims: shape.reversed(), type: type, byteCount: count / qk * bytes, produce: produce))
    }

    /// Writes the file; `progress(done, total)` counts tensors.
    public func write(to path: String, progress: ((Int, Int) -> Void)? = nil) throws {
        var header = ByteWriter()
        header.append(UInt32(0x4655_4747))  // "GGUF"
        header.append(UInt32(3))
        header.append(UInt64(entries.count))
        header.append(UInt64(metadata.count))
        for (key, value) in metadata {
            header.append(key)
            header.append(value.typeID)
            try header.append(value, key: key)
        }
        var offset = 0
        for e in entries {
            header.append(e.name)
            header.append(UInt32(e.dims.count))
            for d in e.dims { header.append(UInt64(d)) }
            header.append(e.type.rawValue)
            header.append(UInt64(offset))
            offset += Self.padded(e.byteCount)
        }
        header.padToAlignment()
        let out = try AtomicFileWriter(path: path)
        try header.bytes.withUnsafeBytes { try out.write($0) }
        let zeros = [UInt8](repeating: 0, count: Self.alignment)
        for (i, e) in entries.enumerated() {
            progress?(i, entries.count)
            let data = try e.produce()
            guard data.count == e.byteCount else {
                throw LowRAError(
                    .invalidArgument, "GGUF tensor \(e.name): \(data.count) bytes made, \(e.byteCount) expected")
            }
            try data.withUnsafeBytes { try out.write($0) }
            let pad = Self.padded(data.count) - data.count
            if pad > 0 { try zeros.withUnsafeBytes { try out.write(UnsafeRawBufferPointer(rebasing: $0[..<pad])) } }
        }
        try out.commit()
        progress?(entries.count, entries.count)
    }

    static func padded(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }
}

extension GGUFValue {
    /// The GGUF value type (the reader's `readValue` switch, inverted).
    var typeID: UInt32 {
        switch self {
        case .uint8: 0
        case .int8: 1
        case .uint16: 2
        case .int16: 3
        case .uint32: 4
        case .int32: 5
        case .float32: 6
        case .bool: 7
        case .string: 8
        case .array: 9
        case .uint64: 10
        case .int64: 11
        case .float64: 12
        }
    }
}

/// Little-endian bytes of a GGUF header.
struct ByteWriter {
    var bytes = [UInt8]()

    mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func append(_ s: String) {
        let utf8 = Array(s.utf8)
        append(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    mutating func padToAlignment() {
        bytes.append(contentsOf: [UInt8](repeating: 0, count: GGUFWriter.padded(bytes.count) - bytes.count))
    }

    /// A value without its type (arrays carry their element type and count).
    mutating func append(_ value: GGUFValue, key: String) throws {
        switch value {
        case .uint8(let v): append(v)
        case .int8(let v): append(v)
        case .uint16(let v): append(v)
        case .int16(let v): append(v)
        case .uint32(let v): append(v)
        case .int32(let v): append(v)
        case .float32(let v): append(v.bitPattern)
        case .bool(let v): append(UInt8(v ? 1 : 0))
        case .string(let s): append(s)
        case .uint64(let v): append(v)
        case .int64(let v): append(v)
        case .float64(let v): append(v.bitPattern)
        case .array(let items):
            let type = items.first?.typeID ?? GGUFValue.string("").typeID
            guard items.allSatisfy({ $0.typeID == type }), type != GGUFValue.array([]).typeID else {
                throw LowRAError(.invalidArgument, "GGUF metadata \(key): arrays hold one scalar or string type")
            }
            append(type)
            append(UInt64(items.count))
            for item in items { try append(item, key: key) }
        }
    }
}
