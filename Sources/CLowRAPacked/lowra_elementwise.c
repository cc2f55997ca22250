// Elementwise kernels (lowra_kernels.h): the SwiGLU activation with a vectorized exp. One vector
// path (AVX2, 8 lanes) serves AVX-512 machines too: a decode step's 1,536 gates take ~1 µs.
//
// exp(x) = 2^n · exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two constants so the
// subtraction is exact enough), exp(r) on |r| <= ln2/2 by the classic minimax polynomial for
// single precision (the Cephes expf coefficients); x is clamped so 2^n stays a normal float.
#include "lowra_kernels_internal.h"

#include <math.h>

void lowra_swiglu_scalar(const float *gate, const float *up, float *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) out[i] = gate[i] / (1 + expf(-gate[i])) * up[i];
}

void lowra_swiglu(int path, const float *gate, const float *up, float *out, uint64_t n) {
    lowra_kernels_for(path)->swiglu(gate, up, out, n);
}
