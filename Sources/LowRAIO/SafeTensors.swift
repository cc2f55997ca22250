import Foundation
import LowRATensor

/// Element types LowRA reads and writes in safetensors files.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case u8 = "U8"
    case i32 = "I32"

    public var size: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16: 2
        case .u8: 1
        }
    }
}

/// One tensor's entry in a safetensors header.
public struct SafeTensorInfo: Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    public let range: Range<Int>  // byte range inside the data section
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A parsed safetensors file, memory-mapped. Format: u64 header length, JSON header
/// (name -> {dtype, shape, data_offsets}, optional "__metadata__" of strings), data.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    public let metadata: [String: String]
    public let tensors: [String: SafeTensorInfo]
    public let file: MappedFile
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        let file = (path as NSString).lastPathComponent
        self.file = try MappedFile(path: path)
        let data = self.file.bytes
        guard data.count >= 8 else { throw LowRAError.malformed(file, "truncated: no header length") }
        let headerLen = UInt64(littleEndian: data.loadUnaligned(as: UInt64.self))
        guard headerLen <= UInt64(data.count - 8), headerLen < 100_000_000 else {
            throw LowRAError.malformed(
                file, "truncated or not a safetensors file: header length \(headerLen), file has \(data.count) bytes")
        }
        dataStart = 8 + Int(headerLen)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(data[8..<dataStart]))
        } catch {
            throw LowRAError.malformed(file, "header is not valid JSON")
        }
        guard let header = json as? [String: Any] else {
            throw LowRAError.malformed(file, "header is not a JSON object")
        }
        var meta = [String: String]()
        var infos = [String: SafeTensorInfo]()
        let dataSize = data.count - dataStart
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw LowRAError.malformed(file, "__metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw LowRAError.malformed(file, "__metadata__ value for \(k) is not a string")
                    }
                    meta[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any], let dt = entry["dtype"] as? String,
                let shape = entry["shape"] as? [Int], let offs = entry["data_offsets"] as? [Int], offs.count == 2
            else { throw LowRAError.malformed(file, "tensor \(name): entry needs dtype, shape and data_offsets") }
            guard let dtype = SafeTensorsDType(rawValue: dt) else {
                throw LowRAError(
                    .unsupported,
                    "\(file): tensor \(name) has dtype \(dt), which LowRA cannot read (supported: "
                        + SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ") + ")"
                )
            }
            guard shape.allSatisfy({ $0 >= 0 }), offs[0] >= 0, offs[0] <= offs[1] else {
                throw LowRAError.malformed(file, "tensor \(name): bad shape or offsets")
            }
            // A shape whose element or byte count overflows is refused, never wrapped into a small one.
            var bytes: Int? = dtype.size
            for d in shape {
                guard let b = bytes else { break }
                let (p, overflow) = b.multipliedReportingOverflow(by: d)
                bytes = overflow || p >= 1 << 56 ? nil : p
            }
            guard let bytes else { throw LowRAError.malformed(file, "tensor \(name): shape \(shape) is too large") }
            guard offs[1] - offs[0] == bytes else {
                throw LowRAError.malformed(
                    file, "tensor \(name): \(offs[1] - offs[0]) bytes for shape \(shape) of \(dt)")
            }
            guard offs[1] <= dataSize else {
                throw LowRAError.malformed(
                    file, "truncated: tensor \(name) needs \(offs[1]) data bytes, file has \(dataSize)")
            }
            infos[name] = SafeTensorInfo(name: name, dtype: dtype, shape: shape, range: offs[0]..<offs[1])
        }
        metadata = meta
        tensors = infos
    }

    /// The tensor as fp32 (converted from F16/BF16/U8/I32).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = tensors[name] else {
            throw LowRAError(.missingTensor, "\((path as NSString).lastPathComponent): tensor \(name) not found")
        }
        var out = [Float](repeating: 0, count: info.elementCount)
        do {
            let p = file.bytes.baseAddress! + dataStart + info.range.lowerBound
            for i in 0..<info.elementCount {
                switch info.dtype {
                case .f32:
                    out[i] = Float(
                        bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                case .f16:
                    out[i] = floatFromHalf(
                        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                case .bf16:
                    out[i] = floatFromBFloat16(
                        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                case .u8: out[i] = Float(p.load(fromByteOffset: i, as: UInt8.self))
                case .i32: out[i] = Float(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                }
            }
        }
        return out
    }

    /// A U8 or F32 tensor's elements straight from the map, never copied (copied only when the
    /// file puts an F32 tensor at an offset not a multiple of 4).
    public func held<T: BitwiseCopyable>(_ name: String, as: T.Type) throws -> HeldArray<T> {
        guard let info = tensors[name] else {
            throw LowRAError(.missingTensor, "\((path as NSString).lastPathComponent): tensor \(name) not found")
        }
        let expected: SafeTensorsDType = T.self == UInt8.self ? .u8 : T.self == Float.self ? .f32 : .i32
        guard info.dtype == expected, MemoryLayout<T>.size == info.dtype.size else {
            throw LowRAError(
                .malformedFile,
                "\((path as NSString).lastPathComponent): tensor \(name) is \(info.dtype.rawValue), "
                    + "expected \(expected.rawValue)"
            )
        }
        let p = file.bytes.baseAddress! + dataStart + info.range.lowerBound
        if Int(bitPattern: p) % MemoryLayout<T>.alignment != 0 {
            return HeldArray(
                (0..<info.elementCount).map { p.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.stride, as: T.self) }
            )
        }
        return HeldArray(borrowing: p.assumingMemoryBound(to: T.self), count: info.elementCount, owner: file)
    }

    /// The tensor's raw bytes.
    public func bytes(_ name: String) throws -> Data {
        guard let info = tensors[name] else {
            throw LowRAError(.missingTensor, "\((path as NSString).lastPathComponent): tensor \(name) not found")
        }
        return Data(file.bytes[(dataStart + info.range.lowerBound)..<(dataStart + info.range.upperBound)])
    }

    /// A tensor as stored, behind the map (F32, F16 or BF16; or U8 bytes of ggml blocks of
    /// `ggmlType`): rows = the product of all but the last dimension of its shape, cols = the last
    /// (for ggml blocks, the last dimension counts elements: `cols`).
    public func matrix(_ name: String, ggmlType: GGMLType? = nil, cols: Int? = nil) throws -> StoredMatrix {
        let file = (path as NSString).lastPathComponent
        guard let info = tensors[name] else { throw LowRAError(.missingTensor, "\(file): tensor \(name) not found") }
        let start = dataStart + info.range.lowerBound
        if let ggmlType, let cols {
            guard info.dtype == .u8, let (qk, bytes) = ggmlType.blockLayout, cols % qk == 0,
                info.elementCount % (cols / qk * bytes) == 0
            else {
                throw LowRAError.malformed(file, "tensor \(name) does not hold whole rows of \(ggmlType.name) blocks")
            }
            return try StoredMatrix(
                rows: info.elementCount / (cols / qk * bytes), cols: cols, type: ggmlType, file: self.file,
                offset: start)
        }
        let type: GGMLType
        switch info.dtype {
        case .f32: type = .f32
        case .f16: type = .f16
        case .bf16: type = .bf16
        default:
            throw LowRAError(
                .unsupported, "\(file): tensor \(name) of \(info.dtype.rawValue) is not a matrix of numbers")
        }
        let cols = info.shape.last ?? 1
        return try StoredMatrix(
            rows: cols == 0 ? 0 : info.elementCount / cols, cols: cols, type: type, file: self.file, offset: start)
    }
}

/// Builds a safetensors file in memory and writes it atomically.
public struct SafeTensorsWriter {
    private var entries: [(name: String, dtype: SafeTensorsDType, shape: [Int], bytes: Data)] = []
    public var metadata: [String: String] = [:]

    public init() {}

    public mutating func add(_ name: String, dtype: SafeTensorsDType, shape: [Int], bytes: Data) throws {
        let count = shape.reduce(1, *)
        guard bytes.count == count * dtype.size else {
            throw LowRAError(
                .shapeMismatch, "tensor \(name): \(bytes.count) bytes for shape \(shape) of \(dtype.rawValue)")
        }
        guard !entries.contains(where: { $0.name == name }), name != "__metadata__" else {
            throw LowRAError(.invalidArgument, "tensor \(name) added twice")
        }
        entries.append((name, dtype, shape, bytes))
    }

    /// Adds fp32 values stored as `dtype` (F32, F16 or BF16).
    public mutating func add(_ name: String, floats: [Float], shape: [Int], dtype: SafeTensorsDType = .f32) throws {
        var d = Data(capacity: floats.count * dtype.size)
        switch dtype {
        case .f32: for v in floats { withUnsafeBytes(of: v.bitPattern.littleEndian) { d.append(contentsOf: $0) } }
        case .f16: for v in floats { withUnsafeBytes(of: halfFromFloat(v).littleEndian) { d.append(contentsOf: $0) } }
        case .bf16:
            for v in floats { withUnsafeBytes(of: bfloat16FromFloat(v).littleEndian) { d.append(contentsOf: $0) } }
        default: throw LowRAError(.invalidArgument, "tensor \(name): floats cannot be stored as \(dtype.rawValue)")
        }
        try add(name, dtype: dtype, shape: shape, bytes: d)
    }

    /// The complete file: header padded with spaces to a multiple of 8 bytes, then the data.
    public func serialized() throws -> Data {
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = [
                "dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.bytes.count],
            ]
            offset += e.bytes.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for e in entries { out.append(e.bytes) }
        return out
    }

    public func write(to path: String) throws {
        try writeAtomically(try serialized(), to: path)
    }
}
