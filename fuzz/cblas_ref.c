/*
 * cblas_ref.c (fuzz build only) - naive row-major/column-major SGEMM, instrumented.
 *
 * Argument rules are those of the reference BLAS (xerbla): an invalid dimension or leading dimension
 * is a bug in the caller (libperforated), so it aborts with a message and libFuzzer records the input.
 * Semantics: C = alpha * op(A) op(B) + beta * C, and C is not read when beta == 0 (as in the reference
 * BLAS, so an uninitialised output is fine).
 */
#include <stdio.h>
#include <stdlib.h>

#include "cblas.h"

static void xerbla(const char *fn, const char *what, int value) {
    fprintf(stderr, "fuzz cblas: %s: illegal %s = %d (bug in the caller)\n", fn, what, value);
    abort();
}

static int max1(int v) { return v > 1 ? v : 1; }

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (order != CblasRowMajor && order != CblasColMajor) xerbla("cblas_sgemm", "order", order);
    if (ta < CblasNoTrans || ta > CblasConjTrans) xerbla("cblas_sgemm", "trans_a", ta);
    if (tb < CblasNoTrans || tb > CblasConjTrans) xerbla("cblas_sgemm", "trans_b", tb);
    if (m < 0) xerbla("cblas_sgemm", "m", m);
    if (n < 0) xerbla("cblas_sgemm", "n", n);
    if (k < 0) xerbla("cblas_sgemm", "k", k);
    /* Reduce column-major to row-major: C^T = op(B)^T op(A)^T. */
    if (order == CblasColMajor) {
        const float *t = a;
        a = b;
        b = t;
        int ti = lda;
        lda = ldb;
        ldb = ti;
        ti = m;
        m = n;
        n = ti;
        enum CBLAS_TRANSPOSE tt = ta;
        ta = tb;
        tb = tt;
    }
    const int at = ta != CblasNoTrans, bt = tb != CblasNoTrans;
    if (lda < max1(at ? m : k)) xerbla("cblas_sgemm", "lda", lda);
    if (ldb < max1(bt ? k : n)) xerbla("cblas_sgemm", "ldb", ldb);
    if (ldc < max1(n)) xerbla("cblas_sgemm", "ldc", ldc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int p = 0; p < k; p++) {
                float av = at ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                float bv = bt ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += (double)av * bv;
            }
            float *cv = c + (size_t)i * ldc + j;
            *cv = (float)(alpha * s) + (beta == 0.0f ? 0.0f : beta * *cv);
        }
}
