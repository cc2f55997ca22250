import Foundation
import XCTest

@testable import LowRATensor

/// Finite-difference checks of every backward kernel: L = Σ g ⊙ f(x) with random g, central
/// differences in fp32 (eps 1e-2 on O(1) inputs). Stated tolerance: relative error of the whole
/// gradient vector ‖num − ana‖ / ‖num + ana‖ ≤ 2e-3.
final class GradientTests: XCTestCase {
    private func randoms(_ n: Int, _ range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<n).map { _ in Float.random(in: range) }
    }

    /// Numeric gradient of Σ g ⊙ f(x) with respect to x.
    private func numeric(_ x: [Float], _ g: [Float], eps: Float = 1e-2, _ f: ([Float]) -> [Float]) -> [Float] {
        var x = x
        return (0..<x.count).map { i in
            let keep = x[i]
            x[i] = keep + eps
            let plus = zip(f(x), g).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            x[i] = keep - eps
            let minus = zip(f(x), g).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            x[i] = keep
            return Float((plus - minus) / Double(2 * eps))
        }
    }

    private func assertClose(_ num: [Float], _ ana: [Float], _ what: String, line: UInt = #line) {
        var d = 0.0, s = 0.0, worst = 0.0
        var at = 0
        for i in num.indices {
            d += Double(num[i] - ana[i]) * Double(num[i] - ana[i])
            s += Double(num[i] + ana[i]) * Double(num[i] + ana[i])
            if abs(Double(num[i] - ana[i])) > worst {
                worst = abs(Double(num[i] - ana[i]))
                at = i
            }
        }
        let rel = (d / max(s, 1e-30)).squareRoot()
        XCTAssertLessThanOrEqual(
            rel, 2e-3, "\(what): relative error \(rel); largest difference \(worst) at \(at): \(num[at]) vs \(ana[at])",
            line: line)
    }

    func testRMSNorm() {
        let (t, c) = (3, 16)
        let x = randoms(t * c), w = randoms(c, 0.5...1.5), g = randoms(t * c)
        let f: ([Float]) -> [Float] = { x in
            var y = [Float](repeating: 0, count: t * c)
            rmsnormForward(&y, x, w, rows: t, cols: c, eps: 1e-5)
            return y
        }
        var dx = [Float](repeating: 0, count: t * c)
        rmsnormBackward(&dx, g, x, w, rows: t, cols: c, eps: 1e-5)
        assertClose(numeric(x, g, f), dx, "rmsnorm")
    }

    func testRoPEBothLayouts() {
        let (t, heads, d) = (4, 2, 8)
        for layout in [RopeLayout.interleaved, .halfSplit] {
            let table = RopeTable(start: 3, count: t, headDim: d, base: 10000)
            let x = randoms(t * heads * d), g = randoms(t * heads * d)
            let f: ([Float]) -> [Float] = { x in
                var y = x
                ropeForward(&y, rows: t, stride: heads * d, heads: heads, headDim: d, table: table, layout: layout)
                return y
            }
            var dx = g
            ropeBackward(&dx, rows: t, stride: heads * d, heads: heads, headDim: d, table: table, layout: layout)
            assertClose(numeric(x, g, f), dx, "rope \(layout)")
        }
    }

    func testSwiGLU() {
        let n = 40
        let gate = randoms(n, -3...3), up = randoms(n), g = randoms(n)
        var dgate = [Float](repeating: 0, count: n), dup = [Float](repeating: 0, count: n)
        swigluBackward(&dgate, &dup, g, gate, up, count: n)
        assertClose(
            numeric(gate, g) { x in
                var y = [Float](repeating: 0, count: n); swigluForward(&y, x, up, count: n); return y
            }, dgate, "swiglu gate")
        assertClose(
            numeric(up, g) { x in
                var y = [Float](repeating: 0, count: n); swigluForward(&y, gate, x, count: n); return y
            }, dup, "swiglu up")
    }

    func testCausalSoftmax() {
        let (rows, n) = (5, 7)
        let x = randoms(rows * n, -2...2), g = randoms(rows * n)
        let valid: (Int) -> Int = { $0 + 3 }
        let f: ([Float]) -> [Float] = { x in
            var y = x
            softmaxRowsForward(&y, rows: rows, cols: n, stride: n, valid: valid)
            return y
        }
        let p = f(x)
        var dp = g
        softmaxRowsBackward(&dp, p, rows: rows, cols: n, stride: n, valid: valid)
        assertClose(numeric(x, g, f), dp, "softmax")
    }

    func testCrossEntropyWithMaskedTargets() {
        let (rows, v) = (4, 11)
        let logits = randoms(rows * v, -3...3)
        let targets = [3, -1, 10, 0]
        var d = [Float](repeating: 9, count: rows * v)
        let (loss, count) = crossEntropyForwardBackward(&d, logits, targets: targets, vocab: v)
        XCTAssertEqual(count, 3)
        let num = numeric(logits, [1]) { x in
            [Float(crossEntropyForwardBackward(nil, x, targets: targets, vocab: v).loss)]
        }
        assertClose(num, d, "cross-entropy")
        XCTAssertEqual(Array(d[v..<(2 * v)]), [Float](repeating: 0, count: v))
        XCTAssertGreaterThan(loss, 0)
    }

    /// Distillation (1 − w)·CE + w·KL(teacher ‖ student) against central differences, at w = 0
    /// (cross-entropy exactly), 0.5 and 1; KL is zero when the student is the teacher.
    func testDistillationLoss() {
        let v = 13
        let logits = randoms(v, -3...3)
        let teacher = randoms(v, -3...3)
        for w: Float in [0, 0.5, 1] {
            var d = [Float](repeating: 9, count: v)
            let r = distillationForwardBackward(&d, logits, teacher: teacher, target: 4, vocab: v, weight: w)
            XCTAssertEqual(r.count, 1)
            let num = numeric(logits, [1]) { x in
                [Float(distillationForwardBackward(nil, x, teacher: teacher, target: 4, vocab: v, weight: w).loss)]
            }
            assertClose(num, d, "distillation w \(w)")
            if w == 0 {
                let ce = crossEntropyForwardBackward(nil, logits, targets: [4], vocab: v).loss
                XCTAssertEqual(r.loss, ce, accuracy: 1e-9)
            }
        }
        XCTAssertEqual(
            distillationForwardBackward(nil, teacher, teacher: teacher, target: 0, vocab: v, weight: 1).loss, 0,
            accuracy: 1e-9)
        var d = [Float](repeating: 9, count: v)
        XCTAssertEqual(
            distillationForwardBackward(&d, logits, teacher: teacher, target: -1, vocab: v, weight: 0.5).count, 0)
        XCTAssertEqual(d, [Float](repeating: 0, count: v))
    }

    /// LoRA linear: gradients of A, B and x through y = W x + s B A x.
    func testLoRALinear() {
        let (t, inF, out, r) = (3, 10, 7, 4)
        let s: Float = 2
        let x = randoms(t * inF), a = randoms(r * inF), b = randoms(out * r), g = randoms(t * out)
        let w = randoms(out * inF)
        func f(_ x: [Float], _ a: [Float], _ b: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: t * out)
            var xa = [Float](repeating: 0, count: t * r)
            matmulTransB(x, w, &y, m: t, n: out, k: inF)
            loraForward(&y, &xa, x, a, b, rows: t, in: inF, out: out, rank: r, scale: s)
            return y
        }
        var xa = [Float](repeating: 0, count: t * r)
        var scratchY = [Float](repeating: 0, count: t * out)
        loraForward(&scratchY, &xa, x, a, b, rows: t, in: inF, out: out, rank: r, scale: s)
        var dA = [Float](repeating: 0, count: r * inF), dB = [Float](repeating: 0, count: out * r)
        var dx = [Float](repeating: 0, count: t * inF), dyB = [Float](repeating: 0, count: t * r)
        matmul(g, w, &dx, m: t, n: inF, k: out)  // the frozen W's part of dx
        loraBackward(
            dA: &dA, dB: &dB, dx: &dx, dyB: &dyB, dy: g, x: x, xa: xa, a: a, b: b,
            rows: t, in: inF, out: out, rank: r, scale: s)
        assertClose(numeric(a, g) { f(x, $0, b) }, dA, "lora A")
        assertClose(numeric(b, g) { f(x, a, $0) }, dB, "lora B")
        assertClose(numeric(x, g) { f($0, a, b) }, dx, "lora x")
    }

    /// Causal GQA attention: gradients of q, k and v; and the forward equals a plain loop.
    func testAttention() {
        let (t, h, kv, d) = (5, 4, 2, 3)
        let q = randoms(t * h * d), k = randoms(t * kv * d), v = randoms(t * kv * d), g = randoms(t * h * d)
        func f(_ q: [Float], _ k: [Float], _ v: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: t * h * d)
            var probs = [Float](repeating: 0, count: h * t * t)
            attentionForward(&out, &probs, q, k, v, tokens: t, heads: h, kvHeads: kv, headDim: d)
            return out
        }
        // Plain reference of the forward.
        let out = f(q, k, v)
        for head in 0..<h {
            let gk = head / (h / kv)
            for i in 0..<t {
                var s = (0...i).map { j in
                    (0..<d).reduce(Float(0)) { $0 + q[i * h * d + head * d + $1] * k[j * kv * d + gk * d + $1] }
                        / Float(d).squareRoot()
                }
                let mx = s.max()!
                s = s.map { expf($0 - mx) }
                let z = s.reduce(0, +)
                for e in 0..<d {
                    let want = (0...i).reduce(Float(0)) { $0 + s[$1] / z * v[$1 * kv * d + gk * d + e] }
                    XCTAssertEqual(out[i * h * d + head * d + e], want, accuracy: 1e-5)
                }
            }
        }
        var probs = [Float](repeating: 0, count: h * t * t), o = [Float](repeating: 0, count: t * h * d)
        attentionForward(&o, &probs, q, k, v, tokens: t, heads: h, kvHeads: kv, headDim: d)
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count)
        var dv = [Float](repeating: 0, count: v.count), scratch = [Float](repeating: 0, count: t * t)
        attentionBackward(
            dq: &dq, dk: &dk, dv: &dv, scratch: &scratch, dout: g, probs: probs, q: q, k: k, v: v,
            tokens: t, heads: h, kvHeads: kv, headDim: d)
        assertClose(numeric(q, g) { f($0, k, v) }, dq, "attention q")
        assertClose(numeric(k, g) { f(q, $0, v) }, dk, "attention k")
        assertClose(numeric(v, g) { f(q, k, $0) }, dv, "attention v")
    }
}
