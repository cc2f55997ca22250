import Foundation
import LowRAIO
import XCTest

@testable import LowRATrain

/// `lowra finetune --distributed` under `mpirun -np 2` on SmolLM2 (loopback, one host): it equals
/// the single-process run with the same global batch and seed, and a rank killed mid-run leaves a
/// checkpoint that two ranks or one continue. Skipped without Open MPI (`make test` requires it).
final class DistributedTests: XCTestCase {
    static let steps = 12

    /// mpirun's path, after checking that this build was linked with MPI.
    func mpirun() throws -> String {
        let path = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        guard let path, Communicator.mpiAvailable else {
            if ProcessInfo.processInfo.environment["LOWRA_REQUIRE_CLUSTER"] != nil {
                XCTFail("Open MPI is missing (mpirun or the build's MPI): scripts/setup.sh installs it")
            }
            throw XCTSkip("Open MPI is not installed")
        }
        try Paths.requireSmolLM2()
        return path
    }

    /// A fine-tuning run of `steps` optimizer steps (4 sequences of 32 tokens each), checkpointed every
    /// two steps.
    func finetuneArgs(_ dir: String, out: String, steps: Int = DistributedTests.steps, batch: Int = 4) -> [String] {
        [
            Paths.lowraBinary, "finetune", "--model", Paths.smolLM2, "--train", "\(dir)/train.txt", "--valid",
            "\(dir)/valid.txt", "--steps", "\(steps)", "--batch", "\(batch)", "--seq", "32", "--rank", "8", "--lr",
            "1e-3", "--valid-sequences", "6", "--save-every", "2", "--out", out,
        ]
    }

    /// Root is allowed (CI containers); CMA single-copy transfers need ptrace rights containers may lack.
    func mpiArgs(_ ranks: Int) -> [String] {
        [
            "--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none", "-np",
            "\(ranks)",
        ]
    }

    /// Train and validation text: slices of Tiny Shakespeare.
    func data(_ dir: String) throws {
        let text = try String(contentsOfFile: Paths.shakespeare, encoding: .utf8)
        try String(text.prefix(60_000)).write(toFile: "\(dir)/train.txt", atomically: true, encoding: .utf8)
        try String(text.dropFirst(60_000).prefix(6_000)).write(
            toFile: "\(dir)/valid.txt", atomically: true, encoding: .utf8)
    }

    func checkpoint(_ out: String) throws -> (adapter: [Float], step: Int) {
        let st = try SafeTensorsFile(path: "\(out)/\(Trainer.checkpointFile)")
        let state = try JSONSerialization.jsonObject(with: Data(st.metadata["lowra_checkpoint"]!.utf8))
        return (try st.floats("adapter"), (state as! [String: Any])["step"] as! Int)
    }

    /// train_log.csv's columns train_loss, grad_norm and valid_loss per step (nan where empty).
    func logRows(_ out: String) throws -> [[Double]] {
        try String(contentsOfFile: "\(out)/\(Trainer.logFile)", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { line in
                let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                return [f[2], f[3], f[5]].map { Double($0) ?? .nan }
            }
    }

    func assertSameCurve(_ a: [[Double]], _ b: [[Double]], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (ra, rb) in zip(a, b) {
            for (x, y) in zip(ra, rb) where !(x.isNaN && y.isNaN) {
                XCTAssertLessThanOrEqual(abs(x - y), 1e-5 * abs(x), "\(ra) vs \(rb)", file: file, line: line)
            }
        }
    }

    /// Two ranks, each running half of every batch, against one process: the same loss curve (train
    /// loss, gradient norm and validation loss per step, as logged to six digits) and the same adapter
    /// within 1e-5 relative (L2) after 5 steps. Not bit for bit: each rank's gradient is summed over
    /// its half before the two halves are added, and Adam turns that rounding into visible
    /// differences only where a gradient is nearly zero.
    func testTwoRanksEqualOneProcess() throws {
        let mpirun = try mpirun()
        let dir = try temporaryDirectory(self)
        try data(dir)
        let one = try runProcess(Paths.lowraBinary, Array(finetuneArgs(dir, out: "\(dir)/one", steps: 5).dropFirst()))
        XCTAssertEqual(one.status, 0, one.err)
        let two = try runProcess(
            mpirun, mpiArgs(2) + finetuneArgs(dir, out: "\(dir)/two", steps: 5) + ["--distributed"])
        XCTAssertEqual(two.status, 0, two.err)
        XCTAssertTrue(two.err.contains("distributed: 2 ranks"), two.err)
        let (a, b) = (try checkpoint("\(dir)/one"), try checkpoint("\(dir)/two"))
        XCTAssertEqual(a.step, 5)
        XCTAssertEqual(b.step, 5)
        XCTAssertLessThanOrEqual(relativeL2(b.adapter, a.adapter), 1e-5)
        XCTAssertGreaterThan(relativeL2(b.adapter, try checkpointAfterOneStep(dir)), 0.01, "the runs did train")
        assertSameCurve(try logRows("\(dir)/one"), try logRows("\(dir)/two"))
        // One writer: the adapter and its card are in --out, written once.
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/two/adapter_card.json"))
    }

    /// The adapter after a single step: training changes it well beyond the tolerance above.
    func checkpointAfterOneStep(_ dir: String) throws -> [Float] {
        let r = try runProcess(Paths.lowraBinary, Array(finetuneArgs(dir, out: "\(dir)/step1", steps: 1).dropFirst()))
        XCTAssertEqual(r.status, 0, r.err)
        return try checkpoint("\(dir)/step1").adapter
    }

    /// Rank 1 killed with SIGKILL after the first checkpoint: mpirun ends the job promptly with a
    /// failure, the checkpoint stays, `--resume` on two ranks ends bit for bit where an uninterrupted
    /// two-rank run does, and on one process within 1e-5 (L2).
    func testKilledRankLeavesACheckpointThatResumes() throws {
        let mpirun = try mpirun()
        let dir = try temporaryDirectory(self)
        try data(dir)
        let full = try runProcess(mpirun, mpiArgs(2) + finetuneArgs(dir, out: "\(dir)/full") + ["--distributed"])
        XCTAssertEqual(full.status, 0, full.err)

        let job = Process()
        job.executableURL = URL(fileURLWithPath: mpirun)
        job.arguments = mpiArgs(2) + finetuneArgs(dir, out: "\(dir)/killed") + ["--distributed"]
        job.standardOutput = FileHandle.nullDevice
        job.standardError = FileHandle.nullDevice
        try job.run()
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: "\(dir)/killed/\(Trainer.checkpointFile)") && job.isRunning
            && Date() < deadline
        {
            Thread.sleep(forTimeInterval: 0.01)
        }
        let ranks = try runProcess("/usr/bin/pgrep", ["-P", "\(job.processIdentifier)"]).out.split(separator: "\n")
        XCTAssertEqual(ranks.count, 2, "mpirun's ranks are its children")
        guard let victim = ranks.last.flatMap({ Int32($0) }) else { return }
        kill(victim, SIGKILL)
        let killedAt = Date()
        job.waitUntilExit()
        XCTAssertNotEqual(job.terminationStatus, 0)
        XCTAssertLessThan(Date().timeIntervalSince(killedAt), 30, "the job ends when a rank dies")
        let left = try checkpoint("\(dir)/killed")
        XCTAssertLessThan(left.step, Self.steps, "the kill came before the end")
        XCTAssertGreaterThan(left.step, 0)
        try FileManager.default.copyItem(atPath: "\(dir)/killed", toPath: "\(dir)/killed1")

        let two = try runProcess(
            mpirun, mpiArgs(2) + finetuneArgs(dir, out: "\(dir)/killed") + ["--distributed", "--resume"])
        XCTAssertEqual(two.status, 0, two.err)
        let one = try runProcess(
            Paths.lowraBinary, Array(finetuneArgs(dir, out: "\(dir)/killed1").dropFirst()) + ["--resume"])
        XCTAssertEqual(one.status, 0, one.err)
        let reference = try checkpoint("\(dir)/full")
        XCTAssertEqual(try checkpoint("\(dir)/killed").adapter, reference.adapter, "two ranks resume exactly")
        XCTAssertEqual(try checkpoint("\(dir)/killed1").step, Self.steps)
        XCTAssertLessThanOrEqual(relativeL2(try checkpoint("\(dir)/killed1").adapter, reference.adapter), 1e-5)
        let losses = { (out: String) in try self.logRows(out).dropFirst().map { $0[0] } }
        XCTAssertEqual(try losses("\(dir)/killed"), try losses("\(dir)/full"))
    }

    /// A batch that does not split over the ranks is refused on every rank, and the job ends.
    func testBatchMustSplitOverTheRanks() throws {
        let mpirun = try mpirun()
        let dir = try temporaryDirectory(self)
        try data(dir)
        let r = try runProcess(
            mpirun, mpiArgs(2) + finetuneArgs(dir, out: "\(dir)/odd", steps: 2, batch: 3) + ["--distributed"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue((r.out + r.err).contains("does not split over 2 ranks"), r.err)
    }
}
