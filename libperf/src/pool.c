/*
 * pool.c - max / average pooling (Caffe ceil mode), on a full input or through a producer's mask.
 *
 * Layout: x[planes][in_spatial] with planes = batch*channels and in_spatial = in_h*in_w (full) or the
 * mask's count (compact input); y[planes][out_h*out_w], always full.
 * Window of output (oh, ow): rows [oh*stride_h - pad_h, +kernel_h) and cols likewise, clipped to the
 * map. pad < kernel and Caffe's "last window must start inside the map" rule make every clipped
 * window non-empty, so no output is ever an empty max or a division by zero.
 *
 * Full input: no table. The forward is separable (a window is a product of a row range and a column
 * range): per output row, reduce the window's input rows into one row buffer with contiguous
 * (vectorisable) loops, then reduce column ranges of that buffer. The backward walks each window in
 * row-major order.
 *
 * Compact input: the plan holds a CSR table built once, offsets[out_spatial + 1] and idx[...]:
 * idx[offsets[o] .. offsets[o+1]) are the compact indices nearest[p] of the window's in-bounds
 * positions p in row-major order. Max keeps only the first occurrence of each compact index (a
 * duplicate cannot change a max, and the backward must route to one copy); average keeps duplicates
 * and divides by their number, i.e. it averages the interpolated full map.
 *
 * Max backward routes dy to the FIRST maximum of its window (row-major / table order), recomputed
 * from x, so forward needs no argmax buffer. All loops are parallel over planes (no write conflicts).
 */
#include <stdlib.h>
#include <string.h>

#include "device_internal.h"
#include "pool_internal.h"

enum { POOL_ROW_BUFFER = 4096 }; /* floats of stack per thread for the separable forward */
/* Largest input map (floats) whose interpolated plane a thread builds on its stack (64 KiB, modest
 * even for callers on small thread stacks) for the forward of a compact input: every pooling input of
 * NIN, AlexNet and VGG-16 but VGG's 224x224 pool1, which follows the CSR table. */
enum { POOL_PLANE_BUFFER = 16384 };


/* Max or sum of v[a..b), a < b, in index order (the first maximum wins ties). */
static inline float span_reduce(const float *v, int a, int b, int is_max) {
    float r = v[a];
    if (is_max)
        for (int c = a + 1; c < b; c++) r = PERF_MAX_WINS(v[c], r) ? v[c] : r;
    else
        for (int c = a + 1; c < b; c++) r += v[c];
    return r;
}

static perf_status pool_out_size(const char *fn, const char *axis, int in, int kernel, int stride, int pad,
                                 int *out) {
    if (pad < 0 || pad >= kernel)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: pad_%s must be in [0, kernel_%s = %d), got %d",
                         fn, axis, axis, kernel, pad);
    long long padded = (long long)in + 2LL * pad;
    if (kernel > padded)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: kernel_%s %d exceeds the padded input %s %lld",
                         fn, axis, kernel, axis, padded);
    long long o = (padded - kernel + stride - 1) / stride + 1;
    /* Caffe drops a last window that starts in the padding; we also drop one that starts past the map
     * when pad = 0 and stride > kernel (Caffe would pool an empty window there). */
    if ((o - 1) * stride >= (long long)in + pad) o--;
    *out = (int)o; /* o <= padded - kernel + 1 <= in + pad < 2^31 */
    return PERF_STATUS_SUCCESS;
}

/* Builds the CSR table of a compact input (see the top comment). */
static perf_status build_table(perf_pool_plan *p, const perf_mask *m) {
    const perf_pool_desc *d = &p->d;
    size_t total = 0;
    for (int oh = 0; oh < p->out_h; oh++) {
        int hs, he;
        perf_pool_window(oh, d->stride_h, d->pad_h, d->kernel_h, d->in_h, &hs, &he);
        for (int ow = 0; ow < p->out_w; ow++) {
            int ws, we;
            perf_pool_window(ow, d->stride_w, d->pad_w, d->kernel_w, d->in_w, &ws, &we);
            total += (size_t)(he - hs) * (size_t)(we - ws); /* bounded by out_spatial*kh*kw, checked */
        }
    }
    p->offsets = malloc((p->out_spatial + 1) * sizeof *p->offsets);
    p->idx = malloc((total ? total : 1) * sizeof *p->idx);
    p->nearest = malloc((size_t)d->in_h * (size_t)d->in_w * sizeof *p->nearest);
    if (p->nearest) memcpy(p->nearest, m->nearest, (size_t)d->in_h * (size_t)d->in_w * sizeof *p->nearest);
    int64_t *seen = d->mode == PERF_POOL_MAX ? malloc((size_t)m->count * sizeof *seen) : NULL;
    if (!p->offsets || !p->idx || !p->nearest || (d->mode == PERF_POOL_MAX && !seen)) {
        free(seen);
        return perf_fail(PERF_STATUS_OUT_OF_MEMORY,
                         "perf_pool_plan_create: cannot allocate the %zu-entry gather table", total);
    }
    /* seen[k] == o: compact index k is already in output o's list (max keeps distinct indices). */
    if (seen) memset(seen, 0xff, (size_t)m->count * sizeof *seen);
    size_t n = 0, o = 0;
    for (int oh = 0; oh < p->out_h; oh++) {
        int hs, he;
        perf_pool_window(oh, d->stride_h, d->pad_h, d->kernel_h, d->in_h, &hs, &he);
        for (int ow = 0; ow < p->out_w; ow++, o++) {
            int ws, we;
            perf_pool_window(ow, d->stride_w, d->pad_w, d->kernel_w, d->in_w, &ws, &we);
            p->offsets[o] = (int64_t)n;
            for (int r = hs; r < he; r++)
                for (int c = ws; c < we; c++) {
                    int32_t k = m->nearest[(size_t)r * d->in_w + c];
                    if (seen) {
                        if (seen[k] == (int64_t)o) continue;
                        seen[k] = (int64_t)o;
                    }
                    p->idx[n++] = k;
                }
        }
    }
    p->offsets[o] = (int64_t)n;
    free(seen);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_pool_plan_create(const perf_pool_desc *desc, const perf_mask *input_mask,
                                  perf_pool_plan **out) {
    static const char fn[] = "perf_pool_plan_create";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    PERF_CHECK_NOT_NULL(fn, desc);
    PERF_CHECK_POSITIVE(fn, desc->batch);
    PERF_CHECK_POSITIVE(fn, desc->channels);
    PERF_CHECK_POSITIVE(fn, desc->in_h);
    PERF_CHECK_POSITIVE(fn, desc->in_w);
    PERF_CHECK_POSITIVE(fn, desc->kernel_h);
    PERF_CHECK_POSITIVE(fn, desc->kernel_w);
    PERF_CHECK_POSITIVE(fn, desc->stride_h);
    PERF_CHECK_POSITIVE(fn, desc->stride_w);
    if (desc->mode != PERF_POOL_MAX && desc->mode != PERF_POOL_AVERAGE)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: desc->mode must be PERF_POOL_MAX (0) or PERF_POOL_AVERAGE (1), got %d", fn,
                         (int)desc->mode);
    int out_h = 0, out_w = 0;
    PERF_CHECK(pool_out_size(fn, "h", desc->in_h, desc->kernel_h, desc->stride_h, desc->pad_h, &out_h));
    PERF_CHECK(pool_out_size(fn, "w", desc->in_w, desc->kernel_w, desc->stride_w, desc->pad_w, &out_w));
    if (input_mask && (input_mask->h != desc->in_h || input_mask->w != desc->in_w))
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: input_mask is %dx%d, expected the input size %dx%d", fn, input_mask->h,
                         input_mask->w, desc->in_h, desc->in_w);
    size_t planes, in_spatial, out_spatial, total;
    size_t pd[2] = {(size_t)desc->batch, (size_t)desc->channels};
    size_t id[2] = {(size_t)desc->in_h, (size_t)desc->in_w};
    size_t od[2] = {(size_t)out_h, (size_t)out_w};
    PERF_CHECK(perf_checked_product(fn, "batch*channels", pd, 2, &planes));
    PERF_CHECK(perf_checked_product(fn, "the input map", id, 2, &in_spatial));
    PERF_CHECK(perf_checked_product(fn, "the output map", od, 2, &out_spatial));
    if (input_mask) in_spatial = (size_t)input_mask->count;
    size_t xd[2] = {planes, in_spatial}, yd[2] = {planes, out_spatial};
    size_t td[3] = {out_spatial, (size_t)desc->kernel_h, (size_t)desc->kernel_w};
    PERF_CHECK(perf_checked_product(fn, "x", xd, 2, &total));
    PERF_CHECK(perf_checked_product(fn, "y", yd, 2, &total));
    if (input_mask) PERF_CHECK(perf_checked_product(fn, "the gather table", td, 3, &total));

    perf_pool_plan *p = calloc(1, sizeof *p);
    if (!p) return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate the plan", fn);
    p->d = *desc;
    p->out_h = out_h;
    p->out_w = out_w;
    p->planes = planes;
    p->in_spatial = in_spatial;
    p->out_spatial = out_spatial;
    if (input_mask) {
        perf_status s = build_table(p, input_mask);
        if (s != PERF_STATUS_SUCCESS) {
            perf_pool_plan_destroy(p);
            return s;
        }
    }
    *out = p;
    return PERF_STATUS_SUCCESS;
}

void perf_pool_plan_destroy(perf_pool_plan *plan) {
    if (!plan) return;
    if (plan->ctx) perf_cuda_pool_plan_release(plan); /* device tables */
    free(plan->offsets);
    free(plan->idx);
    free(plan->nearest);
    free(plan);
}

perf_status perf_pool_plan_output(const perf_pool_plan *plan, int *out_h, int *out_w) {
    PERF_CHECK_NOT_NULL("perf_pool_plan_output", plan);
    PERF_CHECK_NOT_NULL("perf_pool_plan_output", out_h);
    PERF_CHECK_NOT_NULL("perf_pool_plan_output", out_w);
    *out_h = plan->out_h;
    *out_w = plan->out_w;
    return PERF_STATUS_SUCCESS;
}

/* Full input, one plane, one output row at a time; row[] holds the vertical reduction. */
static void forward_dense_plane(const perf_pool_plan *p, const float *x, float *y, float *row) {
    const perf_pool_desc *d = &p->d;
    const int in_w = d->in_w, is_max = d->mode == PERF_POOL_MAX;
    for (int oh = 0; oh < p->out_h; oh++) {
        int hs, he;
        perf_pool_window(oh, d->stride_h, d->pad_h, d->kernel_h, d->in_h, &hs, &he);
        memcpy(row, x + (size_t)hs * in_w, (size_t)in_w * sizeof *row);
        for (int r = hs + 1; r < he; r++) {
            const float *xr = x + (size_t)r * in_w;
            if (is_max)
                for (int c = 0; c < in_w; c++) row[c] = PERF_MAX_WINS(xr[c], row[c]) ? xr[c] : row[c];
            else
                for (int c = 0; c < in_w; c++) row[c] += xr[c];
        }
        /* Windows wholly inside the row, ow in [lo, hi), are reduced tap by tap: the outputs are
         * independent, so no dependency chain through one window's taps. Clipped edges go one by one. */
        const int sw = d->stride_w, off = -d->pad_w, kw = d->kernel_w;
        int lo = (int)(((long long)d->pad_w + sw - 1) / sw), /* 64-bit: stride may be near INT_MAX */
            hi = in_w - kw + d->pad_w >= 0 ? (in_w - kw + d->pad_w) / sw + 1 : 0;
        lo = lo < p->out_w ? lo : p->out_w;
        hi = hi < p->out_w ? hi : p->out_w;
        hi = hi > lo ? hi : lo;
        float *yr = y + (size_t)oh * p->out_w;
        for (int ow = lo; ow < hi; ow++) yr[ow] = row[ow * sw + off];
        /* only with an interior window (then kw <= in_w): a huge kernel over a padded row has none,
         * and kw empty passes would take seconds (found by the fuzzer: kernel_w INT32_MAX) */
        for (int j = 1; hi > lo && j < kw; j++) {
            if (is_max)
                for (int ow = lo; ow < hi; ow++)
                    yr[ow] = PERF_MAX_WINS(row[ow * sw + off + j], yr[ow]) ? row[ow * sw + off + j] : yr[ow];
            else
                for (int ow = lo; ow < hi; ow++) yr[ow] += row[ow * sw + off + j];
        }
        if (!is_max)
            for (int ow = lo; ow < hi; ow++) yr[ow] /= (float)((he - hs) * kw);
        for (int ow = 0; ow < p->out_w; ow++) {
            if (ow == lo) ow = hi;
            if (ow >= p->out_w) break;
            int ws, we;
            perf_pool_window(ow, sw, d->pad_w, kw, in_w, &ws, &we);
            const float v = span_reduce(row, ws, we, is_max);
            yr[ow] = is_max ? v : v / (float)((he - hs) * (we - ws));
        }
    }
}

/* Full input, window (oh, ow): returns the plane index of its first maximum (row-major) and sets
 * *value to the max or the average. Serves the backward and maps wider than POOL_ROW_BUFFER. */
static size_t dense_reduce(const perf_pool_plan *p, const float *x, int oh, int ow, float *value) {
    const perf_pool_desc *d = &p->d;
    int hs, he, ws, we;
    perf_pool_window(oh, d->stride_h, d->pad_h, d->kernel_h, d->in_h, &hs, &he);
    perf_pool_window(ow, d->stride_w, d->pad_w, d->kernel_w, d->in_w, &ws, &we);
    const size_t in_w = (size_t)d->in_w;
    size_t best = (size_t)hs * in_w + ws;
    float v = x[best];
    if (d->mode == PERF_POOL_MAX) {
        for (size_t r = (size_t)hs; r < (size_t)he; r++)
            for (int c = ws; c < we; c++)
                if (PERF_MAX_WINS(x[r * in_w + c], v)) v = x[best = r * in_w + c];
    } else {
        v = 0.0f;
        for (size_t r = (size_t)hs; r < (size_t)he; r++) v += span_reduce(x + r * in_w, ws, we, 0);
        v /= (float)((he - hs) * (we - ws));
    }
    *value = v;
    return best;
}

/* Max backward of one full plane (dx zeroed): the window maxima come from the vectorised forward,
 * then each window's gradient goes to its first element equal to its maximum, which is the first
 * maximum of the comparison order (ties keep the earlier element; -0 == +0 finds the first zero
 * either way). The search is branch-free (a conditional move per element, scanning backwards):
 * recomputing the running maximum with branches mispredicted on real data and ran 8x slower than
 * the forward. A NaN maximum (equal to nothing) takes the recomputing path. */
static void max_backward_dense_plane(const perf_pool_plan *p, const float *x, const float *dy, float *dx) {
    const perf_pool_desc *d = &p->d;
    const size_t in_w = (size_t)d->in_w;
    float ymax[POOL_PLANE_BUFFER], row[POOL_ROW_BUFFER];
    forward_dense_plane(p, x, ymax, row);
    for (int oh = 0; oh < p->out_h; oh++) {
        int hs, he;
        perf_pool_window(oh, d->stride_h, d->pad_h, d->kernel_h, d->in_h, &hs, &he);
        for (int ow = 0; ow < p->out_w; ow++) {
            const size_t o = (size_t)oh * p->out_w + ow;
            const float m = ymax[o];
            if (m != m) {
                float v;
                dx[dense_reduce(p, x, oh, ow, &v)] += dy[o];
                continue;
            }
            int ws, we;
            perf_pool_window(ow, d->stride_w, d->pad_w, d->kernel_w, d->in_w, &ws, &we);
            size_t best = 0;
            for (size_t r = (size_t)he; r-- > (size_t)hs;) /* backwards: the earliest match is kept */
                for (int c = we - 1; c >= ws; c--) best = x[r * in_w + c] == m ? r * in_w + c : best;
            dx[best] += dy[o];
        }
    }
}

perf_status perf_pool_forward(const perf_pool_plan *plan, const float *x, float *y) {
    PERF_CHECK_NOT_NULL("perf_pool_forward", plan);
    PERF_CHECK_NOT_NULL("perf_pool_forward", x);
    PERF_CHECK_NOT_NULL("perf_pool_forward", y);
    if (plan->ctx) return perf_cuda_pool_forward(plan, x, y);
    const perf_pool_plan *p = plan;
    const long long planes = (long long)p->planes;
    const int is_max = p->d.mode == PERF_POOL_MAX;
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < planes; i++) {
        const float *xp = x + (size_t)i * p->in_spatial;
        float *yp = y + (size_t)i * p->out_spatial;
        const size_t full = (size_t)p->d.in_h * (size_t)p->d.in_w;
        if (p->offsets && full <= POOL_PLANE_BUFFER && p->d.in_w <= POOL_ROW_BUFFER) {
            /* Interpolate the plane, then pool it densely: the same result as the table (max over a
             * window's positions = max over its distinct compact indices, NaN included; the average
             * counts duplicates), through the vectorised separable loops instead of short gathers. */
            float plane[POOL_PLANE_BUFFER], row[POOL_ROW_BUFFER];
            for (size_t s = 0; s < full; s++) plane[s] = xp[p->nearest[s]];
            forward_dense_plane(p, plane, yp, row);
        } else if (p->offsets) {
            for (size_t o = 0; o < p->out_spatial; o++) {
                const int64_t a = p->offsets[o], b = p->offsets[o + 1];
                float v = xp[p->idx[a]];
                if (is_max) {
                    for (int64_t j = a + 1; j < b; j++) v = PERF_MAX_WINS(xp[p->idx[j]], v) ? xp[p->idx[j]] : v;
                } else {
                    for (int64_t j = a + 1; j < b; j++) v += xp[p->idx[j]];
                    v /= (float)(b - a);
                }
                yp[o] = v;
            }
        } else if (p->d.in_w <= POOL_ROW_BUFFER) {
            float row[POOL_ROW_BUFFER];
            forward_dense_plane(p, xp, yp, row);
        } else {
            for (int oh = 0; oh < p->out_h; oh++)
                for (int ow = 0; ow < p->out_w; ow++)
                    dense_reduce(p, xp, oh, ow, &yp[(size_t)oh * p->out_w + ow]);
        }
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_pool_backward(const perf_pool_plan *plan, const float *x, const float *dy, float *dx) {
    PERF_CHECK_NOT_NULL("perf_pool_backward", plan);
    PERF_CHECK_NOT_NULL("perf_pool_backward", dy);
    PERF_CHECK_NOT_NULL("perf_pool_backward", dx);
    const int is_max = plan->d.mode == PERF_POOL_MAX;
    if (is_max && !x)
        return perf_fail(
            PERF_STATUS_INVALID_ARGUMENT,
            "perf_pool_backward: x must not be NULL for max pooling (the argmax is recomputed from it)");
    if (plan->ctx) return perf_cuda_pool_backward(plan, x, dy, dx);
    const perf_pool_plan *p = plan;
    const long long planes = (long long)p->planes;
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < planes; i++) {
        const float *xp = is_max ? x + (size_t)i * p->in_spatial : NULL;
        const float *dyp = dy + (size_t)i * p->out_spatial;
        float *dxp = dx + (size_t)i * p->in_spatial;
        memset(dxp, 0, p->in_spatial * sizeof *dxp);
        if (p->offsets) {
            for (size_t o = 0; o < p->out_spatial; o++) {
                const int64_t a = p->offsets[o], b = p->offsets[o + 1];
                if (is_max) {
                    int64_t best = a;
                    for (int64_t j = a + 1; j < b; j++)
                        if (PERF_MAX_WINS(xp[p->idx[j]], xp[p->idx[best]])) best = j;
                    dxp[p->idx[best]] += dyp[o];
                } else {
                    const float g = dyp[o] / (float)(b - a);
                    for (int64_t j = a; j < b; j++) dxp[p->idx[j]] += g;
                }
            }
            continue;
        }
        if (is_max && p->d.in_w <= POOL_ROW_BUFFER && p->out_spatial <= POOL_PLANE_BUFFER) {
            max_backward_dense_plane(p, xp, dyp, dxp);
            continue;
        }
        const size_t in_w = (size_t)p->d.in_w;
        for (int oh = 0; oh < p->out_h; oh++)
            for (int ow = 0; ow < p->out_w; ow++) {
                const float g = dyp[(size_t)oh * p->out_w + ow];
                if (is_max) {
                    float v;
                    dxp[dense_reduce(p, xp, oh, ow, &v)] += g;
                    continue;
                }
                const perf_pool_desc *d = &p->d;
                int hs, he, ws, we;
                perf_pool_window(oh, d->stride_h, d->pad_h, d->kernel_h, d->in_h, &hs, &he);
                perf_pool_window(ow, d->stride_w, d->pad_w, d->kernel_w, d->in_w, &ws, &we);
                const float gn = g / (float)((he - hs) * (we - ws));
                for (size_t r = (size_t)hs; r < (size_t)he; r++)
                    for (int c = ws; c < we; c++) dxp[r * in_w + c] += gn;
            }
    }
    return PERF_STATUS_SUCCESS;
}
