import Foundation

/// Resident memory of this process from /proc (Linux); zeros where unavailable.
public struct MemoryStats: Sendable {
    public var residentBytes: Int
    public var peakResidentBytes: Int

    public static func current() -> MemoryStats {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else {
            return MemoryStats(residentBytes: 0, peakResidentBytes: 0)
        }
        func kb(_ key: String) -> Int {
            guard let line = s.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return 0 }
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0) * 1024
        }
        return MemoryStats(residentBytes: kb("VmRSS:"), peakResidentBytes: kb("VmHWM:"))
    }
}
