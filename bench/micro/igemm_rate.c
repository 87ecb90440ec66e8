/*
 * bench/micro/igemm_rate.c - sustained rate of one channels-last micro-kernel, and the machine's FMA
 * peak, on every OpenMP thread at once (the numbers behind the tile choices in
 * libperf/src/cpu/igemm_avx512.c, igemm_avx2.c and results/engine_experiments.md). The kernel set is the
 * library's run-time choice (PERF_ISA=avx2 picks AVX2 on an AVX-512 CPU). Build and run (x86-64):
 *
 *   cc -O3 -fopenmp -Ilibperf/src/cpu bench/micro/igemm_rate.c libperf/src/cpu/igemm_*.c -o /tmp/igemm_rate
 *   OMP_NUM_THREADS=2 /tmp/igemm_rate peak
 *   OMP_NUM_THREADS=2 /tmp/igemm_rate NTAPS CLEN NV SPAN WEIGHT_FLOATS
 *
 * A call is one MR x (VW NV) tile (VW = 16 floats with AVX-512, 8 with AVX2) over NTAPS taps of CLEN channels (the layer's K = NTAPS * CLEN); its
 * input runs are drawn from a buffer of SPAN floats (SPAN small: in L1) and its packed weights cycle
 * through WEIGHT_FLOATS floats (1: one block reused, in L1 or L2 by its size; large: from memory).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "igemm.h"

__attribute__((target("avx2,fma"))) static double peak_flops_avx2(long iters) {
    __m256 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(1e-9f * (float)i);
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-9f);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    float lanes[8], s = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(lanes, a[i]);
        for (int l = 0; l < 8; l++) s += lanes[l];
    }
    return s == 12345.0f ? 0.0 : (double)iters * 12 * 16;
}

__attribute__((target("avx512f"))) static double peak_flops_avx512(long iters) {
    __m512 a[24];
    for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps(1e-9f * (float)i);
    const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-9f);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
    float s = 0;
    for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(a[i]);
    return s == 12345.0f ? 0.0 : (double)iters * 24 * 32;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "peak") == 0) {
        double flops = 0, t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : flops)
        flops += __builtin_cpu_supports("avx512f") ? peak_flops_avx512(100000000L) : peak_flops_avx2(200000000L);
        printf("FMA peak: %.1f GFLOP/s on %d threads\n", flops / (omp_get_wtime() - t0) / 1e9, omp_get_max_threads());
        return 0;
    }
    if (argc != 6) {
        fprintf(stderr, "usage: %s peak | NTAPS CLEN NV SPAN WEIGHT_FLOATS\n", argv[0]);
        return 2;
    }
    const int ntaps = atoi(argv[1]), clen = atoi(argv[2]), nv = atoi(argv[3]);
    const long span = atol(argv[4]), wspan = atol(argv[5]);
    const perf_igemm_isa *isa = perf_igemm_isa_select();
    if (ntaps < 1 || clen < 1 || nv < 1 || nv > isa->nv_max || span < clen) {
        fprintf(stderr, "NTAPS, CLEN >= 1, 1 <= NV <= %d, SPAN >= CLEN\n", isa->nv_max);
        return 2;
    }
    const int MR = isa->rows[nv], NR = isa->vw * nv;
    const long K = (long)ntaps * clen, block = K * NR, blocks = wspan / block > 1 ? wspan / block : 1;
    const long iters = 5000000000L / (K * MR * NR) + 1;
    double slowest = 0, flops = 0;
#pragma omp parallel reduction(+ : flops)
    {
        float *x = aligned_alloc(64, (size_t)(span + 64) * sizeof(float));
        float *w = aligned_alloc(64, (size_t)(blocks * block + 4096) * sizeof(float));
        const float **rows = malloc(sizeof(float *) * (size_t)ntaps * MR * 64);
        float y[14 * 64];
        for (long i = 0; i < span + 64; i++) x[i] = 1e-3f * (float)(i % 7);
        for (long i = 0; i < blocks * block + 4096; i++) w[i] = 1e-2f;
        unsigned s = 1;
        for (long i = 0; i < (long)ntaps * MR * 64; i++) {
            s = s * 1103515245u + 12345u;
            rows[i] = x + ((s >> 8) % (unsigned)(span / clen)) * clen;
        }
#pragma omp barrier
        const double t0 = omp_get_wtime();
        for (long it = 0; it < iters; it++) {
            perf_igemm_args A = {0};
            A.a = rows + (it % 64) * ntaps * MR;
            A.a_stride = (size_t)MR;
            A.ntaps = ntaps;
            A.clen = clen;
            A.mr = MR;
            A.w = w + (it % blocks) * block;
            A.y = y;
            A.ldy = (size_t)NR;
            A.ncols = NR;
            A.first = A.last = 1;
            isa->fn[nv](&A);
        }
        const double t = omp_get_wtime() - t0;
        flops += 2.0 * (double)K * MR * NR * (double)iters;
#pragma omp critical
        if (t > slowest) slowest = t;
        free(x), free(w), free(rows);
    }
    printf("%s: %d x %d tile, %d taps x %d channels, inputs in %ld floats, weights cycling through %ld: %.1f GFLOP/s\n",
           isa->name, MR, NR, ntaps, clen, span, blocks * block, flops / slowest / 1e9);
    return 0;
}
