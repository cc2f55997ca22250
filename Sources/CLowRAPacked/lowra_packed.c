#include "lowra_packed.h"

void lowra_dequantize_row_ref(const uint8_t *row_codes, unsigned bits, uint64_t in, const float *absmax,
                              const float *levels, float *out) {
    const unsigned mask = (1u << bits) - 1;
    for (uint64_t j = 0; j < in; j++) {
        uint64_t bit = j * bits;
        unsigned code = (row_codes[bit / 8] >> (bit % 8)) & mask;
        out[j] = absmax[j / LOWRA_BLOCK] * levels[code];
    }
}
