// Multiplying stored (unquantized) matrices in their file's encoding — the head and embedding of
// a quantized model, every layer of an unquantized one — without converting them to fp32 first.
// Same paths as the packed kernels (lowra_kernels.h).
#include "lowra_kernels_internal.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8, T_BF16 = 30 };

int lowra_stored_gemm_supports(unsigned t) {
    return t == T_F32 || t == T_F16 || t == T_Q4_0 || t == T_Q4_1 || t == T_Q8_0 || t == T_BF16;
}

static inline uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline float bf16_to_float(uint16_t v) {
    const uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// Elements j0 ..< j0 + count (count <= 32, within one 32-block for the block types) as fp32.
static void decode(unsigned t, const uint8_t *row, uint64_t j0, uint64_t count, float *out) {
    switch (t) {
    case T_F32: memcpy(out, row + 4 * j0, 4 * count); return;
    case T_F16: for (uint64_t i = 0; i < count; i++) out[i] = lowra_half_to_float(load_u16(row + 2 * (j0 + i))); return;
    case T_BF16: for (uint64_t i = 0; i < count; i++) out[i] = bf16_to_float(load_u16(row + 2 * (j0 + i))); return;
    default: break;
    }
    const uint64_t bytes = t == T_Q8_0 ? 34 : t == T_Q4_1 ? 20 : 18;
    const uint8_t *p = row + (j0 / 32) * bytes;
    const float d = lowra_half_to_float(load_u16(p));
    if (t == T_Q8_0) {
        for (uint64_t i = 0; i < 32; i++) out[i] = d * (float)(int8_t)p[2 + i];
        return;
    }
    const float m = t == T_Q4_1 ? lowra_half_to_float(load_u16(p + 2)) : 0;
    const uint8_t *qs = p + (t == T_Q4_1 ? 4 : 2);
    const int offset = t == T_Q4_0 ? 8 : 0;
    for (uint64_t i = 0; i < 16; i++) {
        out[i] = d * (float)((qs[i] & 15) - offset) + m;
        out[i + 16] = d * (float)((qs[i] >> 4) - offset) + m;
    }
}

static void stored_scalar(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x, uint64_t n,
                          float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    float buf[32];
    for (uint64_t r = r0; r < r1; r++) {
        const uint8_t *row = rows + r * row_bytes;
        float acc[LOWRA_MAX_COLUMNS] = {0};
        for (uint64_t j0 = 0; j0 < in; j0 += 32) {
            const uint64_t count = in - j0 < 32 ? in - j0 : 32;
            decode(t, row, j0, count, buf);
            for (uint64_t c = 0; c < n; c++) {
                float part = 0;
                for (uint64_t i = 0; i < count; i++) part += buf[i] * x[c * in + j0 + i];
                acc[c] += part;
            }
        }
        for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = acc[c];
    }
}

#if defined(__x86_64__)

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

// 16 values of a float-like row starting at element j.
AVX512 INLINE __m512 load16_avx512(unsigned t, const uint8_t *row, uint64_t j) {
    if (t == T_F32) return _mm512_loadu_ps((const float *)(row + 4 * j));
    const __m256i h = _mm256_loadu_si256((const __m256i *)(row + 2 * j));
    if (t == T_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 INLINE void row_avx512(unsigned t, const uint8_t *row, uint64_t in, const float *x, const uint64_t n, float *y,
                              uint64_t ldy, uint64_t r) {
    __m512 acc[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    uint64_t j = 0;
    if (t == T_F32 || t == T_F16 || t == T_BF16) {
        for (; j + 16 <= in; j += 16) {
            const __m512 w = load16_avx512(t, row, j);
            for (uint64_t c = 0; c < n; c++) acc[c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + c * in + j), acc[c]);
        }
    } else {
        const uint64_t bytes = t == T_Q8_0 ? 34 : t == T_Q4_1 ? 20 : 18;
        for (; j + 32 <= in; j += 32) {
            const uint8_t *p = row + (j / 32) * bytes;
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(p)));
            const __m512 m = _mm512_set1_ps(t == T_Q4_1 ? _cvtsh_ss(load_u16(p + 2)) : 0);  // Q4_1's block minimum
            __m512 lo, hi;
            if (t == T_Q8_0) {
                lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2))));
                hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18))));
            } else {
                const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + (t == T_Q4_1 ? 4 : 2))));
                const __m512i k = _mm512_set1_epi32(t == T_Q4_0 ? 8 : 0);
                lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(15)), k));
                hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(v, 4), k));
            }
            for (uint64_t c = 0; c < n; c++) {
                const __m512 xl = _mm512_loadu_ps(x + c * in + j), xh = _mm512_loadu_ps(x + c * in + j + 16);
                acc[c] = _mm512_fmadd_ps(_mm512_fmadd_ps(lo, xl, _mm512_mul_ps(hi, xh)), d, acc[c]);
                if (t == T_Q4_1) acc[c] = _mm512_fmadd_ps(_mm512_add_ps(xl, xh), m, acc[c]);
            }
        }
    }
    float buf[32];
    for (uint64_t c = 0; c < n; c++) {
        float s = _mm512_reduce_add_ps(acc[c]);
        for (uint64_t j1 = j; j1 < in; j1 += 32) {  // the tail of a float-like row (ggml rows have none)
            const uint64_t count = in - j1 < 32 ? in - j1 : 32;
            decode(t, row, j1, count, buf);
            for (uint64_t i = 0; i < count; i++) s += buf[i] * x[c * in + j1 + i];
        }
        y[c * ldy + r] = s;
    }
}

AVX2 INLINE __m256 load8_avx2(unsigned t, const uint8_t *row, uint64_t j) {
    if (t == T_F32) return _mm256_loadu_ps((const float *)(row + 4 * j));
    const __m128i h = _mm_loadu_si128((const __m128i *)(row + 2 * j));
    if (t == T_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 INLINE void row_avx2(unsigned t, const uint8_t *row, uint64_t in, const float *x, const uint64_t n, float *y,
                          uint64_t ldy, uint64_t r) {
    __m256 acc[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) acc[c] = _mm256_setzero_ps();
    uint64_t j = 0;
    if (t == T_F32 || t == T_F16 || t == T_BF16) {
        for (; j + 8 <= in; j += 8) {
            const __m256 w = load8_avx2(t, row, j);
            for (uint64_t c = 0; c < n; c++) acc[c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + c * in + j), acc[c]);
        }
    } else {
        const uint64_t bytes = t == T_Q8_0 ? 34 : t == T_Q4_1 ? 20 : 18;
        for (; j + 32 <= in; j += 32) {
            const uint8_t *p = row + (j / 32) * bytes;
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(load_u16(p)));
            const __m256 m = _mm256_set1_ps(t == T_Q4_1 ? _cvtsh_ss(load_u16(p + 2)) : 0);  // Q4_1's block minimum
            __m256 q[4];  // elements 0-7, 8-15, 16-23, 24-31
            if (t == T_Q8_0) {
                for (int k = 0; k < 4; k++) {
                    q[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + 8 * k))));
                }
            } else {
                const uint8_t *qs = p + (t == T_Q4_1 ? 4 : 2);
                const __m256i k8 = _mm256_set1_epi32(t == T_Q4_0 ? 8 : 0), m15 = _mm256_set1_epi32(15);
                for (int k = 0; k < 2; k++) {
                    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8 * k)));
                    q[k] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v, m15), k8));
                    q[k + 2] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v, 4), k8));
                }
            }
            for (uint64_t c = 0; c < n; c++) {
                const float *xc = x + c * in + j;
                const __m256 x0 = _mm256_loadu_ps(xc), x1 = _mm256_loadu_ps(xc + 8);
                const __m256 x2 = _mm256_loadu_ps(xc + 16), x3 = _mm256_loadu_ps(xc + 24);
                __m256 p0 = _mm256_fmadd_ps(q[0], x0, _mm256_mul_ps(q[1], x1));
                p0 = _mm256_fmadd_ps(q[2], x2, p0);
                p0 = _mm256_fmadd_ps(q[3], x3, p0);
                acc[c] = _mm256_fmadd_ps(p0, d, acc[c]);
                if (t == T_Q4_1) {
                    const __m256 sx = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
                    acc[c] = _mm256_fmadd_ps(sx, m, acc[c]);
                }
            }
        }
    }
    float buf[32];
    for (uint64_t c = 0; c < n; c++) {
        float s = lowra_hsum8(acc[c]);
        for (uint64_t j1 = j; j1 < in; j1 += 32) {
            const uint64_t count = in - j1 < 32 ? in - j1 : 32;
            decode(t, row, j1, count, buf);
            for (uint64_t i = 0; i < count; i++) s += buf[i] * x[c * in + j1 + i];
        }
        y[c * ldy + r] = s;
    }
}

// One instantiation per (columns, type).
#define TYPES(FN, N)                                                                                    \
    for (uint64_t r = r0; r < r1; r++) {                                                                \
        const uint8_t *row = rows + r * row_bytes;                                                      \
        switch (t) {                                                                                    \
        case T_F32: FN(T_F32, row, in, x, N, y, ldy, r); break;                                         \
        case T_F16: FN(T_F16, row, in, x, N, y, ldy, r); break;                                         \
        case T_BF16: FN(T_BF16, row, in, x, N, y, ldy, r); break;                                       \
        case T_Q8_0: FN(T_Q8_0, row, in, x, N, y, ldy, r); break;                                       \
        case T_Q4_0: FN(T_Q4_0, row, in, x, N, y, ldy, r); break;                                       \
        default: FN(T_Q4_1, row, in, x, N, y, ldy, r); break;                                           \
        }                                                                                               \
    }
#define COLUMNS(FN)                                                                                     \
    switch (n) {                                                                                        \
    case 1: TYPES(FN, 1) break;                                                                         \
    case 2: TYPES(FN, 2) break;                                                                         \
    case 3: TYPES(FN, 3) break;                                                                         \
    case 4: TYPES(FN, 4) break;                                                                         \
    case 5: TYPES(FN, 5) break;                                                                         \
    case 6: TYPES(FN, 6) break;                                                                         \
    case 7: TYPES(FN, 7) break;                                                                         \
    default: TYPES(FN, 8) break;                                                                        \
    }

AVX512 static void stored_avx512(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                                 uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    COLUMNS(row_avx512)
}

AVX2 static void stored_avx2(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                             uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    COLUMNS(row_avx2)
}

#endif

void lowra_stored_gemm(int path, unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                       uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1) {
    if (n == 0 || r0 >= r1 || !lowra_stored_gemm_supports(t)) return;
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
    while (n > 0) {
        const uint64_t k = n < LOWRA_MAX_COLUMNS ? n : LOWRA_MAX_COLUMNS;
#if defined(__x86_64__)
        if (path == LOWRA_PATH_AVX512) stored_avx512(t, rows, row_bytes, in, x, k, y, ldy, r0, r1);
        else if (path == LOWRA_PATH_AVX2) stored_avx2(t, rows, row_bytes, in, x, k, y, ldy, r0, r1);
        else
#endif
            stored_scalar(t, rows, row_bytes, in, x, k, y, ldy, r0, r1);
        x += k * in;
        y += k * ldy;
        n -= k;
    }
}

#if defined(__x86_64__)
// Q8_0 rows to fp32, 32 values per block: d * q, as decode() computes them.
AVX512 static void q8_0_rows_avx512(const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0, uint64_t r1,
                                    float *out) {
    for (uint64_t r = r0; r < r1; r++) {
        const uint8_t *row = rows + r * row_bytes;
        for (uint64_t j = 0; j < in; j += 32, out += 32) {
            const uint8_t *p = row + (j / 32) * 34;
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(p)));
            const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2))));
            const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18))));
            _mm512_storeu_ps(out, _mm512_mul_ps(d, lo));
            _mm512_storeu_ps(out + 16, _mm512_mul_ps(d, hi));
        }
    }
}
#endif

void lowra_stored_dequantize(int path, unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0,
                             uint64_t r1, float *out) {
    if (!lowra_stored_gemm_supports(t)) return;
#if defined(__x86_64__)
    if (t == T_Q8_0 && path == LOWRA_PATH_AVX512 && lowra_kernel_path_supported(path))
        return q8_0_rows_avx512(rows, row_bytes, in, r0, r1, out);
#endif
    (void)path;
    for (uint64_t r = r0; r < r1; r++, out += in) {
        for (uint64_t j = 0; j < in; j += 32) decode(t, rows + r * row_bytes, j, in - j < 32 ? in - j : 32, out + j);
    }
}
