// One query per head attending over an f16 KV cache: the decode step's attention, without the
// sgemm calls a batch of queries uses (their setup costs more than the math at one query).
#include "lowra_kernels_internal.h"

#include <math.h>

void lowra_attention_head_scalar(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                                 uint64_t stride, uint64_t d, float scale, float *scores, float *out) {
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

void lowra_to_floats_scalar(const uint16_t *src, float *dst, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) dst[i] = lowra_half_to_float(src[i]);
}

void lowra_attention_decode_f16(int path, const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                                uint64_t heads, uint64_t kv_heads, uint64_t head_dim, float *scores, float *out,
                                uint64_t h0, uint64_t h1) {
    const uint64_t group = heads / kv_heads, stride = kv_heads * head_dim;
    const float scale = 1.0f / sqrtf((float)head_dim);
    void (*head)(const float *, const uint16_t *, const uint16_t *, uint64_t, uint64_t, uint64_t, float, float *,
                 float *) = head_dim % 8 == 0 ? lowra_kernels_for(path)->attention_head : lowra_attention_head_scalar;
    for (uint64_t h = h0; h < h1; h++) {
        const uint64_t g = h / group;
        head(q + h * head_dim, keys + g * head_dim, values + g * head_dim, tk, stride, head_dim, scale, scores + h * tk,
             out + h * head_dim);
    }
}

int lowra_floats_to_halves(int path, const float *src, uint16_t *dst, uint64_t n) {
    const lowra_kernel_table *k = lowra_kernels_for(path);
    if (!k->to_halves) return 0;
    k->to_halves(src, dst, n);
    return 1;
}

void lowra_halves_to_floats(int path, const uint16_t *src, float *dst, uint64_t n) {
    lowra_kernels_for(path)->to_floats(src, dst, n);
}
