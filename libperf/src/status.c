/*
 * status.c - statuses, the thread-local error message, build information and thread control.
 *
 * The message buffer is thread-local so concurrent callers (Python threads release the GIL in C
 * calls) each read their own failure.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "blas.h"
#include "internal.h"

#if defined(PERF_WITH_OPENMP)
#include <omp.h>
#endif

static _Thread_local char perf_message[512];

perf_status perf_fail(perf_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(perf_message, sizeof perf_message, fmt, args);
    va_end(args);
    return status;
}

const char *perf_last_error(void) { return perf_message; }

const char *perf_status_string(perf_status status) {
    switch (status) {
    case PERF_STATUS_SUCCESS: return "success";
    case PERF_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case PERF_STATUS_UNSUPPORTED: return "unsupported";
    case PERF_STATUS_OUT_OF_MEMORY: return "out of memory";
    case PERF_STATUS_DEVICE_ERROR: return "device error";
    case PERF_STATUS_INTERNAL_ERROR: return "internal error";
    }
    return "unknown status";
}

perf_status perf_checked_product(const char *fn, const char *what, const size_t *dims, int n,
                                 size_t *out) {
    size_t total = 1;
    for (int i = 0; i < n; i++) {
        if (perf_mul_overflows(total, dims[i], &total) || total > SIZE_MAX / 8)
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                             "%s: %s has too many elements (the product of its sizes overflows size_t)",
                             fn, what);
    }
    *out = total;
    return PERF_STATUS_SUCCESS;
}

void *perf_aligned_alloc(size_t bytes) {
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL;
    return aligned_alloc(64, rounded);
}

void perf_aligned_free(void *ptr) { free(ptr); }

int perf_threads(void) {
#if defined(PERF_WITH_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int perf_get_num_threads(void) { return perf_threads(); }

perf_status perf_set_num_threads(int num_threads) {
    if (num_threads < 1)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "perf_set_num_threads: num_threads must be >= 1, got %d", num_threads);
#if defined(PERF_WITH_OPENMP)
    omp_set_num_threads(num_threads); /* BLAS stays single-threaded: see blas_threads.c */
#else
    perf_blas_set_threads(num_threads);
#endif
    return PERF_STATUS_SUCCESS;
}

const char *perf_build_info(void) {
    static _Thread_local char info[256];
    snprintf(info, sizeof info, "perforated %d.%d.%d; BLAS %s (%d threads); OpenMP %s (%d threads); CUDA %s",
             PERF_VERSION_MAJOR, PERF_VERSION_MINOR, PERF_VERSION_PATCH, perf_blas_vendor(),
             perf_blas_get_threads(),
#if defined(PERF_WITH_OPENMP)
             "on",
#else
             "off",
#endif
             perf_threads(),
#if defined(PERF_WITH_CUDA)
             "on"
#else
             "off"
#endif
    );
    return info;
}
