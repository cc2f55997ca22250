// Multiplying stored (unquantized) matrices in their file's encoding — the head and embedding of
// a quantized model, every layer of an unquantized one — without converting them to fp32 first.
// Same paths as the packed kernels (lowra_kernels.h).
#include "lowra_stored_internal.h"

#include <string.h>

int lowra_stored_gemm_supports(unsigned t) {
    return t == T_F32 || t == T_F16 || t == T_Q4_0 || t == T_Q4_1 || t == T_Q8_0 || t == T_BF16;
}

void lowra_stored_gemm_scalar(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                              uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    float buf[32];
    for (uint64_t r = r0; r < r1; r++) {
        const uint8_t *row = rows + r * row_bytes;
        float acc[LOWRA_MAX_COLUMNS] = {0};
        for (uint64_t j0 = 0; j0 < in; j0 += 32) {
            const uint64_t count = in - j0 < 32 ? in - j0 : 32;
            lowra_stored_decode(t, row, j0, count, buf);
            for (uint64_t c = 0; c < n; c++) {
                float part = 0;
                for (uint64_t i = 0; i < count; i++) part += buf[i] * x[c * in + j0 + i];
                acc[c] += part;
            }
        }
        for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = acc[c];
    }
}

// Rows r0 ..< r1 of type t to fp32, a block of 32 at a time.
static void decode_rows(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0, uint64_t r1,
                        float *out) {
    for (uint64_t r = r0; r < r1; r++, out += in) {
        for (uint64_t j = 0; j < in; j += 32)
            lowra_stored_decode(t, rows + r * row_bytes, j, in - j < 32 ? in - j : 32, out + j);
    }
}

void lowra_stored_q8_0_rows_scalar(const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0, uint64_t r1,
                                   float *out) {
    decode_rows(T_Q8_0, rows, row_bytes, in, r0, r1, out);
}

void lowra_stored_gemm(int path, unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                       uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    if (n == 0 || r0 >= r1 || !lowra_stored_gemm_supports(t)) return;
    const lowra_kernel_table *k = lowra_kernels_for(path);
    while (n > 0) {
        const uint64_t columns = n < LOWRA_MAX_COLUMNS ? n : LOWRA_MAX_COLUMNS;
        k->stored_gemm(t, rows, row_bytes, in, x, columns, y, ldy, r0, r1);
        x += columns * in;
        y += columns * ldy;
        n -= columns;
    }
}

void lowra_stored_dequantize(int path, unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0,
                             uint64_t r1, float *out) {
    if (!lowra_stored_gemm_supports(t)) return;
    if (t == T_Q8_0) return lowra_kernels_for(path)->stored_q8_0_rows(rows, row_bytes, in, r0, r1, out);
    decode_rows(t, rows, row_bytes, in, r0, r1, out);
}
