/*
 * cuda/batchnorm.cu - batch normalisation on the GPU: twin of batchnorm.c, same formulas and layout
 * ([batch][channels][spatial], statistics per channel over batch*spatial values).
 *
 * - Statistics (training) and the backward's sums: one block per channel, each thread summing a
 *   strided share of every plane of the channel in double (coalesced across the block), partial
 *   sums reduced in shared memory, like channel_sum_kernel in layers.cu. The variance sums
 *   (x - shift)^2 with shift the channel's first value, as on the CPU (the shifted-data algorithm):
 *   a large mean does not cancel away the variance's digits.
 * - The normalisation is a grid loop over all elements, y = (x - mean) * (gamma * invstd) + beta in
 *   that form (not x * scale + shift, which loses beta's digits when mean * scale is large); in
 *   inference the scale is gamma / sqrtf(var + eps) as on the CPU. y may be x in inference.
 * - Backward: the per-channel sums (sum dy -> dbeta, sum dy * (x - mean) -> dgamma) are one kernel,
 *   and dx an element-wise kernel launched after it on the same stream, so every sum has read dy
 *   before any dx is written: dx may be dy. The element-wise kernel takes mean(dy) and
 *   mean(dy * xhat) from the float dbeta and dgamma just written (no scratch memory), which agrees
 *   with the CPU's double values up to float rounding.
 */
#include "cuda_internal.h"

__device__ static inline size_t plane_offset(int n, int channels, int c, size_t spatial) {
    return ((size_t)n * channels + c) * spatial;
}

/* Sums part[0..PERF_THREADS) and part2 alike into element 0 (blockDim.x == PERF_THREADS). */
__device__ static void block_reduce2(double *part, double *part2) {
    __syncthreads();
    for (int w = PERF_THREADS / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) {
            part[threadIdx.x] += part[threadIdx.x + w];
            part2[threadIdx.x] += part2[threadIdx.x + w];
        }
        __syncthreads();
    }
}

/* Block c: mean[c] and invstd[c] of channel c. */
__global__ void bn_stats_kernel(int batch, int channels, size_t spatial, float eps, const float *x, float *mean,
                                float *invstd) {
    __shared__ double part[PERF_THREADS], part2[PERF_THREADS];
    const int c = blockIdx.x;
    const float shift = x[plane_offset(0, channels, c, spatial)];
    double sum = 0.0, sq = 0.0;
    for (int n = 0; n < batch; n++) {
        const float *xp = x + plane_offset(n, channels, c, spatial);
        for (size_t s = threadIdx.x; s < spatial; s += blockDim.x) {
            const double d = (double)(xp[s] - shift);
            sum += d;
            sq += d * d;
        }
    }
    part[threadIdx.x] = sum;
    part2[threadIdx.x] = sq;
    block_reduce2(part, part2);
    if (threadIdx.x == 0) {
        const double count = (double)batch * (double)spatial;
        const double m = part[0] / count, var = fmax(part2[0] / count - m * m, 0.0);
        mean[c] = (float)(m + shift);
        invstd[c] = (float)(1.0 / sqrt(var + (double)eps));
    }
}

/* stat is invstd (training: scale = gamma * invstd) or var (inference: scale = gamma / sqrtf(var + eps)). */
__global__ void bn_affine_kernel(size_t total, int channels, size_t spatial, const float *x, const float *gamma,
                                 const float *beta, const float *mean, const float *stat, int stat_is_var, float eps,
                                 float *y) {
    PERF_GRID_LOOP(e, total) {
        const int c = (int)((e / spatial) % channels);
        const float scale = stat_is_var ? gamma[c] / sqrtf(stat[c] + eps) : gamma[c] * stat[c];
        y[e] = (x[e] - mean[c]) * scale + beta[c];
    }
}

/* Block c: dbeta[c] = sum dy, dgamma[c] = invstd[c] * sum dy * (x - mean[c]) over channel c. */
__global__ void bn_backward_sums_kernel(int batch, int channels, size_t spatial, const float *x, const float *dy,
                                        const float *mean, const float *invstd, float *dgamma, float *dbeta) {
    __shared__ double part[PERF_THREADS], part2[PERF_THREADS];
    const int c = blockIdx.x;
    const float m = mean[c];
    double sdy = 0.0, sdyx = 0.0;
    for (int n = 0; n < batch; n++) {
        const size_t off = plane_offset(n, channels, c, spatial);
        const float *xp = x + off, *dp = dy + off;
        for (size_t s = threadIdx.x; s < spatial; s += blockDim.x) {
            sdy += dp[s];
            sdyx += (double)dp[s] * (double)(xp[s] - m);
        }
    }
    part[threadIdx.x] = sdy;
    part2[threadIdx.x] = sdyx;
    block_reduce2(part, part2);
    if (threadIdx.x == 0) {
        dbeta[c] = (float)part[0];
        dgamma[c] = (float)(part2[0] * invstd[c]);
    }
}

/* dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * invstd, with
 * mean(dy) = dbeta / count and mean(dy * xhat) = dgamma * invstd / count. dx may be dy. */
__global__ void bn_backward_dx_kernel(size_t total, int channels, size_t spatial, float inv_count, const float *x,
                                      const float *dy, const float *gamma, const float *mean, const float *invstd,
                                      const float *dgamma, const float *dbeta, float *dx) {
    PERF_GRID_LOOP(e, total) {
        const int c = (int)((e / spatial) % channels);
        const float is = invstd[c], k = gamma[c] * is;
        const float mdy = dbeta[c] * inv_count, mxh = dgamma[c] * is * inv_count;
        dx[e] = k * (dy[e] - mdy - (x[e] - mean[c]) * mxh);
    }
}

static size_t total_of(int batch, int channels, int spatial) {
    return (size_t)batch * (size_t)channels * (size_t)spatial; /* overflow checked by the caller */
}

perf_status perf_cuda_batchnorm_forward_train(const perf_context *ctx, int batch, int channels, int spatial,
                                              float eps, const float *x, const float *gamma, const float *beta,
                                              float *y, float *mean, float *invstd) {
    static const char fn[] = "perf_batchnorm_forward_train_ctx";
    const size_t total = total_of(batch, channels, spatial);
    PERF_CUDA_ENTER(fn, ctx);
    bn_stats_kernel<<<channels, PERF_THREADS, 0, perf_stream(ctx)>>>(batch, channels, (size_t)spatial, eps, x,
                                                                     mean, invstd);
    PERF_CUDA_LAUNCHED(fn);
    bn_affine_kernel<<<perf_blocks(total), PERF_THREADS, 0, perf_stream(ctx)>>>(
        total, channels, (size_t)spatial, x, gamma, beta, mean, invstd, 0, eps, y);
    PERF_CUDA_LAUNCHED(fn);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_batchnorm_forward_inference(const perf_context *ctx, int batch, int channels, int spatial,
                                                  float eps, const float *x, const float *gamma,
                                                  const float *beta, const float *mean, const float *var,
                                                  float *y) {
    static const char fn[] = "perf_batchnorm_forward_inference_ctx";
    const size_t total = total_of(batch, channels, spatial);
    PERF_CUDA_ENTER(fn, ctx);
    bn_affine_kernel<<<perf_blocks(total), PERF_THREADS, 0, perf_stream(ctx)>>>(
        total, channels, (size_t)spatial, x, gamma, beta, mean, var, 1, eps, y);
    PERF_CUDA_LAUNCHED(fn);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_batchnorm_backward(const perf_context *ctx, int batch, int channels, int spatial,
                                         const float *x, const float *dy, const float *gamma, const float *mean,
                                         const float *invstd, float *dx, float *dgamma, float *dbeta) {
    static const char fn[] = "perf_batchnorm_backward_ctx";
    const size_t total = total_of(batch, channels, spatial);
    const float inv_count = (float)(1.0 / ((double)batch * (double)spatial));
    PERF_CUDA_ENTER(fn, ctx);
    bn_backward_sums_kernel<<<channels, PERF_THREADS, 0, perf_stream(ctx)>>>(batch, channels, (size_t)spatial, x,
                                                                             dy, mean, invstd, dgamma, dbeta);
    PERF_CUDA_LAUNCHED(fn);
    /* launched after the sums on the same stream: they have read all of dy before dx (maybe dy) is written */
    bn_backward_dx_kernel<<<perf_blocks(total), PERF_THREADS, 0, perf_stream(ctx)>>>(
        total, channels, (size_t)spatial, inv_count, x, dy, gamma, mean, invstd, dgamma, dbeta, dx);
    PERF_CUDA_LAUNCHED(fn);
    return PERF_STATUS_SUCCESS;
}
