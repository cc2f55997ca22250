// The LoRA up-projection for x86-64 with AVX2 + FMA: 8 rows of B a step (lowra_lora_up_template.h).
#if defined(__x86_64__)

#include "../../lowra_lora_up_template.h"

#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

// Lane i reads B[o + i][k]: index i · r.
AVX2 static inline __m256 gather8(const float *p, uint64_t r) {
    const __m256i lanes = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)r));
    return _mm256_i32gather_ps(p, lanes, 4);
}

LORA_UP(lowra_lora_up_avx2, AVX2, 8, __m256, _mm256_setzero_ps(), gather8, _mm256_fmadd_ps, _mm256_set1_ps,
        _mm256_loadu_ps, _mm256_storeu_ps)

#endif
