// The stored-matrix kernel for arm64 NEON: a block of 32 elements decoded to fp32 once
// (lowra_stored_decode, as the scalar reference does), then multiplied into every column with fused
// multiply-adds; the scalar reference and the dispatch are in lowra_stored_kernels.c.
#if defined(__aarch64__)

#include "../../lowra_stored_internal.h"

#include <arm_neon.h>

static inline __attribute__((always_inline)) void row_neon(unsigned t, const uint8_t *row, uint64_t in,
                                                           const float *x, const uint64_t n, float *y, uint64_t ldy,
                                                           uint64_t r) {
    float32x4_t acc[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) acc[c] = vdupq_n_f32(0);
    float buf[32];
    uint64_t j = 0;
    for (; j + 32 <= in; j += 32) {
        lowra_stored_decode(t, row, j, 32, buf);
        float32x4_t w[8];
        for (int k = 0; k < 8; k++) w[k] = vld1q_f32(buf + 4 * k);
        for (uint64_t c = 0; c < n; c++) {
            const float *xc = x + c * in + j;
            float32x4_t a = acc[c];
            for (int k = 0; k < 8; k++) a = vfmaq_f32(a, w[k], vld1q_f32(xc + 4 * k));
            acc[c] = a;
        }
    }
    for (uint64_t c = 0; c < n; c++)
        y[c * ldy + r] = lowra_stored_tail_dot(t, row, j, in, x + c * in, vaddvq_f32(acc[c]));
}

void lowra_stored_gemm_neon(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                            uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    LOWRA_STORED_COLUMNS(row_neon)
}

#endif
