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

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum { STREAM_BYTES = 64 << 20 }; /* full outputs at least this large skip the caches */

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
#if defined(__SSE2__)
    /* A full output larger than the caches: non-temporal stores skip reading every destination line
     * first (measured on the 2-vCPU Xeon: 16 x 64 x 224 x 224 from rate 1/2, 18.4 -> 9.4 ms; the same
     * stores in the conv kernels gained nothing). Rows must be whole 16-byte units. */
    if (full_size * sizeof(float) >= STREAM_BYTES && C % 4 == 0 && ((uintptr_t)full & 15) == 0) {
#pragma omp parallel
        {
#pragma omp for schedule(static)
            for (long long r = 0; r < rows; r++) {
                const size_t b = (size_t)r / hw, pos = (size_t)r % hw;
                const float *src = compact + (b * count + (size_t)nearest[pos]) * C;
                float *dst = full + (size_t)r * C;
                for (size_t c = 0; c < C; c += 4) _mm_stream_ps(dst + c, _mm_loadu_ps(src + c));
            }
            _mm_sfence();
        }
        return PERF_STATUS_SUCCESS;
    }
#endif
#pragma omp parallel for schedule(static) if (full_size >= PERF_PARALLEL_MIN)
    for (long long r = 0; r < rows; r++) {
        const size_t b = (size_t)r / hw, pos = (size_t)r % hw;
        memcpy(full + (size_t)r * C, compact + (b * count + (size_t)nearest[pos]) * C, C * sizeof(float));
    }
    return PERF_STATUS_SUCCESS;
}
