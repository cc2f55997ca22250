// The fp32 kernels of packed weights (lowra_packed_gemm, lowra_packed_dequantize) for x86-64 with
// AVX-512 F/BW/VL: the primitives of lowra_packed_gemm_template.h; the scalar reference and the dispatch are
// in lowra_kernels.c.
#if defined(__x86_64__)

#include "../../lowra_kernels_internal.h"

#include <immintrin.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// AVX-512: 16 codes per step. The 2b bytes holding them are broadcast to 32-bit lanes and each
// lane shifted right by its code's bit position; a permute looks the codes up in the row's
// (scaled) levels, held in one register.

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

AVX512 static inline __attribute__((always_inline)) __m512i codes16_avx512(const uint8_t *p, const unsigned b) {
    if (b == 4) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        const __m512i v =
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32((int)lo)), _mm256_set1_epi32((int)hi), 1);
        const __m512i sh = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        return _mm512_and_si512(_mm512_srlv_epi32(v, sh), _mm512_set1_epi32(15));
    } else if (b == 2) {
        uint32_t v;
        memcpy(&v, p, 4);
        const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)v), sh), _mm512_set1_epi32(3));
    } else {
        uint16_t v;
        memcpy(&v, p, 2);
        const __m512i sh = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)v), sh), _mm512_set1_epi32(1));
    }
}

AVX512 static inline __attribute__((always_inline)) __m512 lookup16_avx512(const uint8_t *p, const unsigned b,
                                                                          const __m512 t) {
    return _mm512_permutexvar_ps(codes16_avx512(p, b), t);
}

#define PATH avx512
#define TARGET AVX512
#define VEC __m512
#define VW 16
#define TABLE __m512
#define TABLE_LOAD(tab) _mm512_loadu_ps(tab)
#define TABLE_SCALE(t, s) _mm512_mul_ps(t, _mm512_set1_ps(s))
#define LOOKUP lookup16_avx512
#define VZERO _mm512_setzero_ps
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VADD _mm512_add_ps
#define VFMA _mm512_fmadd_ps
#define VHSUM _mm512_reduce_add_ps
#include "../../lowra_packed_gemm_template.h"

#endif
