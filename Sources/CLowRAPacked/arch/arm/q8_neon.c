// The integer kernels for arm64 NEON: the products of packed and Q8_0 rows with int8 (or split 16-bit)
// activations, read in their natural order; the scalar references and the dispatch are in
// lowra_q8_kernels.c. Each block's sum is the exact int32 the scalar path computes, by one of two
// routes: plain NEON widens to int16 and multiply-accumulates into int32 (every arm64 CPU); with the
// dot-product extension (ARMv8.2 `sdot`: Cortex-A55/A76 and later, Apple M1, Graviton 2) four int8
// products per lane, the unsigned levels u taken as u − 128 and 128·Σv added back. The fp32 steps
// after the integer sums are the scalar reference's.
#if defined(__aarch64__)

#include "../../lowra_q8_internal.h"

#include <arm_neon.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#if defined(__clang__)
#define DOTPROD __attribute__((target("dotprod")))
#else
#define DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

// The 64 codes of a block in natural order (code j in byte j), 16 per register.
INLINE void unpack64_neon(const uint8_t *p, unsigned b, uint8x16_t out[4]) {
    if (b == 4) {  // byte k: code 2k low, 2k + 1 high
        for (int h = 0; h < 2; h++) {
            const uint8x16_t v = vld1q_u8(p + 16 * h), lo = vandq_u8(v, vdupq_n_u8(15)), hi = vshrq_n_u8(v, 4);
            out[2 * h] = vzip1q_u8(lo, hi);
            out[2 * h + 1] = vzip2q_u8(lo, hi);
        }
        return;
    }
    // b = 2: byte k holds codes 4k .. 4k + 3; b = 1: codes 8k .. 8k + 7. Each byte copied once per
    // code it holds (group g of 16 codes: bytes 4g .. 4g + 3 or 2g, 2g + 1), then shifted right by the
    // code's bit position.
    static const uint8_t source2[16] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
    static const int8_t shift2[16] = {0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6};
    static const uint8_t source1[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const int8_t shift1[16] = {0, -1, -2, -3, -4, -5, -6, -7, 0, -1, -2, -3, -4, -5, -6, -7};
    uint8_t bytes[16] = {0};
    memcpy(bytes, p, 8 * b);
    const uint8x16_t v = vld1q_u8(bytes), mask = vdupq_n_u8((uint8_t)((1u << b) - 1));
    const uint8x16_t source = vld1q_u8(b == 2 ? source2 : source1);
    const int8x16_t shift = vld1q_s8(b == 2 ? shift2 : shift1);
    for (unsigned g = 0; g < 4; g++) {
        const uint8x16_t from = vaddq_u8(source, vdupq_n_u8((uint8_t)(g * 16 * b / 8)));  // the group's bytes
        out[g] = vandq_u8(vshlq_u8(vqtbl1q_u8(v, from), shift), mask);
    }
}

// Σ u·v over 16 bytes (u unsigned levels, v signed) into int32 lanes, widened so nothing saturates.
INLINE int32x4_t dot16_neon(int32x4_t acc, const uint8x16_t u, const int8x16_t v) {
    const int16x8_t u0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(u))), u1 = vreinterpretq_s16_u16(vmovl_high_u8(u));
    const int16x8_t v0 = vmovl_s8(vget_low_s8(v)), v1 = vmovl_high_s8(v);
    acc = vmlal_s16(acc, vget_low_s16(u0), vget_low_s16(v0));
    acc = vmlal_high_s16(acc, u0, v0);
    acc = vmlal_s16(acc, vget_low_s16(u1), vget_low_s16(v1));
    return vmlal_high_s16(acc, u1, v1);
}

// Σ_j u_j v_j over a block of 64: plain NEON.
INLINE int32_t block_dot_neon(const uint8x16_t u[4], const int8_t *v) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int g = 0; g < 4; g++) acc = dot16_neon(acc, u[g], vld1q_s8(v + 16 * g));
    return vaddvq_s32(acc);
}

// The same with sdot: Σ (u − 128) v + 128 Σ v.
DOTPROD INLINE int32_t block_dot_sdot(const uint8x16_t u[4], const int8_t *v) {
    int32x4_t acc = vdupq_n_s32(0), sum = vdupq_n_s32(0);
    const int8x16_t ones = vdupq_n_s8(1);
    for (int g = 0; g < 4; g++) {
        const int8x16_t vg = vld1q_s8(v + 16 * g);
        acc = vdotq_s32(acc, vreinterpretq_s8_u8(veorq_u8(u[g], vdupq_n_u8(0x80))), vg);
        sum = vdotq_s32(sum, ones, vg);
    }
    return vaddvq_s32(acc) + 128 * vaddvq_s32(sum);
}

// One packed row: the scalar reference's arithmetic with the block sums from DOT.
#define PACKED_ROW(NAME, ATTR, DOT)                                                                         \
    ATTR INLINE void NAME(const lowra_packed_view *w, const lowra_q8_activations *x, const uint64_t n,       \
                          float *y, uint64_t ldy, uint64_t r, const unsigned b) {                            \
        const uint64_t nb = x->nb;                                                                          \
        const uint8_t *row = w->codes + w->row_offsets[r];                                                  \
        const uint8x16_t table = vld1q_u8(w->levels_u8 + 16 * r);                                           \
        float acc[LOWRA_MAX_COLUMNS] = {0}, off[LOWRA_MAX_COLUMNS] = {0};                                   \
        uint8_t pad[32];                                                                                    \
        for (uint64_t blk = 0; blk < nb; blk++) {                                                           \
            uint8x16_t u[4];                                                                                \
            unpack64_neon(block_codes(row, w->in, blk, b, pad), b, u);                                      \
            for (int g = 0; g < 4; g++) u[g] = vqtbl1q_u8(table, u[g]);                                     \
            const float a = lowra_block_scale(w, r * nb + blk);                                             \
            for (uint64_t c = 0; c < n; c++) {                                                              \
                const uint64_t at = (c * 4 * nb + blk) * LOWRA_BLOCK;                                       \
                int32_t s = DOT(u, x->q + at);                                                              \
                if (x->lo) s = 256 * s + DOT(u, x->lo + at); /* t = 256 h + l */                            \
                const float sc = a * x->scale[c * nb + blk];                                                \
                acc[c] += sc * (float)s;                                                                    \
                off[c] += sc * (float)x->sum[c * nb + blk];                                                 \
            }                                                                                               \
        }                                                                                                   \
        for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = w->level_step[r] * acc[c] + w->level_min[r] * off[c]; \
    }

PACKED_ROW(packed_row_neon, , block_dot_neon)
PACKED_ROW(packed_row_sdot, DOTPROD, block_dot_sdot)

// Σ w·v over a Q8_0 block of 32 (both signed; |w·v| <= 128·127 fits int16).
INLINE int32_t q8_0_dot_neon(const int8x16_t w0, const int8x16_t w1, const int8_t *v) {
    const int8x16_t v0 = vld1q_s8(v), v1 = vld1q_s8(v + 16);
    int32x4_t acc = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(v0)));
    acc = vpadalq_s16(acc, vmull_high_s8(w0, v0));
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w1), vget_low_s8(v1)));
    return vaddvq_s32(vpadalq_s16(acc, vmull_high_s8(w1, v1)));
}

DOTPROD INLINE int32_t q8_0_dot_sdot(const int8x16_t w0, const int8x16_t w1, const int8_t *v) {
    return vaddvq_s32(vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8(v)), w1, vld1q_s8(v + 16)));
}

#define Q8_0_ROW(NAME, ATTR, DOT)                                                                           \
    ATTR INLINE void NAME(const uint8_t *row, const lowra_q8_activations *x, const uint64_t n, float *y,     \
                          uint64_t ldy, uint64_t r) {                                                        \
        const uint64_t nb = x->nb, n32 = x->in / 32;                                                        \
        float acc[LOWRA_MAX_COLUMNS] = {0};                                                                 \
        for (uint64_t k = 0; k < n32; k++) {                                                                \
            const uint8_t *blk = row + k * Q8_0_BYTES;                                                      \
            const int8x16_t w0 = vld1q_s8((const int8_t *)blk + 2), w1 = vld1q_s8((const int8_t *)blk + 18); \
            uint16_t h;                                                                                     \
            memcpy(&h, blk, 2);                                                                             \
            const float d = lowra_half_to_float(h);                                                         \
            for (uint64_t c = 0; c < n; c++) {                                                              \
                const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 32 * k;                                      \
                int32_t s = DOT(w0, w1, x->q + at);                                                         \
                if (x->lo) s = 256 * s + DOT(w0, w1, x->lo + at);                                           \
                acc[c] += d * x->scale[c * nb + k / 2] * (float)s;                                          \
            }                                                                                               \
        }                                                                                                   \
        for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = acc[c];                                           \
    }

Q8_0_ROW(q8_0_row_neon, , q8_0_dot_neon)
Q8_0_ROW(q8_0_row_sdot, DOTPROD, q8_0_dot_sdot)

void lowra_packed_q8_neon(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                          uint64_t r0, uint64_t r1) {
    LOWRA_BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_neon)
}
DOTPROD void lowra_packed_q8_sdot(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                  uint64_t r0, uint64_t r1) {
    LOWRA_BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_sdot)
}
void lowra_q8_0_q8_neon(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1) {
    LOWRA_BY_COLUMNS(LOWRA_Q8_0_ROWS, q8_0_row_neon)
}
DOTPROD void lowra_q8_0_q8_sdot(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                                uint64_t ldy, uint64_t r0, uint64_t r1) {
    LOWRA_BY_COLUMNS(LOWRA_Q8_0_ROWS, q8_0_row_sdot)
}

#endif
