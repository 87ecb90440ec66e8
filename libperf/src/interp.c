/*
 * interp.c - explicit nearest-neighbour interpolation between compact and full tensors.
 *
 * compact[planes][count] <-> full[planes][h*w], planes = batch * channels.
 * Forward is a gather through the mask's nearest map: full[pl][p] = compact[pl][nearest[p]].
 * Backward is its adjoint, a scatter-add: compact[pl][k] = sum over p with nearest[p] == k of
 * full[pl][p]. Planes are independent, so both loops parallelise over planes with no write races
 * (each thread owns whole output planes); within a plane the scatter-add stays sequential.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

static perf_status interp_check(const char *fn, const perf_mask *mask, int planes,
                                const float *compact, const float *full, size_t *full_size,
                                size_t *compact_size) {
    PERF_CHECK_NOT_NULL(fn, mask);
    PERF_CHECK_POSITIVE(fn, planes);
    PERF_CHECK_NOT_NULL(fn, compact);
    PERF_CHECK_NOT_NULL(fn, full);
    const size_t full_dims[3] = {(size_t)planes, (size_t)mask->h, (size_t)mask->w};
    const size_t compact_dims[2] = {(size_t)planes, (size_t)mask->count};
    PERF_CHECK(perf_checked_product(fn, "full[planes][h*w]", full_dims, 3, full_size));
    PERF_CHECK(perf_checked_product(fn, "compact[planes][count]", compact_dims, 2, compact_size));
    return PERF_STATUS_SUCCESS;
}

perf_status perf_interp_forward(const perf_mask *mask, int planes, const float *compact,
                                float *full) {
    size_t full_size, compact_size;
    PERF_CHECK(interp_check("perf_interp_forward", mask, planes, compact, full, &full_size,
                            &compact_size));
    const size_t hw = (size_t)mask->h * (size_t)mask->w, count = (size_t)mask->count;
    const int32_t *nearest = mask->nearest;
#pragma omp parallel for schedule(static) if (full_size >= PERF_PARALLEL_MIN)
    for (int pl = 0; pl < planes; pl++) {
        const float *src = compact + (size_t)pl * count;
        float *dst = full + (size_t)pl * hw;
        for (size_t p = 0; p < hw; p++) dst[p] = src[nearest[p]];
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_interp_backward(const perf_mask *mask, int planes, const float *full,
                                 float *compact) {
    size_t full_size, compact_size;
    PERF_CHECK(interp_check("perf_interp_backward", mask, planes, compact, full, &full_size,
                            &compact_size));
    const size_t hw = (size_t)mask->h * (size_t)mask->w, count = (size_t)mask->count;
    const int32_t *nearest = mask->nearest;
#pragma omp parallel for schedule(static) if (full_size >= PERF_PARALLEL_MIN)
    for (int pl = 0; pl < planes; pl++) {
        const float *src = full + (size_t)pl * hw;
        float *dst = compact + (size_t)pl * count;
        memset(dst, 0, count * sizeof *dst);
        for (size_t p = 0; p < hw; p++) dst[nearest[p]] += src[p];
    }
    return PERF_STATUS_SUCCESS;
}

/* Channels-last: full[b][p][c] = compact[b][nearest[p]][c], a copy of one channel run per position. */
perf_status perf_interp_forward_nhwc(const perf_mask *mask, int batch, int channels, const float *compact,
                                     float *full) {
    static const char fn[] = "perf_interp_forward_nhwc";
    PERF_CHECK_POSITIVE(fn, batch);
    PERF_CHECK_POSITIVE(fn, channels);
    size_t full_size, compact_size;
    const size_t planes64 = (size_t)batch * (size_t)channels;
    if (planes64 > INT32_MAX)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: batch*channels = %zu exceeds 2^31-1", fn, planes64);
    PERF_CHECK(interp_check(fn, mask, (int)planes64, compact, full, &full_size, &compact_size));
    const size_t hw = (size_t)mask->h * (size_t)mask->w, count = (size_t)mask->count, C = (size_t)channels;
    const int32_t *nearest = mask->nearest;
    const long long rows = (long long)batch * (long long)hw;
#pragma omp parallel for schedule(static) if (full_size >= PERF_PARALLEL_MIN)
    for (long long r = 0; r < rows; r++) {
        const size_t b = (size_t)r / hw, pos = (size_t)r % hw;
        memcpy(full + (size_t)r * C, compact + (b * count + (size_t)nearest[pos]) * C, C * sizeof(float));
    }
    return PERF_STATUS_SUCCESS;
}
