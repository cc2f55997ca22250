import Foundation
import XCTest

import CLowRAPacked
@testable import LowRAModel
@testable import LowRAQuant
@testable import LowRATensor
@testable import LowRAPipeline

final class QuantizerTests: XCTestCase {
    /// Heavy-tailed random weights (out, in), like trained linear layers.
    private func randomWeights(out: Int, in inF: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<(out * inF)).map { _ in
            let u1 = max(1e-12, rng.nextUnit())
            let u2 = rng.nextUnit()
            let g = (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
            return Float(g * (rng.nextUnit() < 0.02 ? 6 : 1) * 0.05)
        }
    }

    func testGeneratedNormalFloatEqualsPinnedLiterals() {
        for (got, want) in zip(NormalFloat.generate(bits: 4), NormalFloat.nf4) {
            XCTAssertEqual(got, want, accuracy: 1e-6)
        }
        for (got, want) in zip(NormalFloat.generate(bits: 2), NormalFloat.nf2) {
            XCTAssertEqual(got, want, accuracy: 1e-4)
        }
        for (got, want) in zip(midpointThresholds(NormalFloat.generate(bits: 2)), NormalFloat.nf2Thresholds) {
            XCTAssertEqual(got, want, accuracy: 1e-6)
        }
    }

    /// The weighted MSE never rises across iterations and ends below the NormalFloat codebook's,
    /// at every precision.
    /// The branch-free bin search equals counting the thresholds below x, for every threshold
    /// count a precision has (1, 3, 15), with ties and points exactly on a threshold.
    func testBinIndexEqualsCountOfThresholdsBelow() {
        var rng = SplitMix64(seed: 11)
        for count in [1, 3, 15, 5] {
            for _ in 0..<200 {
                var t = (0..<count).map { _ in Float((rng.nextUnit() * 8).rounded() / 4 - 1) }
                t.sort()
                for _ in 0..<20 {
                    let x =
                        rng.nextUnit() < 0.3 ? t[Int(rng.next() % UInt64(count))] : Float(rng.nextUnit() * 2.4 - 1.2)
                    let expected = t.filter { x > $0 }.count
                    XCTAssertEqual(t.withUnsafeBufferPointer { binIndex(x, $0.baseAddress!, count) }, expected)
                }
            }
        }
    }

    func testLloydMaxNeverRisesAndBeatsNormalFloat() {
        let w = randomWeights(out: 16, in: 256, seed: 3)
        for weighting in LloydWeighting.allCases {
            var opts = QuantizerOptions()
            opts.lloydIterations = 6
            opts.scope = .channel
            opts.weighting = weighting
            let a = analyzeTensor(w, out: 16, in: 256, options: opts)
            var nf = opts
            nf.lloydIterations = 0
            let base = analyzeTensor(w, out: 16, in: 256, options: nf)
            for p in [1, 2, 4] {
                for r in 0..<16 {
                    XCTAssertLessThan(a.learnerMSE[p]![r].after, a.learnerMSE[p]![r].before, "p=\(p) row \(r)")
                    XCTAssertLessThan(a.errors[p]![r], base.errors[p]![r] * 1.0001, "p=\(p) row \(r)")
                }
            }
        }
        // History is monotone.
        let x: [Float] = (0..<500).map { _ in Float.random(in: -1...1) * Float.random(in: 0...1) }
        let wt: [Float] = (0..<500).map { _ in Float.random(in: 0.1...1) }
        let res = weightedLloydMax(points: x, weights: wt, count: 500, initialLevels: NormalFloat.nf4, iterations: 20)
        for (a, b) in zip(res.history, res.history.dropFirst()) { XCTAssertLessThan(b, a) }
    }

    /// The fast dequantizer equals the plain C reference, for every width, scope, scale storage
    /// and a partial last block; the stored size equals the header's formula.
    func testPackedDequantizeMatchesReferenceAndSizeFormula() throws {
        var cases: [(Int, CodebookScope, Bool)] = [(200, .channel, true), (128, .tensor, false), (70, .tensor, true)]
        for _ in 0..<8 {  // random shapes, partial blocks and partial bytes included
            cases.append((Int.random(in: 1...300), Bool.random() ? .channel : .tensor, Bool.random()))
        }
        for (inF, scope, dq) in cases {
            let out = Int.random(in: 3...24)
            let w = randomWeights(out: out, in: inF, seed: UInt64(inF))
            var opts = QuantizerOptions()
            opts.scope = scope
            opts.doubleQuant = dq
            let a = analyzeTensor(w, out: out, in: inF, options: opts)
            let bits: [UInt8] = (0..<out).map { [1, 2, 4][($0 + inF) % 3] }
            let pk = try a.pack(w, bits: bits)
            let fast = pk.dequantized()
            // Unpacking gives back exactly the codes the reference quantizer (the thresholds) chose.
            let nbk = (inF + 63) / 64
            for r in 0..<out {
                let b = Int(bits[r])
                let k = 1 << b
                let th = Array(a.thresholds[b]![(r * (k - 1))..<((r + 1) * (k - 1))])
                for j in 0..<inF {
                    let s = a.absmax.value(r * nbk + j / 64)
                    let x = s > 0 ? min(1, max(-1, w[r * inF + j] / s)) : 0
                    let bit = j * b
                    let code = Int((pk.codes[pk.rowOffsets[r] + bit / 8] >> UInt8(bit % 8)) & UInt8(k - 1))
                    XCTAssertEqual(code, th.withUnsafeBufferPointer { binIndex(x, $0.baseAddress!, k - 1) })
                }
            }
            for r in 0..<out { XCTAssertEqual(Array(fast[(r * inF)..<((r + 1) * inF)]), pk.dequantizeRowReference(r)) }
            // The kernel's product (one column) equals the product with the dequantized weight.
            let x: [Float] = (0..<inF).map { _ in Float.random(in: -1...1) }
            var y = [Float](repeating: 0, count: out)
            pk.multiply(x, columns: 1, into: &y, activations: .float)
            for r in 0..<out {
                var want: Float = 0
                for j in 0..<inF { want += fast[r * inF + j] * x[j] }
                XCTAssertEqual(y[r], want, accuracy: 1e-4 * max(1, abs(want)))
            }
            let nb = (inF + 63) / 64
            let absBytes = dq ? out * nb + 4 * ((out * nb + 255) / 256) : 4 * out * nb
            let codeBytes = bits.reduce(0) { $0 + (inF * Int($1) + 7) / 8 }
            let levels = scope == .channel ? bits.reduce(0) { $0 + (1 << Int($1)) } : 22
            XCTAssertEqual(pk.storedBytes, codeBytes + out + absBytes + 4 * levels)
            // Reconstruction error of the packed weight equals the analysis' error table.
            var err = 0.0
            for i in 0..<w.count { err += Double(w[i] - fast[i]) * Double(w[i] - fast[i]) }
            let table = (0..<out).reduce(0.0) { $0 + a.errors[Int(bits[$1])]![$1] }
            XCTAssertEqual(err, table, accuracy: 1e-6 * max(1, table))
        }
    }

    /// With column weights c, the error table is Σ_j c_j (w − q)² of the packed weight.
    func testColumnWeightedErrorMatchesPackedWeight() throws {
        let (out, inF) = (12, 96)
        let w = randomWeights(out: out, in: inF, seed: 5)
        let cols: [Float] = (0..<inF).map { _ in Float.random(in: 0.01...4) }
        let a = analyzeTensor(w, out: out, in: inF, options: QuantizerOptions(), columnWeights: cols)
        let bits: [UInt8] = (0..<out).map { [1, 2, 4][$0 % 3] }
        let q = try a.pack(w, bits: bits).dequantized()
        for r in 0..<out {
            var e = 0.0
            for j in 0..<inF {
                e += Double(cols[j]) * Double(w[r * inF + j] - q[r * inF + j]) * Double(w[r * inF + j] - q[r * inF + j])
            }
            XCTAssertEqual(a.errors[Int(bits[r])]![r], e, accuracy: 1e-9 * max(1, e))
        }
    }

    /// The block-by-block calibration stream sees what the whole model's forward sees: H of block
    /// 1's inputs equals the one gathered from `hidden`'s observer, window by window.
    func testCalibrationCollectsEveryLinearInput() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        let c = m.config
        let tokens = Array(0..<40).map { ($0 * 7) % c.vocabSize }
        let request = try CalibrationRequest(config: c, tokens: tokens, window: 16, source: "test")
        XCTAssertEqual(request.usedTokens, 32)
        let stream = BlockCalibrator(request, weights: m.weights)
        _ = try stream.run(m.weights.blocks[0], statistics: true, advance: true)
        let stats = try stream.run(m.weights.blocks[1], statistics: true, advance: false)
        XCTAssertEqual(stats[.down]?.n, c.intermediateSize)
        XCTAssertEqual(stats[.output]?.n, c.qDim)
        var expected = [LinearInput: [Double]]()
        for w in 0..<2 {
            _ = try m.hidden(Array(tokens[(w * 16)..<(w * 16 + 16)]), cache: nil) { l, site, x, rows, n in
                guard l == 1 else { return }
                var acc = expected[site] ?? [Double](repeating: 0, count: n * n)
                for r in 0..<rows {
                    for i in 0..<n { for j in 0..<n { acc[i * n + j] += Double(x[r * n + i]) * Double(x[r * n + j]) } }
                }
                expected[site] = acc
            }
        }
        XCTAssertEqual(Set(stats.keys), Set(LinearInput.allCases))
        for (site, h) in stats {
            let e = expected[site]!.map { Float($0 / 32) }
            let scale = e.map(abs).max()!
            XCTAssertTrue(zip(h.values, e).allSatisfy { abs($0 - $1) <= 1e-4 * scale }, "\(site)")
        }
        for method in ["diag", "gptq"] {
            var req = QuantizeRequest(method: .lowra, bits: 1.75)
            req.calibration = request
            req.calibration!.errorFeedback = method == "gptq"
            let r = try m.weights.quantized(req).report
            XCTAssertLessThanOrEqual(r.codeBitsPerParam, 1.75)
            XCTAssertEqual(r.calibration?.hasPrefix("test (32 tokens; "), true)
            XCTAssertTrue(r.totalSquaredError.isFinite && r.totalSquaredError > 0)
        }
    }

    /// Pass 2's stream gathers each site's H with the layers before it already quantized (GPTQ's
    /// true-sequential order): checked against the whole model's forward with those layers swapped
    /// in, site by site, and into the next block; sites asked out of order are refused.
    func testSequentialStatisticsSeeTheQuantizedLayersBeforeThem() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        let c = m.config
        let tokens = Array(0..<48).map { ($0 * 5 + 1) % c.vocabSize }
        let request = try CalibrationRequest(config: c, tokens: tokens, window: 16, source: "test")
        var quantized = m.weights
        for kind in LinearKind.allCases {
            let lin = m.weights.blocks[0][kind]
            let (out, inF) = (lin.outFeatures, lin.inFeatures)
            let a = analyzeTensor(lin.weight, out: out, in: inF, options: QuantizerOptions())
            let packed = try a.pack(lin.weight, bits: [UInt8](repeating: 2, count: out))
            quantized.blocks[0][kind] = Linear(packed: packed, bias: lin.bias)
        }
        // The reference: every window through the model whose block 0 is the quantized one.
        let reference = try LanguageModel(config: c, weights: quantized)
        var expected = [String: [Double]]()
        for w in 0..<3 {
            _ = try reference.hidden(Array(tokens[(w * 16)..<(w * 16 + 16)]), cache: nil) { l, site, x, rows, n in
                let key = "\(l) \(site)"
                var acc = expected[key] ?? [Double](repeating: 0, count: n * n)
                for r in 0..<rows {
                    for i in 0..<n { for j in 0..<n { acc[i * n + j] += Double(x[r * n + i]) * Double(x[r * n + j]) } }
                }
                expected[key] = acc
            }
        }
        func check(_ h: InputCovariance, _ key: String) {
            let e = expected[key]!.map { Float($0 / 48) }
            let scale = e.map(abs).max()!
            XCTAssertTrue(zip(h.values, e).allSatisfy { abs($0 - $1) <= 1e-4 * scale }, key)
        }
        let stream = BlockCalibrator(request, weights: m.weights)
        // Each site sees block 0 with only the layers before it quantized (the rest original).
        var blk = m.weights.blocks[0]
        for site in LinearInput.allCases {
            check(try stream.statistics(at: site, of: blk), "0 \(site)")
            for kind in LinearKind.allCases where kind.input == site { blk[kind] = quantized.blocks[0][kind] }
        }
        XCTAssertThrowsError(try stream.statistics(at: .mlp, of: blk))
        try stream.finishBlock(blk)
        XCTAssertEqual(stream.block, 1)
        check(try stream.statistics(at: .attention, of: m.weights.blocks[1]), "1 attention")
        check(try stream.statistics(at: .down, of: m.weights.blocks[1]), "1 down")
    }

    /// CLoQ end to end on a tiny model: sequential error feedback, then the calibrated low-rank
    /// fit, which leaves a smaller output error than the zero-initialized adapter in every layer.
    func testCLoQInitializationLowersEveryLayersError() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        let tokens = Array(0..<64).map { ($0 * 11 + 3) % m.config.vocabSize }
        var req = QuantizeRequest(method: .lowra, bits: 2)
        req.calibration = try CalibrationRequest(config: m.config, tokens: tokens, window: 32, source: "test")
        XCTAssertThrowsError(
            try m.weights.quantized(
                {
                    var r = req; r.calibration!.errorFeedback = false
                    r.loftq = LoftQRequest(rank: 4, alpha: 4, calibrated: true); return r
                }()))
        req.loftq = LoftQRequest(rank: 4, alpha: 4, steps: 1, calibrated: true)
        let q = try m.weights.quantized(req)
        XCTAssertEqual(q.loftq.count, m.weights.quantizableLinears.count)
        for l in q.report.layers { XCTAssertLessThan(l.loftqError!, l.zeroInitError!, l.name) }
        // Error feedback in as many steps as there are is the default; in the last of two steps
        // only (the first rounds to the codebooks), another adapter and base.
        req.loftq = LoftQRequest(rank: 4, alpha: 4, steps: 2, calibrated: true)
        let full = try m.weights.quantized(req)
        req.loftq!.feedbackSteps = 2
        let same = try m.weights.quantized(req)
        req.loftq!.feedbackSteps = 1
        let cheap = try m.weights.quantized(req)
        for k in full.loftq.indices {
            XCTAssertEqual(same.loftq[k].a, full.loftq[k].a)
            XCTAssertEqual(same.loftq[k].b, full.loftq[k].b)
        }
        XCTAssertNotEqual(cheap.loftq[0].b, full.loftq[0].b)
        let firstQ = { (m: ModelWeights) in m.blocks[0][.q].packed!.dequantized() }
        XCTAssertNotEqual(firstQ(cheap.weights), firstQ(full.weights))
    }

    /// `--refit-levels` end to end on a tiny model: the first block's layers (same H with or
    /// without it) leave an output error no larger than error feedback alone, the model loads and
    /// its levels lie on the kernels' grid.
    func testRefitLevelsLowerTheFirstBlocksOutputError() throws {
        let m = try LoadedModel.load(Paths.fixture("tiny_hf")).model
        let tokens = Array(0..<64).map { ($0 * 7 + 5) % m.config.vocabSize }
        var req = QuantizeRequest(method: .lowra, bits: 2)
        req.calibration = try CalibrationRequest(config: m.config, tokens: tokens, window: 32, source: "test")
        let plain = try m.weights.quantized(req)
        req.calibration!.refitLevels = true
        let refit = try m.weights.quantized(req)
        let first = LinearKind.allCases.count
        for (a, b) in zip(refit.report.layers.prefix(first), plain.report.layers.prefix(first)) {
            XCTAssertLessThanOrEqual(a.relativeError, b.relativeError * (1 + 1e-4), a.name)
        }
        XCTAssertLessThan(
            refit.report.layers.prefix(first).map(\.relativeError).reduce(0, +),
            plain.report.layers.prefix(first).map(\.relativeError).reduce(0, +))
        for block in refit.weights.blocks {
            for kind in LinearKind.allCases {
                let p = try XCTUnwrap(block[kind].packed)
                var levels = p.levels
                snapToIntegerLevels(&levels, rowOffsets: p.levelOffsets + [p.levels.count])
                XCTAssertEqual(levels, p.levels)
            }
        }
    }

    /// Snapping is idempotent bit for bit: fresh random rows of 2, 4 and 16 levels at scales from
    /// 2^-20 to 2^20, a quarter with a maximum just off the grid (1.0000005 · scale, as a learned row
    /// can end), are put on their grids and snapped again; nothing may move, and the grid's codes and
    /// (min, step) must be the ones the kernels re-derive from the stored levels.
    func testSnappingIsIdempotentOnRowsOffAnyGrid() {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        var moved = 0
        for t in 0..<60_000 {
            let n = [2, 4, 16][t % 3]
            let scale = Float(0.5 + rng.nextUnit()) * Float(pow(2.0, Double(Int(rng.nextUnit() * 41) - 20)))
            var row = (0..<n).map { _ in Float(2 * rng.nextUnit() - 1) * scale + (t % 7 == 0 ? scale : 0) }
            if t % 4 == 0 { row[Int(rng.nextUnit() * Double(n))] = 1.000_000_5 * scale }
            snapToIntegerLevels(&row, rowOffsets: [0, n])
            var again = row
            snapToIntegerLevels(&again, rowOffsets: [0, n])
            var u = [UInt8](repeating: 0, count: 16)
            var lo: Float = 0
            var step: Float = 0
            lowra_integer_levels_row(row, UInt32(n), &u, &lo, &step)
            let rebuilt = (0..<n).map { lo + step * Float(u[$0]) }
            if again != row || rebuilt != row { moved += 1 }
            if moved == 1 && (again != row || rebuilt != row) {
                XCTFail("seed \(seed), row \(t): \(row) → \(again), grid \(rebuilt)")
            }
        }
        XCTAssertEqual(moved, 0, "seed \(seed)")
    }

    func testDoubleQuantizedScalesNeverUnderestimate() {
        let raw: [Float] = (0..<1000).map { _ in Float.random(in: 0...3) }
        let s = AbsmaxStorage(raw: raw, doubleQuant: true)
        for i in raw.indices {
            XCTAssertGreaterThanOrEqual(s.value(i), raw[i])
            XCTAssertLessThanOrEqual(s.value(i) - raw[i], 3.0 / 255 + 1e-6)
        }
    }

    /// On instances small enough to enumerate, the exact assigner's error is within its certified
    /// gap of the true optimum, never above the best layer-wise allocation, and within budget.
    func testExactAssignerAgainstBruteForce() throws {
        var rng = SplitMix64(seed: 11)
        for trial in 0..<30 {
            let n = 8
            let ps = trial % 2 == 0 ? [1, 2, 4] : [2, 4]
            let channels: [ChannelErrors] = (0..<n).map { _ in
                let size = [64, 96][Int(rng.next() % 2)]
                let e1 = rng.nextUnit() * 10 + 1
                let e = [e1, e1 * (0.1 + 0.5 * rng.nextUnit()), e1 * 0.01 * rng.nextUnit()]
                return ChannelErrors(parameters: size, errors: ps == [1, 2, 4] ? e : [e[1], e[2]])
            }
            let params = channels.reduce(0) { $0 + $1.parameters }
            let budget = Int(Double(params) * (Double(ps[0]) + rng.nextUnit() * Double(ps.last! - ps[0])))
            let a = try PrecisionAssigner.exact(channels, precisions: ps, budgetBits: budget)
            XCTAssertLessThanOrEqual(a.usedBits, budget)
            var best = Double.infinity
            var choice = [Int](repeating: 0, count: n)
            func enumerate(_ i: Int, _ bits: Int, _ err: Double) {
                if bits > budget { return }
                if i == n {
                    best = min(best, err)
                    return
                }
                for k in ps.indices {
                    choice[i] = k
                    enumerate(i + 1, bits + ps[k] * channels[i].parameters, err + channels[i].errors[k])
                }
            }
            enumerate(0, 0, 0)
            XCTAssertGreaterThanOrEqual(a.totalError, best - 1e-9)
            XCTAssertLessThanOrEqual(a.lowerBound!, best + 1e-9)
            XCTAssertLessThanOrEqual(a.totalError, best * 1.25 + 1e-9, "trial \(trial)")
            // Never worse than giving every channel the same precision within budget.
            for k in ps.indices where ps[k] * params <= budget {
                XCTAssertLessThanOrEqual(a.totalError, channels.reduce(0) { $0 + $1.errors[k] } + 1e-9)
            }
        }
        XCTAssertThrowsError(
            try PrecisionAssigner.exact(
                [ChannelErrors(parameters: 64, errors: [1, 0.5])], precisions: [2, 4], budgetBits: 100))
    }

    func testLayerwiseGivesEarlyLayersMoreBits() throws {
        let bits = try PrecisionAssigner.layerwise(
            tensorParameters: [100, 100, 100, 100], precisions: [2, 4], budgetBits: 1200)
        XCTAssertEqual(bits, [4, 4, 2, 2])
        XCTAssertThrowsError(
            try PrecisionAssigner.layerwise(tensorParameters: [100], precisions: [2, 4], budgetBits: 150))
    }

    func testSHA256KnownVectors() {
        XCTAssertEqual(SHA256.hex(Array("".utf8)), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(
            SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = [UInt8](repeating: 0x61, count: 1000)
        let want = SHA256.hex(long)
        long.withUnsafeBytes { XCTAssertEqual(SHA256.hex(data: $0), want) }
        XCTAssertEqual(
            SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        [UInt8](repeating: 0x61, count: 1_000_000).withUnsafeBytes {
            XCTAssertEqual(SHA256.hex(data: $0), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        }
    }
}

final class TwoLevelILPTests: XCTestCase {
    /// Channels with realistic error curves: two row sizes, errors falling ~4x per added bit.
    private func instance(_ n: Int, seed: UInt64) -> [ChannelErrors] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { i in
            let size = i % 3 == 0 ? 96 : 64
            let e1 = Double(size) * (0.5 + 2 * rng.nextUnit()) * (rng.nextUnit() < 0.05 ? 8 : 1)
            let e2 = e1 * (0.2 + 0.2 * rng.nextUnit())
            let e4 = e2 * (0.05 + 0.1 * rng.nextUnit())
            return ChannelErrors(parameters: size, errors: [e1, e2, e4])
        }
    }

    /// The one-shot ILP over every channel, solved by CBC: the true optimum of a small instance.
    private func optimum(_ ch: [ChannelErrors], _ ps: [Int], _ budget: Int) throws -> Double {
        var ilp = IntegerProgram()
        let x = ch.map { c in ps.indices.map { ilp.addVariable(upper: 1, cost: c.errors[$0]) } }
        for xi in x { ilp.addConstraint(xi.map { ($0, 1) }, .equal, 1) }
        ilp.addConstraint(
            zip(x, ch).flatMap { xi, c in ps.indices.map { (xi[$0], Double(ps[$0] * c.parameters)) } }, .lessEqual,
            Double(budget))
        let s = try ilp.solve(seconds: 60)
        XCTAssertTrue(s.optimal)
        return s.objective
    }

    func testTwoLevelWithinOnePercentOfOptimumAndExactBeatsIt() throws {
        try XCTSkipUnless(IntegerProgram.available, "built without COIN-OR CBC (LOWRA_CBC=0 or no cbc.pc)")
        for (seed, bpp) in [(UInt64(1), 1.75), (2, 2.5), (3, 1.5)] {
            let ps = bpp < 2 ? [1, 2, 4] : [2, 4]  // the paper's sets (footnote 4)
            let ch = instance(2000, seed: seed).map {
                ps.count == 3 ? $0 : ChannelErrors(parameters: $0.parameters, errors: Array($0.errors.dropFirst()))
            }
            let params = ch.reduce(0) { $0 + $1.parameters }
            let budget = Int(Double(params) * bpp)
            let best = try optimum(ch, ps, budget)
            let two = try PrecisionAssigner.twoLevelILP(ch, precisions: ps, budgetBits: budget, seed: seed)
            let exact = try PrecisionAssigner.exact(ch, precisions: ps, budgetBits: budget)
            XCTAssertLessThanOrEqual(two.usedBits, budget)
            XCTAssertLessThanOrEqual(exact.usedBits, budget)
            XCTAssertGreaterThanOrEqual(Double(two.usedBits), Double(budget) - 0.01 * Double(params))
            XCTAssertLessThanOrEqual(
                two.totalError, best * 1.01, "seed \(seed): two-level \(two.totalError) vs optimum \(best)")
            XCTAssertLessThanOrEqual(exact.totalError, two.totalError * (1 + 1e-9), "seed \(seed)")
            XCTAssertLessThanOrEqual(
                exact.totalError, best * 1.001, "seed \(seed): exact \(exact.totalError) vs optimum \(best)")
            XCTAssertLessThanOrEqual(exact.lowerBound!, best + 1e-6)
            // Never above the best layer-wise allocation (tensors of 100 channels, one precision each).
            let tensors = stride(from: 0, to: ch.count, by: 100).map { Array(ch[$0..<min(ch.count, $0 + 100)]) }
            let perTensor = try PrecisionAssigner.layerwise(
                tensorParameters: tensors.map { $0.reduce(0) { $0 + $1.parameters } }, precisions: ps,
                budgetBits: budget)
            let layerwiseError = zip(tensors, perTensor).reduce(0.0) { acc, tp in
                acc + tp.0.reduce(0.0) { $0 + $1.errors[ps.firstIndex(of: tp.1)!] }
            }
            XCTAssertLessThanOrEqual(two.totalError, layerwiseError)
            XCTAssertLessThanOrEqual(exact.totalError, layerwiseError)
        }
    }
}
