import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRATensor
@testable import LowRAServe
@testable import LowRATrain

#if canImport(FoundationNetworking)
import FoundationNetworking
@testable import LowRAPipeline
@testable import LowRAAdapters
#endif

/// `lowra serve` end to end on SmolLM2 quantized to 2 bits, with a shelf of random adapters whose
/// cards admit them (and a few whose cards do not).
final class ServeTests: XCTestCase {
    /// One quantized base and shelf for every test of the class (quantizing takes ~20 s).
    struct Fixture {
        let dir: String
        let base: String
        let shelf: String
        /// Adapters that serve, by name.
        let adapters: [String]
    }

    nonisolated(unsafe) static var shared: Fixture?

    override class func tearDown() {
        if let f = shared { try? FileManager.default.removeItem(atPath: f.dir) }
        shared = nil
        super.tearDown()
    }

    static func fixture() throws -> Fixture {
        if let f = shared { return f }
        try Paths.requireSmolLM2()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lowra-serve-\(UUID().uuidString)").path
        let base = "\(dir)/smollm2-2bit"
        let shelf = "\(dir)/shelf"
        try FileManager.default.createDirectory(atPath: shelf, withIntermediateDirectories: true)
        let q = try runProcess(
            Paths.lowraBinary,
            ["quantize", "--model", Paths.smolLM2, "--bits", "2", "--rank", "8", "--loftq-steps", "1", "--out", base]
                + ["--calibration", "none"])
        guard q.status == 0 else { throw LowRAError(.io, "quantize failed: \(q.err)") }
        let loaded = try LoadedModel.load(base)
        var rng = SplitMix64(seed: 11)
        func make(_ name: String, _ edit: (inout AdapterManifest, inout AdapterCard) -> Void) throws {
            try makeAdapter(name, base: base, loaded: loaded, shelf: shelf, rng: &rng, edit)
        }
        let names = ["alpha", "bravo", "charlie"]
        for n in names { try make(n) { _, _ in } }
        // A compressed copy of alpha at 4 bits, named delta4 on its card.
        let (alpha, alphaManifest) = try AdapterStore.load(
            "\(shelf)/alpha", config: loaded.config, fingerprint: try baseFingerprint(base))
        try AdapterStore.saveCompressed(
            try CompressedAdapter(alpha, bits: 4), config: loaded.config, manifest: alphaManifest, to: "\(shelf)/delta")
        var deltaCard = try AdapterCard.load("\(shelf)/alpha")
        deltaCard.name = "delta4"
        try deltaCard.save(to: "\(shelf)/delta")
        try make("retired") { _, c in c.retireAfter = "2020-01-01" }
        try make("thin") { _, c in
            c.evaluations = c.evaluations.map {
                var e = $0
                e.tokens = 100
                return e
            }
        }
        try make("other") { m, c in
            m.baseFingerprint = String(repeating: "a", count: 64)
            c.baseFingerprint = m.baseFingerprint
        }
        let f = Fixture(dir: dir, base: base, shelf: shelf, adapters: names)
        shared = f
        return f
    }

    /// A random rank-4 adapter for `base` in `shelf/name` whose card admits it (evaluations of every
    /// role over 2,048 tokens) unless `edit` makes it say otherwise.
    static func makeAdapter(
        _ name: String, base: String, loaded: LoadedModel, shelf: String, rng: inout SplitMix64,
        _ edit: (inout AdapterManifest, inout AdapterCard) -> Void = { _, _ in }
    ) throws {
        let fp = try baseFingerprint(base)
        var a = try LoRAAdapter(config: loaded.config, rank: 4, alpha: 8)
        for s in a.slots {
            let bound = 1 / Double(s.inFeatures).squareRoot()
            for i in 0..<(4 * s.inFeatures) { a.values[s.offsetA + i] = Float((2 * rng.nextUnit() - 1) * bound) }
            for i in 0..<(4 * s.outFeatures) { a.values[s.offsetB + i] = Float((2 * rng.nextUnit() - 1) * 0.2) }
        }
        var m = AdapterManifest(
            baseFingerprint: fp, base: base, quantization: QuantSummary(loaded.quantManifest!.report), rank: 4,
            alpha: 8, initialization: "random")
        var card = AdapterCard(manifest: m, dir: "\(shelf)/\(name)")
        for role in AdapterCard.Role.allCases {
            card.evaluations.append(
                AdapterCard.Evaluation(
                    role: role, dataset: .init(file: "test.txt", sha256: String(repeating: "0", count: 64), bytes: 1),
                    tokens: 2048, perplexity: 30, baseFingerprint: fp, source: "test"))
        }
        edit(&m, &card)
        try AdapterStore.save(a, config: loaded.config, manifest: m, to: "\(shelf)/\(name)")
        try card.save(to: "\(shelf)/\(name)")
    }

    /// A running `lowra serve` and the port it bound.
    final class Server: @unchecked Sendable {
        let process = Process()
        let log = Log()
        var port = 0
        var url: String { "http://127.0.0.1:\(port)" }

        final class Log: @unchecked Sendable {
            let lock = NSLock()
            var text = ""
        }

        init(_ args: [String]) throws {
            process.executableURL = URL(fileURLWithPath: Paths.lowraBinary)
            process.arguments = ["serve", "--port", "0"] + args
            let err = Pipe()
            process.standardError = err
            process.standardOutput = err
            let log = self.log
            err.fileHandleForReading.readabilityHandler = { h in
                let s = String(decoding: h.availableData, as: UTF8.self)
                log.lock.withLock { log.text += s }
            }
            try process.run()
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                let text = log.lock.withLock { log.text }
                if let r = text.range(of: "listening on http://127.0.0.1:") {
                    port = Int(text[r.upperBound...].prefix { $0.isNumber }) ?? 0
                    return
                }
                guard process.isRunning else { break }
                Thread.sleep(forTimeInterval: 0.05)
            }
            process.terminate()
            throw LowRAError(.io, "the server did not start: \(log.lock.withLock { log.text })")
        }

        deinit {
            if process.isRunning {
                process.interrupt()
                process.waitUntilExit()
            }
        }
    }

    /// 16 concurrent clients over 4 models (the base and three adapters), greedy: each client's
    /// text equals `lowra generate` with the same adapter and prompt — no request gets another
    /// adapter's output — and the adapters do change the output.
    func testConcurrentMixedAdaptersEqualGenerate() async throws {
        let f = try Self.fixture()
        let server = try Server(["--model", f.base, "--shelf", f.shelf, "--max-batch", "16"])
        let models = ["base"] + f.adapters
        let prompts = ["The king said", "Once upon a time", "To be or not", "My lord, the"]
        let n = 12
        var got = [String: String]()
        try await withThrowingTaskGroup(of: (String, String?).self) { group in
            for m in models {
                for p in prompts {
                    group.addTask {
                        let (status, o) = try await request(
                            server, "/v1/completions",
                            body: json(["model": m, "prompt": p, "max_tokens": n, "temperature": 0]))
                        XCTAssertEqual(status, 200, "\(m): \(String(describing: o))")
                        return ("\(m)|\(p)", completionText(o))
                    }
                }
            }
            for try await (key, text) in group { got[key] = text }
        }
        XCTAssertEqual(got.count, 16)
        for m in models {
            for p in prompts {
                var args = [
                    "generate", "--model", f.base, "--prompt", p, "--max-new-tokens", "\(n)", "--temperature", "0",
                ]
                if m != "base" { args += ["--adapter", "\(f.shelf)/\(m)"] }
                let g = try runProcess(Paths.lowraBinary, args)
                XCTAssertEqual(g.status, 0, g.err)
                XCTAssertEqual(got["\(m)|\(p)"], String(g.out.dropLast()), "\(m), \(p)")
            }
        }
        // The adapters matter: each model says something else for at least one prompt.
        for (i, a) in models.enumerated() {
            for b in models[(i + 1)...] {
                XCTAssertTrue(
                    prompts.contains { got["\(a)|\($0)"] != got["\(b)|\($0)"] }, "\(a) and \(b) agree everywhere")
            }
        }
        let (_, metrics) = try await rawGet(server, "/metrics")
        XCTAssertTrue(metrics.contains("lowra_generated_tokens_total"), metrics)
        XCTAssertTrue(metrics.contains("lowra_time_to_first_token_seconds"), metrics)
        // The requests were decoded together: more than 2 rows per decode step on average.
        func value(_ name: String) -> Double? {
            metrics.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap {
                Double($0.split(separator: " ")[1])
            }
        }
        let rows = try XCTUnwrap(value("lowra_decode_rows"), metrics)
        let steps = try XCTUnwrap(value("lowra_decode_steps"), metrics)
        XCTAssertGreaterThan(rows / steps, 2, "rows \(rows), steps \(steps)")
    }

    /// `--pin`: the pinned adapter is loaded at start and stays while others come and go under a
    /// cap that holds one adapter; the per-adapter metrics say so (residency, pinned, loads,
    /// evictions, requests), and /v1/models lists versions, pins and the refused adapters' reasons.
    func testPinnedAdapterStaysAndPerAdapterMetrics() async throws {
        let f = try Self.fixture()
        // One rank-4 SmolLM2 adapter is 4.9 MB: the cap holds the pinned one only.
        let server = try Server([
            "--model", f.base, "--shelf", f.shelf, "--pin", "alpha", "--max-resident-mb", "7",
        ])
        for m in ["bravo", "charlie", "bravo"] {
            let (status, o) = try await request(
                server, "/v1/completions", body: json(["model": m, "prompt": "Hello", "max_tokens": 2]))
            XCTAssertEqual(status, 200, "\(String(describing: o))")
        }
        let (_, metrics) = try await rawGet(server, "/metrics")
        func value(_ name: String, _ model: String) -> Double? {
            metrics.split(separator: "\n").first { $0.hasPrefix("\(name){model=\"\(model)\"}") }.flatMap {
                Double($0.split(separator: " ").last!)
            }
        }
        XCTAssertEqual(value("lowra_adapter_resident", "alpha@1"), 1, metrics)
        XCTAssertEqual(value("lowra_adapter_pinned", "alpha@1"), 1, metrics)
        XCTAssertEqual(value("lowra_adapter_loads_by_model_total", "alpha@1"), 1, metrics)
        XCTAssertEqual(value("lowra_adapter_evictions_by_model_total", "alpha@1"), 0, metrics)
        XCTAssertEqual(value("lowra_adapter_resident", "bravo@1"), 0, metrics)
        XCTAssertEqual(value("lowra_adapter_loads_by_model_total", "bravo@1"), 2, metrics)
        XCTAssertTrue(metrics.contains("lowra_requests_total{model=\"bravo@1\""), metrics)
        let (_, models) = try await request(server, "/v1/models", method: "GET")
        let data = (models?["data"] as? [[String: Any]]) ?? []
        let alpha = data.first { ($0["name"] as? String) == "alpha" }
        XCTAssertEqual(alpha?["pinned"] as? Bool, true)
        XCTAssertEqual(alpha?["version"] as? String, "1")
        XCTAssertEqual(alpha?["admissible"] as? Bool, true)
        let refused = (models?["refused"] as? [[String: Any]]) ?? []
        let retired = refused.first { ($0["name"] as? String) == "retired" }
        XCTAssertEqual(retired?["admissible"] as? Bool, false)
        XCTAssertTrue((retired?["reason"] as? String)?.contains("retired after") ?? false, "\(refused)")
        // Pinning an adapter the shelf lacks stops the server before it listens.
        XCTAssertThrowsError(try Server(["--model", f.base, "--shelf", f.shelf, "--pin", "nobody"]))
    }

    func rawGet(_ server: Server, _ path: String) async throws -> (Int, String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: server.url + path)!)
        return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
    }

    /// The official `openai` Python client: model list, chat and text completions, whole and
    /// streamed (the same greedy text both ways), usage, and a 404 for an unknown model.
    func testOpenAIPythonClient() async throws {
        let f = try Self.fixture()
        guard runProcessOK("/usr/bin/env", ["python3", "-c", "import openai"]) else {
            if ProcessInfo.processInfo.environment["LOWRA_REQUIRE_OPENAI"] != nil {
                XCTFail("the openai package is missing (scripts/setup.sh installs it)")
            }
            throw XCTSkip("the openai package is not installed")
        }
        let server = try Server(["--model", f.base, "--shelf", f.shelf])
        let r = try runProcess(
            "/usr/bin/env",
            [
                "python3", "\(Paths.repo)/scripts/openai_client_check.py", server.url + "/v1", "bravo", "Hello there",
                "10",
            ])
        XCTAssertEqual(r.status, 0, r.err)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], r.out)
        let listed = try XCTUnwrap(o["models"] as? [String])
        XCTAssertTrue(listed.contains("smollm2-2bit"), "\(listed)")
        for a in f.adapters { XCTAssertTrue(listed.contains("\(a)@1"), "\(listed)") }
        XCTAssertFalse(listed.contains { $0.hasPrefix("retired") || $0.hasPrefix("thin") || $0.hasPrefix("other") })
        XCTAssertEqual(o["chat"] as? String, o["chat_stream"] as? String)
        XCTAssertEqual(o["text"] as? String, o["text_stream"] as? String)
        XCTAssertFalse((o["text"] as? String ?? "").isEmpty)
        XCTAssertEqual(o["chat_usage"] as? Int, o["chat_stream_usage"] as? Int)
        XCTAssertEqual(o["missing"] as? String, "NotFoundError")
    }

    /// A full server refuses with 429 instead of queuing without bound: one decode slot and no
    /// waiting room; while a streamed request is decoding, a second one is refused, and once
    /// the first has finished the next one is served.
    func testBusyServerRefusesWith429() async throws {
        let f = try Self.fixture()
        let server = try Server(["--model", f.base, "--shelf", f.shelf, "--max-batch", "1", "--max-waiting", "0"])
        let first = Task {
            let body = json(["model": "alpha", "prompt": "Once upon a time", "max_tokens": 300])
            return try await request(server, "/v1/completions", body: body).0
        }
        // Wait until it is decoding (the engine counts it from admission on).
        var decoding = false
        for _ in 0..<200 where !decoding {
            let (_, metrics) = try await rawGet(server, "/metrics")
            decoding = metrics.split(separator: "\n").contains {
                $0 == "lowra_active_sequences 1.0" || $0 == "lowra_active_sequences 1"
            }
            if !decoding { try await Task.sleep(for: .milliseconds(10)) }
        }
        XCTAssertTrue(decoding)
        let (s, o) = try await request(
            server, "/v1/completions", body: json(["model": "bravo", "prompt": "Hi", "max_tokens": 2]))
        XCTAssertEqual(s, 429, "\(String(describing: o))")
        XCTAssertEqual((o?["error"] as? [String: Any])?["code"] as? String, "rate_limit_exceeded")
        let firstStatus = try await first.value
        XCTAssertEqual(firstStatus, 200)
        var served = false
        for _ in 0..<50 where !served {  // the slot frees once the engine has dropped the sequence
            let (s2, _) = try await request(
                server, "/v1/completions", body: json(["model": "bravo", "prompt": "Hi", "max_tokens": 2]))
            served = s2 == 200
            if !served { try await Task.sleep(for: .milliseconds(100)) }
        }
        XCTAssertTrue(served)
    }

    func runProcessOK(_ path: String, _ args: [String]) -> Bool { (try? runProcess(path, args).status) == 0 }

    /// Every refusal has its status and an OpenAI-style error body; a flood of malformed requests
    /// leaves the server answering; adapters are added and removed while it runs.
    /// A compressed adapter's fp32 expansion is one for all the requests using it at once (the
    /// same storage, so the decoder groups their rows), and goes when the last one ends; a full
    /// adapter is returned as loaded.
    func testCompressedExpansionIsSharedWhileInUse() throws {
        let f = try Self.fixture()
        let loaded = try LoadedModel.load(f.base)
        let shelf = try AdapterShelf(
            directory: f.shelf, config: loaded.config, fingerprint: try baseFingerprint(f.base), minEvalTokens: 1024,
            capBytes: 1 << 30, maxAdapterBytes: 1 << 30)
        let compressed = try shelf.entry("delta4")
        XCTAssertNotNil(compressed.compressionBits)
        func storage(_ a: LoRAAdapter) -> UInt { a.values.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) } }
        let a1 = try shelf.acquire(compressed)
        let a2 = try shelf.acquire(compressed)
        XCTAssertEqual(storage(a1), storage(a2))
        XCTAssertEqual(shelf.expandedCount, 1)
        XCTAssertEqual(shelf.expandedBytes, 4 * a1.values.count)
        shelf.release(compressed)
        XCTAssertEqual(shelf.expandedCount, 1)
        shelf.release(compressed)
        XCTAssertEqual(shelf.expandedCount, 0)
        let full = try shelf.entry("alpha")
        XCTAssertNil(full.compressionBits)
        let b1 = try shelf.acquire(full)
        XCTAssertEqual(storage(b1), storage(try shelf.acquire(full)))
        XCTAssertEqual(shelf.expandedCount, 0)
        shelf.release(full)
        shelf.release(full)
    }

    /// The cap counts compressed adapters' expansions in use: expanding one evicts idle resident
    /// adapters (least recently used first) that no longer fit beside it.
    func testExpansionsCountAgainstTheCap() throws {
        let f = try Self.fixture()
        let loaded = try LoadedModel.load(f.base)
        let fingerprint = try baseFingerprint(f.base)
        let probe = try AdapterShelf(
            directory: f.shelf, config: loaded.config, fingerprint: fingerprint, minEvalTokens: 1024,
            capBytes: 1 << 30, maxAdapterBytes: 1 << 30)
        let (full, compressed) = (try probe.entry("alpha"), try probe.entry("delta4"))
        let expansion = 4 * (try probe.acquire(compressed)).values.count
        probe.release(compressed)
        // Room for both resident, not for both and the expansion.
        let shelf = try AdapterShelf(
            directory: f.shelf, config: loaded.config, fingerprint: fingerprint, minEvalTokens: 1024,
            capBytes: full.bytes + compressed.bytes + expansion - 1, maxAdapterBytes: 1 << 30)
        _ = try shelf.acquire(full)
        shelf.release(full)
        XCTAssertEqual(shelf.residentCount, 1)
        _ = try shelf.acquire(compressed)
        XCTAssertEqual(shelf.expandedBytes, expansion)
        XCTAssertEqual(shelf.residentCount, 1, "alpha left to make room for delta4's expansion")
        XCTAssertEqual(shelf.evictions, 1)
        XCTAssertLessThanOrEqual(shelf.residentBytes + shelf.expandedBytes, shelf.capBytes)
        shelf.release(compressed)
        XCTAssertEqual(shelf.expandedBytes, 0)
    }

    func testRefusalsAndHotShelf() async throws {
        let f = try Self.fixture()
        let server = try Server(["--model", f.base, "--shelf", f.shelf, "--max-body-kb", "64"])
        func expect(_ status: Int, _ code: String, _ body: Data, path: String = "/v1/chat/completions") async throws {
            let (s, o) = try await request(server, path, body: body)
            XCTAssertEqual(s, status, "\(String(describing: o))")
            let e = o?["error"] as? [String: Any]
            XCTAssertEqual(e?["code"] as? String, code, "\(String(describing: o))")
            XCTAssertNotNil(e?["message"] as? String)
        }
        let hello: [[String: Any]] = [["role": "user", "content": "hello"]]
        try await expect(404, "model_not_found", json(["model": "nobody", "messages": hello]))
        try await expect(409, "adapter_base_mismatch", json(["model": "other", "messages": hello]))
        try await expect(410, "adapter_retired", json(["model": "retired", "messages": hello]))
        try await expect(403, "adapter_under_evaluated", json(["model": "thin", "messages": hello]))
        try await expect(400, "invalid_json", Data("{\"model\": ".utf8))
        try await expect(400, "invalid_value", json(["model": "alpha", "messages": hello, "max_tokens": 0]))
        try await expect(400, "invalid_value", json(["model": "alpha", "messages": hello, "max_tokens": 100_000]))
        try await expect(400, "invalid_value", json(["model": "alpha", "messages": "hello"]))
        try await expect(400, "invalid_value", json(["model": "alpha", "messages": hello, "temperature": "hot"]))
        let long = String(repeating: "word ", count: 9000)
        try await expect(
            400, "context_length_exceeded", json(["model": "alpha", "prompt": long]), path: "/v1/completions")
        try await expect(
            413, "body_too_large", json(["model": "alpha", "prompt": String(repeating: "x", count: 70_000)]),
            path: "/v1/completions")
        // A flood of malformed requests, then a well-formed one.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    let junk = Data((0..<(i % 50)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ i) })
                    let (s, _) = try await request(server, "/v1/chat/completions", body: junk)
                    XCTAssertEqual(s, 400)
                }
            }
            try await group.waitForAll()
        }
        let (s, o) = try await request(
            server, "/v1/completions",
            body: json(["model": "alpha", "prompt": "Hi", "max_tokens": 3, "temperature": 0]))
        XCTAssertEqual(s, 200)
        XCTAssertNotNil(completionText(o))
        // A compressed adapter is served like the others, and answers as generate does with it.
        let delta = json(["model": "delta4", "prompt": "Hi", "max_tokens": 6, "temperature": 0])
        let (s4, o4) = try await request(server, "/v1/completions", body: delta)
        XCTAssertEqual(s4, 200)
        let g = try runProcess(
            Paths.lowraBinary,
            [
                "generate", "--model", f.base, "--adapter", "\(f.shelf)/delta", "--prompt", "Hi", "--max-new-tokens",
                "6",
                "--temperature", "0",
            ])
        XCTAssertEqual(completionText(o4), String(g.out.dropLast()))
        let (_, metrics) = try await rawGet(server, "/metrics")
        XCTAssertTrue(metrics.contains("lowra_expanded_adapters 0"), metrics)  // released when it ended
        // The card, then removal and a hot add.
        let (cs, card) = try await request(server, "/v1/adapters/charlie", method: "GET")
        XCTAssertEqual(cs, 200)
        XCTAssertEqual(card?["name"] as? String, "charlie")
        let (ds, _) = try await request(server, "/v1/adapters/charlie", method: "DELETE")
        XCTAssertEqual(ds, 200)
        try await expect(404, "model_not_found", json(["model": "charlie", "messages": hello]))
        let (ps, added) = try await request(server, "/v1/adapters", body: json(["path": "\(f.shelf)/charlie"]))
        XCTAssertEqual(ps, 201, "\(String(describing: added))")
        let (s2, _) = try await request(
            server, "/v1/chat/completions", body: json(["model": "charlie@1", "messages": hello, "max_tokens": 2]))
        XCTAssertEqual(s2, 200)
        try await expect(400, "invalid_adapter", json(["path": "/etc"]), path: "/v1/adapters")
        let (hs, health) = try await request(server, "/health", method: "GET")
        XCTAssertEqual(hs, 200)
        XCTAssertEqual(health?["status"] as? String, "ok")
    }
}

/// POSTs (or GETs) `body`; returns the status and the decoded JSON (nil if not JSON).
func request(
    _ server: ServeTests.Server, _ path: String, method: String = "POST", body: Data? = nil
) async throws -> (Int, [String: Any]?) {
    var r = URLRequest(url: URL(string: server.url + path)!)
    r.httpMethod = method
    r.httpBody = body
    r.timeoutInterval = 300
    r.setValue("application/json", forHTTPHeaderField: "Content-Type")
    let (data, response) = try await URLSession.shared.data(for: r)
    return ((response as! HTTPURLResponse).statusCode, try? JSONSerialization.jsonObject(with: data) as? [String: Any])
}

func json(_ o: [String: Any]) -> Data { try! JSONSerialization.data(withJSONObject: o) }

func completionText(_ o: [String: Any]?) -> String? {
    ((o?["choices"] as? [[String: Any]])?.first?["text"] as? String)
}
