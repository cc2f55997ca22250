// The tiled decode kernels for arm64 NEON, on the lanes layouts the AVX2 kernels read
// (lowra_tile_kernels.c): a 256-bit AVX2 register is two NEON registers here (its 128-bit halves
// L = 0, 1), so a lane's codes unpack by the same steps — nibbles or shifts, `tbl` to the lane's
// uint8 levels, each byte pair split into two uint16 — into its 64 levels in natural input order,
// which meet each column's 16-bit activations in widening multiply-adds (`smlal`) and are summed
// across (`addv`). Q8_0 rows: int8 weights widened the same way. Every integer sum is exact and
// every fp32 step the scalar reference's fused multiply-add in its order, so the results are its
// bits, column by column. Checked under qemu-user (scripts/kernel_check.sh); speed on ARM hardware
// unmeasured.
#if defined(__aarch64__)

#include "../../lowra_tile_internal.h"

#include <arm_neon.h>

#define INLINE static inline __attribute__((always_inline))

// Lane's 64 levels of one block: r[2 k + L] holds inputs 16 k + 8 L .. 16 k + 8 L + 7.
INLINE void lane_levels(const uint8_t *p, unsigned b, uint8x16_t table, uint16x8_t r[8]) {
    uint8x16_t lo[2], hi[2];
    if (b == 4) {
        for (unsigned h = 0; h < 2; h++) {
            const uint8x16_t v = vld1q_u8(p + 16 * h);
            lo[h] = vandq_u8(v, vdupq_n_u8(15));
            hi[h] = vshrq_n_u8(v, 4);
        }
    } else if (b == 2) {
        const uint8x16_t v = vld1q_u8(p), three = vdupq_n_u8(3);
        lo[0] = vandq_u8(v, three);
        lo[1] = vandq_u8(vshrq_n_u8(v, 2), three);
        hi[0] = vandq_u8(vshrq_n_u8(v, 4), three);
        hi[1] = vshrq_n_u8(v, 6);
    } else {
        // Byte 8 Q + k of the AVX2 register (Q the qword) is bit 8 k + Q of the 8 bytes.
        static const int8_t shifts[4][16] = {{0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1},
                                             {-2, -2, -2, -2, -2, -2, -2, -2, -3, -3, -3, -3, -3, -3, -3, -3},
                                             {-4, -4, -4, -4, -4, -4, -4, -4, -5, -5, -5, -5, -5, -5, -5, -5},
                                             {-6, -6, -6, -6, -6, -6, -6, -6, -7, -7, -7, -7, -7, -7, -7, -7}};
        const uint8x8_t v8 = vld1_u8(p);
        const uint8x16_t v = vcombine_u8(v8, v8), one = vdupq_n_u8(1);
        lo[0] = vandq_u8(vshlq_u8(v, vld1q_s8(shifts[0])), one);
        lo[1] = vandq_u8(vshlq_u8(v, vld1q_s8(shifts[1])), one);
        hi[0] = vandq_u8(vshlq_u8(v, vld1q_s8(shifts[2])), one);
        hi[1] = vandq_u8(vshlq_u8(v, vld1q_s8(shifts[3])), one);
    }
    const uint16x8_t low_byte = vdupq_n_u16(0xFF);
    for (unsigned h = 0; h < 2; h++) {
        const uint16x8_t l = vreinterpretq_u16_u8(vqtbl1q_u8(table, lo[h]));
        const uint16x8_t u = vreinterpretq_u16_u8(vqtbl1q_u8(table, hi[h]));
        r[0 + h] = vandq_u16(l, low_byte);
        r[2 + h] = vshrq_n_u16(l, 8);
        r[4 + h] = vandq_u16(u, low_byte);
        r[6 + h] = vshrq_n_u16(u, 8);
    }
}

// Σ of 8 × 8 products (levels or weights as int16, activations int16), exact in int32.
INLINE int32_t dot(const int16x8_t *w, const int16_t *t, unsigned count) {
    int32x4_t acc = vdupq_n_s32(0);
    for (unsigned k = 0; k < count; k++) {
        const int16x8_t a = vld1q_s16(t + 8 * k);
        acc = vmlal_s16(acc, vget_low_s16(w[k]), vget_low_s16(a));
        acc = vmlal_high_s16(acc, w[k], a);
    }
    return vaddvq_s32(acc);
}

// A column's activations of one stretch as int16: t = 256 h + l (split) or h.
INLINE void column_t(const lowra_q8_activations *x, uint64_t at, unsigned count, int16_t *t) {
    if (x->t16) {
        for (unsigned k = 0; k < count; k += 8) vst1q_s16(t + k, vld1q_s16(x->t16 + at + k));
        return;
    }
    for (unsigned k = 0; k < count; k += 16) {
        const int8x16_t h = vld1q_s8(x->q + at + k);
        vst1q_s16(t + k, vmovl_s8(vget_low_s8(h)));
        vst1q_s16(t + k + 8, vmovl_high_s8(h));
    }
}

void lowra_tiled_gemm_neon(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                           uint64_t t0, uint64_t t1) {
    const uint64_t nb = t->nb, n = x->n;  // n <= LOWRA_TILE_COLUMNS
    float32x4_t acc[LOWRA_TILE_COLUMNS][4], off[LOWRA_TILE_COLUMNS][4];
    int16_t act[LOWRA_TILE_COLUMNS][LOWRA_BLOCK];
    int32_t part[LOWRA_TILE_COLUMNS][TILE];
    for (uint64_t tile = t0; tile < t1; tile++) {
        const unsigned b = t->bits[tile];
        const uint8_t *table = t->tables + tile * TABLE_BYTES, *codes = t->codes + t->offsets[tile];
        const int32_t *rows = t->rows + tile * TILE;
        const unsigned lanes = tile_lanes(rows);
        for (uint64_t c = 0; c < n; c++) {
            for (unsigned q = 0; q < 4; q++) acc[c][q] = off[c][q] = vdupq_n_f32(0);
            for (unsigned i = lanes; i < TILE; i++) part[c][i] = 0;
        }
        for (uint64_t blk = 0; blk < nb; blk++) {
            for (uint64_t c = 0; c < n; c++) column_t(x, (c * 4 * nb + blk) * LOWRA_BLOCK, LOWRA_BLOCK, act[c]);
            const uint8_t *block = codes + blk * tile_block_bytes(b);
            for (unsigned i = 0; i < lanes; i++) {
                uint16x8_t r[8];
                lane_levels(block + 8 * b * i, b, vld1q_u8(table + 16 * i), r);
                int16x8_t w[8];
                for (unsigned k = 0; k < 8; k++) w[k] = vreinterpretq_s16_u16(r[k]);
                for (uint64_t c = 0; c < n; c++) part[c][i] = dot(w, act[c], 8);
            }
            const float *a = t->scales + (tile * nb + blk) * TILE;
            for (uint64_t c = 0; c < n; c++) {
                const float32x4_t xs = vdupq_n_f32(x->scale[c * nb + blk]);
                const float32x4_t sum = vdupq_n_f32((float)x->sum[c * nb + blk]);
                for (unsigned q = 0; q < 4; q++) {
                    const float32x4_t sc = vmulq_f32(vld1q_f32(a + 4 * q), xs);
                    acc[c][q] = vfmaq_f32(acc[c][q], vcvtq_f32_s32(vld1q_s32(part[c] + 4 * q)), sc);
                    off[c][q] = vfmaq_f32(off[c][q], sc, sum);
                }
            }
        }
        const float *step = t->level_step + tile * TILE, *min = t->level_min + tile * TILE;
        for (uint64_t c = 0; c < n; c++) {
            float v[TILE];
            for (unsigned q = 0; q < 4; q++)
                vst1q_f32(v + 4 * q, vfmaq_f32(vmulq_f32(vld1q_f32(min + 4 * q), off[c][q]), vld1q_f32(step + 4 * q),
                                               acc[c][q]));
            for (unsigned i = 0; i < lanes; i++) y[c * ldy + (uint64_t)rows[i]] = v[i];
        }
    }
}

void lowra_q8_0_tiled_gemm_neon(const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y,
                                uint64_t ldy, uint64_t t0, uint64_t t1) {
    const uint64_t nb = x->nb, n32 = t->in / 32, n = x->n;
    float32x4_t acc[LOWRA_TILE_COLUMNS][4];
    int16_t act[LOWRA_TILE_COLUMNS][32];
    int32_t part[LOWRA_TILE_COLUMNS][TILE];
    for (uint64_t tile = t0; tile < t1; tile++) {
        const int32_t *rows = t->rows + tile * TILE;
        const unsigned lanes = tile_lanes(rows);
        for (uint64_t c = 0; c < n; c++) {
            for (unsigned q = 0; q < 4; q++) acc[c][q] = vdupq_n_f32(0);
            for (unsigned i = lanes; i < TILE; i++) part[c][i] = 0;
        }
        for (uint64_t k32 = 0; k32 < n32; k32++) {
            for (uint64_t c = 0; c < n; c++) column_t(x, c * 4 * nb * LOWRA_BLOCK + 32 * k32, 32, act[c]);
            const uint8_t *block = t->codes + (tile * n32 + k32) * 512;
            for (unsigned i = 0; i < lanes; i++) {
                int16x8_t w[4];
                for (unsigned h = 0; h < 2; h++) {
                    const int8x16_t v = vld1q_s8((const int8_t *)block + 32 * i + 16 * h);
                    w[2 * h] = vmovl_s8(vget_low_s8(v));
                    w[2 * h + 1] = vmovl_high_s8(v);
                }
                for (uint64_t c = 0; c < n; c++) part[c][i] = dot(w, act[c], 4);
            }
            const float *d = t->scales + (tile * n32 + k32) * TILE;
            for (uint64_t c = 0; c < n; c++) {
                const float32x4_t xs = vdupq_n_f32(x->scale[c * nb + k32 / 2]);
                for (unsigned q = 0; q < 4; q++)
                    acc[c][q] = vfmaq_f32(acc[c][q], vcvtq_f32_s32(vld1q_s32(part[c] + 4 * q)),
                                          vmulq_f32(vld1q_f32(d + 4 * q), xs));
            }
        }
        for (uint64_t c = 0; c < n; c++) {
            float v[TILE];
            for (unsigned q = 0; q < 4; q++) vst1q_f32(v + 4 * q, acc[c][q]);
            for (unsigned i = 0; i < lanes; i++) y[c * ldy + (uint64_t)rows[i]] = v[i];
        }
    }
}

#endif
