import LowRATensor

/// GPT-2's reversible map between bytes and printable Unicode characters: byte-level BPE
/// vocabularies are written in these characters.
enum ByteLevel {
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar?](repeating: nil, count: 256)
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        for b in printable { table[b] = Unicode.Scalar(UInt32(b)) }
        var next: UInt32 = 256
        for b in 0..<256 where table[b] == nil {
            table[b] = Unicode.Scalar(next)
            printable.append(b)
            next += 1
        }
        return table.map { $0! }
    }()

    static let scalarToByte: [UInt32: UInt8] = {
        var m = [UInt32: UInt8]()
        for (b, s) in byteToScalar.enumerated() { m[s.value] = UInt8(b) }
        return m
    }()

    static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(byteToScalar[Int(b)]) }
        return String(s)
    }

    /// The bytes a vocabulary string stands for; nil if it has characters outside the map.
    static func decode(_ token: String) -> [UInt8]? {
        var out = [UInt8]()
        for s in token.unicodeScalars {
            guard let b = scalarToByte[s.value] else { return nil }
            out.append(b)
        }
        return out
    }
}

/// Byte-level BPE: a vocabulary of byte-level strings and a ranked list of merges.
public struct ByteLevelBPE: Sendable {
    public let vocab: [String: Int]
    public let idToToken: [String]
    /// (left id, right id) packed into 64 bits -> (rank, merged id).
    let merges: [UInt64: (rank: Int32, id: Int32)]
    /// The merges in rank order, as given.
    public let mergeList: [(String, String)]
    /// Token id of each single byte; nil for bytes the vocabulary lacks (SmolLM2 has no token
    /// for a few control bytes and bytes that never occur in UTF-8). Such bytes are dropped,
    /// as Hugging Face's BPE does when the model has no unknown token.
    let byteIds: [Int?]

    public init(tokens: [String], merges mergeList: [(String, String)]) throws {
        var vocab = [String: Int](minimumCapacity: tokens.count)
        for (i, t) in tokens.enumerated() where vocab[t] == nil { vocab[t] = i }
        let byteIds = (0..<256).map { vocab[String(ByteLevel.byteToScalar[$0])] }
        guard byteIds.compactMap({ $0 }).count >= 128 else {
            throw LowRAError(
                .malformedFile, "tokenizer: most single bytes have no token; not a byte-level BPE vocabulary")
        }
        var m = [UInt64: (rank: Int32, id: Int32)](minimumCapacity: mergeList.count)
        for (rank, (a, b)) in mergeList.enumerated() {
            guard let ia = vocab[a], let ib = vocab[b], let merged = vocab[a + b] else {
                throw LowRAError(
                    .malformedFile, "tokenizer: merge #\(rank) '\(a) \(b)' uses tokens missing from the vocabulary")
            }
            let key = UInt64(ia) << 32 | UInt64(ib)
            if m[key] == nil { m[key] = (Int32(rank), Int32(merged)) }
        }
        self.vocab = vocab
        self.mergeList = mergeList
        idToToken = tokens
        merges = m
        self.byteIds = byteIds
    }

    /// Token ids of one pre-tokenized piece.
    public func encode(_ piece: Substring) -> [Int] {
        var ids = piece.utf8.compactMap { byteIds[Int($0)] }
        while ids.count > 1 {
            var best = Int32.max
            var at = -1
            var mergedId: Int32 = 0
            for i in 0..<(ids.count - 1) {
                if let m = merges[UInt64(ids[i]) << 32 | UInt64(ids[i + 1])], m.rank < best {
                    best = m.rank
                    at = i
                    mergedId = m.id
                }
            }
            if at < 0 { break }
            ids[at] = Int(mergedId)
            ids.remove(at: at + 1)
        }
        return ids
    }
}
