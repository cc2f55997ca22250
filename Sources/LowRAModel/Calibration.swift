import Foundation
import LowRATensor

/// Second moments E[x_j²] of every linear layer's inputs over a calibration text: with them the
/// quantizer weighs each weight's error by how strongly its input column is used, so the error
/// it minimizes is that of the layer's output rather than of the weights alone.
public struct CalibrationStats: Codable, Sendable {
    public var source: String
    public var tokens: Int
    /// Hugging Face linear name -> E[x_j²] for each input column j.
    public var columns: [String: [Float]]
}

extension LlamaModel {
    /// Runs `tokens` in windows of `context` and averages x² per input column of every linear.
    public func calibrate(
        tokens: [Int], context: Int, source: String, progress: ((Int, Int) -> Void)? = nil
    ) throws -> CalibrationStats {
        guard tokens.count >= 2 else { throw LowRAError(.invalidArgument, "calibration needs at least 2 tokens") }
        let c = config
        var sums = [[LinearInput: [Double]]](repeating: [:], count: c.numLayers)
        for l in 0..<c.numLayers {
            for kind in LinearKind.allCases { sums[l][kind.input] = [Double](repeating: 0, count: kind.shape(c).in) }
        }
        let window = min(context, c.maxPositions)
        let cache = KVCache(config: c, capacity: window)
        let starts = Array(stride(from: 0, to: tokens.count, by: window))
        for (w, start) in starts.enumerated() {
            progress?(w, starts.count)
            cache.reset()
            _ = try forward(Array(tokens[start..<min(start + window, tokens.count)]), cache: cache, logits: .last) {
                l, site, x, t, n in
                sums[l][site]!.withUnsafeMutableBufferPointer { acc in
                    for r in 0..<t {
                        for j in 0..<n { acc[j] += Double(x[r * n + j]) * Double(x[r * n + j]) }
                    }
                }
            }
        }
        progress?(starts.count, starts.count)
        var columns = [String: [Float]]()
        for l in 0..<c.numLayers {
            for kind in LinearKind.allCases {
                columns[WeightNaming.huggingFace.linear(l, kind)] = sums[l][kind.input]!.map {
                    Float($0 / Double(tokens.count))
                }
            }
        }
        return CalibrationStats(source: source, tokens: tokens.count, columns: columns)
    }
}
