import XCTest

@testable import LowRAModel
@testable import LowRATensor
@testable import LowRAPipeline

final class ModelTransformTests: XCTestCase {
    func testRandomOrthogonalIsOrthogonal() throws {
        let n = 24
        let q = try randomOrthogonal(n, seed: 3)
        for i in 0..<n {
            for j in 0..<n {
                var s: Float = 0
                for k in 0..<n { s += q[i * n + k] * q[j * n + k] }
                XCTAssertEqual(s, i == j ? 1 : 0, accuracy: 1e-5)
            }
        }
        XCTAssertNotEqual(q, try randomOrthogonal(n, seed: 4))
    }

    /// The rotated model is the same function: every logit of tiny Llama, GQA and Qwen2 (q/k/v
    /// bias) models, tied and untied heads, equals the source's.
    func testRotatedModelHasTheSameLogits() throws {
        for name in ["tiny.gguf", "tiny_hf", "tiny_qwen2.gguf", "tiny_llama3.gguf"] {
            let loaded = try LoadedModel.load(Paths.fixture(name))
            let c = loaded.config
            let (w, rc) = try ResidualRotation(seed: 7).apply(to: loaded.model.weights, config: c)
            XCTAssertFalse(rc.tieWordEmbeddings)
            XCTAssertTrue(w.blocks.allSatisfy { $0.attnNorm.allSatisfy { $0 == 1 } })
            let rotated = try LanguageModel(config: rc, weights: w)
            let tokens = (0..<12).map { ($0 * 7 + 3) % c.vocabSize }
            let a = try loaded.model.forward(tokens, cache: KVCache(config: c, capacity: 16))
            let b = try rotated.forward(tokens, cache: KVCache(config: rc, capacity: 16))
            XCTAssertLessThan(relativeL2(a, b), 1e-5, name)
            // Not the identity: the weights moved.
            XCTAssertGreaterThan(relativeL2(loaded.model.weights.blocks[0][.q].weight, w.blocks[0][.q].weight), 0.1)
        }
    }

    /// Channel scaling folded into norms, v and up is the same function (GQA, biases included).
    func testChannelScalingHasTheSameLogits() throws {
        for name in ["tiny.gguf", "tiny_qwen2.gguf", "tiny_llama3.gguf"] {
            let loaded = try LoadedModel.load(Paths.fixture(name))
            let c = loaded.config
            var rng = SplitMix64(seed: 5)
            let moments = (0..<c.numLayers).map { _ in
                Dictionary(
                    uniqueKeysWithValues: LinearInput.allCases.map { site in
                        let n = LinearKind.allCases.first { $0.input == site }!.shape(c).in
                        return (site, (0..<n).map { _ in Float(0.01 + 10 * rng.nextUnit()) })
                    })
            }
            let alpha = Dictionary(uniqueKeysWithValues: LinearInput.allCases.map { ($0, Float(0.5)) })
            let w = ChannelScaling(alpha: alpha).apply(to: loaded.model.weights, config: c, secondMoments: moments)
            let scaled = try LanguageModel(config: c, weights: w)
            let tokens = (0..<12).map { ($0 * 5 + 1) % c.vocabSize }
            let a = try loaded.model.forward(tokens, cache: KVCache(config: c, capacity: 16))
            let b = try scaled.forward(tokens, cache: KVCache(config: c, capacity: 16))
            XCTAssertLessThan(relativeL2(a, b), 1e-5, name)
            for kind in LinearKind.allCases {
                XCTAssertGreaterThan(
                    relativeL2(loaded.model.weights.blocks[0][kind].weight, w.blocks[0][kind].weight), 0.01,
                    "\(name) \(kind)")
            }
        }
    }

    /// `quantize --rotate` writes an untied model that loads and runs, with the transform in its report.
    func testQuantizeRotatedModel() throws {
        let dir = try temporaryDirectory(self)
        let q = "\(dir)/q"
        let r = try runProcess(
            Paths.lowraBinary,
            [
                "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "4", "--out", q, "--rotate",
                "--calibration", "none", "--init", "none", "--json",
            ])
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(obj["transform"] as? String, "rotated (seed 0)")
        let loaded = try LoadedModel.load(q)
        XCTAssertFalse(loaded.config.tieWordEmbeddings)
        XCTAssertNotNil(loaded.model.weights.head)
        _ = try loaded.model.forward([1, 2, 3], cache: KVCache(config: loaded.config, capacity: 4))
        let bad = try runProcess(
            Paths.lowraBinary,
            [
                "quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "4", "--out", "\(dir)/b",
                "--calibration", "none", "--channel-scaling", "0.5",
            ])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.err.contains("--channel-scaling needs --calibration"), bad.err)
    }
}
