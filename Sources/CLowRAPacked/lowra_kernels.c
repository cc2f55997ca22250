#include "lowra_kernels_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

float lowra_dq_fraction[256];  // code / 255: the quotients the Swift side computes, looked up
static void fill_dq_fraction(void) {
    for (int c = 0; c < 256; c++) lowra_dq_fraction[c] = (float)c / 255.0f;
}
void lowra_kernels_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fill_dq_fraction);
}

// Row r's levels, zero-padded to 16 (so vector loads never read past the codebook).
static inline void row_levels(const lowra_packed_view *w, uint64_t r, float tab[16]) {
    unsigned k = 1u << w->bits[r];
    memset(tab, 0, 16 * sizeof(float));
    memcpy(tab, w->levels + w->level_offsets[r], k * sizeof(float));
}

// Code j of a row of `b`-bit codes.
static inline unsigned code_at(const uint8_t *row, uint64_t j, unsigned b) {
    uint64_t bit = j * b;
    return (row[bit / 8] >> (bit % 8)) & ((1u << b) - 1);
}

// ---------------------------------------------------------------------------------------------
// Scalar path: per block, the levels scaled once, then lookups.

static void gemm_scalar(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy, uint64_t r0,
                        uint64_t r1) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t i = r0; i < r1; i++) {
        const uint64_t r = lowra_row_at(w, i);
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r];
        float tab[16], sl[16], acc[LOWRA_MAX_COLUMNS] = {0};
        row_levels(w, r, tab);
        for (uint64_t blk = 0; blk < nb; blk++) {
            const float s = lowra_block_scale(w, r * nb + blk);
            for (unsigned i = 0; i < 16; i++) sl[i] = s * tab[i];
            const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
            float part[LOWRA_MAX_COLUMNS] = {0};
            for (uint64_t j = j0; j < j1; j++) {
                const float v = sl[code_at(row, j, b)];
                for (uint64_t c = 0; c < n; c++) part[c] += v * x[c * in + j];
            }
            for (uint64_t c = 0; c < n; c++) acc[c] += part[c];
        }
        for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = acc[c];
    }
}

static void dequantize_scalar(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t r = r0; r < r1; r++, out += in) {
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r];
        float tab[16];
        row_levels(w, r, tab);
        for (uint64_t j = 0; j < in; j++)
            out[j] = lowra_block_scale(w, r * nb + j / LOWRA_BLOCK) * tab[code_at(row, j, b)];
    }
}

#if defined(__x86_64__)

// ---------------------------------------------------------------------------------------------
// AVX-512: 16 codes per step. The 2b bytes holding them are broadcast to 32-bit lanes and each
// lane shifted right by its code's bit position; a permute looks the codes up in the row's
// (scaled) levels, held in one register.

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

AVX512 static inline __attribute__((always_inline)) __m512i codes16_avx512(const uint8_t *p, const unsigned b) {
    if (b == 4) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        const __m512i v =
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32((int)lo)), _mm256_set1_epi32((int)hi), 1);
        const __m512i sh = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        return _mm512_and_si512(_mm512_srlv_epi32(v, sh), _mm512_set1_epi32(15));
    } else if (b == 2) {
        uint32_t v;
        memcpy(&v, p, 4);
        const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)v), sh), _mm512_set1_epi32(3));
    } else {
        uint16_t v;
        memcpy(&v, p, 2);
        const __m512i sh = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)v), sh), _mm512_set1_epi32(1));
    }
}

AVX512 static inline __attribute__((always_inline)) void rows_avx512(const lowra_packed_view *w, const float *x,
                                                                       const uint64_t n, float *y, uint64_t ldy,
                                                                       uint64_t r, const unsigned b) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    const uint8_t *row = w->codes + w->row_offsets[r];
    float tab[16];
    row_levels(w, r, tab);
    const __m512 table = _mm512_loadu_ps(tab);
    // Two sets of accumulators, alternating by 16 inputs, halve the fused multiply-add chains.
    __m512 acc[LOWRA_MAX_COLUMNS], acc2[LOWRA_MAX_COLUMNS];
    float tail[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) {
        acc[c] = acc2[c] = _mm512_setzero_ps();
        tail[c] = 0;
    }
    for (uint64_t blk = 0; blk < nb; blk++) {
        const float s = lowra_block_scale(w, r * nb + blk);
        const __m512 t = _mm512_mul_ps(table, _mm512_set1_ps(s));
        const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
        uint64_t j = j0;
        for (; j + 32 <= j1; j += 32) {
            const __m512 v = _mm512_permutexvar_ps(codes16_avx512(row + j * b / 8, b), t);
            const __m512 v2 = _mm512_permutexvar_ps(codes16_avx512(row + (j + 16) * b / 8, b), t);
            for (uint64_t c = 0; c < n; c++) {
                acc[c] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x + c * in + j), acc[c]);
                acc2[c] = _mm512_fmadd_ps(v2, _mm512_loadu_ps(x + c * in + j + 16), acc2[c]);
            }
        }
        for (; j + 16 <= j1; j += 16) {
            const __m512 v = _mm512_permutexvar_ps(codes16_avx512(row + j * b / 8, b), t);
            for (uint64_t c = 0; c < n; c++) acc[c] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x + c * in + j), acc[c]);
        }
        for (; j < j1; j++) {
            const float v = s * tab[code_at(row, j, b)];
            for (uint64_t c = 0; c < n; c++) tail[c] += v * x[c * in + j];
        }
    }
    for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[c], acc2[c])) + tail[c];
}

// One instantiation per (columns, width): the compiler keeps the accumulators in registers.
#define DISPATCH_COLUMNS(FN)                                                                            \
    switch (n) {                                                                                        \
    case 1: LOWRA_ROWS_BY_WIDTH(1, FN) break;                                                                        \
    case 2: LOWRA_ROWS_BY_WIDTH(2, FN) break;                                                                        \
    case 3: LOWRA_ROWS_BY_WIDTH(3, FN) break;                                                                        \
    case 4: LOWRA_ROWS_BY_WIDTH(4, FN) break;                                                                        \
    case 5: LOWRA_ROWS_BY_WIDTH(5, FN) break;                                                                        \
    case 6: LOWRA_ROWS_BY_WIDTH(6, FN) break;                                                                        \
    case 7: LOWRA_ROWS_BY_WIDTH(7, FN) break;                                                                        \
    default: LOWRA_ROWS_BY_WIDTH(8, FN) break;                                                                       \
    }

AVX512 static void dequantize_avx512(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t r = r0; r < r1; r++, out += in) {
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r];
        float tab[16];
        row_levels(w, r, tab);
        const __m512 table = _mm512_loadu_ps(tab);
        for (uint64_t blk = 0; blk < nb; blk++) {
            const float s = lowra_block_scale(w, r * nb + blk);
            const __m512 t = _mm512_mul_ps(table, _mm512_set1_ps(s));
            const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
            uint64_t j = j0;
            for (; j + 16 <= j1; j += 16)
                _mm512_storeu_ps(out + j, _mm512_permutexvar_ps(codes16_avx512(row + j * b / 8, b), t));
            for (; j < j1; j++) out[j] = s * tab[code_at(row, j, b)];
        }
    }
}

AVX512 static void gemm_avx512(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                               uint64_t r0, uint64_t r1) {
    DISPATCH_COLUMNS(rows_avx512)
}

// ---------------------------------------------------------------------------------------------
// AVX2: 8 codes per step, the same unpacking on 8 lanes.

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline __attribute__((always_inline)) __m256i codes8_avx2(const uint8_t *p, const unsigned b) {
    uint32_t v = 0;
    memcpy(&v, p, b);  // 8 codes of b bits: b bytes
    const __m256i sh = b == 4   ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                       : b == 2 ? _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)
                                : _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)v), sh), _mm256_set1_epi32((1 << b) - 1));
}

// The (scaled) levels of 8 codes: the 16 levels of a 4-bit row sit in two registers, the code's
// top bit choosing between the two permutes.
AVX2 static inline __attribute__((always_inline)) __m256 lookup8_avx2(const uint8_t *p, const unsigned b,
                                                                       const __m256 tlo, const __m256 thi) {
    const __m256i idx = codes8_avx2(p, b);
    const __m256 v = _mm256_permutevar8x32_ps(tlo, idx);
    if (b != 4) return v;
    const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // sign bit = code bit 3
    return _mm256_blendv_ps(v, _mm256_permutevar8x32_ps(thi, idx), upper);
}

AVX2 static inline __attribute__((always_inline)) void rows_avx2(const lowra_packed_view *w, const float *x,
                                                                   const uint64_t n, float *y, uint64_t ldy, uint64_t r,
                                                                   const unsigned b) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    const uint8_t *row = w->codes + w->row_offsets[r];
    float tab[16];
    row_levels(w, r, tab);
    const __m256 lo = _mm256_loadu_ps(tab), hi = _mm256_loadu_ps(tab + 8);
    __m256 acc[LOWRA_MAX_COLUMNS], acc2[LOWRA_MAX_COLUMNS];
    float tail[LOWRA_MAX_COLUMNS];
    for (uint64_t c = 0; c < n; c++) {
        acc[c] = acc2[c] = _mm256_setzero_ps();
        tail[c] = 0;
    }
    for (uint64_t blk = 0; blk < nb; blk++) {
        const float s = lowra_block_scale(w, r * nb + blk);
        const __m256 sv = _mm256_set1_ps(s);
        const __m256 tlo = _mm256_mul_ps(lo, sv), thi = _mm256_mul_ps(hi, sv);
        const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
        uint64_t j = j0;
        for (; j + 16 <= j1; j += 16) {
            const __m256 v = lookup8_avx2(row + j * b / 8, b, tlo, thi);
            const __m256 v2 = lookup8_avx2(row + (j + 8) * b / 8, b, tlo, thi);
            for (uint64_t c = 0; c < n; c++) {
                acc[c] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + c * in + j), acc[c]);
                acc2[c] = _mm256_fmadd_ps(v2, _mm256_loadu_ps(x + c * in + j + 8), acc2[c]);
            }
        }
        for (; j + 8 <= j1; j += 8) {
            const __m256 v = lookup8_avx2(row + j * b / 8, b, tlo, thi);
            for (uint64_t c = 0; c < n; c++) acc[c] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + c * in + j), acc[c]);
        }
        for (; j < j1; j++) {
            const float v = s * tab[code_at(row, j, b)];
            for (uint64_t c = 0; c < n; c++) tail[c] += v * x[c * in + j];
        }
    }
    for (uint64_t c = 0; c < n; c++) y[c * ldy + r] = lowra_hsum8(_mm256_add_ps(acc[c], acc2[c])) + tail[c];
}

AVX2 static void dequantize_avx2(const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out) {
    const uint64_t in = w->in, nb = lowra_blocks_per_row(in);
    for (uint64_t r = r0; r < r1; r++, out += in) {
        const unsigned b = w->bits[r];
        const uint8_t *row = w->codes + w->row_offsets[r];
        float tab[16];
        row_levels(w, r, tab);
        const __m256 lo = _mm256_loadu_ps(tab), hi = _mm256_loadu_ps(tab + 8);
        for (uint64_t blk = 0; blk < nb; blk++) {
            const float s = lowra_block_scale(w, r * nb + blk);
            const __m256 sv = _mm256_set1_ps(s);
            const __m256 tlo = _mm256_mul_ps(lo, sv), thi = _mm256_mul_ps(hi, sv);
            const uint64_t j0 = blk * LOWRA_BLOCK, j1 = j0 + LOWRA_BLOCK < in ? j0 + LOWRA_BLOCK : in;
            uint64_t j = j0;
            for (; j + 8 <= j1; j += 8) _mm256_storeu_ps(out + j, lookup8_avx2(row + j * b / 8, b, tlo, thi));
            for (; j < j1; j++) out[j] = s * tab[code_at(row, j, b)];
        }
    }
}

AVX2 static void gemm_avx2(const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy, uint64_t r0,
                           uint64_t r1) {
    DISPATCH_COLUMNS(rows_avx2)
}

#endif

// ---------------------------------------------------------------------------------------------
// The table.

typedef void (*gemm_fn)(const lowra_packed_view *, const float *, uint64_t, float *, uint64_t, uint64_t, uint64_t);

static gemm_fn kernel(int path) {
#if defined(__x86_64__)
    if (path == LOWRA_PATH_AVX512) return gemm_avx512;
    if (path == LOWRA_PATH_AVX2) return gemm_avx2;
#endif
    (void)path;
    return gemm_scalar;
}

static int cpu_supports(int path) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (path == LOWRA_PATH_AVX2) return avx2;
    if (path == LOWRA_PATH_AVX512)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
#endif
    return path == LOWRA_PATH_SCALAR;
}

int lowra_cpu_has_vnni(void) {
#if defined(__x86_64__)
    static int known = -1;
    if (known < 0) known = lowra_kernel_path_supported(LOWRA_PATH_AVX512) && __builtin_cpu_supports("avx512vnni");
    return known;
#else
    return 0;
#endif
}

static int cpu_has_vbmi(void) {
#if defined(__x86_64__)
    return lowra_cpu_has_vnni() && __builtin_cpu_supports("avx512vbmi");
#else
    return 0;
#endif
}

static int vbmi_enabled = -1;  // -1: not yet decided
int lowra_kernel_vbmi(void) {
    if (vbmi_enabled < 0) {
        const char *env = getenv("LOWRA_VBMI");
        vbmi_enabled = cpu_has_vbmi() && !(env && strcmp(env, "0") == 0);
    }
    return vbmi_enabled;
}

void lowra_kernel_set_vbmi(int enabled) { vbmi_enabled = enabled && cpu_has_vbmi(); }

const char *lowra_kernel_variant_name(int path) {
    if (path != LOWRA_PATH_AVX512 || !lowra_kernel_path_supported(path)) return lowra_kernel_path_name(path);
    if (!lowra_cpu_has_vnni()) return "avx512 (integer kernels: avx2)";
    if (!lowra_kernel_vbmi()) return "avx512 vnni";
    return lowra_tiled_supported(path) ? "avx512 vnni vbmi tiled" : "avx512 vnni vbmi";
}

int lowra_kernel_path_supported(int path) {
    static int known[3] = {-1, -1, -1};  // racing first calls compute the same answer
    if (path < LOWRA_PATH_SCALAR || path > LOWRA_PATH_AVX512) return 0;
    if (known[path] < 0) known[path] = cpu_supports(path);
    return known[path];
}

const char *lowra_kernel_path_name(int path) {
    return path == LOWRA_PATH_AVX512 ? "avx512" : path == LOWRA_PATH_AVX2 ? "avx2" : "scalar";
}

int lowra_kernel_best_path(void) {
    int best = LOWRA_PATH_SCALAR;
    for (int p = LOWRA_PATH_AVX512; p > LOWRA_PATH_SCALAR; p--) {
        if (lowra_kernel_path_supported(p)) {
            best = p;
            break;
        }
    }
    const char *forced = getenv("LOWRA_KERNEL");
    if (forced) {
        for (int p = LOWRA_PATH_SCALAR; p < best; p++) {
            if (strcmp(forced, lowra_kernel_path_name(p)) == 0) return p;
        }
    }
    return best;
}

void lowra_packed_gemm(int path, const lowra_packed_view *w, const float *x, uint64_t n, float *y, uint64_t ldy,
                       uint64_t r0, uint64_t r1) {
    lowra_kernels_init();
    if (n == 0 || r0 >= r1) return;
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
    while (n > LOWRA_MAX_COLUMNS) {  // more columns: in groups of the most a kernel takes
        kernel(path)(w, x, LOWRA_MAX_COLUMNS, y, ldy, r0, r1);
        x += LOWRA_MAX_COLUMNS * w->in;
        y += LOWRA_MAX_COLUMNS * ldy;
        n -= LOWRA_MAX_COLUMNS;
    }
    kernel(path)(w, x, n, y, ldy, r0, r1);
}

void lowra_packed_dequantize(int path, const lowra_packed_view *w, uint64_t r0, uint64_t r1, float *out) {
    lowra_kernels_init();
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
#if defined(__x86_64__)
    if (path == LOWRA_PATH_AVX512) return dequantize_avx512(w, r0, r1, out);
    if (path == LOWRA_PATH_AVX2) return dequantize_avx2(w, r0, r1, out);
#endif
    dequantize_scalar(w, r0, r1, out);
}
