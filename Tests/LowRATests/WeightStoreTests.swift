import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRATensor
@testable import LowRAPipeline

/// The weight store: tensors stay in their file's dtype behind a memory map and are converted
/// to fp32 a panel of rows at a time; results equal the dense fp32 path.
final class WeightStoreTests: XCTestCase {
    /// A stored F16 / BF16 / F32 matrix taller than one conversion panel multiplies like its
    /// dense fp32 copy, for a few rows (decode) and more (prefill), with and without bias; an
    /// embedding row equals the dense row; releasing its pages changes nothing.
    func testStoredLinearEqualsDense() throws {
        let (out, inF) = (Linear.panelRows(inFeatures: 24) + 37, 24)
        var rng = SplitMix64(seed: 5)
        let w = (0..<(out * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let bias = (0..<out).map { _ in Float(rng.nextUnit()) }
        let dir = try temporaryDirectory(self)
        var writer = SafeTensorsWriter()
        for dtype in [SafeTensorsDType.f16, .bf16, .f32] {
            try writer.add("w_\(dtype.rawValue)", floats: w, shape: [out, inF], dtype: dtype)
        }
        try writer.write(to: "\(dir)/w.safetensors")
        let file = try SafeTensorsFile(path: "\(dir)/w.safetensors")
        for dtype in [SafeTensorsDType.f16, .bf16, .f32] {
            let m = try file.matrix("w_\(dtype.rawValue)")
            XCTAssertEqual([m.rows, m.cols], [out, inF])
            let dense = Linear(outFeatures: out, inFeatures: inF, weight: m.floats(), bias: bias)
            let stored = Linear(stored: m, bias: bias)
            XCTAssertEqual(stored.weightBytes, out * inF * dtype.size)
            for rows in [1, 3, 12] {
                let x = (0..<(rows * inF)).map { _ in Float(rng.nextUnit() - 0.5) }
                var want = [Float](repeating: 0, count: rows * out), got = want
                dense.forward(x, rows: rows, into: &want)
                stored.forward(x, rows: rows, into: &got)
                let (diff, at) = maxRelativeDifference(got, want.map(Double.init))
                XCTAssertLessThanOrEqual(diff, 1e-5, "\(dtype) rows \(rows): \(got[at]) vs \(want[at])")
            }
            var row = [Float](repeating: 0, count: inF)
            stored.row(out - 1, into: &row)
            XCTAssertEqual(row, Array(dense.weight[((out - 1) * inF)...]))
            m.release()
            XCTAssertEqual(m.floats(), dense.weight)
        }
        XCTAssertThrowsError(try file.matrix("nope"))
    }

    /// A model loads without expanding its matrices (they are `.stored`), and a quantized
    /// directory keeps a GGUF's embedding in its ggml blocks, bit for bit.
    func testModelsStayStored() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_qwen2_hf"))
        let w = m.model.weights
        for lin in [w.embedding, w.head!] + w.blocks.flatMap(\.linears) {
            guard case .stored(let s) = lin.storage else { return XCTFail("expanded at load") }
            XCTAssertEqual(s.type, .bf16)
        }
        XCTAssertEqual(
            w.weightBytes,
            2
                * (w.embedding.parameterCount + w.head!.parameterCount
                    + w.blocks.flatMap(\.linears).reduce(0) { $0 + $1.outFeatures * $1.inFeatures })
                + 4
                * (w.finalNorm.count
                    + w.blocks.reduce(0) {
                        $0 + $1.attnNorm.count + $1.ffnNorm.count
                            + $1.linears.reduce(0) { $0 + ($1.bias?.count ?? 0) }
                    }))
    }
}
