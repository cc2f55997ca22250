// The packed LowRA weight format, defined once for the Swift code and a future CUDA backend.
//
// A linear weight W (out x in, row-major, y = x W^T) is stored as:
//   bits[out]        uint8, each 1, 2 or 4: the precision of output channel (row) r.
//   codes            row r holds `in` codes of bits[r] bits, packed LSB-first: code j sits at
//                    bit (j*bits[r]) % 8 of byte (j*bits[r]) / 8 of the row. Every row starts
//                    on a byte boundary; row r starts at row_offset(r) = sum_{s<r} row_bytes(s)
//                    (derived from bits, so not stored).
//   absmax           one scale per block of LOWRA_BLOCK consecutive inputs of a row
//                    (nb = ceil(in / 64) blocks per row, the last may be partial), (out, nb).
//                    Double-quantized (default): uint8 code per block plus one fp32 scale per
//                    LOWRA_DQ_GROUP consecutive blocks of the flattened (out * nb) array:
//                    absmax = code / 255 * scale; codes are rounded up so |w| <= absmax.
//                    Plain: fp32 per block.
//   levels           fp32 codebooks. Channel scope: row r owns 2^bits[r] levels starting at
//                    sum_{s<r} 2^bits[s]. Tensor scope: one codebook per precision, 2 + 4 + 16
//                    = 22 levels at offsets 0 (1 bit), 2 (2 bits), 6 (4 bits).
//
//   W[r][j] = absmax(r, j / 64) * levels[level_offset(r) + code(r, j)]
//
// Exact size in bytes (lowra_packed_bytes): codes + out (bits) + absmax + 4 * levels.
// Bits per parameter: code bits = sum_r in * bits[r] / (out * in) — what the budget controls —
// plus absmax 8/64 + 32/(64*256) = 0.127 (double-quantized) or 32/64 = 0.5 (plain), plus the
// codebooks and the 8 bits of bits[r] per row.
#ifndef LOWRA_PACKED_H
#define LOWRA_PACKED_H

#include <stddef.h>
#include <stdint.h>

#define LOWRA_PACKED_VERSION 1
#define LOWRA_BLOCK 64
#define LOWRA_DQ_GROUP 256
#define LOWRA_TENSOR_LEVELS 22

enum lowra_codebook_scope { LOWRA_SCOPE_CHANNEL = 0, LOWRA_SCOPE_TENSOR = 1 };

static inline uint64_t lowra_row_bytes(uint64_t in, unsigned bits) { return (in * bits + 7) / 8; }
static inline uint64_t lowra_blocks_per_row(uint64_t in) { return (in + LOWRA_BLOCK - 1) / LOWRA_BLOCK; }
/// One past the last element of block blk in a row of `in` elements (the last block may be partial).
static inline uint64_t lowra_block_end(uint64_t blk, uint64_t in) {
    return blk * LOWRA_BLOCK + LOWRA_BLOCK < in ? blk * LOWRA_BLOCK + LOWRA_BLOCK : in;
}
static inline uint64_t lowra_tensor_level_offset(unsigned bits) { return bits == 1 ? 0 : bits == 2 ? 2 : 6; }

static inline uint64_t lowra_absmax_bytes(uint64_t out, uint64_t in, int double_quant) {
    uint64_t n = out * lowra_blocks_per_row(in);
    return double_quant ? n + 4 * ((n + LOWRA_DQ_GROUP - 1) / LOWRA_DQ_GROUP) : 4 * n;
}

/// Total stored bytes of one packed weight.
static inline uint64_t lowra_packed_bytes(uint64_t out, uint64_t in, const uint8_t *bits, int double_quant, int scope) {
    uint64_t codes = 0, levels = 0;
    for (uint64_t r = 0; r < out; r++) {
        codes += lowra_row_bytes(in, bits[r]);
        levels += 1u << bits[r];
    }
    if (scope == LOWRA_SCOPE_TENSOR) levels = LOWRA_TENSOR_LEVELS;
    return codes + out + lowra_absmax_bytes(out, in, double_quant) + 4 * levels;
}

/// Plain reference: dequantizes row r's `in` values, given its packed codes, its block scales
/// (already expanded to fp32) and its codebook.
void lowra_dequantize_row_ref(const uint8_t *row_codes, unsigned bits, uint64_t in, const float *absmax,
                              const float *levels, float *out);

#endif
