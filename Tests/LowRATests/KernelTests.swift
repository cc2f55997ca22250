import Foundation
import XCTest

@testable import LowRAQuant
@testable import LowRATensor

/// The packed kernels (`lowra_kernels.h`) against the reference — dequantize, then multiply in
/// double precision — on fresh random weights, for every path this CPU runs.
final class KernelTests: XCTestCase {
    /// A random packed weight: codes, levels and scales drawn directly (every code pattern occurs).
    private func randomPacked(
        out: Int, in inF: Int, widths: [UInt8], scope: CodebookScope, doubleQuant: Bool, rng: inout SplitMix64
    ) throws -> PackedLinear {
        let bits = (0..<out).map { _ in widths[Int(rng.next() % UInt64(widths.count))] }
        let size = PackedLinear.arraySizes(
            outFeatures: out, inFeatures: inF, bits: bits, doubleQuant: doubleQuant, scope: scope)
        let codes = (0..<size.codes).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let levels = (0..<size.levels).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let raw = (0..<size.absmax).map { _ in Float(rng.nextUnit() * 0.1) }
        return try PackedLinear(
            outFeatures: out, inFeatures: inF, bits: bits, codes: codes,
            absmax: AbsmaxStorage(raw: raw, doubleQuant: doubleQuant), levels: levels, scope: scope)
    }

    func testKernelsEqualDequantizeThenMultiply() throws {
        let paths = (0...2).filter { PackedLinear.kernelPathSupported($0) }
        XCTAssertTrue(paths.contains(PackedLinear.kernelPath))
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970))  // fresh inputs every run
        let shapes: [(Int, Int)] = [(37, 64), (16, 192), (9, 100), (33, 7), (5, 1), (64, 576), (12, 130)]
        let widthSets: [[UInt8]] = [[1], [2], [4], [1, 2, 4], [2, 4]]
        var cases = 0
        for (out, inF) in shapes {
            for widths in widthSets {
                for scope in CodebookScope.allCases {
                    for dq in [false, true] {
                        let p = try randomPacked(
                            out: out, in: inF, widths: widths, scope: scope, doubleQuant: dq, rng: &rng)
                        let w = p.dequantized()
                        for n in [1, 2, 3, 5, 8, 11] {
                            let x = (0..<(n * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) }
                            for path in paths {
                                var y = [Float](repeating: .nan, count: n * out)
                                x.withUnsafeBufferPointer { xb in
                                    y.withUnsafeMutableBufferPointer {
                                        p.multiply(xb.baseAddress!, columns: n, into: $0.baseAddress!, path: path)
                                    }
                                }
                                for c in 0..<n {
                                    for r in 0..<out {
                                        var ref = 0.0, mag = 0.0
                                        for j in 0..<inF {
                                            let t = Double(w[r * inF + j]) * Double(x[c * inF + j])
                                            ref += t
                                            mag += abs(t)
                                        }
                                        let got = Double(y[c * out + r])
                                        // fp32 accumulation in another order: a few ulps of Σ|w x|.
                                        XCTAssertLessThanOrEqual(
                                            abs(got - ref), 2e-6 * mag + 1e-12,
                                            "\(PackedLinear.kernelPathName(path)) \(out)x\(inF) widths \(widths) "
                                                + "\(scope) dq \(dq) column \(c) of \(n), row \(r)")
                                    }
                                }
                                cases += 1
                            }
                        }
                    }
                }
            }
        }
        XCTAssertGreaterThan(cases, 400)
    }
}
