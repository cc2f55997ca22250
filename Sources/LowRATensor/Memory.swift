import CLowRAPacked
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
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0)
                * 1024
        }
        return MemoryStats(residentBytes: kb("VmRSS:"), peakResidentBytes: kb("VmHWM:"))
    }

    /// Hands the allocator's free memory back to the system (glibc's `malloc_trim`). Once a freed
    /// block of 32 MB has raised glibc's mmap threshold, buffers below it come from the heap and
    /// per-thread arenas, whose free pages stay resident: between the layers of a large model
    /// that is gigabytes. A no-op elsewhere.
    public static func returnFreeMemory() { lowra_return_free_memory() }
}

/// A one-line description of the machine, for reports: CPU model, cores, memory, OS.
public enum MachineInfo {
    public static func describe() -> String {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let cpu =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) }
            ?? "unknown CPU"
        let osRelease = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let os =
            osRelease.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { $0.dropFirst("PRETTY_NAME=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            ?? "unknown OS"
        let gib = Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)
        return String(
            format: "%@, %d cores, %.0f GiB RAM, %@", cpu, ProcessInfo.processInfo.activeProcessorCount, gib, os)
    }
}
