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

perf_status perf_fc_forward(int batch, int in_features, int out_features, const float *x, const float *weight,
                            const float *bias, float *y) {
    static const char fn[] = "perf_fc_forward";
    PERF_CHECK(fc_check(fn, batch, in_features, out_features));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, weight);
    PERF_CHECK_NOT_NULL(fn, y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, out_features, in_features, 1.0f, x,
                in_features, weight, in_features, 0.0f, y, out_features);
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int b = 0; b < batch; b++) {
            float *yb = y + (size_t)b * out_features;
            for (int o = 0; o < out_features; o++) yb[o] += bias[o];
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
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, in_features, out_features, 1.0f, dy,
                    out_features, weight, in_features, 0.0f, dx, in_features);
    if (dweight)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_features, in_features, batch, 1.0f, dy,
                    out_features, x, in_features, 0.0f, dweight, in_features);
    if (dbias) {
        /* Sum in double per output: batch sizes of a few hundred lose digits in a float sum. */
#pragma omp parallel for schedule(static)
        for (int o = 0; o < out_features; o++) {
            double sum = 0.0;
            for (int b = 0; b < batch; b++) sum += dy[(size_t)b * out_features + o];
            dbias[o] = (float)sum;
        }
    }
    return PERF_STATUS_SUCCESS;
}
