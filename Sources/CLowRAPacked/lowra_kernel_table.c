// The one table of kernels: for each instruction-set path, its function for every kernel with
// per-path code (lowra_kernels_internal.h says what each entry computes). Built once from what
// this CPU has; a path the CPU lacks gets the scalar table, and a path without its own version of
// a kernel the scalar reference.
#include "lowra_error_feedback_internal.h"
#include "lowra_kernels_internal.h"
#include "lowra_q8_internal.h"
#include "lowra_stored_internal.h"

#include <pthread.h>

static const lowra_kernel_table scalar_table = {
    .packed_gemm = lowra_packed_gemm_scalar,
    .packed_dequantize = lowra_packed_dequantize_scalar,
    .packed_q8 = lowra_packed_q8_scalar,
    .q8_0_q8 = lowra_q8_0_q8_scalar,
    .stored_gemm = lowra_stored_gemm_scalar,
    .stored_q8_0_rows = lowra_stored_q8_0_rows_scalar,
    .attention_head = lowra_attention_head_scalar,
    .to_halves = NULL,  // Swift converts (the same rounding)
    .to_floats = lowra_to_floats_scalar,
    .lora_up = lowra_lora_up_scalar,
    .swiglu = lowra_swiglu_scalar,
    .swiglu_backward = lowra_swiglu_backward_scalar,
    .softmax = lowra_softmax_scalar,
    .sum_exp = lowra_sum_exp_scalar,
    .exp_scaled = lowra_exp_scaled_scalar,
    .error_feedback = lowra_error_feedback_rows_scalar,
};

static lowra_kernel_table tables[LOWRA_PATH_COUNT];

static void build_tables(void) {
    for (int p = 0; p < LOWRA_PATH_COUNT; p++) tables[p] = scalar_table;
#if defined(__x86_64__)
    if (lowra_kernel_path_supported(LOWRA_PATH_AVX2)) {
        lowra_kernel_table *t = &tables[LOWRA_PATH_AVX2];
        t->packed_gemm = lowra_packed_gemm_avx2;
        t->packed_dequantize = lowra_packed_dequantize_avx2;
        t->packed_q8 = lowra_packed_q8_avx2;
        t->q8_0_q8 = lowra_q8_0_q8_avx2;
        t->stored_gemm = lowra_stored_gemm_avx2;
        t->attention_head = lowra_attention_head_avx2;
        t->to_halves = lowra_to_halves_f16c;
        t->to_floats = lowra_to_floats_f16c;
        t->lora_up = lowra_lora_up_avx2;
        t->swiglu = lowra_swiglu_avx2;
        t->swiglu_backward = lowra_swiglu_backward_avx2;
        t->softmax = lowra_softmax_avx2;
        t->sum_exp = lowra_sum_exp_avx2;
        t->exp_scaled = lowra_exp_scaled_avx2;
        t->error_feedback = lowra_error_feedback_rows_avx2;
    }
    if (lowra_kernel_path_supported(LOWRA_PATH_AVX512)) {
        lowra_kernel_table *t = &tables[LOWRA_PATH_AVX512];
        *t = tables[LOWRA_PATH_AVX2];  // AVX2's kernels where AVX-512 has no version of its own
        t->packed_gemm = lowra_packed_gemm_avx512;
        t->packed_dequantize = lowra_packed_dequantize_avx512;
        if (lowra_cpu_has_vnni()) {  // without VNNI the integer kernels stay AVX2's
            t->packed_q8 = lowra_packed_q8_avx512;
            t->q8_0_q8 = lowra_q8_0_q8_vnni;
        }
        t->stored_gemm = lowra_stored_gemm_avx512;
        t->stored_q8_0_rows = lowra_stored_q8_0_rows_avx512;
        t->lora_up = lowra_lora_up_avx512;
        t->error_feedback = lowra_error_feedback_rows_avx512;
    }
#endif
#if defined(__aarch64__)
    if (lowra_kernel_path_supported(LOWRA_PATH_NEON)) {
        lowra_kernel_table *t = &tables[LOWRA_PATH_NEON];
        t->packed_gemm = lowra_packed_gemm_neon;
        t->packed_dequantize = lowra_packed_dequantize_neon;
        t->packed_q8 = lowra_cpu_has_dotprod() ? lowra_packed_q8_sdot : lowra_packed_q8_neon;
        t->q8_0_q8 = lowra_cpu_has_dotprod() ? lowra_q8_0_q8_sdot : lowra_q8_0_q8_neon;
        t->stored_gemm = lowra_stored_gemm_neon;
        t->attention_head = lowra_attention_head_neon;
        t->to_halves = lowra_to_halves_neon;
        t->to_floats = lowra_to_floats_neon;
        t->lora_up = lowra_lora_up_neon;
    }
#endif
}

const lowra_kernel_table *lowra_kernels_for(int path) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_tables);
    if (!lowra_kernel_path_supported(path)) path = LOWRA_PATH_SCALAR;
    return &tables[path];
}
