// Integer kernels (lowra_kernels.h): int8 activations, or 16-bit ones as two int8 halves
// t = 256 h + l, times uint8 levels (packed rows) or int8 weights (Q8_0), summed exactly in int32
// per block of 64 inputs, then scaled in fp32. A split block costs a second dot product per
// column: Σ u t = 256 Σ u h + Σ u l.
//
// For a packed row r with levels L ≈ min_r + step_r · u and block scales a_rb, and activations
// x ≈ s_cb · t:   y = Σ_b a_rb s_cb (step_r · Σ_j u[code_j] t_j + min_r · Σ_j t_j).
//
// Unpacking orders. A block of 64 codes is unpacked with whole-register shifts, which leaves the
// codes in an order of their own; the activations are stored once in each width's order so that
// position p of the unpacked codes meets the input it belongs to:
//   1 bit:  p = 8q + k  holds code 8k + q  (bit q of byte k)
//   2 bits: p = 16i + k holds code 4k + i  (bits 2i, 2i+1 of byte k)
//   4 bits: p = k       holds code 2k      (low nibble of byte k), p = 32 + k holds code 2k + 1
#include "lowra_kernels_internal.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Which of the four activation copies a width reads: the bit lowra_q8_order sets.
static inline unsigned order_of(unsigned bits) { return bits == 1 ? 1 : bits == 2 ? 2 : 3; }

// element[o][p]: the input at position p of a block in order o (natural, 1-, 2-, 4-bit).
static uint8_t element[4][LOWRA_BLOCK];
// multishift[0 (2 bits) or 1 (4 bits)][8 q + j]: the bit offset in qword lane q that byte j of an
// unpacked block takes its code from (vpmultishiftqb, the VBMI kernels), giving the same orders.
static int8_t multishift[2][64];
static void fill_tables(void) {
    for (unsigned p = 0; p < LOWRA_BLOCK; p++) {
        element[0][p] = (uint8_t)p;
        element[1][p] = (uint8_t)(8 * (p % 8) + p / 8);
        element[2][p] = (uint8_t)(4 * (p % 16) + p / 16);
        element[3][p] = (uint8_t)(p < 32 ? 2 * p : 2 * (p - 32) + 1);
    }
    for (unsigned q = 0; q < 8; q++)
        for (unsigned j = 0; j < 8; j++) {
            multishift[0][8 * q + j] = (int8_t)(8 * j + 2 * (q / 2));      // 2 bits: qwords 0, 1, 0, 1, ...
            multishift[1][8 * q + j] = (int8_t)(8 * j + (q < 4 ? 0 : 4));  // 4 bits: qwords 0-3 twice
        }
}
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static inline uint64_t align64(uint64_t n) { return (n + 63) & ~(uint64_t)63; }

uint64_t lowra_q8_activation_bytes(uint64_t n, uint64_t in) {
    const uint64_t nb = lowra_blocks_per_row(in);
    return 2 * align64(n * 4 * nb * 64) + align64(n * nb * 4) + align64(n * nb * 4) + n * nb * 64;
}

// h = round(x * inv) for `count` inputs (lrintf: nearest, ties to even) and, when l is given,
// l = round(256 * (x * inv - h)) clamped to [-127, 127]; the rest of 64 zero.
static void round_block_scalar(const float *x, uint64_t count, float inv, int8_t h[LOWRA_BLOCK],
                               int8_t *l) {
    memset(h, 0, LOWRA_BLOCK);
    if (l) memset(l, 0, LOWRA_BLOCK);
    for (uint64_t j = 0; j < count; j++) {
        const float t = x[j] * inv, r = rintf(t);
        h[j] = (int8_t)r;
        if (l) {
            const float e = rintf(256.0f * (t - r));
            l[j] = (int8_t)(e > 127 ? 127 : e < -127 ? -127 : e);
        }
    }
}

static float max_abs_scalar(const float *x, uint64_t count) {
    float m = 0;
    for (uint64_t j = 0; j < count; j++) m = fmaxf(m, fabsf(x[j]));
    return m;
}

#if defined(__x86_64__)
// The same two steps 8 lanes at a time (cvtps and round_ps round to nearest even, as rintf does).
__attribute__((target("avx2,fma"))) static float max_abs_avx2(const float *x, uint64_t count) {
    if (count < LOWRA_BLOCK) return max_abs_scalar(x, count);
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

__attribute__((target("avx2,fma"))) static void round_block_avx2(const float *x, uint64_t count, float inv,
                                                                 int8_t h[LOWRA_BLOCK], int8_t *l) {
    if (count < LOWRA_BLOCK) return round_block_scalar(x, count, inv, h, l);
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
__attribute__((target("avx2,fma"))) static int32_t block_sum_avx2(const int8_t *v) {
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

// A block in order o with one byte permute (AVX-512 VBMI).
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void reorder_vbmi(const int8_t *v, unsigned o,
                                                                               int8_t *dst) {
    const __m512i idx = _mm512_loadu_si512((const void *)element[o]);
    _mm512_storeu_si512((void *)dst, _mm512_permutexvar_epi8(idx, _mm512_loadu_si512((const void *)v)));
}
#endif

static int32_t block_sum_scalar(const int8_t *v) {
    int32_t s = 0;
    for (unsigned j = 0; j < LOWRA_BLOCK; j++) s += v[j];
    return s;
}

static void reorder_scalar(const int8_t *v, unsigned o, int8_t *dst) {
    for (unsigned p = 0; p < LOWRA_BLOCK; p++) dst[p] = v[element[o][p]];
}

void lowra_q8_quantize(const float *x, uint64_t n, uint64_t in, unsigned orders, int split, void *buffer,
                       lowra_q8_activations *a) {
    pthread_once(&tables_once, fill_tables);
#if defined(__x86_64__)
    const int avx2 = lowra_kernel_path_supported(LOWRA_PATH_AVX2);
    const int vbmi = lowra_kernel_path_supported(LOWRA_PATH_AVX512) && __builtin_cpu_supports("avx512vbmi");
#else
    const int avx2 = 0, vbmi = 0;
    (void)avx2;
    (void)vbmi;
#endif
    const uint64_t nb = lowra_blocks_per_row(in), copy = align64(n * 4 * nb * 64);
    uint8_t *base = buffer;
    int8_t *q = (int8_t *)base, *lo = split ? (int8_t *)(base + copy) : NULL;
    float *scale = (float *)(base + 2 * copy);
    int32_t *sum = (int32_t *)((uint8_t *)scale + align64(n * nb * 4));
    int32_t *offset = (int32_t *)((uint8_t *)sum + align64(n * nb * 4));
    const int32_t unit = split ? 256 : 1;
    for (uint64_t c = 0; c < n; c++) {
        for (uint64_t b = 0; b < nb; b++) {
            const float *xb = x + c * in + b * LOWRA_BLOCK;
            const uint64_t count = in - b * LOWRA_BLOCK < LOWRA_BLOCK ? in - b * LOWRA_BLOCK : LOWRA_BLOCK;
            const uint64_t at = (c * 4 * nb + b) * LOWRA_BLOCK;  // the natural order, always filled
            int8_t *v = q + at, *w = split ? lo + at : NULL;
#if defined(__x86_64__)
            const float m = avx2 ? max_abs_avx2(xb, count) : max_abs_scalar(xb, count);
            const float inv = m > 0 ? 127.0f / m : 0;
            if (avx2) round_block_avx2(xb, count, inv, v, w);
            else round_block_scalar(xb, count, inv, v, w);
#else
            const float m = max_abs_scalar(xb, count);
            round_block_scalar(xb, count, m > 0 ? 127.0f / m : 0, v, w);
#endif
            int32_t s = 0;
            if (orders == 0) {  // Q8_0: the sums of each 4 inputs
                for (unsigned g = 0; g < 16; g++) {
                    int32_t four = 0;
                    for (unsigned i = 4 * g; i < 4 * g + 4; i++) four += unit * v[i] + (w ? w[i] : 0);
                    offset[(c * nb + b) * 16 + g] = 128 * four;
                    s += four;
                }
            } else {
#if defined(__x86_64__)
                if (avx2) s = unit * block_sum_avx2(v) + (w ? block_sum_avx2(w) : 0);
                else
#endif
                    s = unit * block_sum_scalar(v) + (w ? block_sum_scalar(w) : 0);
            }
            scale[c * nb + b] = m / 127.0f / (float)unit;
            sum[c * nb + b] = s;
            for (unsigned o = 1; o < 4; o++) {
                if (!(orders & (1u << o))) continue;  // lowra_q8_order(width) == 1 << order_of(width)
                const uint64_t to = ((c * 4 + o) * nb + b) * LOWRA_BLOCK;
#if defined(__x86_64__)
                if (vbmi) {
                    reorder_vbmi(v, o, q + to);
                    if (w) reorder_vbmi(w, o, lo + to);
                    continue;
                }
#endif
                reorder_scalar(v, o, q + to);
                if (w) reorder_scalar(w, o, lo + to);
            }
        }
    }
    *a = (lowra_q8_activations){
        .n = n, .in = in, .nb = nb, .q = q, .lo = lo, .scale = scale, .sum = sum, .offset = offset};
}

// The row's grid step: the fixed point nearest (hi - lo) / 255 of step -> ((lo + 255 step) - lo) / 255,
// each operation rounded on its own (no fused multiply-add, whatever the compiler's contraction
// setting), so levels put on the grid by lowra_snap_levels_row re-derive exactly this step: their
// maximum is lo + 255 step as computed here. The map is monotone, so the iteration moves one way and
// stops within a few ulps; in practice after one or two steps.
static float grid_step(float lo, float hi) {
#pragma STDC FP_CONTRACT OFF
    float st = (hi - lo) / 255.0f;
    for (int i = 0; i < 64 && st > 0; i++) {
        const float span = st * 255.0f;
        const float top = lo + span;
        const float next = (top - lo) / 255.0f;
        if (next == st) break;
        st = next;
    }
    return st;
}

void lowra_integer_levels_row(const float *levels, unsigned count, uint8_t u[16], float *min, float *step) {
#pragma STDC FP_CONTRACT OFF
    float lo = levels[0], hi = levels[0];
    for (unsigned k = 1; k < count; k++) {
        lo = fminf(lo, levels[k]);
        hi = fmaxf(hi, levels[k]);
    }
    const float st = grid_step(lo, hi);
    memset(u, 0, 16);
    for (unsigned k = 0; k < count; k++) {
        const long v = st > 0 ? lrintf((levels[k] - lo) / st) : 0;
        u[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    *min = lo;
    *step = st;
}

void lowra_snap_levels_row(float *levels, unsigned count) {
#pragma STDC FP_CONTRACT OFF
    uint8_t u[16];
    float lo, st;
    lowra_integer_levels_row(levels, count, u, &lo, &st);
    for (unsigned k = 0; k < count; k++) {
        const float offset = st * (float)u[k];
        levels[k] = lo + offset;
    }
}

// A block's codes: straight from the row, or, for a partial last block, copied into `pad` so
// the vector loads never read past the row. A byte loop, not memcpy: a call inside a kernel's
// row loop makes the compiler keep its sums in memory.
static inline const uint8_t *block_codes(const uint8_t *row, uint64_t in, uint64_t blk, unsigned b, uint8_t pad[32]) {
    const uint64_t start = blk * 8 * b;
    if ((blk + 1) * LOWRA_BLOCK <= in) return row + start;
    const uint64_t end = lowra_row_bytes(in, b);
    for (uint64_t k = 0; k < 32; k++) pad[k] = start + k < end ? row[start + k] : 0;
    return pad;
}

// ---------------------------------------------------------------------------------------------
// Scalar path: natural order, the same integers.

static void packed_q8_scalar(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                             uint64_t r0, uint64_t r1) {
    const uint64_t in = w->in, nb = x->nb;
    for (uint64_t i = r0; i < r1; i++) {
        const uint64_t r = lowra_row_at(w, i);
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r], *u = w->levels_u8 + 16 * r;
        for (uint64_t c = 0; c < x->n; c++) {
            const uint64_t at = c * 4 * nb * LOWRA_BLOCK;
            const int8_t *v = x->q + at, *l = x->lo ? x->lo + at : NULL;
            float acc = 0, off = 0;
            for (uint64_t blk = 0; blk < nb; blk++) {
                int32_t s = 0;
                const uint64_t j1 = (blk + 1) * LOWRA_BLOCK < in ? (blk + 1) * LOWRA_BLOCK : in;
                for (uint64_t j = blk * LOWRA_BLOCK; j < j1; j++) {
                    const uint64_t bit = j * b;
                    s += u[(row[bit / 8] >> (bit % 8)) & ((1u << b) - 1)] * (l ? 256 * v[j] + l[j] : v[j]);
                }
                const float sc = lowra_block_scale(w, r * nb + blk) * x->scale[c * nb + blk];
                acc += sc * (float)s;
                off += sc * (float)x->sum[c * nb + blk];
            }
            y[c * ldy + r] = w->level_step[r] * acc + w->level_min[r] * off;
        }
    }
}

static inline float q8_0_scale(const uint8_t *block) {
    uint16_t h;
    memcpy(&h, block, 2);
    return lowra_half_to_float(h);
}

enum { Q8_0_BYTES = 34 };

static void q8_0_scalar(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1) {
    const uint64_t nb = x->nb, n32 = x->in / 32;
    for (uint64_t r = r0; r < r1; r++) {
        for (uint64_t c = 0; c < x->n; c++) {
            const uint64_t at = c * 4 * nb * LOWRA_BLOCK;
            const int8_t *v = x->q + at, *l = x->lo ? x->lo + at : NULL;
            float acc = 0;
            for (uint64_t k = 0; k < n32; k++) {
                const uint8_t *blk = rows + r * row_bytes + k * Q8_0_BYTES;
                int32_t s = 0;
                for (unsigned i = 0; i < 32; i++) {
                    const uint64_t j = 32 * k + i;
                    s += (int8_t)blk[2 + i] * (l ? 256 * v[j] + l[j] : v[j]);
                }
                acc += q8_0_scale(blk) * x->scale[c * nb + k / 2] * (float)s;
            }
            y[c * ldy + r] = acc;
        }
    }
}

#if defined(__x86_64__)

#define INLINE static inline __attribute__((always_inline))
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

AVX2 INLINE float q8_0_scale_f16c(const uint8_t *block) {
    uint16_t h;
    memcpy(&h, block, 2);
    return _cvtsh_ss(h);
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
    const int8_t *l0 = x->lo ? x->lo + order_of(b) * nb * LOWRA_BLOCK : NULL;
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
        for (uint64_t c = 0; c < n; c++) {
            const uint64_t at = (c * 4 * nb + blk) * LOWRA_BLOCK;
            const int8_t *v = v0 + at;
            __m256i s = _mm256_add_epi32(dot32_avx2(lo, v), dot32_avx2(hi, v + 32));
            if (l0) {  // t = 256 h + l
                const __m256i sl = _mm256_add_epi32(dot32_avx2(lo, l0 + at), dot32_avx2(hi, l0 + at + 32));
                s = _mm256_add_epi32(_mm256_slli_epi32(s, 8), sl);
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
    const __m512i shift = _mm512_loadu_si512((const void *)multishift[b == 2 ? 0 : 1]);
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

// One instantiation per (columns, width), as in lowra_kernels.c.
#define Q8_0_ROWS(N, FN)                                                                                \
    for (uint64_t r = r0; r < r1; r++) FN(rows + r * row_bytes, x, N, y, ldy, r);

#define BY_COLUMNS(ROWS, FN)                                                                            \
    switch (x->n) {                                                                                     \
    case 1: ROWS(1, FN) break;                                                                          \
    case 2: ROWS(2, FN) break;                                                                          \
    case 3: ROWS(3, FN) break;                                                                          \
    case 4: ROWS(4, FN) break;                                                                          \
    default: ROWS(x->n, FN) break;                                                                      \
    }

// An AVX-512 variant's product: its row kernel instantiated (columns, one column) × (int8,
// 16-bit) and the dispatch between them; one column keeps its sums in registers (decode).
#define PACKED_Q8_512(TARGET, SUFFIX, TABLE, LEVELS, ORDER)                                             \
    PACKED_ROW_Q8_512(TARGET, packed_row_q8_##SUFFIX, TABLE, LEVELS, ORDER, 0, 0)                       \
    PACKED_ROW_Q8_512(TARGET, packed_row_q8s_##SUFFIX, TABLE, LEVELS, ORDER, 0, 1)                      \
    PACKED_ROW_Q8_512(TARGET, packed_row1_q8_##SUFFIX, TABLE, LEVELS, ORDER, 1, 0)                      \
    PACKED_ROW_Q8_512(TARGET, packed_row1_q8s_##SUFFIX, TABLE, LEVELS, ORDER, 1, 1)                     \
    TARGET static void packed_q8_##SUFFIX(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, \
                                          uint64_t ldy, uint64_t r0, uint64_t r1) {                     \
        if (x->n == 1 && x->lo) {                                                                       \
            LOWRA_ROWS_BY_WIDTH(1, packed_row1_q8s_##SUFFIX)                                            \
        } else if (x->n == 1) {                                                                         \
            LOWRA_ROWS_BY_WIDTH(1, packed_row1_q8_##SUFFIX)                                             \
        } else if (x->lo) {                                                                             \
            BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_q8s_##SUFFIX)                                    \
        } else {                                                                                        \
            BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_q8_##SUFFIX)                                     \
        }                                                                                               \
    }

PACKED_Q8_512(VNNI, vnni, row_table_vnni, block_levels_vnni, order_vnni)
PACKED_Q8_512(VBMI, vbmi, row_table_vbmi, block_levels_vbmi, order_vbmi)

AVX2 static void packed_q8_avx2(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                uint64_t r0, uint64_t r1) {
    BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_q8_avx2)
}
AVX2 static void q8_0_avx2(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                           uint64_t ldy, uint64_t r0, uint64_t r1) {
    BY_COLUMNS(Q8_0_ROWS, q8_0_row_avx2)
}
VNNI static void q8_0_vnni(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                           uint64_t ldy, uint64_t r0, uint64_t r1) {
    if (x->n == 1) {
        Q8_0_ROWS(1, q8_0_row1_vnni)
    } else {
        BY_COLUMNS(Q8_0_ROWS, q8_0_row_vnni)
    }
}

#endif

// ---------------------------------------------------------------------------------------------
// Entry points.

// More columns than a row kernel keeps in flight: in groups of LOWRA_MAX_COLUMNS (a packed
// weight w, or Q8_0 rows).
static void by_groups(int path, const lowra_packed_view *w, const uint8_t *rows, uint64_t row_bytes,
                      const lowra_q8_activations *x, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    for (uint64_t c = 0; c < x->n; c += LOWRA_MAX_COLUMNS) {
        const uint64_t count = x->n - c < LOWRA_MAX_COLUMNS ? x->n - c : LOWRA_MAX_COLUMNS;
        const lowra_q8_activations part = lowra_q8_columns(x, c, count);
        if (w) lowra_packed_gemm_q8(path, w, &part, y + c * ldy, ldy, r0, r1);
        else lowra_q8_0_gemm_q8(path, rows, row_bytes, &part, y + c * ldy, ldy, r0, r1);
    }
}

void lowra_packed_gemm_q8(int path, const lowra_packed_view *w, const lowra_q8_activations *x, float *y,
                          uint64_t ldy, uint64_t r0, uint64_t r1) {
    lowra_kernels_init();
    if (x->n == 0 || r0 >= r1) return;
    if (x->n > LOWRA_MAX_COLUMNS) return by_groups(path, w, NULL, 0, x, y, ldy, r0, r1);
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
#if defined(__x86_64__)
    if (path == LOWRA_PATH_AVX512 && lowra_cpu_has_vnni()) {
        pthread_once(&tables_once, fill_tables);
        return lowra_kernel_vbmi() ? packed_q8_vbmi(w, x, y, ldy, r0, r1) : packed_q8_vnni(w, x, y, ldy, r0, r1);
    }
    if (lowra_path_x86_vector(path)) return packed_q8_avx2(w, x, y, ldy, r0, r1);
#endif
    packed_q8_scalar(w, x, y, ldy, r0, r1);
}

void lowra_q8_0_gemm_q8(int path, const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1) {
    if (x->n == 0 || r0 >= r1) return;
    if (x->n > LOWRA_MAX_COLUMNS) return by_groups(path, NULL, rows, row_bytes, x, y, ldy, r0, r1);
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
#if defined(__x86_64__)
    if (path == LOWRA_PATH_AVX512 && lowra_cpu_has_vnni()) return q8_0_vnni(rows, row_bytes, x, y, ldy, r0, r1);
    if (lowra_path_x86_vector(path)) return q8_0_avx2(rows, row_bytes, x, y, ldy, r0, r1);
#endif
    q8_0_scalar(rows, row_bytes, x, y, ldy, r0, r1);
}
