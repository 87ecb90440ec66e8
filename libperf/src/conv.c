/*
 * conv.c - the public convolution entry points: argument checks, then the CPU kernels, or the CUDA
 * twins in cuda/conv.cu for a plan created with a CUDA context (device pointers; see DESIGN.md).
 */
#include <string.h>

#include "conv_internal.h"
#include "cpu/igemm.h"
#include "device_internal.h"

static perf_status check_workspace(const char *fn, const perf_conv_plan *p, const void *workspace,
                                   size_t workspace_bytes) {
    size_t need = p->workspace_floats * sizeof(float);
    if (workspace_bytes < need)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: workspace_bytes must be >= %zu (perf_conv_workspace_size), got %zu", fn, need,
                         workspace_bytes);
    if (need > 0 && workspace == NULL)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: workspace must not be NULL (%zu bytes needed)", fn,
                         need);
    if (((uintptr_t)workspace) % sizeof(float) != 0)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: workspace must be aligned to %zu bytes", fn,
                         sizeof(float));
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_forward(const perf_conv_plan *plan, const float *x, const float *weight,
                              const float *bias, float *y, void *workspace, size_t workspace_bytes) {
    static const char fn[] = "perf_conv_forward";
    PERF_CHECK_NOT_NULL(fn, plan);
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, weight);
    PERF_CHECK_NOT_NULL(fn, y);
    PERF_CHECK(check_workspace(fn, plan, workspace, workspace_bytes));
    if (plan->ctx) return perf_cuda_conv_forward(plan, x, weight, bias, y, workspace);
    perf_cpu_conv_forward(plan, x, weight, bias, y, workspace);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_backward_data(const perf_conv_plan *plan, const float *weight, const float *dy,
                                    float *dx, void *workspace, size_t workspace_bytes) {
    static const char fn[] = "perf_conv_backward_data";
    PERF_CHECK_NOT_NULL(fn, plan);
    PERF_CHECK_NOT_NULL(fn, weight);
    PERF_CHECK_NOT_NULL(fn, dy);
    PERF_CHECK_NOT_NULL(fn, dx);
    PERF_CHECK(check_workspace(fn, plan, workspace, workspace_bytes));
    if (plan->ctx) return perf_cuda_conv_backward_data(plan, weight, dy, dx, workspace);
    perf_cpu_conv_backward_data(plan, weight, dy, dx, workspace);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_backward_filter(const perf_conv_plan *plan, const float *x, const float *dy,
                                      float *dweight, float *dbias, void *workspace, size_t workspace_bytes) {
    static const char fn[] = "perf_conv_backward_filter";
    PERF_CHECK_NOT_NULL(fn, plan);
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, dy);
    PERF_CHECK_NOT_NULL(fn, dweight);
    PERF_CHECK(check_workspace(fn, plan, workspace, workspace_bytes));
    if (plan->ctx) return perf_cuda_conv_backward_filter(plan, x, dy, dweight, dbias, workspace);
    perf_cpu_conv_backward_filter(plan, x, dy, dweight, dbias, workspace);
    return PERF_STATUS_SUCCESS;
}

static perf_status check_cpu_plan(const char *fn, const perf_conv_plan *plan);

/* The checks both channels-last forwards share: plan on the CPU, x, y, relu, workspace. */
static perf_status check_nhwc_call(const char *fn, const perf_conv_plan *plan, const float *x, const float *y,
                                   int relu, const void *workspace, size_t workspace_bytes) {
    PERF_CHECK(check_cpu_plan(fn, plan));
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    PERF_CHECK_NOT_NULL(fn, workspace);
    if (relu != 0 && relu != 1)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: relu must be 0 or 1, got %d", fn, relu);
    size_t need = perf_conv_nhwc_workspace_floats(plan) * sizeof(float);
    if (workspace_bytes < need)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: workspace_bytes must be >= %zu (perf_conv_nhwc_workspace_size), got %zu", fn, need,
                         workspace_bytes);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_forward_nhwc(const perf_conv_plan *plan, const float *x, const float *weight,
                                   const float *scale, const float *bias, int relu, float *y, void *workspace,
                                   size_t workspace_bytes) {
    static const char fn[] = "perf_conv_forward_nhwc";
    PERF_CHECK(check_nhwc_call(fn, plan, x, y, relu, workspace, workspace_bytes));
    PERF_CHECK_NOT_NULL(fn, weight);
    perf_cpu_conv_forward_nhwc(plan, x, weight, NULL, scale, bias, NULL, relu, y, workspace);
    return PERF_STATUS_SUCCESS;
}

/* A packed-weights buffer: a 64-byte header naming the geometry it was packed for, then the panels. */
enum { PACKED_HEADER = 16, PACKED_MAGIC = 0x31574B50 /* "PKW1" */ };

static void packed_header(const perf_conv_plan *p, int32_t h[PACKED_HEADER]) {
    memset(h, 0, PACKED_HEADER * sizeof(int32_t));
    h[0] = PACKED_MAGIC;
    h[1] = p->isa->vw;
    h[2] = p->nhwc_nv;
    h[3] = p->nhwc_panels;
    h[4] = p->k_gemm;
    h[5] = p->cout_g;
    h[6] = p->d.groups;
    h[7] = p->kk;
}

static perf_status check_cpu_plan(const char *fn, const perf_conv_plan *plan) {
    PERF_CHECK_NOT_NULL(fn, plan);
    if (plan->ctx)
        return perf_fail(PERF_STATUS_UNSUPPORTED,
                         "%s: the channels-last forward runs on the CPU only; this plan was made for a CUDA "
                         "context (use perf_conv_forward)", fn);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_nhwc_packed_size(const perf_conv_plan *plan, size_t *bytes) {
    static const char fn[] = "perf_conv_nhwc_packed_size";
    PERF_CHECK(check_cpu_plan(fn, plan));
    PERF_CHECK_NOT_NULL(fn, bytes);
    *bytes = (PACKED_HEADER + perf_conv_nhwc_packed_floats(plan)) * sizeof(float);
    return PERF_STATUS_SUCCESS;
}

static perf_status check_packed_buffer(const char *fn, const perf_conv_plan *plan, const void *packed,
                                       size_t packed_bytes) {
    PERF_CHECK_NOT_NULL(fn, packed);
    if ((uintptr_t)packed % 64 != 0)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: packed must be 64-byte aligned, got address %% 64 = %u",
                         fn, (unsigned)((uintptr_t)packed % 64));
    size_t need = (PACKED_HEADER + perf_conv_nhwc_packed_floats(plan)) * sizeof(float);
    if (packed_bytes < need)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: packed_bytes must be >= %zu (perf_conv_nhwc_packed_size), got %zu", fn, need,
                         packed_bytes);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_nhwc_pack(const perf_conv_plan *plan, const float *weight, void *packed, size_t packed_bytes) {
    static const char fn[] = "perf_conv_nhwc_pack";
    PERF_CHECK(check_cpu_plan(fn, plan));
    PERF_CHECK_NOT_NULL(fn, weight);
    PERF_CHECK(check_packed_buffer(fn, plan, packed, packed_bytes));
    int32_t *h = (int32_t *)packed;
    packed_header(plan, h);
    perf_cpu_conv_nhwc_pack(plan, weight, (float *)packed + PACKED_HEADER);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_forward_nhwc_packed(const perf_conv_plan *plan, const float *x, const void *packed,
                                          size_t packed_bytes, const float *scale, const float *bias,
                                          const float *residual, int relu, float *y, void *workspace,
                                          size_t workspace_bytes) {
    static const char fn[] = "perf_conv_forward_nhwc_packed";
    PERF_CHECK(check_nhwc_call(fn, plan, x, y, relu, workspace, workspace_bytes));
    PERF_CHECK(check_packed_buffer(fn, plan, packed, packed_bytes));
    int32_t want[PACKED_HEADER];
    packed_header(plan, want);
    if (memcmp(want, packed, sizeof want) != 0)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: packed was not made by perf_conv_nhwc_pack for a plan of this geometry and "
                         "kernel set", fn);
    if (residual) {
        const size_t n = (size_t)plan->d.batch * (size_t)plan->count * (size_t)plan->d.out_channels;
        const uintptr_t r0 = (uintptr_t)residual, y0 = (uintptr_t)y, bytes = n * sizeof(float);
        if (r0 < y0 + bytes && y0 < r0 + bytes)
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: residual must not overlap y", fn);
    }
    perf_cpu_conv_forward_nhwc(plan, x, NULL, (const float *)packed + PACKED_HEADER, scale, bias, residual, relu,
                               y, workspace);
    return PERF_STATUS_SUCCESS;
}
