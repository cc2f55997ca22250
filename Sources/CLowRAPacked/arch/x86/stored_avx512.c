// The stored-matrix kernels for x86-64 with AVX-512; the scalar reference and the dispatch are in
// lowra_stored_kernels.c.
#if defined(__x86_64__)

#include "../../lowra_stored_internal.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

// 16 values of a float-like row starting at element j.
AVX512 INLINE __m512 load16_avx512(unsigned t, const uint8_t *row, uint64_t j) {
    if (t == T_F32) return _mm512_loadu_ps((const float *)(row + 4 * j));
    const __m256i h = _mm256_loadu_si256((const __m256i *)(row + 2 * j));
    if (t == T_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 INLINE void row_avx512(unsigned t, const uint8_t *row, uint64_t in, const float *x, const uint64_t n, float *y,
                              uint64_t ldy, uint64_t r) {
    __m512 acc[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    uint64_t j = 0;
    if (t == T_F32 || t == T_F16 || t == T_BF16) {
        for (; j + 16 <= in; j += 16) {
            const __m512 w = load16_avx512(t, row, j);
            for (uint64_t c = 0; c < n; c++) acc[c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + c * in + j), acc[c]);
        }
    } else {
        const uint64_t bytes = t == T_Q8_0 ? 34 : t == T_Q4_1 ? 20 : 18;
        for (; j + 32 <= in; j += 32) {
            const uint8_t *p = row + (j / 32) * bytes;
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(p)));
            const __m512 m = _mm512_set1_ps(t == T_Q4_1 ? _cvtsh_ss(load_u16(p + 2)) : 0);  // Q4_1's block minimum
            __m512 lo, hi;
            if (t == T_Q8_0) {
                lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2))));
                hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18))));
            } else {
                const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + (t == T_Q4_1 ? 4 : 2))));
                const __m512i k = _mm512_set1_epi32(t == T_Q4_0 ? 8 : 0);
                lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(15)), k));
                hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(v, 4), k));
            }
            for (uint64_t c = 0; c < n; c++) {
                const __m512 xl = _mm512_loadu_ps(x + c * in + j), xh = _mm512_loadu_ps(x + c * in + j + 16);
                acc[c] = _mm512_fmadd_ps(_mm512_fmadd_ps(lo, xl, _mm512_mul_ps(hi, xh)), d, acc[c]);
                if (t == T_Q4_1) acc[c] = _mm512_fmadd_ps(_mm512_add_ps(xl, xh), m, acc[c]);
            }
        }
    }
    for (uint64_t c = 0; c < n; c++)
        y[c * ldy + r] = lowra_stored_tail_dot(t, row, j, in, x + c * in, _mm512_reduce_add_ps(acc[c]));
}

AVX512 void lowra_stored_gemm_avx512(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in,
                                     const float *x, uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    LOWRA_STORED_COLUMNS(row_avx512)
}

// Q8_0 rows to fp32, 32 values per block: d * q, as lowra_stored_decode computes them.
AVX512 void lowra_stored_q8_0_rows_avx512(const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0,
                                          uint64_t r1, float *out) {
    for (uint64_t r = r0; r < r1; r++) {
        const uint8_t *row = rows + r * row_bytes;
        for (uint64_t j = 0; j < in; j += 32, out += 32) {
            const uint8_t *p = row + (j / 32) * 34;
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(p)));
            const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2))));
            const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18))));
            _mm512_storeu_ps(out, _mm512_mul_ps(d, lo));
            _mm512_storeu_ps(out + 16, _mm512_mul_ps(d, hi));
        }
    }
}

#endif
