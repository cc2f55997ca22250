// Helpers the integer kernels share (lowra_q8_kernels.c, arch/x86/q8_avx2.c, arch/x86/q8_avx512.c).
#ifndef LOWRA_Q8_INTERNAL_H
#define LOWRA_Q8_INTERNAL_H

#include "lowra_kernels_internal.h"

#include <string.h>

// Which of the four activation copies a width reads: the bit lowra_q8_order sets.
static inline unsigned order_of(unsigned bits) { return bits == 1 ? 1 : bits == 2 ? 2 : 3; }

// Bytes of a Q8_0 block: an f16 scale and 32 int8 weights.
enum { Q8_0_BYTES = 34 };

// element[o][p]: the input at position p of a block in order o (natural, 1-, 2-, 4-bit); filled
// by lowra_q8_quantize before any product runs.
extern uint8_t lowra_q8_element[4][LOWRA_BLOCK];
// multishift[0 (2 bits) or 1 (4 bits)][8 q + j]: the bit offset in qword lane q that byte j of an
// unpacked block takes its code from (vpmultishiftqb, the VBMI kernels), giving the same orders.
extern int8_t lowra_q8_multishift[2][64];

// A block's codes: straight from the row, or, for a partial last block, copied into `pad` so
// the vector loads never read past the row. A byte loop, not memcpy: a call inside a kernel's
// row loop makes the compiler keep its sums in memory.
static inline const uint8_t *block_codes(const uint8_t *row, uint64_t in, uint64_t blk, unsigned b, uint8_t pad[32]) {
    const uint64_t start = blk * 8 * b;
    if ((blk + 1) * LOWRA_BLOCK <= in) return row + start;
    const uint64_t end = lowra_row_bytes(in, b);
    for (uint64_t k = 0; k < 32; k++) pad[k] = start + k < end ? row[start + k] : 0;
    return pad;
}

// One instantiation of a row kernel per number of columns (as lowra_kernels.c does): ROWS is
// LOWRA_ROWS_BY_WIDTH for packed rows or LOWRA_Q8_0_ROWS for Q8_0 rows (arch/x86/q8_*.c, arch/arm/q8_neon.c).
#define LOWRA_Q8_0_ROWS(N, FN)                                                                          \
    for (uint64_t r = r0; r < r1; r++) FN(rows + r * row_bytes, x, N, y, ldy, r);
#define LOWRA_BY_COLUMNS(ROWS, FN)                                                                      \
    switch (x->n) {                                                                                     \
    case 1: ROWS(1, FN) break;                                                                          \
    case 2: ROWS(2, FN) break;                                                                          \
    case 3: ROWS(3, FN) break;                                                                          \
    case 4: ROWS(4, FN) break;                                                                          \
    default: ROWS(x->n, FN) break;                                                                      \
    }

// One activation block: h (and l) rounded, its largest magnitude (lowra_q8_kernels.c, and the
// AVX2 versions in arch/x86/q8_avx2.c); a block reordered with one byte permute (VBMI).
void lowra_q8_round_block_scalar(const float *x, uint64_t count, float inv, int8_t h[LOWRA_BLOCK], int8_t *l);
float lowra_q8_max_abs_scalar(const float *x, uint64_t count);
float lowra_q8_max_abs_avx2(const float *x, uint64_t count);
void lowra_q8_round_block_avx2(const float *x, uint64_t count, float inv, int8_t h[LOWRA_BLOCK], int8_t *l);
int32_t lowra_q8_block_sum_avx2(const int8_t *v);
void lowra_q8_reorder_vbmi(const int8_t *v, unsigned o, int8_t *dst);

// The products per path (arch/x86/, arch/arm/).
void lowra_packed_q8_avx2(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                          uint64_t r0, uint64_t r1);
void lowra_packed_q8_avx512(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                            uint64_t r0, uint64_t r1);
void lowra_packed_q8_vnni(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                          uint64_t r0, uint64_t r1);
void lowra_packed_q8_vbmi(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                          uint64_t r0, uint64_t r1);
void lowra_q8_0_q8_avx2(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1);
void lowra_q8_0_q8_vnni(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1);
void lowra_packed_q8_neon(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                          uint64_t r0, uint64_t r1);
void lowra_packed_q8_sdot(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                          uint64_t r0, uint64_t r1);
void lowra_q8_0_q8_neon(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1);
void lowra_q8_0_q8_sdot(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                        uint64_t ldy, uint64_t r0, uint64_t r1);

#endif
