// Error feedback's column sweep on AVX2: 8 rows at a time (lowra_error_feedback_template.h), the lanes
// selected by compare results (all ones or zero).
#if defined(__x86_64__)

#include "../../lowra_error_feedback_internal.h"
#include "../../lowra_kernels_internal.h"

#include <immintrin.h>

#pragma STDC FP_CONTRACT OFF

#define PATH avx2
#define TARGET __attribute__((target("avx2")))
#define LANES 8
#define ALIGN 32
#define VEC __m256
#define IVEC __m256i
#define DVEC __m256d
#define MASK __m256
#define VLOAD _mm256_load_ps
#define VSTORE _mm256_store_ps
#define VZERO _mm256_setzero_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VDIV _mm256_div_ps
#define VSET1 _mm256_set1_ps
#define ISET1 _mm256_set1_epi32
#define IADD _mm256_add_epi32
#define IMUL _mm256_mullo_epi32
#define LANE_INDEX() _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define GATHER(base, index) _mm256_i32gather_ps((base), (index), 4)
#define POSITIVE(s) _mm256_cmp_ps((s), _mm256_setzero_ps(), _CMP_GT_OQ)
#define DIV_WHERE(m, x, s) ((void)(m), _mm256_div_ps((x), (s)))  // the other lanes' codes are masked
// A true compare is -1 in every lane: subtracting it counts; CODES_WHERE drops the lanes outside m.
#define COUNT_ABOVE(code, m, y, t) \
    ((void)(m), _mm256_sub_epi32((code), _mm256_castps_si256(_mm256_cmp_ps((y), (t), _CMP_GT_OQ))))
#define CODES_WHERE(m, code) _mm256_and_si256((code), _mm256_castps_si256(m))
#define MUL_WHERE(m, s, level) _mm256_and_ps((m), _mm256_mul_ps((s), (level)))
#define STORE_CODES(dst, code) store_codes8((dst), (code))
#define DLOAD _mm256_loadu_pd
#define DSTORE _mm256_storeu_pd
#define DADD _mm256_add_pd
#define DMUL _mm256_mul_pd
#define WIDEN(v, half) \
    ((half) ? _mm256_cvtps_pd(_mm256_extractf128_ps((v), 1)) : _mm256_cvtps_pd(_mm256_castps256_ps128(v)))

TARGET static inline void store_codes8(uint8_t dst[LANES], __m256i code) {
    int32_t code32[LANES] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)code32, code);
    for (unsigned i = 0; i < LANES; i++) dst[i] = (uint8_t)code32[i];
}

#include "../../lowra_error_feedback_template.h"

#endif
