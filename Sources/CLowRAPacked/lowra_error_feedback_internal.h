// What the error-feedback kernels share (lowra_error_feedback.c, arch/x86/error_feedback_*.c).
#ifndef LOWRA_ERROR_FEEDBACK_INTERNAL_H
#define LOWRA_ERROR_FEEDBACK_INTERNAL_H

#include <stdint.h>

#include "lowra_kernels.h"

/// The widest column block the vector paths hold in their on-stack tiles (wider blocks run the
/// reference).
#define LOWRA_EF_MAX_COLUMNS 256

/// The arguments of lowra_error_feedback (lowra_kernels.h), rows left to each call.
typedef struct lowra_error_feedback_args {
    float *w;
    uint64_t n, i1, i2;
    const float *u, *scales;
    uint64_t scale_stride, block_size;
    const float *levels, *thresholds;
    uint8_t *codes;
    double *errors;
    float *e;
} lowra_error_feedback_args;

// The vector paths' tiles: rows r0 ..< r0 + lanes of the block, transposed (tile[c * lanes + i] is
// row r0 + i at column i1 + c), and their thresholds (th[t * lanes + i]).
static inline void lowra_ef_load(const lowra_error_feedback_args *a, uint64_t r0, unsigned lanes, float *tile,
                                 float *th) {
    for (unsigned i = 0; i < lanes; i++) {
        const float *row = a->w + (r0 + i) * a->n + a->i1;
        for (uint64_t c = 0; c < a->i2 - a->i1; c++) tile[c * lanes + i] = row[c];
        const float *row_th = a->thresholds + (r0 + i) * (LOWRA_EF_LEVELS - 1);
        for (unsigned t = 0; t < LOWRA_EF_LEVELS - 1; t++) th[t * lanes + i] = row_th[t];
    }
}

// The tiles back: the block's weights, codes and scaled errors, and the rows' error sums.
static inline void lowra_ef_store(const lowra_error_feedback_args *a, uint64_t r0, unsigned lanes, const float *tile,
                                  const uint8_t *codes, const float *errors, const double *sums) {
    const uint64_t cols = a->i2 - a->i1;
    for (unsigned i = 0; i < lanes; i++) {
        const uint64_t r = r0 + i;
        float *row = a->w + r * a->n + a->i1;
        for (uint64_t c = 0; c < cols; c++) {
            row[c] = tile[c * lanes + i];
            a->codes[r * a->n + a->i1 + c] = codes[c * lanes + i];
            a->e[r * cols + c] = errors[c * lanes + i];
        }
        a->errors[r] = sums[i];
    }
}

void lowra_error_feedback_rows_scalar(const lowra_error_feedback_args *a, uint64_t r0, uint64_t r1);
void lowra_error_feedback_rows_avx2(const lowra_error_feedback_args *a, uint64_t r0, uint64_t r1);
void lowra_error_feedback_rows_avx512(const lowra_error_feedback_args *a, uint64_t r0, uint64_t r1);

#endif
