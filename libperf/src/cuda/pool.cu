/*
 * cuda/pool.cu - max / average pooling on the GPU, the twin of pool.c's loops (same semantics).
 *
 * Layout: x[planes][in_spatial] (in_h*in_w, or the input mask's count for a compact input),
 * y[planes][out_h*out_w]. One thread per output element e = plane*out_spatial + o.
 * Full input: the window of (oh, ow) is clipped to the map, walked row-major; max keeps the FIRST
 * maximum, average divides by the clipped window's size. Compact input: the plan's CSR table
 * (offsets, idx) is uploaded once; idx[offsets[o] .. offsets[o+1]) are the window's compact indices
 * in row-major order (distinct for max, with duplicates for average), exactly as on the CPU.
 * Backward: dx is zeroed, then each output adds its gradient to its window's first maximum (max,
 * recomputed from x) or dy/size to every entry (average) with atomicAdd, as windows overlap.
 */
#include "cuda_internal.h"

extern "C" {
#include "../pool_internal.h"
}

struct pool_geom {
    int in_h, in_w, out_w, kh, kw, sh, sw, ph, pw, is_max;
    size_t in_spatial, out_spatial, planes;
};

static pool_geom geom_of(const perf_pool_plan *p) {
    const perf_pool_desc *d = &p->d;
    pool_geom g = {d->in_h,     d->in_w,     p->out_w, d->kernel_h,   d->kernel_w,      d->stride_h,
                   d->stride_w, d->pad_h,    d->pad_w, d->mode == PERF_POOL_MAX, p->in_spatial,
                   p->out_spatial, p->planes};
    return g;
}

__device__ static inline void clip(int o, int stride, int pad, int kernel, int in, int *start, int *end) {
    long long s = (long long)o * stride - pad, e = s + kernel;
    *start = s < 0 ? 0 : (int)s;
    *end = e > in ? in : (int)e;
}

/* Full input: the value of output o of one plane, and (max) the plane index of its first maximum. */
__device__ static float dense_window(const pool_geom &G, const float *xp, size_t o, size_t *arg, int *size) {
    int hs, he, ws, we;
    clip((int)(o / G.out_w), G.sh, G.ph, G.kh, G.in_h, &hs, &he);
    clip((int)(o % G.out_w), G.sw, G.pw, G.kw, G.in_w, &ws, &we);
    size_t best = (size_t)hs * G.in_w + ws;
    float v = G.is_max ? xp[best] : 0.0f;
    for (int r = hs; r < he; r++)
        for (int c = ws; c < we; c++) {
            float xv = xp[(size_t)r * G.in_w + c];
            if (!G.is_max)
                v += xv;
            else if (PERF_MAX_WINS(xv, v)) {
                v = xv;
                best = (size_t)r * G.in_w + c;
            }
        }
    *arg = best;
    *size = (he - hs) * (we - ws);
    return G.is_max ? v : v / (float)*size;
}

__global__ void pool_forward_kernel(pool_geom G, const int64_t *offsets, const int32_t *idx, const float *x,
                                    float *y) {
    PERF_GRID_LOOP(e, G.planes * G.out_spatial) {
        size_t pl = e / G.out_spatial, o = e % G.out_spatial;
        const float *xp = x + pl * G.in_spatial;
        if (offsets) {
            int64_t a = offsets[o], b = offsets[o + 1];
            float v = xp[idx[a]];
            if (G.is_max) {
                for (int64_t j = a + 1; j < b; j++) v = PERF_MAX_WINS(xp[idx[j]], v) ? xp[idx[j]] : v;
            } else {
                for (int64_t j = a + 1; j < b; j++) v += xp[idx[j]];
                v /= (float)(b - a);
            }
            y[e] = v;
        } else {
            size_t arg;
            int size;
            y[e] = dense_window(G, xp, o, &arg, &size);
        }
    }
}

__global__ void pool_backward_kernel(pool_geom G, const int64_t *offsets, const int32_t *idx, const float *x,
                                     const float *dy, float *dx) {
    PERF_GRID_LOOP(e, G.planes * G.out_spatial) {
        size_t pl = e / G.out_spatial, o = e % G.out_spatial;
        const float *xp = G.is_max ? x + pl * G.in_spatial : NULL;
        float *dxp = dx + pl * G.in_spatial;
        const float g = dy[e];
        if (offsets) {
            int64_t a = offsets[o], b = offsets[o + 1];
            if (G.is_max) {
                int64_t best = a;
                for (int64_t j = a + 1; j < b; j++)
                    if (PERF_MAX_WINS(xp[idx[j]], xp[idx[best]])) best = j;
                atomicAdd(&dxp[idx[best]], g);
            } else {
                const float gn = g / (float)(b - a);
                for (int64_t j = a; j < b; j++) atomicAdd(&dxp[idx[j]], gn);
            }
        } else if (G.is_max) {
            size_t arg;
            int size;
            dense_window(G, xp, o, &arg, &size);
            atomicAdd(&dxp[arg], g);
        } else {
            int hs, he, ws, we;
            clip((int)(o / G.out_w), G.sh, G.ph, G.kh, G.in_h, &hs, &he);
            clip((int)(o % G.out_w), G.sw, G.pw, G.kw, G.in_w, &ws, &we);
            const float gn = g / (float)((he - hs) * (we - ws));
            for (int r = hs; r < he; r++)
                for (int c = ws; c < we; c++) atomicAdd(&dxp[(size_t)r * G.in_w + c], gn);
        }
    }
}

perf_status perf_cuda_pool_plan_init(perf_pool_plan *p) {
    static const char fn[] = "perf_pool_plan_create_ctx";
    if (!p->offsets) return PERF_STATUS_SUCCESS;
    PERF_CUDA_ENTER(fn, p->ctx);
    const size_t n_off = p->out_spatial + 1, n_idx = (size_t)p->offsets[p->out_spatial];
    PERF_CUDA_TRY(fn, cudaMalloc((void **)&p->dev_offsets, n_off * sizeof(int64_t)));
    PERF_CUDA_TRY(fn, cudaMalloc((void **)&p->dev_idx, (n_idx ? n_idx : 1) * sizeof(int32_t)));
    PERF_CUDA_TRY(fn, cudaMemcpy(p->dev_offsets, p->offsets, n_off * sizeof(int64_t), cudaMemcpyHostToDevice));
    PERF_CUDA_TRY(fn, cudaMemcpy(p->dev_idx, p->idx, n_idx * sizeof(int32_t), cudaMemcpyHostToDevice));
    return PERF_STATUS_SUCCESS;
}

void perf_cuda_pool_plan_release(perf_pool_plan *p) {
    if (cudaSetDevice(p->ctx->index) != cudaSuccess) return;
    if (p->dev_offsets) cudaFree(p->dev_offsets);
    if (p->dev_idx) cudaFree(p->dev_idx);
    p->dev_offsets = NULL;
    p->dev_idx = NULL;
    (void)cudaGetLastError();
}

perf_status perf_cuda_pool_forward(const perf_pool_plan *p, const float *x, float *y) {
    static const char fn[] = "perf_pool_forward";
    PERF_CUDA_ENTER(fn, p->ctx);
    const pool_geom G = geom_of(p);
    pool_forward_kernel<<<perf_blocks(G.planes * G.out_spatial), PERF_THREADS, 0, perf_stream(p->ctx)>>>(
        G, p->dev_offsets, p->dev_idx, x, y);
    PERF_CUDA_LAUNCHED(fn);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_pool_backward(const perf_pool_plan *p, const float *x, const float *dy, float *dx) {
    static const char fn[] = "perf_pool_backward";
    PERF_CUDA_ENTER(fn, p->ctx);
    const pool_geom G = geom_of(p);
    cudaStream_t s = perf_stream(p->ctx);
    PERF_CUDA_TRY(fn, cudaMemsetAsync(dx, 0, G.planes * G.in_spatial * sizeof(float), s));
    pool_backward_kernel<<<perf_blocks(G.planes * G.out_spatial), PERF_THREADS, 0, s>>>(G, p->dev_offsets,
                                                                                      p->dev_idx, x, dy, dx);
    PERF_CUDA_LAUNCHED(fn);
    return PERF_STATUS_SUCCESS;
}
