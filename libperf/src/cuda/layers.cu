/*
 * cuda/layers.cu - position-wise and per-channel layers on the GPU: ReLU, dropout, LRN, softmax
 * cross-entropy, bias. Twins of relu_dropout.c, lrn.c, softmax.c and bias.c, same formulas.
 *
 * Layouts as on the CPU: flat [size] for ReLU / dropout, [batch][channels][spatial] for LRN and
 * bias, [batch][classes] for softmax.
 * - Dropout keeps element i iff unit(splitmix64(seed ^ splitmix64(i))) >= ratio: the SAME
 *   counter-based hash as relu_dropout.c (splitmix64 and unit copied from internal.h as device
 *   functions; integer and exactly-rounded double arithmetic), so CPU and GPU keep the same elements
 *   and produce bit-identical outputs.
 * - LRN: one thread per (image, spatial position) walks the channels with running window sums of
 *   x^2 in double, like lrn.c (three windows in the backward: centres c + half, c, c - half - 1), so
 *   reads are coalesced across positions and the cost does not grow with local_size.
 * - Softmax: one thread per row (classes are a few thousand at most): max, exp, sum in double,
 *   loss by log-sum-exp. Labels are copied to the host and range-checked first (a stream sync).
 * - Bias backward: one block per channel, double partial sums reduced in shared memory.
 */
#include <stdlib.h>

#include "cuda_internal.h"

__device__ static inline uint64_t splitmix64(uint64_t x) { /* = perf_splitmix64 (internal.h) */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

__global__ void relu_forward_kernel(size_t n, const float *x, float *y) {
    PERF_GRID_LOOP(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

__global__ void relu_backward_kernel(size_t n, const float *y, const float *dy, float *dx) {
    PERF_GRID_LOOP(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void dropout_kernel(size_t n, double ratio, float scale, uint64_t seed, const float *in, float *out) {
    PERF_GRID_LOOP(i, n) {
        double u = (double)(splitmix64(seed ^ splitmix64((uint64_t)i)) >> 11) * (1.0 / 9007199254740992.0);
        out[i] = u >= ratio ? in[i] * scale : 0.0f;
    }
}

struct lrn_geom {
    int channels, half;
    size_t spatial, units; /* units = batch * spatial */
    double k, alpha_n;
    float beta, coef;
};

/* Moves a running x^2 window sum from centre m-1 to centre m. xs = x + image + position, stride spatial. */
__device__ static inline void advance(const lrn_geom &G, const float *xs, int m, double *acc) {
    int in = m + G.half, out = m - G.half - 1;
    if (in >= 0 && in < G.channels) acc[0] += (double)xs[(size_t)in * G.spatial] * xs[(size_t)in * G.spatial];
    if (out >= 0 && out < G.channels) acc[0] -= (double)xs[(size_t)out * G.spatial] * xs[(size_t)out * G.spatial];
}

__global__ void lrn_forward_kernel(lrn_geom G, const float *x, float *y) {
    PERF_GRID_LOOP(u, G.units) {
        size_t base = (u / G.spatial) * G.channels * G.spatial + u % G.spatial;
        const float *xs = x + base;
        double acc = 0.0;
        for (int m = -G.half; m < 0; m++) advance(G, xs, m, &acc); /* window centred at -1 */
        for (int c = 0; c < G.channels; c++) {
            advance(G, xs, c, &acc);
            float scale = (float)(G.k + G.alpha_n * acc);
            y[base + (size_t)c * G.spatial] = xs[(size_t)c * G.spatial] * powf(scale, -G.beta);
        }
    }
}

__global__ void lrn_backward_kernel(lrn_geom G, const float *x, const float *y, const float *dy, float *dx) {
    PERF_GRID_LOOP(u, G.units) {
        size_t base = (u / G.spatial) * G.channels * G.spatial + u % G.spatial;
        const float *xs = x + base, *ys = y + base, *dys = dy + base;
        const int H = G.half;
        /* lead: centre c + H (its ratio enters), mid: centre c, lag: centre c - H - 1 (its ratio leaves) */
        double lead = 0.0, mid = 0.0, lag = 0.0, rsum = 0.0;
        for (int m = -H; m <= H - 1; m++) {
            advance(G, xs, m, &lead);
            if (m >= 0 && m < G.channels)
                rsum += (double)dys[(size_t)m * G.spatial] * ys[(size_t)m * G.spatial] / (G.k + G.alpha_n * lead);
        }
        for (int m = -H; m <= -1; m++) advance(G, xs, m, &mid);
        /* lag starts empty, centred at -H - 2 */
        for (int c = 0; c < G.channels; c++) {
            int l = c + H, g = c - H - 1;
            advance(G, xs, l, &lead);
            if (l < G.channels)
                rsum += (double)dys[(size_t)l * G.spatial] * ys[(size_t)l * G.spatial] / (G.k + G.alpha_n * lead);
            advance(G, xs, g, &lag);
            if (g >= 0)
                rsum -= (double)dys[(size_t)g * G.spatial] * ys[(size_t)g * G.spatial] / (G.k + G.alpha_n * lag);
            advance(G, xs, c, &mid);
            float scale = (float)(G.k + G.alpha_n * mid);
            size_t off = (size_t)c * G.spatial;
            dx[base + off] = dys[off] * powf(scale, -G.beta) - G.coef * xs[off] * (float)rsum;
        }
    }
}

__global__ void softmax_forward_kernel(int batch, int classes, const float *logits, const int32_t *labels,
                                       float *prob, float *loss) {
    PERF_GRID_LOOP(b, (size_t)batch) {
        const float *l = logits + b * classes;
        float *p = prob + b * classes, m = l[0];
        for (int j = 1; j < classes; j++) m = l[j] > m ? l[j] : m;
        const float l_label = l[labels[b]];
        double sum = 0.0;
        for (int j = 0; j < classes; j++) {
            p[j] = expf(l[j] - m);
            sum += p[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < classes; j++) p[j] *= inv;
        if (loss) loss[b] = (float)(log(sum) + ((double)m - (double)l_label));
    }
}

__global__ void softmax_backward_kernel(int batch, int classes, const float *prob, const int32_t *labels,
                                        float scale, float *d) {
    PERF_GRID_LOOP(e, (size_t)batch * classes) {
        size_t b = e / classes;
        int j = (int)(e % classes);
        d[e] = j == labels[b] ? (prob[e] - 1.0f) * scale : prob[e] * scale;
    }
}

__global__ void bias_forward_kernel(size_t n, int channels, size_t spatial, const float *bias, float *y) {
    PERF_GRID_LOOP(e, n) y[e] += bias[(e / spatial) % channels];
}

__global__ void channel_sum_kernel(int batch, int channels, size_t spatial, const float *dy, float *dbias) {
    __shared__ double part[PERF_THREADS];
    const int c = blockIdx.x;
    double acc = 0.0;
    for (int b = 0; b < batch; b++) {
        const float *plane = dy + ((size_t)b * channels + c) * spatial;
        for (size_t s = threadIdx.x; s < spatial; s += blockDim.x) acc += plane[s];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = PERF_THREADS / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) dbias[c] = (float)part[0];
}

#define LAUNCH(fn, ctx, n, kernel, ...)                                                             \
    do {                                                                                            \
        PERF_CUDA_ENTER(fn, ctx);                                                                   \
        kernel<<<perf_blocks(n), PERF_THREADS, 0, perf_stream(ctx)>>>(__VA_ARGS__);                 \
        PERF_CUDA_LAUNCHED(fn);                                                                     \
        return PERF_STATUS_SUCCESS;                                                                 \
    } while (0)

perf_status perf_cuda_relu_forward(const perf_context *ctx, size_t size, const float *x, float *y) {
    LAUNCH("perf_relu_forward_ctx", ctx, size, relu_forward_kernel, size, x, y);
}

perf_status perf_cuda_relu_backward(const perf_context *ctx, size_t size, const float *y, const float *dy,
                                    float *dx) {
    LAUNCH("perf_relu_backward_ctx", ctx, size, relu_backward_kernel, size, y, dy, dx);
}

perf_status perf_cuda_dropout_apply(const perf_context *ctx, const char *fn, size_t size, float ratio,
                                    uint64_t seed, const float *in, float *out) {
    const double r = (double)ratio;
    const float scale = (float)(1.0 / (1.0 - r)); /* as relu_dropout.c */
    LAUNCH(fn, ctx, size, dropout_kernel, size, r, scale, seed, in, out);
}

static lrn_geom lrn_of(int batch, int channels, int spatial, int local_size, float alpha, float beta, float k) {
    /* half is clamped to the channel count like lrn.c: a wider window holds the same channels */
    const int half = (local_size - 1) / 2 < channels ? (local_size - 1) / 2 : channels;
    lrn_geom g = {channels, half, (size_t)spatial, (size_t)batch * spatial, (double)k,
                  (double)alpha / local_size, beta, (float)(2.0 * alpha * beta / local_size)};
    return g;
}

perf_status perf_cuda_lrn_forward(const perf_context *ctx, int batch, int channels, int spatial, int local_size,
                                  float alpha, float beta, float k, const float *x, float *y) {
    const lrn_geom G = lrn_of(batch, channels, spatial, local_size, alpha, beta, k);
    LAUNCH("perf_lrn_forward_ctx", ctx, G.units, lrn_forward_kernel, G, x, y);
}

perf_status perf_cuda_lrn_backward(const perf_context *ctx, int batch, int channels, int spatial,
                                   int local_size, float alpha, float beta, float k, const float *x,
                                   const float *y, const float *dy, float *dx) {
    const lrn_geom G = lrn_of(batch, channels, spatial, local_size, alpha, beta, k);
    LAUNCH("perf_lrn_backward_ctx", ctx, G.units, lrn_backward_kernel, G, x, y, dy, dx);
}

/* Copies the labels back and checks them (the CPU functions' message), before any output is written. */
static perf_status check_labels(const char *fn, const perf_context *ctx, int batch, int classes,
                                const int32_t *labels) {
    PERF_CUDA_ENTER(fn, ctx);
    int32_t *host = (int32_t *)malloc((size_t)batch * sizeof *host);
    if (!host) return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %d labels", fn, batch);
    cudaError_t e = cudaMemcpyAsync(host, labels, (size_t)batch * sizeof *host, cudaMemcpyDeviceToHost,
                                    perf_stream(ctx));
    if (e == cudaSuccess) e = cudaStreamSynchronize(perf_stream(ctx));
    perf_status st = PERF_STATUS_SUCCESS;
    if (e != cudaSuccess)
        st = perf_fail(PERF_STATUS_DEVICE_ERROR, "%s: copying labels to the host failed: %s", fn,
                       cudaGetErrorString(e));
    for (int b = 0; st == PERF_STATUS_SUCCESS && b < batch; b++)
        if (host[b] < 0 || host[b] >= classes)
            st = perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: labels[%d] must be in [0, %d), got %d", fn, b,
                           classes, (int)host[b]);
    free(host);
    return st;
}

perf_status perf_cuda_softmax_xent_forward(const perf_context *ctx, int batch, int classes, const float *logits,
                                           const int32_t *labels, float *prob, float *loss) {
    static const char fn[] = "perf_softmax_xent_forward_ctx";
    PERF_CHECK(check_labels(fn, ctx, batch, classes, labels));
    LAUNCH(fn, ctx, (size_t)batch, softmax_forward_kernel, batch, classes, logits, labels, prob, loss);
}

perf_status perf_cuda_softmax_xent_backward(const perf_context *ctx, int batch, int classes, const float *prob,
                                            const int32_t *labels, float scale, float *dlogits) {
    static const char fn[] = "perf_softmax_xent_backward_ctx";
    PERF_CHECK(check_labels(fn, ctx, batch, classes, labels));
    LAUNCH(fn, ctx, (size_t)batch * classes, softmax_backward_kernel, batch, classes, prob, labels, scale,
           dlogits);
}

perf_status perf_cuda_bias_forward(const perf_context *ctx, const char *fn, int batch, int channels, int spatial,
                                   const float *bias, float *y) {
    const size_t n = (size_t)batch * channels * spatial;
    LAUNCH(fn, ctx, n, bias_forward_kernel, n, channels, (size_t)spatial, bias, y);
}

perf_status perf_cuda_bias_backward(const perf_context *ctx, const char *fn, int batch, int channels, int spatial,
                                    const float *dy, float *dbias) {
    PERF_CUDA_ENTER(fn, ctx);
    channel_sum_kernel<<<channels, PERF_THREADS, 0, perf_stream(ctx)>>>(batch, channels, (size_t)spatial, dy,
                                                                        dbias);
    PERF_CUDA_LAUNCHED(fn);
    return PERF_STATUS_SUCCESS;
}
