/*
 * cpu/igemm_generic.c - portable C micro-kernel of the indirect GEMM (see igemm.h) for CPUs without
 * AVX2, and the run-time choice of kernel set (perf_igemm_isa_select).
 * Tiles 4 x 16: plain loops the compiler vectorises for the baseline instruction set.
 */
#include <stdlib.h>
#include <string.h>

#include "igemm.h"

enum { GMR = 4, GNR = 16 };

static void k_generic(const perf_igemm_args *A) {
    float acc[GMR][GNR];
    for (int m = 0; m < GMR; m++)
        for (int n = 0; n < GNR; n++)
            acc[m][n] = (A->first || m >= A->mr || n >= A->ncols) ? 0.0f : A->y[m * A->ldy + n];
    const float *w = A->w;
    for (int t = 0; t < A->ntaps; t++) {
        const float *const *p = A->a + (size_t)t * A->a_stride;
        for (int c = 0; c < A->clen; c++, w += GNR)
            for (int m = 0; m < GMR; m++) {
                const float b = p[m][c];
                for (int n = 0; n < GNR; n++) acc[m][n] += b * w[n];
            }
    }
    for (int m = 0; m < A->mr; m++)
        for (int n = 0; n < A->ncols; n++) {
            float r = acc[m][n];
            if (A->last) {
                r = A->scale ? r * A->scale[n] : r;
                r += A->bias ? A->bias[n] : 0.0f;
                r += A->res ? A->res[m * A->ldy + n] : 0.0f;
                r = A->relu && !(r > 0.0f) ? 0.0f : r;
            }
            A->y[m * A->ldy + n] = r;
        }
}

const perf_igemm_isa perf_igemm_generic = {"generic", 16, 1, 1, {0, GMR, 0, 0, 0}, {0, k_generic, 0, 0, 0}};

static int cpu_has(const char *feature) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (strcmp(feature, "avx512") == 0) return __builtin_cpu_supports("avx512f");
    if (strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    (void)feature;
    return 0;
}

const perf_igemm_isa *perf_igemm_isa_select(void) {
    static const perf_igemm_isa *chosen; /* benign race: every thread computes the same answer */
    if (chosen) return chosen;
    const char *want = getenv("PERF_ISA");
    const perf_igemm_isa *best = cpu_has("avx512") ? &perf_igemm_avx512
                                 : cpu_has("avx2") ? &perf_igemm_avx2
                                                   : &perf_igemm_generic;
    if (want && strcmp(want, "generic") == 0) best = &perf_igemm_generic;
    if (want && strcmp(want, "avx2") == 0 && cpu_has("avx2")) best = &perf_igemm_avx2;
    chosen = best;
    return chosen;
}
