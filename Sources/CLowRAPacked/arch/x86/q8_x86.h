// What the x86 integer kernels share (arch/x86/q8_avx2.c, q8_avx512.c): the Q8_0 block scale
// through F16C and the instantiation of a row kernel per number of columns.
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


// One instantiation per (columns, width), as in lowra_kernels.c.
#define Q8_0_ROWS(N, FN)                                                                                \
    for (uint64_t r = r0; r < r1; r++) FN(rows + r * row_bytes, x, N, y, ldy, r);

#define BY_COLUMNS(ROWS, FN)                                                                            \
    switch (x->n) {                                                                                     \
    case 1: ROWS(1, FN) break;                                                                          \
    case 2: ROWS(2, FN) break;                                                                          \
    case 3: ROWS(3, FN) break;                                                                          \
    case 4: ROWS(4, FN) break;                                                                          \
    default: ROWS(x->n, FN) break;                                                                      \
    }


#endif
