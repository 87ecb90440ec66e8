/*
 * cuda/interp.cu - explicit nearest-neighbour interpolation on the GPU, the twin of interp.c.
 *
 * compact[planes][count] <-> full[planes][h*w]. Forward: one thread per full element,
 * full[pl][p] = compact[pl][nearest[p]] (coalesced writes). Backward (the adjoint): compact is zeroed,
 * then each full element adds itself into compact[pl][nearest[p]] with atomicAdd.
 *
 * The mask lives on the host (a perf_mask belongs to no device), so the kernels need a device copy of
 * its nearest map. Each CUDA context keeps the INTERP_CACHE_ENTRIES maps it used last: a host copy to
 * compare with and the device copy. Entries are matched by CONTENT (h*w and a memcmp of the map), not
 * by the mask's address: a destroyed mask's address can be reused by a different mask, and a pointer
 * key would then serve a stale map. The memcmp costs far less than the allocation and pageable
 * host-to-device copy it saves on every call. A miss replaces the least recently used entry.
 * Device memory comes from the stream-ordered pool (cudaMallocAsync / cudaFreeAsync on the context's
 * stream: no device-wide synchronisation, and an evicted map is freed only after the kernels already
 * enqueued have read it) where the device supports memory pools (cudaDevAttrMemoryPoolsSupported,
 * read once per context); elsewhere cudaMalloc / cudaFree (cudaFree waits for the device, which
 * happens only when a miss evicts an entry).
 * The context is documented as one thread at a time, but Python's shared default context can be
 * reached from several threads, so the cache has a mutex, held until the kernel is enqueued (an
 * eviction by another thread can then only be ordered after it on the stream).
 */
#include <mutex>
#include <new>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

enum { INTERP_CACHE_ENTRIES = 8 };

struct interp_entry {
    int32_t *host = nullptr; /* copy of the nearest map [hw], compared with the caller's mask */
    int32_t *dev = nullptr;  /* the same map on the device */
    size_t hw = 0;
    unsigned long long used = 0; /* value of the cache clock at the last use (LRU) */
};

struct perf_interp_cache {
    std::mutex lock;
    unsigned long long clock = 0;
    interp_entry entry[INTERP_CACHE_ENTRIES];
};

static cudaError_t map_alloc(const perf_context *ctx, int32_t **ptr, size_t bytes) {
    return ctx->memory_pools ? cudaMallocAsync((void **)ptr, bytes, perf_stream(ctx))
                             : cudaMalloc((void **)ptr, bytes);
}

static cudaError_t map_free(const perf_context *ctx, int32_t *ptr) {
    return ctx->memory_pools ? cudaFreeAsync(ptr, perf_stream(ctx)) : cudaFree(ptr);
}

static cudaError_t drop(const perf_context *ctx, interp_entry *e) {
    cudaError_t err = e->dev ? map_free(ctx, e->dev) : cudaSuccess;
    free(e->host);
    *e = interp_entry();
    return err;
}

perf_status perf_cuda_interp_cache_create(perf_context *ctx) {
    ctx->interp_cache = new (std::nothrow) perf_interp_cache();
    if (!ctx->interp_cache)
        return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "perf_context_create: cannot allocate the context");
    return PERF_STATUS_SUCCESS;
}

void perf_cuda_interp_cache_release(perf_context *ctx) { /* the stream has been synchronised */
    perf_interp_cache *c = ctx->interp_cache;
    if (!c) return;
    for (interp_entry &e : c->entry) drop(ctx, &e);
    delete c;
    ctx->interp_cache = nullptr;
}

/* The device copy of mask->nearest: a cached one, or a new upload. Called with the cache locked. */
static perf_status nearest_on_device(const char *fn, const perf_context *ctx, const perf_mask *mask,
                                     const int32_t **out) {
    perf_interp_cache *c = ctx->interp_cache;
    const size_t hw = (size_t)mask->h * mask->w, bytes = hw * sizeof(int32_t);
    interp_entry *victim = &c->entry[0];
    for (interp_entry &e : c->entry) {
        if (e.dev && e.hw == hw && memcmp(e.host, mask->nearest, bytes) == 0) {
            e.used = ++c->clock;
            *out = e.dev;
            return PERF_STATUS_SUCCESS;
        }
        if ((e.dev ? e.used : 0) < (victim->dev ? victim->used : 0)) victim = &e; /* empty slots first */
    }
    PERF_CUDA_TRY(fn, drop(ctx, victim));
    interp_entry e;
    e.host = (int32_t *)malloc(bytes);
    if (!e.host)
        return perf_fail(PERF_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes for the nearest map", fn,
                         bytes);
    memcpy(e.host, mask->nearest, bytes);
    cudaError_t err = map_alloc(ctx, &e.dev, bytes);
    if (err != cudaSuccess) e.dev = nullptr;
    /* from our own host copy, which lives as long as the entry */
    if (err == cudaSuccess) err = cudaMemcpyAsync(e.dev, e.host, bytes, cudaMemcpyHostToDevice, perf_stream(ctx));
    if (err != cudaSuccess) {
        drop(ctx, &e);
        PERF_CUDA_TRY(fn, err);
    }
    e.hw = hw;
    e.used = ++c->clock;
    *victim = e;
    *out = e.dev;
    return PERF_STATUS_SUCCESS;
}

__global__ void interp_forward_kernel(const int32_t *nearest, size_t hw, size_t count, size_t n,
                                      const float *compact, float *full) {
    PERF_GRID_LOOP(e, n) full[e] = compact[(e / hw) * count + nearest[e % hw]];
}

__global__ void interp_backward_kernel(const int32_t *nearest, size_t hw, size_t count, size_t n,
                                       const float *full, float *compact) {
    PERF_GRID_LOOP(e, n) atomicAdd(&compact[(e / hw) * count + nearest[e % hw]], full[e]);
}

static perf_status interp(const char *fn, const perf_context *ctx, const perf_mask *mask, int planes,
                          const float *src, float *dst, int backward) {
    PERF_CUDA_ENTER(fn, ctx);
    cudaStream_t s = perf_stream(ctx);
    const size_t hw = (size_t)mask->h * mask->w, count = (size_t)mask->count, n = (size_t)planes * hw;
    std::lock_guard<std::mutex> guard(ctx->interp_cache->lock);
    const int32_t *nearest = NULL;
    PERF_CHECK(nearest_on_device(fn, ctx, mask, &nearest));
    if (backward) PERF_CUDA_TRY(fn, cudaMemsetAsync(dst, 0, (size_t)planes * count * sizeof(float), s));
    if (backward)
        interp_backward_kernel<<<perf_blocks(n), PERF_THREADS, 0, s>>>(nearest, hw, count, n, src, dst);
    else
        interp_forward_kernel<<<perf_blocks(n), PERF_THREADS, 0, s>>>(nearest, hw, count, n, src, dst);
    PERF_CUDA_LAUNCHED(fn);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_interp_forward(const perf_context *ctx, const perf_mask *mask, int planes,
                                     const float *compact, float *full) {
    return interp("perf_interp_forward_ctx", ctx, mask, planes, compact, full, 0);
}

perf_status perf_cuda_interp_backward(const perf_context *ctx, const perf_mask *mask, int planes,
                                      const float *full, float *compact) {
    return interp("perf_interp_backward_ctx", ctx, mask, planes, full, compact, 1);
}
