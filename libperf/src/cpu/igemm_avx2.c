/*
 * cpu/igemm_avx2.c - AVX2 + FMA micro-kernels of the indirect GEMM (see igemm.h), for CPUs without
 * AVX-512 (AMD EPYC before Zen 4, older Intel). 16 ymm registers: tiles 6 x 16 (12 accumulators) and,
 * for a last panel of at most 8 channels, 8 x 8.
 *
 * Whole vectors of the tile are stored and reloaded with plain unaligned moves, only a last partial
 * vector with vmaskmovps: on AMD Zen a masked 256-bit store costs about as much as a dozen plain ones
 * (measured with bench/micro/igemm_rate.c on a 2-vCPU AMD EPYC, 2 threads, 6 x 16 tile, 1 tap of 96
 * channels: 103 -> 148 GFLOP/s; 1 tap of 192: 118 -> 135; 9 taps of 192: 130 -> 129).
 */
#include "igemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TAVX2 __attribute__((target("avx2,fma")))

/* lanes < ncols - 8 v set (all ones), the others clear: a maskload / maskstore mask */
static inline TAVX2 __attribute__((always_inline)) __m256i col_mask(int ncols, int v) {
    static const int ones_then_zeros[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    int n = ncols - 8 * v;
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(ones_then_zeros + 8 - n));
}

static inline TAVX2 __attribute__((always_inline)) void body(const perf_igemm_args *A, const int MR,
                                                             const int NV) {
    __m256 acc[8][2];
    const int mr = A->mr, ncols = A->ncols;
    const size_t ldy = A->ldy;
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            acc[m][v] = (A->first || m >= mr)   ? _mm256_setzero_ps()
                        : ncols >= 8 * (v + 1) ? _mm256_loadu_ps(A->y + m * ldy + 8 * v)
                                               : _mm256_maskload_ps(A->y + m * ldy + 8 * v, col_mask(ncols, v));
    /* Short inner dimensions: the next tile's output (and residual) rows, usually the next MR rows,
     * are fetched now, so the stores at the end of that tile find their lines in cache instead of
     * stalling on them (measured on a 2-vCPU AMD EPYC, ResNet-50's 1x1 conv 64 -> 256 channels at
     * 56 x 56, batch 16, residual fused: 24.5-25.5 -> 17.5-18.8 ms; 3x3 layers with K >= 576 gained
     * nothing and do not do it). */
    if (A->ntaps * A->clen <= 512) {
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            const float *next = A->y + (size_t)(MR + m) * ldy;
            _mm_prefetch((const char *)next, _MM_HINT_T0);
            _mm_prefetch((const char *)(next + 8 * NV - 1), _MM_HINT_T0);
            if (A->res) {
                const float *rn = A->res + (size_t)(MR + m) * ldy;
                _mm_prefetch((const char *)rn, _MM_HINT_T0);
                _mm_prefetch((const char *)(rn + 8 * NV - 1), _MM_HINT_T0);
            }
        }
    }
    const float *w = A->w;
    for (int t = 0; t < A->ntaps; t++) {
        const float *const *ap = A->a + (size_t)t * A->a_stride;
        const float *p[8];
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) p[m] = ap[m];
        for (int c = 0; c < A->clen; c++, w += 8 * NV) {
            __m256 wv[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) wv[v] = _mm256_load_ps(w + 8 * v);
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                const __m256 b = _mm256_broadcast_ss(p[m] + c);
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) acc[m][v] = _mm256_fmadd_ps(b, wv[v], acc[m][v]);
            }
        }
    }
    if (A->last) {
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            const __m256i k = col_mask(ncols, v);
            const __m256 s = A->scale ? _mm256_maskload_ps(A->scale + 8 * v, k) : _mm256_set1_ps(1.0f);
            const __m256 b = A->bias ? _mm256_maskload_ps(A->bias + 8 * v, k) : _mm256_setzero_ps();
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                __m256 r = A->scale ? _mm256_fmadd_ps(acc[m][v], s, b) : _mm256_add_ps(acc[m][v], b);
                if (A->res && m < mr)
                    r = _mm256_add_ps(r, ncols >= 8 * (v + 1) ? _mm256_loadu_ps(A->res + m * ldy + 8 * v)
                                                             : _mm256_maskload_ps(A->res + m * ldy + 8 * v, k));
                acc[m][v] = A->relu ? _mm256_max_ps(r, _mm256_setzero_ps()) : r;
            }
        }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
        if (m < mr)
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) {
                float *dst = A->y + m * ldy + 8 * v;
                if (ncols >= 8 * (v + 1))
                    _mm256_storeu_ps(dst, acc[m][v]);
                else
                    _mm256_maskstore_ps(dst, col_mask(ncols, v), acc[m][v]);
            }
}

static TAVX2 void k_8x1(const perf_igemm_args *A) { body(A, 8, 1); }
static TAVX2 void k_6x2(const perf_igemm_args *A) { body(A, 6, 2); }

const perf_igemm_isa perf_igemm_avx2 = {"avx2", 8, 2, 2, {0, 8, 6, 0, 0}, {0, k_8x1, k_6x2, 0, 0}};

#else
const perf_igemm_isa perf_igemm_avx2 = {"avx2", 0, 0, 0, {0}, {0}}; /* never selected off x86-64 */
#endif
