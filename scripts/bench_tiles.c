// What one tiled product costs per width: ns per tile and block (16 rows x 64 inputs) of a weight whose
// rows all have one width, and of Q8_0 tiles (the head's), for 1, 2 and 16 columns, on the path's own
// tile layout. Random codes, levels and scales (the cost does not depend on them). Built and run by
// scripts/bench_tiles.sh; not a test.
#include "lowra_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *zalloc(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memset(p, 0, (bytes + 63) / 64 * 64);
    return p;
}

// n columns of random activations quantized with `orders`, and room for the outputs of `out` rows.
typedef struct {
    float *x, *y;
    void *buffer;
    lowra_q8_activations a;
} columns;

static columns random_columns(uint64_t in, uint64_t n, uint64_t out, unsigned orders, int split) {
    columns c = {.x = zalloc(4 * in * n), .y = zalloc(4 * out * n), .buffer = zalloc(lowra_q8_activation_bytes(n, in))};
    for (uint64_t i = 0; i < in * n; i++) c.x[i] = (float)(rand() % 1000 - 500) * 1e-3f;
    lowra_q8_quantize(c.x, n, in, orders, split, c.buffer, &c.a);
    return c;
}

static void free_columns(columns *c) { free(c->x), free(c->y), free(c->buffer); }

// The best of 5 timings (seconds per product) of the packed (q8_0 0) or Q8_0 tiled product of all tiles.
static double best_seconds(int path, int q8_0, const void *view, uint64_t tiles, columns *c) {
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        const int iterations = 400;
        const double t0 = now();
        for (int i = 0; i < iterations; i++) {
            if (q8_0) lowra_q8_0_tiled_gemm_q8(path, view, &c->a, c->y, 16 * tiles, 0, tiles);
            else lowra_tiled_gemm_q8(path, view, &c->a, c->y, 16 * tiles, 0, tiles);
        }
        const double t = (now() - t0) / iterations;
        if (t < best) best = t;
    }
    return best;
}

// Nanoseconds per tile and block of `tiles` tiles of `bits`-bit rows, `in` inputs, n columns (best of 5).
static double tile_block_ns(int path, unsigned bits, uint64_t in, uint64_t tiles, uint64_t n, int split) {
    const uint64_t nb = (in + 63) / 64, block_bytes = 128 * bits * nb;
    uint8_t *b = zalloc(tiles), *codes = zalloc(tiles * block_bytes), *tables = zalloc(256 * tiles);
    uint64_t *offsets = zalloc(8 * tiles);
    float *scales = zalloc(4 * 16 * tiles * nb), *mins = zalloc(4 * 16 * tiles), *steps = zalloc(4 * 16 * tiles);
    int32_t *rows = zalloc(4 * 16 * tiles);
    for (uint64_t t = 0; t < tiles; t++) b[t] = (uint8_t)bits, offsets[t] = t * block_bytes;
    for (uint64_t i = 0; i < tiles * block_bytes; i++) codes[i] = (uint8_t)rand();
    for (uint64_t i = 0; i < 256 * tiles; i++) tables[i] = (uint8_t)rand();
    for (uint64_t i = 0; i < 16 * tiles * nb; i++) scales[i] = 1e-3f * (float)(rand() % 100);
    for (uint64_t i = 0; i < 16 * tiles; i++) mins[i] = -1, steps[i] = 0.01f, rows[i] = (int32_t)i;
    const lowra_tiled_view v = {.out = 16 * tiles, .in = in, .nb = nb, .tiles = tiles,
                                .layout = lowra_tile_layout(path), .bits = b, .offsets = offsets, .codes = codes,
                                .tables = tables, .scales = scales, .level_min = mins, .level_step = steps,
                                .rows = rows};
    columns c = random_columns(in, n, 16 * tiles, 1, split);
    const double best = best_seconds(path, 0, &v, tiles, &c);
    free(b), free(codes), free(tables), free(offsets), free(scales), free(mins), free(steps), free(rows);
    free_columns(&c);
    return best * 1e9 / (double)(tiles * nb);
}

// The same for Q8_0 tiles (the head's): ns per tile and 64 inputs (two 32-input blocks).
static double q8_0_block_ns(int path, uint64_t in, uint64_t tiles, uint64_t n, int split) {
    const uint64_t n32 = in / 32;
    uint8_t *codes = zalloc(tiles * n32 * 512);
    float *scales = zalloc(4 * 16 * tiles * n32);
    int32_t *rows = zalloc(4 * 16 * tiles);
    for (uint64_t i = 0; i < tiles * n32 * 512; i++) codes[i] = (uint8_t)rand();
    for (uint64_t i = 0; i < 16 * tiles * n32; i++) scales[i] = 1e-3f * (float)(rand() % 100);
    for (uint64_t i = 0; i < 16 * tiles; i++) rows[i] = (int32_t)i;
    const lowra_q8_0_tiled_view v = {.out = 16 * tiles, .in = in, .tiles = tiles, .layout = lowra_tile_layout(path),
                                     .codes = codes, .scales = scales, .rows = rows};
    columns c = random_columns(in, n, 16 * tiles, 0, split);
    const double best = best_seconds(path, 1, &v, tiles, &c);
    free(codes), free(scales), free(rows);
    free_columns(&c);
    return best * 1e9 / (double)(tiles * (in / 64));
}

int main(int argc, char **argv) {
    const int path = argc > 1 && strcmp(argv[1], "avx2") == 0 ? LOWRA_PATH_AVX2 : LOWRA_PATH_AVX512;
    const uint64_t in = argc > 2 ? strtoull(argv[2], NULL, 10) : 576, tiles = 36;
    if (!lowra_tiled_supported(path)) {
        fprintf(stderr, "no tiled kernels for %s on this CPU\n", lowra_kernel_variant_name(path));
        return 2;
    }
    printf("%s, %llu inputs, %llu tiles; ns per tile and block (16 rows x 64 inputs), best of 5\n",
           lowra_kernel_variant_name(path), (unsigned long long)in, (unsigned long long)tiles);
    printf("| activations | columns | 1 bit | 2 bits | 4 bits | Q8_0 |\n| --- | --- | --- | --- | --- | --- |\n");
    const uint64_t columns[] = {1, 2, 16};
    for (int split = 1; split >= 0; split--)
        for (unsigned k = 0; k < 3; k++) {
            printf("| %s | %llu |", split ? "int16" : "int8", (unsigned long long)columns[k]);
            for (unsigned bits = 1; bits <= 4; bits *= 2)
                printf(" %.1f |", tile_block_ns(path, bits, in, tiles, columns[k], split));
            printf(" %.1f |\n", q8_0_block_ns(path, in, tiles, columns[k], split));
        }
    return 0;
}
