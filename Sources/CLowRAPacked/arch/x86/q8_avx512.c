// The integer kernels for x86-64 with AVX-512 VNNI, with and without VBMI: the activations'
// reordering (VBMI) and the products of packed and Q8_0 rows; the scalar references and the
// dispatch are in lowra_q8_kernels.c.
#if defined(__x86_64__)

#include "q8_x86.h"

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

// A block in order o with one byte permute (AVX-512 VBMI).
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void lowra_q8_reorder_vbmi(const int8_t *v, unsigned o,
                                                                               int8_t *dst) {
    const __m512i idx = _mm512_loadu_si512((const void *)lowra_q8_element[o]);
    _mm512_storeu_si512((void *)dst, _mm512_permutexvar_epi8(idx, _mm512_loadu_si512((const void *)v)));
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI: a block of 64 codes in one register, one vpdpbusd per column.

VNNI INLINE __m512i unpack64_vnni(const uint8_t *p, unsigned b) {
    if (b == 4) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)p), m = _mm256_set1_epi8(15);
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, m)),
                                  _mm256_and_si256(_mm256_srli_epi16(v, 4), m), 1);
    } else if (b == 2) {
        const __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
        return _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 2, 2, 4, 4, 6, 6)),
                                _mm512_set1_epi8(3));
    } else {
        int64_t bits;
        memcpy(&bits, p, 8);
        return _mm512_and_si512(_mm512_srlv_epi64(_mm512_set1_epi64(bits), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7)),
                                _mm512_set1_epi8(1));
    }
}

// The block scales a_rb of blocks i0 ..< i0 + count (count <= 16) of the flattened (out * nb)
// array, lanes past count zero: the values lowra_block_scale gives (code / 255 divided, as the
// table holds it, then times the group's scale), 16 at a time instead of one per block.
VNNI INLINE __m512 block_scales16(const lowra_packed_view *w, uint64_t i0, unsigned count) {
    const __mmask16 m = (__mmask16)((1u << count) - 1);
    if (w->absmax) return _mm512_maskz_loadu_ps(m, w->absmax + i0);
    const __m512i codes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, w->absmax_codes + i0));
    const __m512 fraction = _mm512_div_ps(_mm512_cvtepi32_ps(codes), _mm512_set1_ps(255.0f));
    const uint64_t g0 = i0 / LOWRA_DQ_GROUP, g1 = (i0 + count - 1) / LOWRA_DQ_GROUP;
    __m512 g = _mm512_set1_ps(w->absmax_scales[g0]);
    if (g1 != g0)  // the lanes from the next group's first block on
        g = _mm512_mask_blend_ps((__mmask16)(0xffffu << (g1 * LOWRA_DQ_GROUP - i0)), g,
                                 _mm512_set1_ps(w->absmax_scales[g1]));
    return _mm512_mul_ps(fraction, g);
}

// The row's levels as a lookup table and a block's 64 levels from its codes, two ways, and the
// activation order each reads for a width.
typedef struct {
    __m512i t0, t1;
} row_table_512;

// VNNI: variable shifts and a mask unpack the codes, vpshufb looks them up in the 16 levels.
VNNI INLINE row_table_512 row_table_vnni(const lowra_packed_view *w, uint64_t r, unsigned b) {
    (void)b;
    const __m512i t = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(w->levels_u8 + 16 * r)));
    return (row_table_512){t, t};
}
VNNI INLINE __m512i block_levels_vnni(row_table_512 table, const uint8_t *p, unsigned b) {
    return _mm512_shuffle_epi8(table.t0, unpack64_vnni(p, b));
}
static inline unsigned order_vnni(unsigned b) { return order_of(b); }

// VBMI: one vpmultishiftqb moves each code to the bottom of its byte (in the same unpacking
// order) and vpermb looks it up by the byte's low 6 bits, so the bits of the next codes above it
// need no mask: the 64-byte table repeats the row's 2^b levels. One-bit codes are a byte mask
// already: a masked move picks the row's second level where the bit is set (natural order).
#define VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))
VBMI INLINE row_table_512 row_table_vbmi(const lowra_packed_view *w, uint64_t r, unsigned b) {
    const uint8_t *u = w->levels_u8 + 16 * r;
    if (b == 1) return (row_table_512){_mm512_set1_epi8((char)u[0]), _mm512_set1_epi8((char)u[1])};
    const __m512i t = b == 2 ? _mm512_set1_epi32((int)((uint32_t)u[0] | (uint32_t)u[1] << 8 |
                                                       (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24))
                             : _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)u));
    return (row_table_512){t, t};
}
VBMI INLINE __m512i block_levels_vbmi(row_table_512 table, const uint8_t *p, unsigned b) {
    if (b == 1) {
        uint64_t bits;
        memcpy(&bits, p, 8);
        return _mm512_mask_mov_epi8(table.t0, _cvtu64_mask64(bits), table.t1);
    }
    const __m512i v = b == 2 ? _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p))
                             : _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
    const __m512i shift = _mm512_loadu_si512((const void *)lowra_q8_multishift[b == 2 ? 0 : 1]);
    return _mm512_permutexvar_epi8(_mm512_multishift_epi64_epi8(shift, v), table.t0);
}
static inline unsigned order_vbmi(unsigned b) { return b == 1 ? 0 : order_of(b); }

// The exact int32 sums of 64 products u · t in 16 lanes: t = h, or 256 h + l when l is given.
VNNI INLINE __m512i exact_sums_512(__m512i u, const int8_t *h, const int8_t *l) {
    const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_load_si512((const void *)h));
    return l ? _mm512_dpbusd_epi32(_mm512_slli_epi32(s, 8), u, _mm512_load_si512((const void *)l)) : s;
}

// One block: its exact sums added to acc scaled by sc.
VNNI INLINE __m512 block_q8_512(__m512i u, const int8_t *h, const int8_t *l, const float *sc, __m512 acc) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact_sums_512(u, h, l)), _mm512_set1_ps(*sc), acc);
}

// Block k of the stretch, its codes at CODES, into the sums ACC[c] of every column.
#define BLOCK_Q8_512(LEVELS, SPLIT, K, CODES, ACC)                                                      \
    do {                                                                                                \
        const uint64_t blk = b0 + (K);                                                                  \
        const __m512i u = LEVELS(table, CODES, b);                                                      \
        for (uint64_t c = 0; c < columns; c++) {                                                        \
            const uint64_t at = (c * 4 * nb + blk) * LOWRA_BLOCK;                                       \
            ACC[c] = block_q8_512(u, v0 + at, SPLIT ? l0 + at : NULL, &sc[c][K], ACC[c]);               \
        }                                                                                               \
    } while (0)

// Per stretch of up to 16 blocks: the scales a_rb · s_cb in one vector product (kept in sc), the
// offset term Σ sc · Σt in a vector, then per block the integer dot products and one fused
// multiply-add, even and odd blocks into two sums (one chain of fused multiply-adds would wait
// out each one's latency). No scalar float work per block: with 512-bit instructions in flight
// only port 0 runs vector and scalar float alike, so each scalar operation costs a cycle. Whole
// blocks read their codes straight from the row (a broadcast load), a partial last block through
// a padded copy. ONE: the one-column (decode) instance, whose arrays of one the compiler keeps in
// registers (with arrays indexed by a column count it keeps them on the stack); SPLIT: 16-bit
// activations. Each step is the same, in the same order, so a column's result does not depend on
// how many columns share the call.
#define PACKED_ROW_Q8_512(TARGET, NAME, TABLE, LEVELS, ORDER, ONE, SPLIT)                               \
    TARGET INLINE void NAME(const lowra_packed_view *w, const lowra_q8_activations *x, const uint64_t n,  \
                            float *y, uint64_t ldy, uint64_t r, const unsigned b) {                       \
        const uint64_t nb = x->nb, full = w->in / LOWRA_BLOCK, columns = ONE ? 1 : n;                   \
        const uint8_t *row = w->codes + w->row_offsets[r];                                              \
        const row_table_512 table = TABLE(w, r, b);                                                     \
        const int8_t *v0 = x->q + ORDER(b) * nb * LOWRA_BLOCK;                                          \
        const int8_t *l0 = SPLIT ? x->lo + ORDER(b) * nb * LOWRA_BLOCK : NULL;                          \
        __m512 acc0[ONE ? 1 : LOWRA_MAX_COLUMNS], acc1[ONE ? 1 : LOWRA_MAX_COLUMNS];                    \
        __m512 off[ONE ? 1 : LOWRA_MAX_COLUMNS];                                                        \
        float sc[ONE ? 1 : LOWRA_MAX_COLUMNS][16] __attribute__((aligned(64)));                         \
        for (uint64_t c = 0; c < columns; c++) acc0[c] = acc1[c] = off[c] = _mm512_setzero_ps();        \
        for (uint64_t b0 = 0; b0 < nb; b0 += 16) {                                                      \
            const unsigned count = nb - b0 < 16 ? (unsigned)(nb - b0) : 16;                             \
            const unsigned whole = full - b0 < count ? (unsigned)(full - b0) : count;                   \
            const __mmask16 m = (__mmask16)((1u << count) - 1);                                         \
            const __m512 a = block_scales16(w, r * nb + b0, count);                                     \
            for (uint64_t c = 0; c < columns; c++) {                                                    \
                const __m512 s = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, x->scale + c * nb + b0));    \
                _mm512_store_ps(sc[c], s);                                                              \
                const __m512i sums = _mm512_maskz_loadu_epi32(m, x->sum + c * nb + b0);                 \
                off[c] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(sums), off[c]);                          \
            }                                                                                           \
            const uint8_t *codes = row + b0 * 8 * b;                                                    \
            unsigned k = 0;                                                                             \
            for (; k + 2 <= whole; k += 2) {                                                            \
                BLOCK_Q8_512(LEVELS, SPLIT, k, codes + k * 8 * b, acc0);                                       \
                BLOCK_Q8_512(LEVELS, SPLIT, k + 1, codes + (k + 1) * 8 * b, acc1);                             \
            }                                                                                           \
            if (k < whole) BLOCK_Q8_512(LEVELS, SPLIT, k, codes + k * 8 * b, acc0);                            \
            if (whole < count) { /* the partial last block */                                           \
                uint8_t pad[32];                                                                        \
                BLOCK_Q8_512(LEVELS, SPLIT, whole, block_codes(row, w->in, b0 + whole, b, pad), acc1);         \
            }                                                                                           \
        }                                                                                               \
        const __m512 step = _mm512_set1_ps(w->level_step[r]), min = _mm512_set1_ps(w->level_min[r]);    \
        for (uint64_t c = 0; c < columns; c++)                                                          \
            y[c * ldy + r] = _mm512_reduce_add_ps(                                                      \
                _mm512_fmadd_ps(step, _mm512_add_ps(acc0[c], acc1[c]), _mm512_mul_ps(min, off[c])));    \
    }

// Q8_0, two blocks of 32 per register: w + 128 is unsigned, and the offset 128 · Σ v (per lane,
// precomputed with the activations) is subtracted from the exact int32 sums. Per stretch of 16
// blocks the scales d_k (one gather of the halves, one conversion) times the activations' scales
// in one vector product; per pair of blocks a permute spreads the two scales over the lanes.
// ONE as in PACKED_ROW_Q8_512.
#define Q8_0_ROW_512(NAME, ONE)                                                                         \
    VNNI INLINE void NAME(const uint8_t *row, const lowra_q8_activations *x, const uint64_t n, float *y,  \
                          uint64_t ldy, uint64_t r) {                                                     \
        const uint64_t nb = x->nb, n32 = x->in / 32, columns = ONE ? 1 : n;                             \
        __m512 acc[ONE ? 1 : LOWRA_MAX_COLUMNS];                                                        \
        float sc[ONE ? 1 : LOWRA_MAX_COLUMNS][16] __attribute__((aligned(64)));                         \
        for (uint64_t c = 0; c < columns; c++) acc[c] = _mm512_setzero_ps();                            \
        const __m512i flip = _mm512_set1_epi8((char)0x80);                                              \
        const __m512i at34 = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, \
                                                                  15), _mm512_set1_epi32(Q8_0_BYTES));   \
        const __m512i pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);        \
        const __m512i upper = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);        \
        for (uint64_t k0 = 0; k0 < n32; k0 += 16) {                                                     \
            const unsigned count = n32 - k0 < 16 ? (unsigned)(n32 - k0) : 16;                           \
            const __mmask16 m = (__mmask16)((1u << count) - 1);                                         \
            const __m512i halves = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, at34,         \
                                                               row + k0 * Q8_0_BYTES, 1);               \
            const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(halves));                            \
            for (uint64_t c = 0; c < columns; c++) { /* block k of 32 has the scale of block k / 2 */    \
                const __m512 xs = _mm512_maskz_loadu_ps((__mmask16)((1u << ((count + 1) / 2)) - 1),     \
                                                        x->scale + c * nb + k0 / 2);                    \
                _mm512_store_ps(sc[c], _mm512_mul_ps(d, _mm512_permutexvar_ps(pairs, xs)));             \
            }                                                                                           \
            unsigned k = 0;                                                                             \
            for (; k + 2 <= count; k += 2) {                                                            \
                const uint8_t *b0 = row + (k0 + k) * Q8_0_BYTES, *b1 = b0 + Q8_0_BYTES;                 \
                const __m512i u = _mm512_xor_si512(                                                     \
                    _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))), \
                                       _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1),               \
                    flip);                                                                              \
                const uint64_t blk = (k0 + k) / 2;                                                      \
                /* lanes 0-7 take block k's scale, lanes 8-15 block k + 1's */                          \
                const __m512i spread = _mm512_add_epi32(upper, _mm512_set1_epi32((int)k));              \
                for (uint64_t c = 0; c < columns; c++) {                                                \
                    const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 32 * (k0 + k);                       \
                    const int32_t *offset = x->offset + (c * nb + blk) * 16;                            \
                    const __m512i s = _mm512_sub_epi32(exact_sums_512(u, x->q + at, x->lo ? x->lo + at : NULL), \
                                                       _mm512_loadu_si512((const void *)offset));       \
                    const __m512 scale = _mm512_permutexvar_ps(spread, _mm512_load_ps(sc[c]));          \
                    acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[c]);                     \
                }                                                                                       \
            }                                                                                           \
            if (k < count) { /* an odd last block of 32 */                                              \
                const uint8_t *blk = row + (k0 + k) * Q8_0_BYTES;                                       \
                for (uint64_t c = 0; c < columns; c++) {                                                \
                    const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 32 * (k0 + k);                       \
                    const int8_t *v = x->q + at, *l = x->lo ? x->lo + at : NULL;                        \
                    int32_t s = 0;                                                                      \
                    for (unsigned i = 0; i < 32; i++) s += (int8_t)blk[2 + i] * (l ? 256 * v[i] + l[i] : v[i]); \
                    acc[c] = _mm512_add_ps(acc[c], _mm512_maskz_mov_ps(1, _mm512_set1_ps(sc[c][k] * (float)s))); \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
        for (uint64_t c = 0; c < columns; c++) y[c * ldy + r] = _mm512_reduce_add_ps(acc[c]);           \
    }

Q8_0_ROW_512(q8_0_row_vnni, 0)
Q8_0_ROW_512(q8_0_row1_vnni, 1)

// An AVX-512 variant's product: its row kernel instantiated (columns, one column) × (int8,
// 16-bit) and the dispatch between them; one column keeps its sums in registers (decode).
#define PACKED_Q8_512(TARGET, SUFFIX, TABLE, LEVELS, ORDER)                                             \
    PACKED_ROW_Q8_512(TARGET, packed_row_q8_##SUFFIX, TABLE, LEVELS, ORDER, 0, 0)                       \
    PACKED_ROW_Q8_512(TARGET, packed_row_q8s_##SUFFIX, TABLE, LEVELS, ORDER, 0, 1)                      \
    PACKED_ROW_Q8_512(TARGET, packed_row1_q8_##SUFFIX, TABLE, LEVELS, ORDER, 1, 0)                      \
    PACKED_ROW_Q8_512(TARGET, packed_row1_q8s_##SUFFIX, TABLE, LEVELS, ORDER, 1, 1)                     \
    TARGET void lowra_packed_q8_##SUFFIX(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, \
                                          uint64_t ldy, uint64_t r0, uint64_t r1) {                     \
        if (x->n == 1 && x->lo) {                                                                       \
            LOWRA_ROWS_BY_WIDTH(1, packed_row1_q8s_##SUFFIX)                                            \
        } else if (x->n == 1) {                                                                         \
            LOWRA_ROWS_BY_WIDTH(1, packed_row1_q8_##SUFFIX)                                             \
        } else if (x->lo) {                                                                             \
            LOWRA_BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_q8s_##SUFFIX)                              \
        } else {                                                                                        \
            LOWRA_BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_q8_##SUFFIX)                               \
        }                                                                                               \
    }

PACKED_Q8_512(VNNI, vnni, row_table_vnni, block_levels_vnni, order_vnni)
PACKED_Q8_512(VBMI, vbmi, row_table_vbmi, block_levels_vbmi, order_vbmi)

VNNI void lowra_q8_0_q8_vnni(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                           uint64_t ldy, uint64_t r0, uint64_t r1) {
    if (x->n == 1) {
        LOWRA_Q8_0_ROWS(1, q8_0_row1_vnni)
    } else {
        LOWRA_BY_COLUMNS(LOWRA_Q8_0_ROWS, q8_0_row_vnni)
    }
}

#endif
