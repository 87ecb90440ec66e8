/*
 * cpu/conv_shift.c - forward of a stride-1 convolution without masks as kernel_h*kernel_w shifted
 * GEMMs over a zero-padded copy of the input, instead of im2row.
 *
 * Why: im2row copies cin*kh*kw floats per output position. For the thin layers of a low-rank network
 * (a d x 1 or 1 x d kernel from a spatial decomposition, few filters) that copy, a gather with a short
 * inner run, costs more than the GEMM it feeds (measured: the 3x1 half of VGG-16 conv1_2 at rank 30
 * ran at a third of the dense layer's multiply-adds per second). Here the input is copied once per
 * image, contiguously, and each kernel tap t = (ki, kj) is one GEMM whose operand is that copy read
 * from offset ki*Wp + kj:
 *
 *   xp[c][hp][wp]   the image's group-g input padded to Hp x Wp (Hp = in_h + 2 pad_h, ...)
 *   yw[o][q]        the output on the padded width: q = oh*Wp + ow, ow < Wp (columns ow >= out_w are
 *                   junk); yw += W_t[o][c] . xp[c][q + ki*Wp + kj] for every tap, over the
 *                   L = (out_h - 1)*Wp + out_w positions that reach the last valid output
 *   y[b][o][oh][ow] = yw[o][oh*Wp + ow] + bias[o]
 *
 * The last tap of the last valid output reads xp's last element, so every read stays in the copy.
 * Weights are repacked once per call to W_t[g][t][o][c] (the GEMM needs unit stride over c).
 * Workspace: the repacked weights, then one (xp, yw) slot per thread; tasks are (image, group) pairs.
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

static size_t padded_plane(const perf_conv_plan *p) {
    return (size_t)(p->d.in_h + 2 * p->d.pad_h) * (size_t)(p->d.in_w + 2 * p->d.pad_w);
}

static size_t wide_positions(const perf_conv_plan *p) {
    return (size_t)(p->out_h - 1) * (size_t)(p->d.in_w + 2 * p->d.pad_w) + (size_t)p->out_w;
}

/* Floats of workspace the shift forward needs, or 0 past PERF_SHIFT_SLOT_MAX_FLOATS per thread or
 * PERF_SHIFT_TOTAL_MAX_FLOATS in all (a huge input or many threads: im2row's chunked workspace is
 * bounded, so it takes over). */
size_t perf_conv_shift_workspace_floats(const perf_conv_plan *p) {
    const size_t cap = PERF_SHIFT_SLOT_MAX_FLOATS, pplane = padded_plane(p), L = wide_positions(p);
    if ((size_t)p->cin_g > cap / pplane || (size_t)p->cout_g > cap / L) return 0;
    const size_t slot = (size_t)p->cin_g * pplane + (size_t)p->cout_g * L; /* <= 2 * cap: no overflow */
    if (slot > cap || (size_t)p->threads > PERF_SHIFT_TOTAL_MAX_FLOATS / slot) return 0;
    return (size_t)p->d.out_channels * (size_t)p->k_gemm +
           (size_t)p->threads * slot;
}

/* x's plane c of image b, group g -> xp[c] zero-padded. */
static void pad_copy(const perf_conv_plan *p, const float *x, int b, int g, float *xp) {
    const int H = p->d.in_h, W = p->d.in_w, ph = p->d.pad_h, pw = p->d.pad_w, Wp = W + 2 * pw;
    const size_t plane = (size_t)H * W, pplane = padded_plane(p);
    for (int c = 0; c < p->cin_g; c++) {
        const float *src = x + ((size_t)b * p->d.in_channels + (size_t)g * p->cin_g + c) * plane;
        float *dst = xp + (size_t)c * pplane;
        memset(dst, 0, sizeof(float) * (size_t)ph * Wp);
        dst += (size_t)ph * Wp;
        for (int h = 0; h < H; h++, dst += Wp, src += W) {
            memset(dst, 0, sizeof(float) * (size_t)pw);
            memcpy(dst + pw, src, sizeof(float) * (size_t)W);
            memset(dst + pw + W, 0, sizeof(float) * (size_t)pw);
        }
        memset(dst, 0, sizeof(float) * (size_t)ph * Wp);
    }
}

void perf_cpu_conv_forward_shift(const perf_conv_plan *p, const float *x, const float *w, const float *bias,
                                 float *y, float *ws) {
    const perf_conv_desc *d = &p->d;
    const int kk = p->kk, kw = d->kernel_w, cin_g = p->cin_g, cout_g = p->cout_g, G = d->groups;
    const int Wp = d->in_w + 2 * d->pad_w, OH = p->out_h, OW = p->out_w;
    const size_t pplane = padded_plane(p), L = wide_positions(p), oplane = (size_t)OH * OW;
    float *wt = ws;
    for (int g = 0; g < G; g++)
        for (int o = 0; o < cout_g; o++)
            for (int c = 0; c < cin_g; c++)
                for (int t = 0; t < kk; t++)
                    wt[(((size_t)g * kk + t) * cout_g + o) * cin_g + c] =
                        w[(((size_t)g * cout_g + o) * cin_g + c) * kk + t];
    float *slots = ws + (size_t)d->out_channels * p->k_gemm;
    const size_t slot = (size_t)cin_g * pplane + (size_t)cout_g * L;
    const long long tasks = (long long)d->batch * G;
#pragma omp parallel for schedule(dynamic) num_threads(p->threads)
    for (long long task = 0; task < tasks; task++) {
        const int b = (int)(task / G), g = (int)(task % G);
        float *xp = slots + (size_t)thread_id() * slot, *yw = xp + (size_t)cin_g * pplane;
        pad_copy(p, x, b, g, xp);
        for (int t = 0; t < kk; t++) {
            const size_t off = (size_t)(t / kw) * Wp + (size_t)(t % kw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout_g, (int)L, cin_g, 1.0f,
                        wt + ((size_t)g * kk + t) * cout_g * cin_g, cin_g, xp + off, (int)pplane,
                        t == 0 ? 0.0f : 1.0f, yw, (int)L);
        }
        for (int o = 0; o < cout_g; o++) {
            const float v = bias ? bias[g * cout_g + o] : 0.0f, *src = yw + (size_t)o * L;
            float *dst = y + ((size_t)b * d->out_channels + (size_t)g * cout_g + o) * oplane;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) dst[(size_t)oh * OW + ow] = src[(size_t)oh * Wp + ow] + v;
        }
    }
}
