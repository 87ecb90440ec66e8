/*
 * layout.c - conversions between the public NCHW layout and the channels-last layout of the CPU
 * inference engine: x[batch][channels][spatial] <-> y[batch][spatial][channels]. One conversion at
 * each end of a network, never per layer. Blocked transposes (TILE x TILE) so that both the reads and
 * the writes stay within a few cache lines; parallel over (image, block of rows).
 */
#include "internal.h"

enum { TILE = 32 };

static perf_status layout_check(const char *fn, int batch, int channels, int spatial, const float *x,
                                const float *y) {
    PERF_CHECK_POSITIVE(fn, batch);
    PERF_CHECK_POSITIVE(fn, channels);
    PERF_CHECK_POSITIVE(fn, spatial);
    PERF_CHECK_NOT_NULL(fn, x);
    PERF_CHECK_NOT_NULL(fn, y);
    size_t dims[3] = {(size_t)batch, (size_t)channels, (size_t)spatial}, total;
    return perf_checked_product(fn, "batch*channels*spatial", dims, 3, &total);
}

/* y[b][c][r] = x[b][r][c] for rows x cols matrices per image (rows, cols = the two inner dims of x). */
static void transpose(int batch, size_t rows, size_t cols, const float *x, float *y) {
    const long long rblocks = (long long)((rows + TILE - 1) / TILE), units = rblocks * batch;
#pragma omp parallel for schedule(static) if ((size_t)batch * rows * cols >= PERF_PARALLEL_MIN)
    for (long long u = 0; u < units; u++) {
        const size_t b = (size_t)(u / rblocks), r0 = (size_t)(u % rblocks) * TILE;
        const size_t r1 = r0 + TILE < rows ? r0 + TILE : rows;
        const float *xb = x + b * rows * cols;
        float *yb = y + b * rows * cols;
        for (size_t c0 = 0; c0 < cols; c0 += TILE) {
            const size_t c1 = c0 + TILE < cols ? c0 + TILE : cols;
            for (size_t c = c0; c < c1; c++)
                for (size_t r = r0; r < r1; r++) yb[c * rows + r] = xb[r * cols + c];
        }
    }
}

/* Few channels (an RGB image): interleave whole planes, the channel count a compile-time constant in
 * each case so the loop over positions vectorises (AlexNet's input, 256 x 3 x 227 x 227: 19 -> 14 ms on the
 * 2-vCPU Xeon). Parallel over (image, block of positions). */
#define INTERLEAVE(C)                                                                                      \
    for (size_t s = s0; s < s1; s++)                                                                      \
        for (int c = 0; c < (C); c++) yb[s * (C) + (size_t)c] = xb[(size_t)c * spatial + s];
PERF_CLONES static void interleave(int batch, int channels, size_t spatial, const float *x, float *y) {
    enum { BLOCK = 4096 };
    const long long sblocks = (long long)((spatial + BLOCK - 1) / BLOCK), units = sblocks * batch;
#pragma omp parallel for schedule(static) if ((size_t)batch * channels * spatial >= PERF_PARALLEL_MIN)
    for (long long u = 0; u < units; u++) {
        const size_t b = (size_t)(u / sblocks), s0 = (size_t)(u % sblocks) * BLOCK;
        const size_t s1 = s0 + BLOCK < spatial ? s0 + BLOCK : spatial;
        const float *xb = x + b * (size_t)channels * spatial;
        float *yb = y + b * (size_t)channels * spatial;
        switch (channels) {
        case 1: INTERLEAVE(1) break;
        case 2: INTERLEAVE(2) break;
        case 3: INTERLEAVE(3) break;
        default: INTERLEAVE(4) break;
        }
    }
}
#undef INTERLEAVE

perf_status perf_layout_nchw_to_nhwc(int batch, int channels, int spatial, const float *x, float *y) {
    PERF_CHECK(layout_check("perf_layout_nchw_to_nhwc", batch, channels, spatial, x, y));
    if (channels <= 4)
        interleave(batch, channels, (size_t)spatial, x, y);
    else
        transpose(batch, (size_t)channels, (size_t)spatial, x, y);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_layout_nhwc_to_nchw(int batch, int channels, int spatial, const float *x, float *y) {
    PERF_CHECK(layout_check("perf_layout_nhwc_to_nchw", batch, channels, spatial, x, y));
    transpose(batch, (size_t)spatial, (size_t)channels, x, y);
    return PERF_STATUS_SUCCESS;
}
