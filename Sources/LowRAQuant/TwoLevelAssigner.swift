import Foundation
import LowRATensor

extension PrecisionAssigner {
    /// The paper's two-level ILP (Algorithm 1): channels grouped by parameter count, the budget
    /// split by group size, K-Means (k ≤ 128) on each group's error vectors, a cluster-level ILP
    /// deciding how many channels of each cluster get each precision, then an intra-cluster ILP
    /// choosing which ones. Both ILPs are solved with CBC.
    /// progress(done, total) counts clusters.
    public static func twoLevelILP(
        _ channels: [ChannelErrors], precisions: [Int], budgetBits: Int, clusters maxClusters: Int = 128,
        seed: UInt64 = 0, progress: ((Int, Int) -> Void)? = nil
    ) throws -> Assignment {
        let ps = precisions.sorted()
        var groups = [Int: [Int]]()  // parameter count -> channel indices
        for (i, c) in channels.enumerated() { groups[c.parameters, default: []].append(i) }
        let totalParams = channels.reduce(0) { $0 + $1.parameters }
        var choice = [Int](repeating: 0, count: channels.count)
        var done = 0
        let totalClusters = groups.values.reduce(0) { $0 + min(maxClusters, $1.count) }
        for (size, members) in groups.sorted(by: { $0.key < $1.key }) {
            let groupBudget = Int(Double(budgetBits) * Double(size * members.count) / Double(totalParams))
            guard ps[0] * size * members.count <= groupBudget else {
                throw LowRAError(.invalidArgument, "the budget is below the lowest precision allowed (\(ps[0]) bit)")
            }
            // Step 3: K-Means on per-channel MSE vectors.
            let features = members.map { i in ps.indices.map { channels[i].errors[$0] / Double(size) } }
            let k = min(maxClusters, members.count)
            let label = kMeans(features, k: k, iterations: 25, seed: seed)
            var clusterMembers = [[Int]](repeating: [], count: k)
            for (j, l) in label.enumerated() { clusterMembers[l].append(members[j]) }
            clusterMembers.removeAll { $0.isEmpty }

            // Step 4: cluster-level ILP.
            var ilp = IntegerProgram()
            var y = [[Int]]()
            for cm in clusterMembers {
                y.append(
                    ps.indices.map { p in
                        let cost = cm.reduce(0.0) { $0 + channels[$1].errors[p] } / Double(cm.count)
                        return ilp.addVariable(upper: Double(cm.count), cost: cost)
                    })
            }
            for (c, cm) in clusterMembers.enumerated() {
                ilp.addConstraint(y[c].map { ($0, 1) }, .equal, Double(cm.count))
            }
            ilp.addConstraint(
                y.flatMap { vars in vars.enumerated().map { ($0.element, Double(ps[$0.offset] * size)) } },
                .lessEqual, Double(groupBudget))
            let counts = try ilp.solve().values

            // Step 5: intra-cluster ILP (a transportation problem) for each cluster.
            for (c, cm) in clusterMembers.enumerated() {
                let want = ps.indices.map { Int(counts[y[c][$0]].rounded()) }
                if let only = want.firstIndex(of: cm.count) {
                    for i in cm { choice[i] = only }
                } else {
                    var intra = IntegerProgram()
                    let x = cm.map { i in ps.indices.map { intra.addVariable(upper: 1, cost: channels[i].errors[$0]) } }
                    for xi in x { intra.addConstraint(xi.map { ($0, 1) }, .equal, 1) }
                    for p in ps.indices { intra.addConstraint(x.map { ($0[p], 1) }, .equal, Double(want[p])) }
                    let sol = try intra.solve().values
                    for (j, i) in cm.enumerated() {
                        choice[i] = ps.indices.max { sol[x[j][$0]] < sol[x[j][$1]] }!
                    }
                }
                done += 1
                progress?(done, totalClusters)
            }
        }
        let used = zip(choice, channels).reduce(0) { $0 + ps[$1.0] * $1.1.parameters }
        let err = zip(choice, channels).reduce(0.0) { $0 + $1.1.errors[$1.0] }
        return Assignment(
            bits: choice.map { UInt8(ps[$0]) }, totalError: err, usedBits: used, budgetBits: budgetBits, lowerBound: nil
        )
    }

    /// Plain K-Means with k-means++ seeding; returns each point's cluster.
    static func kMeans(_ points: [[Double]], k: Int, iterations: Int, seed: UInt64) -> [Int] {
        let n = points.count, d = points.first?.count ?? 0
        guard n > k else { return Array(0..<n) }
        var rng = SplitMix64(seed: seed)
        func dist(_ a: [Double], _ b: [Double]) -> Double {
            var s = 0.0
            for i in 0..<d { s += (a[i] - b[i]) * (a[i] - b[i]) }
            return s
        }
        var centers = [points[Int(rng.next() % UInt64(n))]]
        var nearest = points.map { dist($0, centers[0]) }
        while centers.count < k {
            let total = nearest.reduce(0, +)
            var u = rng.nextUnit() * total
            var pick = n - 1
            for i in 0..<n {
                u -= nearest[i]
                if u <= 0 { pick = i; break }
            }
            if total == 0 { pick = centers.count }  // all points coincide with centers
            centers.append(points[pick])
            for i in 0..<n { nearest[i] = min(nearest[i], dist(points[i], points[pick])) }
        }
        var label = [Int](repeating: 0, count: n)
        for _ in 0..<iterations {
            var next = [Int](repeating: 0, count: n)
            next.withUnsafeMutableBufferPointer { nb in
                let out = UncheckedSendable(nb.baseAddress!)
                parallelFor(n, minPerChunk: 256) { range in
                    for i in range {
                        var best = 0, bd = Double.infinity
                        for c in 0..<k {
                            let dd = dist(points[i], centers[c])
                            if dd < bd { bd = dd; best = c }
                        }
                        out.value[i] = best
                    }
                }
            }
            let changed = next != label
            label = next
            var sums = [[Double]](repeating: [Double](repeating: 0, count: d), count: k)
            var counts = [Int](repeating: 0, count: k)
            for i in 0..<n {
                counts[label[i]] += 1
                for j in 0..<d { sums[label[i]][j] += points[i][j] }
            }
            for c in 0..<k where counts[c] > 0 { centers[c] = sums[c].map { $0 / Double(counts[c]) } }
            if !changed { break }
        }
        return label
    }
}
