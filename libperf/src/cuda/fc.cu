/*
 * cuda/fc.cu - fully connected layer through cuBLAS, the twin of fc.c.
 *
 * Row-major x[batch][in], weight[out][in], y[batch][out]. cuBLAS is column-major, where a row-major
 * A[m][n] reads as A^T, so each row-major product is issued transposed:
 *   y = x . W^T          <=>  y^T [out x batch]  = W (op T on W^T) . x^T
 *   dx = dy . W          <=>  dx^T [in x batch]  = W^T . dy^T
 *   dW = dy^T . x        <=>  dW^T [in x out]    = x^T . dy (op T on dy^T)
 * Bias and its gradient reuse the per-channel kernels of layers.cu with spatial = 1.
 */
#include "cuda_internal.h"

perf_status perf_cuda_fc_forward(const perf_context *ctx, int batch, int in_features, int out_features,
                                 const float *x, const float *weight, const float *bias, float *y) {
    static const char fn[] = "perf_fc_forward_ctx";
    PERF_CUDA_ENTER(fn, ctx);
    const float one = 1.0f, zero = 0.0f;
    PERF_CUBLAS_TRY(fn, cublasSgemm(perf_blas(ctx), CUBLAS_OP_T, CUBLAS_OP_N, out_features, batch, in_features,
                                    &one, weight, in_features, x, in_features, &zero, y, out_features));
    if (bias) PERF_CHECK(perf_cuda_bias_forward(ctx, fn, batch, out_features, 1, bias, y));
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_fc_backward(const perf_context *ctx, int batch, int in_features, int out_features,
                                  const float *x, const float *weight, const float *dy, float *dx,
                                  float *dweight, float *dbias) {
    static const char fn[] = "perf_fc_backward_ctx";
    PERF_CUDA_ENTER(fn, ctx);
    const float one = 1.0f, zero = 0.0f;
    if (dx)
        PERF_CUBLAS_TRY(fn, cublasSgemm(perf_blas(ctx), CUBLAS_OP_N, CUBLAS_OP_N, in_features, batch, out_features,
                                        &one, weight, in_features, dy, out_features, &zero, dx, in_features));
    if (dweight)
        PERF_CUBLAS_TRY(fn, cublasSgemm(perf_blas(ctx), CUBLAS_OP_N, CUBLAS_OP_T, in_features, out_features, batch,
                                        &one, x, in_features, dy, out_features, &zero, dweight, in_features));
    if (dbias) PERF_CHECK(perf_cuda_bias_backward(ctx, fn, batch, out_features, 1, dy, dbias));
    return PERF_STATUS_SUCCESS;
}
