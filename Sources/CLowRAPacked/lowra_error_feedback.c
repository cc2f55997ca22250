// Error feedback's inner loop (GPTQ's column sweep inside one block of columns), the part of the
// quantizer that runs column by column: the scalar reference, row by row, and the dispatch. The
// vector paths (arch/x86/error_feedback_*.c) take 16 or 8 rows at a time, one row per lane, so that
// each row sees the same operations in the same order: the results are the reference's bit for bit.
#include "lowra_error_feedback_internal.h"
#include "lowra_kernels_internal.h"

LOWRA_NO_CONTRACT void lowra_error_feedback_rows_scalar(const lowra_error_feedback_args *a, uint64_t r0,
                                                        uint64_t r1) {
#pragma STDC FP_CONTRACT OFF
    const uint64_t n = a->n, i1 = a->i1, i2 = a->i2, cols = i2 - i1;
    for (uint64_t r = r0; r < r1; r++) {
        float *row = a->w + r * n;
        const float *lv = a->levels + r * LOWRA_EF_LEVELS;
        const float *th = a->thresholds + r * (LOWRA_EF_LEVELS - 1);
        double sum = a->errors[r];
        for (uint64_t j = i1; j < i2; j++) {
            const float s = a->scales[r * a->scale_stride + j / a->block_size];
            const float x = row[j];
            unsigned c = 0;
            if (s > 0) {
                const float y = x / s;
                for (unsigned t = 0; t < LOWRA_EF_LEVELS - 1; t++) c += y > th[t];
            }
            const float q = s > 0 ? s * lv[c] : 0;
            a->codes[r * n + j] = (uint8_t)c;
            const float err = (x - q) / a->u[j * n + j];
            a->e[r * cols + (j - i1)] = err;
            sum += (double)err * (double)err;
            const float *uj = a->u + j * n;
            for (uint64_t t = j + 1; t < i2; t++) row[t] -= err * uj[t];
        }
        a->errors[r] = sum;
    }
}

void lowra_error_feedback(int path, float *w, uint64_t n, uint64_t r0, uint64_t r1, uint64_t i1, uint64_t i2,
                          const float *u, const float *scales, uint64_t scale_stride, uint64_t block_size,
                          const float *levels, const float *thresholds, uint8_t *codes, double *errors, float *e) {
    if (r1 <= r0 || i2 <= i1) return;
    const lowra_error_feedback_args a = {
        .w = w, .n = n, .i1 = i1, .i2 = i2, .u = u, .scales = scales, .scale_stride = scale_stride,
        .block_size = block_size, .levels = levels, .thresholds = thresholds, .codes = codes, .errors = errors, .e = e};
    if (i2 - i1 > LOWRA_EF_MAX_COLUMNS) {
        lowra_error_feedback_rows_scalar(&a, r0, r1);
        return;
    }
    lowra_kernels_for(path)->error_feedback(&a, r0, r1);
}
