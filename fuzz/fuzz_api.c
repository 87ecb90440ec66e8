/*
 * fuzz_api.c - libFuzzer harness for the public C API of libperforated (perforated.h).
 *
 * Build and run: fuzz/run.sh [seconds]  (clang -fsanitize=fuzzer,address,undefined; the library sources
 * are compiled into the fuzzer, with a sanitized reference SGEMM, fuzz/cblas_ref.c, instead of OpenBLAS).
 *
 * The input bytes are decoded into a short program of API calls (at most MAX_OPS): masks from explicit
 * indices (unsorted, duplicated, out of range, count 0 or > h*w, NULL) and from the four generators with
 * odd rates (NaN, inf, negative, 1.0, ...); convolution and pooling plans from arbitrary descriptors
 * (zero, negative, huge and overflowing sizes, groups that do not divide, kernels larger than the
 * padded input, masks of the wrong size, NULLs); and, when a plan exists and its buffers are small,
 * forward and backward calls on real buffers; interpolation, ReLU, dropout, LRN, FC, softmax and bias
 * with small arbitrary sizes and inconsistent arguments. Sizes come mostly small, sometimes from a
 * table of edge values (0, -1, INT_MIN, INT_MAX, 46341, 2^28, ...).
 *
 * Oracle, for every call:
 *   - the status is a perf_status; a failure leaves a non-empty message that names a perf_ function,
 *     and a failing create leaves no object in *out (NULL or untouched);
 *   - the harness predicts validity from perf.h's documented rules: an invalid request must return
 *     INVALID_ARGUMENT, a valid one SUCCESS (or OUT_OF_MEMORY where it needs large buffers);
 *   - results are checked against a naive double-precision reference (masks: nearest map is exact;
 *     conv and pooling forward: value by value; backward: adjoint identities; interp, relu, dropout,
 *     fc, softmax, bias, lrn); outputs are pre-filled with NaN so an unwritten element fails;
 *   - AddressSanitizer / UBSan / LeakSanitizer catch out-of-bounds access, UB and leaks.
 * A broken rule prints what was expected and aborts, so libFuzzer saves the input.
 *
 * Cost control: valid requests whose honest work is large (a 10^8-position map, a 1 GB table) are not
 * made unless every buffer they need is >= 1 GiB: __asan_default_options below caps an allocation at
 * 512 MiB and makes malloc return NULL beyond it, so those requests must end in OUT_OF_MEMORY without
 * touching memory. Buffers the harness allocates itself are capped at BUF_CAP bytes.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perforated.h"

/* The library's internal error setter (sources are compiled in): used to clear the message before a
 * call, so a failure that forgets to set one is caught. */
perf_status perf_fail(perf_status status, const char *fmt, ...);

const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "allocator_may_return_null=1:max_allocation_size_mb=512:detect_leaks=1";
}

enum {
    MAX_OPS = 24,
    NSLOTS = 4,
    BUF_CAP = 4 << 20,         /* bytes of buffers one forward/backward call may use */
    WORK_CAP = 1 << 21,        /* multiply-adds of one call plus its reference */
    MASK_CAP = 1 << 14,        /* positions of a mask that is actually built */
    HUGE_POSITIONS = 1 << 28,  /* >= this: every position-sized buffer is >= 1 GiB: must fail fast */
};

/* ---------------------------------------------------------------------------------------------- */
/* Input decoding                                                                                  */

typedef struct {
    const uint8_t *p;
    size_t n;
    uint64_t rng; /* splitmix state for bulk data (array contents), seeded from the input */
} reader;

static uint8_t u8(reader *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}
static uint32_t u32(reader *r) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)u8(r) << (8 * i);
    return v;
}
static uint64_t u64(reader *r) { return (uint64_t)u32(r) | (uint64_t)u32(r) << 32; }

static uint64_t next(reader *r) {
    uint64_t x = (r->rng += 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static const int64_t SPECIAL_INTS[16] = {0,          -1,         -2,      INT_MIN,    INT_MAX, INT_MAX - 1,
                                         46340,      46341,      65535,   65536,      1 << 20, 1 << 28,
                                         1 << 30,    (1 << 30) + 1, 3,    -65536};

/* A size: mostly 1..small_max, sometimes a signed byte (0 and negatives), sometimes an edge value. */
static int rd_int(reader *r, int small_max) {
    uint8_t m = u8(r);
    if (m < 216) return 1 + (int)(u8(r) % (unsigned)small_max);
    if (m < 236) return (int)(int8_t)u8(r);
    return (int)SPECIAL_INTS[m % 16];
}

/* A padding: mostly 0..small_max. */
static int rd_pad(reader *r, int small_max) {
    uint8_t m = u8(r);
    if (m < 216) return (int)(u8(r) % (unsigned)(small_max + 1));
    if (m < 236) return (int)(int8_t)u8(r);
    return (int)SPECIAL_INTS[m % 16];
}

static double rd_rate(reader *r) {
    static const double T[16] = {0.0, 0.25, 0.5, 0.75, 0.9, 0.99, -0.0, 1.0, 0x1.fffffffffffffp-1, -1e-300,
                                 1e-300, NAN, INFINITY, -INFINITY, DBL_MAX, 2.0};
    uint8_t m = u8(r);
    if (m < 160) return (double)(m % 100) / 100.0;
    if (m < 240) return T[m % 16];
    uint64_t bits = u64(r);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static float rd_float_param(reader *r, float typical) {
    static const float T[12] = {0.0f, -0.0f, 1.0f, -1.0f, 0.75f, 1e-4f, 2.0f, NAN, INFINITY, -INFINITY, FLT_MAX,
                                1e-40f};
    uint8_t m = u8(r);
    if (m < 160) return typical;
    if (m < 240) return T[m % 12];
    uint32_t bits = u32(r);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Array contents. Modes 0..5 are small quantised values (so the reference comparison is tight);
 * 6 sprinkles NaN / inf; 7 uses huge magnitudes. Returns 1 if the values are "clean". */
static int fill(reader *r, int mode, float *a, size_t n) {
    static const float SPECIAL[6] = {NAN, INFINITY, -INFINITY, 3e38f, -3e38f, 1e-42f};
    for (size_t i = 0; i < n; i++) {
        uint64_t v = next(r);
        a[i] = (float)((int)(v & 0xff) - 128) / 32.0f;
        if (mode == 6 && (v >> 8) % 17 == 0) a[i] = SPECIAL[(v >> 16) % 6];
        if (mode == 7) a[i] *= 1e37f;
    }
    return mode < 6;
}

/* ---------------------------------------------------------------------------------------------- */
/* The oracle                                                                                      */

static const char *current_input_note = "";
static int trace; /* FUZZ_API_TRACE=1: print every call (to replay a reproducer) */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "\nfuzz_api: CONTRACT VIOLATION at %s:%d: ", __FILE__, __LINE__);           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n%s\n", current_input_note);                                             \
        abort();                                                                                   \
    } while (0)

static void clear_error(void) { perf_fail(PERF_STATUS_SUCCESS, "%s", ""); }

enum expect { EXPECT_OK, EXPECT_INVALID, EXPECT_OK_OR_OOM, EXPECT_FAIL, EXPECT_ANY };

static const char *st_name(perf_status st) { return perf_status_string(st); }

/* Checks one returned status against the expectation and the message rule. */
static void check_status(const char *call, perf_status st, enum expect e) {
    if ((int)st < PERF_STATUS_SUCCESS || (int)st > PERF_STATUS_INTERNAL_ERROR)
        FAIL("%s returned %d, not a perf_status", call, (int)st);
    if (st != PERF_STATUS_SUCCESS) {
        const char *msg = perf_last_error();
        if (!msg) FAIL("%s failed (%s) and perf_last_error() is NULL", call, st_name(st));
        if (msg[0] == '\0') FAIL("%s failed (%s) with an empty perf_last_error()", call, st_name(st));
        if (strncmp(msg, "perf_", 5) != 0)
            FAIL("%s failed (%s) with a message that names no function: \"%s\"", call, st_name(st), msg);
        if (st == PERF_STATUS_INTERNAL_ERROR) FAIL("%s: internal error: %s", call, msg);
    }
    switch (e) {
    case EXPECT_OK:
        if (st != PERF_STATUS_SUCCESS) FAIL("%s: expected success, got %s: %s", call, st_name(st), perf_last_error());
        break;
    case EXPECT_INVALID:
        if (st != PERF_STATUS_INVALID_ARGUMENT)
            FAIL("%s: expected invalid argument, got %s (%s)", call, st_name(st),
                 st == PERF_STATUS_SUCCESS ? "" : perf_last_error());
        break;
    case EXPECT_OK_OR_OOM:
        if (st != PERF_STATUS_SUCCESS && st != PERF_STATUS_OUT_OF_MEMORY)
            FAIL("%s: expected success or out of memory, got %s: %s", call, st_name(st), perf_last_error());
        break;
    case EXPECT_FAIL:
        if (st == PERF_STATUS_SUCCESS) FAIL("%s: expected a failure, got success", call);
        break;
    case EXPECT_ANY: break;
    }
}

#define CALL(expectation, expr)                                                                    \
    ({                                                                                             \
        clear_error();                                                                             \
        if (trace) fprintf(stderr, "fuzz_api: %s\n", #expr);                                        \
        perf_status st_ = (expr);                                                                  \
        check_status(#expr, st_, (expectation));                                                   \
        st_;                                                                                       \
    })

/* |a - b| <= tol * scale + tiny, with scale the sum of the absolute terms. */
static void check_close(const char *what, size_t i, double got, double want, double scale) {
    double tol = 1e-4 * scale + 1e-6;
    if (!(fabs(got - want) <= tol)) FAIL("%s[%zu] = %.9g, reference %.9g (tolerance %.3g)", what, i, got, want, tol);
}

static float *alloc_floats(size_t n) {
    float *a = malloc((n ? n : 1) * sizeof *a);
    if (!a) FAIL("harness: cannot allocate %zu floats", n);
    return a;
}
static float *nan_floats(size_t n) {
    float *a = alloc_floats(n);
    for (size_t i = 0; i < n; i++) a[i] = NAN;
    return a;
}
static int all_finite(const float *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}

/* Product of non-negative factors for the harness's own buffer sizing; -1 when negative or past 2^40
 * (nothing that large is ever allocated here, and later arithmetic on the result cannot overflow). */
static int64_t prod(int n, const int64_t *f) {
    __int128 t = 1;
    for (int i = 0; i < n; i++) {
        if (f[i] < 0) return -1;
        t *= f[i];
        if (t > ((__int128)1 << 40)) return -1;
    }
    return (int64_t)t;
}
/* What perf_checked_product accepts: the product fits size_t / 8. */
static int fits(int n, const int64_t *f) {
    __int128 t = 1;
    for (int i = 0; i < n; i++) {
        t *= f[i];
        if (t > (__int128)(SIZE_MAX / 8)) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* State                                                                                           */

typedef struct {
    perf_mask *masks[NSLOTS];
} state;

static void put_mask(state *s, int slot, perf_mask *m) {
    perf_mask_destroy(s->masks[slot]);
    s->masks[slot] = m;
}

/* ---------------------------------------------------------------------------------------------- */
/* Masks                                                                                           */

/* Mask invariants; the nearest map is verified exactly when it is cheap. */
static void verify_mask(const perf_mask *m, int h, int w, int count, uint64_t seed, const int32_t *want_idx) {
    if (perf_mask_height(m) != h || perf_mask_width(m) != w || perf_mask_count(m) != count ||
        perf_mask_seed(m) != seed)
        FAIL("mask accessors: %dx%d count %d seed %llu, expected %dx%d count %d seed %llu", perf_mask_height(m),
             perf_mask_width(m), perf_mask_count(m), (unsigned long long)perf_mask_seed(m), h, w, count,
             (unsigned long long)seed);
    const int32_t *idx = perf_mask_indices(m), *near = perf_mask_nearest(m);
    if (!idx || !near) FAIL("mask accessors returned NULL");
    const int64_t hw = (int64_t)h * w;
    for (int k = 0; k < count; k++) {
        if (idx[k] < 0 || idx[k] >= hw || (k > 0 && idx[k] <= idx[k - 1]))
            FAIL("mask indices[%d] = %d not increasing in [0, %lld)", k, idx[k], (long long)hw);
        if (want_idx && idx[k] != want_idx[k]) FAIL("mask indices[%d] = %d, given %d", k, idx[k], want_idx[k]);
        if (near[idx[k]] != k) FAIL("nearest[indices[%d]] = %d", k, near[idx[k]]);
    }
    const int exact = hw * (int64_t)count <= 200000;
    for (int64_t p = 0; p < hw; p++) {
        if (near[p] < 0 || near[p] >= count) FAIL("nearest[%lld] = %d out of [0, %d)", (long long)p, near[p], count);
        if (!exact) continue;
        const int64_t pr = p / w, pc = p % w;
        int64_t best = INT64_MAX;
        for (int k = 0; k < count; k++) {
            int64_t dr = idx[k] / w - pr, dc = idx[k] % w - pc, d = dr * dr + dc * dc;
            if (d < best) best = d;
        }
        int64_t dr = idx[near[p]] / w - pr, dc = idx[near[p]] % w - pc;
        if (dr * dr + dc * dc != best)
            FAIL("nearest[%lld] -> %d at squared distance %lld, the nearest is at %lld", (long long)p, near[p],
                 (long long)(dr * dr + dc * dc), (long long)best);
    }
}

/* count distinct sorted positions of [0, hw) (Floyd's algorithm into a byte map). */
static void sample_sorted(reader *r, int64_t hw, int count, int32_t *out) {
    unsigned char *used = calloc((size_t)hw, 1);
    if (!used) FAIL("harness: calloc");
    for (int64_t j = hw - count; j < hw; j++) {
        int64_t t = (int64_t)(next(r) % (uint64_t)(j + 1));
        if (used[t]) t = j;
        used[t] = 1;
    }
    int n = 0;
    for (int64_t p = 0; p < hw; p++)
        if (used[p]) out[n++] = (int32_t)p;
    free(used);
}

static void op_mask_create(reader *r, state *s) {
    const int h = rd_int(r, 24), w = rd_int(r, 24);
    const uint64_t seed = u8(r) < 200 ? u8(r) : u64(r);
    if (trace) fprintf(stderr, "fuzz_api: mask_create %dx%d\n", h, w);
    const int valid_hw = h >= 1 && w >= 1 && (int64_t)h * w <= INT32_MAX;
    const int64_t hw = (int64_t)h * w;
    const int small = valid_hw && hw <= MASK_CAP && h <= 1024 && w <= 1024;
    const int huge = valid_hw && hw >= HUGE_POSITIONS;
    int count;
    switch (u8(r) % 8) {
    case 0: count = 0; break;
    case 1: count = hw + 1 <= INT32_MAX && hw >= 1 ? (int)(hw + 1) : INT_MAX; break;
    case 2: count = u8(r) & 1 ? -1 : INT_MIN; break;
    case 3: count = valid_hw ? (int)hw : 1; break;
    case 4: count = 1; break;
    default: count = valid_hw ? 1 + (int)(next(r) % (uint64_t)(huge ? 64 : hw)) : 1 + u8(r);
    }
    const int count_ok = valid_hw && count >= 1 && count <= hw;
    if (count_ok && !small && !(huge && count <= 64)) return; /* honest work too large: not a bug */
    const int mode = u8(r) % 6;
    const int n_buf = count_ok ? count : 4;
    int32_t *idx = malloc((size_t)n_buf * sizeof *idx);
    if (!idx) FAIL("harness: malloc");
    int idx_ok = 1;
    if (count_ok && small) {
        sample_sorted(r, hw, count, idx);
    } else if (count_ok) { /* huge map, few positions: increasing by random gaps */
        int64_t p = (int64_t)(next(r) % 1000);
        for (int k = 0; k < count; k++, p += 1 + (int64_t)(next(r) % (uint64_t)(hw / 64))) idx[k] = (int32_t)p;
        idx_ok = p - 1 < hw;
    } else {
        for (int k = 0; k < n_buf; k++) idx[k] = (int32_t)next(r);
    }
    const int32_t *pass = idx;
    if (count_ok) {
        const int k = (int)(next(r) % (uint64_t)count);
        switch (mode) {
        case 1: if (count >= 2) { idx[k ? k : 1] = idx[k ? k - 1 : 0]; idx_ok = 0; } break;
        case 2: if (count >= 2) { int j = k ? k : 1; int32_t t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; idx_ok = 0; } break;
        case 3: {
            static const int64_t bad[4] = {-1, INT32_MIN, INT32_MAX, 0};
            int64_t v = bad[next(r) % 4];
            idx[k] = (int32_t)(v == 0 ? hw : v); /* all out of [0, hw) (hw <= INT32_MAX) */
            idx_ok = 0;
            break;
        }
        case 4:
            for (int j = 0; j < count; j++) idx[j] = (int32_t)next(r);
            idx_ok = 1;
            for (int j = 0; j < count; j++)
                if (idx[j] < 0 || idx[j] >= hw || (j && idx[j] <= idx[j - 1])) idx_ok = 0;
            break;
        case 5: pass = NULL; idx_ok = 0; break;
        default: break;
        }
    }
    const int null_out = u8(r) % 16 == 0;
    perf_mask *m = (perf_mask *)(uintptr_t)0x1; /* must be overwritten */
    const int valid = count_ok && idx_ok && !null_out;
    perf_status st = CALL(valid ? (huge ? EXPECT_OK_OR_OOM : EXPECT_OK) : EXPECT_INVALID,
                          perf_mask_create(h, w, count, pass, seed, null_out ? NULL : &m));
    if (st != PERF_STATUS_SUCCESS) {
        if (!null_out && m != NULL && m != (perf_mask *)(uintptr_t)0x1) FAIL("perf_mask_create failed but left *out = %p", (void *)m);
    } else {
        verify_mask(m, h, w, count, seed, idx);
        put_mask(s, u8(r) % NSLOTS, m);
    }
    free(idx);
}

/* What perf_mask_count_for_rate should return. */
static int expected_count(int64_t hw, double rate) { /* SPEC's floor, exact within rounding of an integer */
    const double exact = (1.0 - rate) * (double)hw, nearest = floor(exact + 0.5);
    double kept = fabs(exact - nearest) <= 1e-6 ? nearest : floor(exact);
    return kept < 1.0 ? 1 : (int)kept;
}

/* Rules of pool_cover (perf_mask_pooling) for one axis. */
static int pool_axis_ok(int in, int k, int s, int p) {
    return k >= 1 && s >= 1 && p >= 0 && p < k && (int64_t)k <= (int64_t)in + 2 * (int64_t)p;
}

static void op_mask_generate(reader *r, state *s) {
    const int kind = u8(r) % 5; /* uniform, grid, pooling, scores, count_for_rate */
    const int h = rd_int(r, 24), w = rd_int(r, 24);
    const double rate = rd_rate(r);
    const uint64_t seed = u8(r) < 200 ? u8(r) : u64(r);
    const int64_t hw = (int64_t)h * w;
    if (trace) fprintf(stderr, "fuzz_api: mask generator %d on %dx%d rate %.17g\n", kind, h, w, rate);
    const int dims_ok = h >= 1 && w >= 1 && hw <= INT32_MAX;
    const int rate_ok = rate >= 0.0 && rate < 1.0;
    const int small = dims_ok && hw <= MASK_CAP && h <= 1024 && w <= 1024;
    const int huge = dims_ok && hw >= HUGE_POSITIONS;
    const int null_out = u8(r) % 16 == 0;
    int valid = dims_ok && rate_ok && !null_out;
    perf_mask *m = (perf_mask *)(uintptr_t)0x1;
    perf_mask **out = null_out ? NULL : &m;
    perf_status st;
    if (kind == 4) {
        int c = -7;
        int *cp = u8(r) % 16 == 0 ? NULL : &c;
        st = CALL(dims_ok && rate_ok && cp ? EXPECT_OK : EXPECT_INVALID, perf_mask_count_for_rate(h, w, rate, cp));
        if (st == PERF_STATUS_SUCCESS && c != expected_count(hw, rate))
            FAIL("perf_mask_count_for_rate(%d, %d, %.17g) = %d, expected %d", h, w, rate, c, expected_count(hw, rate));
        return;
    }
    if (valid && !small && !huge) return; /* honest work too large */
    if (kind == 0) {
        st = CALL(valid ? (huge ? EXPECT_OK_OR_OOM : EXPECT_OK) : EXPECT_INVALID,
                  perf_mask_uniform(h, w, rate, seed, out));
    } else if (kind == 1) {
        if (valid && huge && (h > (1 << 17) || w > (1 << 17))) return; /* O(h + w) grid search: slow, fine */
        st = CALL(valid ? (huge ? EXPECT_OK_OR_OOM : EXPECT_OK) : EXPECT_INVALID,
                  perf_mask_grid(h, w, rate, seed, out));
    } else if (kind == 2) {
        const int kh = rd_int(r, 6), kw = rd_int(r, 6), sh = rd_int(r, 4), sw = rd_int(r, 4);
        const int ph = rd_pad(r, 2), pw = rd_pad(r, 2);
        const int geom_ok = pool_axis_ok(h, kh, sh, ph) && pool_axis_ok(w, kw, sw, pw);
        /* A huge map fails its allocation before the geometry is looked at: either error is right. */
        enum expect e = !valid ? EXPECT_INVALID
                        : huge ? (geom_ok ? EXPECT_OK_OR_OOM : EXPECT_FAIL)
                               : (geom_ok ? EXPECT_OK : EXPECT_INVALID);
        st = CALL(e, perf_mask_pooling(h, w, rate, kh, kw, sh, sw, ph, pw, seed, out));
    } else {
        if (dims_ok && !small) return; /* the scores array itself would be huge */
        const size_t n = dims_ok ? (size_t)hw : 4;
        float *scores = alloc_floats(n);
        fill(r, u8(r) % 8, scores, n);
        const float *pass = u8(r) % 16 == 0 ? NULL : scores;
        int finite = all_finite(scores, n);
        st = CALL(valid && pass && finite ? EXPECT_OK : EXPECT_INVALID,
                  perf_mask_from_scores(h, w, rate, pass, seed, out));
        if (st == PERF_STATUS_SUCCESS) { /* the kept scores dominate the dropped ones */
            const int32_t *near = perf_mask_nearest(m), *idx = perf_mask_indices(m);
            float lo = INFINITY, hi = -INFINITY;
            for (int k = 0; k < perf_mask_count(m); k++) lo = fminf(lo, scores[idx[k]]);
            for (int64_t p = 0; p < hw; p++)
                if (idx[near[p]] != p) hi = fmaxf(hi, scores[p]);
            if (hi > lo) FAIL("perf_mask_from_scores dropped a score %g above a kept %g", hi, lo);
        }
        free(scores);
    }
    if (st != PERF_STATUS_SUCCESS) {
        if (out && m != NULL && m != (perf_mask *)(uintptr_t)0x1) FAIL("mask generator failed but left *out = %p", (void *)m);
        return;
    }
    const int want = expected_count(hw, rate), got = perf_mask_count(m);
    if (kind == 1 ? (got < 1 || got > want) : got != want)
        FAIL("mask kind %d on %dx%d at rate %.17g keeps %d positions, expected %s%d", kind, h, w, rate, got,
             kind == 1 ? "<= " : "", want);
    verify_mask(m, h, w, got, seed, NULL);
    put_mask(s, u8(r) % NSLOTS, m);
}

/* A mask for a conv / pool operand: a slot's mask (possibly of the wrong size), a fresh uniform mask
 * of the right size, or none. */
static const perf_mask *pick_mask(reader *r, state *s, int h, int w, perf_mask **fresh) {
    *fresh = NULL;
    uint8_t m = u8(r) % 8;
    if (m < 4) return NULL;
    if (m < 6) return s->masks[u8(r) % NSLOTS];
    if (h < 1 || w < 1 || (int64_t)h * w > MASK_CAP) return NULL;
    clear_error();
    perf_status st = perf_mask_uniform(h, w, (double)(u8(r) % 100) / 100.0, u8(r), fresh);
    check_status("perf_mask_uniform (operand)", st, EXPECT_OK);
    return *fresh;
}

/* ---------------------------------------------------------------------------------------------- */
/* Convolution                                                                                     */

/* y[b][co][j] of the perforated convolution, in double; with absolute values if `abs_terms`. */
static void ref_conv(const perf_conv_desc *d, int oh, int ow, int count, const int32_t *out_idx,
                     const int32_t *in_near, int in_spatial, const float *x, const float *wt, const float *bias,
                     int abs_terms, double *y) {
    (void)oh;
    const int cin_g = d->in_channels / d->groups, cout_g = d->out_channels / d->groups;
    const int dh = d->dilation_h ? d->dilation_h : 1, dw = d->dilation_w ? d->dilation_w : 1;
    for (int b = 0; b < d->batch; b++)
        for (int co = 0; co < d->out_channels; co++) {
            const int g = co / cout_g;
            for (int j = 0; j < count; j++) {
                const int pos = out_idx ? out_idx[j] : j, oy = pos / ow, ox = pos % ow;
                double acc = bias ? (abs_terms ? fabs(bias[co]) : bias[co]) : 0.0;
                for (int c = 0; c < cin_g; c++)
                    for (int ki = 0; ki < d->kernel_h; ki++) {
                        const int iy = oy * d->stride_h - d->pad_h + ki * dh;
                        if (iy < 0 || iy >= d->in_h) continue;
                        for (int kj = 0; kj < d->kernel_w; kj++) {
                            const int ix = ox * d->stride_w - d->pad_w + kj * dw;
                            if (ix < 0 || ix >= d->in_w) continue;
                            int q = iy * d->in_w + ix;
                            if (in_near) q = in_near[q];
                            const double xv = x[((size_t)b * d->in_channels + g * cin_g + c) * in_spatial + q];
                            const double wv =
                                wt[(((size_t)co * cin_g + c) * d->kernel_h + ki) * d->kernel_w + kj];
                            acc += abs_terms ? fabs(xv * wv) : xv * wv;
                        }
                    }
                y[((size_t)b * d->out_channels + co) * count + j] = acc;
            }
        }
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static double dot_abs(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    return s;
}

static void conv_run(reader *r, const perf_conv_plan *plan, const perf_conv_desc *d, int oh, int ow, int count,
                     const int32_t *out_idx, const int32_t *in_near, int in_spatial) {
    size_t ws_bytes = 0;
    CALL(EXPECT_OK, perf_conv_workspace_size(plan, &ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_workspace_size(plan, NULL));
    CALL(EXPECT_INVALID, perf_conv_workspace_size(NULL, &ws_bytes));
    const char *path = NULL;
    CALL(EXPECT_OK, perf_conv_plan_path(plan, &path));
    CALL(EXPECT_INVALID, perf_conv_plan_path(plan, NULL));
    CALL(EXPECT_INVALID, perf_conv_plan_path(NULL, &path));
    if (strcmp(path, "pointwise") != 0 && strcmp(path, "shift") != 0 && strcmp(path, "im2row") != 0) abort();
    const int cin_g = d->in_channels / d->groups;
    const int64_t fx[3] = {d->batch, d->in_channels, in_spatial}, fw[4] = {d->out_channels, cin_g, d->kernel_h, d->kernel_w},
                  fy[3] = {d->batch, d->out_channels, count}, fm[5] = {d->batch, d->out_channels, count, cin_g,
                                                                         (int64_t)d->kernel_h * d->kernel_w};
    const int64_t nx = prod(3, fx), nw = prod(4, fw), ny = prod(3, fy), macs = prod(5, fm);
    if (nx < 0 || nw < 0 || ny < 0 || macs < 0 || nx > BUF_CAP || nw > BUF_CAP || ny > BUF_CAP || ws_bytes > BUF_CAP)
        return;
    if ((uint64_t)(nx + nw + 2 * ny + d->out_channels) * 4 + ws_bytes > BUF_CAP || macs > WORK_CAP / 4) return;

    const int mode = u8(r) % 8;
    float *x = alloc_floats(nx), *wt = alloc_floats(nw), *bias = alloc_floats(d->out_channels);
    float *dy = alloc_floats(ny);
    int clean = fill(r, mode, x, nx) & fill(r, mode, wt, nw) & fill(r, mode, bias, d->out_channels) &
                fill(r, mode, dy, ny);
    unsigned char *ws_raw = malloc(ws_bytes + 72);
    if (!ws_raw) FAIL("harness: malloc");
    void *ws = ws_raw + ((64 - ((uintptr_t)ws_raw % 64)) % 64);
    const int use_bias = u8(r) & 1;
    float *y = nan_floats(ny);

    /* Inconsistent calls first: each must fail and leave nothing behind. */
    if (ws_bytes > 0) {
        CALL(EXPECT_INVALID, perf_conv_forward(plan, x, wt, NULL, y, ws, ws_bytes - 1));
        CALL(EXPECT_INVALID, perf_conv_forward(plan, x, wt, NULL, y, NULL, ws_bytes));
        CALL(EXPECT_INVALID, perf_conv_backward_data(plan, wt, dy, y, ws, ws_bytes / 2));
        CALL(EXPECT_INVALID, perf_conv_backward_filter(plan, x, dy, wt, NULL, NULL, ws_bytes));
        CALL(EXPECT_INVALID, perf_conv_forward(plan, x, wt, NULL, y, (char *)ws + 1, ws_bytes));
    }
    CALL(EXPECT_INVALID, perf_conv_forward(NULL, x, wt, NULL, y, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_forward(plan, NULL, wt, NULL, y, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_forward(plan, x, NULL, NULL, y, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_forward(plan, x, wt, NULL, NULL, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_backward_data(plan, NULL, dy, y, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_backward_data(plan, wt, NULL, y, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_backward_data(plan, wt, dy, NULL, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_backward_filter(plan, NULL, dy, wt, NULL, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_backward_filter(plan, x, NULL, wt, NULL, ws, ws_bytes));
    CALL(EXPECT_INVALID, perf_conv_backward_filter(NULL, x, dy, wt, NULL, ws, ws_bytes));
    for (int64_t i = 0; i < ny; i++)
        if (!isnan(y[i])) FAIL("a failed perf_conv_forward wrote y[%lld]", (long long)i);

    /* Forward against the reference. */
    CALL(EXPECT_OK, perf_conv_forward(plan, x, wt, use_bias ? bias : NULL, y, ws, ws_bytes + (u8(r) % 2) * 4));
    double *ref = malloc((size_t)ny * sizeof *ref), *mag = malloc((size_t)ny * sizeof *mag);
    if (!ref || !mag) FAIL("harness: malloc");
    if (clean) {
        ref_conv(d, oh, ow, count, out_idx, in_near, in_spatial, x, wt, use_bias ? bias : NULL, 0, ref);
        ref_conv(d, oh, ow, count, out_idx, in_near, in_spatial, x, wt, use_bias ? bias : NULL, 1, mag);
        for (int64_t i = 0; i < ny; i++) check_close("perf_conv_forward y", (size_t)i, y[i], ref[i], mag[i]);
    }
    /* Backward data: <conv(x), dy> == <x, dx>. */
    float *dx = nan_floats(nx);
    CALL(EXPECT_OK, perf_conv_backward_data(plan, wt, dy, dx, ws, ws_bytes));
    float *dw = nan_floats(nw), *db = nan_floats(d->out_channels);
    CALL(EXPECT_OK, perf_conv_backward_filter(plan, x, dy, dw, (u8(r) & 1) ? db : NULL, ws, ws_bytes));
    if (clean) {
        if (!all_finite(dx, nx)) FAIL("perf_conv_backward_data left a non-finite dx (unwritten?)");
        if (!all_finite(dw, nw)) FAIL("perf_conv_backward_filter left a non-finite dweight (unwritten?)");
        /* Forward without bias for the identities. */
        ref_conv(d, oh, ow, count, out_idx, in_near, in_spatial, x, wt, NULL, 0, ref);
        ref_conv(d, oh, ow, count, out_idx, in_near, in_spatial, x, wt, NULL, 1, mag);
        double lhs = 0.0, scale = 0.0;
        for (int64_t i = 0; i < ny; i++) {
            lhs += ref[i] * dy[i];
            scale += mag[i] * fabs(dy[i]);
        }
        check_close("adjoint <conv(x),dy> vs <x,backward_data(dy)>", 0, dot(x, dx, nx), lhs, scale + dot_abs(x, dx, nx));
        check_close("adjoint <conv(x),dy> vs <w,backward_filter(x,dy)>", 0, dot(wt, dw, nw), lhs, scale + dot_abs(wt, dw, nw));
        if (!isnan(db[0]))
            for (int co = 0; co < d->out_channels; co++) {
                double sum = 0.0, sabs = 0.0;
                for (int b = 0; b < d->batch; b++)
                    for (int j = 0; j < count; j++) {
                        double v = dy[((size_t)b * d->out_channels + co) * count + j];
                        sum += v;
                        sabs += fabs(v);
                    }
                check_close("perf_conv_backward_filter dbias", (size_t)co, db[co], sum, sabs);
            }
    }
    free(ref);
    free(mag);
    free(x);
    free(wt);
    free(bias);
    free(dy);
    free(y);
    free(dx);
    free(dw);
    free(db);
    free(ws_raw);
}

static void op_conv(reader *r, state *s) {
    perf_conv_desc d;
    d.batch = rd_int(r, 3);
    d.in_channels = rd_int(r, 6);
    d.in_h = rd_int(r, 14);
    d.in_w = rd_int(r, 14);
    d.out_channels = rd_int(r, 6);
    d.kernel_h = rd_int(r, 5);
    d.kernel_w = rd_int(r, 5);
    d.stride_h = rd_int(r, 3);
    d.stride_w = rd_int(r, 3);
    d.pad_h = rd_pad(r, 3);
    d.pad_w = rd_pad(r, 3);
    d.groups = u8(r) < 200 ? 1 + u8(r) % 3 : rd_int(r, 8);
    d.dilation_h = u8(r) < 192 ? 1 : rd_pad(r, 3); /* 0 means 1; negative is refused */
    d.dilation_w = u8(r) < 192 ? 1 : rd_pad(r, 3);

    const int pos = d.batch >= 1 && d.in_channels >= 1 && d.in_h >= 1 && d.in_w >= 1 && d.out_channels >= 1 &&
                    d.kernel_h >= 1 && d.kernel_w >= 1 && d.stride_h >= 1 && d.stride_w >= 1 && d.groups >= 1 &&
                    d.pad_h >= 0 && d.pad_w >= 0 && d.dilation_h >= 0 && d.dilation_w >= 0;
    int64_t oh = -1, ow = -1;
    int geom = 0;
    if (pos) {
        const int64_t ph = (int64_t)d.in_h + 2 * (int64_t)d.pad_h, pw = (int64_t)d.in_w + 2 * (int64_t)d.pad_w;
        const int64_t span_h = (int64_t)(d.dilation_h ? d.dilation_h : 1) * (d.kernel_h - 1) + 1,
                      span_w = (int64_t)(d.dilation_w ? d.dilation_w : 1) * (d.kernel_w - 1) + 1;
        geom = ph <= INT32_MAX && pw <= INT32_MAX && d.in_channels % d.groups == 0 && d.out_channels % d.groups == 0 && span_h <= ph &&
               span_w <= pw && (int64_t)d.in_h * d.in_w <= INT32_MAX &&
               (__int128)(d.in_channels / d.groups) * d.kernel_h * d.kernel_w <= INT32_MAX / 8;
        oh = (ph - span_h) / d.stride_h + 1;
        ow = (pw - span_w) / d.stride_w + 1;
    }
    /* Output positions are int (count, mask indices): a larger output map must be refused. */
    const int out_fits = oh >= 1 && ow >= 1 && oh <= INT32_MAX && ow <= INT32_MAX && oh * ow <= INT32_MAX;
    perf_mask *fresh_out = NULL, *fresh_in = NULL;
    const perf_mask *out_mask = pick_mask(r, s, out_fits ? (int)oh : -1, out_fits ? (int)ow : -1, &fresh_out);
    const perf_mask *in_mask = pick_mask(r, s, d.in_h, d.in_w, &fresh_in);
    const int masks_ok = (!out_mask || (perf_mask_height(out_mask) == oh && perf_mask_width(out_mask) == ow)) &&
                         (!in_mask || (perf_mask_height(in_mask) == d.in_h && perf_mask_width(in_mask) == d.in_w));
    int64_t count = out_mask ? perf_mask_count(out_mask) : (out_fits ? oh * ow : -1);
    int64_t in_spatial = in_mask ? perf_mask_count(in_mask) : (int64_t)d.in_h * d.in_w;
    const int64_t kk = (int64_t)d.kernel_h * d.kernel_w;
    int sizes_ok = 0;
    if (pos && geom && out_fits && masks_ok) {
        const int64_t fx[3] = {d.batch, d.in_channels, in_spatial}, fy[3] = {d.batch, d.out_channels, count},
                      ft[2] = {count, kk};
        sizes_ok = fits(3, fx) && fits(3, fy) && fits(2, ft);
    }
    const int null_desc = u8(r) % 32 == 0, null_out = u8(r) % 32 == 0;
    if (trace)
        fprintf(stderr, "fuzz_api: conv desc batch %d in %d %dx%d out %d kernel %dx%d stride %dx%d pad %dx%d groups %d "
                "dilation %dx%d; out mask %p in mask %p\n", d.batch, d.in_channels, d.in_h, d.in_w, d.out_channels,
                d.kernel_h, d.kernel_w, d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.groups, d.dilation_h, d.dilation_w,
                (void *)out_mask, (void *)in_mask);
    const int valid = pos && geom && out_fits && masks_ok && sizes_ok && !null_desc && !null_out;
    const int pointwise = kk == 1 && d.stride_h == 1 && d.stride_w == 1 && d.pad_h == 0 && d.pad_w == 0 &&
                          !out_mask && !in_mask;
    const int64_t table = valid && !pointwise ? count * kk : 0; /* entries, 4 bytes each */
    enum expect e = EXPECT_INVALID;
    if (valid) {
        if (table > (1 << 20) && table < (int64_t)HUGE_POSITIONS) goto done; /* honest work too large */
        e = table >= (int64_t)HUGE_POSITIONS ? EXPECT_OK_OR_OOM : EXPECT_OK;
    }
    perf_conv_plan *plan = (perf_conv_plan *)(uintptr_t)0x1;
    perf_status st = CALL(e, perf_conv_plan_create(null_desc ? NULL : &d, out_mask, in_mask, null_out ? NULL : &plan));
    if (st != PERF_STATUS_SUCCESS) {
        if (!null_out && plan != NULL && plan != (perf_conv_plan *)(uintptr_t)0x1) FAIL("perf_conv_plan_create failed but left *out = %p", (void *)plan);
        goto done;
    }
    int poh = -1, pow_ = -1, pcount = -1;
    CALL(EXPECT_OK, perf_conv_plan_output(plan, &poh, &pow_, &pcount));
    CALL(EXPECT_OK, perf_conv_plan_output(plan, NULL, NULL, NULL));
    CALL(EXPECT_INVALID, perf_conv_plan_output(NULL, &poh, &pow_, &pcount));
    if (poh != oh || pow_ != ow || pcount != count)
        FAIL("perf_conv_plan_output: %dx%d count %d, expected %lldx%lld count %lld", poh, pow_, pcount,
             (long long)oh, (long long)ow, (long long)count);
    /* The plan copies what it needs: the masks may go first (keep the reference's copies). */
    int32_t *out_idx = NULL, *in_near = NULL;
    if (out_mask) {
        out_idx = malloc((size_t)count * sizeof *out_idx);
        memcpy(out_idx, perf_mask_indices(out_mask), (size_t)count * sizeof *out_idx);
    }
    if (in_mask) {
        const size_t n = (size_t)d.in_h * d.in_w;
        in_near = malloc(n * sizeof *in_near);
        memcpy(in_near, perf_mask_nearest(in_mask), n * sizeof *in_near);
    }
    if (u8(r) & 1) {
        for (int i = 0; i < NSLOTS; i++) put_mask(s, i, NULL);
        perf_mask_destroy(fresh_out);
        perf_mask_destroy(fresh_in);
        fresh_out = fresh_in = NULL;
    }
    conv_run(r, plan, &d, (int)oh, (int)ow, (int)count, out_idx, in_near, (int)in_spatial);
    free(out_idx);
    free(in_near);
    perf_conv_plan_destroy(plan);
done:
    perf_mask_destroy(fresh_out);
    perf_mask_destroy(fresh_in);
}

/* ---------------------------------------------------------------------------------------------- */
/* Pooling                                                                                         */

static int64_t pool_out(int in, int k, int s, int p) {
    int64_t padded = (int64_t)in + 2 * (int64_t)p;
    int64_t o = (padded - k + s - 1) / s + 1;
    if ((o - 1) * s >= (int64_t)in + p) o--;
    return o;
}

static void op_pool(reader *r, state *s) {
    perf_pool_desc d;
    d.batch = rd_int(r, 3);
    d.channels = rd_int(r, 4);
    d.in_h = rd_int(r, 14);
    d.in_w = rd_int(r, 14);
    d.kernel_h = rd_int(r, 4);
    d.kernel_w = rd_int(r, 4);
    d.stride_h = rd_int(r, 3);
    d.stride_w = rd_int(r, 3);
    d.pad_h = rd_pad(r, 2);
    d.pad_w = rd_pad(r, 2);
    static const int modes[8] = {0, 1, 0, 1, 0, 1, 2, -1};
    d.mode = (perf_pool_mode)modes[u8(r) % 8];
    const int pos = d.batch >= 1 && d.channels >= 1 && d.in_h >= 1 && d.in_w >= 1 && d.kernel_h >= 1 &&
                    d.kernel_w >= 1 && d.stride_h >= 1 && d.stride_w >= 1;
    const int mode_ok = d.mode == PERF_POOL_MAX || d.mode == PERF_POOL_AVERAGE;
    const int geom = pos && d.pad_h >= 0 && d.pad_w >= 0 && d.pad_h < d.kernel_h && d.pad_w < d.kernel_w &&
                     d.kernel_h <= (int64_t)d.in_h + 2 * (int64_t)d.pad_h &&
                     d.kernel_w <= (int64_t)d.in_w + 2 * (int64_t)d.pad_w;
    const int64_t oh = geom ? pool_out(d.in_h, d.kernel_h, d.stride_h, d.pad_h) : -1;
    const int64_t ow = geom ? pool_out(d.in_w, d.kernel_w, d.stride_w, d.pad_w) : -1;
    perf_mask *fresh = NULL;
    const perf_mask *in_mask = pick_mask(r, s, d.in_h, d.in_w, &fresh);
    const int mask_ok = !in_mask || (perf_mask_height(in_mask) == d.in_h && perf_mask_width(in_mask) == d.in_w);
    const int64_t in_spatial = in_mask ? perf_mask_count(in_mask) : (int64_t)d.in_h * d.in_w;
    int sizes_ok = 0;
    if (geom) {
        const int64_t fp[2] = {d.batch, d.channels}, fi[2] = {d.in_h, d.in_w}, fo[2] = {oh, ow};
        const int64_t fx[3] = {d.batch, d.channels, in_spatial}, fy[4] = {d.batch, d.channels, oh, ow};
        const int64_t ft[4] = {oh, ow, d.kernel_h, d.kernel_w};
        sizes_ok = fits(2, fp) && fits(2, fi) && fits(2, fo) && fits(3, fx) && fits(4, fy) &&
                   (!in_mask || fits(4, ft)) && oh <= INT32_MAX && ow <= INT32_MAX;
    }
    const int null_desc = u8(r) % 32 == 0, null_out = u8(r) % 32 == 0;
    if (trace)
        fprintf(stderr, "fuzz_api: pool desc batch %d channels %d %dx%d kernel %dx%d stride %dx%d pad %dx%d mode %d; "
                "in mask %p\n", d.batch, d.channels, d.in_h, d.in_w, d.kernel_h, d.kernel_w, d.stride_h, d.stride_w,
                d.pad_h, d.pad_w, (int)d.mode, (void *)in_mask);
    const int valid = pos && mode_ok && geom && mask_ok && sizes_ok && !null_desc && !null_out;
    const int64_t ftab[4] = {oh, ow, d.kernel_h, d.kernel_w};
    const int64_t tab = prod(4, ftab);
    if (valid && in_mask && (tab < 0 || tab > (1 << 20))) goto done; /* big table: slow, not wrong */
    perf_pool_plan *plan = (perf_pool_plan *)(uintptr_t)0x1;
    perf_status st = CALL(valid ? EXPECT_OK : EXPECT_INVALID,
                          perf_pool_plan_create(null_desc ? NULL : &d, in_mask, null_out ? NULL : &plan));
    if (st != PERF_STATUS_SUCCESS) {
        if (!null_out && plan != NULL && plan != (perf_pool_plan *)(uintptr_t)0x1) FAIL("perf_pool_plan_create failed but left *out = %p", (void *)plan);
        goto done;
    }
    int poh = -1, pow_ = -1;
    CALL(EXPECT_OK, perf_pool_plan_output(plan, &poh, &pow_));
    CALL(EXPECT_INVALID, perf_pool_plan_output(plan, NULL, &pow_));
    CALL(EXPECT_INVALID, perf_pool_plan_output(NULL, &poh, &pow_));
    if (poh != oh || pow_ != ow) FAIL("perf_pool_plan_output %dx%d, expected %lldx%lld", poh, pow_, (long long)oh, (long long)ow);
    const int64_t fx[3] = {d.batch, d.channels, in_spatial}, fy[4] = {d.batch, d.channels, oh, ow};
    const int64_t nx = prod(3, fx), ny = prod(4, fy);
    const int64_t fwork[3] = {ny, d.kernel_h < d.in_h ? d.kernel_h : d.in_h, d.kernel_w < d.in_w ? d.kernel_w : d.in_w};
    const int64_t work = prod(3, fwork);
    if (nx < 0 || ny < 0 || work < 0 || nx > BUF_CAP || ny > BUF_CAP || (nx + 2 * ny) * 8 > BUF_CAP ||
        work > WORK_CAP / 2) {
        perf_pool_plan_destroy(plan);
        goto done;
    }
    const int32_t *near = in_mask ? perf_mask_nearest(in_mask) : NULL;
    const int mode = u8(r) % 8;
    float *x = alloc_floats(nx), *dy = alloc_floats(ny), *y = nan_floats(ny), *dx = nan_floats(nx);
    const int clean = fill(r, mode, x, nx) & fill(r, mode, dy, ny);
    CALL(EXPECT_INVALID, perf_pool_forward(NULL, x, y));
    CALL(EXPECT_INVALID, perf_pool_forward(plan, NULL, y));
    CALL(EXPECT_INVALID, perf_pool_forward(plan, x, NULL));
    CALL(EXPECT_INVALID, perf_pool_backward(plan, x, NULL, dx));
    CALL(EXPECT_INVALID, perf_pool_backward(plan, x, dy, NULL));
    CALL(d.mode == PERF_POOL_MAX ? EXPECT_INVALID : EXPECT_OK, perf_pool_backward(plan, NULL, dy, dx));
    CALL(EXPECT_OK, perf_pool_forward(plan, x, y));
    CALL(EXPECT_OK, perf_pool_backward(plan, x, dy, dx));
    const int is_max = d.mode == PERF_POOL_MAX;
    if (clean) {
        for (int b = 0; b < d.batch * d.channels; b++)
            for (int64_t o = 0; o < oh * ow; o++) {
                const int64_t oy = o / ow, ox = o % ow;
                int64_t hs = oy * d.stride_h - d.pad_h, ws = ox * d.stride_w - d.pad_w;
                int64_t he = hs + d.kernel_h, we = ws + d.kernel_w;
                hs = hs < 0 ? 0 : hs;
                ws = ws < 0 ? 0 : ws;
                he = he > d.in_h ? d.in_h : he;
                we = we > d.in_w ? d.in_w : we;
                if (he <= hs || we <= ws) FAIL("harness: empty pooling window");
                double acc = is_max ? -INFINITY : 0.0, mag = 0.0;
                for (int64_t yy = hs; yy < he; yy++)
                    for (int64_t xx = ws; xx < we; xx++) {
                        int64_t q = yy * d.in_w + xx;
                        if (near) q = near[q];
                        double v = x[(size_t)b * in_spatial + q];
                        acc = is_max ? fmax(acc, v) : acc + v;
                        mag += fabs(v);
                    }
                if (!is_max) acc /= (double)((he - hs) * (we - ws));
                check_close("perf_pool_forward y", (size_t)(b * oh * ow + o), y[(size_t)b * oh * ow + o], acc, mag);
            }
        if (!all_finite(dx, nx)) FAIL("perf_pool_backward left a non-finite dx (unwritten?)");
        /* <pool(x), dy> == <x, dx>: exact for max (routing), linear for average. */
        check_close("pool adjoint", 0, dot(x, dx, nx), dot(y, dy, ny), dot_abs(y, dy, ny) + dot_abs(x, dx, nx));
    }
    free(x);
    free(dy);
    free(y);
    free(dx);
    perf_pool_plan_destroy(plan);
done:
    perf_mask_destroy(fresh);
}

/* ---------------------------------------------------------------------------------------------- */
/* Interpolation                                                                                   */

static void op_interp(reader *r, state *s) {
    const perf_mask *m = s->masks[u8(r) % NSLOTS];
    const int planes = rd_int(r, 6);
    const int null_bufs = u8(r) % 8;
    if (!m) {
        float v = 0.0f;
        CALL(EXPECT_INVALID, perf_interp_forward(NULL, 1, &v, &v));
        CALL(EXPECT_INVALID, perf_interp_backward(NULL, 1, &v, &v));
        return;
    }
    const int64_t hw = (int64_t)perf_mask_height(m) * perf_mask_width(m), count = perf_mask_count(m);
    if (planes >= 1 && (planes * (hw + count)) * 4 > BUF_CAP) return;
    const size_t nf = planes >= 1 ? (size_t)(planes * hw) : 4, nc = planes >= 1 ? (size_t)(planes * count) : 4;
    float *full = nan_floats(nf), *compact = alloc_floats(nc);
    fill(r, u8(r) % 8, compact, nc);
    const int valid = planes >= 1 && null_bufs != 0 && null_bufs != 1;
    CALL(valid ? EXPECT_OK : EXPECT_INVALID,
         perf_interp_forward(m, planes, null_bufs == 0 ? NULL : compact, null_bufs == 1 ? NULL : full));
    if (valid) {
        const int32_t *near = perf_mask_nearest(m);
        for (int pl = 0; pl < planes; pl++)
            for (int64_t p = 0; p < hw; p++) {
                float want = compact[pl * count + near[p]], got = full[pl * hw + p];
                if (memcmp(&want, &got, sizeof want) != 0) FAIL("perf_interp_forward full[%d][%lld]", pl, (long long)p);
            }
        const int clean_full = fill(r, u8(r) % 8, full, nf); /* mode 7 sums may overflow float */
        float *back = nan_floats(nc);
        CALL(EXPECT_OK, perf_interp_backward(m, planes, full, back));
        if (clean_full) {
            for (int pl = 0; pl < planes; pl++) {
                double *sum = calloc((size_t)count, sizeof *sum), *mag = calloc((size_t)count, sizeof *mag);
                for (int64_t p = 0; p < hw; p++) {
                    sum[near[p]] += full[pl * hw + p];
                    mag[near[p]] += fabs(full[pl * hw + p]);
                }
                for (int64_t k = 0; k < count; k++)
                    check_close("perf_interp_backward compact", (size_t)k, back[pl * count + k], sum[k], mag[k]);
                free(sum);
                free(mag);
            }
        }
        free(back);
    } else {
        CALL(EXPECT_INVALID,
             perf_interp_backward(m, planes, null_bufs == 0 ? NULL : full, null_bufs == 1 ? NULL : compact));
    }
    free(full);
    free(compact);
}

/* ---------------------------------------------------------------------------------------------- */
/* Position-wise and dense layers                                                                  */

static size_t rd_size(reader *r) {
    static const size_t T[6] = {0, SIZE_MAX, SIZE_MAX / 8 + 1, SIZE_MAX / 8, (size_t)INT64_MAX + 1, 1};
    uint8_t m = u8(r);
    if (m < 230) return 1 + u8(r) * (size_t)(1 + u8(r) % 16);
    return T[m % 6];
}

static void op_relu_dropout(reader *r) {
    const size_t size = rd_size(r);
    const int size_ok = size >= 1 && size <= SIZE_MAX / 8;
    if (size_ok && size * 4 * 3 > BUF_CAP) return; /* a valid huge size: would need real buffers */
    const size_t n = size_ok ? size : 4;
    float *x = alloc_floats(n), *y = nan_floats(n), *dx = nan_floats(n);
    const int mode = u8(r) % 8;
    fill(r, mode, x, n);
    const int nul = u8(r) % 8;
    const float ratio = u8(r) < 128 ? (float)(u8(r) % 100) / 100.0f : rd_float_param(r, 0.5f);
    const uint64_t seed = u64(r);
    const int ok = size_ok && nul > 1;
    switch (u8(r) % 2) {
    case 0:
        CALL(ok ? EXPECT_OK : EXPECT_INVALID, perf_relu_forward(size, nul == 0 ? NULL : x, nul == 1 ? NULL : y));
        if (!ok) break;
        for (size_t i = 0; i < n; i++)
            if (!(y[i] == (x[i] > 0.0f ? x[i] : 0.0f))) FAIL("perf_relu_forward y[%zu]", i);
        CALL(EXPECT_OK, perf_relu_backward(size, y, x, dx));
        for (size_t i = 0; i < n; i++) {
            float want = y[i] > 0.0f ? x[i] : 0.0f;
            if (memcmp(&want, &dx[i], 4) != 0) FAIL("perf_relu_backward dx[%zu]", i);
        }
        CALL(EXPECT_OK, perf_relu_forward(size, x, x)); /* in place */
        break;
    default: {
        const int ratio_ok = isfinite(ratio) && ratio >= 0.0f && ratio < 1.0f;
        CALL(ok && ratio_ok ? EXPECT_OK : EXPECT_INVALID,
             perf_dropout_forward(size, ratio, seed, nul == 0 ? NULL : x, nul == 1 ? NULL : y));
        if (!(ok && ratio_ok)) break;
        for (size_t i = 0; i < n; i++) x[i] = 1.0f;
        CALL(EXPECT_OK, perf_dropout_forward(size, ratio, seed, x, y));
        CALL(EXPECT_OK, perf_dropout_backward(size, ratio, seed, x, dx));
        const float scale = (float)(1.0 / (1.0 - (double)ratio));
        for (size_t i = 0; i < n; i++)
            if (memcmp(&y[i], &dx[i], 4) != 0 || !(y[i] == 0.0f || y[i] == scale))
                FAIL("dropout element %zu: forward %g backward %g scale %g", i, y[i], dx[i], scale);
        CALL(EXPECT_INVALID, perf_dropout_backward(size, ratio, seed, NULL, dx));
    }
    }
    free(x);
    free(y);
    free(dx);
}

static void op_lrn(reader *r) {
    const int batch = rd_int(r, 2), channels = rd_int(r, 8), spatial = rd_int(r, 40);
    static const int LS[8] = {1, 3, 5, 2, 0, -1, INT_MAX, 7};
    const int local = u8(r) < 200 ? LS[u8(r) % 8] : rd_int(r, 9);
    const float alpha = rd_float_param(r, 1e-2f), beta = rd_float_param(r, 0.75f), k = rd_float_param(r, 2.0f);
    const int64_t f[3] = {batch, channels, spatial};
    if (trace)
        fprintf(stderr, "fuzz_api: lrn batch %d channels %d spatial %d local_size %d alpha %g beta %g k %g\n", batch,
                channels, spatial, local, alpha, beta, k);
    const int dims_ok = batch >= 1 && channels >= 1 && spatial >= 1 && fits(3, f);
    const int params_ok = local >= 1 && local % 2 == 1 && isfinite(alpha) && isfinite(beta) && isfinite(k) && k > 0.0f;
    const int64_t n64 = dims_ok ? prod(3, f) : 4;
    if (n64 < 0 || (dims_ok && n64 * 4 * 4 > BUF_CAP)) return;
    if (dims_ok && n64 * ((int64_t)channels + 2) > WORK_CAP) return;
    const size_t n = (size_t)n64;
    float *x = alloc_floats(n), *y = nan_floats(n), *dy = alloc_floats(n), *dx = nan_floats(n);
    const int mode = u8(r) % 8;
    const int clean = fill(r, mode, x, n) & fill(r, mode, dy, n);
    const int nul = u8(r) % 8;
    const int ok = dims_ok && params_ok;
    CALL(ok && nul > 1 ? EXPECT_OK : EXPECT_INVALID,
         perf_lrn_forward(batch, channels, spatial, local, alpha, beta, k, nul == 0 ? NULL : x, nul == 1 ? NULL : y));
    if (ok && nul > 1) {
        if (clean && fabsf(alpha) < 1.0f && fabsf(beta) < 2.0f && k >= 1e-3f) {
            const int half = (local - 1) / 2;
            for (int b = 0; b < batch; b++)
                for (int c = 0; c < channels; c++)
                    for (int sp = 0; sp < spatial; sp++) {
                        double sum = 0.0;
                        for (int c2 = 0; c2 < channels; c2++)
                            if (abs(c2 - c) <= half) {
                                double v = x[((size_t)b * channels + c2) * spatial + sp];
                                sum += v * v;
                            }
                        const double scale = (double)k + (double)alpha / local * sum;
                        if (scale <= 0.0) continue;
                        const size_t i = ((size_t)b * channels + c) * spatial + sp;
                        const double want = x[i] * pow(scale, -(double)beta);
                        /* scale < 1 amplifies: a result at or past float's range rounds to +-inf */
                        const int overflow = fabs(want) >= (double)FLT_MAX * (1.0 - 1e-3) && isinf(y[i]) &&
                                             signbit(y[i]) == signbit(want);
                        if (!overflow && !(fabs(y[i] - want) <= 1e-3 * fabs(want) + 1e-5)) FAIL("perf_lrn_forward y[%zu] = %g, reference %g", i, y[i], want);
                    }
        }
        CALL(EXPECT_OK, perf_lrn_backward(batch, channels, spatial, local, alpha, beta, k, x, y, dy, dx));
    }
    CALL(EXPECT_INVALID, perf_lrn_backward(batch, channels, spatial, local, alpha, beta, k, x, y, NULL, dx));
    free(x);
    free(y);
    free(dy);
    free(dx);
}

static void op_fc(reader *r) {
    const int batch = rd_int(r, 4), in = rd_int(r, 24), out = rd_int(r, 24);
    const int64_t fx[2] = {batch, in}, fw[2] = {out, in}, fy[2] = {batch, out};
    const int dims_ok = batch >= 1 && in >= 1 && out >= 1 && fits(2, fx) && fits(2, fw) && fits(2, fy);
    const int64_t nx = dims_ok ? prod(2, fx) : 4, nw = dims_ok ? prod(2, fw) : 4, ny = dims_ok ? prod(2, fy) : 4;
    if (nx < 0 || nw < 0 || ny < 0 || nx > BUF_CAP || nw > BUF_CAP || ny > BUF_CAP ||
        (dims_ok && (2 * (nx + nw + ny) * 4 > BUF_CAP || (int64_t)batch * in * out > WORK_CAP / 4)))
        return;
    const int mode = u8(r) % 8;
    float *x = alloc_floats(nx), *w = alloc_floats(nw), *b = alloc_floats(out > 0 && dims_ok ? out : 4);
    float *y = nan_floats(ny), *dy = alloc_floats(ny), *dx = nan_floats(nx), *dw = nan_floats(nw),
          *db = nan_floats(out > 0 && dims_ok ? out : 4);
    const int clean = fill(r, mode, x, nx) & fill(r, mode, w, nw) & fill(r, mode, b, dims_ok ? out : 4) &
                      fill(r, mode, dy, ny);
    const int nul = u8(r) % 8, use_bias = u8(r) & 1;
    CALL(dims_ok && nul > 2 ? EXPECT_OK : EXPECT_INVALID,
         perf_fc_forward(batch, in, out, nul == 0 ? NULL : x, nul == 1 ? NULL : w, use_bias ? b : NULL,
                         nul == 2 ? NULL : y));
    if (dims_ok && nul > 2 && clean) {
        for (int bb = 0; bb < batch; bb++)
            for (int o = 0; o < out; o++) {
                double s = use_bias ? b[o] : 0.0, m = use_bias ? fabs(b[o]) : 0.0;
                for (int i = 0; i < in; i++) {
                    s += (double)x[(size_t)bb * in + i] * w[(size_t)o * in + i];
                    m += fabs((double)x[(size_t)bb * in + i] * w[(size_t)o * in + i]);
                }
                check_close("perf_fc_forward y", (size_t)bb * out + o, y[(size_t)bb * out + o], s, m);
            }
    }
    const int which = u8(r) % 8; /* which of dx, dweight, dbias to ask for */
    const int nul2 = u8(r) % 8;
    const float *px = nul2 == 0 ? NULL : x, *pw = nul2 == 1 ? NULL : w, *pdy = nul2 == 2 ? NULL : dy;
    float *pdx = which & 1 ? dx : NULL, *pdw = which & 2 ? dw : NULL, *pdb = which & 4 ? db : NULL;
    const int bwd_ok = dims_ok && pdy && (!pdx || pw) && (!pdw || px);
    CALL(bwd_ok ? EXPECT_OK : EXPECT_INVALID, perf_fc_backward(batch, in, out, px, pw, pdy, pdx, pdw, pdb));
    if (bwd_ok && clean) {
        if (pdx) {
            double lhs = 0.0, mag = 0.0; /* <dy, x W^T> == <dx, x> */
            for (int bb = 0; bb < batch; bb++)
                for (int o = 0; o < out; o++)
                    for (int i = 0; i < in; i++) {
                        double t = (double)dy[(size_t)bb * out + o] * w[(size_t)o * in + i] * x[(size_t)bb * in + i];
                        lhs += t;
                        mag += fabs(t);
                    }
            check_close("perf_fc_backward dx adjoint", 0, dot(dx, x, nx), lhs, mag + dot_abs(dx, x, nx));
            if (pdw) check_close("perf_fc_backward dweight adjoint", 0, dot(dw, w, nw), lhs, mag + dot_abs(dw, w, nw));
        }
        if (pdb)
            for (int o = 0; o < out; o++) {
                double s = 0.0, m = 0.0;
                for (int bb = 0; bb < batch; bb++) s += dy[(size_t)bb * out + o], m += fabs(dy[(size_t)bb * out + o]);
                check_close("perf_fc_backward dbias", (size_t)o, db[o], s, m);
            }
    }
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db);
}

static void op_softmax(reader *r) {
    const int batch = rd_int(r, 6), classes = rd_int(r, 20);
    const int64_t f[2] = {batch, classes};
    const int dims_ok = batch >= 1 && classes >= 1 && fits(2, f);
    const int64_t n = dims_ok ? prod(2, f) : 4;
    if (n < 0 || (dims_ok && n * 4 * 3 > BUF_CAP)) return;
    const size_t nb = dims_ok ? (size_t)batch : 4;
    int32_t *labels = malloc(nb * sizeof *labels);
    int labels_ok = 1;
    for (size_t b = 0; b < nb; b++) {
        uint8_t m = u8(r);
        labels[b] = m < 230 ? (int32_t)(m % (classes > 0 ? classes : 1))
                            : (int32_t)(int64_t[]){-1, classes, INT32_MIN, INT32_MAX, (int64_t)classes + 1}[m % 5];
        if (labels[b] < 0 || labels[b] >= classes) labels_ok = 0;
    }
    float *logits = alloc_floats(n), *prob = nan_floats(n), *loss = nan_floats(nb), *d = nan_floats(n);
    const int clean = fill(r, u8(r) % 8, logits, n);
    const int nul = u8(r) % 8;
    const int ok = dims_ok && labels_ok;
    CALL(ok && nul > 2 ? EXPECT_OK : EXPECT_INVALID,
         perf_softmax_xent_forward(batch, classes, nul == 0 ? NULL : logits, nul == 1 ? NULL : labels,
                                   nul == 2 ? NULL : prob, (u8(r) & 1) ? loss : NULL));
    if (!(ok && nul > 2)) {
        for (int64_t i = 0; i < n; i++)
            if (!isnan(prob[i])) FAIL("a failed perf_softmax_xent_forward wrote prob[%lld]", (long long)i);
    } else if (clean) {
        for (int b = 0; b < batch; b++) {
            double s = 0.0;
            for (int c = 0; c < classes; c++) s += prob[(size_t)b * classes + c];
            if (!(fabs(s - 1.0) < 1e-4)) FAIL("softmax row %d sums to %.9g", b, s);
            if (!isnan(loss[b]) && !(loss[b] >= -1e-4f && isfinite(loss[b]))) FAIL("softmax loss[%d] = %g", b, loss[b]);
        }
    }
    const float scale = rd_float_param(r, 0.25f);
    CALL(ok && nul != 1 ? EXPECT_OK : EXPECT_INVALID,
         perf_softmax_xent_backward(batch, classes, prob, nul == 1 ? NULL : labels, scale, d));
    free(labels), free(logits), free(prob), free(loss), free(d);
}

static void op_bias(reader *r) {
    const int batch = rd_int(r, 3), channels = rd_int(r, 6), spatial = rd_int(r, 30);
    const int64_t f[3] = {batch, channels, spatial};
    const int dims_ok = batch >= 1 && channels >= 1 && spatial >= 1 && fits(3, f);
    const int64_t n = dims_ok ? prod(3, f) : 4;
    if (n < 0 || (dims_ok && n * 4 * 2 > BUF_CAP)) return;
    float *y = alloc_floats(n), *y0 = alloc_floats(n), *b = alloc_floats(dims_ok ? channels : 4),
          *db = nan_floats(dims_ok ? channels : 4);
    const int mode = u8(r) % 8;
    const int clean = fill(r, mode, y, n) & fill(r, mode, b, dims_ok ? channels : 4);
    memcpy(y0, y, (size_t)n * 4);
    const int nul = u8(r) % 8;
    CALL(dims_ok && nul > 1 ? EXPECT_OK : EXPECT_INVALID,
         perf_bias_forward(batch, channels, spatial, nul == 0 ? NULL : b, nul == 1 ? NULL : y));
    if (dims_ok && nul > 1 && clean)
        for (int64_t i = 0; i < n; i++) {
            float want = y0[i] + b[(i / spatial) % channels];
            if (memcmp(&want, &y[i], 4) != 0) FAIL("perf_bias_forward y[%lld]", (long long)i);
        }
    CALL(dims_ok && nul > 1 ? EXPECT_OK : EXPECT_INVALID,
         perf_bias_backward(batch, channels, spatial, nul == 0 ? NULL : y0, nul == 1 ? NULL : db));
    if (dims_ok && nul > 1 && clean)
        for (int c = 0; c < channels; c++) {
            double s = 0.0, m = 0.0;
            for (int bb = 0; bb < batch; bb++)
                for (int sp = 0; sp < spatial; sp++) {
                    double v = y0[((size_t)bb * channels + c) * spatial + sp];
                    s += v, m += fabs(v);
                }
            check_close("perf_bias_backward dbias", (size_t)c, db[c], s, m);
        }
    free(y), free(y0), free(b), free(db);
}

/* Batch normalisation: argument rules (sizes, eps, NULLs, y == x, var < 0) and, on clean data with a
 * sane eps, the forward's statistics and output and the backward's sums against double references,
 * and the in-place backward (dx == dy) against the out-of-place one. */
static void op_batchnorm(reader *r) {
    const int batch = rd_int(r, 3), channels = rd_int(r, 5), spatial = rd_int(r, 30);
    const float eps = rd_float_param(r, 1e-3f);
    const int64_t f[3] = {batch, channels, spatial};
    const int dims_ok = batch >= 1 && channels >= 1 && spatial >= 1 && fits(3, f);
    const int eps_ok = isfinite(eps) && eps > 0.0f;
    const int64_t n64 = dims_ok ? prod(3, f) : 4;
    if (n64 < 0 || (dims_ok && n64 * 4 * 5 > BUF_CAP)) return;
    const size_t n = (size_t)n64, c = dims_ok ? (size_t)channels : 4;
    if (trace)
        fprintf(stderr, "fuzz_api: batchnorm batch %d channels %d spatial %d eps %g\n", batch, channels, spatial, eps);
    float *x = alloc_floats(n), *y = nan_floats(n), *dy = alloc_floats(n), *dx = nan_floats(n), *dx2 = alloc_floats(n);
    float *gamma = alloc_floats(c), *beta = alloc_floats(c), *mean = nan_floats(c), *invstd = nan_floats(c),
          *var = alloc_floats(c), *dg = nan_floats(c), *db = nan_floats(c);
    const int mode = u8(r) % 8;
    const int clean = fill(r, mode, x, n) & fill(r, mode, dy, n) & fill(r, mode, gamma, c) & fill(r, mode, beta, c);
    for (size_t i = 0; i < c; i++) var[i] = fabsf(gamma[i]);
    if (u8(r) % 4 == 0) var[c - 1] = -1.0f;
    int var_ok = 1; /* the rule is var >= 0, so NaN (from a NaN gamma) fails it too */
    for (size_t i = 0; i < c; i++) var_ok &= var[i] >= 0.0f;
    const int nul = u8(r) % 10;
    const int ok = dims_ok && eps_ok;
    const perf_status st = CALL(ok && nul > 3 ? EXPECT_OK : EXPECT_INVALID,
         perf_batchnorm_forward_train(batch, channels, spatial, eps, nul == 0 ? NULL : x, nul == 1 ? NULL : gamma,
                                      beta, nul == 2 ? NULL : y, nul == 3 ? NULL : mean, invstd));
    CALL(EXPECT_INVALID, perf_batchnorm_forward_train(batch, channels, spatial, eps, x, gamma, beta, x, mean, invstd));
    if (st == PERF_STATUS_SUCCESS && clean && eps >= 1e-6f) {
        const double count = (double)batch * spatial;
        for (int ch = 0; ch < channels; ch++) {
            double s = 0.0, sq = 0.0, m = 0.0;
            for (int b = 0; b < batch; b++)
                for (int sp = 0; sp < spatial; sp++) s += x[((size_t)b * channels + ch) * spatial + sp];
            m = s / count;
            for (int b = 0; b < batch; b++)
                for (int sp = 0; sp < spatial; sp++) {
                    const double d = x[((size_t)b * channels + ch) * spatial + sp] - m;
                    sq += d * d;
                }
            const double is = 1.0 / sqrt(sq / count + eps);
            check_close("perf_batchnorm_forward_train mean", (size_t)ch, mean[ch], m, 4.0);
            if (!(fabs(invstd[ch] - is) <= 1e-3 * is)) FAIL("perf_batchnorm_forward_train invstd[%d] = %g, reference %g", ch, invstd[ch], is);
            for (int b = 0; b < batch; b++)
                for (int sp = 0; sp < spatial; sp++) {
                    const size_t i = ((size_t)b * channels + ch) * spatial + sp;
                    const double want = gamma[ch] * (x[i] - m) * is + beta[ch];
                    const double scale = fabs(gamma[ch]) * (fabs(x[i]) + fabs(m)) * is + fabs(beta[ch]);
                    check_close("perf_batchnorm_forward_train y", i, y[i], want, scale);
                }
        }
    }
    CALL(ok && var_ok ? EXPECT_OK : EXPECT_INVALID,
         perf_batchnorm_forward_inference(batch, channels, spatial, eps, x, gamma, beta, gamma, var, dx2));
    if (st == PERF_STATUS_SUCCESS) {
        CALL(EXPECT_OK, perf_batchnorm_backward(batch, channels, spatial, x, dy, gamma, mean, invstd, dx, dg, db));
        if (clean && eps >= 1e-6f) {
            for (int ch = 0; ch < channels; ch++) {
                double s = 0.0, a = 0.0;
                for (int b = 0; b < batch; b++)
                    for (int sp = 0; sp < spatial; sp++) {
                        const double v = dy[((size_t)b * channels + ch) * spatial + sp];
                        s += v, a += fabs(v);
                    }
                check_close("perf_batchnorm_backward dbeta", (size_t)ch, db[ch], s, a);
            }
        }
        memcpy(dx2, dy, n * sizeof *dx2);
        CALL(EXPECT_OK, perf_batchnorm_backward(batch, channels, spatial, x, dx2, gamma, mean, invstd, dx2, dg, db));
        if (memcmp(dx, dx2, n * sizeof *dx) != 0 && all_finite(dx, n))
            FAIL("perf_batchnorm_backward in place (dx == dy) differs from out of place");
    }
    CALL(EXPECT_INVALID, perf_batchnorm_backward(batch, channels, spatial, x, NULL, gamma, mean, invstd, dx, dg, db));
    free(x), free(y), free(dy), free(dx), free(dx2);
    free(gamma), free(beta), free(mean), free(invstd), free(var), free(dg), free(db);
}

static void op_misc(reader *r) {
    static const int ST[6] = {-1, 0, 3, 5, 6, 1000};
    const char *s = perf_status_string((perf_status)ST[u8(r) % 6]);
    if (!s || !s[0]) FAIL("perf_status_string returned an empty name");
    const char *info = perf_build_info();
    if (!info || strncmp(info, "perforated", 10) != 0) FAIL("perf_build_info: \"%s\"", info ? info : "(null)");
    static const int NT[5] = {0, -1, INT_MIN, 1, 1};
    const int n = NT[u8(r) % 5]; /* 1 only: the fuzzer stays single-threaded */
    CALL(n >= 1 ? EXPECT_OK : EXPECT_INVALID, perf_set_num_threads(n));
    if (perf_get_num_threads() < 1) FAIL("perf_get_num_threads() < 1");
    if (perf_mask_height(NULL) || perf_mask_width(NULL) || perf_mask_count(NULL) || perf_mask_seed(NULL) ||
        perf_mask_indices(NULL) || perf_mask_nearest(NULL))
        FAIL("mask accessors on NULL must return 0 / NULL");
    perf_mask_destroy(NULL);
    perf_conv_plan_destroy(NULL);
    perf_pool_plan_destroy(NULL);
}

/* ---------------------------------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    perf_set_num_threads(1);
    trace = getenv("FUZZ_API_TRACE") != NULL;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader r = {data, size, 0};
    r.rng = u64(&r);
    state s;
    memset(&s, 0, sizeof s);
    for (int op = 0; op < MAX_OPS && r.n > 0; op++) {
        switch (u8(&r) % 11) {
        case 0: op_mask_create(&r, &s); break;
        case 1: op_mask_generate(&r, &s); break;
        case 2:
        case 3: op_conv(&r, &s); break;
        case 4: op_pool(&r, &s); break;
        case 5: op_interp(&r, &s); break;
        case 6: op_relu_dropout(&r); break;
        case 7: op_lrn(&r); break;
        case 8: op_fc(&r); break;
        case 9: op_softmax(&r); break;
        default:
            switch (u8(&r) % 3) {
            case 0: op_bias(&r); break;
            case 1: op_batchnorm(&r); break;
            default: op_misc(&r);
            }
        }
    }
    for (int i = 0; i < NSLOTS; i++) perf_mask_destroy(s.masks[i]);
    return 0;
}
