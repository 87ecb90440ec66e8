/*
 * pool_nhwc.c - max / average pooling in the channels-last layout (the CPU inference engine's).
 *
 * x[batch][in_spatial][channels] (in_spatial = in_h*in_w, or the input mask's count: a compact input
 * read through the plan's CSR table, see pool.c), y[batch][out_h*out_w][channels], always full.
 * Same windows and rules as perf_pool_forward (pool.c): Caffe ceil mode, clipped windows, the average
 * divides by the clipped window's size (duplicates of a compact input counted), NaN wins a max.
 * Each window reduces whole channel vectors: contiguous loops over channels. Parallel over output rows.
 */
#include <string.h>

#include "pool_internal.h"

static inline void reduce_into(float *restrict acc, const float *restrict v, size_t c, int is_max) {
    if (is_max)
        for (size_t i = 0; i < c; i++) acc[i] = PERF_MAX_WINS(v[i], acc[i]) ? v[i] : acc[i];
    else
        for (size_t i = 0; i < c; i++) acc[i] += v[i];
}

/* One output row (image b, output row oh), all its positions and channels (vector width chosen at
 * load time: PERF_CLONES). */
PERF_CLONES static void pool_row(const perf_pool_plan *p, const float *x, float *y, long long row) {
    const perf_pool_desc *d = &p->d;
    const size_t C = (size_t)d->channels, in_w = (size_t)d->in_w;
    const int is_max = d->mode == PERF_POOL_MAX;
    const int b = (int)(row / p->out_h), oh = (int)(row % p->out_h);
    const float *xb = x + (size_t)b * p->in_spatial * C;
    int hs, he;
    perf_pool_window(oh, d->stride_h, d->pad_h, d->kernel_h, d->in_h, &hs, &he);
    for (int ow = 0; ow < p->out_w; ow++) {
        const size_t o = (size_t)oh * p->out_w + (size_t)ow;
        float *yo = y + ((size_t)b * p->out_spatial + o) * C;
        size_t taps = 0;
        if (p->offsets) {
            const int64_t a = p->offsets[o], e = p->offsets[o + 1];
            memcpy(yo, xb + (size_t)p->idx[a] * C, C * sizeof *yo);
            for (int64_t j = a + 1; j < e; j++) reduce_into(yo, xb + (size_t)p->idx[j] * C, C, is_max);
            taps = (size_t)(e - a);
        } else {
            int ws, we;
            perf_pool_window(ow, d->stride_w, d->pad_w, d->kernel_w, d->in_w, &ws, &we);
            memcpy(yo, xb + ((size_t)hs * in_w + (size_t)ws) * C, C * sizeof *yo);
            for (int r = hs; r < he; r++)
                for (int c = r == hs ? ws + 1 : ws; c < we; c++)
                    reduce_into(yo, xb + ((size_t)r * in_w + (size_t)c) * C, C, is_max);
            taps = (size_t)(he - hs) * (size_t)(we - ws);
        }
        if (!is_max) {
            const float n = (float)taps;
            for (size_t i = 0; i < C; i++) yo[i] /= n;
        }
    }
}

perf_status perf_pool_forward_nhwc(const perf_pool_plan *plan, const float *x, float *y) {
    static const char fn[] = "perf_pool_forward_nhwc";
    PERF_CHECK_NOT_NULL(fn, plan);
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    if (plan->ctx)
        return perf_fail(PERF_STATUS_UNSUPPORTED,
                         "%s: the channels-last pooling runs on the CPU only; this plan was made for a CUDA "
                         "context (use perf_pool_forward)", fn);
    const perf_pool_plan *p = plan;
    const long long rows = (long long)p->d.batch * p->out_h;
#pragma omp parallel for schedule(static) if (p->planes * p->out_spatial >= PERF_PARALLEL_MIN)
    for (long long row = 0; row < rows; row++) pool_row(p, x, y, row);
    return PERF_STATUS_SUCCESS;
}
