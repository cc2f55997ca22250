import Foundation
import LowRATensor

/// One output channel as precision assignment sees it: its parameter count and its error at each
/// allowed precision.
public struct ChannelErrors: Sendable {
    public var parameters: Int
    /// errors[i] is the error at precisions[i].
    public var errors: [Double]

    public init(parameters: Int, errors: [Double]) {
        self.parameters = parameters
        self.errors = errors
    }
}

/// A precision per channel, with what it costs.
public struct Assignment: Sendable {
    public var bits: [UInt8]
    public var totalError: Double
    public var usedBits: Int
    public var budgetBits: Int
    /// Lower bound on the optimal total error (LP relaxation), when the method gives one.
    public var lowerBound: Double?
    public var gap: Double? { lowerBound.map { totalError > 0 ? (totalError - $0) / totalError : 0 } }
}

public enum PrecisionAssigner {
    /// The exact global assigner: a multiple-choice knapsack over every channel, solved by its LP
    /// relaxation. Each channel's options are reduced to their lower convex hull in (bits, error);
    /// every hull step is an upgrade with a price (error removed per bit). Taking upgrades in order
    /// of price is exactly the Lagrangian/LP optimum; the one that would cross the budget is
    /// skipped and cheaper ones keep filling the budget (greedy repair). The LP value certifies
    /// the gap.
    public static func exact(_ channels: [ChannelErrors], precisions: [Int], budgetBits: Int) throws -> Assignment {
        let ps = precisions.sorted()
        guard let pMin = ps.first else { throw LowRAError(.invalidArgument, "no precisions given") }
        let minBits = channels.reduce(0) { $0 + $1.parameters * pMin }
        guard minBits <= budgetBits else {
            throw LowRAError(
                .invalidArgument,
                String(
                    format: "the budget of %.4f bits/param is below the lowest precision allowed (%d bit)",
                    Double(budgetBits) / Double(max(1, channels.reduce(0) { $0 + $1.parameters })), pMin))
        }
        // Hull steps of each channel: (channel, to-option index, bits added, error removed).
        struct Step { var channel: Int32; var to: Int8; var dBits: Int32; var dErr: Double; var price: Double }
        var steps = [Step]()
        steps.reserveCapacity(channels.count * (ps.count - 1))
        var choice = [Int8](repeating: 0, count: channels.count)
        var total = 0.0
        for (c, ch) in channels.enumerated() {
            // Lower convex hull from the cheapest option, keeping only error-reducing steps.
            var hull = [0]
            for i in 1..<ps.count {
                while hull.count >= 2 {
                    let a = hull[hull.count - 2], b = hull[hull.count - 1]
                    let s1 = (ch.errors[b] - ch.errors[a]) / Double(ps[b] - ps[a])
                    let s2 = (ch.errors[i] - ch.errors[b]) / Double(ps[i] - ps[b])
                    if s2 <= s1 { hull.removeLast() } else { break }
                }
                if ch.errors[i] < ch.errors[hull.last!] { hull.append(i) }
            }
            total += ch.errors[0]
            for k in 1..<hull.count {
                let a = hull[k - 1], b = hull[k]
                let db = (ps[b] - ps[a]) * ch.parameters
                let de = ch.errors[a] - ch.errors[b]
                steps.append(Step(channel: Int32(c), to: Int8(b), dBits: Int32(db), dErr: de, price: de / Double(db)))
            }
        }
        steps.sort { $0.price > $1.price }
        var used = minBits
        var lowerBound: Double?
        var blocked = [Bool](repeating: false, count: channels.count)
        for s in steps {
            let c = Int(s.channel)
            if blocked[c] { continue }
            if used + Int(s.dBits) <= budgetBits {
                used += Int(s.dBits)
                total -= s.dErr
                choice[c] = s.to
            } else {
                if lowerBound == nil {
                    // LP optimum: the remaining budget buys a fraction of this step.
                    lowerBound = total - s.dErr * Double(budgetBits - used) / Double(s.dBits)
                }
                blocked[c] = true
            }
        }
        // Repair: spend what is left on any upgrade (hull or not) that still fits, best price first.
        var improved = true
        while improved && used < budgetBits {
            improved = false
            var cands = [(c: Int, to: Int, db: Int, de: Double)]()
            for (c, ch) in channels.enumerated() {
                let a = Int(choice[c])
                for b in (a + 1)..<ps.count where ch.errors[b] < ch.errors[a] {
                    let db = (ps[b] - ps[a]) * ch.parameters
                    if used + db <= budgetBits { cands.append((c, b, db, ch.errors[a] - ch.errors[b])) }
                }
            }
            cands.sort { $0.de / Double($0.db) > $1.de / Double($1.db) }
            var touched = Set<Int>()
            for cand in cands where !touched.contains(cand.c) && used + cand.db <= budgetBits {
                used += cand.db
                total -= cand.de
                choice[cand.c] = Int8(cand.to)
                touched.insert(cand.c)
                improved = true
            }
        }
        // A uniform precision that fits is a valid answer too; never return worse than the best.
        for k in ps.indices where ps[k] * channels.reduce(0, { $0 + $1.parameters }) <= budgetBits {
            let e = channels.reduce(0.0) { $0 + $1.errors[k] }
            if e < total {
                total = e
                choice = [Int8](repeating: Int8(k), count: channels.count)
                used = channels.reduce(0) { $0 + $1.parameters * ps[k] }
            }
        }
        return Assignment(
            bits: choice.map { UInt8(ps[Int($0)]) }, totalError: total, usedBits: used, budgetBits: budgetBits,
            lowerBound: min(lowerBound ?? total, total))
    }

    /// The layer-wise baseline (qlora/loftq, as LoftQ mixes precisions): every channel of a tensor
    /// gets the same precision; a budget between two precisions gives whole tensors the higher
    /// one, earliest first, as long as the budget allows.
    /// tensors: parameter count of each tensor in model order.
    public static func layerwise(tensorParameters: [Int], precisions: [Int], budgetBits: Int) throws -> [Int] {
        let ps = precisions.sorted()
        let total = tensorParameters.reduce(0, +)
        // The highest precision p with total * p <= budget; then upgrade early tensors to the next.
        guard let low = ps.last(where: { $0 * total <= budgetBits }) else {
            throw LowRAError(
                .invalidArgument,
                String(
                    format: "the budget of %.4f bits/param is below the lowest precision allowed (%d bit)",
                    Double(budgetBits) / Double(total), ps[0]))
        }
        var out = [Int](repeating: low, count: tensorParameters.count)
        guard let high = ps.first(where: { $0 > low }) else { return out }
        var used = low * total
        for (i, n) in tensorParameters.enumerated() where used + (high - low) * n <= budgetBits {
            out[i] = high
            used += (high - low) * n
        }
        return out
    }
}
