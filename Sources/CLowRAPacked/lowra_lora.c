// The up-projection of a LoRA adapter over a few columns (decode): y[c][o] += s · Σ_k B[o][k]
// xa[c][k] for B (out, r) fp32 row-major, r small (the adapter's rank). A row of B is only r
// values long, so instead of one short dot product and a horizontal sum per (row, column), 16
// rows at a time (8 with AVX2) are read as columns of registers (lane i: row o + i, one register
// per k) and every column is one chain of r fused multiply-adds per register of outputs. Each is
//   acc = 0; for k in 0 ..< r: acc = fma(B[o][k], xa[c][k], acc);  y = fma(s, acc, y)
// on every path, so the paths agree bit for bit and a column never depends on the others.
#include "lowra_kernels_internal.h"

#include <math.h>

void lowra_lora_up_scalar(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y, uint64_t ldy,
                          uint64_t o0, uint64_t o1) {
    for (uint64_t c = 0; c < n; c++)
        for (uint64_t o = o0; o < o1; o++) {
            float acc = 0;
            for (uint64_t k = 0; k < r; k++) acc = fmaf(b[o * r + k], xa[c * r + k], acc);
            y[c * ldy + o] = fmaf(s, acc, y[c * ldy + o]);
        }
}

void lowra_lora_up(int path, const float *b, uint64_t out, uint64_t r, const float *xa, uint64_t n, float s, float *y,
                   uint64_t ldy, uint64_t o0, uint64_t o1) {
    if (n == 0 || o0 >= o1) return;
    if (o1 > out) o1 = out;
    lowra_kernels_for(path)->lora_up(b, r, xa, n, s, y, ldy, o0, o1);
}
