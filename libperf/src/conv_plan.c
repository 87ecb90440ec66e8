/*
 * conv_plan.c - validation of convolution descriptors and the plan's gather table.
 *
 * table[j][t] is the index, inside one input plane, that kernel tap t (= ki*kernel_w + kj) of the j-th
 * computed output position reads: in_row*in_w + in_col for a full input, nearest[that] for a compact
 * input (implicit interpolation, SPEC 2), or -1 where the tap falls in the zero padding. Built once;
 * every forward and backward call only follows it. origin[j] marks the positions whose taps all fall
 * inside a full input: im2row copies their kernel rows as contiguous runs instead of following the table.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "conv_internal.h"
#include "device_internal.h"
#include "cpu/igemm.h"

/* Rows per GEMM chunk: a thread's im2row chunk (chunk_rows x k_gemm floats) is kept near 2 MiB so it
 * is written and read back from cache, with at least 256 rows so single-threaded SGEMM stays
 * efficient, and small enough that every thread gets about four chunks to balance the load. */
static int choose_chunk_rows(size_t total_rows, int k_gemm, int threads) {
    size_t rows = ((size_t)2 << 20) / (sizeof(float) * (size_t)k_gemm);
    size_t balanced = (total_rows + 4 * (size_t)threads - 1) / (4 * (size_t)threads);
    if (rows > balanced) rows = balanced;
    if (rows < 256) rows = 256;
    if (rows > 4096) rows = 4096;
    if (rows > total_rows) rows = total_rows;
    return (int)rows;
}

/* The shifted-GEMM forward (cpu/conv_shift.c) for stride-1 convolutions without masks whose im2row
 * gather costs more than the GEMM it feeds: kernels that are a line (d x 1 or 1 x d, the halves of a
 * spatial low-rank decomposition), and k x k layers with fewer filters than input channels (at least
 * 32 per group; the first half of a channel decomposition, AlexNet's conv5) on maps at least 13 wide
 * (the padded columns are wasted work). Measured on a 2-core EPYC (python -m bench.conv_paths,
 * results/conv_paths.md): 1.1-2.1x faster on those layers. On layers with as many filters as inputs or
 * more (most of VGG-16, NIN, AlexNet conv3/conv4) it was 0.88-1.43x per layer, and taking it for them
 * left the whole dense VGG-16 at batch 16 no faster (4.01-4.13 s against 4.03 s), so they keep im2row.
 * Needs a task (image, group) per thread, sizes that BLAS's int takes, and a bounded per-thread slot
 * (perf_conv_shift_workspace_floats returns 0 past PERF_SHIFT_SLOT_MAX_FLOATS).
 * PERF_CONV_PATH=im2row or =shift (where allowed) overrides the choice, to measure both. */
static int use_shift(const perf_conv_plan *p, const perf_mask *output_mask, const perf_mask *input_mask) {
    const perf_conv_desc *d = &p->d;
    if (p->pointwise || output_mask || input_mask || d->stride_h != 1 || d->stride_w != 1 || d->dilation_h != 1 ||
        d->dilation_w != 1)
        return 0;
    long long hp = (long long)d->in_h + 2LL * d->pad_h, wp = (long long)d->in_w + 2LL * d->pad_w;
    if (hp * wp > INT32_MAX / 2) return 0;
    const char *force = getenv("PERF_CONV_PATH");
    if (force && strcmp(force, "im2row") == 0) return 0;
    if (force && strcmp(force, "shift") == 0) return 1;
    if ((long long)d->batch * d->groups < p->threads) return 0;
    if (d->kernel_h == 1 || d->kernel_w == 1) return 1;
    return p->cin_g >= 32 && p->cout_g < p->cin_g && p->out_w >= 13;
}

/* Input rows (or columns) one window spans: dilation * (kernel - 1) + 1, dilation 0 read as 1. */
static long long span(int kernel, int dilation) { return (long long)(dilation > 1 ? dilation : 1) * (kernel - 1) + 1; }

static perf_status validate_desc(const char *fn, const perf_conv_desc *d) {
    PERF_CHECK_POSITIVE(fn, d->batch);
    PERF_CHECK_POSITIVE(fn, d->in_channels);
    PERF_CHECK_POSITIVE(fn, d->in_h);
    PERF_CHECK_POSITIVE(fn, d->in_w);
    PERF_CHECK_POSITIVE(fn, d->out_channels);
    PERF_CHECK_POSITIVE(fn, d->kernel_h);
    PERF_CHECK_POSITIVE(fn, d->kernel_w);
    PERF_CHECK_POSITIVE(fn, d->stride_h);
    PERF_CHECK_POSITIVE(fn, d->stride_w);
    PERF_CHECK_POSITIVE(fn, d->groups);
    if (d->pad_h < 0 || d->pad_w < 0)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: padding must be >= 0, got %dx%d", fn,
                         d->pad_h, d->pad_w);
    if (d->in_channels % d->groups != 0 || d->out_channels % d->groups != 0)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: groups (%d) must divide in_channels (%d) and out_channels (%d)", fn,
                         d->groups, d->in_channels, d->out_channels);
    if (d->dilation_h < 0 || d->dilation_w < 0)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: dilation must be >= 1 (0 means 1), got %dx%d", fn,
                         d->dilation_h, d->dilation_w);
    long long padded_h = (long long)d->in_h + 2LL * d->pad_h, padded_w = (long long)d->in_w + 2LL * d->pad_w;
    const long long span_h = span(d->kernel_h, d->dilation_h), span_w = span(d->kernel_w, d->dilation_w);
    if ((span_h > padded_h || span_w > padded_w) && span_h == d->kernel_h && span_w == d->kernel_w)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: kernel %dx%d exceeds padded input %lldx%lld", fn,
                         d->kernel_h, d->kernel_w, padded_h, padded_w);
    if (span_h > padded_h || span_w > padded_w)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: kernel %dx%d (dilation %dx%d: span %lldx%lld) exceeds padded input %lldx%lld", fn,
                         d->kernel_h, d->kernel_w, d->dilation_h ? d->dilation_h : 1,
                         d->dilation_w ? d->dilation_w : 1, span_h, span_w, padded_h, padded_w);
    if (padded_h > INT32_MAX || padded_w > INT32_MAX) /* the gather table's int coordinates stay in range */
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: padded input %lldx%lld exceeds 2^31-1 (in + 2*pad)",
                         fn, padded_h, padded_w);
    if ((long long)d->in_h * d->in_w > INT32_MAX)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: input map %dx%d has more than 2^31-1 positions",
                         fn, d->in_h, d->in_w);
    /* in two steps: the product of three ints can overflow 64 bits (found by fuzz/run.sh) */
    const long long rows = (long long)(d->in_channels / d->groups) * d->kernel_h;
    if (rows > INT32_MAX / 8 || rows * d->kernel_w > INT32_MAX / 8)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: in_channels/groups * kernel_h * kernel_w = %d * %d * %d exceeds 2^28", fn,
                         d->in_channels / d->groups, d->kernel_h, d->kernel_w);
    return PERF_STATUS_SUCCESS;
}

static perf_status check_mask_size(const char *fn, const char *what, const perf_mask *m, int h, int w) {
    if (m && (m->h != h || m->w != w))
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: %s is %dx%d, expected %dx%d", fn, what, m->h,
                         m->w, h, w);
    return PERF_STATUS_SUCCESS;
}

static void fill_table(perf_conv_plan *p, const perf_mask *output_mask, const perf_mask *input_mask) {
    const perf_conv_desc *d = &p->d;
    for (int j = 0; j < p->count; j++) {
        int pos = output_mask ? output_mask->indices[j] : j;
        int oy = pos / p->out_w, ox = pos % p->out_w;
        int32_t *row = p->table + (size_t)j * p->kk;
        /* origin: the window's kernel rows are contiguous runs of the input (no dilation, all inside) */
        int inside = !input_mask && d->dilation_h == 1 && d->dilation_w == 1 && oy * d->stride_h - d->pad_h >= 0 &&
                     ox * d->stride_w - d->pad_w >= 0 && oy * d->stride_h - d->pad_h + d->kernel_h <= d->in_h &&
                     ox * d->stride_w - d->pad_w + d->kernel_w <= d->in_w;
        p->origin[j] = inside ? (oy * d->stride_h - d->pad_h) * d->in_w + (ox * d->stride_w - d->pad_w)
                              : PERF_NO_ORIGIN;
        for (int ki = 0; ki < d->kernel_h; ki++) {
            int iy = oy * d->stride_h - d->pad_h + ki * d->dilation_h;
            for (int kj = 0; kj < d->kernel_w; kj++) {
                int ix = ox * d->stride_w - d->pad_w + kj * d->dilation_w;
                int32_t src = -1;
                if (iy >= 0 && iy < d->in_h && ix >= 0 && ix < d->in_w) {
                    src = iy * d->in_w + ix;
                    if (input_mask) src = input_mask->nearest[src];
                }
                row[ki * d->kernel_w + kj] = src;
            }
        }
    }
}

perf_status perf_conv_plan_create(const perf_conv_desc *desc, const perf_mask *output_mask,
                                  const perf_mask *input_mask, perf_conv_plan **out) {
    static const char fn[] = "perf_conv_plan_create";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL; /* a failed call leaves no stale plan behind, whatever argument was wrong */
    PERF_CHECK_NOT_NULL(fn, desc);
    PERF_CHECK(validate_desc(fn, desc));
    /* In 64 bits: in + 2*pad overflows int for a huge pad, and positions (count, mask indices) are int. */
    long long oh64 = ((long long)desc->in_h + 2LL * desc->pad_h - span(desc->kernel_h, desc->dilation_h)) /
                         desc->stride_h + 1;
    long long ow64 = ((long long)desc->in_w + 2LL * desc->pad_w - span(desc->kernel_w, desc->dilation_w)) /
                         desc->stride_w + 1;
    if (oh64 > INT32_MAX || ow64 > INT32_MAX || oh64 * ow64 > INT32_MAX)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: output map %lldx%lld has more than 2^31-1 positions", fn, oh64, ow64);
    int out_h = (int)oh64, out_w = (int)ow64;
    PERF_CHECK(check_mask_size(fn, "output_mask", output_mask, out_h, out_w));
    PERF_CHECK(check_mask_size(fn, "input_mask", input_mask, desc->in_h, desc->in_w));

    perf_conv_plan *p = calloc(1, sizeof *p);
    if (!p) return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate the plan", fn);
    p->d = *desc;
    if (p->d.dilation_h == 0) p->d.dilation_h = 1; /* stored as 1 from here on: every reader sees >= 1 */
    if (p->d.dilation_w == 0) p->d.dilation_w = 1;
    p->out_h = out_h;
    p->out_w = out_w;
    p->count = output_mask ? output_mask->count : out_h * out_w;
    p->in_spatial = input_mask ? input_mask->count : desc->in_h * desc->in_w;
    p->kk = desc->kernel_h * desc->kernel_w;
    p->cin_g = desc->in_channels / desc->groups;
    p->cout_g = desc->out_channels / desc->groups;
    p->k_gemm = p->cin_g * p->kk;
    p->pointwise = p->kk == 1 && desc->stride_h == 1 && desc->stride_w == 1 && desc->pad_h == 0 &&
                   desc->pad_w == 0 && !output_mask && !input_mask;

    /* Every tensor this plan will touch must be addressable. */
    size_t dims_x[3] = {(size_t)desc->batch, (size_t)desc->in_channels, (size_t)p->in_spatial};
    size_t dims_y[3] = {(size_t)desc->batch, (size_t)desc->out_channels, (size_t)p->count};
    size_t dims_t[2] = {(size_t)p->count, (size_t)p->kk};
    size_t n_x, n_y, n_table;
    perf_status st;
    if ((st = perf_checked_product(fn, "input", dims_x, 3, &n_x)) != PERF_STATUS_SUCCESS ||
        (st = perf_checked_product(fn, "output", dims_y, 3, &n_y)) != PERF_STATUS_SUCCESS ||
        (st = perf_checked_product(fn, "gather table", dims_t, 2, &n_table)) != PERF_STATUS_SUCCESS) {
        free(p);
        return st;
    }
    size_t total_rows = (size_t)desc->batch * (size_t)p->count;
    p->threads = perf_threads();
    p->chunk_rows = choose_chunk_rows(total_rows, p->k_gemm, p->threads);
    /* Workspace: per thread, an im2row chunk plus a chunk of GEMM outputs (or output gradients). */
    p->workspace_floats = p->pointwise ? 0
                                       : (size_t)p->threads * (size_t)p->chunk_rows *
                                             ((size_t)p->k_gemm + (size_t)desc->out_channels);
    p->shift = use_shift(p, output_mask, input_mask) && perf_conv_shift_workspace_floats(p) > 0;
    if (p->shift && perf_conv_shift_workspace_floats(p) > p->workspace_floats)
        p->workspace_floats = perf_conv_shift_workspace_floats(p); /* backward still runs im2row */
    if (!p->pointwise) {
        p->table = malloc(n_table * sizeof *p->table);
        p->origin = malloc((size_t)p->count * sizeof *p->origin);
        if (!p->table || !p->origin) {
            free(p->table);
            free(p->origin);
            free(p);
            return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate the gather table (%zu bytes)",
                             fn, n_table * sizeof(int32_t));
        }
        fill_table(p, output_mask, input_mask);
    }
    perf_cpu_conv_nhwc_setup(p);
    *out = p;
    return PERF_STATUS_SUCCESS;
}

void perf_conv_plan_destroy(perf_conv_plan *plan) {
    if (!plan) return;
    if (plan->ctx) perf_cuda_conv_plan_release(plan); /* device table */
    free(plan->table);
    free(plan->origin);
    free(plan);
}

perf_status perf_conv_plan_output(const perf_conv_plan *plan, int *out_h, int *out_w, int *count) {
    static const char fn[] = "perf_conv_plan_output";
    PERF_CHECK_NOT_NULL(fn, plan);
    if (out_h) *out_h = plan->out_h;
    if (out_w) *out_w = plan->out_w;
    if (count) *count = plan->count;
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_plan_path(const perf_conv_plan *plan, const char **path) {
    static const char fn[] = "perf_conv_plan_path";
    PERF_CHECK_NOT_NULL(fn, plan);
    PERF_CHECK_NOT_NULL(fn, path);
    *path = plan->pointwise ? "pointwise" : plan->shift ? "shift" : "im2row";
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_nhwc_workspace_size(const perf_conv_plan *plan, size_t *bytes) {
    static const char fn[] = "perf_conv_nhwc_workspace_size";
    PERF_CHECK_NOT_NULL(fn, plan);
    PERF_CHECK_NOT_NULL(fn, bytes);
    *bytes = perf_conv_nhwc_workspace_floats(plan) * sizeof(float);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_plan_kernels(const perf_conv_plan *plan, const char **name) {
    static const char fn[] = "perf_conv_plan_kernels";
    PERF_CHECK_NOT_NULL(fn, plan);
    PERF_CHECK_NOT_NULL(fn, name);
    *name = plan->isa->name;
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_workspace_size(const perf_conv_plan *plan, size_t *bytes) {
    static const char fn[] = "perf_conv_workspace_size";
    PERF_CHECK_NOT_NULL(fn, plan);
    PERF_CHECK_NOT_NULL(fn, bytes);
    *bytes = plan->workspace_floats * sizeof(float);
    return PERF_STATUS_SUCCESS;
}
