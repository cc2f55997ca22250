// Tiled packed weights (lowra_kernels.h): a packed weight's rows regrouped, for the integer
// products of decode, into tiles of 16 rows (lanes) of one width. A tile's weights are unpacked
// once per block of 64 inputs and reused by every column, and the block's scales are applied to
// 16 rows at once instead of one row at a time. Two layouts of the codes:
//
// Multishift (AVX-512 VBMI): the codes interleave so that one vpdpbusd multiplies 4 inputs of all
// 16 rows by one column, lane i of the register row i. Per block of 64 inputs (16 groups g of 4
// inputs, lane i, input 4g + k):
//   1 bit   128 bytes: 16 uint64 masks, bit 4i + k of mask g the code.
//   2 bits  256 bytes: 4 chunks of 64; chunk g / 4 qword i / 2 bits 16 (g % 4) + 8 (i % 2) + 2k.
//   4 bits  512 bytes: 8 chunks of 64; chunk g / 2 qword i / 2 bits 32 (g % 2) + 16 (i % 2) + 4k.
// so that vpmultishiftqb moves lane i's 4 codes of group g into bytes 4i..4i+3 of a register in
// one instruction. Codes past `in` and lanes past the tile's rows are zero, as are their scales.
// Tables (256 bytes per tile): 1 bit T[4i + k] = u_i[0], T[64 + 4i + k] = u_i[1]; 2 bits
// T[4i + v] = u_i[v]; 4 bits T[16i + v] = u_i[v] (u_i the lane's row's uint8 levels).
//
// Lanes (AVX2): lane i's codes of a block are its own 8 b bytes, at 8 b i, in the order whose
// unpacking (nibbles, or shifts of the broadcast bytes, then vpshufb to levels, each byte pair
// split into two int16) leaves the 64 levels as int16 in natural order for vpmaddwd: input j
// sits at bit lanes_bit(b, j). Tables: T[16 i + v] = u_i[v].
//
// Per column c and block b the exact int32 sums s_i = Σ u_i[code] t are scaled as the row
// kernels scale them, y_i = step_i Σ_b a_ib s_cb s_i + min_i Σ_b a_ib s_cb Σt, but every
// product and sum in fp32 is one fused multiply-add in a fixed order, lane by lane, so the
// vector kernel and the scalar reference give the same bits and a column's result never depends
// on the other columns of the call.
#include "lowra_tile_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>


void lowra_tile_sizes(const lowra_packed_view *w, uint64_t *tiles, uint64_t *code_bytes) {
    uint64_t count[5] = {0};
    for (uint64_t r = 0; r < w->out; r++) count[w->bits[r]]++;
    const uint64_t nb = lowra_blocks_per_row(w->in);
    *tiles = 0;
    *code_bytes = 0;
    for (unsigned b = 1; b <= 4; b *= 2) {
        const uint64_t t = (count[b] + TILE - 1) / TILE;
        *tiles += t;
        *code_bytes += t * nb * tile_block_bytes(b);
    }
}

// The tiles of each width, interleaved in proportion (tile k of a width with N tiles sits at
// (k + 1/2) / N), so that any stretch of tiles a worker takes has about the same mix of widths.
typedef struct {
    double key;
    unsigned bits;
    uint64_t first;  // the first of its rows, in the order of rows of its width
} tile_slot;

static int by_key(const void *a, const void *b) {
    const tile_slot *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key ? 1 : (int)x->bits - (int)y->bits;
}

int lowra_tile_pack(const lowra_packed_view *w, int layout, lowra_tiled_buffers *out) {
    lowra_kernels_init();
    const uint64_t nb = lowra_blocks_per_row(w->in);
    uint64_t count[5] = {0}, tiles = 0;
    for (uint64_t r = 0; r < w->out; r++) count[w->bits[r]]++;
    int32_t *by_width[5] = {NULL};
    for (unsigned b = 1; b <= 4; b *= 2) tiles += (count[b] + TILE - 1) / TILE;
    tile_slot *slots = malloc((tiles + 1) * sizeof(tile_slot));
    int ok = slots != NULL;
    for (unsigned b = 1; b <= 4; b *= 2) ok &= (by_width[b] = malloc((count[b] + 1) * sizeof(int32_t))) != NULL;
    if (!ok) {
        free(slots);
        for (unsigned b = 1; b <= 4; b *= 2) free(by_width[b]);
        return -1;
    }
    uint8_t lanes_bits[5][LOWRA_BLOCK];  // lanes_bit(b, j) for the widths
    for (unsigned b = 1; b <= 4; b *= 2)
        for (unsigned j = 0; j < LOWRA_BLOCK; j++) lanes_bits[b][j] = (uint8_t)lanes_bit(b, j);
    uint64_t filled[5] = {0};
    for (uint64_t r = 0; r < w->out; r++) by_width[w->bits[r]][filled[w->bits[r]]++] = (int32_t)r;
    uint64_t t = 0;
    for (unsigned b = 1; b <= 4; b *= 2) {
        const uint64_t nt = (count[b] + TILE - 1) / TILE;
        for (uint64_t k = 0; k < nt; k++) slots[t++] = (tile_slot){((double)k + 0.5) / (double)nt, b, k * TILE};
    }
    qsort(slots, tiles, sizeof(tile_slot), by_key);
    uint64_t at = 0;
    for (t = 0; t < tiles; t++) {
        const unsigned b = slots[t].bits;
        out->bits[t] = (uint8_t)b;
        out->offsets[t] = at;
        uint8_t *codes = out->codes + at, *table = out->tables + t * TABLE_BYTES;
        memset(codes, 0, nb * tile_block_bytes(b));
        memset(table, 0, TABLE_BYTES);
        for (unsigned i = 0; i < TILE; i++) {
            const uint64_t k = slots[t].first + i;
            const int32_t row = k < count[b] ? by_width[b][k] : -1;
            out->rows[t * TILE + i] = row;
            out->level_min[t * TILE + i] = row < 0 ? 0 : w->level_min[row];
            out->level_step[t * TILE + i] = row < 0 ? 0 : w->level_step[row];
            for (uint64_t blk = 0; blk < nb; blk++)
                out->scales[(t * nb + blk) * TILE + i] = row < 0 ? 0 : lowra_block_scale(w, (uint64_t)row * nb + blk);
            if (row < 0) continue;
            const uint8_t *u = w->levels_u8 + 16 * (uint64_t)row;
            const uint8_t *src = w->codes + w->row_offsets[row];
            if (layout == LOWRA_TILE_LANES) {
                for (unsigned v = 0; v < (1u << b); v++) table[16 * i + v] = u[v];
                uint8_t *lane = codes + 8 * b * i;
                for (uint64_t j = 0; j < w->in; j++) {
                    const unsigned bit = lanes_bits[b][j % LOWRA_BLOCK];
                    const uint64_t at = (j / LOWRA_BLOCK) * tile_block_bytes(b) + bit / 8;
                    lane[at] |= (uint8_t)(lowra_code_at(src, j, b) << (bit % 8));
                }
                continue;
            }
            for (unsigned v = 0; v < (1u << b); v++) {
                if (b == 1)
                    for (unsigned kk = 0; kk < 4; kk++) table[64 * v + 4 * i + kk] = u[v];
                else table[(b == 2 ? 4 : 16) * i + v] = u[v];
            }
            // A group's 4 codes are 4 b consecutive bits of the row (groups start on a nibble):
            // moved whole. Codes past `in` (the last byte's padding) meet zero activations.
            const uint64_t row_bytes = lowra_row_bytes(w->in, b);
            for (uint64_t j = 0; j < w->in; j += 4) {
                const uint64_t blk = j / LOWRA_BLOCK, g = (j % LOWRA_BLOCK) / 4, at = j * b / 8;
                uint8_t *block = codes + blk * tile_block_bytes(b);
                const uint64_t bit = tile_bit(b, i, (unsigned)g, 0);
                if (b == 1) block[bit / 8] |= (uint8_t)(((src[at] >> (j % 8)) & 15) << (bit % 8));
                else if (b == 2) block[bit / 8] = src[at];
                else {
                    block[bit / 8] = src[at];
                    if (at + 1 < row_bytes) block[bit / 8 + 1] = src[at + 1];
                }
            }
        }
        at += nb * tile_block_bytes(b);
    }
    free(slots);
    for (unsigned b = 1; b <= 4; b *= 2) free(by_width[b]);
    return 0;
}

// The fp32 steps every path takes, lane by lane.
static inline void scale_block(float a, float xs, int32_t s, int32_t sum, float *acc, float *off) {
    const float sc = a * xs;
    *acc = fmaf((float)s, sc, *acc);
    *off = fmaf(sc, (float)sum, *off);
}

static void tiled_scalar(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                         uint64_t t0, uint64_t t1) {
    const uint64_t nb = t->nb;
    for (uint64_t tile = t0; tile < t1; tile++) {
        const unsigned b = t->bits[tile];
        const uint8_t *table = t->tables + tile * TABLE_BYTES;
        for (uint64_t c = 0; c < x->n; c++) {
            const int8_t *h = x->q + c * 4 * nb * LOWRA_BLOCK, *l = x->lo ? x->lo + c * 4 * nb * LOWRA_BLOCK : NULL;
            for (unsigned i = 0; i < TILE; i++) {
                const int32_t row = t->rows[tile * TILE + i];
                if (row < 0) continue;
                float acc = 0, off = 0;
                for (uint64_t blk = 0; blk < nb; blk++) {
                    const uint8_t *block = t->codes + t->offsets[tile] + blk * tile_block_bytes(b);
                    int32_t sh = 0, sl = 0;
                    for (unsigned g = 0; g < 16; g++)
                        for (unsigned k = 0; k < 4; k++) {
                            const uint64_t j = blk * LOWRA_BLOCK + 4 * g + k;
                            const unsigned code = tile_code(t->layout, block, b, i, g, k);
                            const int32_t u = table_level(t->layout, table, b, i, code);
                            sh += u * h[j];
                            if (l) sl += u * l[j];
                        }
                    scale_block(t->scales[(tile * nb + blk) * TILE + i], x->scale[c * nb + blk],
                                l ? sh * 256 + sl : sh, x->sum[c * nb + blk], &acc, &off);
                }
                const float step = t->level_step[tile * TILE + i], min = t->level_min[tile * TILE + i];
                y[c * ldy + (uint64_t)row] = fmaf(step, acc, min * off);
            }
        }
    }
}


// ---------------------------------------------------------------------------------------------
// Q8_0 rows (a quantized model's head) in tiles of 16: per block of 32 inputs, 8 groups g of
// 64 bytes, byte 4i + k of group g the weight of lane i at input 4g + k plus 128 (unsigned for
// vpdpbusd); the block's 16 scales d as fp32. Σ (w + 128) t = Σ w t + 128 Σ t, and 128 Σ t over
// each 4 inputs is what lowra_q8_quantize's offsets hold (`orders` 0), so per column and block
// one correction serves the 16 lanes.

enum { Q8_0_ROW_BLOCK = 34 };

void lowra_q8_0_tile_pack(const uint8_t *rows, uint64_t row_bytes, uint64_t out, uint64_t in, int layout,
                          lowra_q8_0_tiled_buffers *dst) {
    const uint64_t n32 = in / 32, tiles = (out + TILE - 1) / TILE;
    for (uint64_t t = 0; t < tiles; t++)
        for (unsigned i = 0; i < TILE; i++) {
            const uint64_t r = t * TILE + i;
            dst->rows[t * TILE + i] = r < out ? (int32_t)r : -1;
            for (uint64_t k32 = 0; k32 < n32; k32++) {
                uint8_t *block = dst->codes + (t * n32 + k32) * 512;
                float *d = dst->scales + (t * n32 + k32) * TILE;
                const uint8_t *src = r < out ? rows + r * row_bytes + k32 * Q8_0_ROW_BLOCK : NULL;
                uint16_t h = 0;
                if (src) memcpy(&h, src, 2);
                d[i] = src ? lowra_half_to_float(h) : 0;
                for (unsigned j = 0; j < 32; j++) {
                    const int8_t w = src ? (int8_t)src[2 + j] : 0;
                    if (layout == LOWRA_TILE_LANES) block[32 * i + j] = (uint8_t)w;
                    else block[64 * (j / 4) + 4 * i + j % 4] = (uint8_t)(w + 128);
                }
            }
        }
}


static void q8_0_tiled_scalar(const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                              uint64_t t0, uint64_t t1) {
    const uint64_t nb = x->nb, n32 = t->in / 32;
    for (uint64_t tile = t0; tile < t1; tile++)
        for (uint64_t c = 0; c < x->n; c++) {
            const int8_t *h = x->q + c * 4 * nb * LOWRA_BLOCK, *l = x->lo ? x->lo + c * 4 * nb * LOWRA_BLOCK : NULL;
            for (unsigned i = 0; i < TILE; i++) {
                const int32_t row = t->rows[tile * TILE + i];
                if (row < 0) continue;
                float acc = 0;
                for (uint64_t k32 = 0; k32 < n32; k32++) {
                    const uint8_t *block = t->codes + (tile * n32 + k32) * 512;
                    // Σ w t: multishift holds w + 128 (then less the activations' 128 Σ t).
                    const int lanes = t->layout == LOWRA_TILE_LANES;
                    int32_t sh = 0, sl = 0;
                    for (unsigned j = 0; j < 32; j++) {
                        const int32_t u = lanes ? (int8_t)block[32 * i + j] : block[64 * (j / 4) + 4 * i + j % 4];
                        sh += u * h[32 * k32 + j];
                        if (l) sl += u * l[32 * k32 + j];
                    }
                    const int32_t s = (l ? sh * 256 + sl : sh) - (lanes ? 0 : q8_0_correction(x, c, k32));
                    const float sc = t->scales[(tile * n32 + k32) * TILE + i] * x->scale[c * nb + k32 / 2];
                    acc = fmaf((float)s, sc, acc);
                }
                y[c * ldy + (uint64_t)row] = acc;
            }
        }
}


// One group of at most LOWRA_TILE_COLUMNS columns (the most one call keeps in registers) of the
// tiled packed weight (q8_0 false) or the tiled Q8_0 weight (q8_0 true).
static void tiled_group(int path, bool q8_0, const void *view, const lowra_q8_activations *x, float *y, uint64_t ldy,
                        uint64_t t0, uint64_t t1) {
    const lowra_q8_0_tiled_view *rows = view;
    const lowra_tiled_view *packed = view;
    const int layout = q8_0 ? rows->layout : packed->layout;
    if (lowra_tiled_supported(path) && layout == lowra_tile_layout(path)) {
#if defined(__x86_64__)
        const int vbmi = layout == LOWRA_TILE_MULTISHIFT;
        if (q8_0) return vbmi ? lowra_q8_0_tiled_gemm_vnni(rows, x, y, ldy, t0, t1)
                              : lowra_q8_0_tiled_gemm_avx2(rows, x, y, ldy, t0, t1);
        return vbmi ? lowra_tiled_gemm_vbmi(packed, x, y, ldy, t0, t1)
                    : lowra_tiled_gemm_avx2(packed, x, y, ldy, t0, t1);
#elif defined(__aarch64__)
        if (q8_0) return lowra_q8_0_tiled_gemm_neon(rows, x, y, ldy, t0, t1);
        return lowra_tiled_gemm_neon(packed, x, y, ldy, t0, t1);
#endif
    }
    if (q8_0) return q8_0_tiled_scalar(view, x, y, ldy, t0, t1);
    tiled_scalar(view, x, y, ldy, t0, t1);
}

// The columns of x in groups, each group's outputs in its own columns of y.
static void in_column_groups(int path, bool q8_0, const void *view, const lowra_q8_activations *x, float *y,
                             uint64_t ldy, uint64_t t0, uint64_t t1) {
    if (t0 >= t1) return;
    for (uint64_t c0 = 0; c0 < x->n; c0 += LOWRA_TILE_COLUMNS) {
        const uint64_t count = x->n - c0 < LOWRA_TILE_COLUMNS ? x->n - c0 : LOWRA_TILE_COLUMNS;
        const lowra_q8_activations part = lowra_q8_columns(x, c0, count);
        tiled_group(path, q8_0, view, &part, y + c0 * ldy, ldy, t0, t1);
    }
}

void lowra_tiled_gemm_q8(int path, const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                         uint64_t t0, uint64_t t1) {
    lowra_kernels_init();
    in_column_groups(path, false, t, x, y, ldy, t0, t1);
}

void lowra_q8_0_tiled_gemm_q8(int path, const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y,
                              uint64_t ldy, uint64_t t0, uint64_t t1) {
    in_column_groups(path, true, t, x, y, ldy, t0, t1);
}
