#include "lowra_kernels_internal.h"

#include <pthread.h>
#include <string.h>

float lowra_dq_fraction[256];  // code / 255: the quotients the Swift side computes, looked up
static void fill_dq_fraction(void) {
    for (int c = 0; c < 256; c++) lowra_dq_fraction[c] = (float)c / 255.0f;
}
void lowra_kernels_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fill_dq_fraction);
}

// ---------------------------------------------------------------------------------------------
// Scalar path: per block, the levels scaled once, then lookups.

void lowra_packed_gemm_scalar(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                              uint64_t r0, uint64_t r1) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t i = r0; i < r1; i++) {
        const uint64_t r = lowra_row_at(w, i);
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r];
        float tab[16], acc[LOWRA_MAX_COLUMNS] = {0};
        lowra_row_levels(w, r, tab);
        for (uint64_t blk = 0; blk < nb; blk++) {
            const float s = lowra_block_scale(w, r * nb + blk);
            const uint64_t j0 = blk * LOWRA_BLOCK, j1 = lowra_block_end(blk, in);
            float part[LOWRA_MAX_COLUMNS] = {0};
            lowra_lookup_dot(row, b, j0, j1, s, tab, x, in, n, part);
            for (uint64_t c = 0; c < n; c++) acc[c] += part[c];
        }
        for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = acc[c];
    }
}

void lowra_packed_dequantize_scalar(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t r = r0; r < r1; r++, out += in) {
        float tab[16];
        lowra_row_levels(w, r, tab);
        for (uint64_t j = 0; j < in; j++) {
            const float s = lowra_block_scale(w, r * nb + j / LOWRA_BLOCK);
            out[j] = s * tab[lowra_code_at(w->codes + w->row_offsets[r], j, w->bits[r])];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points: each path's kernel from the table (lowra_kernel_table.c).

void lowra_packed_gemm(int path, const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                       uint64_t r0, uint64_t r1) {
    lowra_kernels_init();
    if (n == 0 || r0 >= r1) return;
    const lowra_kernel_table *k = lowra_kernels_for(path);
    while (n > LOWRA_MAX_COLUMNS) {  // more columns: in groups of the most a kernel takes
        k->packed_gemm(w, x, LOWRA_MAX_COLUMNS, y, ldy, r0, r1);
        x += LOWRA_MAX_COLUMNS * w->in;
        y += LOWRA_MAX_COLUMNS * ldy;
        n -= LOWRA_MAX_COLUMNS;
    }
    k->packed_gemm(w, x, n, y, ldy, r0, r1);
}

void lowra_packed_dequantize(int path, const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out) {
    lowra_kernels_init();
    lowra_kernels_for(path)->packed_dequantize(w, r0, r1, out);
}
