/*
 * mask.c - the mask object: validation, the nearest map, accessors, count for a rate.
 *
 * indices[count]: strictly increasing row-major positions p = row*w + col of the computed outputs.
 * nearest[h*w]:   for every position p, the index k into indices[] of the computed position
 *                 at minimal Euclidean distance on integer (row, col); nearest[indices[k]] == k.
 *
 * Nearest map algorithm (exact): two per-row tables give, for every (row, col), the computed
 * position of that row nearest on the left (largest computed col <= col) and on the right (smallest
 * >= col), stored as k or -1. Within one row only those two can be nearest to a point with column
 * col, so for a position p we visit rows at increasing vertical distance d from p's row and stop
 * once d*d exceeds the best squared distance found: O(h) per position at worst (count = 1), far
 * less for dense masks.
 *
 * Ties are broken by the total order (distance, tie hash, k) with
 *     tie(p, k) = perf_splitmix64(seed ^ perf_splitmix64(((uint64_t)p << 32) | (uint64_t)k)),
 * smallest first. Taking a minimum under a total order makes the choice reproducible from the seed
 * and independent of the order in which candidates are visited.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"


static uint64_t nearest_tie(uint64_t seed, int32_t p, int32_t k) {
    return perf_splitmix64(seed ^ perf_splitmix64(((uint64_t)(uint32_t)p << 32) | (uint32_t)k));
}

/* left_k / right_k: [h][w], k of the row's nearest computed position at or left / right of col. */
static void build_row_tables(const perf_mask *m, int32_t *left_k, int32_t *right_k) {
    const int h = m->h, w = m->w;
    for (size_t i = 0; i < (size_t)h * (size_t)w; i++) left_k[i] = right_k[i] = -1;
    for (int k = 0; k < m->count; k++) { /* mark computed positions, then sweep each row */
        left_k[m->indices[k]] = k;
        right_k[m->indices[k]] = k;
    }
    for (int r = 0; r < h; r++) {
        int32_t *lrow = left_k + (size_t)r * w, *rrow = right_k + (size_t)r * w;
        for (int c = 1; c < w; c++)
            if (lrow[c] < 0) lrow[c] = lrow[c - 1];
        for (int c = w - 2; c >= 0; c--)
            if (rrow[c] < 0) rrow[c] = rrow[c + 1];
    }
}

static void build_nearest(perf_mask *m, const int32_t *left_k, const int32_t *right_k) {
    const int h = m->h, w = m->w;
#pragma omp parallel for schedule(dynamic, 4)
    for (int pr = 0; pr < h; pr++) {
        for (int pc = 0; pc < w; pc++) {
            const int32_t p = pr * w + pc;
            int64_t best = INT64_MAX;
            int32_t best_k = -1;
            uint64_t best_tie = 0;
            int best_tie_valid = 0;
            for (int64_t d = 0; d < h && d * d <= best; d++) {
                for (int side = 0; side < (d == 0 ? 1 : 2); side++) {
                    const int64_t r = side == 0 ? pr - d : pr + d;
                    if (r < 0 || r >= h) continue;
                    const int32_t cand[2] = {left_k[r * w + pc], right_k[r * w + pc]};
                    for (int j = 0; j < 2; j++) {
                        const int32_t k = cand[j];
                        if (k < 0 || k == best_k) continue;
                        const int64_t dc = (int64_t)(m->indices[k] % w) - pc;
                        const int64_t dist = d * d + dc * dc;
                        if (dist < best) {
                            best = dist;
                            best_k = k;
                            best_tie_valid = 0;
                        } else if (dist == best) {
                            if (!best_tie_valid) {
                                best_tie = nearest_tie(m->seed, p, best_k);
                                best_tie_valid = 1;
                            }
                            const uint64_t t = nearest_tie(m->seed, p, k);
                            if (t < best_tie || (t == best_tie && k < best_k)) {
                                best_k = k;
                                best_tie = t;
                            }
                        }
                    }
                }
            }
            m->nearest[p] = best_k;
        }
    }
}

/* h, w >= 1 and h*w addressable by int32 positions. */
static perf_status check_map_size(const char *fn, int h, int w) {
    PERF_CHECK_POSITIVE(fn, h);
    PERF_CHECK_POSITIVE(fn, w);
    const int64_t hw = (int64_t)h * w;
    if (hw > INT32_MAX)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: h*w must be <= %d (positions are int32), got %dx%d = %lld", fn,
                         (int)INT32_MAX, h, w, (long long)hw);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_mask_create(int h, int w, int count, const int32_t *indices, uint64_t seed,
                             perf_mask **out) {
    static const char fn[] = "perf_mask_create";
    PERF_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    PERF_CHECK(check_map_size(fn, h, w));
    const int64_t hw = (int64_t)h * w;
    if (count < 1 || count > hw)
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                         "%s: count must be in [1, %lld] (h*w), got %d", fn, (long long)hw, count);
    PERF_CHECK_NOT_NULL(fn, indices);
    for (int k = 0; k < count; k++) {
        if (indices[k] < 0 || indices[k] >= hw)
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                             "%s: indices[%d] must be in [0, %lld) (h*w), got %d", fn, k,
                             (long long)hw, (int)indices[k]);
        if (k > 0 && indices[k] <= indices[k - 1])
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT,
                             "%s: indices must be strictly increasing, got indices[%d] = %d after "
                             "indices[%d] = %d",
                             fn, k, (int)indices[k], k - 1, (int)indices[k - 1]);
    }

    perf_mask *m = calloc(1, sizeof *m);
    int32_t *left_k = malloc((size_t)hw * sizeof *left_k);
    int32_t *right_k = malloc((size_t)hw * sizeof *right_k);
    if (m) {
        m->indices = malloc((size_t)count * sizeof *m->indices);
        m->nearest = malloc((size_t)hw * sizeof *m->nearest);
    }
    if (!m || !m->indices || !m->nearest || !left_k || !right_k) {
        free(left_k);
        free(right_k);
        perf_mask_destroy(m);
        return perf_fail(PERF_STATUS_OUT_OF_MEMORY,
                         "%s: cannot allocate a %dx%d mask with %d positions", fn, h, w, count);
    }
    m->h = h;
    m->w = w;
    m->count = count;
    m->seed = seed;
    memcpy(m->indices, indices, (size_t)count * sizeof *indices);
    build_row_tables(m, left_k, right_k);
    build_nearest(m, left_k, right_k);
    free(left_k);
    free(right_k);
    *out = m;
    return PERF_STATUS_SUCCESS;
}

void perf_mask_destroy(perf_mask *mask) {
    if (!mask) return;
    free(mask->indices);
    free(mask->nearest);
    free(mask);
}

int perf_mask_height(const perf_mask *mask) { return mask ? mask->h : 0; }
int perf_mask_width(const perf_mask *mask) { return mask ? mask->w : 0; }
int perf_mask_count(const perf_mask *mask) { return mask ? mask->count : 0; }
uint64_t perf_mask_seed(const perf_mask *mask) { return mask ? mask->seed : 0; }
const int32_t *perf_mask_indices(const perf_mask *mask) { return mask ? mask->indices : NULL; }
const int32_t *perf_mask_nearest(const perf_mask *mask) { return mask ? mask->nearest : NULL; }

perf_status perf_mask_count_checked(const char *fn, int h, int w, double rate, int *count) {
    PERF_CHECK_NOT_NULL(fn, count);
    PERF_CHECK(check_map_size(fn, h, w));
    const int64_t hw = (int64_t)h * w;
    if (!(rate >= 0.0 && rate < 1.0)) /* also rejects NaN */
        return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: rate must be in [0, 1), got %g", fn,
                         rate);
    /* floor((1 - rate) * h*w), except that a product within rounding of an integer is that integer:
     * for rate = 1 - 1/k the double 1 - rate falls a hair under 1/k, and a plain floor kept one
     * position too few whenever k divides h*w (AlexNet 55x55 at 4/5: 604, not 605). The product's
     * rounding error stays under 1e-6 for any count that fits an int (2^31 * a few 1e-17). */
    const double exact = (1.0 - rate) * (double)hw;
    const double nearest = floor(exact + 0.5);
    const double kept = fabs(exact - nearest) <= 1e-6 ? nearest : floor(exact);
    *count = kept < 1.0 ? 1 : (int)kept;
    return PERF_STATUS_SUCCESS;
}

perf_status perf_mask_count_for_rate(int h, int w, double rate, int *count) {
    return perf_mask_count_checked("perf_mask_count_for_rate", h, w, rate, count);
}
