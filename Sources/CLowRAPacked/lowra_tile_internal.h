// Helpers the tiled kernels share (lowra_tile_kernels.c, arch/x86/tiled_avx512.c, arch/x86/tiled_avx2.c,
// arch/arm/tiled_neon.c).
#ifndef LOWRA_TILE_INTERNAL_H
#define LOWRA_TILE_INTERNAL_H

#include "lowra_kernels_internal.h"

enum { TILE = LOWRA_TILE_ROWS, TABLE_BYTES = 256 };

static inline uint64_t tile_block_bytes(unsigned bits) { return 128u * bits; }

// 128 Σ t over block k32 of 32 inputs of column c (from the offsets of its 8 groups of 4).
static inline int32_t q8_0_correction(const lowra_q8_activations *x, uint64_t c, uint64_t k32) {
    const int32_t *o = x->offset + (c * x->nb + k32 / 2) * 16 + (k32 % 2) * 8;
    int32_t s = 0;
    for (unsigned g = 0; g < 8; g++) s += o[g];
    return s;
}

// The lanes a tile's rows fill (from lane 0; the rest are empty, rows -1).
static inline unsigned tile_lanes(const int32_t *rows) {
    unsigned lanes = 0;
    while (lanes < TILE && rows[lanes] >= 0) lanes++;
    return lanes;
}

// Where lane i's code of input 4g + k sits in a block of the multishift layout (bit position).
static inline uint64_t tile_bit(unsigned b, unsigned i, unsigned g, unsigned k) {
    if (b == 1) return 64 * g + 4 * i + k;
    if (b == 2) return 512 * (g / 4) + 64 * (i / 2) + 16 * (g % 4) + 8 * (i % 2) + 2 * k;
    return 512 * (g / 2) + 64 * (i / 2) + 32 * (g % 2) + 16 * (i % 2) + 4 * k;
}

// Where input j of a block sits in a lane's 8 b bytes of the lanes layout (bit position). The
// kernel unpacks two registers of codes (h = 0: low nibbles, or the lower of two codes 4 bits
// apart; h = 1: the higher) whose byte p = 16 L + m (128-bit half L) becomes, once looked up, the
// low (m even) or high (m odd) byte of int16 k = m / 2 of half L of register 2 h + m % 2; register
// r holds inputs 16 r .. 16 r + 15 in order. Inverted here.
static inline unsigned lanes_bit(unsigned b, unsigned j) {
    const unsigned r = j / 16, lane = (j % 16) / 8, m = 2 * (j % 8) + r % 2, h = r / 2, p = 16 * lane + m;
    if (b == 4) return 8 * p + 4 * h;              // nibbles of 32 bytes
    if (b == 2) return 8 * m + 2 * lane + 4 * h;   // 16 bytes, broadcast to both 128-bit halves
    return 8 * (p % 8) + p / 8 + 4 * h;            // 8 bytes, broadcast to four qwords
}

// The code of lane i at input 4g + k of a block, from either layout.
static inline unsigned tile_code(int layout, const uint8_t *block, unsigned b, unsigned i, unsigned g, unsigned k) {
    const uint64_t bit = layout == LOWRA_TILE_LANES ? 64 * b * i + lanes_bit(b, 4 * g + k) : tile_bit(b, i, g, k);
    return (block[bit / 8] >> (bit % 8)) & ((1u << b) - 1);
}

static inline uint8_t table_level(int layout, const uint8_t *table, unsigned b, unsigned i, unsigned code) {
    if (layout == LOWRA_TILE_LANES || b == 4) return table[16 * i + code];
    return b == 1 ? table[64 * code + 4 * i] : table[4 * i + code];
}

// The transposed product (lowra_tile_gradient.c): columns per pass, groups of 4 tiles, and the
// calling thread's scratch for one pass.
enum { TILE_T_COLUMNS = 64, TILE_T_CHUNK = 16 };  // columns; tiles whose levels are unpacked at once

static inline uint64_t tile_t_groups(uint64_t tiles) { return (tiles + 3) / 4; }

typedef struct {
    float *dyp;      // (TILE_T_COLUMNS, 16 tiles): DY in tile order
    int8_t *gq;      // (TILE_T_COLUMNS, 64 groups): the quantized g
    float *sigma;    // (TILE_T_COLUMNS, groups)
    int32_t *offset; // (TILE_T_COLUMNS, groups): 128 Σ q over each group
    float *m;        // (TILE_T_COLUMNS)
    float *acc;      // (TILE_T_COLUMNS, 64)
    uint8_t *levels; // (TILE_T_CHUNK, 1024): a chunk's unpacked levels (vector kernels)
} tile_t_scratch;

static inline uint64_t tile_t_align(uint64_t n) { return (n + 63) / 64 * 64; }

// Lays out one pass's scratch from `base` (64-byte aligned) into s; returns its bytes. Called with a
// NULL base to size the buffer, then with the buffer.
static inline uint64_t tile_t_scratch_layout(const lowra_tiled_view *t, uint8_t *base, tile_t_scratch *s) {
    const uint64_t g = tile_t_groups(t->tiles);
    uint64_t at = 0;
#define TILE_T_CARVE(field, type, bytes) (s->field = (type *)((uintptr_t)base + at), at += tile_t_align(bytes))
    TILE_T_CARVE(dyp, float, TILE_T_COLUMNS * 16 * t->tiles * 4);
    TILE_T_CARVE(gq, int8_t, TILE_T_COLUMNS * 64 * g);
    TILE_T_CARVE(sigma, float, TILE_T_COLUMNS * g * 4);
    TILE_T_CARVE(offset, int32_t, TILE_T_COLUMNS * g * 4);
    TILE_T_CARVE(m, float, TILE_T_COLUMNS * 4);
    TILE_T_CARVE(acc, float, TILE_T_COLUMNS * LOWRA_BLOCK * 4);
    TILE_T_CARVE(levels, uint8_t, TILE_T_CHUNK * 1024);
#undef TILE_T_CARVE
    return at;
}

// One column of DY in tile order (zero in empty lanes).
static inline void tile_t_gather(const lowra_tiled_view *t, const float *dy, float *dyp) {
    for (uint64_t k = 0; k < TILE * t->tiles; k++) dyp[k] = t->rows[k] >= 0 ? dy[t->rows[k]] : 0;
}

// The sum of 16 lanes in a fixed tree: halves added pairwise, 8 + 4 + 2 + 1.
static inline float tile_sum16(const float lanes[TILE]) {
    float v[TILE];
    for (unsigned i = 0; i < TILE; i++) v[i] = lanes[i];
    for (unsigned w = TILE / 2; w >= 1; w /= 2)
        for (unsigned i = 0; i < w; i++) v[i] = v[i] + v[i + w];
    return v[0];
}

// DX's inputs of block blk for one column: acc + m, stored or added.
static inline void tile_t_store(const float acc[LOWRA_BLOCK], float m, uint64_t in, uint64_t blk, float *dx,
                                int accumulate) {
    const uint64_t j0 = blk * LOWRA_BLOCK, n = in - j0 < LOWRA_BLOCK ? in - j0 : LOWRA_BLOCK;
    for (uint64_t j = 0; j < n; j++) {
        const float v = acc[j] + m;
        dx[j0 + j] = accumulate ? dx[j0 + j] + v : v;
    }
}

void lowra_tiled_gemm_t_vbmi(const lowra_tiled_view *t, const float *dy, uint64_t lddy, float *dx, uint64_t lddx,
                             int accumulate, uint64_t c0, uint64_t c1, tile_t_scratch *s);

void lowra_tiled_gemm_vbmi(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                           uint64_t t0, uint64_t t1);
void lowra_tiled_gemm_avx2(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                           uint64_t t0, uint64_t t1);
void lowra_q8_0_tiled_gemm_avx2(const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                uint64_t t0, uint64_t t1);
void lowra_tiled_gemm_neon(const lowra_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                           uint64_t t0, uint64_t t1);
void lowra_q8_0_tiled_gemm_neon(const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                uint64_t t0, uint64_t t1);
void lowra_q8_0_tiled_gemm_vnni(const lowra_q8_0_tiled_view *t, const lowra_q8_activations *x, float *y, uint64_t ldy,
                                uint64_t t0, uint64_t t1);

#endif
