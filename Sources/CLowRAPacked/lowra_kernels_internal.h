// Helpers the kernel files share (not part of the public header).
#ifndef LOWRA_KERNELS_INTERNAL_H
#define LOWRA_KERNELS_INTERNAL_H

#include "lowra_kernels.h"

#include <string.h>

// GCC ignores the STDC FP_CONTRACT pragma (and contracts by default in GNU C): functions whose
// results must not depend on contraction are compiled without it there too.
#if defined(__GNUC__) && !defined(__clang__)
#define LOWRA_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define LOWRA_NO_CONTRACT
#endif

#if defined(__x86_64__)
#include <immintrin.h>

/// The sum of a register's 8 lanes (the AVX2 kernels' final reduction).
__attribute__((target("avx2"))) static inline float lowra_hsum8(__m256 a) {
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 h = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}
#endif

/// The row a product visits at position i (lowra_packed_view.order).
static inline uint64_t lowra_row_at(const lowra_packed_view *w, uint64_t i) {
    return w->order ? (uint64_t)w->order[i] : i;
}

/// FN(w, x, N, y, ldy, r, bits) for every row r0 <= r < r1 of packed weight w, with the row's
/// width a constant in each call: one instantiation of the kernel per (columns, width).
#define LOWRA_ROWS_BY_WIDTH(N, FN)                                                                      \
    for (uint64_t i = r0; i < r1; i++) {                                                                \
        const uint64_t r = lowra_row_at(w, i);                                                          \
        switch (w->bits[r]) {                                                                           \
        case 4: FN(w, x, N, y, ldy, r, 4); break;                                                       \
        case 2: FN(w, x, N, y, ldy, r, 2); break;                                                       \
        default: FN(w, x, N, y, ldy, r, 1); break;                                                      \
        }                                                                                               \
    }

/// code / 255 for every double-quantization code, filled by lowra_kernels_init.
extern float lowra_dq_fraction[256];
/// Fills the shared tables once (safe to call from any thread, any number of times).
void lowra_kernels_init(void);
/// Whether this CPU has AVX-512 VNNI (the integer kernels' fastest code).
int lowra_cpu_has_vnni(void);
/// Whether this arm64 CPU has the dot-product instructions (sdot: the NEON integer kernels' fastest code).
int lowra_cpu_has_dotprod(void);

// The scale of flattened block i, as the Swift side decodes it.
static inline float lowra_block_scale(const lowra_packed_view *w, uint64_t i) {
    return w->absmax ? w->absmax[i]
                     : lowra_dq_fraction[w->absmax_codes[i]] * w->absmax_scales[i / LOWRA_DQ_GROUP];
}

/// IEEE binary16 to fp32 (subnormals, infinities and NaNs included).
static inline float lowra_half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) {
        const float f = (float)mant * 5.9604644775390625e-8f;  // subnormal: mant * 2^-24
        return sign ? -f : f;
    }
    const uint32_t bits = exp == 31 ? sign | 0x7f800000u | (mant << 13) : sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/// Row r's levels, zero-padded to 16 (so vector loads never read past the codebook).
static inline void lowra_row_levels(const lowra_packed_view *w, uint64_t r, float tab[16]) {
    unsigned k = 1u << w->bits[r];
    memset(tab, 0, 16 * sizeof(float));
    memcpy(tab, w->levels + w->level_offsets[r], k * sizeof(float));
}

/// Code j of a row of `b`-bit codes.
static inline unsigned lowra_code_at(const uint8_t *row, uint64_t j, unsigned b) {
    uint64_t bit = j * b;
    return (row[bit / 8] >> (bit % 8)) & ((1u << b) - 1);
}

/// sums[c] += Σ_{j0 <= j < j1} s·tab[code j] · x[c][j] for columns c < n (x rows `in` apart): the
/// scalar reference's block, and the vector kernels' tail of a partial block.
static inline void lowra_lookup_dot(const uint8_t *row, unsigned b, uint64_t j0, uint64_t j1, float s,
                                    const float tab[16], const float *x, uint64_t in, uint64_t n, float *sums) {
    for (uint64_t j = j0; j < j1; j++) {
        const float v = s * tab[lowra_code_at(row, j, b)];
        for (uint64_t c = 0; c < n; c++) sums[c] += v * x[c * in + j];
    }
}

/// out[j] = s·tab[code j] for j0 <= j < j1.
static inline void lowra_lookup_span(const uint8_t *row, unsigned b, uint64_t j0, uint64_t j1, float s,
                                     const float tab[16], float *out) {
    for (uint64_t j = j0; j < j1; j++) out[j] = s * tab[lowra_code_at(row, j, b)];
}

/// FN instantiated once per (columns n, width): the compiler keeps the accumulators in registers.
#define LOWRA_DISPATCH_COLUMNS(FN)                                                                      \
    switch (n) {                                                                                        \
    case 1: LOWRA_ROWS_BY_WIDTH(1, FN) break;                                                           \
    case 2: LOWRA_ROWS_BY_WIDTH(2, FN) break;                                                           \
    case 3: LOWRA_ROWS_BY_WIDTH(3, FN) break;                                                           \
    case 4: LOWRA_ROWS_BY_WIDTH(4, FN) break;                                                           \
    case 5: LOWRA_ROWS_BY_WIDTH(5, FN) break;                                                           \
    case 6: LOWRA_ROWS_BY_WIDTH(6, FN) break;                                                           \
    case 7: LOWRA_ROWS_BY_WIDTH(7, FN) break;                                                           \
    default: LOWRA_ROWS_BY_WIDTH(8, FN) break;                                                          \
    }

// ---------------------------------------------------------------------------------------------
// The one table of kernels (lowra_kernel_table.c): an entry per instruction-set path, each the
// path's function for every kernel that has per-path code. A path without its own version of a
// kernel holds the scalar reference; a path the CPU lacks is the scalar table. The public entry
// points (lowra_kernels.h) check their arguments, split columns and look their kernel up here.

struct lowra_error_feedback_args;  // lowra_error_feedback_internal.h

typedef struct {
    /// Y = X Wᵀ in fp32 from packed codes, at most LOWRA_MAX_COLUMNS columns (lowra_kernels.c,
    /// arch/x86/packed_gemm_*.c).
    void (*packed_gemm)(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy, uint64_t r0,
                        uint64_t r1);
    void (*packed_dequantize)(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out);
    /// Y = X Wᵀ from int8 activations, at most LOWRA_MAX_COLUMNS columns (lowra_q8_kernels.c, arch/x86/q8_*.c).
    void (*packed_q8)(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy, uint64_t r0,
                      uint64_t r1);
    void (*q8_0_q8)(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y, uint64_t ldy,
                    uint64_t r0, uint64_t r1);
    /// ggml-typed rows (lowra_stored_kernels.c, arch/x86/stored_*.c): a gemm of at most
    /// LOWRA_MAX_COLUMNS columns, and Q8_0 rows to fp32.
    void (*stored_gemm)(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x, uint64_t n,
                        float *y, uint64_t ldy, uint64_t r0, uint64_t r1);
    void (*stored_q8_0_rows)(const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0, uint64_t r1,
                             float *out);
    /// One query head of f16-cache attention (lowra_attention.c, arch/x86/attention_avx2.c); the
    /// vector version takes head dimensions that are multiples of 8 (others: the scalar one).
    void (*attention_head)(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                           uint64_t stride, uint64_t d, float scale, float *scores, float *out);
    /// fp32 → f16 (NULL where the path has no conversion: the caller converts) and f16 → fp32.
    void (*to_halves)(const float *src, uint16_t *dst, uint64_t n);
    void (*to_floats)(const uint16_t *src, float *dst, uint64_t n);
    /// y[c][o] += s · B[o]·xa[c] for rows o0 ..< o1 (lowra_lora.c, arch/x86/lora_up_*.c).
    void (*lora_up)(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y, uint64_t ldy,
                    uint64_t o0, uint64_t o1);
    void (*swiglu)(const float *gate, const float *up, float *out, uint64_t n);
    void (*swiglu_backward)(const float *gate, const float *up, const float *dout, float *dgate, float *dup,
                            uint64_t n);
    /// lowra_softmax, lowra_sum_exp and lowra_exp_scaled (lowra_elementwise.c; exp_scaled takes the
    /// shift split into hi + lo floats).
    void (*softmax)(float *x, uint64_t n);
    double (*sum_exp)(const float *x, uint64_t n, float shift);
    void (*exp_scaled)(const float *x, uint64_t n, float hi, float lo, float scale, float *out);
    /// Rows r0 ..< r1 of lowra_error_feedback (lowra_error_feedback.c, arch/x86/error_feedback_*.c).
    void (*error_feedback)(const struct lowra_error_feedback_args *a, uint64_t r0, uint64_t r1);
} lowra_kernel_table;

/// The table of `path`, or of the scalar path when this CPU lacks `path`.
const lowra_kernel_table *lowra_kernels_for(int path);

// The scalar references, each in the file of its kernel.
void lowra_packed_gemm_scalar(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                              uint64_t r0, uint64_t r1);
void lowra_packed_dequantize_scalar(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out);
void lowra_packed_q8_scalar(const lowra_packed_view *w, const lowra_q8_activations *x, float *y, uint64_t ldy,
                            uint64_t r0, uint64_t r1);
void lowra_q8_0_q8_scalar(const uint8_t *rows, uint64_t row_bytes, const lowra_q8_activations *x, float *y,
                          uint64_t ldy, uint64_t r0, uint64_t r1);
void lowra_stored_gemm_scalar(unsigned t, const uint8_t *rows, uint64_t row_bytes, uint64_t in, const float *x,
                              uint64_t n, float *y, uint64_t ldy, uint64_t r0, uint64_t r1);
void lowra_stored_q8_0_rows_scalar(const uint8_t *rows, uint64_t row_bytes, uint64_t in, uint64_t r0, uint64_t r1,
                                   float *out);
void lowra_attention_head_scalar(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                                 uint64_t stride, uint64_t d, float scale, float *scores, float *out);
void lowra_to_floats_scalar(const uint16_t *src, float *dst, uint64_t n);
void lowra_lora_up_scalar(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y, uint64_t ldy,
                          uint64_t o0, uint64_t o1);
void lowra_swiglu_scalar(const float *gate, const float *up, float *out, uint64_t n);
void lowra_swiglu_backward_scalar(const float *gate, const float *up, const float *dout, float *dgate, float *dup,
                                  uint64_t n);
void lowra_softmax_scalar(float *x, uint64_t n);
double lowra_sum_exp_scalar(const float *x, uint64_t n, float shift);
void lowra_exp_scaled_scalar(const float *x, uint64_t n, float hi, float lo, float scale, float *out);

// The x86 paths' versions (arch/x86/).
void lowra_packed_gemm_avx512(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                              uint64_t r0, uint64_t r1);
void lowra_packed_dequantize_avx512(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out);
void lowra_packed_gemm_avx2(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                            uint64_t r0, uint64_t r1);
void lowra_packed_dequantize_avx2(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out);
void lowra_swiglu_avx2(const float *gate, const float *up, float *out, uint64_t n);
void lowra_swiglu_backward_avx2(const float *gate, const float *up, const float *dout, float *dgate, float *dup,
                                uint64_t n);
void lowra_softmax_avx2(float *x, uint64_t n);
double lowra_sum_exp_avx2(const float *x, uint64_t n, float shift);
void lowra_exp_scaled_avx2(const float *x, uint64_t n, float hi, float lo, float scale, float *out);
void lowra_attention_head_avx2(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                               uint64_t stride, uint64_t d, float scale, float *scores, float *out);
void lowra_to_halves_f16c(const float *src, uint16_t *dst, uint64_t n);
void lowra_to_floats_f16c(const uint16_t *src, float *dst, uint64_t n);
void lowra_lora_up_avx512(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y, uint64_t ldy,
                          uint64_t o0, uint64_t o1);
void lowra_lora_up_avx2(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y, uint64_t ldy,
                        uint64_t o0, uint64_t o1);

// The NEON path's versions (arch/arm/).
void lowra_packed_gemm_neon(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                            uint64_t r0, uint64_t r1);
void lowra_packed_dequantize_neon(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out);
// (its integer products are in lowra_q8_internal.h, its stored-matrix product in lowra_stored_internal.h)
void lowra_attention_head_neon(const float *q, const uint16_t *keys, const uint16_t *values, uint64_t tk,
                               uint64_t stride, uint64_t d, float scale, float *scores, float *out);
void lowra_to_halves_neon(const float *src, uint16_t *dst, uint64_t n);
void lowra_to_floats_neon(const uint16_t *src, float *dst, uint64_t n);
void lowra_lora_up_neon(const float *b, uint64_t r, const float *xa, uint64_t n, float s, float *y, uint64_t ldy,
                        uint64_t o0, uint64_t o1);


#endif
