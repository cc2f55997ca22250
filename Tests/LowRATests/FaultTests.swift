import Foundation
import XCTest

@testable import LowRAIO
@testable import LowRAModel
@testable import LowRATensor
@testable import LowRATrain
@testable import LowRAPipeline
@testable import LowRAAdapters

/// Streaming `quantize` under bad input and faults: a truncated shard, a tensor whose dtype or
/// shape disagrees with its bytes, a full disk, kill -9 in the middle. Each ends with one
/// `Error:` line (or, killed, with no output directory), a non-zero exit, nothing half-written
/// under --out, and a rerun that succeeds.
final class FaultTests: XCTestCase {
    private func quantize(_ model: String, _ out: String, _ extra: [String] = []) throws -> (
        status: Int32, out: String, err: String
    ) {
        try runProcess(Paths.lowraBinary, ["quantize", "--model", model, "--bits", "2", "--out", out] + extra)
    }

    private func assertOneErrorLine(
        _ r: (status: Int32, out: String, err: String), mentioning needle: String, line: UInt = #line
    ) {
        XCTAssertNotEqual(r.status, 0, line: line)
        let lines = r.err.split(separator: "\n").filter { !$0.isEmpty }
        XCTAssertTrue(lines.last?.hasPrefix("Error:") ?? false, "stderr: \(r.err)", line: line)
        XCTAssertTrue(lines.last?.contains(needle) ?? false, "stderr: \(r.err)", line: line)
        XCTAssertFalse(r.err.contains("Fatal error") || r.err.contains("Stack dump"), r.err, line: line)
    }

    /// Nothing named after `out` is left in its parent: no output, no staging directory.
    private func assertNothingLeft(_ out: String, line: UInt = #line) throws {
        let parent = parentDirectory(of: out)
        let base = (out as NSString).lastPathComponent
        let left = try FileManager.default.contentsOfDirectory(atPath: parent).filter { $0.hasPrefix(base) }
        XCTAssertEqual(left, [], "left beside --out", line: line)
    }

    /// Rewrites a safetensors file's header with `edit`, keeping its data bytes.
    private func editHeader(_ path: String, _ edit: (inout [String: Any]) -> Void) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        var header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as! [String: Any]
        edit(&header)
        var json = try JSONSerialization.data(withJSONObject: header)
        while json.count % 8 != 0 { json.append(0x20) }
        var out = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Data($0) }
        out.append(json)
        out.append(data.subdata(in: (8 + n)..<data.count))
        try out.write(to: URL(fileURLWithPath: path))
    }

    func testBadShardsAreRefusedAndTheRerunSucceeds() throws {
        let dir = try temporaryDirectory(self)
        let fm = FileManager.default
        let shard = "model-00002-of-00002.safetensors"
        func copy(_ name: String) throws -> String {
            try fm.copyItem(atPath: Paths.fixture("tiny_qwen2_hf"), toPath: "\(dir)/\(name)")
            return "\(dir)/\(name)"
        }
        // A shard cut short (a download that stopped).
        let cut = try copy("cut")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(cut)/\(shard)"))
        try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: "\(cut)/\(shard)"))
        assertOneErrorLine(try quantize(cut, "\(dir)/q"), mentioning: "truncated")
        try assertNothingLeft("\(dir)/q")
        // A tensor whose dtype, then whose shape, disagrees with the bytes its header gives it.
        let named =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: "\(cut)/model.safetensors.index.json"))) as! [String: Any]
        let inShard = (named["weight_map"] as! [String: String]).filter { $0.value == shard }.keys.sorted()
        let victim = try XCTUnwrap(inShard.first { $0.hasSuffix("mlp.up_proj.weight") })
        let dtype = try copy("dtype")
        try editHeader("\(dtype)/\(shard)") { h in
            var t = h[victim] as! [String: Any]
            t["dtype"] = "F32"
            h[victim] = t
        }
        assertOneErrorLine(try quantize(dtype, "\(dir)/q"), mentioning: victim)
        try assertNothingLeft("\(dir)/q")
        let shape = try copy("shape")
        try editHeader("\(shape)/\(shard)") { h in
            var t = h[victim] as! [String: Any]
            let s = t["shape"] as! [Int]
            t["shape"] = [s[0] / 2, s[1]]
            h[victim] = t
        }
        assertOneErrorLine(try quantize(shape, "\(dir)/q"), mentioning: victim)
        try assertNothingLeft("\(dir)/q")
        // The intact checkpoint quantizes into the same --out.
        let good = try quantize(try copy("good"), "\(dir)/q")
        XCTAssertEqual(good.status, 0, good.err)
        XCTAssertTrue(fm.fileExists(atPath: "\(dir)/q/model.safetensors"))
    }

    /// --out on a filesystem too small for the model (a 64 KiB tmpfs): one Error line naming the
    /// full disk, and the filesystem is left empty. Needs root to mount; skipped otherwise.
    /// One writer per output: a second claim on a held output fails with a clear error (in this
    /// process, and for the `quantize` and `finetune` commands), and the claim ends with its holder.
    func testOutputLockRefusesASecondWriter() throws {
        let dir = try temporaryDirectory(self)
        let out = "\(dir)/q"
        var first: OutputLock? = try OutputLock(out)
        XCTAssertThrowsError(try OutputLock(out)) { error in
            XCTAssertTrue("\(error)".contains("being written by another lowra process (pid \(getpid()))"), "\(error)")
        }
        assertOneErrorLine(try quantize(Paths.fixture("tiny.gguf"), out), mentioning: "being written by another")
        try assertNothingLeft(out)
        let adapter = "\(dir)/a"
        let held = try OutputLock(adapter)
        try "some text to train on, long enough.".write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        assertOneErrorLine(
            try runProcess(
                Paths.lowraBinary,
                ["finetune", "--model", Paths.fixture("tiny.gguf"), "--train", "\(dir)/t.txt", "--out", adapter]),
            mentioning: "being written by another")
        withExtendedLifetime(held) {}
        withExtendedLifetime(first) {}
        first = nil
        XCTAssertEqual(try quantize(Paths.fixture("tiny.gguf"), out).status, 0)
    }

    /// Outputs named by one character relative to the working directory (`--out q`): Foundation's
    /// `deletingLastPathComponent` trapped on them after the model was written (found while making
    /// fuzz seeds). `parentDirectory(of:)` is the plain-string replacement.
    func testOneCharacterRelativeOutputs() throws {
        let cases = [
            ("q", "."), ("ab", "."), ("a/b", "a"), ("/q", "/"), ("/", "/"), ("a/b/", "a"), ("a//b", "a"),
            ("/tmp/x/y", "/tmp/x"), ("./q", "."),
        ]
        for (path, parent) in cases { XCTAssertEqual(parentDirectory(of: path), parent, path) }
        let dir = try temporaryDirectory(self)
        // Where the default calibration text is missing (LOWRA_DATA naming an empty folder): a
        // clear error, nothing written.
        let missing = try runProcess(
            Paths.lowraBinary, ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", "q"],
            in: dir, environment: ["LOWRA_DATA": dir])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.err.contains("--calibration none") && missing.err.contains(dir), missing.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/q"))
        // Away from the repository without LOWRA_DATA, the text is found above the executable.
        let found = try runProcess(
            Paths.lowraBinary,
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", "qd", "--json"],
            in: dir, environment: ["LOWRA_DATA": ""])
        XCTAssertEqual(found.status, 0, found.err)
        XCTAssertTrue(found.out.contains("calibration.txt (") && found.out.contains("Fisher"), found.out)
        let q = try runProcess(
            Paths.lowraBinary,
            ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", "q", "--calibration", "none"],
            in: dir)
        XCTAssertEqual(q.status, 0, q.err)
        XCTAssertTrue(QuantizedModelStore.isQuantizedDirectory("\(dir)/q"))
        try String(repeating: "some text to train on. ", count: 40).write(
            toFile: "\(dir)/t", atomically: true, encoding: .utf8)
        let a = try runProcess(
            Paths.lowraBinary,
            ["finetune", "--model", "q", "--train", "t", "--steps", "1", "--seq", "16", "--batch", "1", "--out", "a"],
            in: dir)
        XCTAssertEqual(a.status, 0, a.err)
        XCTAssertTrue(AdapterStore.isAdapterDirectory("\(dir)/a"))
    }

    func testFullDiskLeavesNothing() throws {
        try withSmallDisk { dir, mnt in
            let model = Paths.fixture("tiny_qwen2_hf")
            let r = try quantize(model, "\(mnt)/q", ["--init", "none"])
            assertOneErrorLine(r, mentioning: "No space left on device")
            // Only the (empty-ish) lock file, which stays so that a lock never changes inode.
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mnt), [".q.lock"])
            let rerun = try quantize(model, "\(dir)/q", ["--init", "none"])
            XCTAssertEqual(rerun.status, 0, rerun.err)
        }
    }

    /// `writeAtomically` (cards, configs, checkpoints' small files) on a full disk (a 64 KiB tmpfs):
    /// a clear error naming the full disk, the previous file as it was, no temporary file left.
    func testAtomicWriteOnAFullDiskKeepsThePreviousFile() throws {
        try withSmallDisk { _, mnt in
            let path = "\(mnt)/card.json"
            let before = Data("{\"version\": 1}".utf8)
            try writeAtomically(before, to: path)
            XCTAssertThrowsError(try writeAtomically(Data(repeating: 7, count: 256 << 10), to: path)) { error in
                XCTAssertTrue("\(error)".contains("No space left on device"), "\(error)")
            }
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mnt), ["card.json"])
        }
    }

    /// `body(dir, mnt)`: a fresh temporary folder and, mounted at `mnt` inside it, a 64 KiB tmpfs
    /// (a full disk after a few writes). Needs root to mount; the test is skipped otherwise.
    private func withSmallDisk(_ body: (_ dir: String, _ mnt: String) throws -> Void) throws {
        let dir = try temporaryDirectory(self)
        let mnt = "\(dir)/small"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let mount = try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt])
        guard mount.status == 0 else { throw XCTSkip("cannot mount a tmpfs here: \(mount.err)") }
        defer { _ = try? runProcess("/bin/umount", [mnt]) }
        try body(dir, mnt)
    }

    /// kill -9 while the output is being written: no --out directory; the rerun succeeds and
    /// removes the killed run's staging directory.
    func testKilledQuantizeLeavesNoOutput() throws {
        try Paths.requireSmolLM2()
        let dir = try temporaryDirectory(self)
        let url = URL(fileURLWithPath: Paths.fixture("tiny_llama3_hf/config.json"))
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        config["hidden_size"] = 256
        config["intermediate_size"] = 688
        config["num_hidden_layers"] = 4
        config["num_attention_heads"] = 4
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: "\(dir)/config.json"))
        let synth = try runProcess(
            Paths.lowraBinary,
            ["synth", "--config", "\(dir)/config.json", "--out", "\(dir)/m", "--tokenizer", Paths.smolLM2])
        XCTAssertEqual(synth.status, 0, synth.err)
        let out = "\(dir)/q"
        let args = [
            "quantize", "--model", "\(dir)/m", "--bits", "2", "--out", out, "--rank", "8", "--loftq-steps", "40",
        ]
        let p = try startLowra(args)
        let staging = "\(out).tmp-\(p.processIdentifier)"
        let deadline = Date().addingTimeInterval(120)
        while p.isRunning && Date() < deadline {
            if FileManager.default.fileExists(atPath: "\(staging)/model.safetensors")
                || (try? FileManager.default
                    .contentsOfDirectory(atPath: staging).contains { $0.hasSuffix(".tmp") }) == true
            {
                break
            }
            usleep(5_000)
        }
        XCTAssertTrue(p.isRunning, "quantize finished before it could be killed; make the model bigger")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "a killed quantize left --out")
        XCTAssertTrue(FileManager.default.fileExists(atPath: staging))
        let rerun = try runProcess(Paths.lowraBinary, args.map { $0 == "40" ? "1" : $0 })
        XCTAssertEqual(rerun.status, 0, rerun.err)
        try assertNothingLeft(staging)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(out)/model.safetensors"))
        try "First Citizen: hear me speak.".write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        let ev = try runProcess(Paths.lowraBinary, ["eval", "--model", out, "--data", "\(dir)/t.txt"])
        XCTAssertEqual(ev.status, 0, ev.err)
    }
    /// kill -9 at random moments of a `quantize` that replaces an existing model: afterwards --out
    /// is always a whole model (the previous one, or the new one when the kill came after the
    /// rename), and the rerun writes byte for byte what an uninterrupted run writes.
    func testQuantizeKilledAtRandomMomentsKeepsAWholeModel() throws {
        let dir = try temporaryDirectory(self)
        let model = Paths.fixture("tiny_qwen2_hf")
        let out = "\(dir)/q"
        func args(_ bits: String, _ to: String) -> [String] {
            ["quantize", "--model", model, "--bits", bits, "--out", to, "--rank", "4", "--loftq-steps", "3"]
        }
        XCTAssertEqual(try runProcess(Paths.lowraBinary, args("2", out)).status, 0)
        let started = Date()
        XCTAssertEqual(try runProcess(Paths.lowraBinary, args("1.75", "\(dir)/reference")).status, 0)
        let duration = Date().timeIntervalSince(started)
        var rng = SplitMix64(seed: 5)
        var killed = 0
        for _ in 0..<8 {
            let p = try startLowra(args("1.75", out))
            usleep(UInt32(rng.nextUnit() * duration * 1e6))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal { killed += 1 }
            let manifest =
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: "\(out)/lowra_quant.json"))) as! [String: Any]
            let bits = (manifest["report"] as? [String: Any])?["target_bits"] as? Double
            XCTAssertTrue(bits == 2 || bits == 1.75, "\(String(describing: bits))")
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(out)/model.safetensors"))
        }
        XCTAssertGreaterThan(killed, 0, "no run was killed before it finished")
        let rerun = try runProcess(Paths.lowraBinary, args("1.75", out))
        XCTAssertEqual(rerun.status, 0, rerun.err)
        try assertNothingLeft("\(out).")
        for f in ["model.safetensors", "precision_map.json", "adapter/adapter_model.safetensors"] {
            XCTAssertEqual(
                try Data(contentsOf: URL(fileURLWithPath: "\(out)/\(f)")),
                try Data(contentsOf: URL(fileURLWithPath: "\(dir)/reference/\(f)")), f)
        }
    }
    /// kill -9 at random moments of `card set` on a card with many evaluations: afterwards the
    /// card is always whole (the previous one or the new one, never a mix or a torn file), and
    /// the rerun writes what an uninterrupted run writes.
    func testCardSetKilledAtRandomMomentsKeepsAWholeCard() throws {
        let dir = try temporaryDirectory(self)
        let q = "\(dir)/q"
        XCTAssertEqual(
            try runProcess(
                Paths.lowraBinary, ["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", q]
            ).status, 0)
        let a = "\(q)/adapter"
        var card = try AdapterCard.loadOrMake(a)
        let e = AdapterCard.Evaluation(
            role: .task, dataset: .init(file: "t.txt", sha256: String(repeating: "0", count: 64), bytes: 1), tokens: 1,
            perplexity: 2, baseFingerprint: card.baseFingerprint, source: "test")
        card.evaluations = Array(repeating: e, count: 5000)  // ~2 MB: the write takes a while
        try card.save(to: a)
        let old = try AdapterCard.load(a)
        let args = ["card", "set", a, "--task", "renamed", "--owner", "someone else"]
        let started = Date()
        XCTAssertEqual(try runProcess(Paths.lowraBinary, args + ["--version", "2"]).status, 0)
        let duration = Date().timeIntervalSince(started)
        var rng = SplitMix64(seed: 9)
        var killed = 0
        for round in 0..<10 {
            let p = try startLowra(args + ["--version", "\(round + 3)"])
            usleep(UInt32(rng.nextUnit() * duration * 1e6))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal { killed += 1 }
            let now = try AdapterCard.load(a)  // whole, valid JSON
            XCTAssertEqual(now.evaluations.count, old.evaluations.count)
            XCTAssertTrue(now.task == old.task || now.task == "renamed")
        }
        XCTAssertGreaterThan(killed, 0, "no run was killed before it finished")
        XCTAssertEqual(try runProcess(Paths.lowraBinary, args + ["--version", "final"]).status, 0)
        let final = try AdapterCard.load(a)
        XCTAssertEqual([final.task, final.owner, final.version], ["renamed", "someone else", "final"])
        try assertNothingLeft("\(a)/.\(AdapterCard.file).")  // killed writers' temporaries removed by the next
    }

    /// kill -9 at random moments of `experiment` (in quantize, eval, fine-tuning or the report),
    /// each time continued with --resume: the finished sweep reports the same numbers as an
    /// uninterrupted one.
    func testExperimentKilledAtRandomMomentsResumesToTheSameResults() throws {
        let dir = try temporaryDirectory(self)
        let text = (0..<60).map { "verse \($0): what light through yonder window breaks" }.joined(separator: "\n")
        try text.write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        func args(_ out: String) -> [String] {
            [
                "experiment", "--model", Paths.fixture("tiny.gguf"), "--methods", "none,lowra", "--bits", "2,1.5",
                "--steps", "6", "--rank", "2", "--seq", "16", "--batch", "1", "--eval-tokens", "64", "--train",
                "\(dir)/t.txt", "--valid", "\(dir)/t.txt", "--test", "\(dir)/t.txt", "--out", out, "--resume",
            ]
        }
        func numbers(_ out: String) throws -> [String] {
            let r =
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: "\(out)/results.json"))) as! [String: Any]
            return (r["cells"] as! [[String: Any]]).map { c in
                let before = (c["before"] as? [String: Any])?["perplexity"] as? Double
                let after = (c["after"] as? [String: Any])?["perplexity"] as? Double
                return "\(c["method"]!) \(c["bits"] ?? "-") \(c["status"]!) \(before ?? -1) \(after ?? -1)"
            }
        }
        let started = Date()
        let whole = try runProcess(Paths.lowraBinary, args("\(dir)/whole"))
        XCTAssertEqual(whole.status, 0, whole.err)
        let duration = Date().timeIntervalSince(started)
        var rng = SplitMix64(seed: 9)
        var killed = 0
        for _ in 0..<5 {
            let p = try startLowra(args("\(dir)/killed"))
            usleep(UInt32((0.1 + 0.5 * rng.nextUnit()) * duration * 1e6))
            // The experiment and the step it is running (a power cut takes both).
            let children =
                (try? String(
                    contentsOfFile: "/proc/\(p.processIdentifier)/task/\(p.processIdentifier)/children", encoding: .utf8
                ))?
                .split(separator: " ").compactMap { Int32($0) } ?? []
            kill(p.processIdentifier, SIGKILL)
            for c in children { kill(c, SIGKILL) }
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal { killed += 1 }
        }
        XCTAssertGreaterThan(killed, 0)
        let resumed = try runProcess(Paths.lowraBinary, args("\(dir)/killed"))
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertEqual(try numbers("\(dir)/killed"), try numbers("\(dir)/whole"))
    }
}
