// Every vector path of the C kernels against the scalar reference, in C alone, on fresh random inputs:
// the cases of KernelTests.swift for a machine that cannot build the Swift package — arm64 under
// qemu-user (scripts/kernel_check_arm64.sh cross-compiles this file with the kernels and runs it
// with and without the dot-product instructions). On x86-64 it checks AVX2 and AVX-512 the same way.
//
//   kernel_check [SEED]     exit status 0 when every path agrees; one line per failure otherwise
//
// Exact where the code guarantees it (panel dequantization, the LoRA up-projection's fused chains,
// f16 conversions); elsewhere within 2e-5 of Σ|w·x| (the products' rounding in another order).
#include "lowra_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t state;
static uint64_t next(void) {  // xorshift64*
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ull;
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next() >> 40) / (float)(1 << 24); }

static int failures = 0, checks = 0;
static const char *path_name;

static void fail(const char *what, const char *detail) {
    if (failures < 40) printf("FAIL [%s] %s: %s\n", path_name, what, detail);
    failures++;
}

// |got - want| <= tol · bound[i] for every i (bound: Σ|w·x| of each output).
static void expect_close(const char *what, const float *got, const float *want, const double *bound, uint64_t count,
                         double tol) {
    checks++;
    for (uint64_t i = 0; i < count; i++) {
        const double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= tol * bound[i] + 1e-30)) {
            char s[160];
            snprintf(s, sizeof s, "element %llu: %.9g vs %.9g (bound %.3g)", (unsigned long long)i, got[i], want[i],
                     bound[i]);
            return fail(what, s);
        }
    }
}

static void expect_same(const char *what, const void *got, const void *want, uint64_t bytes) {
    checks++;
    if (memcmp(got, want, bytes) != 0) {
        const uint8_t *a = got, *b = want;
        uint64_t i = 0;
        while (a[i] == b[i]) i++;
        char s[80];
        snprintf(s, sizeof s, "first differing byte %llu", (unsigned long long)i);
        fail(what, s);
    }
}

static uint16_t half_bits(float f) {  // IEEE binary16, round to nearest even (an independent reference)
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000, e = (x >> 23) & 0xff, m = x & 0x7fffff;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00 | (m ? 0x200 | (m >> 13) : 0));
    const int exp = (int)e - 127 + 15;
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        const uint32_t mant = m | 0x800000, shift = (uint32_t)(14 - exp);
        uint32_t h = mant >> shift;
        const uint32_t rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (m >> 13);
    const uint32_t rest = m & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

// ---------------------------------------------------------------------------------------------
// Packed weights: random widths, codes, levels, block scales (plain or double-quantized), row order.

typedef struct {
    lowra_packed_view v;
    uint8_t *bits, *codes, *absmax_codes, *levels_u8;
    int64_t *row_offsets, *level_offsets, *order;
    float *levels, *absmax, *absmax_scales, *level_min, *level_step;
} packed;

static packed make_packed(uint64_t out, uint64_t in, int dq, int ordered) {
    packed p = {0};
    const uint64_t nb = lowra_blocks_per_row(in);
    p.bits = malloc(out);
    p.row_offsets = malloc((out + 1) * sizeof(int64_t));
    p.level_offsets = malloc(out * sizeof(int64_t));
    p.levels_u8 = calloc(out, 16);
    p.level_min = malloc(out * sizeof(float));
    p.level_step = malloc(out * sizeof(float));
    uint64_t bytes = 0, levels = 0;
    for (uint64_t r = 0; r < out; r++) {
        const unsigned widths[3] = {1, 2, 4};
        p.bits[r] = (uint8_t)widths[(r + next() % 2) % 3];  // every width once out >= 3
        p.row_offsets[r] = (int64_t)bytes;
        p.level_offsets[r] = (int64_t)levels;
        bytes += lowra_row_bytes(in, p.bits[r]);
        levels += 1u << p.bits[r];
    }
    p.row_offsets[out] = (int64_t)bytes;
    p.codes = malloc(bytes + 64);
    for (uint64_t i = 0; i < bytes + 64; i++) p.codes[i] = (uint8_t)next();
    p.levels = malloc(levels * sizeof(float));
    for (uint64_t r = 0; r < out; r++) {
        const unsigned k = 1u << p.bits[r];
        float *l = p.levels + p.level_offsets[r];
        for (unsigned i = 0; i < k; i++) l[i] = uniform(-1, 1);
        lowra_integer_levels_row(l, k, p.levels_u8 + 16 * r, &p.level_min[r], &p.level_step[r]);
    }
    if (dq) {
        p.absmax_codes = malloc(out * nb);
        for (uint64_t i = 0; i < out * nb; i++) p.absmax_codes[i] = (uint8_t)next();
        const uint64_t groups = (out * nb + LOWRA_DQ_GROUP - 1) / LOWRA_DQ_GROUP;
        p.absmax_scales = malloc(groups * sizeof(float));
        for (uint64_t g = 0; g < groups; g++) p.absmax_scales[g] = uniform(0.01f, 2);
    } else {
        p.absmax = malloc(out * nb * sizeof(float));
        for (uint64_t i = 0; i < out * nb; i++) p.absmax[i] = uniform(0.001f, 2);
    }
    if (ordered) {
        p.order = malloc(out * sizeof(int64_t));
        for (uint64_t i = 0; i < out; i++) p.order[i] = (int64_t)i;
        for (uint64_t i = out; i > 1; i--) {
            const uint64_t j = next() % i;
            const int64_t t = p.order[i - 1];
            p.order[i - 1] = p.order[j];
            p.order[j] = t;
        }
    }
    p.v = (lowra_packed_view){.out = out, .in = in, .bits = p.bits, .codes = p.codes, .row_offsets = p.row_offsets,
                              .levels = p.levels, .level_offsets = p.level_offsets, .absmax = p.absmax,
                              .absmax_codes = p.absmax_codes, .absmax_scales = p.absmax_scales,
                              .levels_u8 = p.levels_u8, .level_min = p.level_min, .level_step = p.level_step,
                              .order = p.order};
    return p;
}

static void free_packed(packed *p) {
    free(p->bits), free(p->codes), free(p->absmax_codes), free(p->levels_u8), free(p->row_offsets);
    free(p->level_offsets), free(p->order), free(p->levels), free(p->absmax), free(p->absmax_scales);
    free(p->level_min), free(p->level_step);
}

static float *random_floats(uint64_t count, float scale) {
    float *x = malloc(count * sizeof(float) + 64);
    for (uint64_t i = 0; i < count; i++) x[i] = uniform(-scale, scale);
    return x;
}

// bound[c * out + r] = Σ_j |W[r][j] x[c][j]|, with W from the scalar dequantization.
static double *bounds(const float *w, const float *x, uint64_t n, uint64_t out, uint64_t in) {
    double *b = malloc(n * out * sizeof(double));
    for (uint64_t c = 0; c < n; c++)
        for (uint64_t r = 0; r < out; r++) {
            double s = 0;
            for (uint64_t j = 0; j < in; j++) s += fabs((double)w[r * in + j] * x[c * in + j]);
            b[c * out + r] = s;
        }
    return b;
}

static void check_packed(int path, uint64_t out, uint64_t in, int dq, int ordered) {
    char what[120];
    packed p = make_packed(out, in, dq, ordered);
    float *w = malloc(out * in * sizeof(float)), *wv = malloc(out * in * sizeof(float));
    lowra_packed_dequantize(LOWRA_PATH_SCALAR, &p.v, 0, out, w);
    lowra_packed_dequantize(path, &p.v, 0, out, wv);
    snprintf(what, sizeof what, "packed_dequantize out %llu in %llu dq %d", (unsigned long long)out,
             (unsigned long long)in, dq);
    expect_same(what, wv, w, out * in * sizeof(float));
    for (uint64_t n = 1; n <= 17; n++) {
        float *x = random_floats(n * in, 1);
        float *y = malloc(n * out * sizeof(float)), *yv = malloc(n * out * sizeof(float));
        double *b = bounds(w, x, n, out, in);
        const uint64_t r0 = out > 2 ? 1 : 0;  // a sub-range of rows: the others untouched
        for (uint64_t i = 0; i < n * out; i++) y[i] = yv[i] = -7;
        lowra_packed_gemm(LOWRA_PATH_SCALAR, &p.v, x, n, y, out, r0, out);
        lowra_packed_gemm(path, &p.v, x, n, yv, out, r0, out);
        snprintf(what, sizeof what, "packed_gemm out %llu in %llu n %llu dq %d order %d", (unsigned long long)out,
                 (unsigned long long)in, (unsigned long long)n, dq, ordered);
        expect_close(what, yv, y, b, n * out, 2e-5);
        for (int split = 0; split < 2; split++) {
            void *buffer = aligned_alloc(64, (lowra_q8_activation_bytes(n, in) + 63) / 64 * 64);
            lowra_q8_activations a;
            lowra_q8_quantize(x, n, in, lowra_q8_order(1) | lowra_q8_order(2) | lowra_q8_order(4), split, buffer, &a);
            lowra_packed_gemm_q8(LOWRA_PATH_SCALAR, &p.v, &a, y, out, r0, out);
            lowra_packed_gemm_q8(path, &p.v, &a, yv, out, r0, out);
            snprintf(what, sizeof what, "packed_gemm_q8 out %llu in %llu n %llu split %d dq %d order %d",
                     (unsigned long long)out, (unsigned long long)in, (unsigned long long)n, split, dq, ordered);
            expect_close(what, yv, y, b, n * out, 2e-5);
            free(buffer);
        }
        free(x), free(y), free(yv), free(b);
    }
    free(w), free(wv);
    free_packed(&p);
}

// Tiled packed weights: the path's tiled kernel bit for bit the scalar reference on the same tiles,
// the other layout's reference the same bits, and both within rounding of the row kernels.

typedef struct {
    lowra_tiled_view v;
    void *memory[8];
} tiled;

static tiled make_tiled(const lowra_packed_view *w, int layout) {
    tiled t = {0};
    uint64_t count, code_bytes;
    lowra_tile_sizes(w, &count, &code_bytes);
    const uint64_t nb = lowra_blocks_per_row(w->in);
    const uint64_t sizes[8] = {count, count * 8, code_bytes + 64, count * 256, count * nb * 16 * 4,
                               count * 16 * 4, count * 16 * 4, count * 16 * 4};
    for (int i = 0; i < 8; i++) t.memory[i] = aligned_alloc(64, (sizes[i] + 63) / 64 * 64 + 64);
    lowra_tiled_buffers b = {.bits = t.memory[0], .offsets = t.memory[1], .codes = t.memory[2],
                             .tables = t.memory[3], .scales = t.memory[4], .level_min = t.memory[5],
                             .level_step = t.memory[6], .rows = t.memory[7]};
    if (lowra_tile_pack(w, layout, &b) != 0) fail("tile_pack", "out of memory");
    t.v = (lowra_tiled_view){.out = w->out, .in = w->in, .nb = nb, .tiles = count, .layout = layout,
                             .bits = b.bits, .offsets = b.offsets, .codes = b.codes, .tables = b.tables,
                             .scales = b.scales, .level_min = b.level_min, .level_step = b.level_step, .rows = b.rows};
    return t;
}

static void check_tiled(int path, uint64_t out, uint64_t in, int dq) {
    if (!lowra_tiled_supported(path)) return;
    char what[120];
    packed p = make_packed(out, in, dq, 0);
    const int layout = lowra_tile_layout(path);
    tiled t = make_tiled(&p.v, layout), other = make_tiled(&p.v, 1 - layout);
    float *w = malloc(out * in * sizeof(float));
    lowra_packed_dequantize(LOWRA_PATH_SCALAR, &p.v, 0, out, w);
    for (uint64_t n = 1; n <= 17; n++) {
        float *x = random_floats(n * in, 1);
        float *y = malloc(n * out * sizeof(float)), *yv = malloc(n * out * sizeof(float));
        float *yo = malloc(n * out * sizeof(float)), *yr = malloc(n * out * sizeof(float));
        double *b = bounds(w, x, n, out, in);
        for (int split = 0; split < 2; split++) {
            void *buffer = aligned_alloc(64, (lowra_q8_activation_bytes(n, in) + 63) / 64 * 64);
            lowra_q8_activations a;
            lowra_q8_quantize(x, n, in, 1 | lowra_q8_order(1) | lowra_q8_order(2) | lowra_q8_order(4), split, buffer,
                              &a);
            lowra_tiled_gemm_q8(LOWRA_PATH_SCALAR, &t.v, &a, y, out, 0, t.v.tiles);
            lowra_tiled_gemm_q8(path, &t.v, &a, yv, out, 0, t.v.tiles);
            lowra_tiled_gemm_q8(LOWRA_PATH_SCALAR, &other.v, &a, yo, out, 0, other.v.tiles);
            lowra_packed_gemm_q8(LOWRA_PATH_SCALAR, &p.v, &a, yr, out, 0, out);
            snprintf(what, sizeof what, "tiled_gemm_q8 layout %d out %llu in %llu n %llu split %d dq %d", layout,
                     (unsigned long long)out, (unsigned long long)in, (unsigned long long)n, split, dq);
            expect_same(what, yv, y, n * out * sizeof(float));
            snprintf(what, sizeof what, "tiled_gemm_q8 layouts' references out %llu in %llu n %llu split %d",
                     (unsigned long long)out, (unsigned long long)in, (unsigned long long)n, split);
            expect_same(what, yo, y, n * out * sizeof(float));
            snprintf(what, sizeof what, "tiled_gemm_q8 vs rows out %llu in %llu n %llu split %d",
                     (unsigned long long)out, (unsigned long long)in, (unsigned long long)n, split);
            expect_close(what, y, yr, b, n * out, 2e-5);
            free(buffer);
        }
        free(x), free(y), free(yv), free(yo), free(yr), free(b);
    }
    free(w);
    for (int i = 0; i < 8; i++) free(t.memory[i]), free(other.memory[i]);
    free_packed(&p);
}

// The tiles' transposed product (training's input gradient): the path's kernel bit for bit the scalar
// reference, for any split of the columns and on either layout's tiles, and within the bound of its
// roundings of DY · W in double.
static void check_tiled_t(int path, uint64_t out, uint64_t in, int dq) {
    if (!lowra_tiled_supported(path)) return;
    char what[120];
    packed p = make_packed(out, in, dq, 0);
    tiled t = make_tiled(&p.v, LOWRA_TILE_MULTISHIFT), other = make_tiled(&p.v, LOWRA_TILE_LANES);
    const lowra_tiled_view *own = lowra_tile_layout(path) == LOWRA_TILE_MULTISHIFT ? &t.v : &other.v;  // the path's
    float *w = malloc(out * in * sizeof(float));
    lowra_packed_dequantize(LOWRA_PATH_SCALAR, &p.v, 0, out, w);
    const uint64_t columns[] = {1, 2, 3, 17, 70};
    for (unsigned k = 0; k < 5; k++) {
        const uint64_t n = columns[k];
        float *dy = random_floats(n * out, 1), *start = random_floats(n * in, 1);
        float *y = malloc(n * in * sizeof(float)), *yv = malloc(n * in * sizeof(float));
        float *yo = malloc(n * in * sizeof(float)), *ys = malloc(n * in * sizeof(float));
        for (int accumulate = 0; accumulate < 2; accumulate++) {
            memcpy(y, start, n * in * sizeof(float)), memcpy(yv, start, n * in * sizeof(float));
            memcpy(yo, start, n * in * sizeof(float)), memcpy(ys, start, n * in * sizeof(float));
            if (lowra_tiled_gemm_t(LOWRA_PATH_SCALAR, &t.v, dy, out, y, in, accumulate, 0, n) != 0 ||
                lowra_tiled_gemm_t(path, own, dy, out, yv, in, accumulate, 0, n) != 0 ||
                lowra_tiled_gemm_t(LOWRA_PATH_SCALAR, &other.v, dy, out, yo, in, accumulate, 0, n) != 0)
                fail("tiled_gemm_t", "scratch");
            // Columns in two calls split at 1: every column's pairing in the vector kernel changes.
            lowra_tiled_gemm_t(path, own, dy, out, ys, in, accumulate, 0, 1);
            lowra_tiled_gemm_t(path, own, dy, out, ys, in, accumulate, 1, n);
            snprintf(what, sizeof what, "tiled_gemm_t out %llu in %llu n %llu dq %d acc %d", (unsigned long long)out,
                     (unsigned long long)in, (unsigned long long)n, dq, accumulate);
            expect_same(what, yv, y, n * in * sizeof(float));
            expect_same(what, yo, y, n * in * sizeof(float));
            expect_same(what, ys, y, n * in * sizeof(float));
        }
        // y holds start + DY · W: against double, within the roundings' bound (KernelTests states it):
        // each row's g = dy · a · step moves by at most σ_G / 2 = M_G / 254 against |u - 128|, and the
        // levels' rounding to their uint8 grid by half a step times a against |dy|.
        const uint64_t nb = t.v.nb, lanes = 16 * t.v.tiles;
        double *half = malloc(lanes * sizeof(double));
        for (uint64_t c = 0; c < n; c++)
            for (uint64_t blk = 0; blk < nb; blk++) {
                for (uint64_t g0 = 0; g0 < lanes; g0 += 64) {
                    double big = 0;
                    for (uint64_t k = g0; k < g0 + 64 && k < lanes; k++) {
                        if (t.v.rows[k] < 0) continue;
                        const double g = (double)dy[c * out + (uint64_t)t.v.rows[k]] *
                                         t.v.scales[(k / 16 * nb + blk) * 16 + k % 16] * t.v.level_step[k];
                        big = fabs(g) > big ? fabs(g) : big;
                    }
                    for (uint64_t k = g0; k < g0 + 64 && k < lanes; k++) half[k] = big / 254 * 1.0001;
                }
                for (uint64_t j = 64 * blk; j < in && j < 64 * blk + 64; j++) {
                    double want = start[c * in + j], bound = 0, mag = fabs(want);
                    for (uint64_t k = 0; k < lanes; k++) {
                        if (t.v.rows[k] < 0) continue;
                        const uint64_t r = (uint64_t)t.v.rows[k];
                        const double a = t.v.scales[(k / 16 * nb + blk) * 16 + k % 16], d = dy[c * out + r];
                        const double st = t.v.level_step[k], mid = t.v.level_min[k] + 128 * st;
                        want += d * w[r * in + j];
                        if (!(a > 0 && st > 0)) continue;
                        const double level = w[r * in + j] / a;
                        bound += half[k] * (fabs(level - mid) / st + 0.5) + fabs(d) * a * st / 2;
                        mag += fabs(d) * a * (fabs(level) + 2 * fabs(mid) + 128 * st);
                    }
                    checks += j == 0 && c == 0;
                    if (!(fabs(y[c * in + j] - want) <= bound + 1e-5 * mag + 1e-9)) {
                        char detail[200];
                        snprintf(detail, sizeof detail, "out %llu in %llu n %llu column %llu input %llu: %.9g vs %.9g",
                                 (unsigned long long)out, (unsigned long long)in, (unsigned long long)n,
                                 (unsigned long long)c, (unsigned long long)j, y[c * in + j], want);
                        fail("tiled_gemm_t vs double", detail);
                    }
                }
            }
        free(half);
        free(dy), free(start), free(y), free(yv), free(yo), free(ys);
    }
    free(w);
    for (int i = 0; i < 8; i++) free(t.memory[i]), free(other.memory[i]);
    free_packed(&p);
}

// ---------------------------------------------------------------------------------------------
// Stored matrices (ggml encodings) and Q8_0 rows with integer activations.

static uint64_t stored_row_bytes(unsigned t, uint64_t in) {
    switch (t) {
    case 0: return 4 * in;
    case 1: case 30: return 2 * in;
    case 8: return in / 32 * 34;
    case 3: return in / 32 * 20;
    default: return in / 32 * 18;
    }
}

static uint8_t *random_stored(unsigned t, uint64_t out, uint64_t in) {
    const uint64_t row = stored_row_bytes(t, in);
    uint8_t *m = malloc(out * row + 64);
    for (uint64_t r = 0; r < out; r++) {
        uint8_t *p = m + r * row;
        if (t == 0) {
            for (uint64_t j = 0; j < in; j++) {
                const float f = uniform(-1, 1);
                memcpy(p + 4 * j, &f, 4);
            }
        } else if (t == 1 || t == 30) {
            for (uint64_t j = 0; j < in; j++) {
                const float f = uniform(-1, 1);
                uint32_t u;
                memcpy(&u, &f, 4);
                const uint16_t h = t == 1 ? half_bits(f) : (uint16_t)(u >> 16);
                memcpy(p + 2 * j, &h, 2);
            }
        } else {
            const uint64_t bytes = row / (in / 32);
            for (uint64_t k = 0; k < in / 32; k++) {
                uint8_t *blk = p + k * bytes;
                for (uint64_t i = 0; i < bytes; i++) blk[i] = (uint8_t)next();
                const uint16_t d = half_bits(uniform(0.001f, 0.05f)), mn = half_bits(uniform(-0.5f, 0.5f));
                memcpy(blk, &d, 2);
                if (t == 3) memcpy(blk + 2, &mn, 2);
                if (t == 8)
                    for (int i = 0; i < 32; i++)
                        if (blk[2 + i] == 0x80) blk[2 + i] = 0x81;  // int8 weights in [-127, 127], as ggml writes
            }
        }
    }
    return m;
}

// Q8_0 rows in tiles: the path's kernel bit for bit the scalar reference on its layout, the other
// layout's reference the same bits, both within rounding of the rows (`want`, the scalar rows).
static void check_q8_0_tiled(int path, const uint8_t *m, uint64_t row, uint64_t out, uint64_t in,
                             const lowra_q8_activations *a, const float *want, const double *bound) {
    char what[120];
    const uint64_t tiles = (out + 15) / 16, n = a->n;
    float *y[2], *yv = malloc(n * out * sizeof(float));
    lowra_q8_0_tiled_view v[2];
    void *memory[2][3];
    for (int layout = 0; layout < 2; layout++) {
        for (int k = 0; k < 3; k++) memory[layout][k] = aligned_alloc(64, tiles * (in / 32) * 512 + 64);
        lowra_q8_0_tiled_buffers b = {
            .codes = memory[layout][0], .scales = memory[layout][1], .rows = memory[layout][2]};
        lowra_q8_0_tile_pack(m, row, out, in, layout, &b);
        v[layout] = (lowra_q8_0_tiled_view){.out = out, .in = in, .tiles = tiles, .layout = layout, .codes = b.codes,
                                            .scales = b.scales, .rows = b.rows};
        y[layout] = malloc(n * out * sizeof(float));
        lowra_q8_0_tiled_gemm_q8(LOWRA_PATH_SCALAR, &v[layout], a, y[layout], out, 0, tiles);
    }
    const int layout = lowra_tile_layout(path);
    lowra_q8_0_tiled_gemm_q8(path, &v[layout], a, yv, out, 0, tiles);
    snprintf(what, sizeof what, "q8_0_tiled_gemm_q8 layout %d in %llu n %llu", layout, (unsigned long long)in,
             (unsigned long long)n);
    expect_same(what, yv, y[layout], n * out * sizeof(float));
    expect_same("q8_0_tiled_gemm_q8 layouts' references", y[1 - layout], y[layout], n * out * sizeof(float));
    expect_close("q8_0_tiled_gemm_q8 vs rows", y[layout], want, bound, n * out, 2e-5);
    for (int l = 0; l < 2; l++) {
        for (int k = 0; k < 3; k++) free(memory[l][k]);
        free(y[l]);
    }
    free(yv);
}

static void check_stored(int path, unsigned t, uint64_t out, uint64_t in) {
    char what[120];
    uint8_t *m = random_stored(t, out, in);
    const uint64_t row = stored_row_bytes(t, in);
    float *w = malloc(out * in * sizeof(float)), *wv = malloc(out * in * sizeof(float));
    lowra_stored_dequantize(LOWRA_PATH_SCALAR, t, m, row, in, 0, out, w);
    lowra_stored_dequantize(path, t, m, row, in, 0, out, wv);
    snprintf(what, sizeof what, "stored_dequantize type %u in %llu", t, (unsigned long long)in);
    expect_same(what, wv, w, out * in * sizeof(float));
    for (uint64_t n = 1; n <= 17; n += n < 9 ? 1 : 8) {
        float *x = random_floats(n * in, 1);
        float *y = malloc(n * out * sizeof(float)), *yv = malloc(n * out * sizeof(float));
        double *b = bounds(w, x, n, out, in);
        lowra_stored_gemm(LOWRA_PATH_SCALAR, t, m, row, in, x, n, y, out, 0, out);
        lowra_stored_gemm(path, t, m, row, in, x, n, yv, out, 0, out);
        snprintf(what, sizeof what, "stored_gemm type %u in %llu n %llu", t, (unsigned long long)in,
                 (unsigned long long)n);
        expect_close(what, yv, y, b, n * out, 2e-5);
        if (t == 8) {
            for (int split = 0; split < 2; split++) {
                void *buffer = aligned_alloc(64, (lowra_q8_activation_bytes(n, in) + 63) / 64 * 64);
                lowra_q8_activations a;
                lowra_q8_quantize(x, n, in, 0, split, buffer, &a);
                lowra_q8_0_gemm_q8(LOWRA_PATH_SCALAR, m, row, &a, y, out, 0, out);
                lowra_q8_0_gemm_q8(path, m, row, &a, yv, out, 0, out);
                snprintf(what, sizeof what, "q8_0_gemm_q8 in %llu n %llu split %d", (unsigned long long)in,
                         (unsigned long long)n, split);
                expect_close(what, yv, y, b, n * out, 2e-5);
                if (lowra_tiled_supported(path)) check_q8_0_tiled(path, m, row, out, in, &a, y, b);
                free(buffer);
            }
        }
        free(x), free(y), free(yv), free(b);
    }
    free(m), free(w), free(wv);
}

// ---------------------------------------------------------------------------------------------
// Attention over an f16 cache, f16 conversions, the LoRA up-projection.

static void check_attention(int path, uint64_t tk, uint64_t heads, uint64_t kv_heads, uint64_t d) {
    char what[120];
    const uint64_t cache = tk * kv_heads * d;
    uint16_t *k = malloc(cache * 2), *v = malloc(cache * 2);
    for (uint64_t i = 0; i < cache; i++) k[i] = half_bits(uniform(-2, 2)), v[i] = half_bits(uniform(-2, 2));
    float *q = random_floats(heads * d, 1);
    float *s = malloc(heads * tk * sizeof(float)), *sv = malloc(heads * tk * sizeof(float));
    float *o = malloc(heads * d * sizeof(float)), *ov = malloc(heads * d * sizeof(float));
    double *b = malloc(heads * d * sizeof(double));
    lowra_attention_decode_f16(LOWRA_PATH_SCALAR, q, k, v, tk, heads, kv_heads, d, s, o, 0, heads);
    lowra_attention_decode_f16(path, q, k, v, tk, heads, kv_heads, d, sv, ov, 0, heads);
    for (uint64_t i = 0; i < heads * d; i++) b[i] = 2;  // |values| <= 2, probabilities sum to 1
    snprintf(what, sizeof what, "attention tk %llu heads %llu/%llu d %llu", (unsigned long long)tk,
             (unsigned long long)heads, (unsigned long long)kv_heads, (unsigned long long)d);
    expect_close(what, ov, o, b, heads * d, 2e-5);
    free(k), free(v), free(q), free(s), free(sv), free(o), free(ov), free(b);
}

static void check_halves(int path) {
    const uint64_t n = 4099;
    float *x = malloc(n * sizeof(float)), *back = malloc(65536 * sizeof(float)), *want = malloc(65536 * sizeof(float));
    uint16_t *h = malloc(n * 2), *ref = malloc(n * 2), *all = malloc(65536 * 2);
    for (uint64_t i = 0; i < n; i++) {
        const float scales[] = {1e-7f, 1e-4f, 1, 300, 70000};  // subnormal, normal, overflowing halves
        x[i] = uniform(-1, 1) * scales[next() % 5];
        ref[i] = half_bits(x[i]);
    }
    if (lowra_floats_to_halves(path, x, h, n)) expect_same("floats_to_halves", h, ref, n * 2);
    uint64_t m = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        if (((i >> 10) & 0x1f) == 0x1f && (i & 0x3ff)) continue;  // NaNs: any quiet NaN will do
        all[m] = (uint16_t)i;
        m++;
    }
    lowra_halves_to_floats(LOWRA_PATH_SCALAR, all, want, m);
    lowra_halves_to_floats(path, all, back, m);
    expect_same("halves_to_floats (every non-NaN half)", back, want, m * sizeof(float));
    free(x), free(back), free(want), free(h), free(ref), free(all);
}

static void check_lora_up(int path, uint64_t out, uint64_t r, uint64_t n) {
    char what[120];
    float *b = random_floats(out * r, 1), *xa = random_floats(n * r, 1);
    float *y = random_floats(n * out, 1), *yv = malloc(n * out * sizeof(float));
    memcpy(yv, y, n * out * sizeof(float));
    lowra_lora_up(LOWRA_PATH_SCALAR, b, out, r, xa, n, 0.75f, y, out, 0, out);
    lowra_lora_up(path, b, out, r, xa, n, 0.75f, yv, out, 0, out);
    snprintf(what, sizeof what, "lora_up out %llu r %llu n %llu (bit for bit)", (unsigned long long)out,
             (unsigned long long)r, (unsigned long long)n);
    expect_same(what, yv, y, n * out * sizeof(float));
    free(b), free(xa), free(y), free(yv);
}

static void check_swiglu(int path) {
    const uint64_t n = 1543;  // a tail past every vector width
    float *g = random_floats(n, 12), *u = random_floats(n, 2), *y = malloc(n * sizeof(float));
    float *yv = malloc(n * sizeof(float));
    double *b = malloc(n * sizeof(double));
    lowra_swiglu(LOWRA_PATH_SCALAR, g, u, y, n);
    lowra_swiglu(path, g, u, yv, n);
    for (uint64_t i = 0; i < n; i++) b[i] = fabs((double)y[i]) + 1e-30;
    expect_close("swiglu", yv, y, b, n, 2e-6);
    free(g), free(u), free(y), free(yv), free(b);
}

// SwiGLU's gradient against the scalar path, within 4e-6 of its factors' size.
static void check_swiglu_backward(int path) {
    const uint64_t n = 1543;
    float *g = random_floats(n, 12), *u = random_floats(n, 2), *d = random_floats(n, 1);
    float *dg = calloc(n, sizeof(float)), *du = calloc(n, sizeof(float));
    float *dgv = calloc(n, sizeof(float)), *duv = calloc(n, sizeof(float));
    double *b = malloc(n * sizeof(double));
    lowra_swiglu_backward(LOWRA_PATH_SCALAR, g, u, d, dg, du, n);
    lowra_swiglu_backward(path, g, u, d, dgv, duv, n);
    for (uint64_t i = 0; i < n; i++) {  // the size of the factors (1 + g (1 - σ) cancels near g = -1.28)
        const double sig = 1 / (1 + exp(-(double)g[i]));
        b[i] = fabs((double)d[i] * u[i] * sig) * (1 + fabs(g[i] * (1 - sig))) + 1e-30;
    }
    expect_close("swiglu_backward dgate", dgv, dg, b, n, 4e-6);
    for (uint64_t i = 0; i < n; i++) b[i] = fabs((double)du[i]) + 1e-30;
    expect_close("swiglu_backward dup", duv, du, b, n, 4e-6);
    free(g), free(u), free(d), free(dg), free(du), free(dgv), free(duv), free(b);
}

// Softmax and the logits' exponentials (cross-entropy) against the scalar path, within 2e-6 relative.
static void check_exponentials(int path) {
    const uint64_t lengths[] = {1, 7, 8, 9, 1003};
    for (unsigned k = 0; k < 5; k++) {
        const uint64_t n = lengths[k];
        float *x = random_floats(n, 40), *y = malloc(n * sizeof(float)), *yv = malloc(n * sizeof(float));
        double *b = malloc(n * sizeof(double));
        memcpy(y, x, n * sizeof(float)), memcpy(yv, x, n * sizeof(float));
        lowra_softmax(LOWRA_PATH_SCALAR, y, n);
        lowra_softmax(path, yv, n);
        for (uint64_t i = 0; i < n; i++) b[i] = fabs((double)y[i]) + 1e-38;
        expect_close("softmax", yv, y, b, n, 2e-6);
        const double s = lowra_sum_exp(LOWRA_PATH_SCALAR, x, n, 3), sv = lowra_sum_exp(path, x, n, 3);
        checks++;
        if (!(fabs(s - sv) <= 2e-6 * s)) fail("sum_exp", "differs");
        lowra_exp_scaled(LOWRA_PATH_SCALAR, x, n, 3.25, 0.5, y);
        lowra_exp_scaled(path, x, n, 3.25, 0.5, yv);
        for (uint64_t i = 0; i < n; i++) b[i] = fabs((double)y[i]) + 1e-38;
        expect_close("exp_scaled", yv, y, b, n, 2e-6);
        free(x), free(y), free(yv), free(b);
    }
}

// Error feedback over one block of columns: the path's sweep against the reference, bit for bit
// (W's block, codes, scaled errors and the rows' error sums), rows of 2, 4 and 16 levels, some
// blocks with a zero or negative scale, row counts that leave a remainder to the reference.
static int ascending(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void check_error_feedback(int path, uint64_t out, uint64_t n, uint64_t i1, uint64_t i2, uint64_t bs) {
    const uint64_t nb = (n + bs - 1) / bs, cols = i2 - i1;
    float *w = random_floats(out * n, 1), *u = calloc(n * n, sizeof(float)), *scales = malloc(out * nb * 4);
    float *levels = calloc(out * LOWRA_EF_LEVELS, 4), *th = malloc(out * (LOWRA_EF_LEVELS - 1) * 4);
    for (uint64_t i = 0; i < n; i++) {
        u[i * n + i] = uniform(0.5f, 2);
        for (uint64_t j = i + 1; j < n; j++) u[i * n + j] = uniform(-0.3f, 0.3f);
    }
    for (uint64_t k = 0; k < out * nb; k++) {
        const uint64_t pick = next() % 16;
        scales[k] = pick == 0 ? 0 : pick == 1 ? -0.5f : uniform(0.05f, 1);
    }
    for (uint64_t r = 0; r < out; r++) {
        const unsigned count = (unsigned[]){2, 4, 16}[next() % 3];
        float *lv = levels + r * LOWRA_EF_LEVELS;
        for (unsigned i = 0; i < count; i++) lv[i] = uniform(-1.5f, 1.5f);
        qsort(lv, count, sizeof(float), ascending);
        for (unsigned t = 0; t < LOWRA_EF_LEVELS - 1; t++)
            th[r * (LOWRA_EF_LEVELS - 1) + t] = t + 1 < count ? (lv[t] + lv[t + 1]) / 2 : INFINITY;
    }
    float *w_want = malloc(out * n * 4), *e_want = malloc(out * cols * 4), *e_got = malloc(out * cols * 4);
    uint8_t *c_want = calloc(out * n, 1), *c_got = calloc(out * n, 1);
    double *err_want = malloc(out * 8), *err_got = malloc(out * 8);
    for (uint64_t r = 0; r < out; r++) err_want[r] = err_got[r] = uniform(0, 3);
    memcpy(w_want, w, out * n * 4);
    lowra_error_feedback(LOWRA_PATH_SCALAR, w_want, n, 0, out, i1, i2, u, scales, nb, bs, levels, th, c_want,
                         err_want, e_want);
    lowra_error_feedback(path, w, n, 0, out, i1, i2, u, scales, nb, bs, levels, th, c_got, err_got, e_got);
    expect_same("error feedback: weights", w, w_want, out * n * 4);
    expect_same("error feedback: codes", c_got, c_want, out * n);
    expect_same("error feedback: scaled errors", e_got, e_want, out * cols * 4);
    expect_same("error feedback: row errors", err_got, err_want, out * 8);
    free(w), free(u), free(scales), free(levels), free(th), free(w_want), free(e_want), free(e_got);
    free(c_want), free(c_got), free(err_want), free(err_got);
}

int main(int argc, char **argv) {
    const uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : (uint64_t)time(NULL);
    int tested = 0;
    for (int path = LOWRA_PATH_SCALAR + 1; path < LOWRA_PATH_COUNT; path++) {
        if (!lowra_kernel_path_supported(path)) continue;
        tested++;
        path_name = lowra_kernel_variant_name(path);
        const int before = checks;
        state = seed * 0x9E3779B97F4A7C15ull + (uint64_t)path;
        const uint64_t ins[] = {32, 64, 100, 576, 1000};
        for (unsigned i = 0; i < sizeof ins / sizeof ins[0]; i++)
            for (int dq = 0; dq < 2; dq++) check_packed(path, i % 2 ? 37 : 5, ins[i], dq, (int)(i % 2));
        for (unsigned i = 0; i < sizeof ins / sizeof ins[0]; i++)
            check_tiled(path, i % 2 ? 37 : 50, ins[i], (int)(i % 2));
        const uint64_t outs[] = {37, 50, 300};
        for (unsigned i = 0; i < sizeof ins / sizeof ins[0]; i++)
            check_tiled_t(path, outs[i % 3], ins[i], (int)(i % 2));
        const unsigned types[] = {0, 1, 30, 8, 2, 3};
        for (unsigned i = 0; i < sizeof types / sizeof types[0]; i++) {
            check_stored(path, types[i], 11, 576);
            check_stored(path, types[i], 3, 64);
            if (types[i] == 0 || types[i] == 1 || types[i] == 30) check_stored(path, types[i], 5, 100);
        }
        const uint64_t lengths[] = {1, 7, 33, 130};
        for (unsigned i = 0; i < 4; i++) {
            check_attention(path, lengths[i], 9, 3, 64);
            check_attention(path, lengths[i], 4, 4, 8);
            check_attention(path, lengths[i], 2, 1, 12);  // not a multiple of 8: the scalar kernel
        }
        check_halves(path);
        const uint64_t ranks[] = {1, 4, 16, 33, 64};
        for (unsigned i = 0; i < 5; i++)
            for (uint64_t n = 1; n <= 17; n++) check_lora_up(path, i % 2 ? 37 : 64, ranks[i], n);
        check_swiglu(path);
        check_exponentials(path);
        check_swiglu_backward(path);
        const uint64_t ef[][5] = {{48, 256, 0, 128, 64}, {37, 300, 128, 256, 64}, {16, 100, 64, 100, 64},
                                  {9, 70, 0, 70, 32}, {35, 576, 512, 576, 64}};
        for (unsigned i = 0; i < sizeof ef / sizeof ef[0]; i++)
            check_error_feedback(path, ef[i][0], ef[i][1], ef[i][2], ef[i][3], ef[i][4]);
        printf("path %s: %d checks\n", path_name, checks - before);
    }
    if (!tested) printf("no vector path on this CPU: nothing to compare\n");
    printf("seed %llu: %d failures\n", (unsigned long long)seed, failures);
    return failures ? 1 : 0;
}
