// The fp32 kernels of packed weights (lowra_packed_gemm, lowra_packed_dequantize) for x86-64 with
// AVX-512 F/BW/VL; the scalar reference and the dispatch are in lowra_kernels.c.
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

AVX512 static inline __attribute__((always_inline)) void rows_avx512(const lowra_packed_view *w, const float *x,
                                                                       const uint64_t n, float *y, uint64_t ldy,
                                                                       uint64_t r, const unsigned b) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    const uint8_t *row = w->codes + w->row_offsets[r];
    float tab[16];
    lowra_row_levels(w, r, tab);
    const __m512 table = _mm512_loadu_ps(tab);
    // Two sets of accumulators, alternating by 16 inputs, halve the fused multiply-add chains.
    __m512 acc[LOWRA_MAX_COLUMNS], acc2[LOWRA_MAX_COLUMNS];
    float tail[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) {
        acc[c] = acc2[c] = _mm512_setzero_ps();
        tail[c] = 0;
    }
    for (uint64_t blk = 0; blk < nb; blk++) {
        const float s = lowra_block_scale(w, r * nb + blk);
        const __m512 t = _mm512_mul_ps(table, _mm512_set1_ps(s));
        const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
        uint64_t j = j0;
        for (; j + 32 <= j1; j += 32) {
            const __m512 v = _mm512_permutexvar_ps(codes16_avx512(row + j * b / 8, b), t);
            const __m512 v2 = _mm512_permutexvar_ps(codes16_avx512(row + (j + 16) * b / 8, b), t);
            for (uint64_t c = 0; c < n; c++) {
                acc[c] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x + c * in + j), acc[c]);
                acc2[c] = _mm512_fmadd_ps(v2, _mm512_loadu_ps(x + c * in + j + 16), acc2[c]);
            }
        }
        for (; j + 16 <= j1; j += 16) {
            const __m512 v = _mm512_permutexvar_ps(codes16_avx512(row + j * b / 8, b), t);
            for (uint64_t c = 0; c < n; c++) acc[c] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x + c * in + j), acc[c]);
        }
        lowra_lookup_dot(row, b, j, j1, s, tab, x, in, n, tail);
    }
    for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[c], acc2[c])) + tail[c];
}

AVX512 void lowra_packed_dequantize_avx512(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t r = r0; r < r1; r++, out += in) {
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r];
        float tab[16];
        lowra_row_levels(w, r, tab);
        const __m512 table = _mm512_loadu_ps(tab);
        for (uint64_t blk = 0; blk < nb; blk++) {
            const float s = lowra_block_scale(w, r * nb + blk);
            const __m512 t = _mm512_mul_ps(table, _mm512_set1_ps(s));
            const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
            uint64_t j = j0;
            for (; j + 16 <= j1; j += 16)
                _mm512_storeu_ps(out + j, _mm512_permutexvar_ps(codes16_avx512(row + j * b / 8, b), t));
            lowra_lookup_span(row, b, j, j1, s, tab, out);
        }
    }
}

AVX512 void lowra_packed_gemm_avx512(const lowra_packed_view *w, const float *x, uint64_t n, float *y,
                                     uint64_t ldy, uint64_t r0, uint64_t r1) {
    LOWRA_DISPATCH_COLUMNS(rows_avx512)
}

#endif
