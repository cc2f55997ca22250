// The integer kernels for x86-64 with AVX2: activation quantizing and the products of packed
// and Q8_0 rows; the scalar references and the dispatch are in lowra_q8_kernels.c.
#if defined(__x86_64__)

#include "q8_x86.h"

// The same two steps 8 lanes at a time (cvtps and round_ps round to nearest even, as rintf does).
__attribute__((target("avx2,fma"))) float lowra_q8_max_abs_avx2(const float *x, uint64_t count) {
    if (count < LOWRA_BLOCK) return lowra_q8_max_abs_scalar(x, count);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (unsigned j = 0; j < LOWRA_BLOCK; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    const __m128 q = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    const __m128 h = _mm_max_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
}

// 32 int32 lanes (in four registers) to 32 bytes in order: packs interleave 128-bit lanes, the
// permute puts them back.
__attribute__((target("avx2,fma"))) static inline void store32_avx2(__m256i a, __m256i b, __m256i c, __m256i d,
                                                                    int8_t *dst) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i bytes =
        _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst, bytes);
}

__attribute__((target("avx2,fma"))) void lowra_q8_round_block_avx2(const float *x, uint64_t count, float inv,
                                                                 int8_t h[LOWRA_BLOCK], int8_t *l) {
    if (count < LOWRA_BLOCK) return lowra_q8_round_block_scalar(x, count, inv, h, l);
    const __m256 s = _mm256_set1_ps(inv), k256 = _mm256_set1_ps(256.0f);
    const __m256i top = _mm256_set1_epi32(127), bottom = _mm256_set1_epi32(-127);
    for (unsigned j = 0; j < LOWRA_BLOCK; j += 32) {
        __m256i hi[4], lo[4];
        for (unsigned i = 0; i < 4; i++) {
            const __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * i), s);
            const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            hi[i] = _mm256_cvtps_epi32(r);
            const __m256i e = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(t, r), k256));
            lo[i] = _mm256_max_epi32(bottom, _mm256_min_epi32(top, e));
        }
        store32_avx2(hi[0], hi[1], hi[2], hi[3], h + j);
        if (l) store32_avx2(lo[0], lo[1], lo[2], lo[3], l + j);
    }
}

// Σ of 64 int8.
__attribute__((target("avx2,fma"))) int32_t lowra_q8_block_sum_avx2(const int8_t *v) {
    const __m256i a = _mm256_loadu_si256((const __m256i *)v), b = _mm256_loadu_si256((const __m256i *)(v + 32));
    const __m256i a0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(a));
    const __m256i a1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(a, 1));
    const __m256i b0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b));
    const __m256i b1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(b, 1));
    const __m256i w = _mm256_add_epi16(_mm256_add_epi16(a0, a1), _mm256_add_epi16(b0, b1));
    const __m256i d = _mm256_madd_epi16(w, _mm256_set1_epi16(1));
    const __m128i q = _mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
    const __m128i h = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1)));
}

// ---------------------------------------------------------------------------------------------
// AVX2: 32 codes per register; u8 × s8 products widened to int16 pairs (no saturation).

AVX2 INLINE void unpack64_avx2(const uint8_t *p, unsigned b, __m256i *lo, __m256i *hi) {
    if (b == 4) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)p), m = _mm256_set1_epi8(15);
        *lo = _mm256_and_si256(v, m);
        *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
    } else if (b == 2) {
        const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p)), m = _mm256_set1_epi8(3);
        *lo = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 2, 2)), m);
        *hi = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(4, 4, 6, 6)), m);
    } else {
        int64_t bits;
        memcpy(&bits, p, 8);
        const __m256i v = _mm256_set1_epi64x(bits), m = _mm256_set1_epi8(1);
        *lo = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 1, 2, 3)), m);
        *hi = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(4, 5, 6, 7)), m);
    }
}

// Σ u·v over 32 bytes into 8 int32 lanes (u unsigned, v signed), widened so nothing saturates.
AVX2 INLINE __m256i dot32_avx2(__m256i u, const int8_t *v) {
    const __m128i v0 = _mm_loadu_si128((const __m128i *)v), v1 = _mm_loadu_si128((const __m128i *)(v + 16));
    const __m256i a = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(u)), _mm256_cvtepi8_epi16(v0));
    const __m256i b = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(u, 1)), _mm256_cvtepi8_epi16(v1));
    return _mm256_add_epi32(a, b);
}

// A partial last block's codes copied into pad by a loop (a memcpy call inside the row loop
// makes the compiler keep the sums in memory).
AVX2 INLINE void packed_row_q8_avx2(const lowra_packed_view *w, const lowra_q8_activations *x, const uint64_t n,
                                    float *y, uint64_t ldy, uint64_t r, const unsigned b) {
    const uint64_t nb = x->nb;
    const uint8_t *row = w->codes + w->row_offsets[r];
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w->levels_u8 + 16 * r)));
    const int8_t *v0 = x->q + order_of(b) * nb * LOWRA_BLOCK;
    const int16_t *t0 = x->t16 ? x->t16 + order_of(b) * nb * LOWRA_BLOCK : NULL;
    __m256 acc[LOWRA_MAX_COLUMNS];
    float off[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) {
        acc[c] = _mm256_setzero_ps();
        off[c] = 0;
    }
    uint8_t pad[32];
    for (uint64_t blk = 0; blk < nb; blk++) {
        __m256i lo, hi;
        unpack64_avx2(block_codes(row, w->in, blk, b, pad), b, &lo, &hi);
        lo = _mm256_shuffle_epi8(table, lo);
        hi = _mm256_shuffle_epi8(table, hi);
        const float a = lowra_block_scale(w, r * nb + blk);
        // Split activations: the block's levels widened to int16 once for every column, then t = 256 h + l
        // (int16) one vpmaddwd per 16 codes: |u t| <= 255 · 32639, a pair's sum fits int32.
        __m256i u16[4];
        if (t0) {
            u16[0] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(lo));
            u16[1] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(lo, 1));
            u16[2] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(hi));
            u16[3] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(hi, 1));
        }
        for (uint64_t c = 0; c < n; c++) {
            const uint64_t at = (c * 4 * nb + blk) * LOWRA_BLOCK;
            __m256i s;
            if (t0) {
                const __m256i *t = (const __m256i *)(t0 + at);
                s = _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_madd_epi16(u16[0], _mm256_loadu_si256(t)),
                                     _mm256_madd_epi16(u16[1], _mm256_loadu_si256(t + 1))),
                    _mm256_add_epi32(_mm256_madd_epi16(u16[2], _mm256_loadu_si256(t + 2)),
                                     _mm256_madd_epi16(u16[3], _mm256_loadu_si256(t + 3))));
            } else {
                s = _mm256_add_epi32(dot32_avx2(lo, v0 + at), dot32_avx2(hi, v0 + at + 32));
            }
            const float sc = a * x->scale[c * nb + blk];
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(sc), acc[c]);
            off[c] += sc * (float)x->sum[c * nb + blk];
        }
    }
    for (uint64_t c = 0; c < n; c++)
        y[c * ldy + r] = w->level_step[r] * lowra_hsum8(acc[c]) + w->level_min[r] * off[c];
}

// Q8_0: |w| times v with w's sign (llama.cpp's arrangement for maddubs: |w| <= 128, |v| <= 127).
AVX2 INLINE void q8_0_row_avx2(const uint8_t *row, const lowra_q8_activations *x, const uint64_t n, float *y,
                               uint64_t ldy, uint64_t r) {
    const uint64_t nb = x->nb, n32 = x->in / 32;
    __m256 acc[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) acc[c] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (uint64_t k = 0; k < n32; k++) {
        const uint8_t *blk = row + k * Q8_0_BYTES;
        const __m256i wq = _mm256_loadu_si256((const __m256i *)(blk + 2));
        const __m256i aw = _mm256_abs_epi8(wq);
        const float d = q8_0_scale_f16c(blk);
        for (uint64_t c = 0; c < n; c++) {
            const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 32 * k;
            const __m256i v = _mm256_loadu_si256((const __m256i *)(x->q + at));
            __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(v, wq)), ones);
            if (x->lo) {  // t = 256 h + l (|l| <= 127, so the sign trick holds)
                const __m256i l = _mm256_loadu_si256((const __m256i *)(x->lo + at));
                const __m256i sl = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(l, wq)), ones);
                s = _mm256_add_epi32(_mm256_slli_epi32(s, 8), sl);
            }
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * x->scale[c * nb + k / 2]), acc[c]);
        }
    }
    for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = lowra_hsum8(acc[c]);
}

AVX2 void lowra_packed_q8_avx2(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                uint64_t r0, uint64_t r1) {
    LOWRA_BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_q8_avx2)
}
AVX2 void lowra_q8_0_q8_avx2(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                           uint64_t ldy, uint64_t r0, uint64_t r1) {
    LOWRA_BY_COLUMNS(LOWRA_Q8_0_ROWS, q8_0_row_avx2)
}

#endif
