/*
 * blas_threads.c - thread control and the vendor name for each BLAS this library can link.
 *
 * Threading model: with OpenMP, every parallel loop of the library is an OpenMP loop, and each thread
 * calls BLAS on its own slice of the work, single-threaded. Two thread pools (OpenMP's and BLAS's)
 * spinning against each other on 2 cores cost 20-60% here (perf showed blas_thread_server at 21% of
 * the samples), so at load time the library sets its BLAS to one thread. The default BLAS (the
 * scipy-openblas32 wheel) is a private copy that no other library in the process uses; with a system
 * BLAS shared with numpy this also makes numpy's BLAS single-threaded (documented in the README).
 */
#include "blas.h"

#if defined(PERF_BLAS_SCIPY_PREFIX)
void scipy_openblas_set_num_threads(int);
int scipy_openblas_get_num_threads(void);
void perf_blas_set_threads(int n) { scipy_openblas_set_num_threads(n); }
int perf_blas_get_threads(void) { return scipy_openblas_get_num_threads(); }
const char *perf_blas_vendor(void) { return "scipy-openblas32 (OpenBLAS wheel)"; }
#elif defined(PERF_BLAS_MKL)
#include <mkl.h> /* MKL_Set_Num_Threads, MKL_Get_Max_Threads (mkl_service.h) */
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

#if defined(PERF_WITH_OPENMP)
__attribute__((constructor)) static void perf_blas_one_thread(void) { perf_blas_set_threads(1); }
#endif
