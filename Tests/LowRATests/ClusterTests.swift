import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRAPipeline
@testable import LowRATensor

/// Two `lowra serve` replicas behind HAProxy with the committed `deploy/haproxy.cfg`, on loopback:
/// `scripts/cluster_check.py` does the checking (adapter affinity from each replica's metrics, every
/// answer equal to `lowra generate`, a replica killed mid-stream, failover, the shelf unchanged).
/// Skipped without HAProxy (`make test` requires it).
final class ClusterTests: XCTestCase {
    func testHAProxyAffinityAndFailover() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/haproxy") else {
            if ProcessInfo.processInfo.environment["LOWRA_REQUIRE_CLUSTER"] != nil {
                XCTFail("haproxy is missing: scripts/setup.sh installs it")
            }
            throw XCTSkip("haproxy is not installed")
        }
        let base = try ServeTests.fixture().base
        let dir = try temporaryDirectory(self)
        let shelf = "\(dir)/shelf"
        let loaded = try LoadedModel.load(base)
        var rng = SplitMix64(seed: 31)
        let names = ["ada", "basil", "cleo", "dora", "emil", "fern", "gus", "hana"]
        for n in names { try ServeTests.makeAdapter(n, base: base, loaded: loaded, shelf: shelf, rng: &rng) }
        let r = try runProcess(
            "/usr/bin/env",
            [
                "python3", "\(Paths.repo)/scripts/cluster_check.py", Paths.lowraBinary, base, shelf, "--json",
                "\(dir)/r.json",
            ],
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"])
        XCTAssertEqual(r.status, 0, r.err + r.out)
        guard r.status == 0 else { return }
        print("cluster check: \(r.out)")  // the measured affinity and failover times, in the test log
        let result = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/r.json")))
        let o = try XCTUnwrap(result as? [String: Any])
        XCTAssertEqual(o["adapters"] as? Int, names.count)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(o["min_home_share"] as? Double), 0.95)
        // Both replicas hold some adapters (the hash spreads these eight names over both).
        let homes = Set(try XCTUnwrap(o["home_replica"] as? [String: String]).values)
        XCTAssertEqual(homes.count, 2, "\(o)")
        XCTAssertLessThan(try XCTUnwrap(o["client_error_seconds"] as? Double), 15)
    }
}
