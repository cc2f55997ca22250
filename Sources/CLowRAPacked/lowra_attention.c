// One query per head attending over an f16 KV cache: the decode step's attention, without the
// sgemm calls a batch of queries uses (their setup costs more than the math at one query).
#include "lowra_kernels_internal.h"

#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static void head_scalar(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk, uint64_t stride,
                        uint64_t d, float scale, float *scores, float *out) {
    float m = -INFINITY;
    for (uint64_t t = 0; t < tk; t++) {
        float s = 0;
        for (uint64_t i = 0; i < d; i++) s += q[i] * lowra_half_to_float(keys[t * stride + i]);
        scores[t] = s * scale;
        m = fmaxf(m, scores[t]);
    }
    float sum = 0;
    for (uint64_t t = 0; t < tk; t++) {
        scores[t] = expf(scores[t] - m);
        sum += scores[t];
    }
    for (uint64_t i = 0; i < d; i++) out[i] = 0;
    for (uint64_t t = 0; t < tk; t++) {
        const float p = scores[t] / sum;
        for (uint64_t i = 0; i < d; i++) out[i] += p * lowra_half_to_float(values[t * stride + i]);
    }
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma,f16c")))

// head_dim a multiple of 8 (every model's is); others take the scalar path.
AVX2 static void head_avx2(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk, uint64_t stride,
                           uint64_t d, float scale, float *scores, float *out) {
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

AVX2 static void to_halves_f16c(const float *src, uint16_t *dst, uint64_t n) {
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), 0));
    if (i == n) return;
    float in[8] = {0};  // the last n % 8 values, through the same instruction
    uint16_t out[8];
    memcpy(in, src + i, (n - i) * sizeof(float));
    _mm_storeu_si128((__m128i *)out, _mm256_cvtps_ph(_mm256_loadu_ps(in), 0));
    memcpy(dst + i, out, (n - i) * sizeof(uint16_t));
}

AVX2 static void to_floats_f16c(const uint16_t *src, float *dst, uint64_t n) {
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = lowra_half_to_float(src[i]);
}
#endif

void lowra_attention_decode_f16(int path, const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                                uint64_t heads, uint64_t kv_heads, uint64_t head_dim, float *scores, float *out,
                                uint64_t h0, uint64_t h1) {
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
    const uint64_t group = heads / kv_heads, stride = kv_heads * head_dim;
    const float scale = 1.0f / sqrtf((float)head_dim);
    for (uint64_t h = h0; h < h1; h++) {
        const uint64_t g = h / group;
        const float *qh = q + h * head_dim;
        const uint16_t *k = keys + g * head_dim, *v = values + g * head_dim;
#if defined(__x86_64__)
        if (lowra_path_x86_vector(path) && head_dim % 8 == 0) {
            head_avx2(qh, k, v, tk, stride, head_dim, scale, scores + h * tk, out + h * head_dim);
            continue;
        }
#endif
        head_scalar(qh, k, v, tk, stride, head_dim, scale, scores + h * tk, out + h * head_dim);
    }
}

int lowra_floats_to_halves(int path, const float *src, uint16_t *dst, uint64_t n) {
#if defined(__x86_64__)
    if (lowra_path_x86_vector(path) && lowra_kernel_path_supported(path)) {
        to_halves_f16c(src, dst, n);
        return 1;
    }
#endif
    (void)path, (void)src, (void)dst, (void)n;
    return 0;
}

void lowra_halves_to_floats(int path, const uint16_t *src, float *dst, uint64_t n) {
#if defined(__x86_64__)
    if (lowra_path_x86_vector(path) && lowra_kernel_path_supported(path)) return to_floats_f16c(src, dst, n);
#endif
    (void)path;
    for (uint64_t i = 0; i < n; i++) dst[i] = lowra_half_to_float(src[i]);
}
