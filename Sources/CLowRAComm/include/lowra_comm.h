// The few collective operations data-parallel training needs, over MPI when the package was built
// with it (Package.swift adds LOWRA_HAVE_MPI when Open MPI's development files are installed) and
// reporting "not built with MPI" otherwise, so that nothing else in LowRA depends on MPI's headers.
#ifndef LOWRA_COMM_H
#define LOWRA_COMM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when this build can run distributed (linked with MPI), 0 otherwise.
int lowra_comm_available(void);

/// Initializes MPI once (a process started without mpirun becomes a world of one). Writes this
/// process's rank, the world size and the ranks on this host; on failure returns nonzero and a
/// message in `error` (NUL-terminated, at most `error_len` bytes).
int lowra_comm_init(int *rank, int *size, int *local_size, char *error, int error_len);

/// Sums `count` values element-wise over all ranks, in place; every rank gets the same result.
int lowra_comm_allreduce_float(float *values, int64_t count);
int lowra_comm_allreduce_double(double *values, int64_t count);

/// Waits until every rank has arrived.
int lowra_comm_barrier(void);

/// Leaves MPI cleanly (after the last collective); a no-op when it was never initialized.
void lowra_comm_finalize(void);

/// Ends every rank of the job with `code` (after an error on one rank).
void lowra_comm_abort(int code);

#ifdef __cplusplus
}
#endif

#endif
