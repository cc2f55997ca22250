import Foundation
import LowRAModel
import LowRATensor

/// Continuous batching over one base model: one thread owns the model; requests join between
/// decode steps (each prompt prefilled alone), every step decodes all active sequences together
/// — whatever their adapters — through `BatchDecoder`, and finished ones leave. A request's
/// tokens equal `LanguageModel.generate` with the same prompt, adapter and sampling options: the
/// same prefill, the same per-request sampler, and batch-invariant decode steps.
public final class GenerationEngine: @unchecked Sendable {
    /// What a request asks the engine for.
    public struct Job: Sendable {
        public var prompt: [Int]
        public var maxTokens: Int
        public var sampling: SamplingOptions
        public var adapter: LoRAAdapter?
        /// A label for metrics and logs (the adapter's name or the base's).
        public var label: String
        /// Called once when the request ends, however it ends (the shelf's `release`).
        public var onFinish: (@Sendable () -> Void)?

        public init(prompt: [Int], maxTokens: Int, sampling: SamplingOptions, adapter: LoRAAdapter?, label: String) {
            self.prompt = prompt
            self.maxTokens = maxTokens
            self.sampling = sampling
            self.adapter = adapter
            self.label = label
        }
    }

    public enum FinishReason: String, Sendable {
        /// The model's end-of-sequence token.
        case stop
        /// max_tokens reached, or the context is full.
        case length
        /// The client went away or asked to stop (a stop sequence).
        case cancelled
    }

    public enum Event: Sendable {
        case token(Int)
        case finished(FinishReason)
        case failed(String)
    }

    /// Steps taken, rows decoded (their mean is the batch size), sequences admitted.
    public struct Stats: Sendable {
        public var steps = 0
        public var rows = 0
        public var admitted = 0
        public var active = 0
        public var waiting = 0
    }

    final class Running {
        let job: Job
        let cancelled: Flag
        let emit: (Event) -> Void
        let cache: KVCache
        var sampler: Sampler
        var produced = 0
        var next = 0

        init(job: Job, cancelled: Flag, emit: @escaping (Event) -> Void, cache: KVCache) {
            self.job = job
            self.cancelled = cancelled
            self.emit = emit
            self.cache = cache
            sampler = Sampler(job.sampling)
        }
    }

    /// A flag set from any thread (a client's disconnect) and read by the engine.
    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set() { lock.withLock { value = true } }
        var isSet: Bool { lock.withLock { value } }
    }

    public let model: LanguageModel
    public let maxBatch: Int
    public let eos: Int?
    private let decoder: BatchDecoder
    private let condition = NSCondition()
    private var pending = [Running]()
    private var stopping = false
    private var stats = Stats()
    private var thread: Thread?

    public init(model: LanguageModel, maxBatch: Int, eos: Int?) {
        precondition(maxBatch >= 1)
        self.model = model
        self.maxBatch = maxBatch
        self.eos = eos
        decoder = BatchDecoder(model: model, maxRows: maxBatch)
        let t = Thread { [unowned self] in self.loop() }
        t.name = "lowra-engine"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    public var snapshot: Stats { condition.withLock { stats } }

    /// Queues a request; its tokens arrive on the stream, which ends after `.finished` or
    /// `.failed`. Ending the stream early (the client left) cancels the request.
    public func submit(_ job: Job) -> AsyncStream<Event> {
        AsyncStream { continuation in
            let flag = Flag()
            continuation.onTermination = { _ in flag.set() }
            let capacity = min(model.config.maxPositions, job.prompt.count + job.maxTokens)
            let ended = Flag()
            let seq = Running(
                job: job, cancelled: flag,
                emit: { event in
                    continuation.yield(event)
                    switch event {
                    case .token: break
                    case .finished, .failed:
                        guard !ended.isSet else { return }
                        ended.set()
                        continuation.finish()
                        job.onFinish?()
                    }
                }, cache: KVCache(config: model.config, capacity: capacity))
            condition.withLock {
                if stopping {
                    seq.emit(.failed("the server is shutting down"))
                    return
                }
                pending.append(seq)
                stats.waiting = pending.count
                condition.signal()
            }
        }
    }

    /// Stops the engine thread; queued and running requests fail.
    public func shutdown() {
        condition.withLock {
            stopping = true
            condition.signal()
        }
    }

    private func loop() {
        var active = [Running]()
        while true {
            var admit = [Running]()
            condition.lock()
            while pending.isEmpty && active.isEmpty && !stopping { condition.wait() }
            if stopping {
                let all = pending + active
                pending.removeAll()
                condition.unlock()
                for s in all { s.emit(.failed("the server is shutting down")) }
                return
            }
            let room = maxBatch - active.count
            if room > 0 && !pending.isEmpty {
                admit = Array(pending.prefix(room))
                pending.removeFirst(admit.count)
            }
            stats.waiting = pending.count
            stats.active = active.count + admit.count  // those being prefilled count as active
            condition.unlock()

            for s in admit {
                // The prompt alone, exactly as `generate` prefills it.
                do {
                    let logits = try model.forward(s.job.prompt, cache: s.cache, logits: .last, adapter: s.job.adapter)
                    if sampleNext(s, logits[...]) { active.append(s) }
                } catch {
                    s.emit(.failed("\(error)"))
                }
            }
            active.removeAll { s in
                if s.cancelled.isSet { s.emit(.finished(.cancelled)) }
                return s.cancelled.isSet
            }
            condition.withLock {
                stats.admitted += admit.count
                stats.active = active.count
            }
            guard !active.isEmpty else { continue }
            do {
                let rows = active.map { DecodeRow(token: $0.next, cache: $0.cache, adapter: $0.job.adapter) }
                let logits = try decoder.step(rows)
                let v = model.config.vocabSize
                var keep = [Running]()
                for (i, s) in active.enumerated() where sampleNext(s, logits[(i * v)..<((i + 1) * v)]) {
                    keep.append(s)
                }
                active = keep
                condition.withLock {
                    stats.steps += 1
                    stats.rows += rows.count
                    stats.active = active.count
                }
            } catch {
                for s in active { s.emit(.failed("\(error)")) }
                active.removeAll()
            }
        }
    }

    /// Samples a sequence's next token and emits it; false when the sequence is finished (as
    /// `generate` stops: at the end-of-sequence token, after max tokens, or with a full cache).
    private func sampleNext(_ s: Running, _ logits: ArraySlice<Float>) -> Bool {
        let next = s.sampler.sample(logits)
        if next == eos {
            s.emit(.finished(.stop))
            return false
        }
        s.emit(.token(next))
        s.produced += 1
        s.next = next
        if s.cancelled.isSet {
            s.emit(.finished(.cancelled))
            return false
        }
        if s.produced >= s.job.maxTokens || s.cache.length >= s.cache.capacity {
            s.emit(.finished(.length))
            return false
        }
        return true
    }
}
