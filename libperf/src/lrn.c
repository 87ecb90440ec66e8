/*
 * lrn.c - local response normalisation across channels (Caffe ACROSS_CHANNELS, AlexNet).
 *
 * Layout: x, y, dy, dx are [batch][channels][spatial] (spatial = h*w, or count on a compact tensor:
 * the layer is position-wise). With half = (local_size - 1) / 2 and windows clipped to [0, channels):
 *   scale[c] = k + alpha/local_size * sum_{|c'-c| <= half} x[c']^2,     y[c] = x[c] * scale[c]^-beta
 *   dx[c] = dy[c] * scale[c]^-beta
 *           - (2 alpha beta / local_size) * x[c] * sum_{|c'-c| <= half} dy[c'] y[c'] / scale[c']
 * (Caffe's backward formula; the windows are symmetric, so "c' whose window holds c" is |c'-c| <= half).
 *
 * Work unit: one image and a chunk of LRN_CHUNK spatial positions; channels are walked in order with
 * the spatial index innermost and contiguous, so every inner loop vectorises. Window sums are running
 * sums over channels (add the channel entering the window, subtract the one leaving), so the cost per
 * element does not depend on local_size. They are kept in double: squares of floats are exact in
 * double, so add-then-subtract does not accumulate the cancellation error a float running sum would.
 *
 * The backward needs scale at three channels per step: c (for dx[c]), c+half (its ratio enters the
 * ratio window) and c-half-1 (its ratio leaves it). Rather than a channels x chunk scratch buffer, it
 * runs three running sums of x^2 with centres c+half, c and c-half-1: all state is a few chunk-sized
 * arrays on the stack, no allocation, any local_size.
 */
#include <math.h>

#include "internal.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

enum { LRN_CHUNK = 256 }; /* spatial positions per work unit: 4 double arrays = 8 KiB of stack */

/* A running sum of x^2 over the channel window centred on `centre`, for one chunk. */
typedef struct {
    int centre;
    double acc[LRN_CHUNK];
} lrn_window;

typedef struct {
    int channels, half, len;
    size_t spatial;
    double k, alpha_n; /* k and alpha / local_size */
    float beta;
} lrn_geom;

static inline void square_add(double *restrict acc, const float *restrict v, int len, double sign) {
    for (int s = 0; s < len; s++) acc[s] += sign * ((double)v[s] * (double)v[s]);
}

/* Empty window: centred far enough below channel 0 that no channel is inside it. */
static void window_reset(lrn_window *w, const lrn_geom *g, int centre) {
    w->centre = centre;
    for (int s = 0; s < g->len; s++) w->acc[s] = 0.0;
}

/* Move the window's centre up by one channel: channel centre+half enters, centre-half-1 leaves.
 * x points at this image and chunk: x[c * spatial + s]. */
static void window_advance(lrn_window *w, const lrn_geom *g, const float *x) {
    const int in = ++w->centre + g->half, out = w->centre - g->half - 1;
    if (in >= 0 && in < g->channels) square_add(w->acc, x + (size_t)in * g->spatial, g->len, 1.0);
    if (out >= 0 && out < g->channels) square_add(w->acc, x + (size_t)out * g->spatial, g->len, -1.0);
}

/* scale^-beta from the window sums. beta = 0.75 (AlexNet) is 1 / (sqrt(s) * sqrt(sqrt(s))), correctly
 * rounded square roots instead of powf. Written with intrinsics because the compiler will not
 * vectorise sqrtf while it must set errno for negative arguments (-fmath-errno, the default); scalar
 * square roots made the whole layer four times slower. */
static void scale_pow(const lrn_geom *g, const double *restrict acc, float *restrict scale,
                      float *restrict pw) {
    for (int s = 0; s < g->len; s++) scale[s] = (float)(g->k + g->alpha_n * acc[s]);
    if (g->beta == 0.75f) {
        int s = 0;
#if defined(__AVX__)
        for (; s + 8 <= g->len; s += 8) {
            const __m256 r = _mm256_sqrt_ps(_mm256_loadu_ps(scale + s));
            _mm256_storeu_ps(pw + s,
                             _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_mul_ps(r, _mm256_sqrt_ps(r))));
        }
#elif defined(__SSE2__)
        for (; s + 4 <= g->len; s += 4) {
            const __m128 r = _mm_sqrt_ps(_mm_loadu_ps(scale + s));
            _mm_storeu_ps(pw + s, _mm_div_ps(_mm_set1_ps(1.0f), _mm_mul_ps(r, _mm_sqrt_ps(r))));
        }
#endif
        for (; s < g->len; s++) {
            const float r = sqrtf(scale[s]);
            pw[s] = 1.0f / (r * sqrtf(r));
        }
    } else {
        for (int s = 0; s < g->len; s++) pw[s] = powf(scale[s], -g->beta);
    }
}

/* The argument rules of LRN, shared with the CUDA entry points (layers_ctx.c). */
perf_status perf_lrn_check_args(const char *fn, int batch, int channels, int spatial, int local_size, float alpha,
                                float beta, float k) {
    PERF_CHECK_POSITIVE(fn, batch);
    PERF_CHECK_POSITIVE(fn, channels);
    PERF_CHECK_POSITIVE(fn, spatial);
    if (local_size < 1 || local_size % 2 == 0)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: local_size must be odd and >= 1, got %d", fn,
                         local_size);
    if (!isfinite(alpha) || !isfinite(beta))
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: alpha and beta must be finite, got %g and %g", fn,
                         (double)alpha, (double)beta);
    if (!isfinite(k) || k <= 0.0f)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: k must be finite and > 0, got %g", fn, (double)k);
    size_t dims[3] = {(size_t)batch, (size_t)channels, (size_t)spatial}, total;
    return perf_checked_product(fn, "batch*channels*spatial", dims, 3, &total);
}

static perf_status lrn_check(const char *fn, int batch, int channels, int spatial, int local_size,
                             float alpha, float beta, float k, lrn_geom *g) {
    PERF_CHECK(perf_lrn_check_args(fn, batch, channels, spatial, local_size, alpha, beta, k));
    g->channels = channels;
    g->half = (local_size - 1) / 2;
    if (g->half > channels) g->half = channels; /* windows are clipped to the channels: same sums, and no
                                                  * 2^30-step walk for local_size = INT_MAX */
    g->spatial = (size_t)spatial;
    g->k = k;
    g->alpha_n = (double)alpha / local_size;
    g->beta = beta;
    return PERF_STATUS_SUCCESS;
}

perf_status perf_lrn_forward(int batch, int channels, int spatial, int local_size, float alpha, float beta,
                             float k, const float *x, float *y) {
    static const char fn[] = "perf_lrn_forward";
    lrn_geom geom;
    PERF_CHECK(lrn_check(fn, batch, channels, spatial, local_size, alpha, beta, k, &geom));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    const long long chunks = (spatial + LRN_CHUNK - 1) / LRN_CHUNK, units = chunks * batch;
#pragma omp parallel for schedule(static)
    for (long long u = 0; u < units; u++) {
        lrn_geom g = geom;
        const int s0 = (int)(u % chunks) * LRN_CHUNK;
        g.len = spatial - s0 < LRN_CHUNK ? spatial - s0 : LRN_CHUNK;
        const size_t base = (size_t)(u / chunks) * g.channels * g.spatial + (size_t)s0;
        const float *xn = x + base;
        float *yn = y + base;
        lrn_window w;
        float scale[LRN_CHUNK], pw[LRN_CHUNK];
        window_reset(&w, &g, -g.half - 1);
        for (int c = 0; c < g.channels; c++) {
            while (w.centre < c) window_advance(&w, &g, xn); /* half+1 steps first, then one */
            scale_pow(&g, w.acc, scale, pw);
            const float *xc = xn + (size_t)c * g.spatial;
            float *yc = yn + (size_t)c * g.spatial;
            for (int s = 0; s < g.len; s++) yc[s] = xc[s] * pw[s];
        }
    }
    return PERF_STATUS_SUCCESS;
}

/* Channels-last: x, y [positions][channels] (positions = batch*h*w, or batch*count on a compact tensor).
 * Per position and chunk of LRN_CHUNK channels, each window sum adds the local_size squares directly
 * (exact in double, in the order c-half .. c+half): vector loops over the contiguous channels, where a
 * running sum would be one serial chain per position (measured: AlexNet norm1, batch 256, 24 -> 18 ms). */
PERF_CLONES static void lrn_position(const lrn_geom *geom, const float *xp, float *yp) {
    lrn_geom g = *geom;
    double acc[LRN_CHUNK];
    float scale[LRN_CHUNK], pw[LRN_CHUNK];
    for (int c0 = 0; c0 < g.channels; c0 += LRN_CHUNK) {
        g.len = g.channels - c0 < LRN_CHUNK ? g.channels - c0 : LRN_CHUNK;
        for (int s = 0; s < g.len; s++) acc[s] = 0.0;
        for (int d = -g.half; d <= g.half; d++) {
            const int lo = c0 + d < 0 ? -(c0 + d) : 0;
            const int hi = g.channels - (c0 + d) < g.len ? g.channels - (c0 + d) : g.len;
            const float *v = xp + c0 + d;
            for (int s = lo; s < hi; s++) acc[s] += (double)v[s] * (double)v[s];
        }
        scale_pow(&g, acc, scale, pw);
        for (int s = 0; s < g.len; s++) yp[c0 + s] = xp[c0 + s] * pw[s];
    }
}

perf_status perf_lrn_forward_nhwc(int positions, int channels, int local_size, float alpha, float beta, float k,
                                  const float *x, float *y) {
    static const char fn[] = "perf_lrn_forward_nhwc";
    lrn_geom geom;
    PERF_CHECK(lrn_check(fn, positions, channels, 1, local_size, alpha, beta, k, &geom));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    const size_t C = (size_t)channels;
#pragma omp parallel for schedule(static) if ((size_t)positions * C >= PERF_PARALLEL_MIN)
    for (int pos = 0; pos < positions; pos++) lrn_position(&geom, x + (size_t)pos * C, y + (size_t)pos * C);
    return PERF_STATUS_SUCCESS;
}

/* acc (the ratio window sum) += sign * dy[c] y[c] / scale[c] for the channel a window is centred on. */
static void ratio_add(const lrn_geom *g, const lrn_window *w, const float *dy, const float *y,
                      double *restrict acc, double sign) {
    const size_t off = (size_t)w->centre * g->spatial;
    const float *restrict dyc = dy + off, *restrict yc = y + off;
    for (int s = 0; s < g->len; s++)
        acc[s] += sign * ((double)dyc[s] * (double)yc[s] / (g->k + g->alpha_n * w->acc[s]));
}

perf_status perf_lrn_backward(int batch, int channels, int spatial, int local_size, float alpha, float beta,
                              float k, const float *x, const float *y, const float *dy, float *dx) {
    static const char fn[] = "perf_lrn_backward";
    lrn_geom geom;
    PERF_CHECK(lrn_check(fn, batch, channels, spatial, local_size, alpha, beta, k, &geom));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    PERF_CHECK_NOT_NULL(fn, dy);
    PERF_CHECK_NOT_NULL(fn, dx);
    const float coef = (float)(2.0 * alpha * beta / local_size);
    const long long chunks = (spatial + LRN_CHUNK - 1) / LRN_CHUNK, units = chunks * batch;
#pragma omp parallel for schedule(static)
    for (long long u = 0; u < units; u++) {
        lrn_geom g = geom;
        const int s0 = (int)(u % chunks) * LRN_CHUNK;
        g.len = spatial - s0 < LRN_CHUNK ? spatial - s0 : LRN_CHUNK;
        const size_t base = (size_t)(u / chunks) * g.channels * g.spatial + (size_t)s0;
        const float *xn = x + base, *yn = y + base, *dyn = dy + base;
        float *dxn = dx + base;
        lrn_window lead, mid, lag;
        double rsum[LRN_CHUNK];
        float scale[LRN_CHUNK], pw[LRN_CHUNK];
        const int half = g.half;
        window_reset(&lead, &g, -half - 1);
        window_reset(&mid, &g, -half - 1);
        window_reset(&lag, &g, -half - 2);
        for (int s = 0; s < g.len; s++) rsum[s] = 0.0;
        /* Before channel 0: the ratio window holds channels [0, half-1]. */
        while (lead.centre < half - 1) {
            window_advance(&lead, &g, xn);
            if (lead.centre >= 0 && lead.centre < g.channels) ratio_add(&g, &lead, dyn, yn, rsum, 1.0);
        }
        while (mid.centre < -1) window_advance(&mid, &g, xn);
        for (int c = 0; c < g.channels; c++) {
            window_advance(&lead, &g, xn); /* centre c + half enters the ratio window */
            if (lead.centre < g.channels) ratio_add(&g, &lead, dyn, yn, rsum, 1.0);
            window_advance(&lag, &g, xn); /* centre c - half - 1 leaves it */
            if (lag.centre >= 0) ratio_add(&g, &lag, dyn, yn, rsum, -1.0);
            window_advance(&mid, &g, xn);
            scale_pow(&g, mid.acc, scale, pw);
            const size_t off = (size_t)c * g.spatial;
            const float *restrict xc = xn + off, *restrict dyc = dyn + off;
            float *restrict dxc = dxn + off;
            for (int s = 0; s < g.len; s++) dxc[s] = dyc[s] * pw[s] - coef * xc[s] * (float)rsum[s];
        }
    }
    return PERF_STATUS_SUCCESS;
}
