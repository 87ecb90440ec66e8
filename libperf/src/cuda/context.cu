/*
 * cuda/context.cu - the CUDA side of a context: device count, a blocking stream (ordered with the
 * legacy default stream, which CuPy and most libraries use by default) with a cuBLAS handle bound to
 * it and a cache of uploaded nearest maps (interp.cu), synchronisation, device memory and
 * stream-ordered copies.
 */
#include "cuda_internal.h"

perf_status perf_cuda_count_devices(int *count) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) { /* no device, no driver, driver too old: "no GPU", not an error */
        (void)cudaGetLastError();
        n = 0;
    }
    *count = n;
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_context_init(perf_context *ctx) {
    static const char fn[] = "perf_context_create";
    PERF_CUDA_ENTER(fn, ctx);
    cudaStream_t stream = NULL;
    PERF_CUDA_TRY(fn, cudaStreamCreate(&stream));
    cublasHandle_t handle = NULL;
    cublasStatus_t s = cublasCreate(&handle);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(handle, stream);
    if (s != CUBLAS_STATUS_SUCCESS) {
        if (handle) cublasDestroy(handle);
        cudaStreamDestroy(stream);
        return perf_fail(PERF_STATUS_DEVICE_ERROR, "%s: cuBLAS initialisation failed: %s", fn,
                         cublasGetStatusName(s));
    }
    ctx->stream = stream;
    ctx->blas = handle;
    /* Memory pools (cudaMallocAsync) are missing on some devices and drivers (e.g. some vGPU and WSL
     * setups): interp.cu then falls back to cudaMalloc / cudaFree. */
    int pools = 0;
    if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, ctx->index) != cudaSuccess) {
        (void)cudaGetLastError();
        pools = 0;
    }
    ctx->memory_pools = pools != 0;
    perf_status st = perf_cuda_interp_cache_create(ctx);
    if (st != PERF_STATUS_SUCCESS) perf_cuda_context_release(ctx);
    return st;
}

void perf_cuda_context_release(perf_context *ctx) {
    if (cudaSetDevice(ctx->index) != cudaSuccess) return;
    cudaStreamSynchronize(perf_stream(ctx));
    perf_cuda_interp_cache_release(ctx);
    if (ctx->blas) cublasDestroy(perf_blas(ctx));
    if (ctx->stream) cudaStreamDestroy(perf_stream(ctx));
    (void)cudaGetLastError();
}

perf_status perf_cuda_synchronize(const perf_context *ctx) {
    static const char fn[] = "perf_context_synchronize";
    PERF_CUDA_ENTER(fn, ctx);
    PERF_CUDA_TRY(fn, cudaStreamSynchronize(perf_stream(ctx)));
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_alloc(const perf_context *ctx, size_t bytes, void **out) {
    static const char fn[] = "perf_device_alloc";
    PERF_CUDA_ENTER(fn, ctx);
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 256);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        *out = NULL;
        return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes on CUDA device %d", fn,
                         bytes, ctx->index);
    }
    PERF_CUDA_TRY(fn, e);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_free(const perf_context *ctx, void *ptr) {
    static const char fn[] = "perf_device_free";
    PERF_CUDA_ENTER(fn, ctx);
    PERF_CUDA_TRY(fn, cudaFree(ptr));
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_memcpy(const perf_context *ctx, void *dst, const void *src, size_t bytes, int kind) {
    static const char *const names[3] = {"perf_memcpy_to_device", "perf_memcpy_to_host",
                                         "perf_memcpy_device_to_device"};
    static const cudaMemcpyKind kinds[3] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                            cudaMemcpyDeviceToDevice};
    const char *fn = names[kind];
    PERF_CUDA_ENTER(fn, ctx);
    PERF_CUDA_TRY(fn, cudaMemcpyAsync(dst, src, bytes, kinds[kind], perf_stream(ctx)));
    return PERF_STATUS_SUCCESS;
}
