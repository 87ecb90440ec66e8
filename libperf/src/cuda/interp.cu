/*
 * cuda/interp.cu - explicit nearest-neighbour interpolation on the GPU, the twin of interp.c.
 *
 * compact[planes][count] <-> full[planes][h*w]. Forward: one thread per full element,
 * full[pl][p] = compact[pl][nearest[p]] (coalesced writes). Backward (the adjoint): compact is zeroed,
 * then each full element adds itself into compact[pl][nearest[p]] with atomicAdd.
 * The mask lives on the host; its nearest map is copied into a stream-ordered allocation
 * (cudaMallocAsync, from the device's memory pool, so no device-wide synchronisation) and released
 * with cudaFreeAsync after the kernel, all on the context's stream.
 */
#include "cuda_internal.h"

__global__ void interp_forward_kernel(const int32_t *nearest, size_t hw, size_t count, size_t n,
                                      const float *compact, float *full) {
    PERF_GRID_LOOP(e, n) full[e] = compact[(e / hw) * count + nearest[e % hw]];
}

__global__ void interp_backward_kernel(const int32_t *nearest, size_t hw, size_t count, size_t n,
                                       const float *full, float *compact) {
    PERF_GRID_LOOP(e, n) atomicAdd(&compact[(e / hw) * count + nearest[e % hw]], full[e]);
}

static perf_status interp(const char *fn, const perf_context *ctx, const perf_mask *mask, int planes,
                          const float *src, float *dst, int backward) {
    PERF_CUDA_ENTER(fn, ctx);
    cudaStream_t s = perf_stream(ctx);
    const size_t hw = (size_t)mask->h * mask->w, count = (size_t)mask->count, n = (size_t)planes * hw;
    int32_t *nearest = NULL;
    PERF_CUDA_TRY(fn, cudaMallocAsync((void **)&nearest, hw * sizeof(int32_t), s));
    cudaError_t e = cudaMemcpyAsync(nearest, mask->nearest, hw * sizeof(int32_t), cudaMemcpyHostToDevice, s);
    if (e == cudaSuccess && backward) e = cudaMemsetAsync(dst, 0, (size_t)planes * count * sizeof(float), s);
    if (e == cudaSuccess) {
        if (backward)
            interp_backward_kernel<<<perf_blocks(n), PERF_THREADS, 0, s>>>(nearest, hw, count, n, src, dst);
        else
            interp_forward_kernel<<<perf_blocks(n), PERF_THREADS, 0, s>>>(nearest, hw, count, n, src, dst);
        e = cudaGetLastError();
    }
    cudaError_t f = cudaFreeAsync(nearest, s);
    PERF_CUDA_TRY(fn, e);
    PERF_CUDA_TRY(fn, f);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_interp_forward(const perf_context *ctx, const perf_mask *mask, int planes,
                                     const float *compact, float *full) {
    return interp("perf_interp_forward_ctx", ctx, mask, planes, compact, full, 0);
}

perf_status perf_cuda_interp_backward(const perf_context *ctx, const perf_mask *mask, int planes,
                                      const float *full, float *compact) {
    return interp("perf_interp_backward_ctx", ctx, mask, planes, full, compact, 1);
}
