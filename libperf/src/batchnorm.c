/*
 * batchnorm.c - batch normalisation over [batch][channels][spatial] tensors (full or compact).
 *
 * Training normalises each channel with the statistics of the batch (all batch*spatial values of the
 * channel): y = gamma * (x - mean) * invstd + beta, invstd = 1 / sqrt(var + eps), var the biased
 * variance. mean and invstd are written out for the backward and for the caller's running averages.
 * Inference uses given statistics (running averages): it is then a per-channel affine map, which is
 * why a trained network can fold it into the conv before it (perforated.ops.batchnorm.fold;
 * perforated.graph.passes.fold_batchnorm in graphs).
 *
 * Work is parallel over channels, so each thread owns its statistics and the reduction order (and
 * the result) does not depend on the thread count. Sums run in double over float planes; the
 * variance sums (x - shift)^2 with shift the channel's first value, so a large mean does not cancel
 * away the variance's digits (the shifted-data algorithm).
 *
 * The backward may run in place (dx == dy): every channel's sums are read from dy before its dx is
 * written. y must not overlap x (the backward needs x).
 */
#include <math.h>

#include "internal.h"

static perf_status dims_eps_check(const char *fn, int batch, int channels, int spatial, float eps) {
    PERF_CHECK_POSITIVE(fn, batch);
    PERF_CHECK_POSITIVE(fn, channels);
    PERF_CHECK_POSITIVE(fn, spatial);
    size_t dims[3] = {(size_t)batch, (size_t)channels, (size_t)spatial}, total;
    PERF_CHECK(perf_checked_product(fn, "batch*channels*spatial", dims, 3, &total));
    if (!(eps > 0.0f) || !isfinite(eps))
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: eps must be finite and > 0, got %g", fn, (double)eps);
    return PERF_STATUS_SUCCESS;
}

/* The argument rules of each function, shared with the CUDA entry points (layers_ctx.c), which name
 * their own function in the messages. Only var >= 0 is checked by the CPU function alone (on the GPU,
 * var is device memory). */
perf_status perf_batchnorm_train_args(const char *fn, int batch, int channels, int spatial, float eps,
                                      const float *x, const float *gamma, const float *beta, const float *y,
                                      const float *mean, const float *invstd) {
    PERF_CHECK(dims_eps_check(fn, batch, channels, spatial, eps));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, gamma);
    PERF_CHECK_NOT_NULL(fn, beta);
    PERF_CHECK_NOT_NULL(fn, y);
    PERF_CHECK_NOT_NULL(fn, mean);
    PERF_CHECK_NOT_NULL(fn, invstd);
    if (y == x) return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: y must not be x (the backward reads x)", fn);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_batchnorm_inference_args(const char *fn, int batch, int channels, int spatial, float eps,
                                          const float *x, const float *gamma, const float *beta,
                                          const float *mean, const float *var, const float *y) {
    PERF_CHECK(dims_eps_check(fn, batch, channels, spatial, eps));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, gamma);
    PERF_CHECK_NOT_NULL(fn, beta);
    PERF_CHECK_NOT_NULL(fn, mean);
    PERF_CHECK_NOT_NULL(fn, var);
    PERF_CHECK_NOT_NULL(fn, y);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_batchnorm_backward_args(const char *fn, int batch, int channels, int spatial, const float *x,
                                         const float *dy, const float *gamma, const float *mean,
                                         const float *invstd, const float *dx, const float *dgamma,
                                         const float *dbeta) {
    PERF_CHECK(dims_eps_check(fn, batch, channels, spatial, 1.0f)); /* the backward takes no eps */
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, dy);
    PERF_CHECK_NOT_NULL(fn, gamma);
    PERF_CHECK_NOT_NULL(fn, mean);
    PERF_CHECK_NOT_NULL(fn, invstd);
    PERF_CHECK_NOT_NULL(fn, dx);
    PERF_CHECK_NOT_NULL(fn, dgamma);
    PERF_CHECK_NOT_NULL(fn, dbeta);
    return PERF_STATUS_SUCCESS;
}

/* Values summed in float before a run is added to the double sum: short enough to keep float's
 * rounding small (a 224x224 plane summed in one float would lose about 4 digits). */
#define PERF_BN_CHUNK 256

static inline const float *plane(const float *t, int n, int channels, int c, int spatial) {
    return t + ((size_t)n * (size_t)channels + (size_t)c) * (size_t)spatial;
}

/* y = (x - mean) * scale + beta over one channel's planes (not x * scale + (beta - mean * scale),
 * which loses beta's digits when mean * scale is large). */
static void channel_affine(int batch, int channels, int c, int spatial, const float *x, float mean, float scale,
                           float beta, float *y) {
    for (int n = 0; n < batch; n++) {
        const float *xp = plane(x, n, channels, c, spatial);
        float *yp = (float *)plane(y, n, channels, c, spatial);
        for (int s = 0; s < spatial; s++) yp[s] = (xp[s] - mean) * scale + beta;
    }
}

perf_status perf_batchnorm_forward_train(int batch, int channels, int spatial, float eps, const float *x,
                                         const float *gamma, const float *beta, float *y, float *mean,
                                         float *invstd) {
    static const char fn[] = "perf_batchnorm_forward_train";
    PERF_CHECK(perf_batchnorm_train_args(fn, batch, channels, spatial, eps, x, gamma, beta, y, mean, invstd));
    const double count = (double)batch * (double)spatial;
#pragma omp parallel for schedule(static) if ((size_t)batch * channels * (size_t)spatial >= PERF_PARALLEL_MIN)
    for (int c = 0; c < channels; c++) {
        const float shift = plane(x, 0, channels, c, spatial)[0];
        double sum = 0.0, sq = 0.0;
        for (int n = 0; n < batch; n++) {
            const float *xp = plane(x, n, channels, c, spatial);
            for (int s0 = 0; s0 < spatial; s0 += PERF_BN_CHUNK) { /* float runs (omp simd), double sums */
                const int s1 = s0 + PERF_BN_CHUNK < spatial ? s0 + PERF_BN_CHUNK : spatial;
                float ps = 0.0f, pq = 0.0f;
#pragma omp simd reduction(+ : ps, pq)
                for (int s = s0; s < s1; s++) {
                    const float d = xp[s] - shift;
                    ps += d;
                    pq += d * d;
                }
                sum += ps;
                sq += pq;
            }
        }
        const double m = sum / count, var = fmax(sq / count - m * m, 0.0);
        const double is = 1.0 / sqrt(var + (double)eps);
        mean[c] = (float)(m + shift);
        invstd[c] = (float)is;
        channel_affine(batch, channels, c, spatial, x, mean[c], gamma[c] * (float)is, beta[c], y);
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_batchnorm_forward_inference(int batch, int channels, int spatial, float eps, const float *x,
                                             const float *gamma, const float *beta, const float *mean,
                                             const float *var, float *y) {
    static const char fn[] = "perf_batchnorm_forward_inference";
    PERF_CHECK(perf_batchnorm_inference_args(fn, batch, channels, spatial, eps, x, gamma, beta, mean, var, y));
    for (int c = 0; c < channels; c++)
        if (!(var[c] >= 0.0f))
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: var[%d] must be >= 0, got %g", fn, c, (double)var[c]);
#pragma omp parallel for schedule(static) if ((size_t)batch * channels * (size_t)spatial >= PERF_PARALLEL_MIN)
    for (int c = 0; c < channels; c++) {
        channel_affine(batch, channels, c, spatial, x, mean[c], gamma[c] / sqrtf(var[c] + eps), beta[c], y);
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_batchnorm_backward(int batch, int channels, int spatial, const float *x, const float *dy,
                                    const float *gamma, const float *mean, const float *invstd, float *dx,
                                    float *dgamma, float *dbeta) {
    static const char fn[] = "perf_batchnorm_backward";
    PERF_CHECK(perf_batchnorm_backward_args(fn, batch, channels, spatial, x, dy, gamma, mean, invstd, dx, dgamma,
                                            dbeta));
    const double count = (double)batch * (double)spatial;
#pragma omp parallel for schedule(static) if ((size_t)batch * channels * (size_t)spatial >= PERF_PARALLEL_MIN)
    for (int c = 0; c < channels; c++) {
        const float m = mean[c], is = invstd[c];
        double sdy = 0.0, sdyx = 0.0; /* sum dy, sum dy * (x - mean) */
        for (int n = 0; n < batch; n++) {
            const float *xp = plane(x, n, channels, c, spatial), *dp = plane(dy, n, channels, c, spatial);
            for (int s0 = 0; s0 < spatial; s0 += PERF_BN_CHUNK) {
                const int s1 = s0 + PERF_BN_CHUNK < spatial ? s0 + PERF_BN_CHUNK : spatial;
                float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
                for (int s = s0; s < s1; s++) {
                    a += dp[s];
                    b += dp[s] * (xp[s] - m);
                }
                sdy += a;
                sdyx += b;
            }
        }
        dbeta[c] = (float)sdy;
        dgamma[c] = (float)(sdyx * is);
        /* dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * invstd */
        const float k = gamma[c] * is, mdy = (float)(sdy / count), mxh = (float)(sdyx * is * is / count);
        for (int n = 0; n < batch; n++) {
            const float *xp = plane(x, n, channels, c, spatial), *dp = plane(dy, n, channels, c, spatial);
            float *op = (float *)plane(dx, n, channels, c, spatial);
            for (int s = 0; s < spatial; s++) op[s] = k * (dp[s] - mdy - (xp[s] - m) * mxh);
        }
    }
    return PERF_STATUS_SUCCESS;
}
