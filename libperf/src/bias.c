/*
 * bias.c - per-channel bias on [batch][channels][spatial] tensors (full or compact: position-wise).
 *
 * Forward adds bias[c] in place to each plane (n, c), parallel over the batch*channels planes.
 * Backward sums dy over batch and spatial for each channel, parallel over channels so every thread
 * owns its outputs; each plane is summed in float with several partial sums (so the loop vectorises
 * without reassociation flags), and planes are added in double, keeping long sums accurate.
 */
#include "internal.h"

static perf_status bias_check(const char *fn, int batch, int channels, int spatial) {
    PERF_CHECK_POSITIVE(fn, batch);
    PERF_CHECK_POSITIVE(fn, channels);
    PERF_CHECK_POSITIVE(fn, spatial);
    size_t dims[3] = {(size_t)batch, (size_t)channels, (size_t)spatial}, total;
    return perf_checked_product(fn, "batch*channels*spatial", dims, 3, &total);
}

perf_status perf_bias_forward(int batch, int channels, int spatial, const float *bias, float *y) {
    static const char fn[] = "perf_bias_forward";
    PERF_CHECK(bias_check(fn, batch, channels, spatial));
    PERF_CHECK_NOT_NULL(fn, bias);
    PERF_CHECK_NOT_NULL(fn, y);
    const long long planes = (long long)batch * channels;
#pragma omp parallel for schedule(static) if ((size_t)planes * (size_t)spatial >= PERF_PARALLEL_MIN)
    for (long long i = 0; i < planes; i++) {
        const float b = bias[i % channels];
        float *yp = y + (size_t)i * (size_t)spatial;
        for (int s = 0; s < spatial; s++) yp[s] += b;
    }
    return PERF_STATUS_SUCCESS;
}

/* Sum of a plane with 8 independent partial sums (a vectorisable reduction order). */
static double plane_sum(const float *v, int n) {
    float part[8] = {0};
    int s = 0;
    for (; s + 8 <= n; s += 8)
        for (int j = 0; j < 8; j++) part[j] += v[s + j];
    double sum = 0.0;
    for (int j = 0; j < 8; j++) sum += part[j];
    for (; s < n; s++) sum += v[s];
    return sum;
}

perf_status perf_bias_backward(int batch, int channels, int spatial, const float *dy, float *dbias) {
    static const char fn[] = "perf_bias_backward";
    PERF_CHECK(bias_check(fn, batch, channels, spatial));
    PERF_CHECK_NOT_NULL(fn, dy);
    PERF_CHECK_NOT_NULL(fn, dbias);
#pragma omp parallel for schedule(static) if ((size_t)batch * channels * (size_t)spatial >= PERF_PARALLEL_MIN)
    for (int c = 0; c < channels; c++) {
        double sum = 0.0;
        for (int n = 0; n < batch; n++)
            sum += plane_sum(dy + ((size_t)n * channels + c) * (size_t)spatial, spatial);
        dbias[c] = (float)sum;
    }
    return PERF_STATUS_SUCCESS;
}
