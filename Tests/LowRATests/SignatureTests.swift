import Foundation
import XCTest

@testable import LowRAAdapters
@testable import LowRAModel
@testable import LowRATensor

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Signed adapters: `lowra keys generate`, `card sign`, `card verify`, and `serve --trusted-keys`
/// refusing every kind of tampering with a reason that names the file.
final class SignatureTests: XCTestCase {
    func lowra(_ args: [String], line: UInt = #line) throws -> (status: Int32, out: String, err: String) {
        try runProcess(Paths.lowraBinary, args)
    }

    /// Flips one byte in the middle of a file.
    func flipByte(_ path: String) throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[data.count / 2] ^= 0x01
        try data.write(to: URL(fileURLWithPath: path))
    }

    func refusal(_ dir: String, _ trusted: [PublicSigningKey]) -> String? {
        do {
            _ = try AdapterSignature.verify(dir, trusted: trusted)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Two adapters of a tiny model, signed and verified through the CLI, then each tampering case:
    /// a flipped byte in the weights and in the card, another adapter's weights swapped in, a key
    /// not in the trusted set, an unsigned adapter, an edited signature, a card added after signing.
    func testTamperingIsRefusedNamingTheFile() throws {
        let dir = try temporaryDirectory(self)
        let q = "\(dir)/q"
        var r = try lowra(["quantize", "--model", Paths.fixture("tiny.gguf"), "--bits", "2", "--out", q, "--rank", "4"])
        XCTAssertEqual(r.status, 0, r.err)
        try String(repeating: "First Citizen:\nBefore we proceed any further, hear me speak.\n", count: 30)
            .write(toFile: "\(dir)/t.txt", atomically: true, encoding: .utf8)
        for (name, seed) in [("a", "1"), ("b", "2")] {
            r = try lowra([
                "finetune", "--model", q, "--train", "\(dir)/t.txt", "--steps", "2", "--seq", "32", "--batch", "2",
                "--seed", seed, "--out", "\(dir)/\(name)",
            ])
            XCTAssertEqual(r.status, 0, r.err)
        }
        r = try lowra(["keys", "generate", "--name", "alice", "--out", "\(dir)/keys"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try lowra(["keys", "generate", "--name", "mallory", "--out", "\(dir)/other"])
        XCTAssertEqual(r.status, 0, r.err)
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(dir)/keys/alice.key")
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        r = try lowra(["keys", "generate", "--name", "alice", "--out", "\(dir)/keys"])
        XCTAssertNotEqual(r.status, 0, "a key is never overwritten")

        r = try lowra(["card", "sign", "\(dir)/a", "--key", "\(dir)/keys/alice.key"])
        XCTAssertEqual(r.status, 0, r.err)
        let verify = ["card", "verify", "\(dir)/a", "--model", q, "--min-eval-tokens", "0", "--trusted-keys"]
        r = try lowra(verify + ["\(dir)/keys"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("signed by alice"), r.out)
        r = try lowra(verify + ["\(dir)/other"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("not a trusted key"), r.err)

        let alice = try PublicSigningKey.loadAll("\(dir)/keys")
        XCTAssertNil(refusal("\(dir)/a", alice))
        func tampered(_ name: String, _ edit: (String) throws -> Void) throws -> String {
            let copy = "\(dir)/\(name)"
            try FileManager.default.copyItem(atPath: "\(dir)/a", toPath: copy)
            try edit(copy)
            return refusal(copy, alice) ?? "served"
        }
        let weights = "adapter_model.safetensors"
        var why = try tampered("flip-weights") { try flipByte("\($0)/\(weights)") }
        XCTAssertTrue(why.contains(weights) && why.contains("does not match"), why)
        why = try tampered("flip-card") { try flipByte("\($0)/\(AdapterCard.file)") }
        XCTAssertTrue(why.contains(AdapterCard.file), why)
        why = try tampered("swapped") { c in
            try FileManager.default.removeItem(atPath: "\(c)/\(weights)")
            try FileManager.default.copyItem(atPath: "\(dir)/b/\(weights)", toPath: "\(c)/\(weights)")
        }
        XCTAssertTrue(why.contains(weights), why)
        why = try tampered("renamed-signer") { c in
            let p = "\(c)/\(AdapterSignature.file)"
            let text = try String(contentsOfFile: p, encoding: .utf8)
            try text.replacingOccurrences(of: "\"alice\"", with: "\"bob\"").write(
                toFile: p, atomically: true, encoding: .utf8)
        }
        XCTAssertTrue(why.contains("does not verify"), why)
        why = try tampered("card-added") { c in
            try FileManager.default.removeItem(atPath: "\(c)/\(AdapterCard.file)")
            _ = try AdapterSignature.sign(c, key: try SigningKey.load("\(dir)/keys/alice.key"))
            try FileManager.default.copyItem(atPath: "\(dir)/a/\(AdapterCard.file)", toPath: "\(c)/\(AdapterCard.file)")
        }
        XCTAssertTrue(why.contains("\(AdapterCard.file) is not covered"), why)
        XCTAssertTrue(refusal("\(dir)/b", alice)?.contains("unsigned") ?? false)
        let mallory = try SigningKey.load("\(dir)/other/mallory.key")
        _ = try AdapterSignature.sign("\(dir)/b", key: mallory)
        XCTAssertTrue(refusal("\(dir)/b", alice)?.contains("not a trusted key") ?? false)
        XCTAssertNil(refusal("\(dir)/b", [mallory.publicKey]))
    }

    /// `serve --trusted-keys`: a correctly signed adapter is served; an unsigned one and one signed
    /// by another key are refused with 403 and the reason; an adapter whose weights change after
    /// the server admitted it is refused when it is loaded.
    func testServerServesOnlyTrustedUnchangedAdapters() async throws {
        let f = try ServeTests.fixture()
        let dir = try temporaryDirectory(self)
        let shelf = "\(dir)/shelf"
        try FileManager.default.createDirectory(atPath: shelf, withIntermediateDirectories: true)
        for n in f.adapters { try FileManager.default.copyItem(atPath: "\(f.shelf)/\(n)", toPath: "\(shelf)/\(n)") }
        let alice = SigningKey(name: "alice")
        _ = try alice.save(in: "\(dir)/trusted")
        let (alpha, bravo, charlie) = (f.adapters[0], f.adapters[1], f.adapters[2])
        try AdapterSignature.sign("\(shelf)/\(alpha)", key: alice)
        try AdapterSignature.sign("\(shelf)/\(bravo)", key: alice)
        try AdapterSignature.sign("\(shelf)/\(charlie)", key: SigningKey(name: "mallory"))
        let server = try ServeTests.Server(["--model", f.base, "--shelf", shelf, "--trusted-keys", "\(dir)/trusted"])
        func ask(_ model: String) async throws -> (Int, String) {
            let (status, o) = try await request(
                server, "/v1/completions", body: json(["model": model, "prompt": "Hello", "max_tokens": 2]))
            return (status, ((o?["error"] as? [String: Any])?["message"] as? String) ?? "")
        }
        var (status, message) = try await ask(alpha)
        XCTAssertEqual(status, 200, message)
        (status, message) = try await ask(charlie)
        XCTAssertEqual(status, 403)
        XCTAssertTrue(message.contains("not a trusted key"), message)
        // Changed on disk after the server admitted it, before its first load.
        try flipByte("\(shelf)/\(bravo)/adapter_model.safetensors")
        (status, message) = try await ask(bravo)
        XCTAssertEqual(status, 403)
        XCTAssertTrue(message.contains("adapter_model.safetensors does not match"), message)
        let (_, models) = try await request(server, "/v1/models", method: "GET")
        let listed = (models?["data"] as? [[String: Any]]) ?? []
        let signed = listed.first { ($0["name"] as? String) == alpha }?["signed_by"] as? String
        XCTAssertTrue(signed?.hasPrefix("alice") ?? false, "\(listed)")
    }
}
