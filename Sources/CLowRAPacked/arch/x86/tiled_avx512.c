// The tiled decode kernels for x86-64 with AVX-512 VNNI + VBMI (packed tiles) and VNNI (Q8_0
// tiles); the tile layout, the scalar references (same bits) and the dispatch are in
// lowra_tile_kernels.c.
#if defined(__x86_64__)

#include "../../lowra_tile_internal.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

#define TILE_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma")))
#define TILE_INLINE static inline __attribute__((always_inline))

// vpmultishiftqb controls: byte 8q + j of group s takes lane (2q + j / 4)'s code j % 4.
static int8_t shift2[4][64], shift4[2][64];
// The index bits above the code: the lane (2 bits: 4i; 4 bits: 16 (i % 8)).
static uint8_t lane2[64], lane4[64];
static void fill_tile_tables(void) {
    for (unsigned p = 0; p < 64; p++) {
        const unsigned j = p % 8, i = p / 4;
        for (unsigned s = 0; s < 4; s++) shift2[s][p] = (int8_t)(16 * s + 8 * (j / 4) + 2 * (j % 4));
        for (unsigned s = 0; s < 2; s++) shift4[s][p] = (int8_t)(32 * s + 16 * (j / 4) + 4 * (j % 4));
        lane2[p] = (uint8_t)(4 * i);
        lane4[p] = (uint8_t)(16 * (i % 8));
    }
}
static pthread_once_t tile_tables_once = PTHREAD_ONCE_INIT;

// One block's 16 weight registers (lane i bytes 4i..4i+3: row i's levels at inputs 4g..4g+3).
TILE_TARGET TILE_INLINE void unpack_block(const uint8_t *block, unsigned b, const __m512i tab[4], __m512i w[16]) {
    if (b == 1) {
        for (unsigned g = 0; g < 16; g++) {
            uint64_t m;
            memcpy(&m, block + 8 * g, 8);
            w[g] = _mm512_mask_blend_epi8(_cvtu64_mask64(m), tab[0], tab[1]);
        }
    } else if (b == 2) {
        const __m512i three = _mm512_set1_epi8(3), lanes = _mm512_loadu_si512((const void *)lane2);
        for (unsigned m = 0; m < 4; m++) {
            const __m512i chunk = _mm512_loadu_si512((const void *)(block + 64 * m));
            for (unsigned s = 0; s < 4; s++) {
                const __m512i codes = _mm512_multishift_epi64_epi8(_mm512_loadu_si512((const void *)shift2[s]), chunk);
                const __m512i idx = _mm512_ternarylogic_epi32(codes, three, lanes, 0xEA);  // (a & b) | c
                w[4 * m + s] = _mm512_permutexvar_epi8(idx, tab[0]);
            }
        }
    } else {
        const __m512i fifteen = _mm512_set1_epi8(15), lanes = _mm512_loadu_si512((const void *)lane4);
        const __mmask64 upper = 0xFFFFFFFF00000000ull;
        for (unsigned m = 0; m < 8; m++) {
            const __m512i chunk = _mm512_loadu_si512((const void *)(block + 64 * m));
            for (unsigned s = 0; s < 2; s++) {
                const __m512i codes = _mm512_multishift_epi64_epi8(_mm512_loadu_si512((const void *)shift4[s]), chunk);
                const __m512i idx = _mm512_ternarylogic_epi32(codes, fifteen, lanes, 0xEA);
                const __m512i lo = _mm512_permutex2var_epi8(tab[0], idx, tab[1]);
                const __m512i hi = _mm512_permutex2var_epi8(tab[2], idx, tab[3]);
                w[2 * m + s] = _mm512_mask_blend_epi8(upper, lo, hi);
            }
        }
    }
}

static inline int32_t load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// NC columns (c0 ..< c0 + NC) of one block: the exact sums, then the block's scaling into acc and
// off (each column's 16 lanes).
#define TILE_COLUMNS(NC, SPLIT)                                                                         \
    TILE_TARGET static void tile_columns_##NC##_##SPLIT(const __m512i w[16], const lowra_q8_activations *x, \
                                                        uint64_t c0, uint64_t blk, __m512 a, __m512 *acc,   \
                                                        __m512 *off) {                                      \
        const uint64_t nb = x->nb;                                                                      \
        __m512i sh[NC], sl[NC];                                                                         \
        for (unsigned c = 0; c < NC; c++) sh[c] = sl[c] = _mm512_setzero_si512();                       \
        const int8_t *h = x->q + c0 * 4 * nb * LOWRA_BLOCK + blk * LOWRA_BLOCK;                         \
        const int8_t *l = SPLIT ? x->lo + c0 * 4 * nb * LOWRA_BLOCK + blk * LOWRA_BLOCK : NULL;        \
        for (unsigned g = 0; g < 16; g++) {                                                             \
            for (unsigned c = 0; c < NC; c++) {                                                         \
                const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 4 * g;                                   \
                sh[c] = _mm512_dpbusd_epi32(sh[c], w[g], _mm512_set1_epi32(load4(h + at)));             \
                if (SPLIT) sl[c] = _mm512_dpbusd_epi32(sl[c], w[g], _mm512_set1_epi32(load4(l + at)));   \
            }                                                                                           \
        }                                                                                               \
        for (unsigned c = 0; c < NC; c++) {                                                             \
            const uint64_t cb = (c0 + c) * nb + blk;                                                    \
            const __m512i s = SPLIT ? _mm512_add_epi32(_mm512_slli_epi32(sh[c], 8), sl[c]) : sh[c];     \
            const __m512 sc = _mm512_mul_ps(a, _mm512_set1_ps(x->scale[cb]));                           \
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[c]);                                \
            off[c] = _mm512_fmadd_ps(sc, _mm512_set1_ps((float)x->sum[cb]), off[c]);                    \
        }                                                                                               \
    }

TILE_COLUMNS(1, 0)
TILE_COLUMNS(1, 1)
TILE_COLUMNS(2, 0)
TILE_COLUMNS(2, 1)
TILE_COLUMNS(4, 0)
TILE_COLUMNS(4, 1)
TILE_COLUMNS(8, 0)
TILE_COLUMNS(8, 1)

TILE_TARGET static void tiled_vbmi(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                   uint64_t t0, uint64_t t1) {
    const uint64_t nb = t->nb, n = x->n;
    const int split = x->lo != NULL;
    __m512 acc[LOWRA_TILE_COLUMNS], off[LOWRA_TILE_COLUMNS];
    __m512i w[16];
    for (uint64_t tile = t0; tile < t1; tile++) {
        const unsigned b = t->bits[tile];
        __m512i tab[4];
        for (unsigned k = 0; k < 4; k++)
            tab[k] = _mm512_loadu_si512((const void *)(t->tables + tile * TABLE_BYTES + 64 * k));
        for (uint64_t c = 0; c < n; c++) acc[c] = off[c] = _mm512_setzero_ps();
        const uint8_t *codes = t->codes + t->offsets[tile];
        for (uint64_t blk = 0; blk < nb; blk++) {
            unpack_block(codes + blk * tile_block_bytes(b), b, tab, w);
            const __m512 a = _mm512_loadu_ps(t->scales + (tile * nb + blk) * TILE);
            uint64_t c = 0;
            // Columns in groups of 8, 4, 2, 1: each column's steps are the same in any group.
#define GROUP(NC)                                                                                       \
    for (; c + NC <= n; c += NC)                                                                        \
        if (split) tile_columns_##NC##_1(w, x, c, blk, a, acc + c, off + c);                            \
        else tile_columns_##NC##_0(w, x, c, blk, a, acc + c, off + c);
            GROUP(8)
            GROUP(4)
            GROUP(2)
            GROUP(1)
#undef GROUP
        }
        const __m512 step = _mm512_loadu_ps(t->level_step + tile * TILE);
        const __m512 min = _mm512_loadu_ps(t->level_min + tile * TILE);
        const int32_t *rows = t->rows + tile * TILE;
        for (uint64_t c = 0; c < n; c++) {
            float v[TILE] __attribute__((aligned(64)));
            _mm512_store_ps(v, _mm512_fmadd_ps(step, acc[c], _mm512_mul_ps(min, off[c])));
            for (unsigned i = 0; i < TILE; i++)
                if (rows[i] >= 0) y[c * ldy + (uint64_t)rows[i]] = v[i];
        }
    }
}

void lowra_tiled_gemm_vbmi(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                           uint64_t t0, uint64_t t1) {
    pthread_once(&tile_tables_once, fill_tile_tables);
    tiled_vbmi(t, x, y, ldy, t0, t1);
}

// ---------------------------------------------------------------------------------------------
// Q8_0 tiles (the head).

#define Q8_0_COLUMNS(NC, SPLIT)                                                                         \
    TILE_TARGET static void q8_0_columns_##NC##_##SPLIT(const uint8_t *block, const lowra_q8_activations *x, \
                                                        uint64_t c0, uint64_t k32, __m512 d, __m512 *acc) {  \
        const uint64_t nb = x->nb;                                                                      \
        __m512i sh[NC], sl[NC];                                                                         \
        for (unsigned c = 0; c < NC; c++) sh[c] = sl[c] = _mm512_setzero_si512();                       \
        const int8_t *h = x->q + c0 * 4 * nb * LOWRA_BLOCK + 32 * k32;                                  \
        const int8_t *l = SPLIT ? x->lo + c0 * 4 * nb * LOWRA_BLOCK + 32 * k32 : NULL;                  \
        for (unsigned g = 0; g < 8; g++) {                                                              \
            const __m512i w = _mm512_loadu_si512((const void *)(block + 64 * g));                       \
            for (unsigned c = 0; c < NC; c++) {                                                         \
                const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 4 * g;                                   \
                sh[c] = _mm512_dpbusd_epi32(sh[c], w, _mm512_set1_epi32(load4(h + at)));                \
                if (SPLIT) sl[c] = _mm512_dpbusd_epi32(sl[c], w, _mm512_set1_epi32(load4(l + at)));      \
            }                                                                                           \
        }                                                                                               \
        for (unsigned c = 0; c < NC; c++) {                                                             \
            const __m512i s = _mm512_sub_epi32(SPLIT ? _mm512_add_epi32(_mm512_slli_epi32(sh[c], 8), sl[c]) : sh[c], \
                                               _mm512_set1_epi32(q8_0_correction(x, c0 + c, k32)));    \
            const __m512 sc = _mm512_mul_ps(d, _mm512_set1_ps(x->scale[(c0 + c) * nb + k32 / 2]));      \
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[c]);                                \
        }                                                                                               \
    }

Q8_0_COLUMNS(1, 0)
Q8_0_COLUMNS(1, 1)
Q8_0_COLUMNS(2, 0)
Q8_0_COLUMNS(2, 1)
Q8_0_COLUMNS(4, 0)
Q8_0_COLUMNS(4, 1)
Q8_0_COLUMNS(8, 0)
Q8_0_COLUMNS(8, 1)

TILE_TARGET void lowra_q8_0_tiled_gemm_vnni(const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y,
                                             uint64_t ldy, uint64_t t0, uint64_t t1) {
    const uint64_t n = x->n, n32 = t->in / 32;
    const int split = x->lo != NULL;
    __m512 acc[LOWRA_TILE_COLUMNS];
    for (uint64_t tile = t0; tile < t1; tile++) {
        for (uint64_t c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
        for (uint64_t k32 = 0; k32 < n32; k32++) {
            const uint8_t *block = t->codes + (tile * n32 + k32) * 512;
            const __m512 d = _mm512_loadu_ps(t->scales + (tile * n32 + k32) * TILE);
            uint64_t c = 0;
#define GROUP(NC)                                                                                       \
    for (; c + NC <= n; c += NC)                                                                        \
        if (split) q8_0_columns_##NC##_1(block, x, c, k32, d, acc + c);                                 \
        else q8_0_columns_##NC##_0(block, x, c, k32, d, acc + c);
            GROUP(8)
            GROUP(4)
            GROUP(2)
            GROUP(1)
#undef GROUP
        }
        const int32_t *rows = t->rows + tile * TILE;
        for (uint64_t c = 0; c < n; c++) {
            float v[TILE] __attribute__((aligned(64)));
            _mm512_store_ps(v, acc[c]);
            for (unsigned i = 0; i < TILE; i++)
                if (rows[i] >= 0) y[c * ldy + (uint64_t)rows[i]] = v[i];
        }
    }
}

#endif
