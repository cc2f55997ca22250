// Elementwise kernels (lowra_kernels.h) with a vectorized exp: the SwiGLU activation, a row's softmax
// (attention) and the exponentials of a row of logits (cross-entropy). One vector path (AVX2, 8
// lanes) serves AVX-512 machines too: a decode step's 1,536 gates take ~1 µs.
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

void lowra_softmax_scalar(float *x, uint64_t n) {
    float m = -INFINITY, sum = 0;
    for (uint64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    for (uint64_t i = 0; i < n; i++) sum += (x[i] = expf(x[i] - m));
    const float inv = 1 / sum;
    for (uint64_t i = 0; i < n; i++) x[i] *= inv;
}

void lowra_softmax(int path, float *x, uint64_t n) {
    if (n > 0) lowra_kernels_for(path)->softmax(x, n);
}

double lowra_sum_exp_scalar(const float *x, uint64_t n, float shift) {
    double sum = 0;
    for (uint64_t i = 0; i < n; i++) sum += (double)expf(x[i] - shift);
    return sum;
}

double lowra_sum_exp(int path, const float *x, uint64_t n, float shift) {
    return lowra_kernels_for(path)->sum_exp(x, n, shift);
}

void lowra_exp_scaled_scalar(const float *x, uint64_t n, float hi, float lo, float scale, float *out) {
    for (uint64_t i = 0; i < n; i++) out[i] = expf((x[i] - hi) - lo) * scale;
}

void lowra_exp_scaled(int path, const float *x, uint64_t n, double shift, float scale, float *out) {
    const float hi = (float)shift, lo = (float)(shift - (double)hi);
    lowra_kernels_for(path)->exp_scaled(x, n, hi, lo, scale, out);
}

void lowra_swiglu_backward_scalar(const float *gate, const float *up, const float *dout, float *dgate, float *dup,
                                  uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        const float g = gate[i], sig = 1 / (1 + expf(-g));
        dup[i] += dout[i] * (g * sig);
        dgate[i] += dout[i] * up[i] * sig * (1 + g * (1 - sig));
    }
}

void lowra_swiglu_backward(int path, const float *gate, const float *up, const float *dout, float *dgate, float *dup,
                           uint64_t n) {
    lowra_kernels_for(path)->swiglu_backward(gate, up, dout, dgate, dup, n);
}
