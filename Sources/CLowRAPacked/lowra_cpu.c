// Which instruction-set path this CPU runs, and the switches that force another: CPU detection,
// the environment overrides (LOWRA_KERNEL=scalar|avx2, LOWRA_VBMI=0, LOWRA_TILES=0) and the
// paths' names, in one place. Every kernel file asks here; nothing here calls a kernel.
#include "lowra_kernels_internal.h"

#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

static int cpu_supports(int path) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (path == LOWRA_PATH_AVX2) return avx2;
    if (path == LOWRA_PATH_AVX512)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
#endif
#if defined(__aarch64__)
    if (path == LOWRA_PATH_NEON) return 1;  // Advanced SIMD is part of every arm64 CPU
#endif
    return path == LOWRA_PATH_SCALAR;
}

int lowra_cpu_has_dotprod(void) {
#if defined(__aarch64__) && defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__aarch64__) && defined(__APPLE__)
    return 1;  // every Apple arm64 CPU (A11 and later, M1 and later) has the dot-product instructions
#else
    return 0;
#endif
}

int lowra_kernel_path_supported(int path) {
    static int known[LOWRA_PATH_COUNT] = {-1, -1, -1, -1};  // racing first calls compute the same answer
    if (path < LOWRA_PATH_SCALAR || path >= LOWRA_PATH_COUNT) return 0;
    if (known[path] < 0) known[path] = cpu_supports(path);
    return known[path];
}

const char *lowra_kernel_path_name(int path) {
    switch (path) {
    case LOWRA_PATH_AVX512: return "avx512";
    case LOWRA_PATH_AVX2: return "avx2";
    case LOWRA_PATH_NEON: return "neon";
    default: return "scalar";
    }
}

int lowra_kernel_best_path(void) {
    // Fastest first; a path this CPU lacks is skipped.
    static const int order[] = {LOWRA_PATH_AVX512, LOWRA_PATH_NEON, LOWRA_PATH_AVX2};
    int best = LOWRA_PATH_SCALAR;
    for (unsigned i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (lowra_kernel_path_supported(order[i])) {
            best = order[i];
            break;
        }
    }
    const char *forced = getenv("LOWRA_KERNEL");
    if (forced) {
        for (int p = LOWRA_PATH_SCALAR; p < LOWRA_PATH_COUNT; p++) {
            if (p != best && lowra_kernel_path_supported(p) && strcmp(forced, lowra_kernel_path_name(p)) == 0 &&
                (p == LOWRA_PATH_SCALAR || p < best))
                return p;
        }
    }
    return best;
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

static int tiles_off = -1;  // -1: not yet decided; LOWRA_TILES=0 keeps the row kernels

void lowra_tiled_disable(void) { tiles_off = 1; }

static int tiles_on(void) {
    if (tiles_off < 0) {
        const char *env = getenv("LOWRA_TILES");
        tiles_off = env && strcmp(env, "0") == 0;
    }
    return !tiles_off;
}

int lowra_tiled_supported(int path) {
#if defined(__x86_64__)
    return tiles_on() && (path == LOWRA_PATH_AVX2 || path == LOWRA_PATH_AVX512) && lowra_kernel_path_supported(path);
#elif defined(__aarch64__)
    return tiles_on() && path == LOWRA_PATH_NEON && lowra_kernel_path_supported(path);
#else
    (void)path;
    return 0;
#endif
}

int lowra_tile_layout(int path) {
    return path == LOWRA_PATH_AVX512 && lowra_kernel_path_supported(path) && lowra_kernel_vbmi() ? LOWRA_TILE_MULTISHIFT
                                                                                                 : LOWRA_TILE_LANES;
}

const char *lowra_kernel_variant_name(int path) {
    if (path == LOWRA_PATH_NEON && lowra_kernel_path_supported(path))
        return lowra_cpu_has_dotprod() ? "neon sdot" : "neon (no dot product)";
    if (path == LOWRA_PATH_AVX2 && lowra_tiled_supported(path)) return "avx2 tiled";
    if (path != LOWRA_PATH_AVX512 || !lowra_kernel_path_supported(path)) return lowra_kernel_path_name(path);
    const int tiled = lowra_tiled_supported(path);
    if (!lowra_cpu_has_vnni()) return tiled ? "avx512 (integer kernels: avx2 tiled)" : "avx512 (integer kernels: avx2)";
    if (!lowra_kernel_vbmi()) return tiled ? "avx512 vnni (tiles: avx2)" : "avx512 vnni";
    return tiled ? "avx512 vnni vbmi tiled" : "avx512 vnni vbmi";
}
