/*
 * layers_ctx.c - the context variants of the plan-less operations (dispatch).
 *
 * A NULL or CPU context calls the CPU function, which validates and runs on host memory. A CUDA
 * context validates the same arguments here, on the host (sizes, NULL pointers, ratios, overflow;
 * the device pointers themselves cannot be checked), with the CPU functions' messages, then enqueues
 * the CUDA twin on the context's stream.
 */
#include <math.h>

#include "device_internal.h"

/* names[i] is the argument holding dims[i] (as the CPU functions name it in their messages) */
static perf_status dims_check(const char *fn, const char *what, const char *const names[3], int a, int b, int c) {
    const int dims_in[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (dims_in[i] < 1)
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: %s must be >= 1, got %d", fn, names[i], dims_in[i]);
    size_t dims[3] = {(size_t)a, (size_t)b, (size_t)c}, total;
    return perf_checked_product(fn, what, dims, 3, &total);
}

static perf_status size_check(const char *fn, size_t size) {
    if (size < 1) return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: size must be >= 1, got 0", fn);
    if (size > SIZE_MAX / 8 || size > (size_t)INT64_MAX)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: size %zu exceeds the addressable float count", fn,
                         size);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_interp_forward_ctx(const perf_context *ctx, const perf_mask *mask, int planes,
                                    const float *compact, float *full) {
    static const char fn[] = "perf_interp_forward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_interp_forward(mask, planes, compact, full);
    PERF_CHECK_NOT_NULL(fn, mask);
    PERF_CHECK(dims_check(fn, "full[planes][h*w]", (const char *const[3]){"planes", "mask h", "mask w"}, planes, mask->h, mask->w));
    PERF_CHECK_NOT_NULL(fn, compact);
    PERF_CHECK_NOT_NULL(fn, full);
    return perf_cuda_interp_forward(ctx, mask, planes, compact, full);
}

perf_status perf_interp_backward_ctx(const perf_context *ctx, const perf_mask *mask, int planes,
                                     const float *full, float *compact) {
    static const char fn[] = "perf_interp_backward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_interp_backward(mask, planes, full, compact);
    PERF_CHECK_NOT_NULL(fn, mask);
    PERF_CHECK(dims_check(fn, "full[planes][h*w]", (const char *const[3]){"planes", "mask h", "mask w"}, planes, mask->h, mask->w));
    PERF_CHECK_NOT_NULL(fn, compact);
    PERF_CHECK_NOT_NULL(fn, full);
    return perf_cuda_interp_backward(ctx, mask, planes, full, compact);
}

perf_status perf_relu_forward_ctx(const perf_context *ctx, size_t size, const float *x, float *y) {
    static const char fn[] = "perf_relu_forward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_relu_forward(size, x, y);
    PERF_CHECK(size_check(fn, size));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    return perf_cuda_relu_forward(ctx, size, x, y);
}

perf_status perf_relu_backward_ctx(const perf_context *ctx, size_t size, const float *y, const float *dy,
                                   float *dx) {
    static const char fn[] = "perf_relu_backward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_relu_backward(size, y, dy, dx);
    PERF_CHECK(size_check(fn, size));
    PERF_CHECK_NOT_NULL(fn, y);
    PERF_CHECK_NOT_NULL(fn, dy);
    PERF_CHECK_NOT_NULL(fn, dx);
    return perf_cuda_relu_backward(ctx, size, y, dy, dx);
}

static perf_status dropout_check(const char *fn, size_t size, float ratio, const float *in, const float *out) {
    PERF_CHECK(size_check(fn, size));
    if (!isfinite(ratio) || ratio < 0.0f || ratio >= 1.0f)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: ratio must be finite and in [0, 1), got %g", fn,
                         (double)ratio);
    if (!in || !out)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: %s must not be NULL", fn, !in ? "input" : "output");
    return PERF_STATUS_SUCCESS;
}

perf_status perf_dropout_forward_ctx(const perf_context *ctx, size_t size, float ratio, uint64_t seed,
                                     const float *x, float *y) {
    static const char fn[] = "perf_dropout_forward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_dropout_forward(size, ratio, seed, x, y);
    PERF_CHECK(dropout_check(fn, size, ratio, x, y));
    return perf_cuda_dropout_apply(ctx, fn, size, ratio, seed, x, y);
}

perf_status perf_dropout_backward_ctx(const perf_context *ctx, size_t size, float ratio, uint64_t seed,
                                      const float *dy, float *dx) {
    static const char fn[] = "perf_dropout_backward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_dropout_backward(size, ratio, seed, dy, dx);
    PERF_CHECK(dropout_check(fn, size, ratio, dy, dx));
    return perf_cuda_dropout_apply(ctx, fn, size, ratio, seed, dy, dx);
}

static perf_status lrn_check(const char *fn, int batch, int channels, int spatial, int local_size, float alpha,
                             float beta, float k) {
    return perf_lrn_check_args(fn, batch, channels, spatial, local_size, alpha, beta, k);
}

perf_status perf_lrn_forward_ctx(const perf_context *ctx, int batch, int channels, int spatial, int local_size,
                                 float alpha, float beta, float k, const float *x, float *y) {
    static const char fn[] = "perf_lrn_forward_ctx";
    if (!perf_ctx_is_cuda(ctx))
        return perf_lrn_forward(batch, channels, spatial, local_size, alpha, beta, k, x, y);
    PERF_CHECK(lrn_check(fn, batch, channels, spatial, local_size, alpha, beta, k));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    return perf_cuda_lrn_forward(ctx, batch, channels, spatial, local_size, alpha, beta, k, x, y);
}

perf_status perf_lrn_backward_ctx(const perf_context *ctx, int batch, int channels, int spatial,
                                  int local_size, float alpha, float beta, float k, const float *x,
                                  const float *y, const float *dy, float *dx) {
    static const char fn[] = "perf_lrn_backward_ctx";
    if (!perf_ctx_is_cuda(ctx))
        return perf_lrn_backward(batch, channels, spatial, local_size, alpha, beta, k, x, y, dy, dx);
    PERF_CHECK(lrn_check(fn, batch, channels, spatial, local_size, alpha, beta, k));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    PERF_CHECK_NOT_NULL(fn, dy);
    PERF_CHECK_NOT_NULL(fn, dx);
    return perf_cuda_lrn_backward(ctx, batch, channels, spatial, local_size, alpha, beta, k, x, y, dy, dx);
}

static perf_status fc_check(const char *fn, int batch, int in_features, int out_features) {
    PERF_CHECK(dims_check(fn, "x", (const char *const[3]){"batch", "in_features", "1"}, batch, in_features, 1));
    PERF_CHECK(dims_check(fn, "weight", (const char *const[3]){"out_features", "in_features", "1"}, out_features, in_features, 1));
    return dims_check(fn, "y", (const char *const[3]){"batch", "out_features", "1"}, batch, out_features, 1);
}

perf_status perf_fc_forward_ctx(const perf_context *ctx, int batch, int in_features, int out_features,
                                const float *x, const float *weight, const float *bias, float *y) {
    static const char fn[] = "perf_fc_forward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_fc_forward(batch, in_features, out_features, x, weight, bias, y);
    PERF_CHECK(fc_check(fn, batch, in_features, out_features));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, weight);
    PERF_CHECK_NOT_NULL(fn, y);
    return perf_cuda_fc_forward(ctx, batch, in_features, out_features, x, weight, bias, y);
}

perf_status perf_fc_backward_ctx(const perf_context *ctx, int batch, int in_features, int out_features,
                                 const float *x, const float *weight, const float *dy, float *dx,
                                 float *dweight, float *dbias) {
    static const char fn[] = "perf_fc_backward_ctx";
    if (!perf_ctx_is_cuda(ctx))
        return perf_fc_backward(batch, in_features, out_features, x, weight, dy, dx, dweight, dbias);
    PERF_CHECK(fc_check(fn, batch, in_features, out_features));
    PERF_CHECK_NOT_NULL(fn, dy);
    if (dx) PERF_CHECK_NOT_NULL(fn, weight);
    if (dweight) PERF_CHECK_NOT_NULL(fn, x);
    return perf_cuda_fc_backward(ctx, batch, in_features, out_features, x, weight, dy, dx, dweight, dbias);
}

perf_status perf_softmax_xent_forward_ctx(const perf_context *ctx, int batch, int classes,
                                          const float *logits, const int32_t *labels, float *prob,
                                          float *loss) {
    static const char fn[] = "perf_softmax_xent_forward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_softmax_xent_forward(batch, classes, logits, labels, prob, loss);
    PERF_CHECK(dims_check(fn, "batch*classes", (const char *const[3]){"batch", "classes", "1"}, batch, classes, 1));
    PERF_CHECK_NOT_NULL(fn, labels);
    PERF_CHECK_NOT_NULL(fn, logits);
    PERF_CHECK_NOT_NULL(fn, prob);
    return perf_cuda_softmax_xent_forward(ctx, batch, classes, logits, labels, prob, loss);
}

perf_status perf_softmax_xent_backward_ctx(const perf_context *ctx, int batch, int classes, const float *prob,
                                           const int32_t *labels, float scale, float *dlogits) {
    static const char fn[] = "perf_softmax_xent_backward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_softmax_xent_backward(batch, classes, prob, labels, scale, dlogits);
    PERF_CHECK(dims_check(fn, "batch*classes", (const char *const[3]){"batch", "classes", "1"}, batch, classes, 1));
    PERF_CHECK_NOT_NULL(fn, labels);
    PERF_CHECK_NOT_NULL(fn, prob);
    PERF_CHECK_NOT_NULL(fn, dlogits);
    return perf_cuda_softmax_xent_backward(ctx, batch, classes, prob, labels, scale, dlogits);
}

perf_status perf_bias_forward_ctx(const perf_context *ctx, int batch, int channels, int spatial,
                                  const float *bias, float *y) {
    static const char fn[] = "perf_bias_forward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_bias_forward(batch, channels, spatial, bias, y);
    PERF_CHECK(dims_check(fn, "batch*channels*spatial", (const char *const[3]){"batch", "channels", "spatial"}, batch, channels, spatial));
    PERF_CHECK_NOT_NULL(fn, bias);
    PERF_CHECK_NOT_NULL(fn, y);
    return perf_cuda_bias_forward(ctx, fn, batch, channels, spatial, bias, y);
}

perf_status perf_bias_backward_ctx(const perf_context *ctx, int batch, int channels, int spatial,
                                   const float *dy, float *dbias) {
    static const char fn[] = "perf_bias_backward_ctx";
    if (!perf_ctx_is_cuda(ctx)) return perf_bias_backward(batch, channels, spatial, dy, dbias);
    PERF_CHECK(dims_check(fn, "batch*channels*spatial", (const char *const[3]){"batch", "channels", "spatial"}, batch, channels, spatial));
    PERF_CHECK_NOT_NULL(fn, dy);
    PERF_CHECK_NOT_NULL(fn, dbias);
    return perf_cuda_bias_backward(ctx, fn, batch, channels, spatial, dy, dbias);
}

/* Batch normalisation: the CPU functions' checks in their order, except var >= 0 in inference, which
 * would need var copied back from the device (a stream synchronisation on every call); the kernel
 * turns a negative var into NaN outputs instead (sqrtf of a negative number). */
perf_status perf_batchnorm_forward_train_ctx(const perf_context *ctx, int batch, int channels, int spatial,
                                             float eps, const float *x, const float *gamma, const float *beta,
                                             float *y, float *mean, float *invstd) {
    static const char fn[] = "perf_batchnorm_forward_train_ctx";
    if (!perf_ctx_is_cuda(ctx))
        return perf_batchnorm_forward_train(batch, channels, spatial, eps, x, gamma, beta, y, mean, invstd);
    PERF_CHECK(perf_batchnorm_train_args(fn, batch, channels, spatial, eps, x, gamma, beta, y, mean, invstd));
    return perf_cuda_batchnorm_forward_train(ctx, batch, channels, spatial, eps, x, gamma, beta, y, mean, invstd);
}

perf_status perf_batchnorm_forward_inference_ctx(const perf_context *ctx, int batch, int channels, int spatial,
                                                 float eps, const float *x, const float *gamma,
                                                 const float *beta, const float *mean, const float *var,
                                                 float *y) {
    static const char fn[] = "perf_batchnorm_forward_inference_ctx";
    if (!perf_ctx_is_cuda(ctx))
        return perf_batchnorm_forward_inference(batch, channels, spatial, eps, x, gamma, beta, mean, var, y);
    PERF_CHECK(perf_batchnorm_inference_args(fn, batch, channels, spatial, eps, x, gamma, beta, mean, var, y));
    return perf_cuda_batchnorm_forward_inference(ctx, batch, channels, spatial, eps, x, gamma, beta, mean, var, y);
}

perf_status perf_batchnorm_backward_ctx(const perf_context *ctx, int batch, int channels, int spatial,
                                        const float *x, const float *dy, const float *gamma, const float *mean,
                                        const float *invstd, float *dx, float *dgamma, float *dbeta) {
    static const char fn[] = "perf_batchnorm_backward_ctx";
    if (!perf_ctx_is_cuda(ctx))
        return perf_batchnorm_backward(batch, channels, spatial, x, dy, gamma, mean, invstd, dx, dgamma, dbeta);
    PERF_CHECK(perf_batchnorm_backward_args(fn, batch, channels, spatial, x, dy, gamma, mean, invstd, dx, dgamma,
                                            dbeta));
    return perf_cuda_batchnorm_backward(ctx, batch, channels, spatial, x, dy, gamma, mean, invstd, dx, dgamma,
                                        dbeta);
}
