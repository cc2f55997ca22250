// The fp32 kernels of packed weights (lowra_packed_gemm, lowra_packed_dequantize) for x86-64 with
// AVX2 + FMA: the primitives of lowra_packed_gemm_template.h; the scalar reference and the dispatch are in
// lowra_kernels.c.
#if defined(__x86_64__)

#include "../../lowra_kernels_internal.h"

#include <immintrin.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// AVX2: 8 codes per step, the same unpacking on 8 lanes.

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline __attribute__((always_inline)) __m256i codes8_avx2(const uint8_t *p, const unsigned b) {
    uint32_t v = 0;
    memcpy(&v, p, b);  // 8 codes of b bits: b bytes
    const __m256i sh = b == 4   ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                       : b == 2 ? _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)
                                : _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)v), sh), _mm256_set1_epi32((1 << b) - 1));
}

// The (scaled) levels of 8 codes: the 16 levels of a 4-bit row sit in two registers, the code's
// top bit choosing between the two permutes.
AVX2 static inline __attribute__((always_inline)) __m256 lookup8_avx2(const uint8_t *p, const unsigned b,
                                                                       const __m256 tlo, const __m256 thi) {
    const __m256i idx = codes8_avx2(p, b);
    const __m256 v = _mm256_permutevar8x32_ps(tlo, idx);
    if (b != 4) return v;
    const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // sign bit = code bit 3
    return _mm256_blendv_ps(v, _mm256_permutevar8x32_ps(thi, idx), upper);
}

// The row's levels in two registers (levels 0-7, 8-15).
typedef struct {
    __m256 lo, hi;
} table_avx2;

AVX2 static inline __attribute__((always_inline)) table_avx2 table_scale_avx2(const table_avx2 t, const float s) {
    const __m256 sv = _mm256_set1_ps(s);
    return (table_avx2){_mm256_mul_ps(t.lo, sv), _mm256_mul_ps(t.hi, sv)};
}

#define PATH avx2
#define TARGET AVX2
#define VEC __m256
#define VW 8
#define TABLE table_avx2
#define TABLE_LOAD(tab) ((table_avx2){_mm256_loadu_ps(tab), _mm256_loadu_ps((tab) + 8)})
#define TABLE_SCALE(t, s) table_scale_avx2(t, s)
#define LOOKUP(p, b, t) lookup8_avx2(p, b, (t).lo, (t).hi)
#define VZERO _mm256_setzero_ps
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VADD _mm256_add_ps
#define VFMA _mm256_fmadd_ps
#define VHSUM lowra_hsum8
#include "../../lowra_packed_gemm_template.h"

#endif
