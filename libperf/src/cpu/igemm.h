/*
 * cpu/igemm.h - register-blocked "indirect GEMM" micro-kernels for the channels-last convolution
 * (cpu/conv_nhwc.c), one set per instruction set, chosen at run time (perf_igemm_isa).
 *
 * A micro-kernel computes one tile of MR output rows (positions) x NR output channels:
 *
 *   y[m][n] (+)= sum over taps t < ntaps, channels c < clen of  a[t*a_stride + m][c] * w[(t*clen + c)*NR + n]
 *
 * a holds, for each tap and row, a pointer to a run of clen input channels (the XNNPACK indirection
 * buffer: x_nhwc[b][position][c0..], or a zero run where the tap falls in the padding); w is the
 * packed weight block [ntaps*clen][NR], 64-byte aligned, zero in the columns past ncols. The
 * accumulators start from zero (first) or from y; after the last block the epilogue applies
 * y = relu?(acc * scale + bias + res) per column while the tile is still in registers (scale, bias,
 * res NULL for none; res is a residual input laid out like y: a ResNet shortcut added before the ReLU). Rows m >= mr are computed from valid pointers but never stored; columns >= ncols are
 * never read from or written to y, scale or bias.
 */
#ifndef PERF_CPU_IGEMM_H
#define PERF_CPU_IGEMM_H

#include <stddef.h>

typedef struct perf_igemm_args {
    const float *const *a; /* [ntaps][a_stride] run pointers */
    size_t a_stride;
    int ntaps, clen;
    int mr;                /* valid rows, 1..MR */
    const float *w;        /* [ntaps*clen][NR] */
    float *y;              /* tile origin; rows ldy floats apart */
    size_t ldy;
    int ncols;             /* valid columns, 1..NR */
    int first, last, relu;
    const float *scale, *bias; /* at the tile's column 0, or NULL */
    const float *res;          /* residual at the tile origin (rows ldy apart, like y), or NULL */
} perf_igemm_args;

typedef void (*perf_igemm_fn)(const perf_igemm_args *args);

enum { PERF_IGEMM_MAX_NV = 4 };

/* One instruction set's kernels: a panel of nv vectors (NR = nv * vw columns) uses rows[nv] x NR
 * tiles computed by fn[nv]. */
typedef struct perf_igemm_isa {
    const char *name;
    int vw;                              /* floats per vector */
    int nv_max;                          /* widest panel, in vectors */
    int nv_wide;                         /* panel width for layers with many output channels */
    int rows[PERF_IGEMM_MAX_NV + 1];     /* MR for a panel of nv vectors */
    perf_igemm_fn fn[PERF_IGEMM_MAX_NV + 1];
} perf_igemm_isa;

/* The best kernel set this CPU runs (AVX-512F, AVX2+FMA, or portable C), or a weaker one named by the
 * environment variable PERF_ISA=avx512|avx2|generic (read once; to test and measure each set). */
const perf_igemm_isa *perf_igemm_isa_select(void);

/* The sets, defined in igemm_avx512.c, igemm_avx2.c and igemm_generic.c. */
extern const perf_igemm_isa perf_igemm_avx512, perf_igemm_avx2, perf_igemm_generic;

#endif /* PERF_CPU_IGEMM_H */
