// What the x86 integer kernels share (arch/x86/q8_avx2.c, q8_avx512.c): the Q8_0 block scale
// through F16C.
#ifndef LOWRA_ARCH_X86_Q8_H
#define LOWRA_ARCH_X86_Q8_H

#include "../../lowra_q8_internal.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 INLINE float q8_0_scale_f16c(const uint8_t *block) {
    uint16_t h;
    memcpy(&h, block, 2);
    return _cvtsh_ss(h);
}

#endif
