/*
 * pool_internal.h - the pooling plan, shared by pool.c (validation, CPU loops) and cuda/pool.cu.
 * See pool.c for the window rule and the CSR table of a compact input.
 */
#ifndef PERF_POOL_INTERNAL_H
#define PERF_POOL_INTERNAL_H

#include "internal.h"

struct perf_pool_plan {
    perf_pool_desc d;
    int out_h, out_w;
    size_t planes, in_spatial, out_spatial;
    int64_t *offsets; /* [out_spatial + 1]; NULL for a full input */
    int32_t *idx;     /* [offsets[out_spatial]] compact indices */
    int32_t *nearest; /* [in_h*in_w] the input mask's nearest map (CPU forward), NULL for a full input */
    const perf_context *ctx; /* CUDA plans only (perf_pool_plan_create_ctx); NULL on the CPU */
    int64_t *dev_offsets;    /* CUDA plans with a compact input: device copies of offsets, idx */
    int32_t *dev_idx;
};

/* Clip the window of output coordinate o along one axis to [0, in). */
static inline void perf_pool_window(int o, int stride, int pad, int kernel, int in, int *start, int *end) {
    long long s = (long long)o * stride - pad, e = s + kernel;
    *start = s < 0 ? 0 : (int)s;
    *end = e > in ? in : (int)e;
}

#endif /* PERF_POOL_INTERNAL_H */
