/*
 * cpu/conv.c - perforated convolution on the CPU: im2row over the plan's gather table, then SGEMM.
 *
 * Buffers (rows are numbered r = b*count + j, see conv_internal.h):
 *   rows[n][k_gemm]   row i is the receptive field of computed row r0+i, for one group g:
 *                     rows[i][c*kk + t] = x[b][g*cin_g + c][table[j][t]] (0 in the padding)
 *   gemm[n][Cout]     rows . W_g^T for every group side by side (ldc = Cout)
 *   y[b][co][j]       the (compact) output: gemm transposed, plus bias
 * The im2row orientation (positions x C*k*k) runs faster than Caffe's im2col with OpenBLAS on these
 * shapes (ENVIRONMENT.md). Workspace: threads slots of rows[chunk_rows][k_gemm], then threads slots
 * of gemm[chunk_rows][Cout]; the slots are adjacent, so T consecutive chunks ("a round") also form one
 * contiguous rows[T*chunk_rows][k_gemm] block.
 * Forward: each thread takes whole chunks (im2row, GEMM, transpose into y): no synchronisation.
 * Backward, per round: each thread computes its chunk's row gradients, then the scatter-add into dx
 * (row2im) is split by input channel, so no two threads add into the same plane; the filter gradient
 * dW_g = dy_g^T . rows is split by columns of W.
 * A pointwise conv (1x1, stride 1, no padding, no masks) needs no im2row: Y_g = W_g . X_g per image.
 */
#include <string.h>

#include "../blas.h"
#include "../conv_internal.h"

#if defined(PERF_WITH_OPENMP)
#include <omp.h>
static int thread_id(void) { return omp_get_thread_num(); }
#else
static int thread_id(void) { return 0; }
#endif

static int min_int(size_t a, size_t b) { return (int)(a < b ? a : b); }

static void im2row(const perf_conv_plan *p, const float *x, int g, size_t r0, int nrows, float *rows) {
    const int kk = p->kk, cin_g = p->cin_g, K = p->k_gemm, kh = p->d.kernel_h, kw = p->d.kernel_w;
    const size_t plane = (size_t)p->in_spatial, cin = (size_t)p->d.in_channels, count = (size_t)p->count;
    const size_t in_w = (size_t)p->d.in_w;
    for (int i = 0; i < nrows; i++) {
        size_t r = r0 + (size_t)i, b = r / count, j = r % count;
        const float *xg = x + (b * cin + (size_t)g * cin_g) * plane;
        float *dst = rows + (size_t)i * K;
        if (p->origin[j] != PERF_NO_ORIGIN) { /* interior: kernel rows are contiguous runs of x */
            const float *src = xg + p->origin[j];
            for (int c = 0; c < cin_g; c++, src += plane)
                for (int ki = 0; ki < kh; ki++, dst += kw) {
                    const float *s = src + (size_t)ki * in_w;
                    for (int kj = 0; kj < kw; kj++) dst[kj] = s[kj];
                }
            continue;
        }
        const int32_t *tab = p->table + j * (size_t)kk;
        for (int c = 0; c < cin_g; c++, dst += kk) {
            const float *xc = xg + (size_t)c * plane;
            for (int t = 0; t < kk; t++) dst[t] = tab[t] >= 0 ? xc[tab[t]] : 0.0f;
        }
    }
}

/* gemm[i][co] (+ bias) -> y[b][co][j] for rows r0..r0+nrows, one image segment at a time. */
static void gemm_to_output(const perf_conv_plan *p, const float *gemm, const float *bias, size_t r0, int nrows,
                           float *y) {
    const size_t cout = (size_t)p->d.out_channels, count = (size_t)p->count;
    for (size_t r = r0, end = r0 + (size_t)nrows; r < end;) {
        size_t b = r / count, j0 = r % count, seg = count - j0 < end - r ? count - j0 : end - r;
        const float *src = gemm + (r - r0) * cout;
        for (size_t co = 0; co < cout; co++) {
            float bco = bias ? bias[co] : 0.0f, *dst = y + (b * cout + co) * count + j0;
            for (size_t j = 0; j < seg; j++) dst[j] = src[j * cout + co] + bco;
        }
        r += seg;
    }
}

/* The inverse transpose: dy[b][co][j] -> gemm[i][co]. */
static void output_to_gemm(const perf_conv_plan *p, const float *dy, size_t r0, int nrows, float *gemm) {
    const size_t cout = (size_t)p->d.out_channels, count = (size_t)p->count;
    for (size_t r = r0, end = r0 + (size_t)nrows; r < end;) {
        size_t b = r / count, j0 = r % count, seg = count - j0 < end - r ? count - j0 : end - r;
        float *dst = gemm + (r - r0) * cout;
        for (size_t co = 0; co < cout; co++) {
            const float *src = dy + (b * cout + co) * count + j0;
            for (size_t j = 0; j < seg; j++) dst[j * cout + co] = src[j];
        }
        r += seg;
    }
}

static void pointwise_forward(const perf_conv_plan *p, const float *x, const float *w, const float *bias,
                              float *y) {
    const perf_conv_desc *d = &p->d;
    const int S = p->count, tasks = d->batch * d->groups;
#pragma omp parallel for schedule(dynamic) num_threads(p->threads)
    for (int task = 0; task < tasks; task++) {
        int b = task / d->groups, g = task % d->groups;
        float *yg = y + ((size_t)b * d->out_channels + (size_t)g * p->cout_g) * S;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->cout_g, S, p->cin_g, 1.0f,
                    w + (size_t)g * p->cout_g * p->cin_g, p->cin_g,
                    x + ((size_t)b * d->in_channels + (size_t)g * p->cin_g) * S, S, 0.0f, yg, S);
        for (int o = 0; bias && o < p->cout_g; o++) {
            float v = bias[g * p->cout_g + o], *plane = yg + (size_t)o * S;
            for (int s = 0; s < S; s++) plane[s] += v;
        }
    }
}

void perf_cpu_conv_forward(const perf_conv_plan *p, const float *x, const float *w, const float *bias,
                           float *y, float *ws) {
    if (p->pointwise) {
        pointwise_forward(p, x, w, bias, y);
        return;
    }
    if (p->shift) {
        perf_cpu_conv_forward_shift(p, x, w, bias, y, ws);
        return;
    }
    const int K = p->k_gemm, cout = p->d.out_channels, chunk = p->chunk_rows;
    const size_t total = (size_t)p->d.batch * p->count;
    const long nchunks = (long)((total + chunk - 1) / chunk);
#pragma omp parallel num_threads(p->threads)
    {
        float *rows = ws + (size_t)thread_id() * chunk * K;
        float *gemm = ws + (size_t)p->threads * chunk * K + (size_t)thread_id() * chunk * cout;
#pragma omp for schedule(dynamic, 1)
        for (long c = 0; c < nchunks; c++) {
            size_t r0 = (size_t)c * chunk;
            int n = min_int(total - r0, (size_t)chunk);
            for (int g = 0; g < p->d.groups; g++) {
                im2row(p, x, g, r0, n, rows);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, p->cout_g, K, 1.0f, rows, K,
                            w + (size_t)g * p->cout_g * K, K, 0.0f, gemm + (size_t)g * p->cout_g, cout);
            }
            gemm_to_output(p, gemm, bias, r0, n, y);
        }
    }
}

/* Threads of the current team that own a workspace slot: the team's size, at most the T slots the
 * plan's workspace was sized for. Called inside the backward passes' parallel regions. */
static int team_slots(int T) {
#if defined(PERF_WITH_OPENMP)
    int nt = omp_get_num_threads();
#else
    int nt = 1;
#endif
    return nt < T ? nt : T;
}

void perf_cpu_conv_backward_data(const perf_conv_plan *p, const float *w, const float *dy, float *dx,
                                 float *ws) {
    const perf_conv_desc *d = &p->d;
    if (p->pointwise) {
        const int S = p->count, tasks = d->batch * d->groups;
#pragma omp parallel for schedule(dynamic) num_threads(p->threads)
        for (int task = 0; task < tasks; task++) {
            int b = task / d->groups, g = task % d->groups;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p->cin_g, S, p->cout_g, 1.0f,
                        w + (size_t)g * p->cout_g * p->cin_g, p->cin_g,
                        dy + ((size_t)b * d->out_channels + (size_t)g * p->cout_g) * S, S, 0.0f,
                        dx + ((size_t)b * d->in_channels + (size_t)g * p->cin_g) * S, S);
        }
        return;
    }
    const int K = p->k_gemm, kk = p->kk, cout = d->out_channels, chunk = p->chunk_rows, T = p->threads;
    const size_t total = (size_t)d->batch * p->count, plane = (size_t)p->in_spatial;
    const size_t count = (size_t)p->count;
    const long planes = (long)d->batch * d->in_channels;
#pragma omp parallel num_threads(T)
    {
        /* The team may be smaller than T (OMP_THREAD_LIMIT, OMP_DYNAMIC, a nested call): a round is
         * as many chunks as the team has threads, never more than the T slots the workspace holds. */
        const int tid = thread_id(), nt = team_slots(T);
        const size_t round = (size_t)nt * chunk;
        float *rows = ws + (size_t)tid * chunk * K;
        float *gemm = ws + (size_t)T * chunk * K + (size_t)tid * chunk * cout;
#pragma omp for schedule(static)
        for (long i = 0; i < planes; i++) memset(dx + (size_t)i * plane, 0, plane * sizeof(float));
        for (size_t s0 = 0; s0 < total; s0 += round) {
            size_t r0 = s0 + (size_t)tid * chunk;
            int n = tid < nt && r0 < total ? min_int(total - r0, (size_t)chunk) : 0;
            int round_rows = min_int(total - s0, round);
            if (n > 0) output_to_gemm(p, dy, r0, n, gemm);
            for (int g = 0; g < d->groups; g++) {
                if (n > 0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, K, p->cout_g, 1.0f,
                                gemm + (size_t)g * p->cout_g, cout, w + (size_t)g * p->cout_g * K, K, 0.0f,
                                rows, K);
#pragma omp barrier
                /* row2im: the adjoint of im2row, one input channel per iteration. */
#pragma omp for schedule(static)
                for (int c = 0; c < p->cin_g; c++) {
                    for (int i = 0; i < round_rows; i++) {
                        size_t r = s0 + (size_t)i, b = r / count;
                        const int32_t *tab = p->table + (r % count) * (size_t)kk;
                        float *dxc = dx + (b * d->in_channels + (size_t)g * p->cin_g + c) * plane;
                        const float *src = ws + (size_t)i * K + (size_t)c * kk;
                        for (int t = 0; t < kk; t++)
                            if (tab[t] >= 0) dxc[tab[t]] += src[t];
                    }
                }
            }
        }
    }
}

static void bias_grad(const perf_conv_plan *p, const float *dy, float *dbias) {
    const int cout = p->d.out_channels, batch = p->d.batch;
    const size_t S = (size_t)p->count;
#pragma omp parallel for schedule(static) num_threads(p->threads)
    for (int co = 0; co < cout; co++) {
        double sum = 0.0; /* double: the sum runs over batch*positions terms */
        for (int b = 0; b < batch; b++) {
            const float *plane = dy + ((size_t)b * cout + co) * S;
            float part = 0.0f;
            for (size_t s = 0; s < S; s++) part += plane[s];
            sum += part;
        }
        dbias[co] = (float)sum;
    }
}

/* Columns [k0, k1) of thread tid's share of an n-column matrix, 16-aligned. */
static void column_share(int n, int tid, int T, int *k0, int *k1) {
    int per = ((n + T - 1) / T + 15) / 16 * 16;
    *k0 = tid * per < n ? tid * per : n;
    *k1 = *k0 + per < n ? *k0 + per : n;
}

void perf_cpu_conv_backward_filter(const perf_conv_plan *p, const float *x, const float *dy, float *dw,
                                   float *dbias, float *ws) {
    const perf_conv_desc *d = &p->d;
    const int T = p->threads;
    if (dbias) bias_grad(p, dy, dbias);
    if (p->pointwise) {
        const int S = p->count;
#pragma omp parallel num_threads(T)
        {
            int k0, k1; /* shares of the team actually running (it may be smaller than T) */
            column_share(p->cin_g, thread_id(), team_slots(T), &k0, &k1);
            for (int b = 0; b < d->batch && k1 > k0; b++)
                for (int g = 0; g < d->groups; g++)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p->cout_g, k1 - k0, S, 1.0f,
                                dy + ((size_t)b * d->out_channels + (size_t)g * p->cout_g) * S, S,
                                x + ((size_t)b * d->in_channels + (size_t)g * p->cin_g + k0) * S, S,
                                b == 0 ? 0.0f : 1.0f, dw + (size_t)g * p->cout_g * p->cin_g + k0, p->cin_g);
        }
        return;
    }
    const int K = p->k_gemm, cout = d->out_channels, chunk = p->chunk_rows;
    const size_t total = (size_t)d->batch * p->count;
    float *gemm_round = ws + (size_t)T * chunk * K; /* the T gemm slots follow the T rows slots */
#pragma omp parallel num_threads(T)
    {
        /* As in backward_data: rounds and column shares follow the team's real size (<= T). */
        const int tid = thread_id(), nt = team_slots(T);
        const size_t round = (size_t)nt * chunk;
        int k0, k1;
        column_share(K, tid, nt, &k0, &k1);
        for (size_t s0 = 0; s0 < total; s0 += round) {
            size_t r0 = s0 + (size_t)tid * chunk;
            int n = tid < nt && r0 < total ? min_int(total - r0, (size_t)chunk) : 0;
            int round_rows = min_int(total - s0, round);
            if (n > 0) output_to_gemm(p, dy, r0, n, gemm_round + (size_t)tid * chunk * cout);
            for (int g = 0; g < d->groups; g++) {
                if (n > 0) im2row(p, x, g, r0, n, ws + (size_t)tid * chunk * K);
#pragma omp barrier
                if (k1 > k0)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p->cout_g, k1 - k0, round_rows, 1.0f,
                                gemm_round + (size_t)g * p->cout_g, cout, ws + k0, K, s0 == 0 ? 0.0f : 1.0f,
                                dw + (size_t)g * p->cout_g * K + k0, K);
#pragma omp barrier
            }
        }
    }
}
