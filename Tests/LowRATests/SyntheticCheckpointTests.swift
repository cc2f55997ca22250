import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATokenizer
@testable import LowRAPipeline
@testable import LowRABench

final class SyntheticCheckpointTests: XCTestCase {
    /// A synthetic checkpoint loads as a sharded bf16 Hugging Face model of the config's shape,
    /// is deterministic from its seed, and has the stated weight scale and outlier columns.
    func testSyntheticCheckpointLoadsAndIsDeterministic() throws {
        try Paths.requireSmolLM2()
        var config = try LoadedModel.readConfig(Paths.fixture("tiny_llama3_hf/config.json"))
        config.intermediateSize = 128
        let tok = try Tokenizer(modelPath: Paths.smolLM2).truncated(to: config.vocabSize)
        XCTAssertEqual(tok.vocabSize, config.vocabSize)
        XCTAssertTrue(tok.encode("First Citizen: hear me speak, 1234!").allSatisfy { $0 < config.vocabSize })
        let dir = try temporaryDirectory(self)
        for (name, seed) in [("a", 1), ("b", 1), ("c", 2)] as [(String, UInt64)] {
            try SyntheticCheckpoint.write(
                config: config, tokenizer: tok, to: "\(dir)/\(name)", seed: seed, shardBytes: 40_000)
        }
        let loaded = try LoadedModel.load("\(dir)/a")
        XCTAssertEqual(loaded.config, config)
        let shards = try checkpointShards("\(dir)/a")
        XCTAssertGreaterThan(shards.count, 2)
        XCTAssertTrue(loaded.storedTensors.allSatisfy { $0.dtype == "BF16" })
        XCTAssertEqual(loaded.storedTensors.count, SyntheticCheckpoint.tensors(config).count)
        for f in shards {
            XCTAssertEqual(try fingerprint("\(dir)/a/\(f)"), try fingerprint("\(dir)/b/\(f)"), f)
        }
        XCTAssertNotEqual(try fingerprint("\(dir)/a/\(shards[0])"), try fingerprint("\(dir)/c/\(shards[0])"))
        // Scale: N(0, 0.02) with 4 input columns 8x larger in every linear weight.
        let up = loaded.model.weights.blocks[1][.up]
        let w = up.weight
        var columnRMS = [Double](repeating: 0, count: up.inFeatures)
        for r in 0..<up.outFeatures {
            for j in 0..<up.inFeatures { columnRMS[j] += Double(w[r * up.inFeatures + j] * w[r * up.inFeatures + j]) }
        }
        columnRMS = columnRMS.map { ($0 / Double(up.outFeatures)).squareRoot() }
        let sorted = columnRMS.sorted()
        XCTAssertEqual(sorted[sorted.count / 2], 0.02, accuracy: 0.004)
        XCTAssertEqual(columnRMS.filter { $0 > 0.1 }.count, SyntheticCheckpoint.outlierColumns)
        XCTAssertEqual(loaded.model.weights.blocks[0].attnNorm, [Float](repeating: 1, count: config.hiddenSize))
        XCTAssertThrowsError(try SyntheticCheckpoint.write(config: config, tokenizer: tok, to: "\(dir)/a"))
    }

    /// The streaming writer's file equals the in-memory writer's; it refuses out-of-order or
    /// mis-sized tensors, and a writer dropped before finish() leaves no file.
    func testStreamWriterMatchesInMemoryWriter() throws {
        let dir = try temporaryDirectory(self)
        let a: [Float] = (0..<12).map { Float($0) / 3 }, b: [Float] = [1, -2]
        var mem = SafeTensorsWriter()
        mem.metadata["format"] = "pt"
        try mem.add("a", floats: a, shape: [3, 4], dtype: .bf16)
        try mem.add("b", floats: b, shape: [2])
        try mem.write(to: "\(dir)/mem.safetensors")
        let stream = try SafeTensorsStreamWriter(
            path: "\(dir)/stream.safetensors",
            entries: [.init(name: "a", dtype: .bf16, shape: [3, 4]), .init(name: "b", dtype: .f32, shape: [2])],
            metadata: ["format": "pt"])
        XCTAssertThrowsError(try [Float](b).withUnsafeBytes { try stream.write("b", bytes: $0) })
        XCTAssertThrowsError(try [UInt16](repeating: 0, count: 3).withUnsafeBytes { try stream.write("a", bytes: $0) })
        try a.map(bfloat16FromFloat).withUnsafeBytes { try stream.write("a", bytes: $0) }
        XCTAssertThrowsError(try stream.finish())
        try b.withUnsafeBytes { try stream.write("b", bytes: $0) }
        try stream.finish()
        XCTAssertEqual(
            try Data(contentsOf: URL(fileURLWithPath: "\(dir)/stream.safetensors")),
            try Data(contentsOf: URL(fileURLWithPath: "\(dir)/mem.safetensors")))
        do {
            let dropped = try SafeTensorsStreamWriter(
                path: "\(dir)/dropped.safetensors", entries: [.init(name: "a", dtype: .f32, shape: [1])])
            _ = dropped.nextName
        }
        XCTAssertEqual(
            try FileManager.default.contentsOfDirectory(atPath: dir).sorted(),
            ["mem.safetensors", "stream.safetensors"])
    }
}
