import XCTest

@testable import LowRATensor

final class SVDTests: XCTestCase {
    /// Low rank plus noise: the randomized factorization's singular values and reconstruction
    /// error match LAPACK's truncated SVD.
    func testRandomizedMatchesExact() throws {
        let (m, n, r) = (60, 40, 5)
        var rng = SplitMix64(seed: 4)
        func g() -> Float { Float(rng.nextUnit() * 2 - 1) }
        let a = (0..<(m * r)).map { _ in g() }, b = (0..<(r * n)).map { _ in g() }
        var w = [Float](repeating: 0, count: m * n)
        matmul(a, b, &w, m: m, n: n, k: r)
        for i in w.indices { w[i] += 0.01 * g() }
        let exact = try truncatedSVDExact(w, rows: m, cols: n, rank: r)
        let fast = try truncatedSVDRandomized(w, rows: m, cols: n, rank: r)
        for (x, y) in zip(exact.s, fast.s) { XCTAssertEqual(x, y, accuracy: 1e-3 * exact.s[0]) }
        func residual(_ f: TruncatedSVD) -> Double {
            var us = f.u
            for i in 0..<m { for j in 0..<r { us[i * r + j] *= f.s[j] } }
            var rec = [Float](repeating: 0, count: m * n)
            matmul(us, f.vt, &rec, m: m, n: n, k: r)
            return zip(w, rec).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        }
        XCTAssertEqual(residual(fast), residual(exact), accuracy: 0.01 * residual(exact) + 1e-6)
        XCTAssertLessThan(residual(exact), 0.001 * w.reduce(0.0) { $0 + Double($1 * $1) })
        XCTAssertThrowsError(try truncatedSVDExact(w, rows: m, cols: n, rank: 41))
    }
}
