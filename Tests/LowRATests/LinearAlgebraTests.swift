import CBLAS
import Foundation
import XCTest

@testable import LowRATensor

/// The two routes to LAPACK (Sources/CBLAS/lowra_linear_algebra.h): LAPACKE's row-major interface,
/// which Linux builds use, and the column-major Fortran interface with transposed problems, which
/// Apple builds use (Accelerate has no LAPACKE) — run here, on OpenBLAS's Fortran symbols, against
/// each other on fresh random matrices.
final class LinearAlgebraTests: XCTestCase {
    var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970 * 1000))

    func random(_ count: Int) -> [Float] { (0..<count).map { _ in Float(rng.nextUnit() * 2 - 1) } }

    func assertClose(_ a: [Float], _ b: [Float], _ tol: Float, _ what: String) {
        XCTAssertEqual(a.count, b.count, what)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, tol, "\(what): largest difference \(worst)")
    }

    func testSVDRoutesAgree() throws {
        for (m, n) in [(7, 5), (5, 7), (16, 16), (1, 9)] {
            let a = random(m * n)
            let k = min(m, n)
            var results = [(s: [Float], u: [Float], vt: [Float])]()
            for colMajor in [false, true] {
                var w = a
                var s = [Float](repeating: 0, count: k), u = [Float](repeating: 0, count: m * k)
                var vt = [Float](repeating: 0, count: k * n)
                let info =
                    colMajor ? lowra_sgesdd_colmajor(Int32(m), Int32(n), &w, &s, &u, &vt)
                    : lowra_sgesdd_lapacke(Int32(m), Int32(n), &w, &s, &u, &vt)
                XCTAssertEqual(info, 0)
                // U diag(s) Vᵀ = A
                var back = [Float](repeating: 0, count: m * n)
                for i in 0..<m {
                    for j in 0..<n { for t in 0..<k { back[i * n + j] += u[i * k + t] * s[t] * vt[t * n + j] } }
                }
                assertClose(back, a, 1e-5, "\(m)×\(n) reconstruction, column-major \(colMajor)")
                results.append((s, u, vt))
            }
            assertClose(results[1].s, results[0].s, 1e-5, "\(m)×\(n) singular values")
            // The same singular vectors up to each pair's sign.
            for t in 0..<k {
                let sign: Float = zip(0..<m, 0..<m).map { results[0].u[$0 * k + t] * results[1].u[$1 * k + t] }
                    .reduce(0, +) < 0 ? -1 : 1
                assertClose(
                    (0..<m).map { results[1].u[$0 * k + t] * sign }, (0..<m).map { results[0].u[$0 * k + t] }, 1e-4,
                    "\(m)×\(n) left vector \(t)")
            }
        }
    }

    func testOrthonormalizeRoutesAgree() throws {
        for (m, n) in [(9, 4), (6, 6), (64, 16)] {
            let x = random(m * n)
            var q = [[Float]](), d = [[Float]]()
            for colMajor in [false, true] {
                var w = x
                var diagonal = [Float](repeating: 0, count: n)
                let info =
                    colMajor ? lowra_orthonormalize_colmajor(Int32(m), Int32(n), &w, &diagonal)
                    : lowra_orthonormalize_lapacke(Int32(m), Int32(n), &w, &diagonal)
                XCTAssertEqual(info, 0)
                q.append(w)
                d.append(diagonal)
            }
            assertClose(q[1], q[0], 1e-5, "\(m)×\(n) Q")
            assertClose(d[1], d[0], 1e-5, "\(m)×\(n) R's diagonal")
        }
    }

    func testCholeskyRoutesAgree() throws {
        let n = 12
        let b = random(n * n)
        var a = [Float](repeating: 0, count: n * n)  // BᵀB + n·I: positive definite
        for i in 0..<n { for j in 0..<n { for t in 0..<n { a[i * n + j] += b[t * n + i] * b[t * n + j] } } }
        for i in 0..<n { a[i * n + i] += Float(n) }
        for upper in [Int32(1), 0] {
            var f0 = a, f1 = a
            XCTAssertEqual(lowra_spotrf_lapacke(upper, Int32(n), &f0), 0)
            XCTAssertEqual(lowra_spotrf_colmajor(upper, Int32(n), &f1), 0)
            assertClose(f1, f0, 1e-5, "Cholesky factor, upper \(upper)")
            if upper == 0 {
                XCTAssertEqual(lowra_spotri_lower_lapacke(Int32(n), &f0), 0)
                XCTAssertEqual(lowra_spotri_lower_colmajor(Int32(n), &f1), 0)
                assertClose(f1, f0, 1e-5, "inverse from the lower factor")
            }
        }
        var r0 = [Float](repeating: 0, count: n * n)  // an upper-triangular matrix, well conditioned
        for i in 0..<n { for j in i..<n { r0[i * n + j] = i == j ? Float(2 + i) : b[i * n + j] } }
        var r1 = r0
        XCTAssertEqual(lowra_strtri_upper_lapacke(Int32(n), &r0), 0)
        XCTAssertEqual(lowra_strtri_upper_colmajor(Int32(n), &r1), 0)
        assertClose(r1, r0, 1e-5, "triangular inverse")
        var notPD = a
        notPD[0] = -1
        XCTAssertGreaterThan(lowra_spotrf_colmajor(1, Int32(n), &notPD), 0, "not positive definite: info > 0")
    }

    /// GPTQ's factor U (A⁻¹ = Uᵀ U, upper, positive diagonal: unique) from one Cholesky of the
    /// reversed matrix and a triangular inverse equals the one from inverting A and factoring the
    /// inverse again, and Uᵀ U A is the identity.
    func testInverseCholeskyUpperIsTheFactorOfTheInverse() throws {
        let n = 40
        let b = random(n * n)
        var a = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { for t in 0..<n { a[i * n + j] += b[t * n + i] * b[t * n + j] } } }
        for i in 0..<n { a[i * n + i] += 0.5 }
        let u = try inverseCholeskyUpper(a, n: n)
        var reference = a
        XCTAssertEqual(lowra_spotrf(0, Int32(n), &reference), 0)
        for i in 0..<n { for j in (i + 1)..<n { reference[i * n + j] = 0 } }
        XCTAssertEqual(lowra_spotri_lower(Int32(n), &reference), 0)
        for i in 0..<n { for j in (i + 1)..<n { reference[i * n + j] = reference[j * n + i] } }
        reference = try choleskyFactor(reference, n: n, upper: true)
        let scale = reference.map { abs($0) }.max()!
        for i in 0..<n {
            XCTAssertGreaterThan(u[i * n + i], 0)
            for j in 0..<n {
                if j < i { XCTAssertEqual(u[i * n + j], 0) }
                XCTAssertEqual(u[i * n + j], reference[i * n + j], accuracy: 1e-3 * scale, "U[\(i), \(j)]")
            }
        }
        for i in 0..<n {  // (Uᵀ U A)[i, j]
            for j in 0..<n {
                var x = 0.0
                for k in 0..<n {
                    var utu = 0.0
                    for t in 0...min(i, k) { utu += Double(u[t * n + i]) * Double(u[t * n + k]) }
                    x += utu * Double(a[k * n + j])
                }
                XCTAssertEqual(x, i == j ? 1 : 0, accuracy: 1e-2, "(UᵀUA)[\(i), \(j)]")
            }
        }
    }
}
