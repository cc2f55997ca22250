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
static uint8_t transpose_index[2][64];
static void fill_tile_tables(void) {
    for (unsigned p = 0; p < 64; p++) {
        const unsigned j = p % 8, i = p / 4;
        for (unsigned s = 0; s < 4; s++) shift2[s][p] = (int8_t)(16 * s + 8 * (j / 4) + 2 * (j % 4));
        for (unsigned s = 0; s < 2; s++) shift4[s][p] = (int8_t)(32 * s + 16 * (j / 4) + 4 * (j % 4));
        lane2[p] = (uint8_t)(4 * i);
        lane4[p] = (uint8_t)(16 * (i % 8));
    }
    // transpose_block's second step: byte 4l + r of Q[2qh + x][m] from byte 16 (x + 2 (e % 2)) + 4r + l % 4
    // of the pair e / 2 (e = l / 4) of its shuffled halves.
    for (unsigned x = 0; x < 2; x++)
        for (unsigned l = 0; l < 16; l++)
            for (unsigned r = 0; r < 4; r++) {
                const unsigned e = l / 4;
                transpose_index[x][4 * l + r] = (uint8_t)(64 * (e / 2) + 16 * (x + 2 * (e % 2)) + 4 * r + l % 4);
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

// A column's exact sums s of one block scaled into acc and off (16 lanes): the scalar reference's steps.
TILE_TARGET TILE_INLINE void scale_sums(__m512i s, __m512 a, const lowra_q8_activations *x, uint64_t cb, __m512 *acc,
                                        __m512 *off) {
    const __m512 sc = _mm512_mul_ps(a, _mm512_set1_ps(x->scale[cb]));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, *acc);
    *off = _mm512_fmadd_ps(sc, _mm512_set1_ps((float)x->sum[cb]), *off);
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
            scale_sums(s, a, x, cb, acc + c, off + c);                                                 \
        }                                                                                               \
    }

// One column (decode): four sums per half, so that no vpdpbusd waits on the one before it for long.
#define TILE_COLUMN_ONE(SPLIT)                                                                          \
    TILE_TARGET static void tile_columns_1_##SPLIT(const __m512i w[16], const lowra_q8_activations *x,  \
                                                   uint64_t c0, uint64_t blk, __m512 a, __m512 *acc,    \
                                                   __m512 *off) {                                       \
        const uint64_t nb = x->nb;                                                                      \
        const int8_t *h = x->q + c0 * 4 * nb * LOWRA_BLOCK + blk * LOWRA_BLOCK;                         \
        const int8_t *l = SPLIT ? x->lo + c0 * 4 * nb * LOWRA_BLOCK + blk * LOWRA_BLOCK : NULL;        \
        __m512i h0 = _mm512_setzero_si512(), h1 = h0, h2 = h0, h3 = h0, l0 = h0, l1 = h0, l2 = h0, l3 = h0; \
        for (unsigned g = 0; g < 16; g += 4) {                                                          \
            h0 = _mm512_dpbusd_epi32(h0, w[g], _mm512_set1_epi32(load4(h + 4 * g)));                    \
            h1 = _mm512_dpbusd_epi32(h1, w[g + 1], _mm512_set1_epi32(load4(h + 4 * g + 4)));            \
            h2 = _mm512_dpbusd_epi32(h2, w[g + 2], _mm512_set1_epi32(load4(h + 4 * g + 8)));            \
            h3 = _mm512_dpbusd_epi32(h3, w[g + 3], _mm512_set1_epi32(load4(h + 4 * g + 12)));           \
            if (SPLIT) {                                                                                \
                l0 = _mm512_dpbusd_epi32(l0, w[g], _mm512_set1_epi32(load4(l + 4 * g)));                \
                l1 = _mm512_dpbusd_epi32(l1, w[g + 1], _mm512_set1_epi32(load4(l + 4 * g + 4)));        \
                l2 = _mm512_dpbusd_epi32(l2, w[g + 2], _mm512_set1_epi32(load4(l + 4 * g + 8)));        \
                l3 = _mm512_dpbusd_epi32(l3, w[g + 3], _mm512_set1_epi32(load4(l + 4 * g + 12)));       \
            }                                                                                           \
        }                                                                                               \
        const __m512i th = _mm512_add_epi32(_mm512_add_epi32(h0, h1), _mm512_add_epi32(h2, h3));        \
        const __m512i tl = _mm512_add_epi32(_mm512_add_epi32(l0, l1), _mm512_add_epi32(l2, l3));        \
        const __m512i s = SPLIT ? _mm512_add_epi32(_mm512_slli_epi32(th, 8), tl) : th;                  \
        const uint64_t cb = c0 * nb + blk;                                                              \
        scale_sums(s, a, x, cb, acc, off);                                                              \
    }

TILE_COLUMN_ONE(0)
TILE_COLUMN_ONE(1)
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

// ---------------------------------------------------------------------------------------------
// The transposed product (lowra_tile_gradient.c defines its steps): the levels of a chunk of tiles
// unpacked once per block into registers whose dwords are inputs and whose bytes are 4 rows, then
// every column's quantized gradients broadcast 4 rows at a time into vpdpbusd.

// unpack_block's registers (dword i: row i's levels at inputs 4g..4g+3) as Q[qd][m] at out + 64 (4 qd + m):
// dword l the levels of rows 4qd..4qd+3 at input 16m + l. 128-bit lane x of w[g] holds quad x.
TILE_TARGET TILE_INLINE void transpose_block(const __m512i w[16], const __m512i index[2], uint8_t *out) {
    for (unsigned m = 0; m < 4; m++)
        for (unsigned qh = 0; qh < 2; qh++) {
            // Quads 2qh, 2qh + 1 of inputs 16m..16m+7 (p0) and 16m+8..16m+15 (p1).
            const __m512i p0 = qh ? _mm512_shuffle_i64x2(w[4 * m], w[4 * m + 1], 0xEE)
                                  : _mm512_shuffle_i64x2(w[4 * m], w[4 * m + 1], 0x44);
            const __m512i p1 = qh ? _mm512_shuffle_i64x2(w[4 * m + 2], w[4 * m + 3], 0xEE)
                                  : _mm512_shuffle_i64x2(w[4 * m + 2], w[4 * m + 3], 0x44);
            for (unsigned x = 0; x < 2; x++)
                _mm512_store_si512((void *)(out + 64 * (4 * (2 * qh + x) + m)),
                                   _mm512_permutex2var_epi8(p0, index[x], p1));
        }
}

// gradients_scalar's steps for one column and block, 16 lanes at a time.
TILE_TARGET static float gradients_vbmi(const lowra_tiled_view *t, const float *dyp, uint64_t blk, int8_t *gq,
                                        float *sigma, int32_t *offset) {
    __m512 lanes = _mm512_setzero_ps();
    for (uint64_t G = 0; G < tile_t_groups(t->tiles); G++) {
        __m512 g[4], big = _mm512_setzero_ps();
        for (unsigned k = 0; k < 4; k++) {
            const uint64_t tile = 4 * G + k;
            if (tile >= t->tiles) {
                g[k] = _mm512_setzero_ps();
                continue;
            }
            const __m512 a = _mm512_loadu_ps(t->scales + (tile * t->nb + blk) * TILE);
            const __m512 d = _mm512_loadu_ps(dyp + tile * TILE);
            g[k] = _mm512_mul_ps(d, _mm512_mul_ps(a, _mm512_loadu_ps(t->level_step + tile * TILE)));
            const __m512 mid = _mm512_fmadd_ps(_mm512_set1_ps(128.0f), _mm512_loadu_ps(t->level_step + tile * TILE),
                                               _mm512_loadu_ps(t->level_min + tile * TILE));
            lanes = _mm512_fmadd_ps(d, _mm512_mul_ps(a, mid), lanes);
            big = _mm512_max_ps(big, _mm512_abs_ps(g[k]));
        }
        const float m = _mm512_reduce_max_ps(big), inv = m > 0 ? 127.0f / m : 0;
        sigma[G] = m / 127.0f;
        __m512i total = _mm512_setzero_si512();
        for (unsigned k = 0; k < 4; k++) {
            const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(g[k], _mm512_set1_ps(inv)));
            _mm_storeu_si128((__m128i *)(gq + 64 * G + 16 * k), _mm512_cvtsepi32_epi8(q));
            total = _mm512_add_epi32(total, q);
        }
        offset[G] = 128 * _mm512_reduce_add_epi32(total);
    }
    float v[TILE] __attribute__((aligned(64)));
    _mm512_store_ps(v, lanes);
    return tile_sum16(v);
}

// NC columns' sums over the tiles [ch0, ch1) of one block (levels: the chunk's transposed registers),
// group by group into acc (NC rows of 64).
TILE_TARGET TILE_INLINE void gradient_columns(unsigned NC, const uint8_t *levels, uint64_t ch0, uint64_t ch1,
                                              const int8_t *gq, uint64_t gstride, const float *sigma,
                                              const int32_t *offset, uint64_t groups, float *acc) {
    __m512 f[2][4];
    for (unsigned x = 0; x < NC; x++)
        for (unsigned m = 0; m < 4; m++) f[x][m] = _mm512_loadu_ps(acc + x * LOWRA_BLOCK + 16 * m);
    for (uint64_t G = ch0 / 4; 4 * G < ch1; G++) {
        __m512i s[2][4];
        for (unsigned x = 0; x < NC; x++)
            for (unsigned m = 0; m < 4; m++) s[x][m] = _mm512_setzero_si512();
        const uint64_t end = 4 * G + 4 < ch1 ? 4 * G + 4 : ch1;
        for (uint64_t quad = 16 * G; quad < 4 * end; quad++) {
            const uint8_t *lv = levels + 256 * (quad - 4 * ch0);
            __m512i l[4];
            for (unsigned m = 0; m < 4; m++) l[m] = _mm512_load_si512((const void *)(lv + 64 * m));
            for (unsigned x = 0; x < NC; x++) {
                const __m512i q = _mm512_set1_epi32(load4(gq + x * gstride + 4 * quad));
                for (unsigned m = 0; m < 4; m++) s[x][m] = _mm512_dpbusd_epi32(s[x][m], l[m], q);
            }
        }
        for (unsigned x = 0; x < NC; x++) {
            const __m512 sg = _mm512_set1_ps(sigma[x * groups + G]);
            const __m512i off = _mm512_set1_epi32(offset[x * groups + G]);
            for (unsigned m = 0; m < 4; m++)
                f[x][m] = _mm512_fmadd_ps(sg, _mm512_cvtepi32_ps(_mm512_sub_epi32(s[x][m], off)), f[x][m]);
        }
    }
    for (unsigned x = 0; x < NC; x++)
        for (unsigned m = 0; m < 4; m++) _mm512_storeu_ps(acc + x * LOWRA_BLOCK + 16 * m, f[x][m]);
}

TILE_TARGET static void gemm_t_vbmi(const lowra_tiled_view *t, const float *dy, uint64_t lddy, float *dx,
                                    uint64_t lddx, int accumulate, uint64_t c0, uint64_t c1, tile_t_scratch *s) {
    const uint64_t n = c1 - c0, rows = TILE * t->tiles, groups = tile_t_groups(t->tiles), gstride = 64 * groups;
    const __m512i index[2] = {_mm512_loadu_si512((const void *)transpose_index[0]),
                              _mm512_loadu_si512((const void *)transpose_index[1])};
    for (uint64_t c = 0; c < n; c++) tile_t_gather(t, dy + (c0 + c) * lddy, s->dyp + c * rows);
    __m512i w[16];
    for (uint64_t blk = 0; blk < t->nb; blk++) {
        for (uint64_t c = 0; c < n; c++)
            s->m[c] = gradients_vbmi(t, s->dyp + c * rows, blk, s->gq + c * gstride, s->sigma + c * groups,
                                     s->offset + c * groups);
        memset(s->acc, 0, n * LOWRA_BLOCK * sizeof(float));
        for (uint64_t ch0 = 0; ch0 < t->tiles; ch0 += TILE_T_CHUNK) {
            const uint64_t ch1 = t->tiles - ch0 < TILE_T_CHUNK ? t->tiles : ch0 + TILE_T_CHUNK;
            for (uint64_t tile = ch0; tile < ch1; tile++) {
                const unsigned b = t->bits[tile];
                __m512i tab[4];
                for (unsigned k = 0; k < 4; k++)
                    tab[k] = _mm512_loadu_si512((const void *)(t->tables + tile * TABLE_BYTES + 64 * k));
                unpack_block(t->codes + t->offsets[tile] + blk * tile_block_bytes(b), b, tab, w);
                transpose_block(w, index, s->levels + 1024 * (tile - ch0));
            }
            uint64_t c = 0;
            for (; c + 2 <= n; c += 2)
                gradient_columns(2, s->levels, ch0, ch1, s->gq + c * gstride, gstride, s->sigma + c * groups,
                                 s->offset + c * groups, groups, s->acc + c * LOWRA_BLOCK);
            if (c < n)
                gradient_columns(1, s->levels, ch0, ch1, s->gq + c * gstride, gstride, s->sigma + c * groups,
                                 s->offset + c * groups, groups, s->acc + c * LOWRA_BLOCK);
        }
        for (uint64_t c = 0; c < n; c++)
            tile_t_store(s->acc + c * LOWRA_BLOCK, s->m[c], t->in, blk, dx + (c0 + c) * lddx, accumulate);
    }
}

void lowra_tiled_gemm_t_vbmi(const lowra_tiled_view *t, const float *dy, uint64_t lddy, float *dx, uint64_t lddx,
                             int accumulate, uint64_t c0, uint64_t c1, tile_t_scratch *s) {
    pthread_once(&tile_tables_once, fill_tile_tables);
    gemm_t_vbmi(t, dy, lddy, dx, lddx, accumulate, c0, c1, s);
}

#endif
