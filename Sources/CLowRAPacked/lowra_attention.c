// One query per head attending over an f16 KV cache: the decode step's attention, without the
// sgemm calls a batch of queries uses (their setup costs more than the math at one query).
#include "lowra_kernels_internal.h"

#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// fp32 to IEEE half, round to nearest even (as F16C's _mm256_cvtps_ph with rounding mode 0).
static uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t abs = x & 0x7fffffff;
    if (abs >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 | ((abs >> 13) & 0x3ff) : 0));
    if (abs >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // rounds to infinity
    if (abs < 0x38800000) {                                      // subnormal or zero in half
        // value = abs as float; half subnormal units of 2^-24: round(value * 2^24) to even.
        float v;
        memcpy(&v, &abs, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(v * 16777216.0f));
    }
    const uint32_t mant = abs & 0x7fffff, exp = (abs >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;  // carries into the exponent correctly
    return (uint16_t)(sign | h);
}

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
    for (; i < n; i++) dst[i] = float_to_half(src[i]);
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
        if (path >= LOWRA_PATH_AVX2 && head_dim % 8 == 0) {
            head_avx2(qh, k, v, tk, stride, head_dim, scale, scores + h * tk, out + h * head_dim);
            continue;
        }
#endif
        head_scalar(qh, k, v, tk, stride, head_dim, scale, scores + h * tk, out + h * head_dim);
    }
}

void lowra_floats_to_halves(int path, const float *src, uint16_t *dst, uint64_t n) {
#if defined(__x86_64__)
    if (path >= LOWRA_PATH_AVX2 && lowra_kernel_path_supported(path)) return to_halves_f16c(src, dst, n);
#endif
    (void)path;
    for (uint64_t i = 0; i < n; i++) dst[i] = float_to_half(src[i]);
}

void lowra_halves_to_floats(int path, const uint16_t *src, float *dst, uint64_t n) {
#if defined(__x86_64__)
    if (path >= LOWRA_PATH_AVX2 && lowra_kernel_path_supported(path)) return to_floats_f16c(src, dst, n);
#endif
    (void)path;
    for (uint64_t i = 0; i < n; i++) dst[i] = lowra_half_to_float(src[i]);
}
