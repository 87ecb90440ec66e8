/*
 * cpu/conv_nhwc.c - the channels-last forward: an indirect GEMM over packed weights, written straight
 * into the output with bias, a per-channel scale (batch normalisation) and ReLU fused.
 *
 * Layouts: x[batch][in_spatial][in_channels] (in_spatial = in_h*in_w, or count_in for a compact input),
 * y[batch][count][out_channels] (compact when the plan has an output mask). Rows of the GEMM are the
 * computed positions of all images, r = b*count + j; columns are output channels; the inner dimension
 * is k = t*cin_g + c (tap-major, so a tap reads one contiguous run of cin_g channels).
 *
 * No im2row copy: for each row and tap the kernel gets a pointer to the run x[b][table[j][t]][g*cin_g..]
 * (a zero run where the tap is in the padding): the indirection buffer. It is filled per task for the
 * taps of one K block, so its size is bounded whatever the kernel size.
 *
 * Weights are packed at each call (one pass over them: cheap next to the GEMM of a large map, not of a
 * small one), or once by perf_conv_nhwc_pack for perf_conv_forward_nhwc_packed, into, per group, column
 * panels of NR = nv*vw channels, each [K][NR] with zeros past the last channel; the width nv is chosen
 * per layer (panel_vectors), the last panel may be narrower.
 *
 * Row runs (layers with few input channels, e.g. a network's first layer with 3): a tap with cin
 * channels gives the kernel too short a loop, so there the taps are the kernel's ROWS, each a run of
 * kernel_w*cin floats, contiguous in x wherever the whole window is inside the input (plan->origin);
 * for the other positions the task copies the window, zeros in the padding, into its own buffer.
 * The packed weights are the same (k = (ki*kernel_w + kj)*cin + c is ki-major).
 *
 * Blocking: a task is (chunk of rows, group, range of column panels: all of them unless the rows are
 * few, see perf_cpu_conv_nhwc_setup). For each K block (at most KC_BYTES of one panel's packed
 * weights: in practice the whole K, streamed from L2 and prefetched by the kernels), the task fills the
 * chunk's pointers for the block's taps, then for each of its panels runs the micro-kernel on every MR-row tile
 * of the chunk, accumulating into y (first block: from zero; last block: epilogue). Each output value
 * is summed in the same order whatever the number of threads or tasks.
 */
#include <string.h>

#include "../conv_internal.h"
#include "igemm.h"

#if defined(PERF_WITH_OPENMP)
#include <omp.h>
static int thread_id(void) { return omp_get_thread_num(); }
#else
static int thread_id(void) { return 0; }
#endif

enum {
    KC_BYTES = 1 << 20,   /* packed weights of one K block of one panel (measured: 32 KiB blocks that
                           * stay in L1 lose more to the output tile's round trips through memory than
                           * whole-K tiles lose to streaming the weights from L2) */
    KC_MAX = 4096,        /* most channels of one tap in a block (the zero run's length) */
    ROWS_MAX = 240,       /* rows per task */
    ROWS_PAD = 16,        /* pointer slots past a chunk's last row (>= the largest MR) */
    ROWRUN_CIN = 16,      /* row runs below this many input channels (measured, 2-vCPU Xeon, GFLOP/s:
                           * NIN conv1 139 -> 191, AlexNet conv1 180 -> 264, VGG-16 conv1_1 94 -> 111) */
};

static const float zero_run[KC_MAX];

/* a / b rounded up, for any a >= 0 up to INT_MAX (no a + b - 1 overflow) */
static int ceil_div(int a, int b) { return a / b + (a % b != 0); }

typedef struct panel {
    int col0, ncols, nv;
    size_t offset; /* floats from the group's packed block */
} panel;

static panel get_panel(const perf_conv_plan *p, int index) {
    const perf_igemm_isa *isa = p->isa;
    const int nr_max = isa->vw * p->nhwc_nv, full = p->cout_g / nr_max;
    panel q;
    q.col0 = index * nr_max;
    q.ncols = index < full ? nr_max : p->cout_g - q.col0;
    q.nv = index < full ? p->nhwc_nv : ceil_div(q.ncols, isa->vw);
    q.offset = (size_t)p->k_gemm * (size_t)q.col0;
    return q;
}

/* K blocks: either whole taps [t0, t1) with all cin_g channels, or one tap's channel range [c0, c1). */
typedef struct kblock {
    int t0, t1, c0, c1;
} kblock;

static int channel_splits(const perf_conv_plan *p) { return ceil_div(p->cin_g, p->nhwc_klen); }

static int taps_per_block(const perf_conv_plan *p) {
    int t = p->nhwc_klen / p->cin_g;
    return t < 1 ? 1 : t;
}

static long long kblock_count(const perf_conv_plan *p) {
    int s = channel_splits(p);
    if (s > 1) return (long long)p->kk * s;
    int tpb = taps_per_block(p);
    return ceil_div(p->kk, tpb);
}

static kblock get_kblock(const perf_conv_plan *p, long long i) {
    kblock b;
    int s = channel_splits(p);
    if (s > 1) {
        int part = (int)(i % s);
        b.t0 = (int)(i / s);
        b.t1 = b.t0 + 1;
        b.c0 = (int)((long long)p->cin_g * part / s);
        b.c1 = (int)((long long)p->cin_g * (part + 1) / s);
    } else {
        int tpb = taps_per_block(p);
        b.t0 = (int)(i * tpb);
        b.t1 = b.t0 + tpb < p->kk ? b.t0 + tpb : p->kk;
        b.c0 = 0;
        b.c1 = p->cin_g;
    }
    return b;
}

static size_t packed_floats(const perf_conv_plan *p) {
    panel last = get_panel(p, p->nhwc_panels - 1);
    size_t per_group = last.offset + (size_t)p->k_gemm * (size_t)(last.nv * p->isa->vw);
    return (size_t)p->d.groups * per_group;
}

static size_t group_stride(const perf_conv_plan *p) { return packed_floats(p) / (size_t)p->d.groups; }

static size_t pointer_slot(const perf_conv_plan *p) { /* pointers per thread */
    if (p->nhwc_rowruns) return (size_t)p->d.kernel_h * (size_t)(p->nhwc_rows + ROWS_PAD);
    int taps = channel_splits(p) > 1 ? 1 : taps_per_block(p);
    if (taps > p->kk) taps = p->kk;
    return (size_t)taps * (size_t)(p->nhwc_rows + ROWS_PAD);
}

/* Width of the column panels, in vectors (the last panel may be narrower). Fewer, wider panels mean
 * fewer passes over the input rows, which matters most where the inner dimension is short: one panel
 * when the widest tile covers the output channels; the widest tiles for 1x1 kernels; two exact panels
 * when they exist; else the set's width for wide layers. Measured on the 2-vCPU Xeon (GFLOP/s, panels
 * of 2 / 3 / 4 vectors): 1x1 192 -> 192 channels at 16x16, batch 128: 232 / 238 / 258; 160 -> 96
 * (NIN cccp2): 195 / 217 / 199; 3x3 64 -> 64 (VGG-16 conv1_2): 258 / 262 / 285; 5x5 and 3x3 layers
 * with 192-512 channels: within 2% of each other. */
static int panel_vectors(const perf_igemm_isa *isa, int cout_g, int kk) {
    const int vectors = ceil_div(cout_g, isa->vw);
    if (vectors <= isa->nv_max) return vectors;
    for (int nv = 1; nv <= isa->nv_max; nv++)
        if (cout_g / 2 == nv * isa->vw && cout_g % 2 == 0) return nv;
    return kk == 1 ? isa->nv_max : isa->nv_wide;
}

void perf_cpu_conv_nhwc_setup(perf_conv_plan *p) {
    p->isa = perf_igemm_isa_select();
    p->nhwc_nv = panel_vectors(p->isa, p->cout_g, p->kk);
    const int nr_max = p->isa->vw * p->nhwc_nv;
    p->nhwc_panels = ceil_div(p->cout_g, nr_max);
    int widest = p->cout_g < nr_max ? ceil_div(p->cout_g, p->isa->vw) * p->isa->vw : nr_max;
    int klen = KC_BYTES / (int)(sizeof(float) * (size_t)widest);
    p->nhwc_klen = klen > KC_MAX ? KC_MAX : klen;
    /* Rows per task: at most ROWS_MAX, at least four tasks per thread, the task count a multiple of
     * the thread count and the rows split evenly between the chunks (measured with ConvPlan.forward_nhwc:
     * VGG-16 conv5 at batch 16, 3136 rows, had 13 chunks of 238 and one of 42, one thread idle for most
     * of a task: 282 GFLOP/s; 14 chunks of 224: 299), in whole tiles of the widest panels.
     * Few rows (a small map at batch 1): every task that covers all the panels streams all the weights,
     * so cutting the rows finer multiplies the weight traffic; there the rows stay in as few chunks as
     * ROWS_MAX allows and the panels are split between tasks instead (a 2-D partition). */
    const size_t total = (size_t)p->d.batch * (size_t)p->count, G = (size_t)p->d.groups;
    const size_t T = (size_t)p->threads, mr = (size_t)p->isa->rows[p->nhwc_nv];
    size_t tasks = (total * G + ROWS_MAX - 1) / ROWS_MAX;
    size_t psplit = 1;
    if (tasks < 4 * T && p->nhwc_panels > 1) {
        psplit = (4 * T + tasks - 1) / tasks;
        if (psplit > (size_t)p->nhwc_panels) psplit = (size_t)p->nhwc_panels;
    }
    if (tasks * psplit < 4 * T) tasks = (4 * T + psplit - 1) / psplit;
    tasks = (tasks * psplit + T - 1) / T * T / psplit;
    if (tasks < 1) tasks = 1;
    size_t chunks = (tasks + G - 1) / G;
    size_t rows = (total + chunks - 1) / chunks;
    rows = (rows + mr - 1) / mr * mr;
    if (rows > ROWS_MAX) rows = ROWS_MAX / mr * mr;
    p->nhwc_psplit = (int)psplit;
    p->nhwc_rows = (int)rows;
    p->nhwc_rowruns = p->table && p->origin && p->d.groups == 1 && p->d.kernel_w > 1 && p->d.dilation_w == 1 &&
                      p->d.dilation_h == 1 && p->cin_g < ROWRUN_CIN &&
                      p->k_gemm <= p->nhwc_klen;
}

/* Floats of one thread's window copies (row runs: every row of a task may need one). */
static size_t window_floats(const perf_conv_plan *p) {
    return p->nhwc_rowruns ? (size_t)p->nhwc_rows * (size_t)p->k_gemm : 0;
}

size_t perf_conv_nhwc_workspace_floats(const perf_conv_plan *p) {
    /* 16 floats of slack to align the packed weights to 64 bytes; pointers take two floats each */
    return 16 + packed_floats(p) +
           (size_t)p->threads * (pointer_slot(p) * (sizeof(void *) / sizeof(float)) + window_floats(p));
}

static void pack_weights(const perf_conv_plan *p, const float *w, float *packed) {
    const int kk = p->kk, cin_g = p->cin_g, np = p->nhwc_panels, vw = p->isa->vw;
    const size_t gstride = group_stride(p);
    const long long items = (long long)p->d.groups * np * kk;
#pragma omp parallel for schedule(static) num_threads(p->threads) if (packed_floats(p) >= PERF_PARALLEL_MIN)
    for (long long item = 0; item < items; item++) {
        const int t = (int)(item % kk), pi = (int)(item / kk % np), g = (int)(item / kk / np);
        const panel q = get_panel(p, pi);
        const int nr = q.nv * vw;
        float *dst = packed + (size_t)g * gstride + q.offset + (size_t)t * cin_g * nr;
        const float *src = w + ((size_t)g * p->cout_g + q.col0) * (size_t)cin_g * kk + t;
        for (int c = 0; c < cin_g; c++, dst += nr) {
            int n = 0;
            for (; n < q.ncols; n++) dst[n] = src[((size_t)n * cin_g + c) * kk];
            for (; n < nr; n++) dst[n] = 0.0f;
        }
    }
}

/* Pointers of rows [r0, r0 + n) for the taps of block kb, [tap][rows + ROWS_PAD]; rows past n repeat
 * row 0 (valid memory; their results are never stored). */
static void fill_pointers(const perf_conv_plan *p, const float *x, int g, size_t r0, int n, kblock kb,
                          const float **ptr) {
    const size_t stride = (size_t)p->nhwc_rows + ROWS_PAD, count = (size_t)p->count;
    const size_t cin = (size_t)p->d.in_channels, plane = (size_t)p->in_spatial;
    const size_t choff = (size_t)g * p->cin_g + (size_t)kb.c0;
    for (int t = kb.t0; t < kb.t1; t++) {
        const float **row = ptr + (size_t)(t - kb.t0) * stride;
        size_t b = r0 / count, j = r0 % count;
        for (int i = 0; i < n; i++) {
            long idx = p->table ? p->table[j * (size_t)p->kk + t] : (long)j;
            row[i] = idx >= 0 ? x + (b * plane + (size_t)idx) * cin + choff : zero_run;
            if (++j == count) j = 0, b++;
        }
        for (int i = n; i < n + ROWS_PAD; i++) row[i] = row[0];
    }
}

/* Whether the mr pointers (one tap, consecutive rows) all point into the padding. */
static int all_padding(const float *const *row, int mr) {
    for (int i = 0; i < mr; i++)
        if (row[i] != zero_run) return 0;
    return 1;
}

/* Row runs: pointers of rows [r0, r0 + n) for each kernel row, [ki][rows + ROWS_PAD]; a window not
 * wholly inside the input is copied (zeros in the padding) into win[i][k_gemm]. */
static void fill_row_runs(const perf_conv_plan *p, const float *x, size_t r0, int n, const float **ptr,
                          float *win) {
    const size_t stride = (size_t)p->nhwc_rows + ROWS_PAD, count = (size_t)p->count;
    const size_t cin = (size_t)p->d.in_channels, plane = (size_t)p->in_spatial, in_w = (size_t)p->d.in_w;
    const int kh = p->d.kernel_h, kw = p->d.kernel_w, run = kw * p->cin_g;
    size_t b = r0 / count, j = r0 % count;
    for (int i = 0; i < n; i++) {
        const int32_t o = p->origin[j];
        if (o != PERF_NO_ORIGIN) {
            const float *base = x + (b * plane + (size_t)o) * cin;
            for (int ki = 0; ki < kh; ki++) ptr[(size_t)ki * stride + i] = base + (size_t)ki * in_w * cin;
        } else {
            float *dst = win + (size_t)i * p->k_gemm;
            for (int ki = 0; ki < kh; ki++) {
                ptr[(size_t)ki * stride + i] = dst + (size_t)ki * run;
                for (int kj = 0; kj < kw; kj++) {
                    const int32_t idx = p->table[j * (size_t)p->kk + (size_t)(ki * kw + kj)];
                    float *d = dst + (size_t)ki * run + (size_t)kj * cin;
                    if (idx >= 0)
                        memcpy(d, x + (b * plane + (size_t)idx) * cin, cin * sizeof(float));
                    else
                        memset(d, 0, cin * sizeof(float));
                }
            }
        }
        if (++j == count) j = 0, b++;
    }
    for (int ki = 0; ki < kh; ki++) {
        const float **row = ptr + (size_t)ki * stride;
        for (int i = n; i < n + ROWS_PAD; i++) row[i] = row[0];
    }
}

size_t perf_conv_nhwc_packed_floats(const perf_conv_plan *p) { return packed_floats(p); }

void perf_cpu_conv_nhwc_pack(const perf_conv_plan *p, const float *w, float *packed) { pack_weights(p, w, packed); }

void perf_cpu_conv_forward_nhwc(const perf_conv_plan *p, const float *x, const float *w, const float *prepacked,
                                const float *scale, const float *bias, const float *res, int relu, float *y,
                                float *ws) {
    float *own = (float *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    const float **ptr_base = (const float **)(own + packed_floats(p));
    const float *packed = prepacked;
    if (!packed) {
        pack_weights(p, w, own);
        packed = own;
    }
    const perf_igemm_isa *isa = p->isa;
    const int G = p->d.groups, chunk = p->nhwc_rows, cout = p->d.out_channels;
    const size_t total = (size_t)p->d.batch * (size_t)p->count, gstride = group_stride(p);
    const int psplit = p->nhwc_psplit;
    const long long nchunks = (long long)((total + chunk - 1) / chunk), tasks = nchunks * G * psplit;
    const int rowruns = p->nhwc_rowruns;
    const long long nblocks = rowruns ? 1 : kblock_count(p);
    const size_t slot = pointer_slot(p), stride = (size_t)chunk + ROWS_PAD;
    float *win_base = (float *)(ptr_base + (size_t)p->threads * slot);
#pragma omp parallel for schedule(dynamic, 1) num_threads(p->threads)
    for (long long task = 0; task < tasks; task++) {
        const int g = (int)(task % G), part = (int)(task / G % psplit);
        const size_t r0 = (size_t)(task / G / psplit) * chunk;
        const int pi0 = (int)((long long)p->nhwc_panels * part / psplit),
                  pi1 = (int)((long long)p->nhwc_panels * (part + 1) / psplit);
        const int n = total - r0 < (size_t)chunk ? (int)(total - r0) : chunk;
        const float **ptr = ptr_base + (size_t)thread_id() * slot;
        for (long long bi = 0; bi < nblocks; bi++) {
            kblock kb = {0, p->kk, 0, p->cin_g};
            int clen, ntaps;
            if (rowruns) {
                clen = p->d.kernel_w * p->cin_g;
                ntaps = p->d.kernel_h;
                fill_row_runs(p, x, r0, n, ptr, win_base + (size_t)thread_id() * window_floats(p));
            } else {
                kb = get_kblock(p, bi);
                clen = kb.c1 - kb.c0;
                ntaps = kb.t1 - kb.t0;
                fill_pointers(p, x, g, r0, n, kb, ptr);
            }
            for (int pi = pi0; pi < pi1; pi++) {
                const panel q = get_panel(p, pi);
                const int MR = isa->rows[q.nv], nr = q.nv * isa->vw;
                const int col = g * p->cout_g + q.col0;
                perf_igemm_args a;
                a.a_stride = stride;
                a.ntaps = ntaps;
                a.clen = clen;
                a.w = packed + (size_t)g * gstride + q.offset + ((size_t)kb.t0 * p->cin_g + kb.c0) * nr;
                a.ldy = (size_t)cout;
                a.ncols = q.ncols;
                a.first = bi == 0;
                a.last = bi == nblocks - 1;
                a.relu = relu;
                a.scale = scale ? scale + col : NULL;
                a.bias = bias ? bias + col : NULL;
                const float *w0 = a.w;
                for (int m0 = 0; m0 < n; m0 += MR) {
                    a.mr = n - m0 < MR ? n - m0 : MR;
                    /* taps in the padding for every row of the tile, at the start or the end of the
                     * block (kernel rows above or below the map), are skipped, not multiplied by zeros */
                    int t_lo = 0, t_hi = ntaps;
                    if (!rowruns) {
                        while (t_lo < t_hi && all_padding(ptr + (size_t)t_lo * stride + m0, a.mr)) t_lo++;
                        while (t_hi > t_lo && all_padding(ptr + (size_t)(t_hi - 1) * stride + m0, a.mr)) t_hi--;
                    }
                    a.a = ptr + (size_t)t_lo * stride + m0;
                    a.ntaps = t_hi - t_lo;
                    a.w = w0 + (size_t)t_lo * (size_t)clen * (size_t)nr;
                    a.y = y + (r0 + (size_t)m0) * cout + col;
                    a.res = res ? res + (r0 + (size_t)m0) * cout + col : NULL;
                    isa->fn[q.nv](&a);
                }
            }
        }
    }
}
