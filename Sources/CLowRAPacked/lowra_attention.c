// One query per head attending over an f16 KV cache: the decode step's attention, without the
// sgemm calls a batch of queries uses (their setup costs more than the math at one query).
#include "lowra_kernels_internal.h"

#include <math.h>

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
            lowra_attention_head_avx2(qh, k, v, tk, stride, head_dim, scale, scores + h * tk, out + h * head_dim);
            continue;
        }
#endif
        head_scalar(qh, k, v, tk, stride, head_dim, scale, scores + h * tk, out + h * head_dim);
    }
}

int lowra_floats_to_halves(int path, const float *src, uint16_t *dst, uint64_t n) {
#if defined(__x86_64__)
    if (lowra_path_x86_vector(path) && lowra_kernel_path_supported(path)) {
        lowra_to_halves_f16c(src, dst, n);
        return 1;
    }
#endif
    (void)path, (void)src, (void)dst, (void)n;
    return 0;
}

void lowra_halves_to_floats(int path, const uint16_t *src, float *dst, uint64_t n) {
#if defined(__x86_64__)
    if (lowra_path_x86_vector(path) && lowra_kernel_path_supported(path)) return lowra_to_floats_f16c(src, dst, n);
#endif
    (void)path;
    for (uint64_t i = 0; i < n; i++) dst[i] = lowra_half_to_float(src[i]);
}
