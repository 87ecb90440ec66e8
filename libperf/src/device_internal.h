/*
 * device_internal.h - the context object and the CUDA twins' internal prototypes.
 *
 * Dispatch: the public entry points (conv.c, pool.c, the *_ctx functions in layers_ctx.c) validate
 * their arguments on the host and then call either the CPU code or a perf_cuda_* function below. The
 * perf_cuda_* functions live in cuda/ *.cu in a CUDA build; in a CPU-only build device.c defines them
 * as stubs that return PERF_STATUS_UNSUPPORTED (they are unreachable there except through
 * perf_context_create, since no CUDA context can exist). `#ifdef PERF_WITH_CUDA` appears only in
 * device.c. The CUDA functions take already-validated arguments, set the context's device, enqueue
 * on its stream and turn every CUDA / cuBLAS error into PERF_STATUS_DEVICE_ERROR.
 */
#ifndef PERF_DEVICE_INTERNAL_H
#define PERF_DEVICE_INTERNAL_H

#include "internal.h"

struct perf_interp_cache; /* cuda/interp.cu */

struct perf_context {
    perf_device device;
    int index;    /* CUDA device ordinal */
    void *stream; /* cudaStream_t */
    void *blas;   /* cublasHandle_t bound to stream */
    int memory_pools; /* the device supports stream-ordered allocation (cudaMallocAsync) */
    struct perf_interp_cache *interp_cache; /* device copies of recently used nearest maps */
};

static inline int perf_ctx_is_cuda(const perf_context *ctx) {
    return ctx != NULL && ctx->device == PERF_DEVICE_CUDA;
}

/* The UNSUPPORTED answer of a CPU-only build (device.c). */
perf_status perf_no_cuda(const char *fn);

struct perf_conv_plan;
struct perf_pool_plan;

/* cuda/context.cu */
perf_status perf_cuda_count_devices(int *count);
perf_status perf_cuda_context_init(perf_context *ctx); /* ctx->index set; creates stream + handle */
void perf_cuda_context_release(perf_context *ctx);
perf_status perf_cuda_synchronize(const perf_context *ctx);
perf_status perf_cuda_alloc(const perf_context *ctx, size_t bytes, void **out);
perf_status perf_cuda_free(const perf_context *ctx, void *ptr);
/* kind: 0 host->device, 1 device->host, 2 device->device */
perf_status perf_cuda_memcpy(const perf_context *ctx, void *dst, const void *src, size_t bytes, int kind);

/* cuda/conv.cu: twins of cpu/conv.c. plan_init sizes the device workspace and uploads the table. */
perf_status perf_cuda_conv_plan_init(struct perf_conv_plan *p);
void perf_cuda_conv_plan_release(struct perf_conv_plan *p);
perf_status perf_cuda_conv_forward(const struct perf_conv_plan *p, const float *x, const float *weight,
                                   const float *bias, float *y, float *workspace);
perf_status perf_cuda_conv_backward_data(const struct perf_conv_plan *p, const float *weight,
                                         const float *dy, float *dx, float *workspace);
perf_status perf_cuda_conv_backward_filter(const struct perf_conv_plan *p, const float *x,
                                           const float *dy, float *dweight, float *dbias,
                                           float *workspace);

/* cuda/pool.cu: twins of pool.c's loops. */
perf_status perf_cuda_pool_plan_init(struct perf_pool_plan *p);
void perf_cuda_pool_plan_release(struct perf_pool_plan *p);
perf_status perf_cuda_pool_forward(const struct perf_pool_plan *p, const float *x, float *y);
perf_status perf_cuda_pool_backward(const struct perf_pool_plan *p, const float *x, const float *dy,
                                    float *dx);

/* cuda/interp.cu */
perf_status perf_cuda_interp_forward(const perf_context *ctx, const perf_mask *mask, int planes,
                                     const float *compact, float *full);
perf_status perf_cuda_interp_backward(const perf_context *ctx, const perf_mask *mask, int planes,
                                      const float *full, float *compact);

/* cuda/layers.cu */
perf_status perf_cuda_relu_forward(const perf_context *ctx, size_t size, const float *x, float *y);
perf_status perf_cuda_relu_backward(const perf_context *ctx, size_t size, const float *y, const float *dy,
                                    float *dx);
perf_status perf_cuda_dropout_apply(const perf_context *ctx, const char *fn, size_t size, float ratio,
                                    uint64_t seed, const float *in, float *out);
perf_status perf_cuda_lrn_forward(const perf_context *ctx, int batch, int channels, int spatial,
                                  int local_size, float alpha, float beta, float k, const float *x,
                                  float *y);
perf_status perf_cuda_lrn_backward(const perf_context *ctx, int batch, int channels, int spatial,
                                   int local_size, float alpha, float beta, float k, const float *x,
                                   const float *y, const float *dy, float *dx);
perf_status perf_cuda_softmax_xent_forward(const perf_context *ctx, int batch, int classes,
                                           const float *logits, const int32_t *labels, float *prob,
                                           float *loss);
perf_status perf_cuda_softmax_xent_backward(const perf_context *ctx, int batch, int classes,
                                            const float *prob, const int32_t *labels, float scale,
                                            float *dlogits);
/* bias: fn is the public entry point reported in errors (conv and fc call these for their bias). */
perf_status perf_cuda_bias_forward(const perf_context *ctx, const char *fn, int batch, int channels,
                                   int spatial, const float *bias, float *y);
perf_status perf_cuda_bias_backward(const perf_context *ctx, const char *fn, int batch, int channels,
                                    int spatial, const float *dy, float *dbias);

/* cuda/batchnorm.cu: twins of batchnorm.c (arguments validated by layers_ctx.c; var is not checked). */
perf_status perf_cuda_batchnorm_forward_train(const perf_context *ctx, int batch, int channels, int spatial,
                                              float eps, const float *x, const float *gamma, const float *beta,
                                              float *y, float *mean, float *invstd);
perf_status perf_cuda_batchnorm_forward_inference(const perf_context *ctx, int batch, int channels, int spatial,
                                                  float eps, const float *x, const float *gamma,
                                                  const float *beta, const float *mean, const float *var,
                                                  float *y);
perf_status perf_cuda_batchnorm_backward(const perf_context *ctx, int batch, int channels, int spatial,
                                         const float *x, const float *dy, const float *gamma, const float *mean,
                                         const float *invstd, float *dx, float *dgamma, float *dbeta);

/* cuda/fc.cu */
perf_status perf_cuda_fc_forward(const perf_context *ctx, int batch, int in_features, int out_features,
                                 const float *x, const float *weight, const float *bias, float *y);
perf_status perf_cuda_fc_backward(const perf_context *ctx, int batch, int in_features, int out_features,
                                  const float *x, const float *weight, const float *dy, float *dx,
                                  float *dweight, float *dbias);

#endif /* PERF_DEVICE_INTERNAL_H */
