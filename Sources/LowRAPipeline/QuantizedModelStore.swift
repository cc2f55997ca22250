import Foundation
import LowRAModel
import LowRAIO
import LowRAQuant
import LowRATensor
import LowRATokenizer

/// What `lowra_quant.json` records about how a quantized model directory was made.
public struct QuantManifest: Codable, Sendable {
    /// v2: the embedding and head keep their source encoding (F16/BF16/ggml blocks) instead of fp32.
    public static let currentFormat = "lowra-packed-v2"
    public var format = currentFormat
    public var toolVersion = LowRAVersion.string
    public var source: String
    public var sourceSHA256: String
    public var report: QuantizeReport

    public init(source: String, sourceSHA256: String, report: QuantizeReport) {
        self.source = source
        self.sourceSHA256 = sourceSHA256
        self.report = report
    }

    enum CodingKeys: String, CodingKey {
        case format, toolVersion = "tool_version", source, sourceSHA256 = "source_sha256", report
    }
}

public enum LowRAVersion {
    public static let string = "0.2.0"
}

/// A quantized model directory: `model.safetensors` (packed linear layers + fp32 embeddings,
/// norms and head), `config.json`, `tokenizer.json`, `tokenizer_config.json`,
/// `precision_map.json` and `lowra_quant.json`. Packed layer `NAME` (a Hugging Face linear name)
/// is stored as `NAME.bits`, `NAME.codes`, `NAME.levels` and either `NAME.absmax` or
/// `NAME.absmax_codes` + `NAME.absmax_scales`; its input size and codebook scope are in the
/// safetensors metadata.
public enum QuantizedModelStore {
    public static let manifestFile = "lowra_quant.json"

    public static func isQuantizedDirectory(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(manifestFile))
    }

    /// Saves a model whose linear layers are already packed (in memory).
    public static func save(
        to dir: String, config: ModelConfig, weights: ModelWeights, tokenizer: Tokenizer, map: PrecisionMap,
        manifest: QuantManifest, headEncoding: GGMLType? = nil
    ) throws {
        try save(
            to: dir, config: config, weights: weights, tokenizer: tokenizer, head: headEncoding,
            layer: { .linear(weights.blocks[$0][$1]) }
        ) {
            (map, manifest)
        }
    }

    /// Quantizes and saves in one pass over the model (pass 2 of `quantize`): each layer is packed
    /// from `plan` while its tensors are written and dropped right after, so peak memory holds
    /// one layer, not the model. `manifest` receives the finished report. Returns LoftQ's initial
    /// factors (slot order; none unless the plan asked for them), kept in a scratch file beside `dir`.
    public static func saveStreaming(
        to dir: String, config: ModelConfig, weights: ModelWeights, tokenizer: Tokenizer, plan: QuantizationPlan,
        progress: ((Int, Int) -> Void)? = nil, manifest: (QuantizeReport) -> QuantManifest
    ) throws -> SpilledFactors {
        // The plan lists every linear layer, layer by layer in `LinearKind` order.
        precondition(plan.layers.count == weights.blocks.count * LinearKind.allCases.count)
        let factors = try SpilledFactors(directory: parentDirectory(of: dir))
        // Small layers are packed a block's worth at a time (`ModelWeights.packLayers`); those
        // packed ahead wait here for their turn in the file.
        var ahead = [Int: (PackedLinear, (a: [Float], b: [Float])?)]()
        func small(_ i: Int) -> Bool {
            let l = plan.layers[i]
            let lin = weights.blocks[l.block][l.kind]
            return lin.outFeatures * lin.inFeatures <= ModelWeights.concurrentPackElements
        }
        try save(
            to: dir, config: config, weights: weights, tokenizer: tokenizer, head: plan.request.headEncoding,
            layer: { l, kind in
                let i = l * LinearKind.allCases.count + kind.rawValue
                return .planned(bits: plan.bits[i], options: plan.options) {
                    progress?(i, plan.layers.count)
                    if ahead[i] == nil {
                        var end = i + 1
                        while small(i), end < min(plan.layers.count, i + LinearKind.allCases.count), small(end) {
                            end += 1
                        }
                        let packed = try weights.packLayers(i..<end, of: plan)
                        for (k, p) in packed.enumerated() { ahead[i + k] = p }
                    }
                    let (packed, f) = ahead.removeValue(forKey: i)!
                    if let f { try factors.append(f) }
                    return packed
                }
            }
        ) {
            progress?(plan.layers.count, plan.layers.count)
            let report = plan.report()
            return (plan.map, manifest(report))
        }
        return factors
    }

    /// The initial LoRA factors of `saveStreaming`, layer by layer, on disk until the adapter is written
    /// (rank 64 at LLaMA-2-7B's shape: 20 MB a block, 640 MB in all, that would otherwise stay resident).
    public final class SpilledFactors {
        private let file: ScratchFile

        init(directory: String) throws {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            file = try ScratchFile(directory: directory)
        }

        /// Layers whose factors are kept.
        public var count: Int { file.count / 2 }

        func append(_ f: (a: [Float], b: [Float])) throws {
            try file.append(f.a)
            try file.append(f.b)
        }

        /// Layer k's factors (slot order).
        public func factors(_ k: Int) throws -> (a: [Float], b: [Float]) {
            (try file.read(2 * k), try file.read(2 * k + 1))
        }
    }

    /// Where a linear layer's tensors come from when the file is written: a layer in memory, or
    /// one packed on demand at precisions already decided (its sizes known before it exists).
    enum LayerSource {
        case linear(Linear)
        case planned(bits: [UInt8], options: QuantizerOptions, pack: () throws -> PackedLinear)
    }

    private static func save(
        to dir: String, config: ModelConfig, weights: ModelWeights, tokenizer: Tokenizer, head: GGMLType?,
        layer: (Int, LinearKind) -> LayerSource, finish: () throws -> (PrecisionMap, QuantManifest)
    ) throws {
        // Everything goes to a temporary sibling directory renamed into place at the end, so an
        // interrupted run never leaves a half-written model under `dir`.
        let fm = FileManager.default
        try checkOutputDirectory(dir)
        removeStaleStaging(of: dir)
        let staging = dir + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: staging)
        try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        do {
            try write(
                to: staging, config: config, weights: weights, tokenizer: tokenizer, head: head, layer: layer,
                finish: finish)
            try replaceDirectory(dir, with: staging)
        } catch {
            try? fm.removeItem(atPath: staging)
            throw error
        }
    }

    /// Puts the finished directory `staging` in place of `dir` (moved aside to `dir.old-PID`
    /// first, removed after; `removeStaleStaging` restores it when killed in between) and flushes
    /// the renames to disk.
    /// Refuses `dir` as a place to write a quantized model unless it is missing, empty, or a
    /// quantized model already (which the write replaces).
    public static func checkOutputDirectory(_ dir: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) else { return }
        let empty = isDir.boolValue && ((try? FileManager.default.contentsOfDirectory(atPath: dir))?.isEmpty ?? false)
        guard empty || isQuantizedDirectory(dir) else {
            throw LowRAError(.invalidArgument, "\(dir) exists and is not a LowRA quantized model; choose another --out")
        }
    }

    public static func replaceDirectory(_ dir: String, with staging: String) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: dir) {
            let old = dir + ".old-\(getpid())"
            try fm.moveItem(atPath: dir, toPath: old)
            try fm.moveItem(atPath: staging, toPath: dir)
            try? fm.removeItem(atPath: old)
        } else {
            try fm.moveItem(atPath: staging, toPath: dir)
        }
        syncDirectory(parentDirectory(of: dir))
    }

    /// Removes what a killed run left beside `dir`: `dir.tmp-PID` / `dir.old-PID` siblings whose
    /// process no longer exists (a running quantize's staging directory is left alone). A
    /// `dir.old-PID` with no `dir` (killed between the two renames) is moved back to `dir`.
    public static func removeStaleStaging(of dir: String) {
        let url = URL(fileURLWithPath: dir).standardizedFileURL
        let parent = url.deletingLastPathComponent().path
        let base = url.lastPathComponent
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: parent) else { return }
        for name in entries {
            for marker in [".tmp-", ".old-"] where name.hasPrefix(base + marker) {
                guard let pid = Int32(name.dropFirst(base.count + marker.count)), pid != getpid() else { continue }
                if kill(pid, 0) != 0 && errno == ESRCH {
                    let path = (parent as NSString).appendingPathComponent(name)
                    // Killed between moving the previous directory aside and the new one in:
                    // the previous one is the only copy, so it goes back.
                    if marker == ".old-" && !FileManager.default.fileExists(atPath: url.path) {
                        if rename(path, url.path) == 0 { continue }
                    }
                    try? FileManager.default.removeItem(atPath: path)
                }
            }
        }
    }

    private static func write(
        to dir: String, config: ModelConfig, weights: ModelWeights, tokenizer: Tokenizer, head: GGMLType?,
        layer: (Int, LinearKind) -> LayerSource, finish: () throws -> (PrecisionMap, QuantManifest)
    ) throws {
        func p(_ f: String) -> String { (dir as NSString).appendingPathComponent(f) }
        // Streamed: the header first, then each tensor straight from the arrays that hold it.
        var w = SafeTensorsPlan()
        w.metadata["format"] = "pt"
        w.metadata["lowra_format"] = QuantManifest.currentFormat
        let names = WeightNaming.huggingFace
        // The head in its own encoding when asked (`--head-bits`): the embedding when tied.
        // A rotated model's embedding (held in fp32) too.
        let embeddingEncoded = weights.head == nil || weights.embedding.storedType == nil
        addMatrix(&w, names.name(.embedding), weights.embedding, encoding: embeddingEncoded ? head : nil)
        w.add(names.name(.finalNorm), shape: [config.hiddenSize]) { weights.finalNorm }
        if let outputHead = weights.head { addMatrix(&w, names.name(.head), outputHead, encoding: head) }
        for (l, block) in weights.blocks.enumerated() {
            w.add(names.name(.attentionNorm(layer: l)), shape: [config.hiddenSize]) { block.attnNorm }
            w.add(names.name(.mlpNorm(layer: l)), shape: [config.hiddenSize]) { block.ffnNorm }
            for kind in LinearKind.allCases {
                let name = names.linear(l, kind)
                if let bias = block[kind].bias { w.add(name + ".bias", shape: [bias.count]) { bias } }
                switch layer(l, kind) {
                case .linear(let lin):
                    guard let pk = lin.packed else {
                        w.add(name + ".weight", shape: [lin.outFeatures, lin.inFeatures]) { lin.weight }
                        continue
                    }
                    addPacked(
                        &w, name, bits: pk.bits, inFeatures: pk.inFeatures, doubleQuant: pk.absmax.isDoubleQuant,
                        scope: pk.scope
                    ) { pk }
                case .planned(let bits, let options, let pack):
                    // Packed when its codes are written; its other arrays come from the same value.
                    var held: PackedLinear?
                    addPacked(
                        &w, name, bits: bits, inFeatures: block[kind].inFeatures, doubleQuant: options.doubleQuant,
                        scope: options.scope
                    ) {
                        if held == nil { held = try pack() }
                        return held!
                    } release: {
                        held = nil
                    }
                }
            }
        }
        try w.write(to: p("model.safetensors"))
        let (map, manifest) = try finish()
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(config), to: p("config.json"))
        let tok = try tokenizer.huggingFaceFiles()
        try writeAtomically(tok.tokenizer, to: p("tokenizer.json"))
        try writeAtomically(tok.config, to: p("tokenizer_config.json"))
        try writeAtomically(try enc.encode(map), to: p("precision_map.json"))
        // The manifest last: a directory without it is not a finished quantized model.
        try writeAtomically(try enc.encode(manifest), to: p(manifestFile))
    }

    /// The tensors of a packed matrix already in memory under `name` (`addPacked`), e.g. an
    /// adapter factor compressed with the model's quantizer.
    public static func addPackedTensors(_ w: inout SafeTensorsPlan, _ name: String, _ p: PackedLinear) {
        var doubleQuant = false
        if case .doubleQuant = p.absmax { doubleQuant = true }
        addPacked(&w, name, bits: p.bits, inFeatures: p.inFeatures, doubleQuant: doubleQuant, scope: p.scope) { p }
    }

    /// The packed matrix `name` (out, in) of a file written by `addPacked`; its codes stay in the
    /// file's map.
    public static func readPacked(
        _ file: SafeTensorsFile, _ name: String, out: Int, in inF: Int
    ) throws -> PackedLinear {
        let desc = (file.path as NSString).lastPathComponent
        func bytes(_ name: String) throws -> HeldArray<UInt8> {
            guard file.tensors[name]?.dtype == .u8 else {
                throw LowRAError(.missingTensor, "\(desc): U8 tensor \(name) not found")
            }
            return try file.held(name, as: UInt8.self)
        }
        guard Int(file.metadata[name + ".in_features"] ?? "") == inF else {
            throw LowRAError(.shapeMismatch, "\(desc): packed matrix \(name) is not \(out)x\(inF)")
        }
        let scope = CodebookScope(rawValue: file.metadata[name + ".scope"] ?? "") ?? .channel
        let absmax: AbsmaxStorage
        if file.tensors[name + ".absmax"] != nil {
            guard file.tensors[name + ".absmax"]?.dtype == .f32 else {
                throw LowRAError(.malformedFile, "\(desc): \(name).absmax is not F32")
            }
            absmax = .plain(try file.held(name + ".absmax", as: Float.self))
        } else {
            absmax = .doubleQuant(
                codes: try bytes(name + ".absmax_codes"), scales: try file.floats(name + ".absmax_scales"))
        }
        let bits = Array(try bytes(name + ".bits"))
        guard bits.count == out else {
            throw LowRAError(.shapeMismatch, "\(desc): \(name).bits has \(bits.count) rows, expected \(out)")
        }
        do {
            return try PackedLinear(
                outFeatures: out, inFeatures: inF, bits: bits, codes: try bytes(name + ".codes"), absmax: absmax,
                levels: try file.floats(name + ".levels"), scope: scope)
        } catch let e as LowRAError {
            throw LowRAError(e.kind, "\(desc): \(name): \(e.message)")
        }
    }

    /// The tensors of one packed layer `NAME`: `.bits`, `.codes`, `.levels` and `.absmax` or
    /// `.absmax_codes` + `.absmax_scales`, declared from its precisions; `packed()` gives the
    /// layer when its arrays are written (the bits are known already) and `release` runs after
    /// its last array.
    private static func addPacked(
        _ w: inout SafeTensorsPlan, _ name: String, bits: [UInt8], inFeatures: Int, doubleQuant: Bool,
        scope: CodebookScope, packed: @escaping () throws -> PackedLinear, release: @escaping () -> Void = {}
    ) {
        let size = PackedLinear.arraySizes(
            outFeatures: bits.count, inFeatures: inFeatures, bits: bits, doubleQuant: doubleQuant, scope: scope)
        w.add(name + ".bits", bytes: bits)
        w.add(name + ".codes", dtype: .u8, shape: [size.codes]) { wr in
            try packed().codes.withUnsafeBytes { try wr.write(name + ".codes", bytes: $0) }
        }
        w.add(name + ".levels", shape: [size.levels]) { try packed().levels }
        if doubleQuant {
            w.add(name + ".absmax_codes", dtype: .u8, shape: [size.absmax]) { wr in
                guard case .doubleQuant(let codes, _) = try packed().absmax else {
                    throw LowRAError(.invalidArgument, "\(name): absmax")
                }
                try codes.withUnsafeBytes { try wr.write(name + ".absmax_codes", bytes: $0) }
            }
            w.add(name + ".absmax_scales", shape: [size.absmaxScales]) {
                guard case .doubleQuant(_, let scales) = try packed().absmax else {
                    throw LowRAError(.invalidArgument, "\(name): absmax")
                }
                release()
                return scales
            }
        } else {
            w.add(name + ".absmax", shape: [size.absmax]) {
                guard case .plain(let v) = try packed().absmax else {
                    throw LowRAError(.invalidArgument, "\(name): absmax")
                }
                release()
                return Array(v)
            }
        }
        w.metadata[name + ".in_features"] = String(inFeatures)
        w.metadata[name + ".scope"] = scope.rawValue
    }

    /// An unquantized matrix (embedding, head) in the encoding it was read in, so that nothing is
    /// lost or expanded: F32/F16/BF16 as themselves, ggml blocks as their bytes (U8) with the
    /// type and row length in the metadata (`NAME.ggml_type`, `NAME.cols`).
    private static func addMatrix(
        _ w: inout SafeTensorsPlan, _ name: String, _ linear: Linear, encoding: GGMLType? = nil
    ) {
        let shape = [linear.outFeatures, linear.inFeatures]
        if let encoding, encoding != linear.storedType {
            // Re-encoded a chunk of rows at a time into ggml blocks (Q8_0 / Q4_0).
            let rowBytes = linear.inFeatures / 32 * encoding.blockLayout!.bytes
            w.add(name, dtype: .u8, shape: [linear.outFeatures * rowBytes]) { writer in
                var out = [UInt8](repeating: 0, count: linear.outFeatures * rowBytes)
                let chunk = min(linear.outFeatures, 4096)
                let buf = UnsafeMutablePointer<Float>.allocate(capacity: chunk * linear.inFeatures)
                defer { buf.deallocate() }
                out.withUnsafeMutableBytes { ob in
                    for r0 in stride(from: 0, to: linear.outFeatures, by: chunk) {
                        let n = min(chunk, linear.outFeatures - r0)
                        for r in 0..<n { linear.row(r0 + r, into: buf + r * linear.inFeatures) }
                        quantizeGGML(encoding, buf, count: n * linear.inFeatures, into: ob.baseAddress! + r0 * rowBytes)
                    }
                }
                linear.releaseStored()
                try out.withUnsafeBytes { try writer.write(name, bytes: $0) }
            }
            w.metadata[name + ".ggml_type"] = encoding.name
            w.metadata[name + ".cols"] = String(linear.inFeatures)
            return
        }
        switch linear.storage {
        case .stored(let m) where m.type != .f32:
            let raw = { (writer: SafeTensorsStreamWriter) in
                try writer.write(name, bytes: UnsafeRawBufferPointer(start: m.rawRows(0..<m.rows), count: m.byteCount))
                m.release()  // its pages were read once, to be written
            }
            if [.f16, .bf16].contains(m.type) {
                w.add(name, dtype: m.type == .f16 ? .f16 : .bf16, shape: shape, produce: raw)
            } else {
                w.add(name, dtype: .u8, shape: [m.byteCount], produce: raw)
                w.metadata[name + ".ggml_type"] = m.type.name
                w.metadata[name + ".cols"] = String(m.cols)
            }
        default:
            w.add(name, shape: shape) { linear.weight }
        }
    }

    public static func loadManifest(_ dir: String) throws -> QuantManifest {
        let path = (dir as NSString).appendingPathComponent(manifestFile)
        do {
            return try JSONDecoder().decode(QuantManifest.self, from: try mapFile(path))
        } catch let e as LowRAError {
            throw e
        } catch {
            throw LowRAError.malformed(manifestFile, "cannot read (\(error))")
        }
    }

    /// Loads the weights of a quantized directory: packed layers stay packed.
    static func loadWeights(_ file: SafeTensorsFile, config c: ModelConfig) throws -> ModelWeights {
        let desc = (file.path as NSString).lastPathComponent
        func tensor(_ name: String, _ shape: [Int]) throws -> [Float] {
            guard let info = file.tensors[name] else {
                throw LowRAError(.missingTensor, "\(desc): tensor \(name) not found")
            }
            guard info.shape == shape else {
                throw LowRAError(.shapeMismatch, "\(desc): tensor \(name) has shape \(info.shape), expected \(shape)")
            }
            return try file.floats(name)
        }
        func bytes(_ name: String) throws -> HeldArray<UInt8> {
            guard file.tensors[name]?.dtype == .u8 else {
                throw LowRAError(.missingTensor, "\(desc): U8 tensor \(name) not found")
            }
            return try file.held(name, as: UInt8.self)
        }
        func linear(_ l: Int, _ kind: LinearKind) throws -> Linear {
            let (out, inF) = kind.shape(c)
            let bias = kind.hasBias(c)
            let name = WeightNaming.huggingFace.linear(l, kind)
            let b = bias ? try tensor(name + ".bias", [out]) : nil
            if file.tensors[name + ".weight"] != nil {
                return Linear(
                    outFeatures: out, inFeatures: inF, weight: try tensor(name + ".weight", [out, inF]), bias: b)
            }
            return Linear(packed: try readPacked(file, name, out: out, in: inF), bias: b)
        }
        let names = WeightNaming.huggingFace
        var blocks = [BlockWeights]()
        for l in 0..<c.numLayers {
            blocks.append(
                BlockWeights(
                    attnNorm: try tensor(names.name(.attentionNorm(layer: l)), [c.hiddenSize]),
                    ffnNorm: try tensor(names.name(.mlpNorm(layer: l)), [c.hiddenSize]),
                    linears: try LinearKind.allCases.map { try linear(l, $0) }))
        }
        /// An unquantized matrix as `addMatrix` wrote it, behind the file's map.
        func matrix(_ name: String) throws -> Linear {
            let m: StoredMatrix
            if let typeName = file.metadata[name + ".ggml_type"] {
                guard let type = GGMLType.allCases.first(where: { $0.name == typeName }), type.blockLayout != nil,
                    let cols = Int(file.metadata[name + ".cols"] ?? "")
                else { throw LowRAError.malformed(desc, "tensor \(name): unreadable ggml type \(typeName)") }
                m = try file.matrix(name, ggmlType: type, cols: cols)
            } else {
                guard file.tensors[name] != nil else {
                    throw LowRAError(.missingTensor, "\(desc): tensor \(name) not found")
                }
                m = try file.matrix(name)
            }
            guard m.rows == c.vocabSize, m.cols == c.hiddenSize else {
                throw LowRAError(
                    .shapeMismatch,
                    "\(desc): tensor \(name) is \(m.rows) x \(m.cols), expected \(c.vocabSize) x \(c.hiddenSize)")
            }
            return Linear(stored: m)
        }
        // The packed layers were copied out of the map: drop its pages (the embedding and head
        // stay mapped and come back as they are read).
        file.file.releaseAll()
        return ModelWeights(
            embedding: try matrix(names.name(.embedding)), blocks: blocks,
            finalNorm: try tensor(names.name(.finalNorm), [c.hiddenSize]),
            head: c.tieWordEmbeddings ? nil : try matrix(names.name(.head)))
    }
}

/// sha256 of a file, or of every file in a directory (sorted by name, each name then contents).
public func fingerprint(_ path: String) throws -> String {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw LowRAError(.io, "\(path): no such file")
    }
    var h = SHA256()
    let files =
        isDir.boolValue
        ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map {
            (path as NSString).appendingPathComponent($0)
        }
        : [path]
    for f in files {
        if isDir.boolValue { h.update(Array(((f as NSString).lastPathComponent).utf8)) }
        try hashFile(f, into: &h)
    }
    return h.finalize()
}
