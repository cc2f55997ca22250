import Foundation
import XCTest

@testable import LowRAReport

final class ExperimentTests: XCTestCase {
    private func cells() -> [ExperimentCell] {
        var none = ExperimentCell(method: "none", bits: nil, status: .ok)
        none.before = EvalNumbers(perplexity: 30, accuracy: 0.4, tokens: 100)
        none.after = EvalNumbers(perplexity: 20, accuracy: 0.45, tokens: 100)
        none.lossCurve = [[1, 3.5], [2, 3.2], [3, 3.0]]
        var lowra = ExperimentCell(method: "lowra", bits: 2, status: .ok)
        lowra.before = EvalNumbers(perplexity: 9000, accuracy: 0.1, tokens: 100)
        lowra.after = EvalNumbers(perplexity: 60, accuracy: 0.3, tokens: 100)
        lowra.codeBitsPerParam = 2
        lowra.storedBitsPerParam = 2.33
        lowra.lossCurve = [[1, 9], [2, 6], [3, 4.5]]
        lowra.seconds = ["quantize": 60, "finetune": 900]
        var lowra15 = lowra
        lowra15.bits = 1.5
        lowra15.status = .didNotConverge
        lowra15.note = "validation loss rose"
        var unsupported = ExperimentCell(method: "qlora", bits: 1.5, status: .unsupported)
        unsupported.note = "no budget below 2"
        return [none, lowra, lowra15, unsupported]
    }

    private let spec = ExperimentSpec(
        model: "m.gguf", train: "t", valid: "v", test: "x", methods: ["none", "qlora", "lowra"], bits: [2, 1.5],
        steps: 3, rank: 4,
        seq: 32, batch: 1, lr: 1e-3, seed: 0, evalTokens: 100)

    func testMarkdownTableKeepsEveryCell() {
        let md = ExperimentReport.markdown(spec: spec, cells: cells())
        // The main table: from its header to the first line that is not a row.
        let lines = md.split(separator: "\n", omittingEmptySubsequences: false)
        let head = lines.firstIndex { $0.hasPrefix("| method | bits | code") }!
        let rows = lines[(head + 2)...].prefix { $0.hasPrefix("| ") }.map { $0 }
        XCTAssertEqual(rows.count, 4, md)
        XCTAssertTrue(
            rows[1].contains("| 60.00 |") && rows[1].contains("3.00×") && rows[1].contains("9000.00"), String(rows[1]))
        XCTAssertTrue(rows[2].contains("did not converge"), String(rows[2]))
        XCTAssertTrue(rows[3].contains("unsupported"), String(rows[3]))
        XCTAssertTrue(rows[1].contains("960 s"))
    }

    /// The ship table names, for each accepted gap, the lowest budget that meets it; the drift
    /// table lists every cell that ran; more bits never get more drift tokens.
    func testShipAndDriftTables() throws {
        var cs = cells()
        var lowra3 = cs[1]
        lowra3.bits = 3
        lowra3.after = EvalNumbers(perplexity: 22, accuracy: 0.44, tokens: 100)
        lowra3.driftAfter = DriftNumbers(kl: 0.05, top1: 0.9, perplexity: 40, tokens: 1024)
        cs[1].driftAfter = DriftNumbers(kl: 0.4, top1: 0.6, perplexity: 90, tokens: 2048)
        cs.insert(lowra3, at: 1)
        var s = spec
        s.drift = "fortunes.txt"
        s.driftTokens = 1000
        let md = ExperimentReport.markdown(spec: s, cells: cs)
        func row(_ gap: String) -> String {
            String(md.split(separator: "\n").first { $0.hasPrefix("| \(gap) |") } ?? "")
        }
        XCTAssertTrue(row("1.05×").contains("none in this sweep"), md)
        XCTAssertTrue(row("1.1×").contains("| 3 | lowra | 22.00 |") && row("1.1×").contains("0.0500"), row("1.1×"))
        XCTAssertTrue(row("4×").contains("| 2 | lowra | 60.00 |"), row("4×"))  // 1.5 bits did not converge: not offered
        XCTAssertTrue(md.contains("## Drift from the base") && md.contains("| lowra | 2 | 2048 |"), md)
        XCTAssertEqual(s.driftTokens(bits: nil), 1024)  // whole windows of seq 32
        XCTAssertEqual(s.driftTokens(bits: 4), 1024)
        XCTAssertEqual(s.driftTokens(bits: 2), 2016)
        XCTAssertEqual(s.driftTokens(bits: 1.5), 2688)
        XCTAssertNil(spec.driftTokens(bits: 2))
        XCTAssertTrue(ExperimentReport.driftPlot(spec: s, cells: cs).contains("<polyline"))
    }

    /// The plots are well-formed SVG that a real renderer draws (rsvg-convert, installed by
    /// setup), and hold one polyline per series.
    func testPlotsRender() throws {
        let dir = try temporaryDirectory(self)
        let plots = [
            "ppl": ExperimentReport.perplexityPlot(spec: spec, cells: cells()),
            "loss": ExperimentReport.lossPlot(cells: cells()),
        ]
        // lowra before and after (qlora has no points; fp32 before/after are reference lines)
        XCTAssertEqual(plots["ppl"]!.components(separatedBy: "<polyline").count - 1, 2)
        XCTAssertTrue(plots["ppl"]!.contains("fp32 + LoRA"))
        XCTAssertEqual(plots["loss"]!.components(separatedBy: "<polyline").count - 1, 3)
        for (name, svg) in plots {
            let path = "\(dir)/\(name).svg"
            try svg.write(toFile: path, atomically: true, encoding: .utf8)
            let r = try runProcess("/usr/bin/rsvg-convert", [path, "-o", "\(dir)/\(name).png"])
            XCTAssertEqual(r.status, 0, r.err)
            let png = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name).png"))
            XCTAssertEqual(Array(png.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        }
    }

    func testNiceTicks() {
        XCTAssertEqual(SVGChart.niceTicks(0, 10, count: 5), [0, 2, 4, 6, 8, 10])
        XCTAssertEqual(SVGChart.niceTicks(1.3, 4.2, count: 3), [2, 3, 4])
    }
}
