import CLowRAComm
import Foundation
import LowRATensor

/// The ranks of a data-parallel run and the collectives the trainer needs (sums over all ranks),
/// over MPI (`lowra_comm.h`) when the process was started by `mpirun`; a world of one otherwise.
/// Every rank gets the same sums, so every rank applies the same update to the same adapter.
public final class Communicator: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Ranks on this host (they share its cores).
    public let localSize: Int
    /// Seconds spent in sums so far, and in barriers (waiting for the slowest rank).
    public private(set) var seconds = 0.0
    public private(set) var waitSeconds = 0.0
    private let mpi: Bool

    private init(rank: Int, size: Int, localSize: Int, mpi: Bool) {
        (self.rank, self.size, self.localSize, self.mpi) = (rank, size, localSize, mpi)
    }

    /// One process, no collectives.
    public static let single = Communicator(rank: 0, size: 1, localSize: 1, mpi: false)

    /// Whether this build was linked with MPI.
    public static var mpiAvailable: Bool { lowra_comm_available() != 0 }

    /// Joins the MPI job this process was started in (a world of one without mpirun).
    public static func mpi() throws -> Communicator {
        var (rank, size, local) = (Int32(0), Int32(1), Int32(1))
        var error = [CChar](repeating: 0, count: 512)
        guard lowra_comm_init(&rank, &size, &local, &error, Int32(error.count)) == 0 else {
            let message = error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            throw LowRAError(.unsupported, String(decoding: message, as: UTF8.self))
        }
        return Communicator(rank: Int(rank), size: Int(size), localSize: Int(local), mpi: true)
    }

    public var isLeader: Bool { rank == 0 }

    /// Thread counts for a process that shares its host with other ranks of an MPI job (Open MPI's
    /// OMPI_COMM_WORLD_LOCAL_SIZE, MPICH's MPI_LOCALNRANKS): the cores divided among them, for
    /// LowRA's pool and OpenBLAS, unless LOWRA_THREADS is set. [:] outside such a job. Read
    /// before anything starts a thread (`LowRACommand.main`).
    public static func threadEnvironment(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        cores: Int = ProcessInfo.processInfo.activeProcessorCount
    ) -> [String: String] {
        guard environment["LOWRA_THREADS"] == nil,
            let local = (environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? environment["MPI_LOCALNRANKS"]).flatMap(Int.init),
            local > 1
        else { return [:] }
        let n = String(max(1, cores / local))
        return ["LOWRA_THREADS": n, "OPENBLAS_NUM_THREADS": n]
    }

    /// Element-wise sum over all ranks, in place.
    public func sum(_ values: inout [Float]) throws {
        guard size > 1 else { return }
        try timed("MPI_Allreduce (float)") { values.withUnsafeMutableBufferPointer {
            lowra_comm_allreduce_float($0.baseAddress, Int64($0.count)) } }
    }

    public func sum(_ values: inout [Double]) throws {
        guard size > 1 else { return }
        try timed("MPI_Allreduce (double)") { values.withUnsafeMutableBufferPointer {
            lowra_comm_allreduce_double($0.baseAddress, Int64($0.count)) } }
    }

    public func barrier() throws {
        guard size > 1 else { return }
        let t = Date()
        let rc = lowra_comm_barrier()
        waitSeconds += Date().timeIntervalSince(t)
        guard rc == 0 else { throw LowRAError(.io, "MPI_Barrier failed on rank \(rank) of \(size) (code \(rc))") }
    }

    /// Leaves MPI after the last collective.
    public func finish() { if mpi { lowra_comm_finalize() } }

    /// Ends every rank (one rank failed; the others would wait for it forever).
    public func abort(code: Int32) { if mpi && size > 1 { lowra_comm_abort(code) } }

    private func timed(_ what: String, _ body: () -> Int32) throws {
        let t = Date()
        let rc = body()
        seconds += Date().timeIntervalSince(t)
        guard rc == 0 else { throw LowRAError(.io, "\(what) failed on rank \(rank) of \(size) (code \(rc))") }
    }
}
