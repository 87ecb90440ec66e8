/*
 * device.c - contexts, device memory and copies: the dispatch between the CPU and the CUDA backend.
 *
 * A CPU context is a plain struct: its memory is perf_aligned_alloc'd host memory and its copies are
 * memcpy, so code written against a context runs unchanged on either device. A CUDA context holds a
 * stream and a cuBLAS handle created by cuda/context.cu. This is the one file that knows whether the
 * CUDA backend was built (PERF_WITH_CUDA): without it, the perf_cuda_* functions declared in
 * device_internal.h are defined below as stubs answering PERF_STATUS_UNSUPPORTED.
 */
#include <stdlib.h>
#include <string.h>

#include "device_internal.h"

perf_status perf_no_cuda(const char *fn) {
    return perf_fail(PERF_STATUS_UNSUPPORTED,
                     "%s: this build has no CUDA backend (rebuild with -DPERF_WITH_CUDA=ON)", fn);
}

perf_status perf_cuda_device_count(int *count) {
    PERF_CHECK_NOT_NULL("perf_cuda_device_count", count);
    *count = 0;
#if defined(PERF_WITH_CUDA)
    return perf_cuda_count_devices(count);
#else
    return PERF_STATUS_SUCCESS;
#endif
}

perf_status perf_context_create(perf_device device, int device_index, perf_context **out) {
    static const char fn[] = "perf_context_create";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    if (device != PERF_DEVICE_CPU && device != PERF_DEVICE_CUDA)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: device must be PERF_DEVICE_CPU (0) or PERF_DEVICE_CUDA (1), got %d", fn,
                         (int)device);
    if (device == PERF_DEVICE_CUDA) {
#if !defined(PERF_WITH_CUDA)
        return perf_no_cuda(fn);
#else
        int n = 0;
        PERF_CHECK(perf_cuda_count_devices(&n));
        if (device_index < 0 || device_index >= n)
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                             "%s: device_index must be in [0, %d) (CUDA devices found: %d), got %d", fn, n,
                             n, device_index);
#endif
    }
    perf_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate the context", fn);
    ctx->device = device;
    ctx->index = device == PERF_DEVICE_CUDA ? device_index : 0;
    if (device == PERF_DEVICE_CUDA) {
        perf_status st = perf_cuda_context_init(ctx);
        if (st != PERF_STATUS_SUCCESS) {
            free(ctx);
            return st;
        }
    }
    *out = ctx;
    return PERF_STATUS_SUCCESS;
}

void perf_context_destroy(perf_context *ctx) {
    if (!ctx) return;
    if (perf_ctx_is_cuda(ctx)) perf_cuda_context_release(ctx);
    free(ctx);
}

perf_device perf_context_device(const perf_context *ctx) { return ctx ? ctx->device : PERF_DEVICE_CPU; }

int perf_context_device_index(const perf_context *ctx) { return ctx ? ctx->index : 0; }

perf_status perf_context_synchronize(const perf_context *ctx) {
    return perf_ctx_is_cuda(ctx) ? perf_cuda_synchronize(ctx) : PERF_STATUS_SUCCESS;
}

perf_status perf_device_alloc(const perf_context *ctx, size_t bytes, void **out) {
    static const char fn[] = "perf_device_alloc";
    PERF_CHECK_NOT_NULL(fn, ctx);
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    if (perf_ctx_is_cuda(ctx)) return perf_cuda_alloc(ctx, bytes, out);
    *out = perf_aligned_alloc(bytes);
    if (!*out) return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", fn, bytes);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_device_free(const perf_context *ctx, void *ptr) {
    PERF_CHECK_NOT_NULL("perf_device_free", ctx);
    if (!ptr) return PERF_STATUS_SUCCESS;
    if (perf_ctx_is_cuda(ctx)) return perf_cuda_free(ctx, ptr);
    perf_aligned_free(ptr);
    return PERF_STATUS_SUCCESS;
}

static perf_status copy(const char *fn, const perf_context *ctx, void *dst, const void *src, size_t bytes,
                        int kind) {
    PERF_CHECK_NOT_NULL(fn, ctx);
    if (bytes == 0) return PERF_STATUS_SUCCESS;
    PERF_CHECK_NOT_NULL(fn, dst);
    PERF_CHECK_NOT_NULL(fn, src);
    if (perf_ctx_is_cuda(ctx)) return perf_cuda_memcpy(ctx, dst, src, bytes, kind);
    memmove(dst, src, bytes);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_memcpy_to_device(const perf_context *ctx, void *device_dst, const void *host_src,
                                  size_t bytes) {
    return copy("perf_memcpy_to_device", ctx, device_dst, host_src, bytes, 0);
}

perf_status perf_memcpy_to_host(const perf_context *ctx, void *host_dst, const void *device_src,
                                size_t bytes) {
    return copy("perf_memcpy_to_host", ctx, host_dst, device_src, bytes, 1);
}

perf_status perf_memcpy_device_to_device(const perf_context *ctx, void *device_dst, const void *device_src,
                                         size_t bytes) {
    return copy("perf_memcpy_device_to_device", ctx, device_dst, device_src, bytes, 2);
}

#if !defined(PERF_WITH_CUDA)
/* CPU-only build: the CUDA twins, unreachable without a CUDA context, answer UNSUPPORTED. */
#define PERF_CUDA_STUB(name, params, fn) \
    perf_status name params { return perf_no_cuda(fn); }
PERF_CUDA_STUB(perf_cuda_count_devices, (int *count), (*count = 0, "perf_cuda_device_count"))
PERF_CUDA_STUB(perf_cuda_context_init, (perf_context *ctx), ((void)ctx, "perf_context_create"))
void perf_cuda_context_release(perf_context *ctx) { (void)ctx; }
PERF_CUDA_STUB(perf_cuda_synchronize, (const perf_context *c), ((void)c, "perf_context_synchronize"))
PERF_CUDA_STUB(perf_cuda_alloc, (const perf_context *c, size_t b, void **o), ((void)c, (void)b, (void)o, "perf_device_alloc"))
PERF_CUDA_STUB(perf_cuda_free, (const perf_context *c, void *p), ((void)c, (void)p, "perf_device_free"))
PERF_CUDA_STUB(perf_cuda_memcpy, (const perf_context *c, void *d, const void *s, size_t b, int k),
               ((void)c, (void)d, (void)s, (void)b, (void)k, "perf_memcpy"))
PERF_CUDA_STUB(perf_cuda_conv_plan_init, (struct perf_conv_plan *p), ((void)p, "perf_conv_plan_create_ctx"))
void perf_cuda_conv_plan_release(struct perf_conv_plan *p) { (void)p; }
PERF_CUDA_STUB(perf_cuda_conv_forward,
               (const struct perf_conv_plan *p, const float *x, const float *w, const float *b, float *y,
                float *ws),
               ((void)p, (void)x, (void)w, (void)b, (void)y, (void)ws, "perf_conv_forward"))
PERF_CUDA_STUB(perf_cuda_conv_backward_data,
               (const struct perf_conv_plan *p, const float *w, const float *dy, float *dx, float *ws),
               ((void)p, (void)w, (void)dy, (void)dx, (void)ws, "perf_conv_backward_data"))
PERF_CUDA_STUB(perf_cuda_conv_backward_filter,
               (const struct perf_conv_plan *p, const float *x, const float *dy, float *dw, float *db,
                float *ws),
               ((void)p, (void)x, (void)dy, (void)dw, (void)db, (void)ws, "perf_conv_backward_filter"))
PERF_CUDA_STUB(perf_cuda_pool_plan_init, (struct perf_pool_plan *p), ((void)p, "perf_pool_plan_create_ctx"))
void perf_cuda_pool_plan_release(struct perf_pool_plan *p) { (void)p; }
PERF_CUDA_STUB(perf_cuda_pool_forward, (const struct perf_pool_plan *p, const float *x, float *y),
               ((void)p, (void)x, (void)y, "perf_pool_forward"))
PERF_CUDA_STUB(perf_cuda_pool_backward,
               (const struct perf_pool_plan *p, const float *x, const float *dy, float *dx),
               ((void)p, (void)x, (void)dy, (void)dx, "perf_pool_backward"))
PERF_CUDA_STUB(perf_cuda_interp_forward,
               (const perf_context *c, const perf_mask *m, int n, const float *a, float *b),
               ((void)c, (void)m, (void)n, (void)a, (void)b, "perf_interp_forward_ctx"))
PERF_CUDA_STUB(perf_cuda_interp_backward,
               (const perf_context *c, const perf_mask *m, int n, const float *a, float *b),
               ((void)c, (void)m, (void)n, (void)a, (void)b, "perf_interp_backward_ctx"))
PERF_CUDA_STUB(perf_cuda_relu_forward, (const perf_context *c, size_t n, const float *x, float *y),
               ((void)c, (void)n, (void)x, (void)y, "perf_relu_forward_ctx"))
PERF_CUDA_STUB(perf_cuda_relu_backward,
               (const perf_context *c, size_t n, const float *y, const float *dy, float *dx),
               ((void)c, (void)n, (void)y, (void)dy, (void)dx, "perf_relu_backward_ctx"))
PERF_CUDA_STUB(perf_cuda_dropout_apply,
               (const perf_context *c, const char *fn, size_t n, float r, uint64_t s, const float *i,
                float *o),
               ((void)c, (void)n, (void)r, (void)s, (void)i, (void)o, fn))
PERF_CUDA_STUB(perf_cuda_lrn_forward,
               (const perf_context *c, int n, int ch, int s, int l, float a, float b, float k, const float *x,
                float *y),
               ((void)c, (void)n, (void)ch, (void)s, (void)l, (void)a, (void)b, (void)k, (void)x, (void)y,
                "perf_lrn_forward_ctx"))
PERF_CUDA_STUB(perf_cuda_lrn_backward,
               (const perf_context *c, int n, int ch, int s, int l, float a, float b, float k, const float *x,
                const float *y, const float *dy, float *dx),
               ((void)c, (void)n, (void)ch, (void)s, (void)l, (void)a, (void)b, (void)k, (void)x, (void)y,
                (void)dy, (void)dx, "perf_lrn_backward_ctx"))
PERF_CUDA_STUB(perf_cuda_softmax_xent_forward,
               (const perf_context *c, int n, int k, const float *l, const int32_t *lab, float *p, float *o),
               ((void)c, (void)n, (void)k, (void)l, (void)lab, (void)p, (void)o,
                "perf_softmax_xent_forward_ctx"))
PERF_CUDA_STUB(perf_cuda_softmax_xent_backward,
               (const perf_context *c, int n, int k, const float *p, const int32_t *lab, float s, float *d),
               ((void)c, (void)n, (void)k, (void)p, (void)lab, (void)s, (void)d,
                "perf_softmax_xent_backward_ctx"))
PERF_CUDA_STUB(perf_cuda_bias_forward,
               (const perf_context *c, const char *fn, int n, int ch, int s, const float *b, float *y),
               ((void)c, (void)n, (void)ch, (void)s, (void)b, (void)y, fn))
PERF_CUDA_STUB(perf_cuda_bias_backward,
               (const perf_context *c, const char *fn, int n, int ch, int s, const float *dy, float *db),
               ((void)c, (void)n, (void)ch, (void)s, (void)dy, (void)db, fn))
PERF_CUDA_STUB(perf_cuda_batchnorm_forward_train,
               (const perf_context *c, int n, int ch, int s, float e, const float *x, const float *g,
                const float *b, float *y, float *m, float *is),
               ((void)c, (void)n, (void)ch, (void)s, (void)e, (void)x, (void)g, (void)b, (void)y, (void)m,
                (void)is, "perf_batchnorm_forward_train_ctx"))
PERF_CUDA_STUB(perf_cuda_batchnorm_forward_inference,
               (const perf_context *c, int n, int ch, int s, float e, const float *x, const float *g,
                const float *b, const float *m, const float *v, float *y),
               ((void)c, (void)n, (void)ch, (void)s, (void)e, (void)x, (void)g, (void)b, (void)m, (void)v,
                (void)y, "perf_batchnorm_forward_inference_ctx"))
PERF_CUDA_STUB(perf_cuda_batchnorm_backward,
               (const perf_context *c, int n, int ch, int s, const float *x, const float *dy, const float *g,
                const float *m, const float *is, float *dx, float *dg, float *db),
               ((void)c, (void)n, (void)ch, (void)s, (void)x, (void)dy, (void)g, (void)m, (void)is, (void)dx,
                (void)dg, (void)db, "perf_batchnorm_backward_ctx"))
PERF_CUDA_STUB(perf_cuda_fc_forward,
               (const perf_context *c, int n, int i, int o, const float *x, const float *w, const float *b,
                float *y),
               ((void)c, (void)n, (void)i, (void)o, (void)x, (void)w, (void)b, (void)y, "perf_fc_forward_ctx"))
PERF_CUDA_STUB(perf_cuda_fc_backward,
               (const perf_context *c, int n, int i, int o, const float *x, const float *w, const float *dy,
                float *dx, float *dw, float *db),
               ((void)c, (void)n, (void)i, (void)o, (void)x, (void)w, (void)dy, (void)dx, (void)dw, (void)db,
                "perf_fc_backward_ctx"))
#endif
