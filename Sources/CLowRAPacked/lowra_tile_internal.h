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
