import LowRAQuant
import Foundation
import LowRATensor

/// A synthetic precision-assignment problem shaped like LLaMA-2-7B (rows of 4096 and 11008
/// inputs in its proportions), for timing the assigners at scale.
public enum AssignerBenchmark {
    public static func problem(channels n: Int, seed: UInt64 = 1) -> [ChannelErrors] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { i in
            // 7B: per layer 4 x 4096 rows of 4096 (q,k,v,o), 2 x 11008 rows of 4096, 4096 rows of 11008.
            let size = i % 47 < 6 ? 11008 : 4096
            let e1 = Double(size) * (0.5 + 2 * rng.nextUnit()) * (rng.nextUnit() < 0.05 ? 8 : 1)
            let e2 = e1 * (0.2 + 0.2 * rng.nextUnit())
            return ChannelErrors(parameters: size, errors: [e1, e2, e2 * (0.05 + 0.1 * rng.nextUnit())])
        }
    }

    public static func run(channels: Int, bits: Double, includeILP: Bool) throws -> [String: Any] {
        let ch = problem(channels: channels)
        let params = ch.reduce(0) { $0 + $1.parameters }
        let budget = Int(Double(params) * bits)
        let ps = bits < 2 ? [1, 2, 4] : [2, 4]
        let input =
            ps.count == 3
            ? ch : ch.map { ChannelErrors(parameters: $0.parameters, errors: Array($0.errors.dropFirst())) }
        let t0 = Date()
        let exact = try PrecisionAssigner.exact(input, precisions: ps, budgetBits: budget)
        var out: [String: Any] = [
            "channels": channels, "parameters": params, "target_bits": bits,
            "exact_seconds": Date().timeIntervalSince(t0),
            "exact_bits_per_param": Double(exact.usedBits) / Double(params),
            "exact_total_error": exact.totalError, "exact_gap_to_lp_bound": exact.gap ?? 0,
        ]
        if includeILP {
            let t1 = Date()
            let two = try PrecisionAssigner.twoLevelILP(input, precisions: ps, budgetBits: budget)
            out["ilp_seconds"] = Date().timeIntervalSince(t1)
            out["ilp_total_error"] = two.totalError
            out["ilp_bits_per_param"] = Double(two.usedBits) / Double(params)
        }
        return out
    }
}
