import Foundation
import LowRAModel
import LowRATensor
import LowRAPipeline
import LowRAAdapters

/// The adapters a server may serve over its base: a directory whose subdirectories are adapters,
/// each admitted by its card (same base, not retired, evaluated enough for the base's bits).
/// Adapters load on first use and stay resident, least recently used evicted first, while their
/// factors fit a byte cap. Thread-safe; a load runs outside the lock, and requests for an adapter
/// being loaded wait for that one load only. With trusted keys, an adapter must also be signed by
/// one of them with every file unchanged (`AdapterSignature`), checked when it is admitted and
/// again each time it is loaded from disk.
public final class AdapterShelf: @unchecked Sendable {
    public struct Entry: Sendable {
        public let dir: String
        public let card: AdapterCard
        /// Bytes of the adapter's factors in memory: fp32, or compressed (`lowra adapter compress`).
        public let bytes: Int
        /// 8, 4 or 2 for a compressed adapter, kept compressed while resident.
        public let compressionBits: Int?
        /// Who signed it, when the shelf checks signatures.
        public let signer: AdapterSignature.Signer?
        public var id: String { "\(card.name)@\(card.version)" }
    }

    public enum Failure: Error, CustomStringConvertible {
        case unknown(String)
        case refused(String, AdapterCard.Refusal)
        case invalid(String)
        case tooLarge(String)

        public var description: String {
            switch self {
            case .unknown(let m), .invalid(let m), .tooLarge(let m): m
            case .refused(let name, let r): "adapter \(name): \(r.message)"
            }
        }
    }

    public let directory: String?
    public let config: ModelConfig
    public let fingerprint: String
    public let minEvalTokens: Int
    /// Resident adapters' bytes at most (the least recently used leave first).
    public let capBytes: Int
    /// An adapter larger than this is refused.
    public let maxAdapterBytes: Int
    /// The keys an adapter must be signed with (nil: signatures are not checked).
    public let trustedKeys: [PublicSigningKey]?

    private let lock = NSCondition()
    private var entries = [String: Entry]()  // by name@version
    private var latest = [String: String]()  // name → id of its highest version
    private var refusals = [String: (dir: String, refusal: AdapterCard.Refusal)]()  // by name
    private var resident = [String: (adapter: Resident, lastUse: UInt64)]()
    private var expansions = [String: (adapter: LoRAAdapter, users: Int)]()  // by id, while in use

    enum Resident {
        case full(LoRAAdapter)
        case compressed(CompressedAdapter)
    }
    private var loading = Set<String>()
    private var clock: UInt64 = 0
    private var evicted = [String: Int]()  // by id
    private var loaded = [String: Int]()
    /// Adapters evicted to stay under the cap, and adapters loaded from disk, so far.
    public var evictions: Int { lock.withLock { evicted.values.reduce(0, +) } }
    public var loads: Int { lock.withLock { loaded.values.reduce(0, +) } }
    /// Names whose adapters are never evicted (`serve --pin`).
    public private(set) var pinned = Set<String>()

    /// What the server reports of one adapter (per-adapter metrics).
    public struct Usage: Sendable {
        public let id: String
        public let resident: Bool
        public let pinned: Bool
        public let loads: Int
        public let evictions: Int
    }

    /// Every admitted adapter's residency and its loads and evictions so far.
    public var usage: [Usage] {
        lock.withLock {
            entries.values.sorted { $0.id < $1.id }.map {
                Usage(
                    id: $0.id, resident: resident[$0.id] != nil, pinned: pinned.contains($0.card.name),
                    loads: loaded[$0.id] ?? 0, evictions: evicted[$0.id] ?? 0)
            }
        }
    }

    /// Keeps the adapters `names` resident from now on (every version): loaded now, never evicted.
    /// Their bytes count against the cap; pinning more than the cap holds is refused.
    public func pin(_ names: [String]) throws {
        var bytes = 0
        for name in names {
            let versions = all.filter { $0.card.name == name }
            guard !versions.isEmpty else {
                if let r = refused.first(where: { $0.name == name }) {
                    throw Failure.invalid("cannot pin \(name): refused (\(r.reason))")
                }
                throw Failure.invalid("cannot pin \(name): no such adapter on the shelf")
            }
            bytes += versions.reduce(0) { $0 + $1.bytes }
        }
        guard bytes <= capBytes else {
            throw Failure.tooLarge(
                "pinned adapters take \(bytes / 1_000_000) MB, above the resident cap of \(capBytes / 1_000_000) MB")
        }
        lock.withLock { pinned.formUnion(names) }
        for name in names {
            for e in all where e.card.name == name {
                _ = try acquire(e)
                release(e)
            }
        }
    }

    public init(
        directory: String?, config: ModelConfig, fingerprint: String, minEvalTokens: Int, capBytes: Int,
        maxAdapterBytes: Int, trustedKeys: [PublicSigningKey]? = nil
    ) throws {
        self.trustedKeys = trustedKeys
        self.directory = directory.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        self.config = config
        self.fingerprint = fingerprint
        self.minEvalTokens = minEvalTokens
        self.capBytes = capBytes
        self.maxAdapterBytes = maxAdapterBytes
        guard let dir = self.directory else { return }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw LowRAError(.io, "\(dir): the shelf is not a directory")
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: dir).sorted() where !name.hasPrefix(".") {
            let sub = (dir as NSString).appendingPathComponent(name)
            guard AdapterStore.isAdapterDirectory(sub) else { continue }
            _ = try? add(sub)  // refused or unreadable adapters are listed by `refused`, not fatal
        }
    }

    /// Admits the adapter in `path` (a directory on the shelf): its card (or one made from its
    /// manifest) must admit it over this base.
    @discardableResult
    public func add(_ path: String) throws -> Entry {
        let dir = URL(fileURLWithPath: path).standardizedFileURL.path
        if let shelf = directory {
            guard dir.hasPrefix(shelf + "/"), !dir.dropFirst(shelf.count + 1).contains("/") else {
                throw Failure.invalid("\(path): not a directory of the shelf \(shelf)")
            }
        }
        guard AdapterStore.isAdapterDirectory(dir) else { throw Failure.invalid("\(path): not a LowRA adapter") }
        guard AdapterStore.tunedBase(of: dir) == nil else {
            throw Failure.invalid("\(path): fine-tuned over its own tuned base (\(AdapterStore.tunedBaseFile))")
        }
        let card: AdapterCard
        do { card = try AdapterCard.loadOrMake(dir) } catch { throw Failure.invalid("\(error)") }
        let manifest: AdapterManifest
        do { manifest = try AdapterStore.loadManifest(dir) } catch { throw Failure.invalid("\(error)") }
        var refusal = card.admission(fingerprint: fingerprint, minTokens: minEvalTokens).first
        var signer: AdapterSignature.Signer?
        do { signer = try checkSignature(dir) } catch let r as AdapterCard.Refusal { refusal = refusal ?? r }
        if let refusal {
            lock.withLock { refusals[card.name] = (dir, refusal) }
            throw Failure.refused(card.name, refusal)
        }
        guard manifest.baseFingerprint == fingerprint, manifest.rank == card.rank else {
            throw Failure.invalid("\(path): the card does not describe the adapter's manifest (base or rank)")
        }
        var bytes: Int
        do { bytes = 4 * (try LoRAAdapter.layout(config: config, rank: manifest.rank)).parameters } catch {
            throw Failure.invalid("\(path): \(error)")
        }
        if manifest.compressionBits != nil {
            let file = (dir as NSString).appendingPathComponent(AdapterStore.compressedFile)
            bytes = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? bytes
        }
        let entry = Entry(
            dir: dir, card: card, bytes: bytes, compressionBits: manifest.compressionBits, signer: signer)
        guard entry.bytes <= maxAdapterBytes else {
            throw Failure.tooLarge(
                "adapter \(card.name): \(entry.bytes / 1_000_000) MB in memory, "
                    + "above the limit of \(maxAdapterBytes / 1_000_000) MB")
        }
        lock.withLock {
            if let old = entries[entry.id] { resident[old.id] = nil }
            entries[entry.id] = entry
            refusals[card.name] = nil
            updateLatest()
        }
        return entry
    }

    /// Removes an adapter (every version, or `name@version`) from the shelf's table and memory;
    /// requests already running keep their copy.
    public func remove(_ name: String) throws {
        try lock.withLock {
            let ids = entries.keys.filter { $0 == name || $0.hasPrefix(name + "@") }
            guard !ids.isEmpty else { throw Failure.unknown("no adapter \(name) on the shelf") }
            for id in ids {
                entries[id] = nil
                resident[id] = nil
            }
            updateLatest()
        }
    }

    /// What a bare name resolves to: each name's highest promoted version (a first version counts
    /// as promoted; a later one after `lowra card promote`). Called with the lock held.
    private func updateLatest() {
        latest = [:]
        for e in entries.values where e.card.isPromoted {
            if let cur = latest[e.card.name], let c = entries[cur],
                c.card.version.compare(e.card.version, options: .numeric) != .orderedAscending
            {
                continue
            }
            latest[e.card.name] = e.id
        }
    }

    public var all: [Entry] { lock.withLock { entries.values.sorted { $0.id < $1.id } } }
    public var refused: [(name: String, dir: String, reason: String)] {
        lock.withLock { refusals.map { ($0.key, $0.value.dir, $0.value.refusal.message) }.sorted { $0.name < $1.name } }
    }
    public var residentCount: Int { lock.withLock { resident.count } }
    public var residentBytes: Int { lock.withLock { residentBytesLocked } }
    private var residentBytesLocked: Int { resident.keys.reduce(0) { $0 + (entries[$1]?.bytes ?? 0) } }

    /// The entry `name` or `name@version` names (a bare name: its highest version).
    public func entry(_ name: String) throws -> Entry {
        try lock.withLock {
            if let id = name.contains("@") ? name : latest[name], let e = entries[id] { return e }
            let bare = String(name.split(separator: "@").first ?? "")
            if let r = refusals[bare] { throw Failure.refused(bare, r.refusal) }
            if !name.contains("@"), let v = entries.values.first(where: { $0.card.name == name }) {
                throw Failure.unknown("\(name) has no promoted version yet (lowra card promote); ask for \(v.id)")
            }
            throw Failure.unknown("the model \(name) does not exist on this server")
        }
    }

    /// The adapter's factors, loaded on first use; others leave, least recently used first, to
    /// keep the resident bytes under the cap. A compressed adapter stays compressed while
    /// resident; its fp32 expansion exists while requests use it, one shared by all of them (the
    /// same storage, so a decode step multiplies their rows together), and is dropped when the
    /// last one ends. Pair every call with `release`.
    public func acquire(_ e: Entry) throws -> LoRAAdapter {
        let c: CompressedAdapter
        switch try residentAdapter(e) {
        case .full(let a): return a
        case .compressed(let compressed): c = compressed
        }
        if let a = join(e.id) { return a }
        // Expanded outside the lock; another request may have expanded it meanwhile (then its own).
        return join(e.id, installing: try c.expanded(config: config))!
    }

    /// One more user of `id`'s expansion, `fresh` becoming it when there is none (resident
    /// adapters leave, least recently used first, to keep it under the cap); nil if neither.
    private func join(_ id: String, installing fresh: LoRAAdapter? = nil) -> LoRAAdapter? {
        lock.withLock {
            if expansions[id] == nil, let fresh { makeRoom(4 * fresh.values.count, keeping: id) }
            guard var x = expansions[id] ?? fresh.map({ ($0, 0) }) else { return nil }
            x.users += 1
            expansions[id] = x
            return x.adapter
        }
    }

    /// Ends one `acquire` of `e`: a compressed adapter's expansion goes when no request uses it.
    public func release(_ e: Entry) {
        lock.withLock {
            guard var x = expansions[e.id] else { return }
            x.users -= 1
            expansions[e.id] = x.users > 0 ? x : nil
        }
    }

    /// Compressed adapters expanded for running requests, and their fp32 bytes.
    public var expandedCount: Int { lock.withLock { expansions.count } }
    public var expandedBytes: Int { lock.withLock { expandedBytesLocked } }
    private var expandedBytesLocked: Int { expansions.values.reduce(0) { $0 + 4 * $1.adapter.values.count } }

    private func residentAdapter(_ e: Entry) throws -> Resident {
        lock.lock()
        while loading.contains(e.id) { lock.wait() }
        clock += 1
        if var r = resident[e.id] {
            r.lastUse = clock
            resident[e.id] = r
            lock.unlock()
            return r.adapter
        }
        loading.insert(e.id)
        lock.unlock()
        let result = Result { () throws -> Resident in
            do { _ = try checkSignature(e.dir) } catch let r as AdapterCard.Refusal {
                throw Failure.refused(e.card.name, r)
            }
            if e.compressionBits != nil {
                return .compressed(try AdapterStore.loadCompressed(e.dir, config: config, fingerprint: fingerprint).0)
            }
            return .full(try AdapterStore.load(e.dir, config: config, fingerprint: fingerprint).0)
        }
        lock.lock()
        defer {
            loading.remove(e.id)
            lock.broadcast()
            lock.unlock()
        }
        let adapter = try result.get()
        loaded[e.id, default: 0] += 1
        guard entries[e.id] != nil else { return adapter }  // removed meanwhile: serve this request only
        makeRoom(e.bytes, keeping: e.id)
        // Kept when it fits beside what is left (pinned adapters and expansions in use may not leave).
        if residentBytesLocked + expandedBytesLocked + e.bytes <= capBytes { resident[e.id] = (adapter, clock) }
        return adapter
    }

    /// The signer of the adapter in `dir` when the shelf checks signatures (nil when it does not);
    /// an `untrusted` refusal naming what does not hold otherwise.
    private func checkSignature(_ dir: String) throws -> AdapterSignature.Signer? {
        guard let trustedKeys else { return nil }
        do { return try AdapterSignature.verify(dir, trusted: trustedKeys) } catch let f as AdapterSignature.Failure {
            throw AdapterCard.Refusal(kind: .untrusted, message: "\(dir): \(f.message)")
        }
    }

    private func isPinned(_ id: String) -> Bool { entries[id].map { pinned.contains($0.card.name) } ?? false }

    /// Evicts resident adapters, least recently used first and never `id` or a pinned one, until `extra` more
    /// bytes fit under the cap beside the resident ones and the expansions in use (which stay
    /// until their requests end). Called with the lock held.
    private func makeRoom(_ extra: Int, keeping id: String) {
        var used = residentBytesLocked + expandedBytesLocked
        while used + extra > capBytes,
            let victim = resident.filter({ $0.key != id && !isPinned($0.key) }).min(by: {
                $0.value.lastUse < $1.value.lastUse
            })
        {
            resident[victim.key] = nil
            used -= entries[victim.key]?.bytes ?? 0
            evicted[victim.key, default: 0] += 1
        }
    }
}
