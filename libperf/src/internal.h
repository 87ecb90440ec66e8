/*
 * internal.h - helpers shared by the library's source files (not installed).
 *
 * Error reporting: perf_fail(status, fmt, ...) stores a thread-local message and returns the status,
 * so a validation reads `if (bad) return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: ...", fn, ...);`.
 * Messages name the function, the argument, the expected and the actual value.
 */
#ifndef PERF_INTERNAL_H
#define PERF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "perforated.h"

perf_status perf_fail(perf_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Validation helpers: each returns SUCCESS or sets the message and returns INVALID_ARGUMENT. */
#define PERF_CHECK(expr)                                                                           \
    do {                                                                                           \
        perf_status perf_check_status_ = (expr);                                                   \
        if (perf_check_status_ != PERF_STATUS_SUCCESS) return perf_check_status_;                  \
    } while (0)

#define PERF_CHECK_NOT_NULL(fn, ptr)                                                               \
    do {                                                                                           \
        if ((ptr) == NULL)                                                                         \
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: %s must not be NULL", fn, #ptr);   \
    } while (0)

#define PERF_CHECK_POSITIVE(fn, value)                                                             \
    do {                                                                                           \
        if ((value) < 1)                                                                           \
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: %s must be >= 1, got %lld", fn,    \
                             #value, (long long)(value));                                          \
    } while (0)

/* a*b (and a*b*c...) in size_t, failing instead of wrapping. */
static inline int perf_mul_overflows(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 1;
    *out = a * b;
    return 0;
}

/* Size of a tensor of dims[0..n) elements, or INVALID_ARGUMENT naming `what` if it overflows the
 * addressable float count. */
perf_status perf_checked_product(const char *fn, const char *what, const size_t *dims, int n,
                                 size_t *out);

/* Allocation with 64-byte alignment; NULL on failure (callers turn it into OUT_OF_MEMORY). */
void *perf_aligned_alloc(size_t bytes);
void perf_aligned_free(void *ptr);

/* splitmix64: tiny, seedable, counter-friendly generator used for masks, ties and dropout. */
static inline uint64_t perf_splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
/* A uniform double in [0, 1) from a 64-bit hash. */
static inline double perf_unit_double(uint64_t h) { return (double)(h >> 11) * (1.0 / 9007199254740992.0); }

/* Mask internals, shared by mask.c, the generators, interpolation and the plans. */
struct perf_mask {
    int h, w, count;
    uint64_t seed;
    int32_t *indices; /* [count], strictly increasing */
    int32_t *nearest; /* [h*w], index into indices[] */
};

/* Loops over fewer elements than this run on one thread: waking a team costs more than it saves, and
 * far more when the machine is oversubscribed (a barrier then waits for a descheduled thread). */
#define PERF_PARALLEL_MIN 32768

/* Max pooling's comparison: does v replace the running maximum r? Larger values win, and a NaN wins
 * over any number (the first NaN stays), so NaN propagates as in numpy and PyTorch; ties keep the
 * first maximum. */
#define PERF_MAX_WINS(v, r) ((v) > (r) || ((v) != (v) && (r) == (r)))

/* Function multi-versioning for loops the compiler vectorises: the library is built for any x86-64,
 * these functions get AVX-512F, AVX2 and baseline clones, chosen when the library is loaded. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(PERF_NO_CLONES)
#define PERF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PERF_CLONES
#endif

/* Count of a rate-r mask on an h x w map, validating h, w and rate with the caller's name in the
 * messages (mask.c; used by the generators in mask_gen.c). */
perf_status perf_mask_count_checked(const char *fn, int h, int w, double rate, int *count);

/* Argument rules shared by a CPU function and its CUDA (_ctx) twin. */
perf_status perf_lrn_check_args(const char *fn, int batch, int channels, int spatial, int local_size, float alpha,
                                float beta, float k);
perf_status perf_batchnorm_train_args(const char *fn, int batch, int channels, int spatial, float eps,
                                      const float *x, const float *gamma, const float *beta, const float *y,
                                      const float *mean, const float *invstd);
perf_status perf_batchnorm_inference_args(const char *fn, int batch, int channels, int spatial, float eps,
                                          const float *x, const float *gamma, const float *beta,
                                          const float *mean, const float *var, const float *y);
perf_status perf_batchnorm_backward_args(const char *fn, int batch, int channels, int spatial, const float *x,
                                         const float *dy, const float *gamma, const float *mean,
                                         const float *invstd, const float *dx, const float *dgamma,
                                         const float *dbeta);

/* Number of threads for the library's own loops (OpenMP); BLAS itself runs single-threaded. */
int perf_threads(void);

#endif /* PERF_INTERNAL_H */
