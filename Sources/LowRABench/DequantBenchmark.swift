import LowRAQuant
import Foundation
import LowRATensor

/// Dequantization throughput beside memory bandwidth, measured in one run.
public enum DequantBenchmark {
    /// Large-copy bandwidth in GB/s (bytes read + written), best of `repeats`.
    public static func copyBandwidth(bytes: Int = 256 << 20, repeats: Int = 3) -> Double {
        let n = bytes / 4
        let src = [Float](repeating: 1, count: n)
        var dst = [Float](repeating: 0, count: n)
        var best = Double.infinity
        for _ in 0..<repeats {
            let t0 = Date()
            src.withUnsafeBufferPointer { s in
                dst.withUnsafeMutableBufferPointer { d in
                    let sp = UncheckedSendable(s.baseAddress!), dp = UncheckedSendable(d.baseAddress!)
                    parallelFor(n, minPerChunk: 1 << 20) { r in
                        (dp.value + r.lowerBound).update(from: sp.value + r.lowerBound, count: r.count)
                    }
                }
            }
            best = min(best, Date().timeIntervalSince(t0))
        }
        return 2 * Double(n * 4) / best / 1e9
    }

    /// Packs a random (out, in) weight at `bits` (one width for every row) and times dequantization
    /// of the whole matrix; returns GB/s of fp32 written and the ratio to copy bandwidth.
    public static func run(out: Int = 4096, in inF: Int = 4096, bits: [Int] = [1, 2, 4], repeats: Int = 5) throws
        -> [String: Any]
    {
        var rng = SplitMix64(seed: 9)
        let w = (0..<(out * inF)).map { _ in Float(rng.nextUnit() - 0.5) }
        var opts = QuantizerOptions()
        opts.lloydIterations = 0
        opts.precisions = bits
        let analysis = analyzeTensor(w, out: out, in: inF, options: opts)
        let bandwidth = copyBandwidth()
        var result: [String: Any] = ["shape": [out, inF], "copy_bandwidth_gbs": bandwidth]
        var buffer = [Float](repeating: 0, count: out * inF)
        for b in bits {
            let packed = try analysis.pack(w, bits: [UInt8](repeating: UInt8(b), count: out))
            var best = Double.infinity
            for _ in 0..<repeats {
                let t0 = Date()
                buffer.withUnsafeMutableBufferPointer { packed.dequantize(into: $0.baseAddress!) }
                best = min(best, Date().timeIntervalSince(t0))
            }
            let gbs = Double(out * inF * 4) / best / 1e9
            result["dequant_\(b)bit_gbs"] = gbs
            result["dequant_\(b)bit_to_copy_ratio"] = gbs / bandwidth
        }
        return result
    }
}
