/*
 * plan_ctx.c - plans bound to a context (dispatch). The CPU constructor validates the descriptor and
 * builds the host gather tables; for a CUDA context the CUDA twin then sizes the device workspace and
 * uploads the tables (perf_cuda_*_plan_init). A NULL or CPU context is the CPU constructor itself.
 */
#include "conv_internal.h"
#include "device_internal.h"
#include "pool_internal.h"

static perf_status check_ctx(const char *fn, const perf_context *ctx) {
    if (ctx && ctx->device != PERF_DEVICE_CPU && ctx->device != PERF_DEVICE_CUDA)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: ctx has an unknown device %d", fn,
                         (int)ctx->device);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_conv_plan_create_ctx(const perf_context *ctx, const perf_conv_desc *desc,
                                      const perf_mask *output_mask, const perf_mask *input_mask,
                                      perf_conv_plan **out) {
    static const char fn[] = "perf_conv_plan_create_ctx";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    PERF_CHECK(check_ctx(fn, ctx));
    perf_conv_plan *p = NULL;
    PERF_CHECK(perf_conv_plan_create(desc, output_mask, input_mask, &p));
    if (!perf_ctx_is_cuda(ctx)) {
        *out = p;
        return PERF_STATUS_SUCCESS;
    }
    p->ctx = ctx;
    perf_status st = perf_cuda_conv_plan_init(p);
    if (st != PERF_STATUS_SUCCESS) {
        perf_conv_plan_destroy(p);
        return st;
    }
    *out = p;
    return PERF_STATUS_SUCCESS;
}

perf_status perf_pool_plan_create_ctx(const perf_context *ctx, const perf_pool_desc *desc,
                                      const perf_mask *input_mask, perf_pool_plan **out) {
    static const char fn[] = "perf_pool_plan_create_ctx";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    PERF_CHECK(check_ctx(fn, ctx));
    perf_pool_plan *p = NULL;
    PERF_CHECK(perf_pool_plan_create(desc, input_mask, &p));
    if (!perf_ctx_is_cuda(ctx)) {
        *out = p;
        return PERF_STATUS_SUCCESS;
    }
    p->ctx = ctx;
    perf_status st = perf_cuda_pool_plan_init(p);
    if (st != PERF_STATUS_SUCCESS) {
        perf_pool_plan_destroy(p);
        return st;
    }
    *out = p;
    return PERF_STATUS_SUCCESS;
}

const perf_context *perf_conv_plan_context(const perf_conv_plan *plan) { return plan ? plan->ctx : NULL; }

const perf_context *perf_pool_plan_context(const perf_pool_plan *plan) { return plan ? plan->ctx : NULL; }
