/*
 * mask_gen.c - mask generators (SPEC 4): Uniform, Grid, Pooling structure, from scores (Impact).
 *
 * All but Grid keep the top-`count` positions of a score map, count = perf_mask_count_for_rate.
 * Ranking is the total order (score descending, key ascending, p ascending) with the seeded key
 *     key(p) = perf_splitmix64(seed ^ perf_splitmix64((uint64_t)p)),
 * so equal scores are broken reproducibly. Uniform is this ranking with all scores equal: `count`
 * positions without replacement, and masks of one seed are nested across rates. The ranking is a
 * qsort of one record per position (O(hw log hw)); the chosen positions are then marked in a [h*w]
 * byte map and read back in row-major order, which yields the strictly increasing indices[].
 *
 * Grid draws u = unit(key(0)), v = unit(key(1)) (perf_unit_double) and takes the product set of
 * rows a_i = ceil((h/n_h)*(i+u)) - 1 and cols b_j = ceil((w/n_w)*(j+v)) - 1 (SPEC 4.2); see
 * grid_shape for n_h, n_w.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"


static uint64_t position_key(uint64_t seed, int64_t p) {
    return perf_splitmix64(seed ^ perf_splitmix64((uint64_t)p));
}

typedef struct rank_record {
    double score;
    uint64_t key;
    int32_t p;
} rank_record;

static int rank_compare(const void *a, const void *b) {
    const rank_record *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->p > y->p) - (x->p < y->p);
}

/* Keep the top `count` of scores[h*w] (NULL: all equal) and build the mask. */
static perf_status mask_from_ranking(const char *fn, int h, int w, int count, const double *scores,
                                     uint64_t seed, perf_mask **out) {
    const size_t hw = (size_t)h * (size_t)w;
    rank_record *rec = malloc(hw * sizeof *rec);
    unsigned char *chosen = calloc(hw, 1);
    int32_t *indices = malloc((size_t)count * sizeof *indices);
    if (!rec || !chosen || !indices) {
        free(rec);
        free(chosen);
        free(indices);
        return perf_fail(PERF_STATUS_OUT_OF_MEMORY,
                         "%s: cannot allocate ranking buffers for a %dx%d map", fn, h, w);
    }
    for (size_t p = 0; p < hw; p++) {
        rec[p].score = scores ? scores[p] : 0.0;
        rec[p].key = position_key(seed, (int64_t)p);
        rec[p].p = (int32_t)p;
    }
    qsort(rec, hw, sizeof *rec, rank_compare);
    for (int k = 0; k < count; k++) chosen[rec[k].p] = 1;
    int n = 0;
    for (size_t p = 0; p < hw; p++)
        if (chosen[p]) indices[n++] = (int32_t)p;
    perf_status st = perf_mask_create(h, w, count, indices, seed, out);
    free(rec);
    free(chosen);
    free(indices);
    return st;
}

perf_status perf_mask_uniform(int h, int w, double rate, uint64_t seed, perf_mask **out) {
    static const char fn[] = "perf_mask_uniform";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    int count;
    PERF_CHECK(perf_mask_count_checked(fn, h, w, rate, &count));
    return mask_from_ranking(fn, h, w, count, NULL, seed, out);
}

/* The grid n_h x n_w: the largest grid of the map's aspect that fits the budget B = count_for_rate.
 * Family: n_h(t) = clamp(floor(t*h), 1, h), n_w(t) = clamp(floor(t*w), 1, w), t in (0, 1]; both are
 * non-decreasing in t, so the largest product <= B over the family's breakpoints t = a/h, t = b/w
 * is the answer. On a square map this is n_h = n_w = floor(sqrt(B)) = floor(sqrt((1-r)*h*w)),
 * SPEC's rule; on other maps n_h/n_w stays close to h/w (a pure product maximisation would favour
 * skewed grids such as whole rows). */
static void grid_shape(int h, int w, int budget, int *n_h, int *n_w) {
    int64_t best = 0;
    *n_h = *n_w = 1;
    for (int pass = 0; pass < 2; pass++) {
        const int steps = pass == 0 ? h : w;
        for (int a = 1; a <= steps; a++) {
            int64_t gh = pass == 0 ? a : (int64_t)a * h / w;
            int64_t gw = pass == 0 ? (int64_t)a * w / h : a;
            if (gh < 1) gh = 1;
            if (gw < 1) gw = 1;
            if (gh * gw <= budget && gh * gw > best) {
                best = gh * gw;
                *n_h = (int)gh;
                *n_w = (int)gw;
            }
        }
    }
}

/* Positions ceil((size/n)*(i+u)) - 1, i = 0..n-1: strictly increasing because size/n >= 1. */
static void grid_axis(int size, int n, double u, int32_t *pos) {
    const double step = (double)size / n;
    for (int i = 0; i < n; i++) {
        double a = ceil(step * (i + u)) - 1.0;
        if (a < 0.0) a = 0.0; /* u == 0 exactly */
        if (a > size - 1) a = size - 1;
        pos[i] = (int32_t)a;
    }
}

perf_status perf_mask_grid(int h, int w, double rate, uint64_t seed, perf_mask **out) {
    static const char fn[] = "perf_mask_grid";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    int budget, n_h, n_w;
    PERF_CHECK(perf_mask_count_checked(fn, h, w, rate, &budget));
    grid_shape(h, w, budget, &n_h, &n_w);
    const double u = perf_unit_double(position_key(seed, 0));
    const double v = perf_unit_double(position_key(seed, 1));
    const int count = n_h * n_w;
    int32_t *rows = malloc((size_t)n_h * sizeof *rows);
    int32_t *cols = malloc((size_t)n_w * sizeof *cols);
    int32_t *indices = malloc((size_t)count * sizeof *indices);
    if (!rows || !cols || !indices) {
        free(rows);
        free(cols);
        free(indices);
        return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate a %dx%d grid", fn, n_h,
                         n_w);
    }
    grid_axis(h, n_h, u, rows);
    grid_axis(w, n_w, v, cols);
    for (int i = 0; i < n_h; i++)
        for (int j = 0; j < n_w; j++) indices[i * n_w + j] = rows[i] * w + cols[j];
    perf_status st = perf_mask_create(h, w, count, indices, seed, out);
    free(rows);
    free(cols);
    free(indices);
    return st;
}

/* Division rounding toward minus infinity (b > 0). */
static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* cover[in]: how many windows of the pooling layer along one axis contain each position (Caffe ceil
 * mode; windows clipped to the map, as Caffe's pooling does). */
static perf_status pool_cover(const char *fn, const char *axis, int in, int kernel, int stride,
                              int pad, int *cover) {
    if (kernel < 1 || stride < 1 || pad < 0 || pad >= kernel)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: pooling %s needs kernel >= 1, stride >= 1, 0 <= pad < kernel, got "
                         "kernel %d, stride %d, pad %d",
                         fn, axis, kernel, stride, pad);
    const int64_t padded = (int64_t)in + 2 * (int64_t)pad;
    if (kernel > padded)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: pooling kernel %s %d exceeds the padded map size %lld", fn, axis,
                         kernel, (long long)padded);
    int64_t outs = (padded - kernel + stride - 1) / stride + 1;
    if ((outs - 1) * stride >= (int64_t)in + pad) outs--; /* as pool.c: no window starts past the map */
    /* Count, per position, the windows o in [0, outs) with o*stride - pad <= i < o*stride - pad +
     * kernel, in closed form: a loop over the windows would take O(outs), and a huge pad and kernel
     * make outs huge for a small map. */
    for (int64_t i = 0; i < in; i++) {
        int64_t hi = floor_div(i + pad, stride);
        if (hi > outs - 1) hi = outs - 1;
        int64_t lo = floor_div(i + pad - kernel, stride) + 1;
        if (lo < 0) lo = 0;
        cover[i] = hi >= lo ? (int)(hi - lo + 1) : 0;
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_mask_pooling(int h, int w, double rate, int pool_kernel_h, int pool_kernel_w,
                              int pool_stride_h, int pool_stride_w, int pool_pad_h, int pool_pad_w,
                              uint64_t seed, perf_mask **out) {
    static const char fn[] = "perf_mask_pooling";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    int count;
    PERF_CHECK(perf_mask_count_checked(fn, h, w, rate, &count));
    const size_t hw = (size_t)h * (size_t)w;
    int *cover_h = malloc((size_t)h * sizeof *cover_h);
    int *cover_w = malloc((size_t)w * sizeof *cover_w);
    double *scores = malloc(hw * sizeof *scores);
    perf_status st = PERF_STATUS_SUCCESS;
    if (!cover_h || !cover_w || !scores)
        st = perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate scores for a %dx%d map", fn,
                       h, w);
    if (st == PERF_STATUS_SUCCESS)
        st = pool_cover(fn, "height", h, pool_kernel_h, pool_stride_h, pool_pad_h, cover_h);
    if (st == PERF_STATUS_SUCCESS)
        st = pool_cover(fn, "width", w, pool_kernel_w, pool_stride_w, pool_pad_w, cover_w);
    if (st == PERF_STATUS_SUCCESS) {
        /* A window set is a product of row and column windows: coverage factorises. */
        for (int r = 0; r < h; r++)
            for (int c = 0; c < w; c++) scores[(size_t)r * w + c] = (double)cover_h[r] * cover_w[c];
        st = mask_from_ranking(fn, h, w, count, scores, seed, out);
    }
    free(cover_h);
    free(cover_w);
    free(scores);
    return st;
}

perf_status perf_mask_from_scores(int h, int w, double rate, const float *scores, uint64_t seed,
                                  perf_mask **out) {
    static const char fn[] = "perf_mask_from_scores";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    int count;
    PERF_CHECK(perf_mask_count_checked(fn, h, w, rate, &count));
    PERF_CHECK_NOT_NULL(fn, scores);
    const size_t hw = (size_t)h * (size_t)w;
    for (size_t p = 0; p < hw; p++)
        if (!isfinite(scores[p]))
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                             "%s: scores must be finite, got scores[%zu] = %g", fn, p,
                             (double)scores[p]);
    double *wide = malloc(hw * sizeof *wide);
    if (!wide)
        return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate scores for a %dx%d map",
                         fn, h, w);
    for (size_t p = 0; p < hw; p++) wide[p] = scores[p];
    perf_status st = mask_from_ranking(fn, h, w, count, wide, seed, out);
    free(wide);
    return st;
}
