// The LoRA up-projection's vector loop, instantiated per vector path (arch/x86/lora_up_avx2.c,
// arch/x86/lora_up_avx512.c, arch/arm/lora_up_neon.c); the scalar reference, whose order every path
// keeps, and the dispatch are in lowra_lora.c.
#ifndef LOWRA_LORA_UP_TEMPLATE_H
#define LOWRA_LORA_UP_TEMPLATE_H

#include "lowra_kernels_internal.h"

// One register of outputs (LANES rows of B from row o) for the columns of xa in groups of
// LOWRA_TILE_COLUMNS, B's columns gathered LORA_K at a time: each output's chain runs k = 0 ..< r
// in order across the chunks, as the scalar loop's does.
enum { LORA_K = 32 };
#define LORA_UP(NAME, TARGET, LANES, VEC, ZERO, GATHER, FMA, SET1, LOAD, STORE)                        \
    TARGET void NAME(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y,  \
                            uint64_t ldy, uint64_t o0, uint64_t o1) {                                    \
        uint64_t o = o0;                                                                                \
        for (; o + LANES <= o1; o += LANES) {                                                           \
            for (uint64_t c0 = 0; c0 < n; c0 += LOWRA_TILE_COLUMNS) {                                   \
                const uint64_t m = n - c0 < LOWRA_TILE_COLUMNS ? n - c0 : LOWRA_TILE_COLUMNS;           \
                VEC acc[LOWRA_TILE_COLUMNS], col[LORA_K];                                               \
                for (uint64_t c = 0; c < m; c++) acc[c] = ZERO;                                         \
                for (uint64_t k0 = 0; k0 < r; k0 += LORA_K) {                                           \
                    const uint64_t kc = r - k0 < LORA_K ? r - k0 : LORA_K;                              \
                    for (uint64_t k = 0; k < kc; k++) col[k] = GATHER(b + o * r + k0 + k, r);            \
                    for (uint64_t c = 0; c < m; c++) {                                                  \
                        VEC a = acc[c];                                                                 \
                        const float *x = xa + (c0 + c) * r + k0;                                        \
                        for (uint64_t k = 0; k < kc; k++) a = FMA(col[k], SET1(x[k]), a);               \
                        acc[c] = a;                                                                     \
                    }                                                                                   \
                }                                                                                       \
                for (uint64_t c = 0; c < m; c++) {                                                      \
                    float *yc = y + (c0 + c) * ldy + o;                                                 \
                    STORE(yc, FMA(SET1(s), acc[c], LOAD(yc)));                                          \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
        if (o < o1) lowra_lora_up_scalar(b, r, xa, n, s, y, ldy, o, o1);                                      \
    }

#endif
