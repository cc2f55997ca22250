// The LoRA up-projection for x86-64 with AVX-512: 16 rows of B a step (lowra_lora_up_template.h).
#if defined(__x86_64__)

#include "../../lowra_lora_up_template.h"

#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

// Lane i reads B[o + i][k]: index i · r.
AVX512 static inline __m512 gather16(const float *p, uint64_t r) {
    const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32((int)r));
    return _mm512_i32gather_ps(lanes, p, 4);
}

LORA_UP(lowra_lora_up_avx512, AVX512, 16, __m512, _mm512_setzero_ps(), gather16, _mm512_fmadd_ps, _mm512_set1_ps,
        _mm512_loadu_ps, _mm512_storeu_ps)

#endif
