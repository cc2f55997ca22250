// Kernels that multiply straight from the packed format (lowra_packed.h), never expanding W:
// Y = X W^T for a few columns (decode: one; a batch of sequences: up to LOWRA_MAX_COLUMNS).
//
// The table of kernels: one function per instruction-set path, chosen at run time.
//   LOWRA_PATH_SCALAR  portable C (any CPU; the arm64 build uses it until a NEON path exists)
//   LOWRA_PATH_AVX2    x86-64 with AVX2 + FMA: 8 lanes, each row's levels in two registers
//   LOWRA_PATH_AVX512  x86-64 with AVX-512 F/BW: 16 lanes, each row's levels in one register
// Per block of 64 inputs the row's levels are scaled once by the block's absmax; codes are
// unpacked in registers (variable shifts) and looked up with a lane permute, then multiplied
// into the columns with fused multiply-adds.
#ifndef LOWRA_KERNELS_H
#define LOWRA_KERNELS_H

#include "lowra_packed.h"

#define LOWRA_MAX_COLUMNS 8

enum lowra_kernel_path { LOWRA_PATH_SCALAR = 0, LOWRA_PATH_AVX2 = 1, LOWRA_PATH_AVX512 = 2 };

/// One packed weight as the kernels read it: pointers into its arrays or its mapped file.
typedef struct {
    uint64_t out, in;
    const uint8_t *bits;           // (out)
    const uint8_t *codes;          // packed rows
    const int64_t *row_offsets;    // (out + 1): byte offset of each row in codes
    const float *levels;           // codebooks
    const int64_t *level_offsets;  // (out): first level of each row
    const float *absmax;           // plain block scales (out * nb), or NULL when double-quantized
    const uint8_t *absmax_codes;   // double-quantized: (out * nb) codes
    const float *absmax_scales;    // double-quantized: one scale per LOWRA_DQ_GROUP blocks
} lowra_packed_view;

/// The fastest path this CPU runs (honouring LOWRA_KERNEL=scalar|avx2|avx512 to force a slower one).
int lowra_kernel_best_path(void);
/// Whether this CPU can run `path`.
int lowra_kernel_path_supported(int path);
/// "scalar", "avx2" or "avx512".
const char *lowra_kernel_path_name(int path);

/// Y[c][r] = sum_j X[c][j] W[r][j] for rows r0 <= r < r1 and columns c < n (1...LOWRA_MAX_COLUMNS);
/// X is (n, in) row-major, Y has leading dimension ldy (Y[c][r] at y[c * ldy + r]).
void lowra_packed_gemm(int path, const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                       uint64_t r0, uint64_t r1);

/// Stored (unquantized) matrices in their file's encoding, by ggml type number: F32 (0), F16 (1),
/// Q4_0 (2), Q4_1 (3), Q8_0 (8), BF16 (30). Rows are `row_bytes` apart starting at `rows`.
int lowra_stored_gemm_supports(unsigned ggml_type);
/// Y[c][r] = sum_j X[c][j] W[r][j] for rows r0 <= r < r1 of a stored matrix, as lowra_packed_gemm.
void lowra_stored_gemm(int path, unsigned ggml_type, const uint8_t *rows, uint64_t row_bytes, uint64_t in,
                       const float *x, uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1);

#endif
