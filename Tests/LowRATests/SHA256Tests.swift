import Foundation
import XCTest

@testable import LowRATensor

/// Fingerprints through swift-crypto: FIPS 180-4's vectors, and streaming equals one shot.
final class SHA256Tests: XCTestCase {
    func testKnownVectorsAndStreaming() {
        XCTAssertEqual(SHA256.hex([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(
            SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // FIPS 180-4 B.2, as Python's hashlib gives it.
        XCTAssertEqual(
            SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        var rng = SplitMix64(seed: 3)
        let data = (0..<1_000_003).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var s = SHA256()
        var at = 0
        while at < data.count {
            let n = min(data.count - at, Int(rng.next() % 70_000))
            data[at..<(at + n)].withUnsafeBytes { s.update($0) }
            at += n
        }
        XCTAssertEqual(s.finalize(), SHA256.hex(data))
        XCTAssertEqual(SHA256.hex(data.lazy.map { $0 }), SHA256.hex(data))  // a non-contiguous sequence
    }
}
