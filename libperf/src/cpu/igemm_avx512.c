/*
 * cpu/igemm_avx512.c - AVX-512F micro-kernels of the indirect GEMM (see igemm.h).
 *
 * Tiles MR x NR with NR = 16 * NV: 14 x 32 (28 accumulators, 2 weight vectors per channel step and
 * 14 broadcasts straight from the input runs) for layers with many output channels, 14 x 16 for a
 * layer's last, narrower panel; 8 x 48 and 6 x 64 where they cover a layer in one or two panels
 * (64 and 96 output channels: 285 vs 258 and 217 vs 195 GFLOP/s, VGG-16 conv1_2 and NIN cccp2).
 * Measured on a 2-vCPU Xeon (layer GFLOP/s, 2 threads): 14 x 32 beats the 6 x 64 tile it replaced on
 * every network layer tried (NIN conv2 469 vs 450, AlexNet conv1 273 vs 240, VGG-16 conv5 431 vs 417):
 * it loads 2 weight vectors per 28 FMAs instead of 4 per 24, which halves the L2 traffic of the
 * weights streamed over each tile. Compiled with a target attribute, so the library builds for any
 * x86-64 and only calls these where perf_igemm_isa_select found AVX-512F.
 */
#include "igemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define T512 __attribute__((target("avx512f")))

/* Weights are prefetched this many channel steps ahead (1 KiB at 14 x 32): measured on the 2-vCPU Xeon,
 * a 14 x 32 tile streaming its weights from beyond L2 runs at 327 GFLOP/s with it, 245 without (about
 * 348 vs 341 from L2). Past the block's end it touches the next block or panel, never faults. */
enum { W_AHEAD = 8 };

static inline T512 __attribute__((always_inline)) __mmask16 col_mask(int ncols, int v) {
    int n = ncols - 16 * v;
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

static inline T512 __attribute__((always_inline)) void body(const perf_igemm_args *A, const int MR,
                                                            const int NV) {
    __m512 acc[14][4];
    const int mr = A->mr, ncols = A->ncols;
    const size_t ldy = A->ldy;
#pragma GCC unroll 14
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[m][v] = (A->first || m >= mr) ? _mm512_setzero_ps()
                                              : _mm512_maskz_loadu_ps(col_mask(ncols, v), A->y + m * ldy + 16 * v);
    const float *w = A->w;
    for (int t = 0; t < A->ntaps; t++) {
        const float *const *ap = A->a + (size_t)t * A->a_stride;
        const float *p[14];
#pragma GCC unroll 14
        for (int m = 0; m < MR; m++) p[m] = ap[m];
        for (int c = 0; c < A->clen; c++, w += 16 * NV) {
            __m512 wv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) wv[v] = _mm512_load_ps(w + 16 * v);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) _mm_prefetch((const char *)(w + 16 * NV * W_AHEAD + 16 * v), _MM_HINT_T0);
#pragma GCC unroll 14
            for (int m = 0; m < MR; m++) {
                const __m512 b = _mm512_set1_ps(p[m][c]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[m][v] = _mm512_fmadd_ps(b, wv[v], acc[m][v]);
            }
        }
    }
    if (A->last) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            const __mmask16 k = col_mask(ncols, v);
            const __m512 s = A->scale ? _mm512_maskz_loadu_ps(k, A->scale + 16 * v) : _mm512_set1_ps(1.0f);
            const __m512 b = A->bias ? _mm512_maskz_loadu_ps(k, A->bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 14
            for (int m = 0; m < MR; m++) {
                __m512 r = A->scale ? _mm512_fmadd_ps(acc[m][v], s, b) : _mm512_add_ps(acc[m][v], b);
                if (A->res && m < mr) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(k, A->res + m * ldy + 16 * v));
                acc[m][v] = A->relu ? _mm512_max_ps(r, _mm512_setzero_ps()) : r;
            }
        }
    }
#pragma GCC unroll 14
    for (int m = 0; m < MR; m++)
        if (m < mr)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                _mm512_mask_storeu_ps(A->y + m * ldy + 16 * v, col_mask(ncols, v), acc[m][v]);
}

#define KERNEL(MR, NV) \
    static T512 void k_##MR##x##NV(const perf_igemm_args *A) { body(A, MR, NV); }
KERNEL(14, 1)
KERNEL(14, 2)
KERNEL(8, 3)
KERNEL(6, 4)

const perf_igemm_isa perf_igemm_avx512 = {
    "avx512", 16, 4, 2, {0, 14, 14, 8, 6}, {0, k_14x1, k_14x2, k_8x3, k_6x4}};

#else
const perf_igemm_isa perf_igemm_avx512 = {"avx512", 0, 0, 0, {0}, {0}}; /* never selected off x86-64 */
#endif
