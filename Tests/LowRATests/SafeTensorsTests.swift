import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRATensor

final class SafeTensorsTests: XCTestCase {
    func testWriterRoundTripsEveryDTypeAndMetadata() throws {
        let path = "\(try temporaryDirectory(self))/t.safetensors"
        var w = SafeTensorsWriter()
        w.metadata = ["format": "pt", "note": "héllo"]
        let values: [Float] = [0, 1, -2.5, 3.25, 1e-3, -65504]
        try w.add("f32", floats: values, shape: [2, 3])
        try w.add("f16", floats: values, shape: [3, 2], dtype: .f16)
        try w.add("bf16", floats: values, shape: [6], dtype: .bf16)
        try w.add("u8", dtype: .u8, shape: [4], bytes: Data([0, 1, 128, 255]))
        var i32 = Data()
        for v: Int32 in [-7, 0, 123_456] { withUnsafeBytes(of: v.littleEndian) { i32.append(contentsOf: $0) } }
        try w.add("i32", dtype: .i32, shape: [3], bytes: i32)
        try w.write(to: path)

        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(f.metadata, ["format": "pt", "note": "héllo"])
        XCTAssertEqual(try f.floats("f32"), values)
        XCTAssertEqual(f.tensors["f32"]?.shape, [2, 3])
        for (got, want) in zip(try f.floats("f16"), values) {
            XCTAssertEqual(got, want, accuracy: abs(want) * 1e-3 + 1e-6)
        }
        for (got, want) in zip(try f.floats("bf16"), values) {
            XCTAssertEqual(got, want, accuracy: abs(want) * 8e-3 + 1e-6)
        }
        XCTAssertEqual(try f.floats("u8"), [0, 1, 128, 255])
        XCTAssertEqual(try f.floats("i32"), [-7, 0, 123_456])
        // The header is padded to 8 bytes, as the format asks.
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = data.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(n % 8, 0)
    }

    /// Arrays set aside in a scratch file come back as written, in any order, and the file has no name
    /// in its directory (nothing is left behind by a killed process); a missing directory is an error.
    func testScratchFileReadsBackWhatItWasGiven() throws {
        let dir = try temporaryDirectory(self)
        let scratch = try ScratchFile(directory: dir)
        var rng = SystemRandomNumberGenerator()
        let arrays = [0, 1, 7, 4096, 100_003].map { n in (0..<n).map { _ in Float.random(in: -1...1, using: &rng) } }
        for (i, a) in arrays.enumerated() { XCTAssertEqual(try scratch.append(a), i) }
        XCTAssertEqual(scratch.count, arrays.count)
        for i in [3, 0, 4, 2, 1, 4] { XCTAssertEqual(try scratch.read(i), arrays[i]) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
        XCTAssertThrowsError(try ScratchFile(directory: dir + "/missing")) {
            XCTAssertTrue("\($0)".contains("cannot create a scratch file"), "\($0)")
        }
    }

    func testReadsFileWrittenByPythonSafetensors() throws {
        let f = try SafeTensorsFile(path: Paths.fixture("tiny_hf_bias_f16/model.safetensors"))
        XCTAssertEqual(f.metadata["format"], "pt")
        XCTAssertEqual(f.tensors["model.layers.0.self_attn.q_proj.bias"]?.dtype, .f16)
        XCTAssertEqual(f.tensors["lm_head.weight"]?.shape.count, 2)
    }

    func testMalformedFilesGiveClearErrors() throws {
        let dir = try temporaryDirectory(self)
        let good = try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("tiny_hf/model.safetensors")))
        func check(_ data: Data, _ needle: String, line: UInt = #line) throws {
            let path = "\(dir)/bad.safetensors"
            try data.write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try SafeTensorsFile(path: path), line: line) {
                let m = ($0 as! LowRAError).message
                XCTAssertTrue(m.contains(needle) && m.contains("bad.safetensors"), m, line: line)
            }
        }
        try check(good.prefix(5), "truncated")
        try check(good.prefix(good.count - 10), "truncated")
        var huge = good
        huge.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
        try check(huge, "header length")
        var garbled = good
        garbled[8] = UInt8(ascii: "#")  // the header's opening brace
        try check(garbled, "JSON")
        let header = #"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#
        var mismatch = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Data($0) }
        mismatch.append(contentsOf: Array(header.utf8))
        mismatch.append(Data(count: 16))
        try check(mismatch, "12 bytes for shape [2, 2]")
        let f64 = #"{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#
        var unsupported = withUnsafeBytes(of: UInt64(f64.utf8.count).littleEndian) { Data($0) }
        unsupported.append(contentsOf: Array(f64.utf8))
        unsupported.append(Data(count: 8))
        try check(unsupported, "F64")
        // Shapes whose element or byte count overflows: refused, not wrapped around (2⁹³ elements
        // wrapped to 0 and matched an empty data range) nor trapping (2⁶² elements × 4 bytes).
        for shape in ["[2147483648,2147483648,2147483648]", "[2147483648,2147483648]"] {
            let h = #"{"w":{"dtype":"F32","shape":"# + shape + #","data_offsets":[0,0]}}"#
            var overflow = withUnsafeBytes(of: UInt64(h.utf8.count).littleEndian) { Data($0) }
            overflow.append(contentsOf: Array(h.utf8))
            try check(overflow, "is too large")
        }
    }
}
