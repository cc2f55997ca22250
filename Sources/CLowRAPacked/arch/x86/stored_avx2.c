// The stored-matrix kernels for x86-64 with AVX2 + FMA + F16C; the scalar reference and the dispatch are in
// lowra_stored_kernels.c.
#if defined(__x86_64__)

#include "../../lowra_stored_internal.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 INLINE __m256 load8_avx2(unsigned t, const uint8_t *row, uint64_t j) {
    if (t == T_F32) return _mm256_loadu_ps((const float *)(row + 4 * j));
    const __m128i h = _mm_loadu_si128((const __m128i *)(row + 2 * j));
    if (t == T_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 INLINE void row_avx2(unsigned t, const uint8_t *row, uint64_t in, const float *x, const uint64_t n, float *y,
                          uint64_t ldy, uint64_t r) {
    __m256 acc[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) acc[c] = _mm256_setzero_ps();
    uint64_t j = 0;
    if (t == T_F32 || t == T_F16 || t == T_BF16) {
        for (; j + 8 <= in; j += 8) {
            const __m256 w = load8_avx2(t, row, j);
            for (uint64_t c = 0; c < n; c++) acc[c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + c * in + j), acc[c]);
        }
    } else {
        const uint64_t bytes = t == T_Q8_0 ? 34 : t == T_Q4_1 ? 20 : 18;
        for (; j + 32 <= in; j += 32) {
            const uint8_t *p = row + (j / 32) * bytes;
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(load_u16(p)));
            const __m256 m = _mm256_set1_ps(t == T_Q4_1 ? _cvtsh_ss(load_u16(p + 2)) : 0);  // Q4_1's block minimum
            __m256 q[4];  // elements 0-7, 8-15, 16-23, 24-31
            if (t == T_Q8_0) {
                for (int k = 0; k < 4; k++) {
                    q[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + 8 * k))));
                }
            } else {
                const uint8_t *qs = p + (t == T_Q4_1 ? 4 : 2);
                const __m256i k8 = _mm256_set1_epi32(t == T_Q4_0 ? 8 : 0), m15 = _mm256_set1_epi32(15);
                for (int k = 0; k < 2; k++) {
                    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8 * k)));
                    q[k] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v, m15), k8));
                    q[k + 2] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v, 4), k8));
                }
            }
            for (uint64_t c = 0; c < n; c++) {
                const float *xc = x + c * in + j;
                const __m256 x0 = _mm256_loadu_ps(xc), x1 = _mm256_loadu_ps(xc + 8);
                const __m256 x2 = _mm256_loadu_ps(xc + 16), x3 = _mm256_loadu_ps(xc + 24);
                __m256 p0 = _mm256_fmadd_ps(q[0], x0, _mm256_mul_ps(q[1], x1));
                p0 = _mm256_fmadd_ps(q[2], x2, p0);
                p0 = _mm256_fmadd_ps(q[3], x3, p0);
                acc[c] = _mm256_fmadd_ps(p0, d, acc[c]);
                if (t == T_Q4_1) {
                    const __m256 sx = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
                    acc[c] = _mm256_fmadd_ps(sx, m, acc[c]);
                }
            }
        }
    }
    for (uint64_t c = 0; c < n; c++)
        y[c * ldy + r] = lowra_stored_tail_dot(t, row, j, in, x + c * in, lowra_hsum8(acc[c]));
}

AVX2 void lowra_stored_gemm_avx2(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in,
                                 const float *x, uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    LOWRA_STORED_COLUMNS(row_avx2)
}


#endif
