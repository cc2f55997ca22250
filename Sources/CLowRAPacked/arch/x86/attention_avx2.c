// One query per head over an f16 KV cache, and the f16 <-> fp32 conversions, for x86-64 with
// AVX2 + FMA + F16C (AVX-512 machines run these too); the scalar reference and the dispatch are in
// lowra_attention.c.
#if defined(__x86_64__)

#include "../../lowra_kernels_internal.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

// head_dim a multiple of 8 (every model's is); others take the scalar path.
AVX2 void lowra_attention_head_avx2(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                                    uint64_t stride, uint64_t d, float scale, float *scores, float *out) {
    float m = -INFINITY;
    for (uint64_t t = 0; t < tk; t++) {
        __m256 acc = _mm256_setzero_ps();
        const uint16_t *k = keys + t * stride;
        for (uint64_t i = 0; i < d; i += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i))),
                                  acc);
        scores[t] = lowra_hsum8(acc) * scale;
        m = fmaxf(m, scores[t]);
    }
    float sum = 0;
    for (uint64_t t = 0; t < tk; t++) {
        scores[t] = expf(scores[t] - m);
        sum += scores[t];
    }
    for (uint64_t i = 0; i < d; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (uint64_t t = 0; t < tk; t++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scores[t]),
                                  _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(values + t * stride + i))), acc);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(acc, _mm256_set1_ps(1 / sum)));
    }
}

AVX2 void lowra_to_halves_f16c(const float *src, uint16_t *dst, uint64_t n) {
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), 0));
    if (i == n) return;
    float in[8] = {0};  // the last n % 8 values, through the same instruction
    uint16_t out[8];
    memcpy(in, src + i, (n - i) * sizeof(float));
    _mm_storeu_si128((__m128i *)out, _mm256_cvtps_ph(_mm256_loadu_ps(in), 0));
    memcpy(dst + i, out, (n - i) * sizeof(uint16_t));
}

AVX2 void lowra_to_floats_f16c(const uint16_t *src, float *dst, uint64_t n) {
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = lowra_half_to_float(src[i]);
}

#endif
