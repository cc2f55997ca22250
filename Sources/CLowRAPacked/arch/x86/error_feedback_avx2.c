// Error feedback's column sweep (lowra_error_feedback.c has the reference) on AVX2: 8 rows at a
// time, one per lane, as the AVX-512 version (error_feedback_avx512.c) does with 16; rows left over
// run the reference. Every operation is the reference's, unfused and in its order.
#if defined(__x86_64__)

#include "../../lowra_error_feedback_internal.h"
#include "../../lowra_kernels_internal.h"

#include <immintrin.h>

#pragma STDC FP_CONTRACT OFF

#define LANES 8

LOWRA_NO_CONTRACT __attribute__((target("avx2"))) static void rows8(const lowra_error_feedback_args *a, uint64_t r0) {
    const uint64_t n = a->n, i1 = a->i1, i2 = a->i2, cols = i2 - i1;
    float tile[LOWRA_EF_MAX_COLUMNS][LANES] __attribute__((aligned(32)));
    float err_tile[LOWRA_EF_MAX_COLUMNS][LANES] __attribute__((aligned(32)));
    uint8_t code_tile[LOWRA_EF_MAX_COLUMNS][LANES];
    float th[LOWRA_EF_LEVELS - 1][LANES] __attribute__((aligned(32)));
    lowra_ef_load(a, r0, LANES, &tile[0][0], &th[0][0]);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i level_base = _mm256_mullo_epi32(lane, _mm256_set1_epi32(LOWRA_EF_LEVELS));
    const float *levels = a->levels + r0 * LOWRA_EF_LEVELS;
    const __m256i scale_rows = _mm256_mullo_epi32(lane, _mm256_set1_epi32((int)a->scale_stride));
    double start[LANES];
    for (unsigned i = 0; i < LANES; i++) start[i] = a->errors[r0 + i];
    __m256d sum_lo = _mm256_loadu_pd(start), sum_hi = _mm256_loadu_pd(start + 4);
    __m256 s = _mm256_setzero_ps();
    uint64_t scale_block = UINT64_MAX;
    for (uint64_t j = i1; j < i2; j++) {
        const uint64_t c = j - i1;
        if (j / a->block_size != scale_block) {
            scale_block = j / a->block_size;
            s = _mm256_i32gather_ps(a->scales + r0 * a->scale_stride + scale_block, scale_rows, 4);
        }
        const __m256 x = _mm256_load_ps(tile[c]);
        const __m256 valid = _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_GT_OQ);
        const __m256 y = _mm256_div_ps(x, s);  // used only where valid
        __m256i code = _mm256_setzero_si256();
        for (unsigned t = 0; t < LOWRA_EF_LEVELS - 1; t++) {
            const __m256 above = _mm256_cmp_ps(y, _mm256_load_ps(th[t]), _CMP_GT_OQ);
            code = _mm256_sub_epi32(code, _mm256_castps_si256(above));  // a true lane is -1
        }
        code = _mm256_and_si256(code, _mm256_castps_si256(valid));
        const __m256 level = _mm256_i32gather_ps(levels, _mm256_add_epi32(level_base, code), 4);
        const __m256 q = _mm256_and_ps(valid, _mm256_mul_ps(s, level));
        int32_t code32[LANES] __attribute__((aligned(32)));
        _mm256_store_si256((__m256i *)code32, code);
        for (unsigned i = 0; i < LANES; i++) code_tile[c][i] = (uint8_t)code32[i];
        const __m256 err = _mm256_div_ps(_mm256_sub_ps(x, q), _mm256_set1_ps(a->u[j * n + j]));
        _mm256_store_ps(err_tile[c], err);
        const __m256d dlo = _mm256_cvtps_pd(_mm256_castps256_ps128(err));
        const __m256d dhi = _mm256_cvtps_pd(_mm256_extractf128_ps(err, 1));
        sum_lo = _mm256_add_pd(sum_lo, _mm256_mul_pd(dlo, dlo));
        sum_hi = _mm256_add_pd(sum_hi, _mm256_mul_pd(dhi, dhi));
        const float *uj = a->u + j * n + i1;
        for (uint64_t t = c + 1; t < cols; t++) {
            const __m256 v = _mm256_load_ps(tile[t]);
            _mm256_store_ps(tile[t], _mm256_sub_ps(v, _mm256_mul_ps(err, _mm256_set1_ps(uj[t]))));
        }
    }
    _mm256_storeu_pd(start, sum_lo);
    _mm256_storeu_pd(start + 4, sum_hi);
    lowra_ef_store(a, r0, LANES, &tile[0][0], &code_tile[0][0], &err_tile[0][0], start);
}

void lowra_error_feedback_rows_avx2(const lowra_error_feedback_args *a, uint64_t r0, uint64_t r1) {
    uint64_t r = r0;
    for (; r + LANES <= r1; r += LANES) rows8(a, r);
    if (r < r1) lowra_error_feedback_rows_scalar(a, r, r1);
}

#endif
