// The fp32 kernels of packed weights (lowra_packed_gemm, lowra_packed_dequantize) for arm64 NEON:
// the primitives of lowra_packed_gemm_template.h; the scalar reference and the dispatch are in
// lowra_kernels.c. A vector is two registers (8 lanes), so 8 codes of b bits are b whole bytes, as
// on AVX2.
#if defined(__aarch64__)

#include "../../lowra_kernels_internal.h"

#include <arm_neon.h>
#include <string.h>

typedef struct {
    float32x4_t lo, hi;
} vec8_neon;

// A row's 16 (scaled) levels as 64 bytes, for byte-table lookups.
typedef uint8x16x4_t table_neon;

static inline __attribute__((always_inline)) table_neon table_load_neon(const float *tab) {
    return (table_neon){{vreinterpretq_u8_f32(vld1q_f32(tab)), vreinterpretq_u8_f32(vld1q_f32(tab + 4)),
                         vreinterpretq_u8_f32(vld1q_f32(tab + 8)), vreinterpretq_u8_f32(vld1q_f32(tab + 12))}};
}

static inline __attribute__((always_inline)) table_neon table_scale_neon(const table_neon t, const float s) {
    table_neon out;
    for (int i = 0; i < 4; i++) out.val[i] = vreinterpretq_u8_f32(vmulq_n_f32(vreinterpretq_f32_u8(t.val[i]), s));
    return out;
}

// Four codes (lanes of idx, each < 16) to their levels: byte 4·code + k of the table for byte k of a lane.
static inline __attribute__((always_inline)) float32x4_t lookup4_neon(const uint32x4_t idx, const table_neon t) {
    const uint32x4_t bytes = vaddq_u32(vmulq_n_u32(idx, 0x04040404u), vdupq_n_u32(0x03020100u));
    return vreinterpretq_f32_u8(vqtbl4q_u8(t, vreinterpretq_u8_u32(bytes)));
}

// The levels of the 8 codes of b bits in the b bytes at p.
static inline __attribute__((always_inline)) vec8_neon lookup8_neon(const uint8_t *p, const unsigned b,
                                                                    const table_neon t) {
    uint32_t v = 0;
    memcpy(&v, p, b);
    const int32_t s = (int32_t)b;
    const int32x4_t shift_lo = {0, -s, -2 * s, -3 * s}, shift_hi = {-4 * s, -5 * s, -6 * s, -7 * s};
    const uint32x4_t all = vdupq_n_u32(v), mask = vdupq_n_u32((1u << b) - 1);
    return (vec8_neon){lookup4_neon(vandq_u32(vshlq_u32(all, shift_lo), mask), t),
                       lookup4_neon(vandq_u32(vshlq_u32(all, shift_hi), mask), t)};
}

static inline __attribute__((always_inline)) vec8_neon vzero8(void) {
    return (vec8_neon){vdupq_n_f32(0), vdupq_n_f32(0)};
}
static inline __attribute__((always_inline)) vec8_neon vload8(const float *p) {
    return (vec8_neon){vld1q_f32(p), vld1q_f32(p + 4)};
}
static inline __attribute__((always_inline)) void vstore8(float *p, const vec8_neon v) {
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
}
static inline __attribute__((always_inline)) vec8_neon vadd8(const vec8_neon a, const vec8_neon b) {
    return (vec8_neon){vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)};
}
static inline __attribute__((always_inline)) vec8_neon vfma8(const vec8_neon a, const vec8_neon b,
                                                             const vec8_neon acc) {
    return (vec8_neon){vfmaq_f32(acc.lo, a.lo, b.lo), vfmaq_f32(acc.hi, a.hi, b.hi)};
}
static inline __attribute__((always_inline)) float vhsum8(const vec8_neon v) {
    return vaddvq_f32(vaddq_f32(v.lo, v.hi));
}

#define PATH neon
#define TARGET
#define VEC vec8_neon
#define VW 8
#define TABLE table_neon
#define TABLE_LOAD(tab) table_load_neon(tab)
#define TABLE_SCALE(t, s) table_scale_neon(t, s)
#define LOOKUP(p, b, t) lookup8_neon(p, b, t)
#define VZERO vzero8
#define VLOAD vload8
#define VSTORE vstore8
#define VADD vadd8
#define VFMA vfma8
#define VHSUM vhsum8
#include "../../lowra_packed_gemm_template.h"

#endif
