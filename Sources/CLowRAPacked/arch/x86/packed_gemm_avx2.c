// The fp32 kernels of packed weights (lowra_packed_gemm, lowra_packed_dequantize) for x86-64 with
// AVX2 + FMA; the scalar reference and the dispatch are in lowra_kernels.c.
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

AVX2 static inline __attribute__((always_inline)) void rows_avx2(const lowra_packed_view *w, const float *x,
                                                                   const uint64_t n, float *y, uint64_t ldy, uint64_t r,
                                                                   const unsigned b) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    const uint8_t *row = w->codes + w->row_offsets[r];
    float tab[16];
    lowra_row_levels(w, r, tab);
    const __m256 lo = _mm256_loadu_ps(tab), hi = _mm256_loadu_ps(tab + 8);
    __m256 acc[LOWRA_MAX_COLUMNS], acc2[LOWRA_MAX_COLUMNS];
    float tail[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) {
        acc[c] = acc2[c] = _mm256_setzero_ps();
        tail[c] = 0;
    }
    for (uint64_t blk = 0; blk < nb; blk++) {
        const float s = lowra_block_scale(w, r * nb + blk);
        const __m256 sv = _mm256_set1_ps(s);
        const __m256 tlo = _mm256_mul_ps(lo, sv), thi = _mm256_mul_ps(hi, sv);
        const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
        uint64_t j = j0;
        for (; j + 16 <= j1; j += 16) {
            const __m256 v = lookup8_avx2(row + j * b / 8, b, tlo, thi);
            const __m256 v2 = lookup8_avx2(row + (j + 8) * b / 8, b, tlo, thi);
            for (uint64_t c = 0; c < n; c++) {
                acc[c] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + c * in + j), acc[c]);
                acc2[c] = _mm256_fmadd_ps(v2, _mm256_loadu_ps(x + c * in + j + 8), acc2[c]);
            }
        }
        for (; j + 8 <= j1; j += 8) {
            const __m256 v = lookup8_avx2(row + j * b / 8, b, tlo, thi);
            for (uint64_t c = 0; c < n; c++) acc[c] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + c * in + j), acc[c]);
        }
        lowra_lookup_dot(row, b, j, j1, s, tab, x, in, n, tail);
    }
    for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = lowra_hsum8(_mm256_add_ps(acc[c], acc2[c])) + tail[c];
}

AVX2 void lowra_packed_dequantize_avx2(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t r = r0; r < r1; r++, out += in) {
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r];
        float tab[16];
        lowra_row_levels(w, r, tab);
        const __m256 lo = _mm256_loadu_ps(tab), hi = _mm256_loadu_ps(tab + 8);
        for (uint64_t blk = 0; blk < nb; blk++) {
            const float s = lowra_block_scale(w, r * nb + blk);
            const __m256 sv = _mm256_set1_ps(s);
            const __m256 tlo = _mm256_mul_ps(lo, sv), thi = _mm256_mul_ps(hi, sv);
            const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
            uint64_t j = j0;
            for (; j + 8 <= j1; j += 8) _mm256_storeu_ps(out + j, lookup8_avx2(row + j * b / 8, b, tlo, thi));
            lowra_lookup_span(row, b, j, j1, s, tab, out);
        }
    }
}

AVX2 void lowra_packed_gemm_avx2(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                                 uint64_t r0, uint64_t r1) {
    LOWRA_DISPATCH_COLUMNS(rows_avx2)
}

#endif
