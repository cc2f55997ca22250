// Helpers the stored-matrix kernels share (lowra_stored_kernels.c, arch/x86/stored_*.c).
#ifndef LOWRA_STORED_INTERNAL_H
#define LOWRA_STORED_INTERNAL_H

#include "lowra_kernels_internal.h"

#include <string.h>

enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8, T_BF16 = 30 };

static inline uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline float bf16_to_float(uint16_t v) {
    const uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// Elements j0 ..< j0 + count (count <= 32, within one 32-block for the block types) as fp32.
static inline void lowra_stored_decode(unsigned t, const uint8_t *row, uint64_t j0, uint64_t count, float *out) {
    switch (t) {
    case T_F32: memcpy(out, row + 4 * j0, 4 * count); return;
    case T_F16: for (uint64_t i = 0; i < count; i++) out[i] = lowra_half_to_float(load_u16(row + 2 * (j0 + i))); return;
    case T_BF16: for (uint64_t i = 0; i < count; i++) out[i] = bf16_to_float(load_u16(row + 2 * (j0 + i))); return;
    default: break;
    }
    const uint64_t bytes = t == T_Q8_0 ? 34 : t == T_Q4_1 ? 20 : 18;
    const uint8_t *p = row + (j0 / 32) * bytes;
    const float d = lowra_half_to_float(load_u16(p));
    if (t == T_Q8_0) {
        for (uint64_t i = 0; i < 32; i++) out[i] = d * (float)(int8_t)p[2 + i];
        return;
    }
    const float m = t == T_Q4_1 ? lowra_half_to_float(load_u16(p + 2)) : 0;
    const uint8_t *qs = p + (t == T_Q4_1 ? 4 : 2);
    const int offset = t == T_Q4_0 ? 8 : 0;
    for (uint64_t i = 0; i < 16; i++) {
        out[i] = d * (float)((qs[i] & 15) - offset) + m;
        out[i + 16] = d * (float)((qs[i] >> 4) - offset) + m;
    }
}

/// s + Σ_{j <= i < in} row[i]·x[i]: the vector kernels' tail of a float-like row (ggml rows have none).
static inline float lowra_stored_tail_dot(unsigned t, const uint8_t *row, uint64_t j, uint64_t in, const float *x,
                                          float s) {
    float buf[32];
    for (; j < in; j += 32) {
        const uint64_t count = in - j < 32 ? in - j : 32;
        lowra_stored_decode(t, row, j, count, buf);
        for (uint64_t i = 0; i < count; i++) s += buf[i] * x[j + i];
    }
    return s;
}

// One instantiation per (columns, type).
#define LOWRA_STORED_TYPES(FN, N)                                                                       \
    for (uint64_t r = r0; r < r1; r++) {                                                                \
        const uint8_t *row = rows + r * row_bytes;                                                      \
        switch (t) {                                                                                    \
        case T_F32: FN(T_F32, row, in, x, N, y, ldy, r); break;                                         \
        case T_F16: FN(T_F16, row, in, x, N, y, ldy, r); break;                                         \
        case T_BF16: FN(T_BF16, row, in, x, N, y, ldy, r); break;                                       \
        case T_Q8_0: FN(T_Q8_0, row, in, x, N, y, ldy, r); break;                                       \
        case T_Q4_0: FN(T_Q4_0, row, in, x, N, y, ldy, r); break;                                       \
        default: FN(T_Q4_1, row, in, x, N, y, ldy, r); break;                                           \
        }                                                                                               \
    }
#define LOWRA_STORED_COLUMNS(FN)                                                                        \
    switch (n) {                                                                                        \
    case 1: LOWRA_STORED_TYPES(FN, 1) break;                                                            \
    case 2: LOWRA_STORED_TYPES(FN, 2) break;                                                            \
    case 3: LOWRA_STORED_TYPES(FN, 3) break;                                                            \
    case 4: LOWRA_STORED_TYPES(FN, 4) break;                                                            \
    case 5: LOWRA_STORED_TYPES(FN, 5) break;                                                            \
    case 6: LOWRA_STORED_TYPES(FN, 6) break;                                                            \
    case 7: LOWRA_STORED_TYPES(FN, 7) break;                                                            \
    default: LOWRA_STORED_TYPES(FN, 8) break;                                                           \
    }

void lowra_stored_gemm_avx512(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                              uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1);
void lowra_stored_gemm_avx2(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                            uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1);
void lowra_stored_gemm_neon(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                            uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1);
void lowra_stored_q8_0_rows_avx512(const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0, uint64_t r1,
                                   float *out);

#endif
