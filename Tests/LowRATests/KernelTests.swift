import CLowRAPacked
import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAQuant
@testable import LowRATensor

/// The packed kernels (`lowra_kernels.h`) against the reference — dequantize, then multiply in
/// double precision — on fresh random weights, for every path this CPU runs.
final class KernelTests: XCTestCase {
    /// For each column count in `columns`, fresh X (n, in); `multiply(x, n, y, path)` on every
    /// path this CPU runs must give W (out, in) · X in double precision: fp32 accumulation in
    /// another order stays within a few ulps of Σ|w x|. Returns the cases checked.
    private func checkEveryPath(
        w: [Float], out: Int, in inF: Int, columns: [Int], rng: inout SplitMix64, _ label: String,
        line: UInt = #line,
        multiply: (UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>, Int) -> Void
    ) -> Int {
        var cases = 0
        for n in columns {
            let x = (0..<(n * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) }
            for path in KernelPath.all {
                var y = [Float](repeating: .nan, count: n * out)
                x.withUnsafeBufferPointer { xb in
                    y.withUnsafeMutableBufferPointer { multiply(xb.baseAddress!, n, $0.baseAddress!, path) }
                }
                for c in 0..<n {
                    for r in 0..<out {
                        var ref = 0.0
                        var mag = 0.0
                        for j in 0..<inF {
                            let t = Double(w[r * inF + j]) * Double(x[c * inF + j])
                            ref += t
                            mag += abs(t)
                        }
                        XCTAssertLessThanOrEqual(
                            abs(Double(y[c * out + r]) - ref), 2e-6 * mag + 1e-12,
                            "\(KernelPath.name(path)) \(label), column \(c) of \(n), row \(r)", line: line)
                    }
                }
                cases += 1
            }
        }
        return cases
    }

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

    /// A random Q8_0 matrix written to a file in `dir` and mapped (the head's encoding).
    private func randomQ8_0(rows: Int, cols: Int, in dir: String, rng: inout SplitMix64) throws -> StoredMatrix {
        let v = (0..<(rows * cols)).map { _ in Float(rng.nextUnit() * 2 - 1) * 0.05 }
        var q = [UInt8](repeating: 0, count: rows * cols / 32 * 34)
        q.withUnsafeMutableBytes { qb in
            v.withUnsafeBufferPointer {
                quantizeGGML(.q8_0, $0.baseAddress!, count: rows * cols, into: qb.baseAddress!)
            }
        }
        let path = "\(dir)/q8_0-\(rows)x\(cols).bin"
        try Data(q).write(to: URL(fileURLWithPath: path))
        return try StoredMatrix(rows: rows, cols: cols, type: .q8_0, file: try MappedFile(path: path), offset: 0)
    }

    func testKernelsEqualDequantizeThenMultiply() throws {
        XCTAssertTrue(KernelPath.all.contains(KernelPath.current))
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
                        cases += checkEveryPath(
                            w: w, out: out, in: inF, columns: [1, 2, 3, 5, 8, 11], rng: &rng,
                            "\(out)x\(inF) widths \(widths) \(scope) dq \(dq)"
                        ) { p.multiply($0, columns: $1, into: $2, path: $3, activations: .float) }
                    }
                }
            }
        }
        XCTAssertGreaterThan(cases, 400)
    }

    /// Stored matrices multiplied in their file's encoding (F32, F16, BF16, Q8_0, Q4_0, Q4_1)
    /// equal converting the rows to fp32 (`dequantizeGGML`) and multiplying, on every path.
    func testStoredKernelsEqualConvertThenMultiply() throws {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 1)
        let dir = try temporaryDirectory(self)
        var cases = 0
        for type in [GGMLType.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1] {
            let (qk, blockBytes) = type.blockLayout!
            for (rows, cols) in [(13, 64), (70, 96), (5, qk == 1 ? 37 : 32), (3, qk == 1 ? 9 : 160)] {
                // Random bytes, with every f16 scale (and the float types' values) a finite number.
                var bytes = [UInt8]()
                for _ in 0..<(rows * cols / qk) {
                    switch type {
                    case .f32: withUnsafeBytes(of: Float(rng.nextUnit() * 2 - 1)) { bytes += $0 }
                    case .f16: withUnsafeBytes(of: halfFromFloat(Float(rng.nextUnit() * 2 - 1))) { bytes += $0 }
                    case .bf16: withUnsafeBytes(of: bfloat16FromFloat(Float(rng.nextUnit() * 2 - 1))) { bytes += $0 }
                    default:
                        withUnsafeBytes(of: halfFromFloat(Float(rng.nextUnit() * 0.1))) { bytes += $0 }
                        if type == .q4_1 {
                            withUnsafeBytes(of: halfFromFloat(Float(rng.nextUnit() * 0.2 - 0.1))) { bytes += $0 }
                        }
                        for _ in 0..<(blockBytes - (type == .q4_1 ? 4 : 2)) {
                            bytes.append(UInt8(truncatingIfNeeded: rng.next()))
                        }
                    }
                }
                let path = "\(dir)/\(type.name)-\(rows)x\(cols).bin"
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                let m = try StoredMatrix(
                    rows: rows, cols: cols, type: type, file: try MappedFile(path: path), offset: 0)
                XCTAssertTrue(m.multipliesDirectly)
                let w = m.floats()
                for path in KernelPath.all {  // the panels prefill converts: the same values
                    var panel = [Float](repeating: .nan, count: (rows - 1) * cols)
                    panel.withUnsafeMutableBufferPointer {
                        m.dequantizePanel(1..<rows, into: $0.baseAddress!, path: path)
                    }
                    XCTAssertEqual(panel, Array(w[cols...]), "\(KernelPath.name(path)) \(type.name) panel")
                }
                cases += checkEveryPath(
                    w: w, out: rows, in: cols, columns: [1, 3, 8, 10], rng: &rng, "\(type.name) \(rows)x\(cols)"
                ) { m.multiply($0, columns: $1, into: $2, path: $3, activations: .float) }
            }
        }
        XCTAssertGreaterThan(cases, 90)
    }

    /// The integer kernels (`lowra_q8_*`) on every path against (1) the scalar path, which sums
    /// the same integers: equal up to fp32 rounding of the per-block scaling; and (2) W · X in
    /// double precision: within the bound the two roundings allow, summed over the row,
    /// Σ_j |w_j| d_b + (|x_j| + d_b) e_j, where d_b is the most x_j moved (int8: half of
    /// max|x| / 127 over its block; int16: 1/256 of that, the low half's clamp included) and e_j
    /// the most w_j's level moved (half a level step times its block scale; 0 for Q8_0's weights).
    /// X has a zero block and outliers, as real activations do. (3) Each column multiplied alone
    /// gives bit for bit its result among n (what batching sequences of several requests relies
    /// on). Every AVX-512 variant is run (with and without VBMI). Returns the cases checked.
    private func checkIntegerPaths(
        w: [Float], out: Int, in inF: Int, columns: [Int], rng: inout SplitMix64, _ label: String,
        activations kind: KernelActivations, levelError: (Int, Int) -> Double,
        blockScale: (Int, Int) -> Double = { _, _ in 0 }, line: UInt = #line,
        multiply: (UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>, Int) -> Void
    ) -> Int {
        var cases = 0
        for n in columns {
            var x = (0..<(n * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) * (rng.nextUnit() < 0.02 ? 20 : 1) }
            for j in 0..<min(64, inF) { x[j] = 0 }  // column 0's first block is all zero
            func run(_ path: Int) -> [Float] {
                var y = [Float](repeating: .nan, count: n * out)
                x.withUnsafeBufferPointer { xb in
                    y.withUnsafeMutableBufferPointer { multiply(xb.baseAddress!, n, $0.baseAddress!, path) }
                }
                return y
            }
            let scalar = run(0)
            let nb = (inF + 63) / 64
            for c in 0..<n {
                let s = (0..<nb).map { b in
                    Double(x[(c * inF + 64 * b)..<(c * inF + min(inF, 64 * b + 64))].map(abs).max()!) / 127
                        * (kind == .int8 ? 0.5 : 1.0 / 256)
                }
                for r in 0..<out {
                    var ref = 0.0
                    var mag = 0.0
                    var bound = 0.0
                    for j in 0..<inF {
                        let wj = Double(w[r * inF + j])
                        let xj = Double(x[c * inF + j])
                        ref += wj * xj
                        mag += abs(wj * xj)
                        let e = levelError(r, j)
                        bound += abs(wj) * s[j / 64] + (abs(xj) + s[j / 64]) * e
                    }
                    XCTAssertLessThanOrEqual(
                        abs(Double(scalar[c * out + r]) - ref), bound * 1.001 + 1e-5 * mag + 1e-9,
                        "scalar \(kind) \(label), column \(c) of \(n), row \(r)", line: line)
                }
            }
            for path in KernelPath.all where path != 0 {
                KernelPath.eachVBMIVariant {
                    let y = run(path)
                    let name = "\(KernelPath.variant(path)) \(kind) \(label)"
                    for i in 0..<(n * out) {
                        let r = i % out
                        let c = i / out
                        // The kernels sum terms as large as |block scale · x| (a row's lowest level
                        // times Σx), whatever the weights: their rounding is relative to those.
                        var mag = 0.0
                        for j in 0..<inF {
                            let xj = abs(Double(x[c * inF + j]))
                            mag += abs(Double(w[r * inF + j])) * xj + blockScale(r, j) * xj
                        }
                        XCTAssertLessThanOrEqual(
                            abs(Double(y[i]) - Double(scalar[i])), 1e-5 * mag + 1e-9,
                            "\(name), column \(c) of \(n), row \(r)", line: line)
                    }
                    // Batch invariance: each column alone gives bit for bit what it gave among n.
                    for c in 0..<n where n > 1 {
                        var alone = [Float](repeating: .nan, count: out)
                        x[(c * inF)..<((c + 1) * inF)].withUnsafeBufferPointer { xb in
                            alone.withUnsafeMutableBufferPointer { multiply(xb.baseAddress!, 1, $0.baseAddress!, path) }
                        }
                        XCTAssertEqual(alone, Array(y[(c * out)..<((c + 1) * out)]), "\(name), column \(c) alone")
                    }
                    cases += 1
                }
            }
            cases += 1
        }
        return cases
    }

    func testIntegerKernelsEqualTheScalarPathAndStayWithinTheRoundingBound() throws {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 3)
        var cases = 0
        let shapes: [(Int, Int)] = [(37, 64), (16, 192), (9, 100), (33, 7), (5, 1), (40, 576), (12, 130)]
        for (out, inF) in shapes {
            for widths in [[1], [2], [4], [1, 2, 4]] as [[UInt8]] {
                for scope in CodebookScope.allCases {
                    for dq in [false, true] {
                        let p = try randomPacked(
                            out: out, in: inF, widths: widths, scope: scope, doubleQuant: dq, rng: &rng)
                        let w = p.dequantized()
                        let nb = (inF + 63) / 64
                        let steps = p.levelStep  // a copy: taken once, not per element
                        for kind in [KernelActivations.int8, .int16] {
                            cases += checkIntegerPaths(
                                w: w, out: out, in: inF, columns: [1, 2, 4, 8, 19], rng: &rng,
                                "\(out)x\(inF) widths \(widths) \(scope) dq \(dq)", activations: kind,
                                levelError: { r, j in
                                    Double(steps[r]) / 2 * Double(p.absmax.value(r * nb + j / 64))
                                },
                                blockScale: { r, j in Double(p.absmax.value(r * nb + j / 64)) }
                            ) { p.multiply($0, columns: $1, into: $2, path: $3, activations: kind) }
                        }
                    }
                }
            }
        }
        // Q8_0 rows (the head), an even and an odd number of 32-blocks.
        let dir = try temporaryDirectory(self)
        for (rows, cols) in [(21, 128), (10, 96), (3, 576)] {
            let m = try randomQ8_0(rows: rows, cols: cols, in: dir, rng: &rng)
            for kind in [KernelActivations.int8, .int16] {
                cases += checkIntegerPaths(
                    w: m.floats(), out: rows, in: cols, columns: [1, 3, 8, 17], rng: &rng, "Q8_0 \(rows)x\(cols)",
                    activations: kind, levelError: { _, _ in 0 }
                ) { m.multiply($0, columns: $1, into: $2, path: $3, activations: kind) }
            }
        }
        XCTAssertGreaterThan(cases, 800)
    }

    /// The tiles' transposed product (`lowra_tiled_gemm_t`, training's input gradient dY · W): every
    /// path with the vector kernel gives bit for bit the scalar reference on the same tiles, for any
    /// split of the columns; the lanes layout's reference gives the same bits; `accumulate` adds to
    /// what dX held. Against dY · W in double (W dequantized), within the bound the two roundings
    /// allow: each row's gradient g = dy · a · step moves by at most half of its group's σ = M / 127
    /// (M the largest |g| of its 64 tile rows) against |u - 128| ≤ |level - mid| / step + 1/2, and the
    /// levels' own rounding to their uint8 grid (half a step times the block scale) against |dy|.
    /// Fresh random weights of every width mix, dY with outliers, shapes with more than one group
    /// and more than one chunk of 16 tiles.
    func testTransposedTiledKernelEqualsItsReferenceAndStaysWithinTheRoundingBound() throws {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 17)
        var cases = 0, vectorRuns = 0
        let vector = KernelPath.all.map(Int32.init).filter { $0 != 0 && lowra_tiled_t_supported($0) != 0 }
        for (out, inF) in [(37, 64), (300, 100), (70, 576), (16, 7), (200, 130)] {
            for widths in [[1], [2], [4], [1, 2, 4]] as [[UInt8]] {
                let p = try randomPacked(
                    out: out, in: inF, widths: widths, scope: .channel, doubleQuant: rng.next() % 2 == 0, rng: &rng)
                let w = p.dequantized()
                let (mins, steps, nb) = (p.levelMin, p.levelStep, (inF + 63) / 64)
                let tiles = [Int32(LOWRA_TILE_MULTISHIFT), Int32(LOWRA_TILE_LANES)].map {
                    TiledWeight(p.kernel.pointer, layout: Int($0))
                }
                // The tile order's groups of 64 rows.
                let order = Array(UnsafeBufferPointer(start: tiles[0].view.rows, count: 16 * tiles[0].count))
                for n in [1, 2, 5, 17, 70] {
                    let dy = (0..<(n * out)).map { _ in
                        Float(rng.nextUnit() * 2 - 1) * (rng.nextUnit() < 0.02 ? 30 : 1)
                    }
                    let start = (0..<(n * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) }
                    func run(_ t: TiledWeight, _ path: Int32, accumulate: Bool, _ splits: [Range<Int>]) -> [Float] {
                        var dx = accumulate ? start : [Float](repeating: .nan, count: n * inF)
                        var v = t.view
                        for r in splits {
                            XCTAssertEqual(
                                lowra_tiled_gemm_t(
                                    path, &v, dy, UInt64(out), &dx, UInt64(inF), accumulate ? 1 : 0,
                                    UInt64(r.lowerBound), UInt64(r.upperBound)), 0)
                        }
                        return dx
                    }
                    for accumulate in [false, true] {
                        let reference = run(tiles[0], 0, accumulate: accumulate, [0..<n])
                        let label = "\(out)x\(inF) widths \(widths) n \(n) accumulate \(accumulate)"
                        XCTAssertEqual(run(tiles[1], 0, accumulate: accumulate, [0..<n]), reference, "\(label): lanes")
                        for path in vector {
                            let name = String(cString: lowra_kernel_variant_name(path))
                            XCTAssertEqual(
                                run(tiles[0], path, accumulate: accumulate, [0..<n]), reference, "\(label) \(name)")
                            XCTAssertEqual(
                                run(tiles[0], path, accumulate: accumulate, [0..<1, 1..<n]), reference,
                                "\(label) \(name), columns split at 1")
                            vectorRuns += 1
                        }
                        guard accumulate else { continue }
                        for c in 0..<n {
                            for b in 0..<nb {
                                // Each row's share of the bound: σ_G / 2 per unit of |u - 128|.
                                var half = [Double](repeating: 0, count: out)
                                for g in stride(from: 0, to: order.count, by: 64) {
                                    let rows = order[g..<min(order.count, g + 64)].filter { $0 >= 0 }.map(Int.init)
                                    let big = rows.map { r in
                                        abs(Double(dy[c * out + r]) * Double(p.absmax.value(r * nb + b)))
                                            * Double(steps[r])
                                    }.max() ?? 0
                                    for r in rows { half[r] = big / 254 * 1.0001 }
                                }
                                for j in (64 * b)..<min(inF, 64 * b + 64) {
                                    var want = Double(start[c * inF + j]), bound = 0.0, mag = abs(want)
                                    for r in 0..<out {
                                        let a = Double(p.absmax.value(r * nb + b)), d = Double(dy[c * out + r])
                                        want += d * Double(w[r * inF + j])
                                        guard a > 0, steps[r] > 0 else { continue }
                                        let mid = Double(mins[r]) + 128 * Double(steps[r])
                                        let level = Double(w[r * inF + j]) / a
                                        bound += half[r] * (abs(level - mid) / Double(steps[r]) + 0.5)
                                        bound += abs(d) * a * Double(steps[r]) / 2
                                        mag += abs(d) * a * (abs(level) + 2 * abs(mid) + 128 * Double(steps[r]))
                                    }
                                    XCTAssertLessThanOrEqual(
                                        abs(Double(reference[c * inF + j]) - want), bound + 1e-5 * mag + 1e-9,
                                        "\(label): column \(c), input \(j)")
                                }
                            }
                        }
                        cases += 1
                    }
                }
            }
        }
        XCTAssertGreaterThan(cases, 90)
        if !vector.isEmpty { XCTAssertGreaterThan(vectorRuns, 180) }
    }

    /// The tiled kernels (`lowra_tiled_gemm_q8`, `lowra_q8_0_tiled_gemm_q8`) on every vector path
    /// of this CPU that tiles (AVX-512 VBMI: multishift layout; AVX2: lanes layout) give bit for bit
    /// what their scalar references give (every fp32 step is the same fused multiply-add in the
    /// same order), for any columns, each column alone as among the others; both layouts' references
    /// give the same bits; and the references agree with the row kernels' scalar path (the same
    /// integer sums, scaled in another order) to fp32 rounding. Fresh random weights of every
    /// width mix and shape, int8 and 16-bit activations, Q8_0 rows.
    func testTiledKernelsEqualTheirScalarReferenceBitForBit() throws {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 11)
        var cases = 0
        var vectorRuns = [String: Int]()
        typealias Product = (Int32, UnsafePointer<lowra_q8_activations>, UnsafeMutablePointer<Float>) -> Void
        // Run each tiled form (its scalar reference, path 0, and its vector paths) and `rows(q, y)`
        // on fresh X for each column count and compare.
        func check(
            out: Int, in inF: Int, orders: UInt32, _ label: String, tiled: [(paths: [Int32], product: Product)],
            rows: (UnsafePointer<lowra_q8_activations>, UnsafeMutablePointer<Float>) -> Void
        ) {
            for n in [1, 3, 8, 16, 21] {
                let x = (0..<(n * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) * (rng.nextUnit() < 0.02 ? 20 : 1) }
                for kind in [KernelActivations.int8, .int16] {
                    func run(
                        _ columns: Range<Int>,
                        _ body: (UnsafePointer<lowra_q8_activations>, UnsafeMutablePointer<Float>) -> Void
                    ) -> [Float] {
                        var y = [Float](repeating: .nan, count: columns.count * out)
                        x[(columns.lowerBound * inF)..<(columns.upperBound * inF)].withUnsafeBufferPointer { xb in
                            withQuantizedActivations(
                                xb.baseAddress!, columns: columns.count, inFeatures: inF, orders: orders, as: kind
                            ) { q in y.withUnsafeMutableBufferPointer { body(q, $0.baseAddress!) } }
                        }
                        return y
                    }
                    let reference = run(0..<n) { tiled[0].product(0, $0, $1) }
                    let rowScalar = run(0..<n) { rows($0, $1) }
                    for i in 0..<(n * out) {
                        let tol = 1e-5 * max(1, abs(Double(rowScalar[i])))
                        XCTAssertEqual(
                            Double(reference[i]), Double(rowScalar[i]), accuracy: tol, "\(label) \(kind) n \(n) #\(i)")
                    }
                    for (k, form) in tiled.enumerated() {
                        if k > 0 {
                            XCTAssertEqual(run(0..<n) { form.product(0, $0, $1) }, reference, "\(label) layout \(k)")
                        }
                        for path in form.paths {
                            let name = String(cString: lowra_kernel_variant_name(path))
                            let what = "\(label) \(kind) n \(n): \(name)"
                            XCTAssertEqual(run(0..<n) { form.product(path, $0, $1) }, reference, what)
                            let c = n - 1
                            XCTAssertEqual(
                                run(c..<n) { form.product(path, $0, $1) }, Array(reference[(c * out)...]),
                                "\(what), last column alone")
                            vectorRuns[name, default: 0] += 1
                        }
                    }
                    cases += 1
                }
            }
        }
        let vector = KernelPath.all.map(Int32.init).filter { $0 != 0 }
        for (out, inF) in [(37, 64), (16, 192), (9, 100), (33, 7), (40, 576), (70, 130)] {
            for widths in [[1], [2], [4], [1, 2, 4], [2, 4]] as [[UInt8]] {
                let p = try randomPacked(
                    out: out, in: inF, widths: widths, scope: .channel, doubleQuant: rng.next() % 2 == 0, rng: &rng)
                // Both layouts: each read by its paths' kernel, and by the scalar reference.
                let forms = [Int32(LOWRA_TILE_MULTISHIFT), Int32(LOWRA_TILE_LANES)].map { layout in
                    let t = TiledWeight(p.kernel.pointer, layout: Int(layout))
                    let paths = vector.filter { lowra_tiled_supported($0) != 0 && lowra_tile_layout($0) == layout }
                    let product: Product = { path, q, y in
                        var v = t.view
                        lowra_tiled_gemm_q8(path, &v, q, y, UInt64(out), 0, UInt64(t.count))
                    }
                    return (paths, product)
                }
                check(
                    out: out, in: inF, orders: p.activationOrders | 1, "\(out)x\(inF) widths \(widths)", tiled: forms,
                    rows: { q, y in p.withView { lowra_packed_gemm_q8(0, $0, q, y, UInt64(out), 0, UInt64(out)) } })
            }
        }
        let dir = try temporaryDirectory(self)
        for (rows, cols) in [(21, 128), (16, 96), (3, 576)] {
            let m = try randomQ8_0(rows: rows, cols: cols, in: dir, rng: &rng)
            let base = m.rawRows(0..<rows).assumingMemoryBound(to: UInt8.self)
            let forms = [Int32(LOWRA_TILE_MULTISHIFT), Int32(LOWRA_TILE_LANES)].map { layout in
                let t = Q8_0Tiles(m, layout: Int(layout))
                let paths = vector.filter { lowra_tiled_supported($0) != 0 && lowra_tile_layout($0) == layout }
                let product: Product = { path, q, y in
                    var v = t.view
                    lowra_q8_0_tiled_gemm_q8(path, &v, q, y, UInt64(rows), 0, UInt64(t.count))
                }
                return (paths, product)
            }
            check(
                out: rows, in: cols, orders: 0, "Q8_0 \(rows)x\(cols)", tiled: forms,
                rows: { q, y in lowra_q8_0_gemm_q8(0, base, UInt64(m.rowBytes), q, y, UInt64(rows), 0, UInt64(rows)) })
        }
        XCTAssertEqual(cases, (6 * 5 + 3) * 5 * 2)
        // Which vector kernels ran (none on a CPU without AVX2).
        print("tiled kernels checked: \(vectorRuns.sorted { $0.key < $1.key })")
    }

    /// Many columns (a prompt, an eval window) go through the tiled kernels in chunks of
    /// `KernelPath.tiledChunkColumns`: every column's result is bit for bit what the column gives
    /// alone, past the first chunk too — packed weights alone and sharing an input, and Q8_0 rows.
    func testManyColumnsThroughTheTilesEqualEachColumnAlone() throws {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 13)
        let path = KernelPath.current
        guard KernelPath.usesTiles(path) else { return }
        let n = KernelPath.tiledChunkColumns + 37, inF = 130
        let x = (0..<(n * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        typealias Multiply = (UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void
        func columns(_ out: Int, _ multiply: Multiply) -> [Float] {
            var y = [Float](repeating: .nan, count: n * out)
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { multiply(xb.baseAddress!, n, $0.baseAddress!) }
            }
            return y
        }
        func alone(_ out: Int, _ multiply: Multiply) -> [Float] {
            var y = [Float](repeating: .nan, count: n * out)
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { yb in
                    for c in 0..<n { multiply(xb.baseAddress! + c * inF, 1, yb.baseAddress! + c * out) }
                }
            }
            return y
        }
        let a = try randomPacked(out: 37, in: inF, widths: [1, 2, 4], scope: .channel, doubleQuant: true, rng: &rng)
        let b = try randomPacked(out: 21, in: inF, widths: [2], scope: .channel, doubleQuant: false, rng: &rng)
        let aAlone = alone(37) { a.multiply($0, columns: $1, into: $2) }
        XCTAssertEqual(columns(37) { a.multiply($0, columns: $1, into: $2) }, aAlone)
        let both = columns(58) { x, count, y in
            PackedLinear.multiply([a, b], x, columns: count, into: [y, y + count * 37])
        }
        XCTAssertEqual(Array(both[..<(n * 37)]), aAlone, "q of q, k")
        XCTAssertEqual(Array(both[(n * 37)...]), alone(21) { b.multiply($0, columns: $1, into: $2) }, "k of q, k")
        let m = try randomQ8_0(rows: 19, cols: 128, in: try temporaryDirectory(self), rng: &rng)
        let xq = (0..<(n * 128)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        var all = [Float](repeating: .nan, count: n * 19), one = all
        xq.withUnsafeBufferPointer { xb in
            all.withUnsafeMutableBufferPointer { m.multiply(xb.baseAddress!, columns: n, into: $0.baseAddress!) }
            one.withUnsafeMutableBufferPointer { yb in
                for c in 0..<n { m.multiply(xb.baseAddress! + c * 128, columns: 1, into: yb.baseAddress! + c * 19) }
            }
        }
        XCTAssertEqual(all, one, "Q8_0")
    }

    /// The LoRA up-projection (`lowra_lora_up`): every path bit for bit the scalar chain of fused
    /// multiply-adds, any columns, rank (more than one register chunk of 32) and row range, and
    /// within fp32 rounding of y + s · XA Bᵀ.
    func testLoRAUpProjectionEqualsTheReference() {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 12)
        var cases = 0
        for (out, r) in [(16, 16), (37, 4), (100, 32), (33, 40), (5, 1), (576, 16), (50, 64)] {
            let b = (0..<(out * r)).map { _ in Float(rng.nextUnit() * 2 - 1) }
            for n in [1, 5, 16, 19] {
                let xa = (0..<(n * r)).map { _ in Float(rng.nextUnit() * 2 - 1) }
                let y0 = (0..<(n * out)).map { _ in Float(rng.nextUnit() * 2 - 1) }
                let s: Float = 0.37
                let (o0, o1) = out > 20 ? (3, out - 2) : (0, out)  // a row range not on 16
                func run(_ path: Int32) -> [Float] {
                    var y = y0
                    lowra_lora_up(
                        path, b, UInt64(out), UInt64(r), xa, UInt64(n), s, &y, UInt64(out), UInt64(o0), UInt64(o1))
                    return y
                }
                let scalar = run(0)
                for c in 0..<n {
                    for o in 0..<out {
                        var ref = Double(y0[c * out + o])
                        var mag = abs(ref)
                        if o >= o0 && o < o1 {
                            for k in 0..<r {
                                let t = Double(s) * Double(b[o * r + k]) * Double(xa[c * r + k])
                                ref += t
                                mag += abs(t)
                            }
                        }
                        XCTAssertEqual(Double(scalar[c * out + o]), ref, accuracy: 1e-6 * mag + 1e-9)
                    }
                }
                for path in KernelPath.all where path != 0 {
                    XCTAssertEqual(run(Int32(path)), scalar, "\(KernelPath.name(path)) \(out)x\(r) n \(n)")
                }
                cases += 1
            }
        }
        XCTAssertEqual(cases, 28)
    }

    /// Quantizing leaves every row's levels on its uint8 grid, so the int16 kernels multiply the
    /// stored levels exactly: against W · X they differ only by the activations' 1/65024 rounding.
    func testQuantizedLevelsAreExactForTheIntegerKernels() throws {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 6)
        var cases = 0
        for (out, inF) in [(24, 192), (10, 100)] {
            let w = (0..<(out * inF)).map { _ in Float(rng.nextUnit() * 2 - 1) * 0.05 }
            for scope in CodebookScope.allCases {
                var options = QuantizerOptions()
                options.scope = scope
                let bits = (0..<out).map { [1, 2, 4][$0 % 3] as UInt8 }
                let p = try analyzeTensor(w, out: out, in: inF, options: options).pack(w, bits: bits)
                let (mins, steps, codes) = (p.levelMin, p.levelStep, p.levelCodes)
                for r in 0..<out {
                    let stored = p.levels[p.levelOffsets[r]..<(p.levelOffsets[r] + (1 << Int(bits[r])))]
                    for (k, level) in stored.enumerated() {
                        let integer = mins[r] + steps[r] * Float(codes[16 * r + k])
                        XCTAssertEqual(integer, level, accuracy: 2e-7 * max(1, abs(level)), "\(scope) row \(r)")
                    }
                }
                cases += checkIntegerPaths(
                    w: p.dequantized(), out: out, in: inF, columns: [1, 3], rng: &rng, "quantized \(scope)",
                    activations: .int16, levelError: { _, _ in 0 }
                ) { p.multiply($0, columns: $1, into: $2, path: $3, activations: .int16) }
            }
        }
        XCTAssertGreaterThan(cases, 4)
    }

    /// `lowra_packed_dequantize` (the panels prefill and training multiply) gives exactly the
    /// reference's values (`lowra_dequantize_row_ref`) on every path, for any row range.
    func testDequantizeKernelsEqualTheReference() throws {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 4)
        for (out, inF) in [(37, 64), (9, 100), (33, 7), (20, 576)] {
            for dq in [false, true] {
                let p = try randomPacked(
                    out: out, in: inF, widths: [1, 2, 4], scope: .channel, doubleQuant: dq, rng: &rng)
                let want = (0..<out).flatMap { p.dequantizeRowReference($0) }
                for path in KernelPath.all {
                    let lo = Int(rng.next() % UInt64(out))
                    let hi = lo + 1 + Int(rng.next() % UInt64(out - lo))
                    var got = [Float](repeating: .nan, count: (hi - lo) * inF)
                    got.withUnsafeMutableBufferPointer { p.dequantizePanel(lo..<hi, into: $0.baseAddress!, path: path) }
                    XCTAssertEqual(got, Array(want[(lo * inF)..<(hi * inF)]), "\(KernelPath.name(path)) \(out)x\(inF)")
                }
            }
        }
    }

    /// One query's attention over an f16 cache (`lowra_attention_decode_f16`, every path) equals
    /// `attentionForward` on the same keys and values in fp32; the f16 conversions round to
    /// nearest even on every path, as Swift's Float16 does.
    func testDecodeAttentionEqualsTheBatchAttention() {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 5)
        for (h, kv, d, tk) in [(9, 3, 64, 1), (9, 3, 64, 37), (4, 4, 8, 100), (6, 2, 12, 5)] {
            let q = (0..<(h * d)).map { _ in Float(rng.nextUnit() * 4 - 2) }
            let kf = (0..<(tk * kv * d)).map { _ in Float(rng.nextUnit() * 4 - 2) }
            let vf = (0..<(tk * kv * d)).map { _ in Float(rng.nextUnit() * 4 - 2) }
            let k16 = kf.map(halfFromFloat)
            let v16 = vf.map(halfFromFloat)
            var want = [Float](repeating: 0, count: h * d)
            var probs = [Float](repeating: 0, count: tk)
            attentionForward(
                &want, &probs, q, k16.map(floatFromHalf), v16.map(floatFromHalf), tokens: 1, past: tk - 1, heads: h,
                kvHeads: kv, headDim: d, probsPerHead: false)
            for path in KernelPath.all {
                var got = [Float](repeating: .nan, count: h * d)
                var scores = [Float](repeating: 0, count: h * tk)
                attentionDecode(
                    &got, q, k16, v16, keys: tk, heads: h, kvHeads: kv, headDim: d, scores: &scores, path: path)
                for i in got.indices {
                    XCTAssertEqual(got[i], want[i], accuracy: 1e-5 * max(1, abs(want[i])), "\(KernelPath.name(path))")
                }
                // Ties, subnormals, overflow to infinity, signed zero.
                let values = kf + [0, -0.0, 65504, 65520, 1e-8, 6.1e-5, -3.0e-7, .infinity, 2049, 2051]
                var halves = [UInt16](repeating: 0, count: values.count)
                halvesFromFloats(values, into: &halves, count: values.count, path: path)
                XCTAssertEqual(halves, values.map(halfFromFloat), KernelPath.name(path))
                var back = [Float](repeating: 0, count: values.count)
                floatsFromHalves(halves, into: &back, count: values.count, path: path)
                XCTAssertEqual(back, halves.map(floatFromHalf), KernelPath.name(path))
            }
        }
    }

    /// SwiGLU (`lowra_swiglu`) on every path against silu(g)·u in double precision, within 1e-6
    /// relative, over ordinary gates, large ones (exp's clamped range) and a length not a multiple
    /// of a register.
    func testSwiGLUEqualsTheExactActivation() {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 7)
        let n = 1003
        var gate = (0..<n).map { _ in Float(rng.nextUnit() * 24 - 12) }
        gate[0...9] = [0, -0.0, 1e-8, -1e-8, 87, -87, 100, -100, 30, -30]
        let up = (0..<n).map { _ in Float(rng.nextUnit() * 4 - 2) }
        for path in KernelPath.all {
            var out = [Float](repeating: .nan, count: n)
            swigluForward(&out, gate, up, count: n, path: path)
            for i in 0..<n {
                let g = Double(gate[i])
                let want = g / (1 + Foundation.exp(-g)) * Double(up[i])
                XCTAssertEqual(
                    Double(out[i]), want, accuracy: 1e-6 * abs(want) + 1e-30,
                    "\(KernelPath.name(path)) gate \(gate[i])")
            }
        }
    }

    /// SwiGLU's gradient (`lowra_swiglu_backward`) on every path against double precision: what it
    /// adds to dup and dgate within 4e-6 of the size of its factors (plus what they held), over gates
    /// of ±12, large ones and a length not a multiple of a register.
    func testSwiGLUGradientEqualsTheExactOne() {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 29)
        let n = 1003
        var gate = (0..<n).map { _ in Float(rng.nextUnit() * 24 - 12) }
        gate[0...7] = [0, -0.0, 1e-8, 87, -87, 100, -100, 30]
        let up = (0..<n).map { _ in Float(rng.nextUnit() * 4 - 2) }
        let dout = (0..<n).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let start = (0..<n).map { _ in Float(rng.nextUnit() * 2 - 1) }
        for path in KernelPath.all {
            var dgate = start, dup = start
            swigluBackward(&dgate, &dup, dout, gate, up, count: n, path: path)
            for i in 0..<n {
                let g = Double(gate[i]), sig = 1 / (1 + Foundation.exp(-g)), d = Double(dout[i])
                let wantUp = d * g * sig, wantGate = d * Double(up[i]) * sig * (1 + g * (1 - sig))
                // 1 + g (1 - σ) cancels near g = -1.28: the bound follows its factors' size.
                let size = abs(d * Double(up[i]) * sig) * (1 + abs(g * (1 - sig)))
                let name = "\(KernelPath.name(path)) gate \(gate[i])"
                XCTAssertEqual(
                    Double(dup[i]) - Double(start[i]), wantUp, accuracy: 4e-6 * (abs(wantUp) + abs(Double(start[i]))),
                    "dup \(name)")
                XCTAssertEqual(
                    Double(dgate[i]) - Double(start[i]), wantGate,
                    accuracy: 4e-6 * (size + abs(Double(start[i]))) + 1e-30, "dgate \(name)")
            }
        }
    }

    /// The exponentials of attention and cross-entropy (`lowra_softmax`, `lowra_sum_exp`,
    /// `lowra_exp_scaled`) on every path against double precision, within 2e-6 relative (and, for
    /// exp_scaled, whose argument x - shift is rounded to fp32, 2⁻²⁴ |x - shift| more, the size of the
    /// logits' own rounding): rows of lengths 1 to 1003 (tails past every register), logits over ±40.
    func testSoftmaxAndLogitExponentialsEqualTheExactOnes() {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 23)
        for n in [1, 3, 8, 9, 17, 256, 1003] {
            let x = (0..<n).map { _ in Float(rng.nextUnit() * 80 - 40) }
            let mx = x.max()!
            let sum = x.reduce(0.0) { $0 + Foundation.exp(Double($1 - mx)) }
            let lse = Double(mx) + Foundation.log(sum)
            for path in KernelPath.all {
                let name = "\(KernelPath.name(path)) n \(n)"
                var y = x
                lowra_softmax(Int32(path), &y, UInt64(n))
                for i in 0..<n {
                    let want = Foundation.exp(Double(x[i] - mx)) / sum
                    XCTAssertEqual(Double(y[i]), want, accuracy: 2e-6 * want + 1e-38, "softmax \(name) #\(i)")
                }
                XCTAssertEqual(lowra_sum_exp(Int32(path), x, UInt64(n), mx), sum, accuracy: 2e-6 * sum, name)
                var g = [Float](repeating: .nan, count: n)
                lowra_exp_scaled(Int32(path), x, UInt64(n), lse, 0.25, &g)
                for i in 0..<n {
                    let arg = Double(x[i]) - lse, want = Foundation.exp(arg) * 0.25
                    XCTAssertEqual(
                        Double(g[i]), want, accuracy: (2e-6 + abs(arg) * 0x1p-24) * want + 1e-38,
                        "exp_scaled \(name) #\(i)")
                }
            }
        }
    }

    /// `quantizeGGML` follows ggml's reference rules for Q8_0 and Q4_0 (checked code by code),
    /// and its blocks decode within half a step of the input (a step for Q4_0's clipped side).
    func testQuantizeGGMLFollowsTheReferenceRules() {
        var rng = SplitMix64(seed: UInt64(Date().timeIntervalSince1970) &+ 2)
        let n = 32 * 40
        var x = (0..<n).map { _ in Float(rng.nextUnit() * 2 - 1) * (rng.nextUnit() < 0.05 ? 10 : 1) }
        for j in 0..<32 { x[32 + j] = 0 }  // an all-zero block
        for type in [GGMLType.q8_0, .q4_0] {
            let bytes = type.blockLayout!.bytes
            var q = [UInt8](repeating: 0, count: n / 32 * bytes)
            var y = [Float](repeating: 0, count: n)
            q.withUnsafeMutableBytes { qb in
                x.withUnsafeBufferPointer { quantizeGGML(type, $0.baseAddress!, count: n, into: qb.baseAddress!) }
                y.withUnsafeMutableBufferPointer { dequantizeGGML(type, qb.baseAddress!, $0.baseAddress!, count: n) }
            }
            for b in 0..<(n / 32) {
                let block = Array(x[(32 * b)..<(32 * b + 32)])
                let big = block.max { abs($0) < abs($1) }!
                let d: Float = type == .q8_0 ? abs(big) / 127 : big / -8
                let id: Float = d != 0 ? 1 / d : 0
                XCTAssertEqual(
                    floatFromHalf(UInt16(q[b * bytes]) | UInt16(q[b * bytes + 1]) << 8), floatFromHalf(halfFromFloat(d))
                )
                for j in 0..<32 {
                    let code: Int
                    if type == .q8_0 {
                        code = Int(Int8(bitPattern: q[b * bytes + 2 + j]))
                        XCTAssertEqual(code, Int((block[j] * id).rounded()))
                    } else {
                        let byte = q[b * bytes + 2 + j % 16]
                        code = Int(j < 16 ? byte & 15 : byte >> 4)
                        XCTAssertEqual(code, min(15, Int(block[j] * id + 8.5)))
                    }
                    // Half a step; Q4_0 reaches only 7 steps on the side opposite its largest value.
                    let step = abs(d) * (type == .q8_0 ? 0.5 : 1)
                    XCTAssertLessThanOrEqual(abs(y[32 * b + j] - block[j]), step * 1.01 + abs(block[j]) * 2e-3)
                }
            }
        }
    }
}
