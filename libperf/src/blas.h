/*
 * blas.h - the one place that knows how the CBLAS symbols are spelled.
 *
 * The default BLAS is the scipy-openblas32 wheel, whose symbols carry a `scipy_` prefix
 * (scipy_cblas_sgemm); PERF_BLAS_SCIPY_PREFIX maps the plain CBLAS names onto them. With MKL or a
 * system BLAS the plain names are used. Thread control is vendor specific, hence perf_blas_*.
 */
#ifndef PERF_BLAS_H
#define PERF_BLAS_H

#if defined(PERF_BLAS_SCIPY_PREFIX)
#  define cblas_sgemm scipy_cblas_sgemm
#  define cblas_sgemv scipy_cblas_sgemv
#endif

#if defined(PERF_BLAS_MKL)
#  include <mkl_cblas.h>
#else
#  include <cblas.h>
#endif

/* Thread control and vendor name, implemented in blas_threads.c for each vendor. */
void perf_blas_set_threads(int n);
int perf_blas_get_threads(void);
const char *perf_blas_vendor(void);

#endif /* PERF_BLAS_H */
