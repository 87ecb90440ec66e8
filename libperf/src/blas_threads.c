/*
 * blas_threads.c - thread control and the vendor name for each BLAS this library can link.
 */
#include "blas.h"

#if defined(PERF_BLAS_SCIPY_PREFIX)
void scipy_openblas_set_num_threads(int);
int scipy_openblas_get_num_threads(void);
void perf_blas_set_threads(int n) { scipy_openblas_set_num_threads(n); }
int perf_blas_get_threads(void) { return scipy_openblas_get_num_threads(); }
const char *perf_blas_vendor(void) { return "scipy-openblas32 (OpenBLAS wheel)"; }
#elif defined(PERF_BLAS_MKL)
void perf_blas_set_threads(int n) { MKL_Set_Num_Threads(n); }
int perf_blas_get_threads(void) { return MKL_Get_Max_Threads(); }
const char *perf_blas_vendor(void) { return "Intel MKL"; }
#elif defined(PERF_BLAS_OPENBLAS)
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
void perf_blas_set_threads(int n) { openblas_set_num_threads(n); }
int perf_blas_get_threads(void) { return openblas_get_num_threads(); }
const char *perf_blas_vendor(void) { return "system OpenBLAS"; }
#else
void perf_blas_set_threads(int n) { (void)n; }
int perf_blas_get_threads(void) { return 1; }
const char *perf_blas_vendor(void) { return "system BLAS (reference or unknown)"; }
#endif
