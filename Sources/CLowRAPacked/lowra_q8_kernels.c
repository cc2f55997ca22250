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
#include "lowra_q8_internal.h"

#include <math.h>
#include <pthread.h>
#include <string.h>


// The orders' tables (lowra_q8_internal.h), filled once.
uint8_t lowra_q8_element[4][LOWRA_BLOCK];
int8_t lowra_q8_multishift[2][64];
static void fill_tables(void) {
    for (unsigned p = 0; p < LOWRA_BLOCK; p++) {
        lowra_q8_element[0][p] = (uint8_t)p;
        lowra_q8_element[1][p] = (uint8_t)(8 * (p % 8) + p / 8);
        lowra_q8_element[2][p] = (uint8_t)(4 * (p % 16) + p / 16);
        lowra_q8_element[3][p] = (uint8_t)(p < 32 ? 2 * p : 2 * (p - 32) + 1);
    }
    for (unsigned q = 0; q < 8; q++)
        for (unsigned j = 0; j < 8; j++) {
            lowra_q8_multishift[0][8 * q + j] = (int8_t)(8 * j + 2 * (q / 2));      // 2 bits: qwords 0, 1, 0, 1, ...
            lowra_q8_multishift[1][8 * q + j] = (int8_t)(8 * j + (q < 4 ? 0 : 4));  // 4 bits: qwords 0-3 twice
        }
}
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static inline uint64_t align64(uint64_t n) { return (n + 63) & ~(uint64_t)63; }

uint64_t lowra_q8_activation_bytes(uint64_t n, uint64_t in) {
    const uint64_t nb = lowra_blocks_per_row(in);
    return 2 * align64(n * 4 * nb * 64) + align64(n * nb * 4) + align64(n * nb * 4) + align64(n * nb * 64) +
           2 * n * 4 * nb * 64;
}

// h = round(x * inv) for `count` inputs (lrintf: nearest, ties to even) and, when l is given,
// l = round(256 * (x * inv - h)) clamped to [-127, 127]; the rest of 64 zero.
void lowra_q8_round_block_scalar(const float *x, uint64_t count, float inv, int8_t h[LOWRA_BLOCK],
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

float lowra_q8_max_abs_scalar(const float *x, uint64_t count) {
    float m = 0;
    for (uint64_t j = 0; j < count; j++) m = fmaxf(m, fabsf(x[j]));
    return m;
}


static int32_t block_sum_scalar(const int8_t *v) {
    int32_t s = 0;
    for (unsigned j = 0; j < LOWRA_BLOCK; j++) s += v[j];
    return s;
}

static void reorder_scalar(const int8_t *v, unsigned o, int8_t *dst) {
    for (unsigned p = 0; p < LOWRA_BLOCK; p++) dst[p] = v[lowra_q8_element[o][p]];
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
    int16_t *t16 = split ? (int16_t *)((uint8_t *)offset + align64(n * nb * 64)) : NULL;
    const int32_t unit = split ? 256 : 1;
    for (uint64_t c = 0; c < n; c++) {
        for (uint64_t b = 0; b < nb; b++) {
            const float *xb = x + c * in + b * LOWRA_BLOCK;
            const uint64_t count = in - b * LOWRA_BLOCK < LOWRA_BLOCK ? in - b * LOWRA_BLOCK : LOWRA_BLOCK;
            const uint64_t at = (c * 4 * nb + b) * LOWRA_BLOCK;  // the natural order, always filled
            int8_t *v = q + at, *w = split ? lo + at : NULL;
#if defined(__x86_64__)
            const float m = avx2 ? lowra_q8_max_abs_avx2(xb, count) : lowra_q8_max_abs_scalar(xb, count);
            const float inv = m > 0 ? 127.0f / m : 0;
            if (avx2) lowra_q8_round_block_avx2(xb, count, inv, v, w);
            else lowra_q8_round_block_scalar(xb, count, inv, v, w);
#else
            const float m = lowra_q8_max_abs_scalar(xb, count);
            lowra_q8_round_block_scalar(xb, count, m > 0 ? 127.0f / m : 0, v, w);
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
                if (avx2) s = unit * lowra_q8_block_sum_avx2(v) + (w ? lowra_q8_block_sum_avx2(w) : 0);
                else
#endif
                    s = unit * block_sum_scalar(v) + (w ? block_sum_scalar(w) : 0);
            }
            scale[c * nb + b] = m / 127.0f / (float)unit;
            sum[c * nb + b] = s;
            if (t16)
                for (unsigned j = 0; j < LOWRA_BLOCK; j++) t16[at + j] = (int16_t)(256 * v[j] + w[j]);
            for (unsigned o = 1; o < 4; o++) {
                if (!(orders & (1u << o))) continue;  // lowra_q8_order(width) == 1 << order_of(width)
                const uint64_t to = ((c * 4 + o) * nb + b) * LOWRA_BLOCK;
#if defined(__x86_64__)
                if (vbmi) {
                    lowra_q8_reorder_vbmi(v, o, q + to);
                    if (w) lowra_q8_reorder_vbmi(w, o, lo + to);
                    continue;
                }
#endif
                reorder_scalar(v, o, q + to);
                if (w) reorder_scalar(w, o, lo + to);
            }
            for (unsigned o = 1; t16 && o < 4; o++) {
                if (!(orders & (1u << o))) continue;
                const uint64_t to = ((c * 4 + o) * nb + b) * LOWRA_BLOCK;
                for (unsigned j = 0; j < LOWRA_BLOCK; j++) t16[to + j] = (int16_t)(256 * q[to + j] + lo[to + j]);
            }
        }
    }
    *a = (lowra_q8_activations){
        .n = n, .in = in, .nb = nb, .q = q, .lo = lo, .scale = scale, .sum = sum, .offset = offset, .t16 = t16};
}

// The row's grid step: the fixed point nearest (hi - lo) / 255 of step -> ((lo + 255 step) - lo) / 255,
// each operation rounded on its own (no fused multiply-add, whatever the compiler's contraction
// setting), so levels put on the grid by lowra_snap_levels_row re-derive exactly this step: their
// maximum is lo + 255 step as computed here. The map is monotone, so the iteration moves one way and
// stops within a few ulps; in practice after one or two steps.
LOWRA_NO_CONTRACT static float grid_step(float lo, float hi) {
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

LOWRA_NO_CONTRACT void lowra_integer_levels_row(const float *levels, unsigned count, uint8_t u[16], float *min,
                                                float *step) {
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

LOWRA_NO_CONTRACT void lowra_snap_levels_row(float *levels, unsigned count) {
#pragma STDC FP_CONTRACT OFF
    uint8_t u[16];
    float lo, st;
    lowra_integer_levels_row(levels, count, u, &lo, &st);
    for (unsigned k = 0; k < count; k++) {
        const float offset = st * (float)u[k];
        levels[k] = lo + offset;
    }
}


// ---------------------------------------------------------------------------------------------
// Scalar path: natural order, the same integers.

void lowra_packed_q8_scalar(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
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


void lowra_q8_0_q8_scalar(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
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

#if defined(__x86_64__)
// The AVX-512 path's integer kernel: VBMI's byte permutes where the CPU has them and LOWRA_VBMI
// allows (decided per call: lowra_kernel_set_vbmi may switch it), else VNNI.
void lowra_packed_q8_avx512(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                            uint64_t r0, uint64_t r1) {
    if (!lowra_kernel_vbmi()) return lowra_packed_q8_vnni(w, x, y, ldy, r0, r1);
    pthread_once(&tables_once, fill_tables);
    lowra_packed_q8_vbmi(w, x, y, ldy, r0, r1);
}
#endif

void lowra_packed_gemm_q8(int path, const lowra_packed_view *w, const lowra_q8_activations *x, float *y,
                          uint64_t ldy, uint64_t r0, uint64_t r1) {
    lowra_kernels_init();
    if (x->n == 0 || r0 >= r1) return;
    if (x->n > LOWRA_MAX_COLUMNS) return by_groups(path, w, NULL, 0, x, y, ldy, r0, r1);
    lowra_kernels_for(path)->packed_q8(w, x, y, ldy, r0, r1);
}

void lowra_q8_0_gemm_q8(int path, const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1) {
    if (x->n == 0 || r0 >= r1) return;
    if (x->n > LOWRA_MAX_COLUMNS) return by_groups(path, NULL, rows, row_bytes, x, y, ldy, r0, r1);
    lowra_kernels_for(path)->q8_0_q8(rows, row_bytes, x, y, ldy, r0, r1);
}
