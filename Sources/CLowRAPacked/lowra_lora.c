// The up-projection of a LoRA adapter over a few columns (decode): y[c][o] += s · Σ_k B[o][k]
// xa[c][k] for B (out, r) fp32 row-major, r small (the adapter's rank). A row of B is only r
// values long, so instead of one short dot product and a horizontal sum per (row, column), 16
// rows at a time (8 with AVX2) are read as columns of registers (lane i: row o + i, one register
// per k) and every column is one chain of r fused multiply-adds per register of outputs. Each is
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
// One register of outputs (LANES rows of B from row o) for the columns of xa in groups of
// LOWRA_TILE_COLUMNS, B's columns gathered LORA_K at a time: each output's chain runs k = 0 ..< r
// in order across the chunks, as the scalar loop's does.
enum { LORA_K = 32 };
#define LORA_UP(NAME, TARGET, LANES, VEC, ZERO, GATHER, FMA, SET1, LOAD, STORE)                        \
    TARGET static void NAME(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y,  \
                            uint64_t ldy, uint64_t o0, uint64_t o1) {                                    \
        uint64_t o = o0;                                                                                \
        for (; o + LANES <= o1; o += LANES) {                                                           \
            for (uint64_t c0 = 0; c0 < n; c0 += LOWRA_TILE_COLUMNS) {                                   \
                const uint64_t m = n - c0 < LOWRA_TILE_COLUMNS ? n - c0 : LOWRA_TILE_COLUMNS;           \
                VEC acc[LOWRA_TILE_COLUMNS], col[LORA_K];                                               \
                for (uint64_t c = 0; c < m; c++) acc[c] = ZERO;                                         \
                for (uint64_t k0 = 0; k0 < r; k0 += LORA_K) {                                           \
                    const uint64_t kc = r - k0 < LORA_K ? r - k0 : LORA_K;                              \
                    for (uint64_t k = 0; k < kc; k++) col[k] = GATHER(b + o * r + k0 + k, r);            \
                    for (uint64_t c = 0; c < m; c++) {                                                  \
                        VEC a = acc[c];                                                                 \
                        const float *x = xa + (c0 + c) * r + k0;                                        \
                        for (uint64_t k = 0; k < kc; k++) a = FMA(col[k], SET1(x[k]), a);               \
                        acc[c] = a;                                                                     \
                    }                                                                                   \
                }                                                                                       \
                for (uint64_t c = 0; c < m; c++) {                                                      \
                    float *yc = y + (c0 + c) * ldy + o;                                                 \
                    STORE(yc, FMA(SET1(s), acc[c], LOAD(yc)));                                          \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
        if (o < o1) lora_up_scalar(b, 0, r, xa, n, s, y, ldy, o, o1);                                   \
    }

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define AVX2 __attribute__((target("avx2,fma")))

// Lane i reads B[o + i][k]: index i · r.
AVX512 static inline __m512 gather16(const float *p, uint64_t r) {
    const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32((int)r));
    return _mm512_i32gather_ps(lanes, p, 4);
}
AVX2 static inline __m256 gather8(const float *p, uint64_t r) {
    const __m256i lanes = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)r));
    return _mm256_i32gather_ps(p, lanes, 4);
}

LORA_UP(lora_up_avx512, AVX512, 16, __m512, _mm512_setzero_ps(), gather16, _mm512_fmadd_ps, _mm512_set1_ps,
        _mm512_loadu_ps, _mm512_storeu_ps)
LORA_UP(lora_up_avx2, AVX2, 8, __m256, _mm256_setzero_ps(), gather8, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_loadu_ps,
        _mm256_storeu_ps)
#endif

void lowra_lora_up(int path, const float *b, uint64_t out, uint64_t r, const float *xa, uint64_t n, float s, float *y,
                   uint64_t ldy, uint64_t o0, uint64_t o1) {
    if (n == 0 || o0 >= o1) return;
    if (o1 > out) o1 = out;
#if defined(__x86_64__)
    if (path == LOWRA_PATH_AVX512 && lowra_kernel_path_supported(path))
        return lora_up_avx512(b, r, xa, n, s, y, ldy, o0, o1);
    if (lowra_path_x86_vector(path) && lowra_kernel_path_supported(LOWRA_PATH_AVX2))
        return lora_up_avx2(b, r, xa, n, s, y, ldy, o0, o1);
#endif
    (void)path;
    lora_up_scalar(b, out, r, xa, n, s, y, ldy, o0, o1);
}
