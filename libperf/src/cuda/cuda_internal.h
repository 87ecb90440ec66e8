/*
 * cuda_internal.h - shared by the CUDA twins: error handling and launch helpers.
 *
 * Every CUDA runtime / cuBLAS call goes through PERF_CUDA_TRY / PERF_CUBLAS_TRY, which turn a failure
 * into PERF_STATUS_DEVICE_ERROR with "<public function>: <call> failed: <cudaGetErrorString or the
 * cuBLAS status name>", and kernel launches are followed by PERF_CUDA_LAUNCHED (cudaGetLastError).
 * Nothing aborts. Kernels use grid-stride loops with size_t indices, so a launch is never larger than
 * PERF_MAX_BLOCKS blocks and tensors over 2^31 elements are fine.
 */
#ifndef PERF_CUDA_INTERNAL_H
#define PERF_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "../device_internal.h"
}

#define PERF_CUDA_TRY(fn, call)                                                                     \
    do {                                                                                            \
        cudaError_t perf_e_ = (call);                                                               \
        if (perf_e_ != cudaSuccess) {                                                               \
            (void)cudaGetLastError(); /* drop a non-sticky error so later calls do not inherit it */ \
            return perf_fail(PERF_STATUS_DEVICE_ERROR, "%s: %s failed: %s (%s)", fn, #call,         \
                             cudaGetErrorString(perf_e_), cudaGetErrorName(perf_e_));               \
        }                                                                                           \
    } while (0)

#define PERF_CUBLAS_TRY(fn, call)                                                                   \
    do {                                                                                            \
        cublasStatus_t perf_s_ = (call);                                                            \
        if (perf_s_ != CUBLAS_STATUS_SUCCESS)                                                       \
            return perf_fail(PERF_STATUS_DEVICE_ERROR, "%s: %s failed: %s", fn, #call,              \
                             cublasGetStatusName(perf_s_));                                         \
    } while (0)

#define PERF_CUDA_LAUNCHED(fn) PERF_CUDA_TRY(fn, cudaGetLastError())

/* Make the context's device current for this host thread (cheap when it already is). A non-sticky
 * error left by someone else (e.g. another library on this thread) is discarded first, so that
 * PERF_CUDA_LAUNCHED after our launches reports only our own. Note: the context's device stays
 * current afterwards (documented in perforated.h). */
#define PERF_CUDA_ENTER(fn, ctx)                                                                    \
    do {                                                                                            \
        (void)cudaGetLastError();                                                                   \
        PERF_CUDA_TRY(fn, cudaSetDevice((ctx)->index));                                             \
    } while (0)

enum { PERF_THREADS = 256, PERF_MAX_BLOCKS = 65535 * 16 };

/* cuda/interp.cu: the context's cache of uploaded nearest maps (created by perf_cuda_context_init,
 * released by perf_cuda_context_release after the stream is synchronised). */
perf_status perf_cuda_interp_cache_create(perf_context *ctx);
void perf_cuda_interp_cache_release(perf_context *ctx);

static inline cudaStream_t perf_stream(const perf_context *ctx) { return (cudaStream_t)ctx->stream; }
static inline cublasHandle_t perf_blas(const perf_context *ctx) { return (cublasHandle_t)ctx->blas; }

/* Blocks for a grid-stride loop over n elements. */
static inline unsigned perf_blocks(size_t n) {
    size_t b = (n + PERF_THREADS - 1) / PERF_THREADS;
    return (unsigned)(b == 0 ? 1 : b > PERF_MAX_BLOCKS ? PERF_MAX_BLOCKS : b);
}

#define PERF_GRID_LOOP(e, n)                                                                        \
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < (n);                         \
         e += (size_t)gridDim.x * blockDim.x)

#endif /* PERF_CUDA_INTERNAL_H */
