// Error feedback's column sweep (lowra_error_feedback.c has the reference) on AVX-512: 16 rows at a
// time, one per lane, their block of columns transposed into a tile so that the update of the
// later columns is one multiply and one subtract per column and 16 rows; rows left over run the
// reference. Every operation is the reference's, unfused and in its order.
#if defined(__x86_64__)

#include "../../lowra_error_feedback_internal.h"
#include "../../lowra_kernels_internal.h"

#include <immintrin.h>

#pragma STDC FP_CONTRACT OFF

#define LANES 16

LOWRA_NO_CONTRACT __attribute__((target("avx512f"))) static void rows16(const lowra_error_feedback_args *a,
                                                                        uint64_t r0) {
    const uint64_t n = a->n, i1 = a->i1, i2 = a->i2, cols = i2 - i1;
    float tile[LOWRA_EF_MAX_COLUMNS][LANES] __attribute__((aligned(64)));
    float err_tile[LOWRA_EF_MAX_COLUMNS][LANES] __attribute__((aligned(64)));
    uint8_t code_tile[LOWRA_EF_MAX_COLUMNS][LANES];
    float th[LOWRA_EF_LEVELS - 1][LANES] __attribute__((aligned(64)));
    lowra_ef_load(a, r0, LANES, &tile[0][0], &th[0][0]);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i level_base = _mm512_mullo_epi32(lane, _mm512_set1_epi32(LOWRA_EF_LEVELS));
    const float *levels = a->levels + r0 * LOWRA_EF_LEVELS;
    const __m512i scale_rows = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)a->scale_stride));
    double start[LANES];
    for (unsigned i = 0; i < LANES; i++) start[i] = a->errors[r0 + i];
    __m512d sum_lo = _mm512_loadu_pd(start), sum_hi = _mm512_loadu_pd(start + 8);
    __m512 s = _mm512_setzero_ps();
    uint64_t scale_block = UINT64_MAX;
    for (uint64_t j = i1; j < i2; j++) {
        const uint64_t c = j - i1;
        if (j / a->block_size != scale_block) {
            scale_block = j / a->block_size;
            s = _mm512_i32gather_ps(scale_rows, a->scales + r0 * a->scale_stride + scale_block, 4);
        }
        const __m512 x = _mm512_load_ps(tile[c]);
        const __mmask16 valid = _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ);
        const __m512 y = _mm512_maskz_div_ps(valid, x, s);
        __m512i code = _mm512_setzero_si512();
        for (unsigned t = 0; t < LOWRA_EF_LEVELS - 1; t++) {
            const __mmask16 above = _mm512_mask_cmp_ps_mask(valid, y, _mm512_load_ps(th[t]), _CMP_GT_OQ);
            code = _mm512_mask_add_epi32(code, above, code, _mm512_set1_epi32(1));
        }
        const __m512 level = _mm512_i32gather_ps(_mm512_add_epi32(level_base, code), levels, 4);
        const __m512 q = _mm512_maskz_mul_ps(valid, s, level);
        _mm_storeu_si128((__m128i *)code_tile[c], _mm512_cvtepi32_epi8(code));
        const __m512 err = _mm512_div_ps(_mm512_sub_ps(x, q), _mm512_set1_ps(a->u[j * n + j]));
        _mm512_store_ps(err_tile[c], err);
        const __m512d dlo = _mm512_cvtps_pd(_mm512_castps512_ps256(err));
        const __m512d dhi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(err), 1)));
        sum_lo = _mm512_add_pd(sum_lo, _mm512_mul_pd(dlo, dlo));
        sum_hi = _mm512_add_pd(sum_hi, _mm512_mul_pd(dhi, dhi));
        const float *uj = a->u + j * n + i1;
        for (uint64_t t = c + 1; t < cols; t++) {
            const __m512 v = _mm512_load_ps(tile[t]);
            _mm512_store_ps(tile[t], _mm512_sub_ps(v, _mm512_mul_ps(err, _mm512_set1_ps(uj[t]))));
        }
    }
    _mm512_storeu_pd(start, sum_lo);
    _mm512_storeu_pd(start + 8, sum_hi);
    lowra_ef_store(a, r0, LANES, &tile[0][0], &code_tile[0][0], &err_tile[0][0], start);
}

void lowra_error_feedback_rows_avx512(const lowra_error_feedback_args *a, uint64_t r0, uint64_t r1) {
    uint64_t r = r0;
    for (; r + LANES <= r1; r += LANES) rows16(a, r);
    if (r < r1) lowra_error_feedback_rows_scalar(a, r, r1);
}

#endif
