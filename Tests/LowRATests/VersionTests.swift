import Foundation
import XCTest

@testable import LowRAAdapters
@testable import LowRAModel
@testable import LowRAPipeline
@testable import LowRAServe

/// Versions that must not regress: `finetune --from` makes version n+1 naming its parent, `card
/// promote` refuses a version that forgot its parent's task beyond the tolerance, a bare name
/// resolves to the newest promoted version, and `card retire` takes a version out.
final class VersionTests: XCTestCase {
    func testPromotionRefusesAForgetfulChildAndNamesResolveToPromotedVersions() throws {
        let dir = try temporaryDirectory(self)
        func lowra(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            try runProcess(Paths.lowraBinary, args)
        }
        let q = try ServeTests.fixture().base  // SmolLM2 at 2 bits: a model that learns in a few steps
        var r: (status: Int32, out: String, err: String) = (0, "", "")
        try String(repeating: "First Citizen:\nBefore we proceed any further, hear me speak.\n", count: 40)
            .write(toFile: "\(dir)/a.txt", atomically: true, encoding: .utf8)
        try String(repeating: "0123 4567 89 qwerty zxcv; 9876 5432 10 asdf ghjk.\n", count: 40)
            .write(toFile: "\(dir)/b.txt", atomically: true, encoding: .utf8)
        let shelf = "\(dir)/shelf"
        func finetune(_ out: String, _ data: String, steps: Int, lr: String, from: String? = nil) throws {
            r = try lowra(
                [
                    "finetune", "--model", q, "--train", "\(dir)/\(data)", "--valid", "\(dir)/\(data)", "--steps",
                    "\(steps)", "--seq", "32", "--batch", "2", "--lr", lr, "--out", "\(shelf)/\(out)",
                ] + (from.map { ["--from", "\(shelf)/\($0)"] } ?? []))
            XCTAssertEqual(r.status, 0, r.err)
        }
        try finetune("bard", "a.txt", steps: 10, lr: "3e-3")
        try finetune("bard-2", "a.txt", steps: 1, lr: "1e-6", from: "bard")
        try finetune("bard-3", "b.txt", steps: 15, lr: "1e-2", from: "bard-2")
        let v2 = try AdapterCard.load("\(shelf)/bard-2")
        XCTAssertEqual([v2.name, v2.version], ["bard", "2"])
        XCTAssertEqual(v2.parent?.version, "1")
        XCTAssertFalse(v2.isPromoted)

        r = try lowra(["card", "promote", "\(shelf)/bard-2"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertNotNil(try AdapterCard.load("\(shelf)/bard-2").promotion)
        // Trained on other text at a high rate: it forgot the parent's task.
        r = try lowra(["card", "promote", "\(shelf)/bard-3"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("not promoted: it forgot"), r.err)
        XCTAssertNil(try AdapterCard.load("\(shelf)/bard-3").promotion)
        r = try lowra(["card", "promote", "\(shelf)/bard-3", "--max-regression", "1e12"])
        XCTAssertEqual(r.status, 0, "a tolerance the child meets promotes it: \(r.err)")
        var card = try AdapterCard.load("\(shelf)/bard-3")
        card.promotion = nil
        try card.save(to: "\(shelf)/bard-3")

        let loaded = try LoadedModel.load(q)
        func resolve(_ name: String) throws -> String {
            let s = try AdapterShelf(
                directory: shelf, config: loaded.config, fingerprint: try baseFingerprint(q), minEvalTokens: 0,
                capBytes: 1 << 30, maxAdapterBytes: 1 << 30)
            return try s.entry(name).id
        }
        XCTAssertEqual(try resolve("bard"), "bard@2", "the newest promoted version")
        XCTAssertEqual(try resolve("bard@3"), "bard@3", "an unpromoted version by its full name")
        r = try lowra(["card", "retire", "\(shelf)/bard-2"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try resolve("bard"), "bard@1", "version 2 retired")
    }
}
