import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRAPipeline
@testable import LowRATensor

/// `QuantizationRecipe`: the defaults each method gets and the combinations it refuses, typed.
final class RecipeTests: XCTestCase {
    private func resolve(_ r: QuantizationRecipe) throws -> ResolvedRecipe {
        try r.resolved { "data/calibration.txt" }
    }

    func testDefaults() throws {
        let lowra = try resolve(QuantizationRecipe(method: .lowra, bits: 2))
        XCTAssertEqual(lowra.calibrationText, "data/calibration.txt")
        XCTAssertTrue(lowra.errorFeedback)
        XCTAssertEqual(lowra.sensitivity, .fisher)
        XCTAssertEqual(lowra.initialization, .cloq)
        XCTAssertEqual(lowra.precisions, [1, 2, 4])

        var paper = QuantizationRecipe(method: .lowra, bits: 2)
        paper.calibration = .dataFree
        let dataFree = try resolve(paper)
        XCTAssertNil(dataFree.calibrationText)
        XCTAssertEqual(dataFree.sensitivity, QuantizationRecipe.Sensitivity.none)
        XCTAssertEqual(dataFree.initialization, .loftq)
        XCTAssertNil(dataFree.precisions)

        var diag = QuantizationRecipe(method: .lowra, bits: 2)
        diag.calibrationMethod = .diag
        XCTAssertEqual(try resolve(diag).initialization, .loftq)
        XCTAssertEqual(try resolve(diag).sensitivity, QuantizationRecipe.Sensitivity.none)

        let qlora = try resolve(QuantizationRecipe(method: .qlora, bits: 3))
        XCTAssertNil(qlora.calibrationText)
        XCTAssertEqual(qlora.initialization, .zeros)
        XCTAssertEqual(try resolve(QuantizationRecipe(method: .loftq, bits: 3)).initialization, .loftq)

        XCTAssertEqual(QuantizationRecipe.defaultPrecisions(bits: 1.5), [1, 2, 4])
        XCTAssertEqual(QuantizationRecipe.defaultPrecisions(bits: 2), [2, 4])
        XCTAssertEqual(QuantizeRequest(method: .lowra, bits: 1.75).options.precisions, [1, 2, 4])
    }

    /// A preset fills in only what the recipe leaves open: how much of the calibration text each
    /// step reads, how many rows the error tables measure, the alternating steps, and (fast) whether
    /// the automatic text is read at all.
    func testPresetsFillOnlyWhatIsOpen() throws {
        let standard = try resolve(QuantizationRecipe(method: .lowra, bits: 2))
        XCTAssertEqual(standard.calibrationText, "data/calibration.txt")
        XCTAssertEqual(standard.calibrationTokens, 4096)
        XCTAssertEqual(standard.analysisTokens, 1024)
        XCTAssertEqual(standard.tableRows, 128)
        XCTAssertEqual(standard.loftqSteps, 3)
        // Error feedback in every CLoQ step below a billion quantized parameters, in the last above.
        let small = ModelConfig(
            vocabSize: 64, hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKVHeads: 3)
        let large = ModelConfig(
            vocabSize: 64, hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKVHeads: 32)
        XCTAssertNil(standard.feedbackSteps(config: small))
        XCTAssertEqual(standard.feedbackSteps(config: large), 1)
        XCTAssertEqual(try standard.request(config: large, adapter: (64, 64)).loftq?.feedbackSteps, 1)
        var every = QuantizationRecipe(method: .lowra, bits: 2)
        every.feedbackSteps = 5
        XCTAssertEqual(try resolve(every).feedbackSteps(config: large), 3)  // at most the steps
        var paper = QuantizationRecipe(method: .lowra, bits: 2)
        paper.calibration = .dataFree
        XCTAssertEqual(try resolve(paper).loftqSteps, 5)  // the paper's LoftQ, data-free

        var fast = QuantizationRecipe(method: .lowra, bits: 2)
        fast.preset = .fast
        let f = try resolve(fast)
        XCTAssertNil(f.calibrationText)
        XCTAssertEqual(f.initialization, .loftq)
        XCTAssertEqual(f.loftqSteps, 3)
        fast.calibration = .text("mine.txt")  // a named text is read even by the fast preset
        fast.loftqSteps = 3
        XCTAssertEqual(try resolve(fast).calibrationText, "mine.txt")
        XCTAssertEqual(try resolve(fast).loftqSteps, 3)

        var thorough = QuantizationRecipe(method: .lowra, bits: 2)
        thorough.preset = .thorough
        thorough.tableRows = 64
        let t = try resolve(thorough)
        XCTAssertEqual(t.calibrationTokens, 4096)
        XCTAssertNil(t.analysisTokens)
        XCTAssertEqual(t.tableRows, 64)
        XCTAssertEqual(t.loftqSteps, 5)
        XCTAssertNil(t.feedbackSteps(config: large))
        let config = ModelConfig(
            vocabSize: 64, hiddenSize: 16, intermediateSize: 32, numLayers: 1, numHeads: 2, numKVHeads: 2)
        let c = try t.calibration(config: config, tokens: Array(0..<4096), source: "x")
        XCTAssertEqual(c.analysisTokens, 4096)
        XCTAssertEqual(c.tableRows, 64)
        let s = try standard.calibration(config: config, tokens: Array(0..<4096), source: "x")
        XCTAssertEqual(s.analysisTokens, 1024)
        XCTAssertEqual(s.analysis.tokens.count, 1024)
    }

    func testRefusals() throws {
        func refuses(_ r: QuantizationRecipe, _ error: RecipeError, line: UInt = #line) {
            XCTAssertThrowsError(try resolve(r), line: line) { XCTAssertEqual($0 as? RecipeError, error, line: line) }
        }
        refuses(QuantizationRecipe(method: .qlora, bits: 1.5), .baselineBelowTwoBits(.qlora))
        refuses(QuantizationRecipe(method: .loftq, bits: 1.9), .baselineBelowTwoBits(.loftq))
        refuses(QuantizationRecipe(method: .lowra, bits: 0.5), .bitsOutOfRange(0.5))
        var r = QuantizationRecipe(method: .lowra, bits: 2)
        r.calibration = .dataFree
        r.initialization = .cloq
        refuses(r, .cloqNeedsErrorFeedback)
        r.initialization = nil
        r.sensitivity = .fisher
        refuses(r, .needsCalibration("--sensitivity fisher"))
        r.sensitivity = nil
        r.refitLevels = true
        refuses(r, .refitNeedsErrorFeedback)
        r = QuantizationRecipe(method: .qlora, bits: 2)
        r.lloydIterations = 2
        refuses(r, .codebookForBaseline)
        r = QuantizationRecipe(method: .lowra, bits: 2)
        r.precisions = [3]
        refuses(r, .precisions)
        r.precisions = nil
        r.feedbackSteps = 0
        refuses(r, .feedbackSteps)
        r.feedbackSteps = nil
        r.headBits = 6
        refuses(r, .headBits(6))
        // Reconstruction trains per-row codebooks (and the initial adapter) on the calibration text.
        r = QuantizationRecipe(method: .lowra, bits: 2)
        r.reconstruct = true
        XCTAssertEqual(try resolve(r).initialization, .cloq)
        r.calibration = .dataFree
        refuses(r, .reconstructNeedsCalibratedLowRA)
        r = QuantizationRecipe(method: .qlora, bits: 2)
        r.reconstruct = true
        refuses(r, .reconstructNeedsCalibratedLowRA)
        // A precision map lets a baseline below 2 bits; a missing default text is the caller's error.
        r = QuantizationRecipe(method: .qlora, bits: 1.5)
        r.precisionMap = "map.json"
        XCTAssertNoThrow(try resolve(r))
        XCTAssertThrowsError(
            try QuantizationRecipe(method: .lowra, bits: 2).resolved { throw LowRAError(.io, "no text") }
        ) { XCTAssertEqual(($0 as? LowRAError)?.message, "no text") }
        XCTAssertTrue("\(RecipeError.baselineBelowTwoBits(.qlora))".contains("2 bits or more"))
    }
}
