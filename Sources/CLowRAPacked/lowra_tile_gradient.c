// The transposed product of the tiles (lowra_tiled_gemm_t): training's input gradient DX = DY · W
// multiplied from the codes, the reduction running over the weight's rows instead of its inputs.
//
// W[r][j] = a_rb (min_r + step_r u_r[code]) = a_rb step_r (u_r[code] - 128) + a_rb c_r with
// c_r = min_r + 128 step_r (the middle of the row's grid), so per column c and block b
//   DX[c][j] = Σ_r g_r (u_r[code_rj] - 128) + m,
//   g_r = DY[c][r] · (a_rb · step_r),   m = Σ_r DY[c][r] · (a_rb · c_r).
// The rows are visited in the tiles' order (lane i of tile t is position 16 t + i; empty lanes have a
// zero scale, so g = 0 there). The g of each group of 64 positions (4 tiles) are quantized to int8,
// q = round(g · 127 / M) with M the group's largest |g| (σ = M / 127), and Σ q u - 128 Σ q is an exact
// int32 sum per group (vpdpbusd: the uint8 levels times the int8 q); centring the levels makes q's
// rounding weigh like |W|, not like the levels' distance from the row's smallest. Then, per input,
// the groups are accumulated in order, acc = fma(σ_G, Σ_G, acc), and DX = acc + m (or DX + (acc + m)).
// m is summed lane by lane (16 fused chains over the tiles in order) and the 16 lanes added in the
// tree of tile_sum16. Every path computes these exact steps: the scalar reference below is the
// definition, the vector kernels give the same bits, and a column's result never depends on the
// other columns of the call.
#include "lowra_tile_internal.h"
#include "lowra_memory.h"

#include <math.h>

// One column's quantized gradients for block blk: gq (groups · 64, zero past the tiles), sigma and
// 128 Σ q (groups) and m, from dyp (the column's DY in tile order, 16 per tile).
static void gradients_scalar(const lowra_tiled_view *t, const float *dyp, uint64_t blk, int8_t *gq, float *sigma,
                             int32_t *offset, float *m) {
    float lanes[TILE] = {0}, g[4 * TILE];
    for (uint64_t G = 0; G < tile_t_groups(t->tiles); G++) {
        float big = 0;
        for (unsigned k = 0; k < 4 * TILE; k++) {
            const uint64_t tile = 4 * G + k / TILE, i = k % TILE;
            g[k] = 0;
            if (tile >= t->tiles) continue;
            const float a = t->scales[(tile * t->nb + blk) * TILE + i], d = dyp[tile * TILE + i];
            g[k] = d * (a * t->level_step[tile * TILE + i]);
            const float mid = fmaf(128.0f, t->level_step[tile * TILE + i], t->level_min[tile * TILE + i]);
            lanes[i] = fmaf(d, a * mid, lanes[i]);
            big = fmaxf(big, fabsf(g[k]));
        }
        const float inv = big > 0 ? 127.0f / big : 0;
        sigma[G] = big / 127.0f;
        offset[G] = 0;
        for (unsigned k = 0; k < 4 * TILE; k++) {
            gq[64 * G + k] = (int8_t)lrintf(g[k] * inv);
            offset[G] += 128 * gq[64 * G + k];
        }
    }
    *m = tile_sum16(lanes);
}

static void gemm_t_scalar(const lowra_tiled_view *t, const float *dy, uint64_t lddy, float *dx, uint64_t lddx,
                          int accumulate, uint64_t c0, uint64_t c1, tile_t_scratch *s) {
    const uint64_t groups = tile_t_groups(t->tiles);
    for (uint64_t c = c0; c < c1; c++) {
        tile_t_gather(t, dy + c * lddy, s->dyp);
        for (uint64_t blk = 0; blk < t->nb; blk++) {
            float m;
            gradients_scalar(t, s->dyp, blk, s->gq, s->sigma, s->offset, &m);
            float acc[LOWRA_BLOCK] = {0};
            for (uint64_t G = 0; G < groups; G++) {
                int32_t sum[LOWRA_BLOCK] = {0};
                for (uint64_t tile = 4 * G; tile < 4 * G + 4 && tile < t->tiles; tile++) {
                    const unsigned b = t->bits[tile];
                    const uint8_t *block = t->codes + t->offsets[tile] + blk * tile_block_bytes(b);
                    const uint8_t *table = t->tables + tile * TABLE_BYTES;
                    for (unsigned i = 0; i < TILE; i++) {
                        const int32_t q = s->gq[64 * G + (tile % 4) * TILE + i];
                        for (unsigned j = 0; j < LOWRA_BLOCK; j++)
                            sum[j] += q * table_level(t->layout, table, b, i,
                                                      tile_code(t->layout, block, b, i, j / 4, j % 4));
                    }
                }
                for (unsigned j = 0; j < LOWRA_BLOCK; j++)
                    acc[j] = fmaf(s->sigma[G], (float)(sum[j] - s->offset[G]), acc[j]);
            }
            tile_t_store(acc, m, t->in, blk, dx + c * lddx, accumulate);
        }
    }
}

int lowra_tiled_t_supported(int path) {
    return lowra_tiled_supported(path) && lowra_tile_layout(path) == LOWRA_TILE_MULTISHIFT;
}

int lowra_tiled_gemm_t(int path, const lowra_tiled_view *t, const float *dy, uint64_t lddy, float *dx, uint64_t lddx,
                       int accumulate, uint64_t c0, uint64_t c1) {
    lowra_kernels_init();
    tile_t_scratch s;
    uint8_t *memory = lowra_thread_scratch(tile_t_scratch_layout(t, NULL, &s));
    if (!memory) return -1;
    tile_t_scratch_layout(t, memory, &s);
    for (uint64_t c = c0; c < c1; c += TILE_T_COLUMNS) {
        const uint64_t end = c1 - c < TILE_T_COLUMNS ? c1 : c + TILE_T_COLUMNS;
#if defined(__x86_64__)
        if (lowra_tiled_t_supported(path) && t->layout == LOWRA_TILE_MULTISHIFT) {
            lowra_tiled_gemm_t_vbmi(t, dy, lddy, dx, lddx, accumulate, c, end, &s);
            continue;
        }
#else
        (void)path;
#endif
        gemm_t_scalar(t, dy, lddy, dx, lddx, accumulate, c, end, &s);
    }
    return 0;
}
