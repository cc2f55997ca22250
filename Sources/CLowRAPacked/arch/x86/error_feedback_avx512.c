// Error feedback's column sweep on AVX-512: 16 rows at a time (lowra_error_feedback_template.h), the
// lanes selected by masks.
#if defined(__x86_64__)

#include "../../lowra_error_feedback_internal.h"
#include "../../lowra_kernels_internal.h"

#include <immintrin.h>

#pragma STDC FP_CONTRACT OFF

#define PATH avx512
#define TARGET __attribute__((target("avx512f")))
#define LANES LOWRA_EF_ROWS  // 16 rows, one per lane
#define ALIGN 64
#define VEC __m512
#define IVEC __m512i
#define DVEC __m512d
#define MASK __mmask16
#define VLOAD _mm512_load_ps
#define VSTORE _mm512_store_ps
#define VZERO _mm512_setzero_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VDIV _mm512_div_ps
#define VSET1 _mm512_set1_ps
#define ISET1 _mm512_set1_epi32
#define IADD _mm512_add_epi32
#define IMUL _mm512_mullo_epi32
#define LANE_INDEX() _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define GATHER(base, index) _mm512_i32gather_ps((index), (base), 4)
#define POSITIVE(s) _mm512_cmp_ps_mask((s), _mm512_setzero_ps(), _CMP_GT_OQ)
#define DIV_WHERE(m, x, s) _mm512_maskz_div_ps((m), (x), (s))
#define COUNT_ABOVE(code, m, y, t) \
    _mm512_mask_add_epi32((code), _mm512_mask_cmp_ps_mask((m), (y), (t), _CMP_GT_OQ), (code), _mm512_set1_epi32(1))
#define CODES_WHERE(m, code) (code)  // COUNT_ABOVE counted only where m
#define MUL_WHERE(m, s, level) _mm512_maskz_mul_ps((m), (s), (level))
#define STORE_CODES(dst, code) _mm_storeu_si128((__m128i *)(dst), _mm512_cvtepi32_epi8(code))
#define DLOAD _mm512_loadu_pd
#define DSTORE _mm512_storeu_pd
#define DADD _mm512_add_pd
#define DMUL _mm512_mul_pd
#define WIDEN(v, half)                                                                                  \
    ((half) ? _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))       \
            : _mm512_cvtps_pd(_mm512_castps512_ps256(v)))

#include "../../lowra_error_feedback_template.h"

#endif
