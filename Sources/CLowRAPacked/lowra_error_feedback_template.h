// Error feedback's column sweep (lowra_error_feedback.c has the reference), written once for every
// vector width: LANES rows at a time, one per lane, their block of columns transposed into a tile so
// that the update of the later columns is one multiply and one subtract per column and LANES rows.
// Every operation is the reference's, unfused (the including file turns contraction off) and in its
// order. A path's file (arch/x86/error_feedback_*.c) defines its primitives, then includes this file,
// which defines rows_<PATH> (one group of LANES rows) and lowra_error_feedback_rows_<PATH>:
//   TARGET                     the function attribute naming the instruction sets
//   LANES, ALIGN               rows per group; the tiles' alignment in bytes
//   VEC, IVEC, DVEC, MASK      fp32, int32 and fp64 (LANES / 2 lanes) vectors; a lane mask
//   VLOAD, VSTORE, VZERO, VSUB, VMUL, VDIV, VSET1            fp32 vectors
//   ISET1, IADD, IMUL, LANE_INDEX                            int32 vectors (LANE_INDEX: 0, 1, …)
//   GATHER(base, index)        fp32 at base[index] per lane
//   POSITIVE(s)                the lanes where s > 0 (scales of zero give code 0 and level 0)
//   DIV_WHERE(m, x, s)         x / s where m (any value elsewhere: codes are masked)
//   COUNT_ABOVE(code, m, y, t) code + 1 where m and y > t
//   CODES_WHERE(m, code)       code where m, else 0
//   MUL_WHERE(m, s, level)     s · level where m, else 0
//   STORE_CODES(dst, code)     the lanes' codes as LANES bytes
//   DLOAD, DSTORE, DADD, DMUL, WIDEN(v, half)                fp64 vectors; half 0 / 1 of v widened

#define LOWRA_EF_CAT2(a, b) a##_##b
#define LOWRA_EF_CAT(a, b) LOWRA_EF_CAT2(a, b)

LOWRA_NO_CONTRACT TARGET static void LOWRA_EF_CAT(rows, PATH)(const lowra_error_feedback_args *a, uint64_t r0) {
    const uint64_t n = a->n, i1 = a->i1, i2 = a->i2, cols = i2 - i1;
    float tile[LOWRA_EF_MAX_COLUMNS][LANES] __attribute__((aligned(ALIGN)));
    float err_tile[LOWRA_EF_MAX_COLUMNS][LANES] __attribute__((aligned(ALIGN)));
    uint8_t code_tile[LOWRA_EF_MAX_COLUMNS][LANES];
    float th[LOWRA_EF_LEVELS - 1][LANES] __attribute__((aligned(ALIGN)));
    lowra_ef_load(a, r0, LANES, &tile[0][0], &th[0][0]);
    const IVEC level_base = IMUL(LANE_INDEX(), ISET1(LOWRA_EF_LEVELS));
    const IVEC scale_rows = IMUL(LANE_INDEX(), ISET1((int)a->scale_stride));
    const float *levels = a->levels + r0 * LOWRA_EF_LEVELS;
    double start[LANES];
    for (unsigned i = 0; i < LANES; i++) start[i] = a->errors[r0 + i];
    DVEC sum_lo = DLOAD(start), sum_hi = DLOAD(start + LANES / 2);
    VEC s = VZERO();
    uint64_t scale_block = UINT64_MAX;
    for (uint64_t j = i1; j < i2; j++) {
        const uint64_t c = j - i1;
        if (j / a->block_size != scale_block) {
            scale_block = j / a->block_size;
            s = GATHER(a->scales + r0 * a->scale_stride + scale_block, scale_rows);
        }
        const VEC x = VLOAD(tile[c]);
        const MASK valid = POSITIVE(s);
        const VEC y = DIV_WHERE(valid, x, s);
        IVEC code = ISET1(0);
        for (unsigned t = 0; t < LOWRA_EF_LEVELS - 1; t++) code = COUNT_ABOVE(code, valid, y, VLOAD(th[t]));
        code = CODES_WHERE(valid, code);
        const VEC q = MUL_WHERE(valid, s, GATHER(levels, IADD(level_base, code)));
        STORE_CODES(code_tile[c], code);
        const VEC err = VDIV(VSUB(x, q), VSET1(a->u[j * n + j]));
        VSTORE(err_tile[c], err);
        const DVEC dlo = WIDEN(err, 0), dhi = WIDEN(err, 1);
        sum_lo = DADD(sum_lo, DMUL(dlo, dlo));
        sum_hi = DADD(sum_hi, DMUL(dhi, dhi));
        const float *uj = a->u + j * n + i1;
        for (uint64_t t = c + 1; t < cols; t++) VSTORE(tile[t], VSUB(VLOAD(tile[t]), VMUL(err, VSET1(uj[t]))));
    }
    DSTORE(start, sum_lo);
    DSTORE(start + LANES / 2, sum_hi);
    lowra_ef_store(a, r0, LANES, &tile[0][0], &code_tile[0][0], &err_tile[0][0], start);
}

void LOWRA_EF_CAT(lowra_error_feedback_rows, PATH)(const lowra_error_feedback_args *a, uint64_t r0, uint64_t r1) {
    uint64_t r = r0;
    for (; r + LANES <= r1; r += LANES) LOWRA_EF_CAT(rows, PATH)(a, r);
    if (r < r1) lowra_error_feedback_rows_scalar(a, r, r1);
}
