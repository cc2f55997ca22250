import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRAPipeline

/// An adapter's papers (`adapter_card.json` beside its PEFT files): who made it for what, the
/// base it belongs to, what it was trained on, and the evaluations it passed. `finetune` writes
/// one, `lowra card set` edits it, `lowra eval --record` appends evaluations, and the server
/// admits an adapter only by what its card says (`admission`).
public struct AdapterCard: Codable, Sendable, Equatable {
    public var format = "lowra-card-v1"
    /// The name clients ask for (default: the adapter's directory name).
    public var name: String
    public var version: String
    public var task: String
    public var owner: String
    /// ISO 8601 date and time the card was made.
    public var created: String
    /// The last day (YYYY-MM-DD) the adapter may be served; nil: no end.
    public var retireAfter: String?
    public var trainingData: DataRecord?
    public var baseFingerprint: String
    public var base: String
    public var quantization: QuantSummary?
    public var rank: Int
    public var alpha: Float
    public var evaluations: [Evaluation] = []
    /// For an imported adapter: the PEFT directory, its weights' SHA-256 and its configuration.
    public var importedFrom: PEFTImport.Source?
    /// For a version trained from an earlier one (`finetune --from`): that version.
    public var parent: Parent?
    /// Set by `lowra card promote` once this version kept its parent's task evaluations.
    public var promotion: Promotion?

    public struct Parent: Codable, Sendable, Equatable {
        public var name: String
        public var version: String
        public var dir: String
        /// SHA-256 of the parent's adapter_model.safetensors when the child was trained.
        public var weightsSHA256: String

        public init(name: String, version: String, dir: String, weightsSHA256: String) {
            (self.name, self.version, self.dir, self.weightsSHA256) = (name, version, dir, weightsSHA256)
        }

        enum CodingKeys: String, CodingKey {
            case name, version, dir
            case weightsSHA256 = "weights_sha256"
        }
    }

    /// The check a promotion passed: each of the parent's task evaluations run on this version.
    public struct Promotion: Codable, Sendable, Equatable {
        public var date: String
        /// The largest rise of a task perplexity allowed, as a fraction (0.05: 5%).
        public var maxRegression: Double
        public var checks: [Check]

        public struct Check: Codable, Sendable, Equatable {
            public var dataset: DataRecord
            public var tokens: Int
            public var parentPerplexity: Double
            public var perplexity: Double

            public init(dataset: DataRecord, tokens: Int, parentPerplexity: Double, perplexity: Double) {
                (self.dataset, self.tokens, self.parentPerplexity, self.perplexity) =
                    (dataset, tokens, parentPerplexity, perplexity)
            }

            enum CodingKeys: String, CodingKey {
                case dataset, tokens, perplexity
                case parentPerplexity = "parent_perplexity"
            }
        }

        public init(date: String, maxRegression: Double, checks: [Check]) {
            (self.date, self.maxRegression, self.checks) = (date, maxRegression, checks)
        }

        enum CodingKeys: String, CodingKey {
            case date, checks
            case maxRegression = "max_regression"
        }
    }

    /// Whether a bare name may resolve to this version: a first version (no parent), or a later
    /// one that `card promote` passed.
    public var isPromoted: Bool { parent == nil || promotion != nil }

    /// The version after `v`: its leading number plus one ("3" → "4", "2.1" → "3"), else "2".
    public static func nextVersion(_ v: String) -> String {
        Int(v.prefix { $0.isNumber }).map { String($0 + 1) } ?? "2"
    }

    /// A file's identity: path as given, sha256, size.
    public struct DataRecord: Codable, Sendable, Equatable {
        public var file: String
        public var sha256: String
        public var bytes: Int
        public init(file: String, sha256: String, bytes: Int) {
            self.file = file
            self.sha256 = sha256
            self.bytes = bytes
        }
    }

    /// What an evaluation measured: the task's own held-out text, or the drift text (how far the
    /// adapted model moved from the unquantized base on text outside the task).
    public enum Role: String, Codable, Sendable, CaseIterable { case task, drift }

    /// One evaluation the adapter passed, on the base named by `baseFingerprint`.
    public struct Evaluation: Codable, Sendable, Equatable {
        public var role: Role
        public var dataset: DataRecord
        /// Predicted tokens scored.
        public var tokens: Int
        public var perplexity: Double
        public var accuracy: Double?
        /// Against `reference` (the unquantized base): KL(reference ‖ adapted) per token, top-1 agreement.
        public var klDivergence: Double?
        public var top1Agreement: Double?
        public var reference: String?
        public var baseFingerprint: String
        /// "finetune validation", "lowra eval" or "lowra adapter compress".
        public var source: String
        /// For a compressed adapter: the perplexity of the adapter it was compressed from, on the
        /// same tokens in the same run.
        public var uncompressedPerplexity: Double?
        public var date: String

        public init(
            role: Role, dataset: DataRecord, tokens: Int, perplexity: Double, baseFingerprint: String, source: String,
            date: String = AdapterCard.now()
        ) {
            self.role = role
            self.dataset = dataset
            self.tokens = tokens
            self.perplexity = perplexity
            self.baseFingerprint = baseFingerprint
            self.source = source
            self.date = date
        }

        enum CodingKeys: String, CodingKey {
            case role, dataset, tokens, perplexity, accuracy
            case klDivergence = "kl_divergence"
            case top1Agreement = "top1_agreement"
            case reference
            case baseFingerprint = "base_fingerprint"
            case source, date
            case uncompressedPerplexity = "uncompressed_perplexity"
        }
    }

    enum CodingKeys: String, CodingKey {
        case format, name, version, task, owner, created
        case retireAfter = "retire_after"
        case trainingData = "training_data"
        case baseFingerprint = "base_fingerprint"
        case base, quantization, rank, alpha, evaluations
        case importedFrom = "imported_from"
        case parent, promotion
    }

    public static let file = "adapter_card.json"

    /// A card for the adapter in `dir` from its manifest: named after the directory, version 1,
    /// the task named after the training file (or "unspecified"), owned by `$USER`.
    public init(manifest m: AdapterManifest, dir: String, trainingBytes: Int? = nil) {
        let dirName = ((dir as NSString).standardizingPath as NSString).lastPathComponent
        name = dirName.isEmpty ? "adapter" : dirName
        version = "1"
        task =
            m.training.map { (($0.trainFile as NSString).lastPathComponent as NSString).deletingPathExtension }
            ?? "unspecified"
        owner = ProcessInfo.processInfo.environment["USER"] ?? "unknown"
        created = Self.now()
        if let t = m.training {
            trainingData = DataRecord(file: t.trainFile, sha256: t.trainSHA256, bytes: trainingBytes ?? -1)
        }
        baseFingerprint = m.baseFingerprint
        base = m.base
        quantization = m.quantization
        rank = m.rank
        alpha = m.alpha
        importedFrom = m.imported
    }

    public static func now() -> String { ISO8601DateFormatter().string(from: Date()) }

    /// YYYY-MM-DD in UTC, the form of `retireAfter`.
    static func dayFormatter() -> DateFormatter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd"
        return f
    }

    /// Today as YYYY-MM-DD in UTC.
    public static func today(_ date: Date = Date()) -> String { dayFormatter().string(from: date) }

    /// Checks a YYYY-MM-DD date (a real calendar day).
    public static func validDay(_ s: String) -> Bool {
        let f = dayFormatter()
        guard s.count == 10, let d = f.date(from: s) else { return false }
        return f.string(from: d) == s
    }

    /// Names clients may use: letters, digits and `._-`, 1–64 characters, starting with a letter or digit.
    public static func validName(_ s: String) -> Bool {
        guard (1...64).contains(s.count), let first = s.unicodeScalars.first,
            CharacterSet.alphanumerics.contains(first)
        else { return false }
        return s.unicodeScalars.allSatisfy {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0))
        }
    }

    public func validate() throws {
        func bad(_ m: String) -> LowRAError { LowRAError(.malformedFile, "adapter card: \(m)") }
        guard format == "lowra-card-v1" else { throw bad("unknown format \(format)") }
        guard Self.validName(name) else { throw bad("name \"\(name)\" must be 1–64 letters, digits, '.', '_' or '-'") }
        guard !version.isEmpty, version.count <= 32, !version.contains("@") else {
            throw bad("version must be 1–32 characters without '@'")
        }
        guard task.count <= 256, owner.count <= 256 else { throw bad("task and owner are at most 256 characters") }
        if let r = retireAfter, !Self.validDay(r) { throw bad("retire_after \"\(r)\" is not a YYYY-MM-DD date") }
        guard rank >= 1, alpha > 0, alpha.isFinite else { throw bad("rank and alpha must be positive") }
        guard evaluations.count <= 10_000 else { throw bad("more than 10,000 evaluations") }
        for e in evaluations {
            guard e.tokens >= 0, e.perplexity.isFinite, e.perplexity >= 1 else {
                throw bad("an evaluation has a negative token count or a perplexity that is not a number ≥ 1")
            }
        }
    }

    /// The number of evaluated tokens a base of `codeBits` bits per parameter asks of each role:
    /// N₀ · 4 / b (fewer bits, more evidence); an unquantized base counts as 16 bits.
    public static func requiredTokens(minTokens n0: Int, codeBits: Double?) -> Int {
        let b = max(codeBits ?? 16, 0.5)
        return Int((Double(n0) * 4 / b).rounded(.up))
    }

    /// Why an adapter may not be served: over another base, retired, or evaluated too little.
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        /// `untrusted`: a server with trusted keys found the adapter unsigned, signed by another
        /// key, or changed since it was signed (`AdapterSignature`).
        public enum Kind: String, Sendable { case otherBase, retired, underEvaluated, untrusted }
        public init(kind: Kind, message: String) { (self.kind, self.message) = (kind, message) }
        public let kind: Kind
        public let message: String
        public var description: String { message }
    }

    /// Why the adapter may not be served over the base with `fingerprint` (empty: it may): another
    /// base, retired, or too few evaluated tokens on the task or the drift text on this base.
    public func admission(fingerprint: String, minTokens n0: Int, today: String = AdapterCard.today()) -> [Refusal] {
        var reasons = [Refusal]()
        if baseFingerprint != fingerprint {
            reasons.append(
                Refusal(
                    kind: .otherBase,
                    message: "made for another base (\(base), fingerprint \(baseFingerprint.prefix(12))…), "
                        + "not this one (\(fingerprint.prefix(12))…)"))
        }
        if let r = retireAfter, r < today { reasons.append(Refusal(kind: .retired, message: "retired after \(r)")) }
        let need = Self.requiredTokens(minTokens: n0, codeBits: quantization?.codeBitsPerParam)
        for role in Role.allCases {
            let have =
                evaluations.filter { $0.role == role && $0.baseFingerprint == fingerprint }.map(\.tokens).max() ?? 0
            if have < need {
                let bits = quantization.map { String(format: "%.2f", $0.codeBitsPerParam) } ?? "16"
                reasons.append(
                    Refusal(
                        kind: .underEvaluated,
                        message: "\(have) \(role.rawValue) tokens evaluated on this base; a base of \(bits) code bits "
                            + "asks for \(need) (lowra eval --record)"))
            }
        }
        return reasons
    }

    public static func path(_ dir: String) -> String { (dir as NSString).appendingPathComponent(file) }

    public static func exists(_ dir: String) -> Bool { FileManager.default.fileExists(atPath: path(dir)) }

    /// Reads and validates the card in `dir`; a card is at most 4 MB.
    public static func load(_ dir: String) throws -> AdapterCard {
        let p = path(dir)
        guard FileManager.default.fileExists(atPath: p) else {
            throw LowRAError(.io, "\(dir): no \(file) (lowra card set \(dir) makes one from the adapter's manifest)")
        }
        let data = try mapFile(p)
        guard data.count <= 4 << 20 else { throw LowRAError(.malformedFile, "\(p): larger than 4 MB") }
        let card: AdapterCard
        do {
            card = try JSONDecoder().decode(AdapterCard.self, from: data)
        } catch {
            throw LowRAError.malformed(p, "cannot read the adapter card (\(error))")
        }
        do { try card.validate() } catch let e as LowRAError { throw LowRAError(e.kind, "\(p): \(e.message)") }
        return card
    }

    /// The card in `dir`, or one made from the adapter's manifest when it has none.
    public static func loadOrMake(_ dir: String) throws -> AdapterCard {
        if exists(dir) { return try load(dir) }
        return AdapterCard(manifest: try AdapterStore.loadManifest(dir), dir: dir)
    }

    /// Writes the card atomically (temporary file, fsync, rename, folder fsync).
    public func save(to dir: String) throws {
        try validate()
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(self), to: Self.path(dir))
    }
}
