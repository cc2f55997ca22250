// One query per head over an f16 KV cache, and the f16 <-> fp32 conversions, for arm64 NEON (the
// half-precision conversions are part of ARMv8's base instruction set); the scalar reference and
// the dispatch are in lowra_attention.c.
#if defined(__aarch64__)

#include "../../lowra_kernels_internal.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

static inline float32x4_t halves4(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

// head_dim a multiple of 8 (every model's is); others take the scalar path.
void lowra_attention_head_neon(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                               uint64_t stride, uint64_t d, float scale, float *scores, float *out) {
    float m = -INFINITY;
    for (uint64_t t = 0; t < tk; t++) {
        float32x4_t acc = vdupq_n_f32(0), acc2 = vdupq_n_f32(0);
        const uint16_t *k = keys + t * stride;
        for (uint64_t i = 0; i < d; i += 8) {
            acc = vfmaq_f32(acc, vld1q_f32(q + i), halves4(k + i));
            acc2 = vfmaq_f32(acc2, vld1q_f32(q + i + 4), halves4(k + i + 4));
        }
        scores[t] = vaddvq_f32(vaddq_f32(acc, acc2)) * scale;
        m = fmaxf(m, scores[t]);
    }
    float sum = 0;
    for (uint64_t t = 0; t < tk; t++) {
        scores[t] = expf(scores[t] - m);
        sum += scores[t];
    }
    const float inv = 1 / sum;
    for (uint64_t i = 0; i < d; i += 4) {
        float32x4_t acc = vdupq_n_f32(0);
        for (uint64_t t = 0; t < tk; t++) acc = vfmaq_n_f32(acc, halves4(values + t * stride + i), scores[t]);
        vst1q_f32(out + i, vmulq_n_f32(acc, inv));
    }
}

// Round to nearest, ties to even (the FPCR's default mode), as the Swift conversion rounds.
void lowra_to_halves_neon(const float *src, uint16_t *dst, uint64_t n) {
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    if (i == n) return;
    float in[4] = {0};  // the last n % 4 values, through the same instruction
    uint16_t o[4];
    memcpy(in, src + i, (n - i) * sizeof(float));
    vst1_u16(o, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(in))));
    memcpy(dst + i, o, (n - i) * sizeof(uint16_t));
}

void lowra_to_floats_neon(const uint16_t *src, float *dst, uint64_t n) {
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, halves4(src + i));
    for (; i < n; i++) dst[i] = lowra_half_to_float(src[i]);
}

#endif
