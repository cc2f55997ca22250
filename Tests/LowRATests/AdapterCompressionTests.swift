import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATrain
@testable import LowRAPipeline
@testable import LowRAAdapters

/// Low-bit adapters (`CompressedAdapter`): error falls with bits, the file round-trips exactly,
/// `AdapterStore.load` expands them, a damaged file is an error.
final class AdapterCompressionTests: XCTestCase {
    func randomAdapter(_ c: ModelConfig, rank: Int, seed: UInt64) throws -> LoRAAdapter {
        var a = try LoRAAdapter(config: c, rank: rank)
        var rng = SplitMix64(seed: seed)
        for i in a.values.indices { a.values[i] = Float(rng.nextUnit() * 2 - 1) * 0.1 }
        return a
    }

    func roundTrip(_ loaded: LoadedModel, bits: [Int], rank: Int) throws -> [Int: Double] {
        let dir = try temporaryDirectory(self)
        let a = try randomAdapter(loaded.config, rank: rank, seed: 5)
        let manifest = AdapterManifest(
            baseFingerprint: "fp", base: loaded.path, quantization: nil, rank: rank, alpha: a.alpha,
            initialization: "random")
        var errors = [Int: Double]()
        for b in bits {
            let c = try CompressedAdapter(a, bits: b)
            let expanded = try c.expanded(config: loaded.config)
            errors[b] = relativeL2(expanded.values, a.values)
            XCTAssertLessThan(c.byteCount, 4 * a.parameterCount)
            if b == 8 { XCTAssertEqual(c.byteCount, a.parameterCount / 32 * 34) }  // Q8_0: 8.5 bits a value
            let out = "\(dir)/q\(b)"
            try AdapterStore.saveCompressed(c, config: loaded.config, manifest: manifest, to: out)
            let (back, m) = try AdapterStore.loadCompressed(out, config: loaded.config, fingerprint: "fp")
            XCTAssertEqual(m.compressionBits, b)
            XCTAssertEqual(back.byteCount, c.byteCount)
            XCTAssertEqual(try back.expanded(config: loaded.config).values, expanded.values)
            let loadedBack = try AdapterStore.load(out, config: loaded.config, fingerprint: "fp").0
            XCTAssertEqual(loadedBack.values, expanded.values)
            XCTAssertThrowsError(try AdapterStore.load(out, config: loaded.config, fingerprint: "other"))
            // A truncated factor file is an error, not a crash.
            let file = "\(out)/\(AdapterStore.compressedFile)"
            let data = try Data(contentsOf: URL(fileURLWithPath: file))
            try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: file))
            XCTAssertThrowsError(try AdapterStore.loadCompressed(out, config: loaded.config, fingerprint: "fp"))
        }
        return errors
    }

    func testPackedBitsRoundTripAndErrorFallsWithBits() throws {
        let loaded = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let e = try roundTrip(loaded, bits: [4, 2], rank: 4)
        // Uniform values: 16 Lloyd-Max levels per row ~5% error, 4 levels ~20%.
        XCTAssertLessThan(e[4]!, 0.1, "\(e)")
        XCTAssertLessThan(e[4]!, e[2]! / 2, "\(e)")
        XCTAssertLessThan(e[2]!, 0.35, "\(e)")
        XCTAssertThrowsError(try CompressedAdapter(try randomAdapter(loaded.config, rank: 4, seed: 1), bits: 3))
    }

    func testEightBitsOnSmolLM2Shapes() throws {
        try Paths.requireSmolLM2()
        let loaded = try LoadedModel.load(Paths.smolLM2)
        let e = try roundTrip(loaded, bits: [8], rank: 2)
        XCTAssertLessThan(e[8]!, 0.01, "\(e)")
    }
}
