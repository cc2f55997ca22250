import Foundation
import XCTest

@testable import LowRAModel
@testable import LowRATensor

/// The shelf page (`GET /`) in a real browser: headless Chromium driven by Selenium
/// (`scripts/browser_check.py`) finds the adapters and a refusal's reason, and a chat streamed
/// through the page equals `lowra generate --chat`. Skipped without Chromium (`make test` requires it).
final class ShelfPageTests: XCTestCase {
    func testShelfPageInHeadlessChromium() throws {
        let tools = ["/usr/bin/chromium", "/usr/bin/chromedriver", "/usr/bin/python3"]
        let selenium = (try? runProcess("/usr/bin/python3", ["-c", "import selenium"]).status) == 0
        guard tools.allSatisfy({ FileManager.default.isExecutableFile(atPath: $0) }), selenium else {
            if ProcessInfo.processInfo.environment["LOWRA_REQUIRE_BROWSER"] != nil {
                XCTFail("chromium, chromium-driver or python3-selenium is missing: scripts/setup.sh installs them")
            }
            throw XCTSkip("no headless Chromium with Selenium")
        }
        let f = try ServeTests.fixture()
        let dir = try temporaryDirectory(self)
        let (prompt, tokens) = ("Hello there", 12)
        let g = try runProcess(
            Paths.lowraBinary,
            [
                "generate", "--model", f.base, "--adapter", "\(f.shelf)/bravo", "--chat", "--prompt", prompt,
                "--max-new-tokens", "\(tokens)", "--temperature", "0",
            ])
        XCTAssertEqual(g.status, 0, g.err)
        try String(g.out.dropLast()).write(toFile: "\(dir)/expected.txt", atomically: true, encoding: .utf8)
        let server = try ServeTests.Server(["--model", f.base, "--shelf", f.shelf])
        let started = Date()
        let r = try runProcess(
            "/usr/bin/python3",
            [
                "\(Paths.repo)/scripts/browser_check.py", server.url + "/", "bravo", prompt, "\(tokens)",
                "\(dir)/expected.txt", "retired",
            ])
        XCTAssertEqual(r.status, 0, r.err + r.out)
        XCTAssertLessThan(Date().timeIntervalSince(started), 60, "the browser test takes under a minute")
        print(r.out)
    }
}
