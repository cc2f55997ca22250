// The tiled decode kernels for x86-64 with AVX2 (lanes layout, lowra_tile_kernels.c): per block of
// 64 inputs, each lane's codes become its 64 levels as int16 in natural order (vpshufb on the
// lane's levels, each byte pair split into two int16) and meet every column's 16-bit activations
// in four vpmaddwd; the 16 lanes' partial sums are reduced together (vphaddd) and scaled 8 lanes at a
// time. Every integer sum is exact and every fp32 step the scalar reference's fused multiply-add
// in its order, so the results are its bits, column by column.
#if defined(__x86_64__)

#include "../../lowra_tile_internal.h"

#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

// Lane's 64 levels of one block as int16, inputs 16 k .. 16 k + 15 in r[k] (lowra_tile_kernels.c's
// lanes_bit is the inverse of these steps).
AVX2 INLINE void lane_levels(const uint8_t *p, unsigned b, __m256i table, __m256i r[4]) {
    __m256i lo, hi;
    if (b == 4) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)p), m = _mm256_set1_epi8(15);
        lo = _mm256_and_si256(v, m);
        hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
    } else if (b == 2) {
        const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p)), m = _mm256_set1_epi8(3);
        lo = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 2, 2)), m);
        hi = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(4, 4, 6, 6)), m);
    } else {
        int64_t bits;
        memcpy(&bits, p, 8);
        const __m256i v = _mm256_set1_epi64x(bits), m = _mm256_set1_epi8(1);
        lo = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 1, 2, 3)), m);
        hi = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(4, 5, 6, 7)), m);
    }
    lo = _mm256_shuffle_epi8(table, lo);
    hi = _mm256_shuffle_epi8(table, hi);
    const __m256i low_byte = _mm256_set1_epi16(0xFF);
    r[0] = _mm256_and_si256(lo, low_byte);
    r[1] = _mm256_srli_epi16(lo, 8);
    r[2] = _mm256_and_si256(hi, low_byte);
    r[3] = _mm256_srli_epi16(hi, 8);
}

// 16 of a column's activations from `at` as int16: t = 256 h + l (split) or h.
AVX2 INLINE __m256i column_t16(const lowra_q8_activations *x, uint64_t at) {
    return x->t16 ? _mm256_loadu_si256((const __m256i *)(x->t16 + at))
                  : _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x->q + at)));
}

AVX2 INLINE __m256i dot64(const __m256i r[4], const __m256i t[4]) {
    return _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(r[0], t[0]), _mm256_madd_epi16(r[1], t[1])),
                            _mm256_add_epi32(_mm256_madd_epi16(r[2], t[2]), _mm256_madd_epi16(r[3], t[3])));
}

// Lane k of the result: the sum of s[k]'s eight int32.
AVX2 INLINE __m256i reduce8(const __m256i s[8]) {
    const __m256i q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    const __m256i q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
}

// One tile, its width b and (for one column, decode) n constant in each instance.
AVX2 INLINE void one_tile(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                          uint64_t tile, const unsigned b, const uint64_t n) {
    const uint64_t nb = t->nb;
    __m256 acc[LOWRA_TILE_COLUMNS][2], off[LOWRA_TILE_COLUMNS][2];
    __m256i act[LOWRA_TILE_COLUMNS][4], part[LOWRA_TILE_COLUMNS][TILE];
    const uint8_t *table = t->tables + tile * TABLE_BYTES, *codes = t->codes + t->offsets[tile];
    const int32_t *rows = t->rows + tile * TILE;
    __m256i levels[TILE];
    for (unsigned i = 0; i < TILE; i++)
        levels[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(table + 16 * i)));
    const unsigned lanes = tile_lanes(rows);
    for (uint64_t c = 0; c < n; c++) {
        acc[c][0] = acc[c][1] = off[c][0] = off[c][1] = _mm256_setzero_ps();
        for (unsigned i = lanes; i < TILE; i++) part[c][i] = _mm256_setzero_si256();
    }
    for (uint64_t blk = 0; blk < nb; blk++) {
        for (uint64_t c = 0; c < n; c++) {
            const uint64_t at = (c * 4 * nb + blk) * LOWRA_BLOCK;
            for (unsigned k = 0; k < 4; k++) act[c][k] = column_t16(x, at + 16 * k);
        }
        const uint8_t *block = codes + blk * tile_block_bytes(b);
        for (unsigned i = 0; i < lanes; i++) {
            __m256i r[4];
            lane_levels(block + 8 * b * i, b, levels[i], r);
            for (uint64_t c = 0; c < n; c++) part[c][i] = dot64(r, act[c]);
        }
        const float *a = t->scales + (tile * nb + blk) * TILE;
        const __m256 a0 = _mm256_loadu_ps(a), a1 = _mm256_loadu_ps(a + 8);
        for (uint64_t c = 0; c < n; c++) {
            const __m256 xs = _mm256_set1_ps(x->scale[c * nb + blk]);
            const __m256 sum = _mm256_set1_ps((float)x->sum[c * nb + blk]);
            const __m256 sc0 = _mm256_mul_ps(a0, xs), sc1 = _mm256_mul_ps(a1, xs);
            acc[c][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(part[c])), sc0, acc[c][0]);
            acc[c][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(part[c] + 8)), sc1, acc[c][1]);
            off[c][0] = _mm256_fmadd_ps(sc0, sum, off[c][0]);
            off[c][1] = _mm256_fmadd_ps(sc1, sum, off[c][1]);
        }
    }
    const float *step = t->level_step + tile * TILE, *min = t->level_min + tile * TILE;
    for (uint64_t c = 0; c < n; c++) {
        float v[TILE] __attribute__((aligned(32)));
        for (unsigned h = 0; h < 2; h++)
            _mm256_store_ps(v + 8 * h, _mm256_fmadd_ps(_mm256_loadu_ps(step + 8 * h), acc[c][h],
                                                       _mm256_mul_ps(_mm256_loadu_ps(min + 8 * h), off[c][h])));
        for (unsigned i = 0; i < lanes; i++) y[c * ldy + (uint64_t)rows[i]] = v[i];
    }
}

AVX2 void lowra_tiled_gemm_avx2(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                uint64_t t0, uint64_t t1) {
    const uint64_t n = x->n;  // n <= LOWRA_TILE_COLUMNS
    for (uint64_t tile = t0; tile < t1; tile++) {
        const unsigned b = t->bits[tile];
        if (n == 1) {
            if (b == 1) one_tile(t, x, y, ldy, tile, 1, 1);
            else if (b == 2) one_tile(t, x, y, ldy, tile, 2, 1);
            else one_tile(t, x, y, ldy, tile, 4, 1);
        } else {
            if (b == 1) one_tile(t, x, y, ldy, tile, 1, n);
            else if (b == 2) one_tile(t, x, y, ldy, tile, 2, n);
            else one_tile(t, x, y, ldy, tile, 4, n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q8_0 tiles (the head), lanes layout: lane i's 32 int8 weights of a block at 32 i, widened and
// multiplied by each column's 16-bit activations (two vpmaddwd), the lanes reduced together and
// scaled by d_i s_c 8 at a time, as the scalar reference does.

AVX2 INLINE void q8_0_tile(const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                           uint64_t tile, const uint64_t n) {
    const uint64_t nb = x->nb, n32 = t->in / 32;
    __m256 acc[LOWRA_TILE_COLUMNS][2];
    __m256i act[LOWRA_TILE_COLUMNS][2], part[LOWRA_TILE_COLUMNS][TILE];
    const int32_t *rows = t->rows + tile * TILE;
    const unsigned lanes = tile_lanes(rows);
    for (uint64_t c = 0; c < n; c++) {
        acc[c][0] = acc[c][1] = _mm256_setzero_ps();
        for (unsigned i = lanes; i < TILE; i++) part[c][i] = _mm256_setzero_si256();
    }
    for (uint64_t k32 = 0; k32 < n32; k32++) {
        for (uint64_t c = 0; c < n; c++) {
            const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 32 * k32;
            for (unsigned k = 0; k < 2; k++) act[c][k] = column_t16(x, at + 16 * k);
        }
        const uint8_t *block = t->codes + (tile * n32 + k32) * 512;
        for (unsigned i = 0; i < lanes; i++) {
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(block + 32 * i)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(block + 32 * i + 16)));
            for (uint64_t c = 0; c < n; c++)
                part[c][i] = _mm256_add_epi32(_mm256_madd_epi16(w0, act[c][0]), _mm256_madd_epi16(w1, act[c][1]));
        }
        const float *d = t->scales + (tile * n32 + k32) * TILE;
        const __m256 d0 = _mm256_loadu_ps(d), d1 = _mm256_loadu_ps(d + 8);
        for (uint64_t c = 0; c < n; c++) {
            const __m256 xs = _mm256_set1_ps(x->scale[c * nb + k32 / 2]);
            acc[c][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(part[c])), _mm256_mul_ps(d0, xs), acc[c][0]);
            acc[c][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(part[c] + 8)), _mm256_mul_ps(d1, xs), acc[c][1]);
        }
    }
    for (uint64_t c = 0; c < n; c++) {
        float v[TILE] __attribute__((aligned(32)));
        _mm256_store_ps(v, acc[c][0]);
        _mm256_store_ps(v + 8, acc[c][1]);
        for (unsigned i = 0; i < lanes; i++) y[c * ldy + (uint64_t)rows[i]] = v[i];
    }
}

AVX2 void lowra_q8_0_tiled_gemm_avx2(const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y,
                                     uint64_t ldy, uint64_t t0, uint64_t t1) {
    for (uint64_t tile = t0; tile < t1; tile++) {
        if (x->n == 1) q8_0_tile(t, x, y, ldy, tile, 1);
        else q8_0_tile(t, x, y, ldy, tile, x->n);
    }
}

#endif
