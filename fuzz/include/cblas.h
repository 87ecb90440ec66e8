/*
 * cblas.h (fuzz build only) - the CBLAS declarations libperforated uses, so the fuzzer can link a
 * plain C reference sgemm (fuzz/cblas_ref.c) compiled WITH the sanitizers instead of an uninstrumented
 * OpenBLAS: every element a GEMM reads or writes is then checked by AddressSanitizer, and the
 * leading-dimension rules of the reference BLAS (xerbla) are asserted.
 */
#ifndef PERF_FUZZ_CBLAS_H
#define PERF_FUZZ_CBLAS_H

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b, int m,
                 int n, int k, float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                 float *c, int ldc);

#endif
