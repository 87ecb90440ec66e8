/*
 * fc.c - fully connected layer through BLAS.
 *
 * Layout (row-major): x[batch][in], weight[out][in] (Caffe's InnerProduct orientation), bias[out],
 * y[batch][out]. Forward is one GEMM y = x . weight^T, then the bias broadcast over the batch (a
 * separate pass rather than a beta=1 GEMM on a pre-filled y: the pass is cheap and y needs no
 * initialisation). Backward is two GEMMs, dx = dy . weight and dweight = dy^T . x, and a column sum
 * for dbias. BLAS takes int dimensions, which the int arguments already are; the checked products
 * guard the pointer arithmetic.
 */
#include "blas.h"
#include "internal.h"

#if defined(PERF_WITH_OPENMP)
#include <omp.h>
#endif

static perf_status fc_check(const char *fn, int batch, int in_features, int out_features) {
    PERF_CHECK_POSITIVE(fn, batch);
    PERF_CHECK_POSITIVE(fn, in_features);
    PERF_CHECK_POSITIVE(fn, out_features);
    size_t total, xd[2] = {(size_t)batch, (size_t)in_features},
                  wd[2] = {(size_t)out_features, (size_t)in_features},
                  yd[2] = {(size_t)batch, (size_t)out_features};
    PERF_CHECK(perf_checked_product(fn, "x", xd, 2, &total));
    PERF_CHECK(perf_checked_product(fn, "weight", wd, 2, &total));
    PERF_CHECK(perf_checked_product(fn, "y", yd, 2, &total));
    return PERF_STATUS_SUCCESS;
}

/* This thread's share [*lo, *hi) of n columns, in multiples of 16 (whole SIMD blocks for the GEMM). */
static void share(int n, int *lo, int *hi) {
#if defined(PERF_WITH_OPENMP)
    int t = omp_get_num_threads(), id = omp_get_thread_num();
#else
    int t = 1, id = 0;
#endif
    int per = ((n + t - 1) / t + 15) / 16 * 16;
    *lo = id * per < n ? id * per : n;
    *hi = *lo + per < n ? *lo + per : n;
}

perf_status perf_fc_forward(int batch, int in_features, int out_features, const float *x, const float *weight,
                            const float *bias, float *y) {
    static const char fn[] = "perf_fc_forward";
    PERF_CHECK(fc_check(fn, batch, in_features, out_features));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, weight);
    PERF_CHECK_NOT_NULL(fn, y);
    const int big = (double)batch * in_features * out_features >= 1e6;
    (void)big; /* used by the OpenMP clause only */
#pragma omp parallel if (big)
    {
        int o0, o1; /* each thread: its share of the outputs, a single-threaded GEMM (see blas_threads.c) */
        share(out_features, &o0, &o1);
        if (o1 > o0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, o1 - o0, in_features, 1.0f, x, in_features,
                        weight + (size_t)o0 * in_features, in_features, 0.0f, y + o0, out_features);
        for (int b = 0; bias && b < batch; b++) {
            float *yb = y + (size_t)b * out_features;
            for (int o = o0; o < o1; o++) yb[o] += bias[o];
        }
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_fc_backward(int batch, int in_features, int out_features, const float *x,
                             const float *weight, const float *dy, float *dx, float *dweight, float *dbias) {
    static const char fn[] = "perf_fc_backward";
    PERF_CHECK(fc_check(fn, batch, in_features, out_features));
    PERF_CHECK_NOT_NULL(fn, dy);
    if (dx) PERF_CHECK_NOT_NULL(fn, weight); /* each input is needed only by the gradient that uses it */
    if (dweight) PERF_CHECK_NOT_NULL(fn, x);
    const int big = (double)batch * in_features * out_features >= 1e6;
    (void)big; /* used by the OpenMP clauses only */
#pragma omp parallel if (big)
    {
        int i0, i1, o0, o1;
        share(in_features, &i0, &i1);
        share(out_features, &o0, &o1);
        if (dx && i1 > i0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, i1 - i0, out_features, 1.0f, dy,
                        out_features, weight + i0, in_features, 0.0f, dx + i0, in_features);
        if (dweight && o1 > o0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o1 - o0, in_features, batch, 1.0f, dy + o0,
                        out_features, x, in_features, 0.0f, dweight + (size_t)o0 * in_features, in_features);
    }
    if (dbias) {
        /* Sum in double per output: batch sizes of a few hundred lose digits in a float sum. */
#pragma omp parallel for schedule(static) if (big)
        for (int o = 0; o < out_features; o++) {
            double sum = 0.0;
            for (int b = 0; b < batch; b++) sum += dy[(size_t)b * out_features + o];
            dbias[o] = (float)sum;
        }
    }
    return PERF_STATUS_SUCCESS;
}
