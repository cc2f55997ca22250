// The elementwise kernels for x86-64 with AVX2 + FMA (AVX-512 machines run them too: 8 lanes suffice):
// SwiGLU and its gradient, a row's softmax and the exponentials of a row of logits; the scalar references, the exp
// they approximate and the dispatch are in lowra_elementwise.c.
#if defined(__x86_64__)

#include "../../lowra_kernels_internal.h"

#include <immintrin.h>
#include <math.h>

#define EXP_LO -87.3f
#define EXP_HI 88.3f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define P0 1.9875691500e-4f
#define P1 1.3981999507e-3f
#define P2 8.3334519073e-3f
#define P3 4.1665795894e-2f
#define P4 1.6666665459e-1f
#define P5 5.0000001201e-1f

__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) void lowra_swiglu_avx2(const float *gate, const float *up, float *out,
                                                          uint64_t n) {
    uint64_t i = 0;
    const __m256 one = _mm256_set1_ps(1), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp8(_mm256_sub_ps(zero, g));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    lowra_swiglu_scalar(gate + i, up + i, out + i, n - i);
}

__attribute__((target("avx2,fma"))) static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

__attribute__((target("avx2,fma"))) void lowra_softmax_avx2(float *x, uint64_t n) {
    if (n < 8) return lowra_softmax_scalar(x, n);
    __m256 mv = _mm256_loadu_ps(x);
    uint64_t i = 8;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    float m = hmax8(mv);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    const __m256 shift = _mm256_set1_ps(m);
    __m256 sv = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), shift));
        _mm256_storeu_ps(x + i, e);
        sv = _mm256_add_ps(sv, e);
    }
    float sum = lowra_hsum8(sv);
    for (; i < n; i++) sum += (x[i] = expf(x[i] - m));
    const __m256 inv = _mm256_set1_ps(1 / sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= 1 / sum;
}

__attribute__((target("avx2,fma"))) double lowra_sum_exp_avx2(const float *x, uint64_t n, float shift) {
    const __m256 s = _mm256_set1_ps(shift);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double v[4];
    _mm256_storeu_pd(v, _mm256_add_pd(lo, hi));
    return (v[0] + v[1]) + (v[2] + v[3]) + lowra_sum_exp_scalar(x + i, n - i, shift);
}

__attribute__((target("avx2,fma"))) void lowra_exp_scaled_avx2(const float *x, uint64_t n, float hi, float lo,
                                                               float scale, float *out) {
    const __m256 h = _mm256_set1_ps(hi), l = _mm256_set1_ps(lo), sc = _mm256_set1_ps(scale);
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), h), l));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(e, sc));
    }
    lowra_exp_scaled_scalar(x + i, n - i, hi, lo, scale, out + i);
}

__attribute__((target("avx2,fma"))) void lowra_swiglu_backward_avx2(const float *gate, const float *up,
                                                                    const float *dout, float *dgate, float *dup,
                                                                    uint64_t n) {
    uint64_t i = 0;
    const __m256 one = _mm256_set1_ps(1), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i), d = _mm256_loadu_ps(dout + i);
        const __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, g))));
        _mm256_storeu_ps(dup + i, _mm256_add_ps(_mm256_loadu_ps(dup + i), _mm256_mul_ps(d, _mm256_mul_ps(g, sig))));
        const __m256 slope = _mm256_add_ps(one, _mm256_mul_ps(g, _mm256_sub_ps(one, sig)));
        const __m256 dg = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(up + i)), sig), slope);
        _mm256_storeu_ps(dgate + i, _mm256_add_ps(_mm256_loadu_ps(dgate + i), dg));
    }
    lowra_swiglu_backward_scalar(gate + i, up + i, dout + i, dgate + i, dup + i, n - i);
}

#endif
