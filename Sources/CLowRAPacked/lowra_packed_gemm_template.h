// The fp32 kernels of packed weights, written once for every vector width (x86: AVX2, AVX-512;
// arm64: NEON, two registers a vector). A path's file
// defines its primitives, then includes this file, which defines rows_<PATH> (the gemm's rows, for
// LOWRA_DISPATCH_COLUMNS) and lowra_packed_dequantize_<PATH>. The primitives:
//   TARGET               the function attribute naming the instruction sets
//   VEC, VW              the vector type and its lanes
//   TABLE                a row's 16 levels as vectors; TABLE_LOAD(tab), TABLE_SCALE(t, s): scaled by s
//   LOOKUP(p, b, t)      the scaled levels of the VW codes of b bits at p
//   VZERO, VLOAD, VSTORE, VADD, VFMA(a, b, acc), VHSUM
// Every path does the same operations in the same order (two accumulators, alternating by VW
// inputs; the partial block's tail in scalar code), so each is checked against the scalar reference.

#define LOWRA_CAT2(a, b) a##_##b
#define LOWRA_CAT(a, b) LOWRA_CAT2(a, b)

TARGET static inline __attribute__((always_inline)) void LOWRA_CAT(rows, PATH)(const lowra_packed_view *w,
                                                                                 const float *x, const uint64_t n,
                                                                                 float *y, uint64_t ldy, uint64_t r,
                                                                                 const unsigned b) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    const uint8_t *row = w->codes + w->row_offsets[r];
    float tab[16];
    lowra_row_levels(w, r, tab);
    const TABLE table = TABLE_LOAD(tab);
    VEC acc[LOWRA_MAX_COLUMNS], acc2[LOWRA_MAX_COLUMNS];
    float tail[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) {
        acc[c] = acc2[c] = VZERO();
        tail[c] = 0;
    }
    for (uint64_t blk = 0; blk < nb; blk++) {
        const float s = lowra_block_scale(w, r * nb + blk);
        const TABLE t = TABLE_SCALE(table, s);
        const uint64_t j0 = blk * LOWRA_BLOCK, j1 = lowra_block_end(blk, in);
        uint64_t j = j0;
        for (; j + 2 * VW <= j1; j += 2 * VW) {
            const VEC v = LOOKUP(row + j * b / 8, b, t);
            const VEC v2 = LOOKUP(row + (j + VW) * b / 8, b, t);
            for (uint64_t c = 0; c < n; c++) {
                acc[c] = VFMA(v, VLOAD(x + c * in + j), acc[c]);
                acc2[c] = VFMA(v2, VLOAD(x + c * in + j + VW), acc2[c]);
            }
        }
        for (; j + VW <= j1; j += VW) {
            const VEC v = LOOKUP(row + j * b / 8, b, t);
            for (uint64_t c = 0; c < n; c++) acc[c] = VFMA(v, VLOAD(x + c * in + j), acc[c]);
        }
        lowra_lookup_dot(row, b, j, j1, s, tab, x, in, n, tail);
    }
    for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = VHSUM(VADD(acc[c], acc2[c])) + tail[c];
}

TARGET void LOWRA_CAT(lowra_packed_dequantize, PATH)(const lowra_packed_view *w, uint64_t r0, uint64_t r1,
                                                     float *out) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t r = r0; r < r1; r++, out += in) {
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r];
        float tab[16];
        lowra_row_levels(w, r, tab);
        const TABLE table = TABLE_LOAD(tab);
        for (uint64_t blk = 0; blk < nb; blk++) {
            const float s = lowra_block_scale(w, r * nb + blk);
            const TABLE t = TABLE_SCALE(table, s);
            const uint64_t j1 = lowra_block_end(blk, in);
            uint64_t j = blk * LOWRA_BLOCK;
            for (; j + VW <= j1; j += VW) VSTORE(out + j, LOOKUP(row + j * b / 8, b, t));
            lowra_lookup_span(row, b, j, j1, s, tab, out);
        }
    }
}

TARGET void LOWRA_CAT(lowra_packed_gemm, PATH)(const lowra_packed_view *w, const float *x, uint64_t n, float *y,
                                               uint64_t ldy, uint64_t r0, uint64_t r1) {
    LOWRA_DISPATCH_COLUMNS(LOWRA_CAT(rows, PATH))
}
