import Foundation
import LowRATensor

/// A GGUF metadata value.
public indirect enum GGUFValue: Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), array([GGUFValue])
    case uint64(UInt64), int64(Int64), float64(Double)

    public var int: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        default: nil
        }
    }

    public var double: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: int.map(Double.init)
        }
    }

    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var array: [GGUFValue]? { if case .array(let a) = self { a } else { nil } }

    /// A short rendering for `inspect`: arrays show their length and first items.
    public var summary: String {
        switch self {
        case .string(let s):
            s.count > 60 ? "\"\(s.prefix(57).replacingOccurrences(of: "\n", with: "\\n"))...\"" : "\"\(s)\""
        case .array(let a):
            "[\(a.count) items: \(a.prefix(3).map(\.summary).joined(separator: ", "))\(a.count > 3 ? ", ..." : "")]"
        case .bool(let b): "\(b)"
        case .float32(let v): "\(v)"
        case .float64(let v): "\(v)"
        default: int.map { "\($0)" } ?? "?"
        }
    }
}

/// One tensor's entry in a GGUF file. `dims` are in ggml order (fastest first: [in, out] for a
/// linear weight); `shape` is the row-major order LowRA uses ([out, in]).
public struct GGUFTensorInfo: Sendable {
    public let name: String
    public let dims: [Int]
    public let type: GGMLType?
    public let rawType: UInt32
    public let offset: Int
    public var shape: [Int] { dims.reversed() }
    public var elementCount: Int { dims.reduce(1, *) }
    public var typeName: String { type?.name ?? "type \(rawType)" }

    /// Bytes of data, or nil for a type whose block layout LowRA does not know.
    public var byteCount: Int? {
        guard let (qk, bytes) = type?.blockLayout else { return nil }
        return elementCount / qk * bytes
    }
}

/// A parsed GGUF file (versions 2 and 3), memory-mapped.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: Int
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    public let dataOffset: Int
    public let file: MappedFile
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        let name = (path as NSString).lastPathComponent
        (version, metadata, tensors, dataOffset) = try GGUFFile.parse(file.bytes, file: name)
        var idx = [String: Int]()
        for (i, t) in tensors.enumerated() {
            guard idx[t.name] == nil else { throw LowRAError.malformed(name, "tensor \(t.name) listed twice") }
            idx[t.name] = i
        }
        index = idx
    }

    public var fileSize: Int { file.count }

    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        index[name].map { tensors[$0] }
    }

    /// Dequantizes one tensor to fp32, row-major with shape `info.shape`.
    public func floats(_ name: String) throws -> [Float] { try matrix(name).floats() }

    /// One tensor as stored, behind the map: rows = the product of all but the last dimension
    /// of `shape`, cols = the last.
    public func matrix(_ name: String) throws -> StoredMatrix {
        let file = (path as NSString).lastPathComponent
        guard let info = tensorInfo(name) else {
            throw LowRAError(.missingTensor, "\(file): tensor \(name) not found")
        }
        guard let type = info.type, type.blockLayout != nil, let byteCount = info.byteCount else {
            throw LowRAError(
                .unsupported,
                "\(file): tensor \(name) has type \(info.typeName), which LowRA cannot read "
                    + "(supported: \(GGMLType.readable.map(\.name).joined(separator: ", ")))")
        }
        let start = dataOffset + info.offset
        guard start + byteCount <= self.file.count else {
            throw LowRAError.malformed(
                file, "truncated: tensor \(name) needs bytes up to \(start + byteCount), file has \(self.file.count)")
        }
        return try StoredMatrix(
            rows: info.elementCount / info.dims[0], cols: info.dims[0], type: type, file: self.file, offset: start)
    }

    static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian

    private static func parse(
        _ raw: UnsafeRawBufferPointer, file: String
    ) throws
        -> (Int, [String: GGUFValue], [GGUFTensorInfo], Int)
    {
        var r = ByteReader(raw, file: file)
        guard raw.count >= 4, try r.read(UInt32.self, "magic") == magic else {
            throw LowRAError.malformed(file, "not a GGUF file (bad magic)")
        }
        let version = Int(try r.read(UInt32.self, "version"))
        guard version == 2 || version == 3 else {
            throw LowRAError(.unsupported, "\(file): GGUF version \(version) is not supported (2 and 3 are)")
        }
        let tensorCount = try r.read(UInt64.self, "tensor count")
        let kvCount = try r.read(UInt64.self, "metadata count")
        // Every entry takes at least 8 bytes; reject absurd counts before allocating.
        guard tensorCount < UInt64(raw.count / 8), kvCount < UInt64(raw.count / 8) else {
            throw LowRAError.malformed(
                file, "truncated or corrupt: implausible counts (\(tensorCount) tensors, \(kvCount) metadata keys)")
        }
        var metadata = [String: GGUFValue]()
        var values = 0
        for _ in 0..<kvCount {
            let key = try readString(&r, "metadata key")
            let type = try r.read(UInt32.self, "type of \(key)")
            metadata[key] = try readValue(&r, type: type, key: key, depth: 0, values: &values)
        }
        var tensors = [GGUFTensorInfo]()
        tensors.reserveCapacity(Int(tensorCount))
        for _ in 0..<tensorCount {
            let name = try readString(&r, "tensor name")
            let nDims = Int(try r.read(UInt32.self, "dims of \(name)"))
            guard (1...4).contains(nDims) else {
                throw LowRAError.malformed(file, "tensor \(name) has \(nDims) dimensions")
            }
            var dims = [Int]()
            for _ in 0..<nDims {
                let d = try r.read(UInt64.self, "dims of \(name)")
                guard d > 0, d < 1 << 40 else { throw LowRAError.malformed(file, "tensor \(name) has dimension \(d)") }
                dims.append(Int(d))
            }
            var count = 1
            for d in dims {
                let (product, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow, product < 1 << 48 else {
                    throw LowRAError.malformed(file, "tensor \(name) has shape \(dims): too many elements")
                }
                count = product
            }
            let rawType = try r.read(UInt32.self, "type of \(name)")
            let offset = try r.read(UInt64.self, "offset of \(name)")
            guard offset < UInt64(raw.count) else {
                throw LowRAError.malformed(file, "truncated: tensor \(name) starts past the end of the file")
            }
            let info = GGUFTensorInfo(
                name: name, dims: dims, type: GGMLType(rawValue: rawType), rawType: rawType, offset: Int(offset))
            if let (qk, _) = info.type?.blockLayout, dims[0] % qk != 0 {
                throw LowRAError.malformed(
                    file,
                    "tensor \(name): row length \(dims[0]) is not a multiple of the \(info.typeName) block (\(qk))")
            }
            tensors.append(info)
        }
        let alignment = metadata["general.alignment"]?.int ?? 32
        guard alignment > 0, alignment.nonzeroBitCount == 1 else {
            throw LowRAError.malformed(file, "general.alignment \(alignment) is not a power of two")
        }
        let dataOffset = (r.offset + alignment - 1) / alignment * alignment
        for t in tensors {
            if let n = t.byteCount, dataOffset + t.offset + n > raw.count {
                throw LowRAError.malformed(
                    file,
                    "truncated: tensor \(t.name) needs bytes up to \(dataOffset + t.offset + n), file has \(raw.count)")
            }
        }
        return (version, metadata, tensors, dataOffset)
    }

    private static func readString(_ r: inout ByteReader, _ what: String) throws -> String {
        let n = try r.read(UInt64.self, what)
        guard n <= UInt64(r.bytes.count) else {
            throw LowRAError.malformed(r.file, "truncated: \(what) claims \(n) bytes")
        }
        let b = try r.readBytes(Int(n), what)
        return String(decoding: b, as: UTF8.self)
    }

    /// Values held in memory over all metadata, at most: a value takes ~24 bytes however few the
    /// file spends on it (a one-byte element), so this bounds the memory a file can ask for (a real
    /// vocabulary of 256k tokens holds under 1M values: tokens, scores, types, merges).
    static let maxMetadataValues = 1 << 24

    private static func readValue(
        _ r: inout ByteReader, type: UInt32, key: String, depth: Int, values: inout Int
    ) throws -> GGUFValue {
        values += 1
        guard values <= maxMetadataValues else {
            throw LowRAError.malformed(r.file, "metadata holds more than \(maxMetadataValues) values (at \(key))")
        }
        switch type {
        case 0: return .uint8(try r.read(UInt8.self, key))
        case 1: return .int8(try r.read(Int8.self, key))
        case 2: return .uint16(try r.read(UInt16.self, key))
        case 3: return .int16(try r.read(Int16.self, key))
        case 4: return .uint32(try r.read(UInt32.self, key))
        case 5: return .int32(try r.read(Int32.self, key))
        case 6: return .float32(try r.readFloat(key))
        case 7:
            let b = try r.read(UInt8.self, key)
            guard b <= 1 else { throw LowRAError.malformed(r.file, "metadata \(key): bool value \(b)") }
            return .bool(b == 1)
        case 8: return .string(try readString(&r, key))
        case 9:
            guard depth < 4 else { throw LowRAError.malformed(r.file, "metadata \(key): arrays nested too deep") }
            let elemType = try r.read(UInt32.self, key)
            let n = try r.read(UInt64.self, key)
            guard n <= UInt64(r.bytes.count - r.offset) else {
                throw LowRAError.malformed(r.file, "truncated: metadata \(key) claims \(n) items")
            }
            guard n <= UInt64(maxMetadataValues - values) else {
                throw LowRAError.malformed(r.file, "metadata holds more than \(maxMetadataValues) values (at \(key))")
            }
            var items = [GGUFValue]()
            items.reserveCapacity(Int(n))
            for _ in 0..<n {
                items.append(try readValue(&r, type: elemType, key: key, depth: depth + 1, values: &values))
            }
            return .array(items)
        case 10: return .uint64(try r.read(UInt64.self, key))
        case 11: return .int64(try r.read(Int64.self, key))
        case 12: return .float64(try r.readDouble(key))
        default: throw LowRAError.malformed(r.file, "metadata \(key) has unknown value type \(type)")
        }
    }
}
