import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRATensor

final class GGUFTests: XCTestCase {
    func testMetadataOfEveryTypeMatchesWriter() throws {
        let f = try GGUFFile(path: Paths.fixture("types.gguf"))
        let expected = (try loadJSON("types_gguf.json") as! [String: Any])["metadata"] as! [String: Any]
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f.metadata["t.u8"]?.int, 200)
        XCTAssertEqual(f.metadata["t.i8"]?.int, -100)
        XCTAssertEqual(f.metadata["t.u16"]?.int, 60000)
        XCTAssertEqual(f.metadata["t.i16"]?.int, -30000)
        XCTAssertEqual(f.metadata["t.u32"]?.int, 4_000_000_000)
        XCTAssertEqual(f.metadata["t.i32"]?.int, -2_000_000_000)
        XCTAssertEqual(f.metadata["t.f32"]?.double, 1.5)
        XCTAssertEqual(f.metadata["t.bool"]?.bool, true)
        XCTAssertEqual(f.metadata["t.str"]?.string, expected["t.str"] as? String)
        XCTAssertEqual(f.metadata["t.u64"]?.int, (1 << 62) + 3)
        XCTAssertEqual(f.metadata["t.i64"]?.int, -(1 << 62))
        XCTAssertEqual(f.metadata["t.f64"]?.double, 2.718281828459045)
        XCTAssertEqual(f.metadata["t.arr_i32"]?.array?.compactMap(\.int), [1, -2, 3])
        XCTAssertEqual(f.metadata["t.arr_str"]?.array?.compactMap(\.string), ["a", "bc", ""])
    }

    func testDequantizationMatchesGGUFPy() throws {
        // types.gguf: F32/F16/BF16 and the 32-element block types; kquants.gguf: Q2_K…Q6_K, IQ4_NL.
        for (file, json, count) in [("types.gguf", "types_gguf.json", 8), ("kquants.gguf", "kquants_gguf.json", 6)] {
            let f = try GGUFFile(path: Paths.fixture(file))
            let tensors = (try loadJSON(json) as! [String: Any])["tensors"] as! [String: [String: Any]]
            XCTAssertEqual(tensors.count, count)
            for (name, spec) in tensors.sorted(by: { $0.key < $1.key }) {
                let info = try XCTUnwrap(f.tensorInfo(name))
                XCTAssertEqual(info.typeName, spec["type"] as? String, name)
                XCTAssertEqual(info.shape, spec["shape"] as? [Int], name)
                let want = (spec["values"] as! [NSNumber]).map(\.doubleValue)
                let got = try f.floats(name)
                let (diff, at) = maxRelativeDifference(got, want)
                XCTAssertLessThanOrEqual(
                    diff, 1e-6, "\(name): largest difference \(diff) at \(at): \(got[at]) vs \(want[at])")
            }
        }
    }

    func testTruncatedFilesGiveClearErrors() throws {
        let dir = try temporaryDirectory(self)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("types.gguf")))
        // Cut inside the header, the metadata, the tensor infos and the tensor data.
        for cut in [3, 10, 30, 200, 700, bytes.count - 100, bytes.count - 30] {
            let path = "\(dir)/cut\(cut).gguf"
            try bytes.prefix(cut).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try GGUFFile(path: path), "cut at \(cut)") { error in
                let e = error as! LowRAError
                XCTAssertTrue(e.message.contains("cut\(cut).gguf"), e.message)
                XCTAssertTrue(e.message.contains("truncated") || e.message.contains("magic"), e.message)
            }
        }
    }

    /// Inputs the fuzzer found (scripts/fuzz.sh), rebuilt by hand: each is refused with a clear
    /// error instead of trapping. Three dimensions of 2^39 each: their product overflowed Int.
    func testInputsTheFuzzerFoundAreRefused() throws {
        let path = "\(try temporaryDirectory(self))/shape-overflow.gguf"
        try handBuiltGGUF(dims: [1 << 39, 1 << 39, 1 << 39], type: 0).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try GGUFFile(path: path)) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("too many elements"), "\($0)")
        }
    }

    /// Metadata whose values would take far more memory than the file (~24 bytes per one-byte
    /// element): more than `maxMetadataValues` in all is refused before allocating.
    func testMetadataBeyondTheValueLimitIsRefused() throws {
        var d = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        u32(GGUFFile.magic)
        u32(3)
        u64(0)  // tensors
        u64(1)  // metadata keys
        u64(5)
        d.append(contentsOf: Array("bytes".utf8))
        u32(9)  // array
        u32(0)  // of uint8
        let n = GGUFFile.maxMetadataValues + 1
        u64(UInt64(n))
        d.append(Data(count: n))
        let path = "\(try temporaryDirectory(self))/values.gguf"
        try d.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try GGUFFile(path: path)) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("more than 16777216 values"), "\($0)")
        }
    }

    func testBadMagicAndVersion() throws {
        let dir = try temporaryDirectory(self)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("types.gguf")))
        bytes[0] = UInt8(ascii: "X")
        try bytes.write(to: URL(fileURLWithPath: "\(dir)/magic.gguf"))
        XCTAssertThrowsError(try GGUFFile(path: "\(dir)/magic.gguf")) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("not a GGUF file"))
        }
        bytes[0] = UInt8(ascii: "G")
        bytes[4] = 2  // version 2 has the same layout as 3
        try bytes.write(to: URL(fileURLWithPath: "\(dir)/v2.gguf"))
        XCTAssertEqual(try GGUFFile(path: "\(dir)/v2.gguf").version, 2)
        XCTAssertEqual(try GGUFFile(path: "\(dir)/v2.gguf").metadata["t.str"]?.string, "héllo\nworld")
        bytes[4] = 9
        try bytes.write(to: URL(fileURLWithPath: "\(dir)/version.gguf"))
        XCTAssertThrowsError(try GGUFFile(path: "\(dir)/version.gguf")) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("version 9"))
        }
    }

    /// A hand-built GGUF whose only tensor is IQ2_XXS, which LowRA does not read.
    func testUnsupportedTensorTypeIsNamed() throws {
        var d = handBuiltGGUF(dims: [256, 1], type: 16)
        d.append(Data(count: 66))  // one IQ2_XXS block
        let path = "\(try temporaryDirectory(self))/q2k.gguf"
        try d.write(to: URL(fileURLWithPath: path))
        let f = try GGUFFile(path: path)
        XCTAssertThrowsError(try f.floats("w")) {
            let m = ($0 as! LowRAError).message
            XCTAssertTrue(m.contains("IQ2_XXS") && m.contains("cannot read"), m)
        }
        XCTAssertThrowsError(try f.floats("nope")) { XCTAssertEqual(($0 as! LowRAError).kind, .missingTensor) }
    }

    /// A GGUF v3 header with no metadata and one tensor "w" of these ggml dims and type at
    /// offset 0, padded to the data section (the tensor's bytes are the caller's to append).
    private func handBuiltGGUF(dims: [UInt64], type: UInt32) -> Data {
        var d = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); d.append(contentsOf: Array(s.utf8)) }
        u32(0x4655_4747); u32(3); u64(1); u64(0)
        str("w"); u32(UInt32(dims.count)); dims.forEach(u64); u32(type); u64(0)
        while d.count % 32 != 0 { d.append(0) }
        return d
    }
}
