import ArgumentParser
import Foundation
import LowRAIO
import LowRAModel
import LowRATensor
import LowRATrain
import LowRAPipeline
import LowRAAdapters

extension AdapterCard.Role: ExpressibleByArgument {}

/// `lowra card show|set|verify`: an adapter's papers (`adapter_card.json`).
struct CardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "card",
        abstract: "Show, edit, sign or verify an adapter's card (its name, task, base and passed evaluations).",
        subcommands: [
            CardShow.self, CardSet.self, CardSign.self, CardVerify.self, CardPromote.self, CardRetire.self,
        ])
}

/// The N₀ of the serving rule: an adapter over a base of b code bits needs N₀·4/b evaluated
/// tokens on its task and on the drift text.
struct AdmissionOptions: ParsableArguments {
    @Option(help: "N₀: evaluated tokens asked of a 4-bit base, on the task and the drift text (N₀·4/b at b bits).")
    var minEvalTokens = 1024
}

struct CardShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Print an adapter's card.")
    @Argument(help: "The adapter directory.") var dir: String
    @Flag(help: "Print the card's JSON.") var json = false

    func run() throws {
        let card = try AdapterCard.loadOrMake(dir)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(card), as: UTF8.self))
            return
        }
        print(describe(card))
        if !AdapterCard.exists(dir) { print("(no \(AdapterCard.file) yet: shown from the manifest)") }
    }
}

func describe(_ card: AdapterCard) -> String {
    var lines = [
        "\(card.name)@\(card.version)  task: \(card.task)  owner: \(card.owner)",
        "created \(card.created)" + (card.retireAfter.map { ", retire after \($0)" } ?? ""),
        "base \(card.base) (\(card.baseFingerprint.prefix(12))…)"
            + (card.quantization.map { String(format: ", %@ %.3f code bits", $0.method, $0.codeBitsPerParam) } ?? ""),
        "rank \(card.rank), alpha \(card.alpha)",
    ]
    if let t = card.trainingData {
        lines.append("trained on \(t.file) (\(t.bytes) bytes, sha256 \(t.sha256.prefix(12))…)")
    }
    if let s = card.importedFrom {
        lines.append(
            "imported from \(s.path) (PEFT, rank \(s.rank), lora_alpha \(s.loraAlpha), "
                + "sha256 \(s.sha256.prefix(12))…)")
    }
    if let p = card.parent {
        lines.append(
            "continued from \(p.name)@\(p.version) (\(p.dir)); "
                + (card.promotion.map {
                    String(format: "promoted %@ (tasks kept within %g%%)", $0.date, 100 * $0.maxRegression)
                } ?? "not promoted: answers to \(card.name)@\(card.version) only"))
    }
    if card.evaluations.isEmpty { lines.append("no evaluations") }
    for e in card.evaluations {
        var s = String(
            format: "%@ %@: %d tokens, perplexity %.3f", e.role.rawValue, e.dataset.file, e.tokens, e.perplexity)
        if let a = e.accuracy { s += String(format: ", accuracy %.4f", a) }
        if let kl = e.klDivergence, let t = e.top1Agreement { s += String(format: ", KL %.4f, top-1 %.4f", kl, t) }
        lines.append(s + " (\(e.source), \(e.date))")
    }
    return lines.joined(separator: "\n")
}

struct CardSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Set fields of an adapter's card (made from its manifest if it has none).")
    @Argument(help: "The adapter directory.") var dir: String
    @Option(help: "The name clients ask for (letters, digits, '.', '_', '-').") var name: String?
    @Option(help: "The version (name@version).") var version: String?
    @Option(help: "What the adapter is for.") var task: String?
    @Option(help: "Who answers for it.") var owner: String?
    @Option(help: "Last day it may be served (YYYY-MM-DD), or none.") var retireAfter: String?

    func run() throws {
        let lock = try OutputLock(dir)
        defer { withExtendedLifetime(lock) {} }
        var card = try AdapterCard.loadOrMake(dir)
        if let name { card.name = name }
        if let version { card.version = version }
        if let task { card.task = task }
        if let owner { card.owner = owner }
        if let r = retireAfter {
            guard r == "none" || AdapterCard.validDay(r) else {
                throw LowRAError(.invalidArgument, "--retire-after \(r): expected YYYY-MM-DD or none")
            }
            card.retireAfter = r == "none" ? nil : r
        }
        do { try card.validate() } catch let e as LowRAError { throw LowRAError(.invalidArgument, e.message) }
        try card.save(to: dir)
        print(describe(card))
    }
}

struct CardVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Whether the server would serve the adapter over a base: same base, not retired, enough evaluations.",
        discussion: """
            A signed adapter's signature is checked too (it verifies, every file is unchanged), and its signer shown; \
            with --trusted-keys the adapter must be signed by one of those keys, as `serve --trusted-keys` asks.
            """)
    @Argument(help: "The adapter directory.") var dir: String
    @Option(help: "The base it is to be served over.") var model: String
    @OptionGroup var admission: AdmissionOptions
    @Option(help: "A directory of trusted public keys (*.pub): the adapter must be signed by one of them.")
    var trustedKeys: String?

    func run() throws {
        let card = try AdapterCard.load(dir)
        var reasons = card.admission(fingerprint: try baseFingerprint(model), minTokens: admission.minEvalTokens)
            .map(\.message)
        var signedBy = "unsigned"
        let signature = (dir as NSString).appendingPathComponent(AdapterSignature.file)
        if FileManager.default.fileExists(atPath: signature) || trustedKeys != nil {
            let trusted = try trustedKeys.map { try PublicSigningKey.loadAll($0) }
            do {
                let s = try AdapterSignature.verify(dir, trusted: trusted)
                signedBy = "signed by \(s.name) (key \(s.keyID)) on \(s.signed), \(s.files) files unchanged"
            } catch let f as AdapterSignature.Failure {
                reasons.append(f.message)
            }
        }
        guard reasons.isEmpty else {
            throw LowRAError(.invalidArgument, "\(dir): refused: " + reasons.joined(separator: "; "))
        }
        print("\(card.name)@\(card.version): may be served over \(model); \(signedBy)")
    }
}

/// `lowra card promote`: a new version (`finetune --from`) must keep its parent's tasks.
struct CardPromote: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "promote",
        abstract: "Let a new version answer to its bare name, if it kept every task its parent was evaluated on.",
        discussion: """
            Runs each of the parent's task evaluations on this base (same dataset by sha256, same token count) \
            with the parent and with this version, in the same run; refuses when any perplexity rose by more \
            than --max-regression. The check is recorded on the card; the server then serves NAME as this version \
            (NAME@VERSION reaches any version).
            """)
    @Argument(help: "The new version's adapter directory.") var dir: String
    @Option(help: "The largest rise of a task perplexity allowed, in percent.") var maxRegression: Double = 5
    @Option(help: "The base (default: the one the adapter's manifest names).") var model: String?

    func run() throws {
        guard maxRegression >= 0, maxRegression.isFinite else {
            throw ValidationError("--max-regression must be ≥ 0")
        }
        var card = try AdapterCard.load(dir)
        guard let parent = card.parent else {
            throw LowRAError(.invalidArgument, "\(dir): \(card.name)@\(card.version) has no parent (a first version)")
        }
        let parentCard = try AdapterCard.loadOrMake(parent.dir)
        let weights = (parent.dir as NSString).appendingPathComponent(AdapterStore.loadedFiles(parent.dir)[0])
        guard try LowRAPipeline.fingerprint(weights) == parent.weightsSHA256 else {
            throw LowRAError(
                .invalidArgument, "\(parent.dir): the parent's weights changed since this version was trained")
        }
        let base = try model ?? AdapterStore.loadManifest(dir).base
        let loaded = try LoadedModel.load(base)
        let fingerprint = try baseFingerprint(base)
        let (child, _) = try AdapterStore.load(dir, config: loaded.config, fingerprint: fingerprint)
        let (old, _) = try AdapterStore.load(parent.dir, config: loaded.config, fingerprint: fingerprint)
        let tasks = parentCard.evaluations.filter { $0.role == .task && $0.baseFingerprint == fingerprint }
        guard !tasks.isEmpty else {
            throw LowRAError(.invalidArgument, "\(parent.dir): the parent has no task evaluation on this base to keep")
        }
        var checks = [AdapterCard.Promotion.Check]()
        var regressions = [String]()
        for e in tasks {
            guard let replay = try Replay(e, loaded: loaded) else {
                throw LowRAError(.io, "\(e.dataset.file): the parent's task data is gone or changed; cannot check it")
            }
            let before = try replay.run(old)
            let after = try replay.run(child)
            let change = after.perplexity / before.perplexity - 1
            print(
                String(
                    format: "%@ (%d tokens): perplexity %.3f (%@@%@) → %.3f (%@@%@), %+.2f%%", e.dataset.file,
                    after.predictions, before.perplexity, parent.name, parent.version, after.perplexity, card.name,
                    card.version, 100 * change))
            checks.append(.init(
                dataset: e.dataset, tokens: after.predictions, parentPerplexity: before.perplexity,
                perplexity: after.perplexity))
            if change > maxRegression / 100 {
                regressions.append(String(format: "%@ %+.2f%%", e.dataset.file, 100 * change))
            }
        }
        guard regressions.isEmpty else {
            throw LowRAError(
                .invalidArgument,
                "\(card.name)@\(card.version) is not promoted: it forgot its parent's tasks beyond "
                    + String(format: "%g%%: ", maxRegression) + regressions.joined(separator: ", "))
        }
        card.promotion = AdapterCard.Promotion(
            date: AdapterCard.now(), maxRegression: maxRegression / 100, checks: checks)
        try card.save(to: dir)
        print("promoted \(card.name)@\(card.version): it answers to \(card.name)")
    }
}

/// `lowra card retire`: an adapter no server serves from today on.
struct CardRetire: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retire", abstract: "Retire an adapter version now (its card's retire-after becomes yesterday).")
    @Argument(help: "The adapter directory.") var dir: String

    func run() throws {
        var card = try AdapterCard.loadOrMake(dir)
        card.retireAfter = AdapterCard.today(Date().addingTimeInterval(-86_400))
        try card.save(to: dir)
        print("retired \(card.name)@\(card.version): servers refuse it from now on (410) once they load its card")
    }
}

/// `lowra card sign`: an Ed25519 signature over the adapter's files (`adapter_signature.json`).
struct CardSign: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign", abstract: "Sign an adapter: its card and the SHA-256 of each of its files.",
        discussion: """
            Writes adapter_signature.json beside the files. Sign last: changing the card afterwards (card set, \
            eval --record) breaks the signature until the adapter is signed again.
            """)
    @Argument(help: "The adapter directory.") var dir: String
    @Option(help: "The private key (NAME.key from `lowra keys generate`).") var key: String

    func run() throws {
        let t = Date()
        let doc = try AdapterSignature.sign(dir, key: try SigningKey.load(key))
        let id = try PublicSigningKey.load(
            ((key as NSString).deletingPathExtension as NSString).appendingPathExtension("pub")!
        ).id
        print(
            String(
                format: "signed %@: %d files, by %@ (key %@), in %.2f s", dir, doc.files.count, doc.signerName, id,
                Date().timeIntervalSince(t)))
    }
}

/// `lowra keys generate`: an Ed25519 key pair for signing adapters.
struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Make keys for signing adapters.", subcommands: [KeysGenerate.self])
}

struct KeysGenerate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Write an Ed25519 key pair: NAME.key (private, mode 0600) and NAME.pub (give it to servers).")
    @Option(help: "The key's name (letters, digits, '.', '_', '-'): who signs with it.") var name: String
    @Option(help: "Directory for the two files.") var out: String

    func run() throws {
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) }), !name.hasPrefix(".")
        else { throw ValidationError("--name: letters, digits, '.', '_' and '-' only") }
        let key = SigningKey(name: name)
        let (priv, pub) = try key.save(in: out)
        print("wrote \(priv) (keep it private) and \(pub) (key \(key.publicKey.id))")
    }
}
