import Foundation
import Hummingbird
import Logging
import LowRAAPI
import LowRAModel
import LowRATensor
import NIOCore
import Prometheus
import LowRAPipeline
import LowRAAdapters

/// What `lowra serve` is told.
public struct ServeOptions: Sendable {
    public var host = "127.0.0.1"
    /// 0: any free port (the bound one is reported through `onListening`).
    public var port = 8080
    public var maxBatch = 16
    public var maxBodyBytes = 1 << 20
    /// max_tokens when a request gives none (cut to the context left).
    public var defaultMaxTokens = 256
    /// Requests waiting for a decode slot at most; more are refused with 429 instead of queuing
    /// without bound.
    public var maxWaiting = 64
    /// The name the bare base answers to (besides "base").
    public var baseName = "base"

    public init() {}
}

/// An OpenAI-compatible server over one base and its shelf of adapters (Hummingbird 2): chat and
/// text completions (streamed as server-sent events or whole), the model list, the adapters'
/// cards, adapters added and removed while running, health and Prometheus metrics.
public final class InferenceServer: Sendable {
    public let loaded: LoadedModel
    public let shelf: AdapterShelf
    public let engine: GenerationEngine
    public let options: ServeOptions
    /// What a request for the base runs with: the quantized model's initial adapter, as `lowra
    /// generate` does by default (nil: none).
    public let baseAdapter: LoRAAdapter?
    let registry = PrometheusCollectorRegistry()
    let logger: Logger
    let counted = Counted()
    let stats = AdapterStats()

    /// Counters read from the shelf at each scrape (turned into Prometheus counter increments).
    final class Counted: @unchecked Sendable {
        let lock = NSLock()
        var evictions = 0
        var loads = 0
        var byAdapter = [String: (loads: Int, evictions: Int)]()
    }

    public init(
        loaded: LoadedModel, shelf: AdapterShelf, options: ServeOptions, baseAdapter: LoRAAdapter?, logger: Logger
    ) {
        self.loaded = loaded
        self.baseAdapter = baseAdapter
        self.shelf = shelf
        self.options = options
        self.logger = logger
        engine = GenerationEngine(model: loaded.model, maxBatch: options.maxBatch, eos: loaded.tokenizer.eosTokenId)
    }

    /// Serves until the task is cancelled or the process gets SIGINT/SIGTERM.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let app = Application(
            router: router(),
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "lowra"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        defer { engine.shutdown() }
        try await app.runService()
    }

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/health") { _, _ in self.json(["status": "ok"]) }
        router.get("/") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: Self.shelfPage)))
        }
        router.get("/v1/shelf") { _, _ in try await self.handle { self.json(try self.shelfState()) } }
        router.get("/metrics") { _, _ in self.metricsResponse() }
        router.get("/v1/models") { _, _ in self.json(self.modelList()) }
        router.get("/v1/adapters/:name") { _, context in
            try await self.handle {
                let name = context.parameters.get("name") ?? ""
                let e = try self.lookup(name)
                guard let e else { throw APIError(404, "the base has no card", code: "model_not_found") }
                return try self.cardResponse(e.card)
            }
        }
        router.post("/v1/adapters") { request, context in
            try await self.handle {
                let body = try await self.body(request)
                guard case .object(let o) = try? JSONDecoder().decode(JSONValue.self, from: body),
                    case .string(let path) = o["path"]
                else { throw APIError(400, "expected {\"path\": \"DIR\"}", param: "path", code: "invalid_value") }
                let e = try self.shelfCall { try self.shelf.add(path) }
                self.logger.info("adapter added", metadata: ["adapter": "\(e.id)", "dir": "\(e.dir)"])
                return try self.cardResponse(e.card, status: .created)
            }
        }
        router.delete("/v1/adapters/:name") { _, context in
            try await self.handle {
                let name = context.parameters.get("name") ?? ""
                try self.shelfCall { try self.shelf.remove(name) }
                self.logger.info("adapter removed", metadata: ["adapter": "\(name)"])
                return self.json(["id": name, "object": "adapter", "deleted": true])
            }
        }
        router.post("/v1/chat/completions") { request, _ in
            try await self.handle { try await self.complete(request, kind: .chat) }
        }
        router.post("/v1/completions") { request, _ in
            try await self.handle { try await self.complete(request, kind: .text) }
        }
        return router
    }

    // MARK: Requests

    func body(_ request: Request) async throws -> Data {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > options.maxBodyBytes {
            throw APIError(413, "the request body is larger than \(options.maxBodyBytes) bytes", code: "body_too_large")
        }
        var request = request
        do {
            let buffer = try await request.collectBody(upTo: options.maxBodyBytes)
            return Data(buffer.readableBytesView)
        } catch is NIOTooManyBytesError {
            throw APIError(413, "the request body is larger than \(options.maxBodyBytes) bytes", code: "body_too_large")
        }
    }

    /// The adapter a request's `model` names; nil for the base.
    func lookup(_ model: String) throws -> AdapterShelf.Entry? {
        if model == "base" || model == options.baseName { return nil }
        return try shelfCall { try shelf.entry(model) }
    }

    /// Shelf failures as API errors: unknown 404, another base 409, retired 410, evaluated too
    /// little or not signed by a trusted key 403, too large 413, invalid 400.
    func shelfCall<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let f as AdapterShelf.Failure {
            switch f {
            case .unknown(let m): throw APIError(404, m, code: "model_not_found")
            case .invalid(let m): throw APIError(400, m, code: "invalid_adapter")
            case .tooLarge(let m): throw APIError(413, m, code: "adapter_too_large")
            case .refused(_, let r):
                switch r.kind {
                case .otherBase: throw APIError(409, f.description, code: "adapter_base_mismatch")
                case .retired: throw APIError(410, f.description, code: "adapter_retired")
                case .underEvaluated: throw APIError(403, f.description, code: "adapter_under_evaluated")
                case .untrusted: throw APIError(403, f.description, code: "adapter_untrusted")
                }
            }
        }
    }

    func complete(_ request: Request, kind: CompletionRequest.Kind) async throws -> Response {
        let started = ContinuousClock.now
        let req = try CompletionRequest(json: try await body(request), kind: kind)
        let entry = try lookup(req.model)
        let label = entry?.id ?? options.baseName
        let tok = loaded.tokenizer
        let text: String
        switch kind {
        case .chat:
            guard let template = tok.chatTemplate else {
                throw APIError(400, "the base has no chat template; use /v1/completions", code: "no_chat_template")
            }
            do { text = try template.render(req.messages) } catch {
                throw APIError(400, "the messages do not fit the chat template: \(error)", param: "messages")
            }
        case .text:
            text = req.prompt
        }
        let prompt = tok.encode(text)
        let context = loaded.config.maxPositions
        guard !prompt.isEmpty else {
            throw APIError.invalid("the prompt is empty", param: kind == .chat ? "messages" : "prompt")
        }
        guard prompt.count < context else {
            throw APIError(
                400, "the prompt has \(prompt.count) tokens; the model's context is \(context)",
                param: kind == .chat ? "messages" : "prompt", code: "context_length_exceeded")
        }
        let room = context - prompt.count
        let maxTokens = req.maxTokens ?? min(options.defaultMaxTokens, room)
        guard maxTokens >= 1, maxTokens <= room else {
            throw APIError(
                400, "max_tokens must be in 1...\(room) for this prompt (context \(context), prompt \(prompt.count))",
                param: "max_tokens", code: "invalid_value")
        }
        let load = engine.snapshot
        guard load.active + load.waiting < options.maxBatch + options.maxWaiting else {
            throw APIError(
                429, "the server is busy (\(load.active) sequences decoding, \(load.waiting) waiting); retry later",
                type: "rate_limit_error", code: "rate_limit_exceeded")
        }
        // Loading an adapter blocks on disk: off the event loop, and only this request waits.
        let adapter = try await entry.asyncMap { e in
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<LoRAAdapter, any Error>) in
                DispatchQueue.global().async {
                    c.resume(with: Result { try self.shelfCall { try self.shelf.acquire(e) } })
                }
            }
        }
        var job = GenerationEngine.Job(
            prompt: prompt, maxTokens: maxTokens, sampling: req.sampling, adapter: entry == nil ? baseAdapter : adapter,
            label: label)
        if let entry { job.onFinish = { [shelf] in shelf.release(entry) } }
        let events = engine.submit(job)
        let id =
            (kind == .chat ? "chatcmpl-" : "cmpl-")
            + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let created = Int(Date().timeIntervalSince1970)
        registry.makeCounter(
            descriptor: metric("requests", "total", "Completion requests accepted"),
            labels: [("model", label), ("stream", "\(req.stream)")]
        )
        .increment()
        let reply = Reply(
            server: self, kind: kind, id: id, created: created, model: req.model, label: label,
            promptTokens: prompt.count, started: started)
        if req.stream { return reply.streaming(events, stops: req.stop, includeUsage: req.includeUsage) }
        return try await reply.whole(events, stops: req.stop)
    }

    // MARK: Responses

    func metric(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "lowra", metricName: name, unitName: unit, helpText: help)
    }

    func json(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    func cardResponse(_ card: AdapterCard, status: HTTPResponse.Status = .ok) throws -> Response {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: try enc.encode(card))))
    }

    static func errorResponse(_ e: APIError) -> Response {
        Response(
            status: HTTPResponse.Status(code: e.status), headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: e.body)))
    }

    /// Runs a route; an `APIError` becomes its status and error body (logged and counted as a
    /// refusal), anything else a 500.
    func handle(_ body: () async throws -> Response) async throws -> Response {
        do { return try await body() } catch let e as APIError {
            logger.info("refused", metadata: ["status": "\(e.status)", "reason": "\(e.message)"])
            registry.makeCounter(
                descriptor: metric("refusals", "total", "Requests refused, by status"),
                labels: [("status", "\(e.status)")]
            ).increment()
            return Self.errorResponse(e)
        } catch {
            return Self.errorResponse(APIError(500, "\(error)"))
        }
    }

    func modelList() -> [String: Any] {
        let q = loaded.quantManifest?.report
        var data: [[String: Any]] = [
            [
                "id": options.baseName, "object": "model", "created": 0, "owned_by": "lowra",
                "base": loaded.path, "code_bits": q?.codeBitsPerParam ?? NSNull(),
            ]
        ]
        for e in shelf.all {
            let c = e.card
            data.append([
                "id": e.id, "object": "model",
                "created": Int(ISO8601DateFormatter().date(from: c.created)?.timeIntervalSince1970 ?? 0),
                "owned_by": c.owner, "name": c.name, "version": c.version, "task": c.task,
                "rank": c.rank, "retire_after": c.retireAfter ?? NSNull(), "evaluations": c.evaluations.count,
                "bytes": e.bytes, "signed_by": e.signer.map { "\($0.name) (\($0.keyID))" } ?? NSNull(),
                "admissible": true, "pinned": shelf.pinned.contains(c.name),
            ])
        }
        // Adapters on the shelf that are not served, and why (beside `data`, which clients read).
        let refused: [[String: Any]] = shelf.refused.map {
            ["name": $0.name, "admissible": false, "reason": $0.reason, "path": $0.dir]
        }
        return ["object": "list", "data": data, "refused": refused]
    }

    func metricsResponse() -> Response {
        let s = engine.snapshot
        registry.makeGauge(descriptor: metric("resident_adapters", "", "Adapters in memory")).set(
            Double(shelf.residentCount))
        registry.makeGauge(descriptor: metric("resident_adapter", "bytes", "Bytes of adapters in memory")).set(
            Double(shelf.residentBytes))
        registry.makeGauge(
            descriptor: metric("expanded_adapters", "", "Compressed adapters expanded for running requests")
        ).set(Double(shelf.expandedCount))
        registry.makeGauge(descriptor: metric("active_sequences", "", "Sequences being decoded")).set(Double(s.active))
        registry.makeGauge(descriptor: metric("waiting_requests", "", "Requests waiting for a decode slot")).set(
            Double(s.waiting))
        registry.makeGauge(descriptor: metric("decode_steps", "", "Decode steps run")).set(Double(s.steps))
        registry.makeGauge(
            descriptor: metric("decode_rows", "", "Sequence rows decoded (rows / steps: the mean batch)")
        ).set(Double(s.rows))
        for u in shelf.usage {
            let labels = [("model", u.id)]
            registry.makeGauge(
                descriptor: metric("adapter_resident", "", "1 while the adapter is in memory"), labels: labels
            ).set(Double(u.resident ? 1 : 0))
            registry.makeGauge(descriptor: metric("adapter_pinned", "", "1 for a pinned adapter"), labels: labels)
                .set(Double(u.pinned ? 1 : 0))
            counted.lock.withLock {
                let last = counted.byAdapter[u.id] ?? (0, 0)
                registry.makeCounter(
                    descriptor: metric("adapter_loads_by_model", "total", "Loads from disk, per adapter"),
                    labels: labels
                ).increment(by: Int64(u.loads - last.loads))
                registry.makeCounter(
                    descriptor: metric("adapter_evictions_by_model", "total", "Evictions, per adapter"), labels: labels
                ).increment(by: Int64(u.evictions - last.evictions))
                counted.byAdapter[u.id] = (u.loads, u.evictions)
            }
        }
        counted.lock.withLock {
            let (ev, ld) = (shelf.evictions, shelf.loads)
            registry.makeCounter(
                descriptor: metric("adapter_evictions", "total", "Adapters evicted to stay under the cap")
            ).increment(by: Int64(ev - counted.evictions))
            registry.makeCounter(descriptor: metric("adapter_loads", "total", "Adapters loaded from disk")).increment(
                by: Int64(ld - counted.loads))
            (counted.evictions, counted.loads) = (ev, ld)
        }
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
    }
}

/// One completion's answer: whole, or as server-sent events in OpenAI's chunk format.
struct Reply: Sendable {
    let server: InferenceServer
    let kind: CompletionRequest.Kind
    let id: String
    let created: Int
    let model: String
    let label: String
    let promptTokens: Int
    let started: ContinuousClock.Instant

    static let latencyBuckets: [Duration] = [
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    func finishReason(_ r: GenerationEngine.FinishReason, stopped: Bool) -> String {
        stopped || r == .stop ? "stop" : "length"
    }

    func usage(_ completion: Int) -> [String: Any] {
        ["prompt_tokens": promptTokens, "completion_tokens": completion, "total_tokens": promptTokens + completion]
    }

    func record(tokens: Int, firstToken: ContinuousClock.Instant?) {
        let r = server.registry
        let metric = server.metric
        r.makeCounter(descriptor: metric("generated_tokens", "total", "Tokens generated"), labels: [("model", label)])
            .increment(by: Int64(tokens))
        r.makeDurationHistogram(
            descriptor: metric("request", "seconds", "Time from request to last token"), labels: [("model", label)],
            buckets: Self.latencyBuckets
        )
        .record(ContinuousClock.now - started)
        let elapsed = ContinuousClock.now - started
        server.stats.record(
            label, tokens: tokens,
            seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        if let f = firstToken {
            r.makeDurationHistogram(
                descriptor: metric("time_to_first_token", "seconds", "Time from request to first token"),
                labels: [("model", label)], buckets: Self.latencyBuckets
            ).record(f - started)
        }
        server.logger.info(
            "completed", metadata: ["model": "\(label)", "prompt_tokens": "\(promptTokens)", "tokens": "\(tokens)"])
    }

    /// What a generation gave: the final text, its token count and finish reason, or the
    /// engine's failure.
    struct Outcome {
        var text = ""
        var tokens = 0
        var finish = "length"
        var failure: String?
    }

    /// Reads the engine's events to the end, handing each piece of text to `onText` as it becomes
    /// final (stop sequences cut it), and records the request's metrics.
    func consume(
        _ events: AsyncStream<GenerationEngine.Event>, stops: [String], onText: (String) async throws -> Void
    ) async throws -> Outcome {
        var streamer = TextStreamer(tokenizer: server.loaded.tokenizer, stops: stops)
        var out = Outcome()
        var first: ContinuousClock.Instant?
        var reason = GenerationEngine.FinishReason.length
        loop: for await e in events {
            switch e {
            case .token(let t):
                if first == nil { first = .now }
                out.tokens += 1
                let piece = streamer.add(t)
                if !piece.isEmpty { try await onText(piece) }
                if streamer.stopped { break loop }
            case .finished(let r):
                reason = r
            case .failed(let m):
                out.failure = m
                return out
            }
        }
        let rest = streamer.finish()
        if !rest.isEmpty { try await onText(rest) }
        record(tokens: out.tokens, firstToken: first)
        out.text = streamer.text
        out.finish = finishReason(reason, stopped: streamer.stopped)
        return out
    }

    func whole(_ events: AsyncStream<GenerationEngine.Event>, stops: [String]) async throws -> Response {
        let out = try await consume(events, stops: stops) { _ in }
        if let m = out.failure { throw APIError(500, m) }
        let (finish, count) = (out.finish, out.tokens)
        let choice: [String: Any] =
            kind == .chat
            ? [
                "index": 0, "message": ["role": "assistant", "content": out.text], "finish_reason": finish,
                "logprobs": NSNull(),
            ]
            : ["index": 0, "text": out.text, "finish_reason": finish, "logprobs": NSNull()]
        return server.json([
            "id": id, "object": kind == .chat ? "chat.completion" : "text_completion", "created": created,
            "model": model, "choices": [choice], "usage": usage(count),
        ])
    }

    func chunk(_ text: String?, finish: String?, role: Bool = false) -> ByteBuffer {
        var choice: [String: Any] = ["index": 0, "finish_reason": finish ?? NSNull()]
        if kind == .chat {
            var delta: [String: Any] = [:]
            if role { delta["role"] = "assistant" }
            if let text { delta["content"] = text }
            choice["delta"] = delta
        } else {
            choice["text"] = text ?? ""
        }
        return event([
            "id": id, "object": kind == .chat ? "chat.completion.chunk" : "text_completion", "created": created,
            "model": model, "choices": [choice],
        ])
    }

    func event(_ object: [String: Any]) -> ByteBuffer {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return ByteBuffer(string: "data: " + String(decoding: data, as: UTF8.self) + "\n\n")
    }

    func streaming(_ events: AsyncStream<GenerationEngine.Event>, stops: [String], includeUsage: Bool) -> Response {
        let body = ResponseBody { writer in
            if kind == .chat { try await writer.write(chunk(nil, finish: nil, role: true)) }
            let out = try await consume(events, stops: stops) { try await writer.write(chunk($0, finish: nil)) }
            if let m = out.failure {
                try await writer.write(event(["error": ["message": m, "type": "server_error"]]))
                try await writer.finish(nil)
                return
            }
            try await writer.write(chunk(nil, finish: out.finish))
            if includeUsage {
                try await writer.write(
                    event([
                        "id": id, "object": kind == .chat ? "chat.completion.chunk" : "text_completion",
                        "created": created, "model": model, "choices": [] as [Any], "usage": usage(out.tokens),
                    ]))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}

extension Optional {
    func asyncMap<U>(_ f: (Wrapped) async throws -> U) async rethrows -> U? {
        guard let v = self else { return nil }
        return try await f(v)
    }
}
