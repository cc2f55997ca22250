import Foundation
import LowRAIO
import LowRAModel
import LowRAQuant
import LowRATensor

/// A LoRA adapter with its factors quantized (`lowra adapter compress`): A (r, in) and Bᵀ
/// (r, out) row by row — rows of the factors' long side — at 4 or 2 bits by the model's own
/// quantizer (64-element absmax blocks, a Lloyd-Max codebook per row, double-quantized scales),
/// or at 8 bits as Q8_0 blocks (32 int8 and an f16 scale). It stays compressed in memory (a
/// shelf of many adapters) and is expanded to fp32 when a request runs it.
public struct CompressedAdapter: Sendable {
    public enum Matrix: Sendable {
        case packed(PackedLinear)
        /// Q8_0 blocks of a (rows, cols) matrix.
        case q8(rows: Int, cols: Int, blocks: [UInt8])

        public var byteCount: Int {
            switch self {
            case .packed(let p):
                p.codes.count + 4 * p.levels.count + p.bits.count + p.absmax.byteCount
            case .q8(_, _, let b): b.count
            }
        }

        public func floats() -> [Float] {
            switch self {
            case .packed(let p): return p.dequantized()
            case .q8(let rows, let cols, let blocks):
                var out = [Float](repeating: 0, count: rows * cols)
                out.withUnsafeMutableBufferPointer { o in
                    blocks.withUnsafeBytes {
                        dequantizeGGML(.q8_0, $0.baseAddress!, o.baseAddress!, count: rows * cols)
                    }
                }
                return out
            }
        }
    }

    public let rank: Int
    public let alpha: Float
    public let bits: Int
    /// Per slot (`LoRAAdapter.slots` order): A (r, in) and Bᵀ (r, out).
    public let factors: [(a: Matrix, bT: Matrix)]

    public static let supportedBits = [8, 4, 2]

    /// Bytes the compressed factors take in memory.
    public var byteCount: Int { factors.reduce(0) { $0 + $1.a.byteCount + $1.bT.byteCount } }

    public init(rank: Int, alpha: Float, bits: Int, factors: [(a: Matrix, bT: Matrix)]) {
        self.rank = rank
        self.alpha = alpha
        self.bits = bits
        self.factors = factors
    }

    /// Quantizes every factor of `adapter` at `bits` (8, 4 or 2).
    public init(_ adapter: LoRAAdapter, bits: Int) throws {
        guard Self.supportedBits.contains(bits) else {
            throw LowRAError(.invalidArgument, "adapter compression takes 8, 4 or 2 bits, got \(bits)")
        }
        let r = adapter.rank
        func compress(_ w: [Float], cols: Int) throws -> Matrix {
            if bits == 8 {
                guard cols % 32 == 0 else {
                    throw LowRAError(.unsupported, "8-bit compression needs rows that are a multiple of 32 long")
                }
                var blocks = [UInt8](repeating: 0, count: w.count / 32 * 34)
                blocks.withUnsafeMutableBytes { b in
                    w.withUnsafeBufferPointer {
                        quantizeGGML(.q8_0, $0.baseAddress!, count: w.count, into: b.baseAddress!)
                    }
                }
                return .q8(rows: r, cols: cols, blocks: blocks)
            }
            var o = QuantizerOptions()
            o.precisions = [bits]
            let rowBits = [UInt8](repeating: UInt8(bits), count: r)
            return .packed(try analyzeTensor(w, out: r, in: cols, options: o).pack(w, bits: rowBits))
        }
        var out = [(a: Matrix, bT: Matrix)]()
        for s in adapter.slots {
            let (a, b) = adapter.factors(s)
            var bT = [Float](repeating: 0, count: b.count)  // (out, r) → (r, out)
            for i in 0..<s.outFeatures {
                for j in 0..<r { bT[j * s.outFeatures + i] = b[b.startIndex + i * r + j] }
            }
            out.append((try compress(Array(a), cols: s.inFeatures), try compress(bT, cols: s.outFeatures)))
        }
        self.init(rank: r, alpha: adapter.alpha, bits: bits, factors: out)
    }

    /// The fp32 adapter the forward runs.
    public func expanded(config: ModelConfig) throws -> LoRAAdapter {
        var adapter = try LoRAAdapter(config: config, rank: rank, alpha: alpha)
        guard factors.count == adapter.slots.count else {
            throw LowRAError(
                .shapeMismatch, "the compressed adapter has \(factors.count) factors, the model \(adapter.slots.count)")
        }
        for (s, f) in zip(adapter.slots, factors) {
            let bT = f.bT.floats()
            var b = [Float](repeating: 0, count: bT.count)
            for i in 0..<s.outFeatures {
                for j in 0..<rank { b[i * rank + j] = bT[j * s.outFeatures + i] }
            }
            adapter.setFactors(s, a: f.a.floats(), b: b)
        }
        return adapter
    }
}

extension AbsmaxStorage {
    var byteCount: Int {
        switch self {
        case .plain(let v): 4 * v.count
        case .doubleQuant(let codes, let scales): codes.count + 4 * scales.count
        }
    }
}
