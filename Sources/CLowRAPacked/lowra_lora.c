// The up-projection of a LoRA adapter over a few columns (decode): y[c][o] += s · Σ_k B[o][k]
// xa[c][k] for B (out, r) fp32 row-major, r small (the adapter's rank). A row of B is only r
// values long, so instead of one short dot product and a horizontal sum per (row, column), 16
// rows at a time are read as columns of registers (lane i: row o + i, one register per k) and
// every column is one chain of r fused multiply-adds per 16 outputs. Each output is
//   acc = 0; for k in 0 ..< r: acc = fma(B[o][k], xa[c][k], acc);  y = fma(s, acc, y)
// on every path, so the paths agree bit for bit and a column never depends on the others.
#include "lowra_kernels_internal.h"

#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static void lora_up_scalar(const float *b, uint64_t out, uint64_t r, const float *xa, uint64_t n, float s, float *y,
                           uint64_t ldy, uint64_t o0, uint64_t o1) {
    for (uint64_t c = 0; c < n; c++)
        for (uint64_t o = o0; o < o1; o++) {
            float acc = 0;
            for (uint64_t k = 0; k < r; k++) acc = fmaf(b[o * r + k], xa[c * r + k], acc);
            y[c * ldy + o] = fmaf(s, acc, y[c * ldy + o]);
        }
    (void)out;
}

#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

enum { LORA_K = 32 };  // ranks up to this keep B's columns in registers; larger ones go by the scalar loop

AVX512 static void lora_up_avx512(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y,
                                  uint64_t ldy, uint64_t o0, uint64_t o1) {
    const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32((int)r));
    const __m512 sv = _mm512_set1_ps(s);
    uint64_t o = o0;
    for (; o + 16 <= o1; o += 16) {
        __m512 col[LORA_K];
        for (uint64_t k = 0; k < r; k++) col[k] = _mm512_i32gather_ps(lanes, b + o * r + k, 4);
        for (uint64_t c = 0; c < n; c++) {
            __m512 acc = _mm512_setzero_ps();
            for (uint64_t k = 0; k < r; k++) acc = _mm512_fmadd_ps(col[k], _mm512_set1_ps(xa[c * r + k]), acc);
            float *yc = y + c * ldy + o;
            _mm512_storeu_ps(yc, _mm512_fmadd_ps(sv, acc, _mm512_loadu_ps(yc)));
        }
    }
    if (o < o1) lora_up_scalar(b, 0, r, xa, n, s, y, ldy, o, o1);
}
#endif

void lowra_lora_up(int path, const float *b, uint64_t out, uint64_t r, const float *xa, uint64_t n, float s, float *y,
                   uint64_t ldy, uint64_t o0, uint64_t o1) {
    if (n == 0 || o0 >= o1) return;
    if (o1 > out) o1 = out;
#if defined(__x86_64__)
    if (path == LOWRA_PATH_AVX512 && lowra_kernel_path_supported(path) && r <= LORA_K)
        return lora_up_avx512(b, r, xa, n, s, y, ldy, o0, o1);
#endif
    (void)path;
    lora_up_scalar(b, out, r, xa, n, s, y, ldy, o0, o1);
}
