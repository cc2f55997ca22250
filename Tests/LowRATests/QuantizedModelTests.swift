import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRAQuant
@testable import LowRATensor
@testable import LowRAPipeline

final class QuantizedModelTests: XCTestCase {
    /// Budget honesty, a save/load round trip that keeps logits and tokens exactly, and packed
    /// layers staying packed after loading.
    func testQuantizeSaveLoadRoundTrip() throws {
        let src = try LoadedModel.load(Paths.fixture("tiny.gguf"))
        let dir = "\(try temporaryDirectory(self))/q"
        for (method, bits) in [(QuantMethod.lowra, 1.75), (.lowra, 2.5), (.qlora, 3.0)] {
            let (w, map, report, _) = try src.model.weights.quantized(QuantizeRequest(method: method, bits: bits))
            XCTAssertLessThanOrEqual(report.codeBitsPerParam, bits + 1e-12)
            XCTAssertGreaterThanOrEqual(
                report.codeBitsPerParam, bits - (method == .lowra ? 0.01 : 0.6), "\(method) \(bits)")
            try QuantizedModelStore.save(
                to: dir, config: src.config, weights: w, tokenizer: src.tokenizer, map: map,
                manifest: QuantManifest(
                    source: "tiny.gguf", sourceSHA256: try fingerprint(Paths.fixture("tiny.gguf")), report: report))
            let q = try LoadedModel.load(dir)
            // The packed tensors in the file take exactly the reported (formula) size.
            let file = try SafeTensorsFile(path: "\(dir)/model.safetensors")
            let packedBytes = file.tensors.values.filter { t in
                [".bits", ".codes", ".levels", ".absmax", ".absmax_codes", ".absmax_scales"].contains {
                    t.name.hasSuffix($0)
                }
            }.reduce(0) { $0 + $1.range.count }
            XCTAssertEqual(packedBytes, report.storedBytes)
            XCTAssertEqual(q.config, src.config)
            XCTAssertNotNil(q.model.weights.blocks[0][.q].packed)
            XCTAssertEqual(q.model.weights.blocks[1][.down].packed, w.blocks[1][.down].packed)
            // Packed codes (and double-quantized scale codes) are read from the mapped file, not copied.
            for lin in q.model.weights.blocks.flatMap(\.linears) {
                let p = try XCTUnwrap(lin.packed)
                XCTAssertTrue(p.codes.isBorrowed)
                if case .doubleQuant(let codes, _) = p.absmax { XCTAssertTrue(codes.isBorrowed) }
                XCTAssertFalse(w.blocks[0][.q].packed!.codes.isBorrowed)
            }
            let tokens = src.tokenizer.encode("First Citizen:\nBefore we proceed any further, hear me speak. 12 3")
            XCTAssertEqual(
                q.tokenizer.encode("First Citizen: <|im_start|>user 42"),
                src.tokenizer.encode("First Citizen: <|im_start|>user 42"))
            let a = try LanguageModel(config: src.config, weights: w).forward(
                tokens, cache: KVCache(config: src.config, capacity: 64))
            let b = try q.model.forward(tokens, cache: KVCache(config: src.config, capacity: 64))
            XCTAssertEqual(a, b)
            // Decoding through the packed kernels agrees with the prefill's dequantize + sgemm, up to
            // the f16 KV cache's rounding (as in ModelTests) with fp32 activations and with int16
            // ones (the default: quantize leaves the levels on the kernels' grid); with int8 ones
            // within 3% in relative L2 (1-2% measured on this random model, whose logits reach ±35).
            var decoded = [KernelActivations: [Float]]()
            for activations in KernelActivations.allCases {
                q.model.activations = activations
                let cache = KVCache(config: src.config, capacity: 64)
                var rows = try q.model.forward([tokens[0]], cache: cache, logits: .all)
                for t in tokens.dropFirst() { rows += try q.model.forward([t], cache: cache, logits: .last) }
                decoded[activations] = rows
                if activations == .int8 {
                    XCTAssertLessThanOrEqual(relativeL2(rows, b), 0.03)
                    XCTAssertGreaterThan(relativeL2(rows, b), 1e-3)  // the int8 kernels did run
                } else {
                    XCTAssertLessThanOrEqual(maxRelativeDifference(rows, b.map(Double.init)).0, 1e-2)
                    XCTAssertLessThanOrEqual(relativeL2(rows, b), 1e-3)
                }
            }
            XCTAssertNotEqual(decoded[.int16], decoded[.float])  // the int16 kernels did run
            XCTAssertLessThan(q.model.weights.weightBytes, src.model.weights.weightBytes)
            // The stored precision map reproduces the same model.
            let reused = try JSONDecoder().decode(
                PrecisionMap.self, from: Data(contentsOf: URL(fileURLWithPath: "\(dir)/precision_map.json")))
            var req = QuantizeRequest(method: method, bits: bits)
            req.precisionMap = reused
            XCTAssertEqual(
                try src.model.weights.quantized(req).weights.blocks[0][.gate].packed, w.blocks[0][.gate].packed)
        }
    }

    func testImpossibleBudgetsAreRefused() throws {
        let w = try LoadedModel.load(Paths.fixture("tiny_hf")).model.weights
        XCTAssertThrowsError(try w.quantized(QuantizeRequest(method: .qlora, bits: 1.5))) {
            XCTAssertEqual($0 as? RecipeError, .baselineBelowTwoBits(.qlora))
            XCTAssertTrue("\($0)".contains("2 bits or more"))
        }
        XCTAssertThrowsError(try w.quantized(QuantizeRequest(method: .lowra, bits: 0.5))) {
            XCTAssertEqual($0 as? RecipeError, .bitsOutOfRange(0.5))
        }
        var twoFour = QuantizeRequest(method: .lowra, bits: 1.5)
        twoFour.options.precisions = [2, 4]
        XCTAssertThrowsError(try w.quantized(twoFour)) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("below the lowest precision"), "\($0)")
        }
        XCTAssertThrowsError(try w.quantized(QuantizeRequest(method: .lowra, bits: 5)))
    }

    func testCorruptPackedLayerIsRefused() throws {
        let src = try LoadedModel.load(Paths.fixture("tiny_hf"))
        let dir = "\(try temporaryDirectory(self))/q"
        let (w, map, report, _) = try src.model.weights.quantized(QuantizeRequest(method: .lowra, bits: 2))
        try QuantizedModelStore.save(
            to: dir, config: src.config, weights: w, tokenizer: src.tokenizer, map: map,
            manifest: QuantManifest(source: "x", sourceSHA256: "0", report: report))
        // Drop one packed tensor.
        let file = try SafeTensorsFile(path: "\(dir)/model.safetensors")
        var out = SafeTensorsWriter()
        out.metadata = file.metadata
        for (name, info) in file.tensors where name != "model.layers.1.mlp.up_proj.codes" {
            try out.add(name, dtype: info.dtype, shape: info.shape, bytes: try file.bytes(name))
        }
        try out.write(to: "\(dir)/model.safetensors")
        XCTAssertThrowsError(try LoadedModel.load(dir)) {
            XCTAssertTrue(($0 as! LowRAError).message.contains("model.layers.1.mlp.up_proj.codes"), "\($0)")
        }
    }

    /// `quantize`'s streaming pass 2 (each layer packed while it is written) writes the same file
    /// as packing everything in memory first, for mixed precisions, tensor codebooks, plain
    /// absmax and LoftQ, and returns the same initial factors.
    /// A run killed between moving the previous directory aside (`DIR.old-PID`) and the new one
    /// in leaves no DIR: the next run puts the previous one back instead of deleting the only copy;
    /// a dead run's staging directory is removed.
    func testKilledReplacementRestoresThePreviousDirectory() throws {
        let parent = try temporaryDirectory(self)
        let dir = "\(parent)/q"
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()  // a process id that no longer runs
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(dir).old-\(gone.processIdentifier)", withIntermediateDirectories: true)
        try Data("previous".utf8).write(to: URL(fileURLWithPath: "\(dir).old-\(gone.processIdentifier)/marker"))
        try fm.createDirectory(atPath: "\(dir).tmp-\(gone.processIdentifier)", withIntermediateDirectories: true)
        QuantizedModelStore.removeStaleStaging(of: dir)
        XCTAssertEqual(try String(contentsOfFile: "\(dir)/marker", encoding: .utf8), "previous")
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: parent), ["q"])
    }

    func testStreamingSaveEqualsInMemorySave() throws {
        let src = try LoadedModel.load(Paths.fixture("tiny_qwen2.gguf"))
        var tensorScope = QuantizeRequest(method: .qlora, bits: 3)
        tensorScope.options.doubleQuant = false
        var withLoftQ = QuantizeRequest(method: .lowra, bits: 2)
        withLoftQ.loftq = LoftQRequest(rank: 2, alpha: 2, steps: 2)
        for request in [QuantizeRequest(method: .lowra, bits: 1.75), tensorScope, withLoftQ] {
            let dir = try temporaryDirectory(self)
            let (w, map, report, loftq) = try src.model.weights.quantized(request)
            try QuantizedModelStore.save(
                to: "\(dir)/memory", config: src.config, weights: w, tokenizer: src.tokenizer, map: map,
                manifest: QuantManifest(source: "t", sourceSHA256: "-", report: report))
            let plan = try src.model.weights.quantizationPlan(request)
            var streamedReport: QuantizeReport?
            let factors = try QuantizedModelStore.saveStreaming(
                to: "\(dir)/stream", config: src.config, weights: src.model.weights, tokenizer: src.tokenizer,
                plan: plan
            ) { r in
                streamedReport = r
                return QuantManifest(source: "t", sourceSHA256: "-", report: r)
            }
            let a = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/memory/model.safetensors"))
            let b = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/stream/model.safetensors"))
            XCTAssertEqual(a, b, "\(request.method) \(request.bits)")
            XCTAssertEqual(streamedReport?.storedBytes, report.storedBytes)
            XCTAssertEqual(streamedReport?.layers.count, report.layers.count)
            let read = try (0..<factors.count).map { try factors.factors($0) }
            XCTAssertEqual(read.map(\.a), loftq.map(\.a))
            XCTAssertEqual(read.map(\.b), loftq.map(\.b))
            XCTAssertEqual(factors.count, request.loftq == nil ? 0 : 14)
        }
    }
}
