/*
 * softmax.c - softmax with cross-entropy over logits[batch][classes], labels[batch].
 *
 * Forward, per row: m = max logit, e_j = exp(l_j - m) (no overflow, the largest is exactly 1),
 * prob_j = e_j / sum e, and loss = log(sum e) + m - l_label: the log-sum-exp form, which stays
 * accurate when prob_label underflows or rounds (-log(prob) would give inf or lose digits). The sum
 * and the log are in double. Backward: dlogits = (prob - onehot(label)) * scale.
 * Labels are validated before anything is written, so a bad label leaves the outputs untouched.
 */
#include <math.h>

#include "internal.h"

static perf_status softmax_check(const char *fn, int batch, int classes, const int32_t *labels) {
    PERF_CHECK_POSITIVE(fn, batch);
    PERF_CHECK_POSITIVE(fn, classes);
    PERF_CHECK_NOT_NULL(fn, labels);
    size_t dims[2] = {(size_t)batch, (size_t)classes}, total;
    PERF_CHECK(perf_checked_product(fn, "batch*classes", dims, 2, &total));
    for (int b = 0; b < batch; b++)
        if (labels[b] < 0 || labels[b] >= classes)
            return perf_fail(PERF_STATUS_INVALID_ARGUMENT, "%s: labels[%d] must be in [0, %d), got %d", fn, b,
                             classes, (int)labels[b]);
    return PERF_STATUS_SUCCESS;
}

perf_status perf_softmax_xent_forward(int batch, int classes, const float *logits, const int32_t *labels,
                                      float *prob, float *loss) {
    static const char fn[] = "perf_softmax_xent_forward";
    PERF_CHECK(softmax_check(fn, batch, classes, labels));
    PERF_CHECK_NOT_NULL(fn, logits);
    PERF_CHECK_NOT_NULL(fn, prob);
#pragma omp parallel for schedule(static) if ((size_t)batch * (size_t)classes >= PERF_PARALLEL_MIN)
    for (int b = 0; b < batch; b++) {
        const float *l = logits + (size_t)b * classes;
        float *p = prob + (size_t)b * classes;
        const float l_label = l[labels[b]]; /* read first: prob may be logits (in place) */
        float m = l[0];
        for (int j = 1; j < classes; j++) m = l[j] > m ? l[j] : m;
        double sum = 0.0;
        for (int j = 0; j < classes; j++) {
            p[j] = expf(l[j] - m);
            sum += p[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < classes; j++) p[j] *= inv;
        if (loss) loss[b] = (float)(log(sum) + ((double)m - (double)l_label));
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_softmax_xent_backward(int batch, int classes, const float *prob, const int32_t *labels,
                                       float scale, float *dlogits) {
    static const char fn[] = "perf_softmax_xent_backward";
    PERF_CHECK(softmax_check(fn, batch, classes, labels));
    PERF_CHECK_NOT_NULL(fn, prob);
    PERF_CHECK_NOT_NULL(fn, dlogits);
#pragma omp parallel for schedule(static) if ((size_t)batch * (size_t)classes >= PERF_PARALLEL_MIN)
    for (int b = 0; b < batch; b++) {
        const float *p = prob + (size_t)b * classes;
        float *d = dlogits + (size_t)b * classes;
        const float p_label = p[labels[b]]; /* read first: dlogits may be prob */
        for (int j = 0; j < classes; j++) d[j] = p[j] * scale;
        d[labels[b]] = (p_label - 1.0f) * scale;
    }
    return PERF_STATUS_SUCCESS;
}
