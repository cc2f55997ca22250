// The LoRA up-projection for arm64 NEON: 4 rows of B a step (lowra_lora_up_template.h); vfmaq_f32 is
// one fused multiply-add per lane, so the chains are the scalar reference's, bit for bit.
#if defined(__aarch64__)

#include "../../lowra_lora_up_template.h"

#include <arm_neon.h>

// Lane i reads B[o + i][k].
static inline float32x4_t gather4(const float *p, uint64_t r) {
    const float v[4] = {p[0], p[r], p[2 * r], p[3 * r]};
    return vld1q_f32(v);
}

// fma(a, b, acc) in the template's argument order.
#define FMA4(a, b, acc) vfmaq_f32(acc, a, b)

LORA_UP(lowra_lora_up_neon, , 4, float32x4_t, vdupq_n_f32(0), gather4, FMA4, vdupq_n_f32, vld1q_f32, vst1q_f32)

#endif
