#include "lowra_comm.h"

#include <stdio.h>
#include <string.h>

#ifdef LOWRA_HAVE_MPI
#include <mpi.h>

static int initialized = 0;

int lowra_comm_available(void) { return 1; }

static int report(int code, const char *what, char *error, int error_len) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", code);
    if (error && error_len > 0) snprintf(error, (size_t)error_len, "%s: %s", what, text);
    return code;
}

int lowra_comm_init(int *rank, int *size, int *local_size, char *error, int error_len) {
    int rc;
    if (!initialized) {
        int already = 0;
        MPI_Initialized(&already);
        if (!already && (rc = MPI_Init(NULL, NULL)) != MPI_SUCCESS) return report(rc, "MPI_Init", error, error_len);
        // Errors come back as codes (reported with their text) instead of aborting inside MPI.
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        initialized = 1;
    }
    if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, rank)) != MPI_SUCCESS) return report(rc, "MPI_Comm_rank", error, error_len);
    if ((rc = MPI_Comm_size(MPI_COMM_WORLD, size)) != MPI_SUCCESS) return report(rc, "MPI_Comm_size", error, error_len);
    MPI_Comm node;
    if ((rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &node)) != MPI_SUCCESS)
        return report(rc, "MPI_Comm_split_type", error, error_len);
    MPI_Comm_size(node, local_size);
    MPI_Comm_free(&node);
    return 0;
}

// MPI counts are ints: a large buffer goes in pieces of at most 2^30 elements.
#define LOWRA_COMM_PIECE ((int64_t)1 << 30)

static int allreduce_sum(char *values, int64_t count, MPI_Datatype type, size_t size) {
    for (int64_t at = 0; at < count; at += LOWRA_COMM_PIECE) {
        int n = (int)(count - at < LOWRA_COMM_PIECE ? count - at : LOWRA_COMM_PIECE);
        int rc = MPI_Allreduce(MPI_IN_PLACE, values + (size_t)at * size, n, type, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return rc;
    }
    return 0;
}

int lowra_comm_allreduce_float(float *values, int64_t count) {
    return allreduce_sum((char *)values, count, MPI_FLOAT, sizeof(float));
}

int lowra_comm_allreduce_double(double *values, int64_t count) {
    return allreduce_sum((char *)values, count, MPI_DOUBLE, sizeof(double));
}

int lowra_comm_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }

void lowra_comm_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Finalize();
}

void lowra_comm_abort(int code) {
    if (initialized) MPI_Abort(MPI_COMM_WORLD, code);
}

#else

int lowra_comm_available(void) { return 0; }

int lowra_comm_init(int *rank, int *size, int *local_size, char *error, int error_len) {
    *rank = 0;
    *size = 1;
    *local_size = 1;
    if (error && error_len > 0)
        snprintf(error, (size_t)error_len,
                 "this build of lowra has no MPI: install Open MPI's development files (Debian: apt install "
                 "libopenmpi-dev openmpi-bin) and rebuild");
    return 1;
}

int lowra_comm_allreduce_float(float *values, int64_t count) { (void)values; (void)count; return 1; }
int lowra_comm_allreduce_double(double *values, int64_t count) { (void)values; (void)count; return 1; }
int lowra_comm_barrier(void) { return 1; }
void lowra_comm_finalize(void) {}
void lowra_comm_abort(int code) { (void)code; }

#endif
