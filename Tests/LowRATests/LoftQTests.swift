import XCTest

@testable import LowRAQuant
@testable import LowRATensor

final class LoftQTests: XCTestCase {
    /// LoftQ lowers ‖W − (Q + s·BA)‖ below plain quantization (zero-initialized B), and the
    /// returned factors reproduce the reported error.
    func testLoftQReducesReconstructionError() throws {
        let (out, inF, r) = (48, 128, 8)
        var rng = SplitMix64(seed: 21)
        // A weight with a strong low-rank part, as trained layers have, plus heavy-tailed noise.
        let u = (0..<(out * 4)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let v = (0..<(4 * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        var w = [Float](repeating: 0, count: out * inF)
        matmul(u, v, &w, m: out, n: inF, k: 4, alpha: 0.05)
        for i in w.indices { w[i] += Float(rng.nextUnit() - 0.5) * (rng.nextUnit() < 0.02 ? 0.5 : 0.05) }
        let bits: [UInt8] = (0..<out).map { $0 % 4 == 0 ? 4 : 2 }
        let s: Float = 2
        let res = try loftqInitialize(
            w, out: out, in: inF, bits: bits, options: QuantizerOptions(), rank: r, steps: 5, scale: s)
        XCTAssertEqual(res.errors.count, 6)
        XCTAssertLessThan(res.errors.last!, 0.9 * res.errors[0], "errors \(res.errors)")
        XCTAssertEqual(res.packed.bits, bits)
        var rec = res.packed.dequantized()
        var ba = [Float](repeating: 0, count: out * inF)
        matmul(res.b, res.a, &ba, m: out, n: inF, k: r, alpha: s)
        for i in rec.indices { rec[i] += ba[i] }
        let err = zip(w, rec).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }.squareRoot()
        XCTAssertEqual(err, res.errors.last!, accuracy: 1e-4 * res.errors.last!)
        XCTAssertThrowsError(
            try loftqInitialize(w, out: out, in: inF, bits: bits, options: QuantizerOptions(), rank: 0))
        // W's analysis at every precision (pass 1's) fits each row as the step-0 refit at its own
        // precision does: handing it over changes nothing.
        let cols = (0..<inF).map { _ in Float(0.5 + rng.nextUnit()) }
        let plain = try loftqInitialize(
            w, out: out, in: inF, bits: bits, options: QuantizerOptions(), rank: r, steps: 2, scale: s,
            columnWeights: cols)
        let handed = try loftqInitialize(
            w, out: out, in: inF, bits: bits, options: QuantizerOptions(), rank: r, steps: 2, scale: s,
            columnWeights: cols,
            analysis: analyzeTensor(w, out: out, in: inF, options: QuantizerOptions(), columnWeights: cols))
        XCTAssertEqual(handed.packed.dequantized(), plain.packed.dequantized())
        XCTAssertEqual(handed.a, plain.a)
        XCTAssertEqual(handed.b, plain.b)
    }
}
