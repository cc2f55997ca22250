import Crypto
import Foundation
import LowRAIO
import LowRAPipeline
import LowRATensor

/// Who vouches for an adapter: an Ed25519 signature (swift-crypto) over the SHA-256 of every file in
/// the adapter's directory — its weights, configuration, manifest and card — kept beside them in
/// `adapter_signature.json`. A server given trusted keys serves an adapter only when it is signed by
/// one of them and every file it reads still has its signed hash, checked each time the adapter is
/// loaded from disk.
public enum AdapterSignature {
    public static let file = "adapter_signature.json"
    static let domain = "lowra-adapter-signature-v1"

    /// The signature file: the signer's public key, when, each file's SHA-256 and the signature over
    /// `message`.
    public struct Document: Codable, Sendable, Equatable {
        public var format: String
        public var signer: String
        public var signerName: String
        public var signed: String
        public var files: [String: String]
        public var signature: String

        enum CodingKeys: String, CodingKey {
            case format, signer, signed, files, signature
            case signerName = "signer_name"
        }

        /// The signed bytes: the format, the signer's key and name, the time and "sha256  name" per
        /// file, sorted by name.
        var message: Data {
            var s = "\(AdapterSignature.domain)\nsigner \(signer) \(signerName)\nsigned \(signed)\n"
            for name in files.keys.sorted() { s += "\(files[name]!)  \(name)\n" }
            return Data(s.utf8)
        }
    }

    /// A verified signature: the signer's key (its id and the name it was made with).
    public struct Signer: Sendable, Equatable {
        public let keyID: String
        public let name: String
        public let signed: String
        public let files: Int
    }

    /// Why an adapter's signature does not hold; the message names the file.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let message: String
        public var description: String { message }
    }

    /// The files a signature covers: every regular file of the directory but the signature itself
    /// and hidden files (subdirectories are not part of an adapter).
    static func coveredFiles(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { name in
            var isDir: ObjCBool = false
            let path = (dir as NSString).appendingPathComponent(name)
            return name != file && !name.hasPrefix(".")
                && FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && !isDir.boolValue
        }.sorted()
    }

    /// Signs every file of the adapter in `dir` with `key`, writing `adapter_signature.json`
    /// (atomically). Sign after the last change to the card: a later `eval --record` or `card set`
    /// changes the card, and the signature no longer holds until the adapter is signed again.
    @discardableResult
    public static func sign(_ dir: String, key: SigningKey, now: Date = Date()) throws -> Document {
        guard AdapterStore.isAdapterDirectory(dir) else {
            throw LowRAError(.invalidArgument, "\(dir): not a LowRA adapter")
        }
        var files = [String: String]()
        for name in try coveredFiles(dir) {
            files[name] = try fingerprint((dir as NSString).appendingPathComponent(name))
        }
        let stamp = ISO8601DateFormatter().string(from: now)
        var doc = Document(
            format: domain, signer: key.publicKey.text, signerName: key.name, signed: stamp, files: files,
            signature: "")
        doc.signature = try key.key.signature(for: doc.message).base64EncodedString()
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(doc), to: (dir as NSString).appendingPathComponent(file))
        return doc
    }

    /// Checks the signature in `dir`: it verifies under its signer's key, the signer is one of
    /// `trusted` (nil: any signer), every covered file has its signed hash, and the files loading
    /// the adapter reads are all covered. Throws a `Failure` naming what does not hold.
    public static func verify(_ dir: String, trusted: [PublicSigningKey]?) throws -> Signer {
        let path = (dir as NSString).appendingPathComponent(file)
        guard FileManager.default.fileExists(atPath: path) else { throw Failure(message: "unsigned (no \(file))") }
        let doc: Document
        do {
            let data = try mapFile(path)
            guard data.count <= 1 << 20 else { throw Failure(message: "\(file) is larger than 1 MB") }
            doc = try JSONDecoder().decode(Document.self, from: data)
        } catch let f as Failure {
            throw f
        } catch {
            throw Failure(message: "\(file) is not a LowRA adapter signature (\(error))")
        }
        guard doc.format == domain else { throw Failure(message: "\(file): unknown format \(doc.format)") }
        let signer: PublicSigningKey
        do { signer = try PublicSigningKey(text: doc.signer, name: doc.signerName) } catch {
            throw Failure(message: "\(file): the signer's key is malformed")
        }
        guard let signature = Data(base64Encoded: doc.signature),
            signer.key.isValidSignature(signature, for: doc.message)
        else { throw Failure(message: "\(file): the signature does not verify under its signer's key") }
        if let trusted, !trusted.contains(where: { $0.key.rawRepresentation == signer.key.rawRepresentation }) {
            throw Failure(message: "signed by key \(signer.id) (\(doc.signerName)), which is not a trusted key")
        }
        for name in AdapterStore.loadedFiles(dir) where doc.files[name] == nil {
            throw Failure(message: "\(name) is not covered by the signature")
        }
        for name in doc.files.keys.sorted() {
            guard !name.contains("/"), name != file else { throw Failure(message: "\(file): bad file name \(name)") }
            let p = (dir as NSString).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: p) else { throw Failure(message: "\(name) is missing") }
            guard try fingerprint(p) == doc.files[name] else {
                throw Failure(message: "\(name) does not match its signed SHA-256 (changed after signing)")
            }
        }
        return Signer(keyID: signer.id, name: doc.signerName, signed: doc.signed, files: doc.files.count)
    }
}

/// An Ed25519 public key as LowRA writes it: one line "lowra-ed25519 BASE64 NAME" (`NAME.pub`).
public struct PublicSigningKey: Sendable {
    public let key: Curve25519.Signing.PublicKey
    public let name: String
    static let prefix = "lowra-ed25519"

    public init(_ key: Curve25519.Signing.PublicKey, name: String) { (self.key, self.name) = (key, name) }

    /// From the base64 of the raw key.
    init(text: String, name: String) throws {
        guard let raw = Data(base64Encoded: text) else { throw LowRAError(.malformedFile, "not base64") }
        key = try Curve25519.Signing.PublicKey(rawRepresentation: raw)
        self.name = name
    }

    /// The base64 of the raw key.
    public var text: String { key.rawRepresentation.base64EncodedString() }
    /// The first 16 hex digits of the raw key's SHA-256.
    public var id: String { String(SHA256.hex(key.rawRepresentation).prefix(16)) }
    public var line: String { "\(Self.prefix) \(text) \(name)\n" }

    public static func load(_ path: String) throws -> PublicSigningKey {
        let words = try String(contentsOfFile: path, encoding: .utf8).split(whereSeparator: \.isWhitespace)
        guard words.count >= 2, words[0] == prefix else {
            throw LowRAError.malformed(path, "not a LowRA public key (\(prefix) BASE64 NAME)")
        }
        do {
            return try PublicSigningKey(text: String(words[1]), name: words.count > 2 ? String(words[2]) : "")
        } catch { throw LowRAError.malformed(path, "not a valid Ed25519 public key") }
    }

    /// Every `*.pub` key in a directory (the server's trusted keys).
    public static func loadAll(_ dir: String) throws -> [PublicSigningKey] {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".pub") }.sorted()
        guard !names.isEmpty else { throw LowRAError(.invalidArgument, "\(dir): no trusted keys (*.pub)") }
        return try names.map { try load((dir as NSString).appendingPathComponent($0)) }
    }
}

/// An Ed25519 private key: "lowra-ed25519-private BASE64 NAME" in `NAME.key`, readable by its
/// owner only.
public struct SigningKey: Sendable {
    public let key: Curve25519.Signing.PrivateKey
    public let name: String
    static let prefix = "lowra-ed25519-private"

    public init(name: String) {
        key = Curve25519.Signing.PrivateKey()
        self.name = name
    }

    public var publicKey: PublicSigningKey { PublicSigningKey(key.publicKey, name: name) }

    /// Writes `NAME.key` (mode 0600) and `NAME.pub` in `dir`; refuses to overwrite a key.
    public func save(in dir: String) throws -> (privatePath: String, publicPath: String) {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let priv = (dir as NSString).appendingPathComponent("\(name).key")
        let pub = (dir as NSString).appendingPathComponent("\(name).pub")
        for p in [priv, pub] where FileManager.default.fileExists(atPath: p) {
            throw LowRAError(.invalidArgument, "\(p) exists; keys are never overwritten")
        }
        let line = Array("\(Self.prefix) \(key.rawRepresentation.base64EncodedString()) \(name)\n".utf8)
        // Created readable by its owner only (never briefly open to others), and never over another file.
        let fd = open(priv, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw LowRAError(.io, "\(priv): cannot create (\(String(cString: strerror(errno))))") }
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == line.count, synced == 0 else { throw LowRAError(.io, "\(priv): cannot write") }
        try writeAtomically(Data(publicKey.line.utf8), to: pub)
        return (priv, pub)
    }

    public static func load(_ path: String) throws -> SigningKey {
        let words = try String(contentsOfFile: path, encoding: .utf8).split(whereSeparator: \.isWhitespace)
        guard words.count >= 2, words[0] == prefix, let raw = Data(base64Encoded: String(words[1])),
            let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        else { throw LowRAError.malformed(path, "not a LowRA private key (\(prefix) BASE64 NAME)") }
        return SigningKey(key: key, name: words.count > 2 ? String(words[2]) : "")
    }

    init(key: Curve25519.Signing.PrivateKey, name: String) { (self.key, self.name) = (key, name) }
}
