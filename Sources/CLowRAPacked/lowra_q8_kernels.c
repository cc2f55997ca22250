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
static void fill_element(void) {
    for (unsigned p = 0; p < LOWRA_BLOCK; p++) {
        element[0][p] = (uint8_t)p;
        element[1][p] = (uint8_t)(8 * (p % 8) + p / 8);
        element[2][p] = (uint8_t)(4 * (p % 16) + p / 16);
        element[3][p] = (uint8_t)(p < 32 ? 2 * p : 2 * (p - 32) + 1);
    }
}

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
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fill_element);
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

void lowra_integer_levels_row(const float *levels, unsigned count, uint8_t u[16], float *min, float *step) {
    float lo = levels[0], hi = levels[0];
    for (unsigned k = 1; k < count; k++) {
        lo = fminf(lo, levels[k]);
        hi = fmaxf(hi, levels[k]);
    }
    const float st = (hi - lo) / 255.0f;
    memset(u, 0, 16);
    for (unsigned k = 0; k < count; k++) {
        const long v = st > 0 ? lrintf((levels[k] - lo) / st) : 0;
        u[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    *min = lo;
    *step = st;
}

// A block's codes: straight from the row, or, for a partial last block, copied into `pad` so
// the vector loads never read past the row.
static inline const uint8_t *block_codes(const uint8_t *row, uint64_t in, uint64_t blk, unsigned b, uint8_t pad[32]) {
    const uint64_t start = blk * 8 * b;
    if ((blk + 1) * LOWRA_BLOCK <= in) return row + start;
    memset(pad, 0, 32);
    memcpy(pad, row + start, lowra_row_bytes(in, b) - start);
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

VNNI INLINE void packed_row_q8_vnni(const lowra_packed_view *w, const lowra_q8_activations *x, const uint64_t n,
                                    float *y, uint64_t ldy, uint64_t r, const unsigned b) {
    const uint64_t nb = x->nb;
    const uint8_t *row = w->codes + w->row_offsets[r];
    const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(w->levels_u8 + 16 * r)));
    const int8_t *v0 = x->q + order_of(b) * nb * LOWRA_BLOCK;
    const int8_t *l0 = x->lo ? x->lo + order_of(b) * nb * LOWRA_BLOCK : NULL;
    __m512 acc[LOWRA_MAX_COLUMNS];
    float off[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) {
        acc[c] = _mm512_setzero_ps();
        off[c] = 0;
    }
    uint8_t pad[32];
    for (uint64_t blk = 0; blk < nb; blk++) {
        const __m512i codes = unpack64_vnni(block_codes(row, w->in, blk, b, pad), b);
        const __m512i u = _mm512_shuffle_epi8(table, codes);
        const float a = lowra_block_scale(w, r * nb + blk);
        for (uint64_t c = 0; c < n; c++) {
            const uint64_t at = (c * 4 * nb + blk) * LOWRA_BLOCK;
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_load_si512((const void *)(v0 + at)));
            if (l0)  // t = 256 h + l
                s = _mm512_dpbusd_epi32(_mm512_slli_epi32(s, 8), u, _mm512_load_si512((const void *)(l0 + at)));
            const float sc = a * x->scale[c * nb + blk];
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(sc), acc[c]);
            off[c] += sc * (float)x->sum[c * nb + blk];
        }
    }
    for (uint64_t c = 0; c < n; c++)
        y[c * ldy + r] = w->level_step[r] * _mm512_reduce_add_ps(acc[c]) + w->level_min[r] * off[c];
}

// Q8_0, two blocks of 32 per register: w + 128 is unsigned, and the offset 128 · Σ v (per lane,
// precomputed with the activations) is subtracted from the exact int32 sums.
VNNI INLINE void q8_0_row_vnni(const uint8_t *row, const lowra_q8_activations *x, const uint64_t n, float *y,
                               uint64_t ldy, uint64_t r) {
    const uint64_t nb = x->nb, n32 = x->in / 32;
    __m512 acc[LOWRA_MAX_COLUMNS];
    float tail[LOWRA_MAX_COLUMNS] = {0};
    for (uint64_t c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    uint64_t k = 0;
    for (; k + 2 <= n32; k += 2) {
        const uint8_t *b0 = row + k * Q8_0_BYTES, *b1 = b0 + Q8_0_BYTES;
        const __m512i u = _mm512_xor_si512(
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
                               _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1),
            flip);
        // Lanes 0-7 scale block b0's sums, lanes 8-15 block b1's.
        const __m512d d0 = _mm512_castps_pd(_mm512_set1_ps(q8_0_scale_f16c(b0)));
        const __m512 d = _mm512_castpd_ps(
            _mm512_insertf64x4(d0, _mm256_castps_pd(_mm256_set1_ps(q8_0_scale_f16c(b1))), 1));
        for (uint64_t c = 0; c < n; c++) {
            const uint64_t blk = k / 2;
            const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 32 * k;
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_load_si512((const void *)(x->q + at)));
            if (x->lo)  // t = 256 h + l
                s = _mm512_dpbusd_epi32(_mm512_slli_epi32(s, 8), u, _mm512_load_si512((const void *)(x->lo + at)));
            s = _mm512_sub_epi32(s, _mm512_loadu_si512((const void *)(x->offset + (c * nb + blk) * 16)));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d, _mm512_set1_ps(x->scale[c * nb + blk])),
                                     acc[c]);
        }
    }
    if (k < n32) {  // an odd last block of 32
        const uint8_t *blk = row + k * Q8_0_BYTES;
        for (uint64_t c = 0; c < n; c++) {
            const uint64_t at = c * 4 * nb * LOWRA_BLOCK + 32 * k;
            const int8_t *v = x->q + at, *l = x->lo ? x->lo + at : NULL;
            int32_t s = 0;
            for (unsigned i = 0; i < 32; i++) s += (int8_t)blk[2 + i] * (l ? 256 * v[i] + l[i] : v[i]);
            tail[c] = q8_0_scale_f16c(blk) * x->scale[c * nb + k / 2] * (float)s;
        }
    }
    for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = _mm512_reduce_add_ps(acc[c]) + tail[c];
}

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

AVX2 static void packed_q8_avx2(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                uint64_t r0, uint64_t r1) {
    BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_q8_avx2)
}
VNNI static void packed_q8_vnni(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                uint64_t r0, uint64_t r1) {
    BY_COLUMNS(LOWRA_ROWS_BY_WIDTH, packed_row_q8_vnni)
}
AVX2 static void q8_0_avx2(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                           uint64_t ldy, uint64_t r0, uint64_t r1) {
    BY_COLUMNS(Q8_0_ROWS, q8_0_row_avx2)
}
VNNI static void q8_0_vnni(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                           uint64_t ldy, uint64_t r0, uint64_t r1) {
    BY_COLUMNS(Q8_0_ROWS, q8_0_row_vnni)
}

#endif

// ---------------------------------------------------------------------------------------------
// Entry points.

void lowra_packed_gemm_q8(int path, const lowra_packed_view *w, const lowra_q8_activations *x, float *y,
                          uint64_t ldy, uint64_t r0, uint64_t r1) {
    lowra_kernels_init();
    if (x->n == 0 || r0 >= r1) return;
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
#if defined(__x86_64__)
    if (path == LOWRA_PATH_AVX512 && lowra_cpu_has_vnni()) return packed_q8_vnni(w, x, y, ldy, r0, r1);
    if (path >= LOWRA_PATH_AVX2) return packed_q8_avx2(w, x, y, ldy, r0, r1);
#endif
    packed_q8_scalar(w, x, y, ldy, r0, r1);
}

void lowra_q8_0_gemm_q8(int path, const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1) {
    if (x->n == 0 || r0 >= r1) return;
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
#if defined(__x86_64__)
    if (path == LOWRA_PATH_AVX512 && lowra_cpu_has_vnni()) return q8_0_vnni(rows, row_bytes, x, y, ldy, r0, r1);
    if (path >= LOWRA_PATH_AVX2) return q8_0_avx2(rows, row_bytes, x, y, ldy, r0, r1);
#endif
    q8_0_scalar(rows, row_bytes, x, y, ldy, r0, r1);
}
