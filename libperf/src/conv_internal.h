/*
 * conv_internal.h - the convolution plan, shared by conv_plan.c (validation, gather table) and the
 * CPU kernels in cpu/conv.c.
 *
 * The GEMM is done over "chunks" of output rows: the computed positions of all images are numbered
 * r = b*count + j (image b, computed position j), and a chunk is a run of at most chunk_rows of them,
 * so a chunk may span image boundaries (this is the paper's micro-batching: a perforated layer's GEMM
 * stays as tall as a dense one's) and a huge map may span several chunks. Each OpenMP thread owns one
 * chunk-sized slot of the workspace and calls BLAS single-threaded on its chunk.
 */
#ifndef PERF_CONV_INTERNAL_H
#define PERF_CONV_INTERNAL_H

#include "internal.h"

#define PERF_NO_ORIGIN INT32_MIN
/* Bounds of the shift forward's workspace: a thread's slot (padded input copy + wide output; VGG-16
 * conv1_2 at 224x224 takes 26 MiB) at most 32 MiB, all threads' slots together at most 512 MiB. */
#define PERF_SHIFT_SLOT_MAX_FLOATS ((size_t)8 << 20)
#define PERF_SHIFT_TOTAL_MAX_FLOATS ((size_t)128 << 20)

struct perf_conv_plan {
    perf_conv_desc d;
    int out_h, out_w;
    int count;          /* computed output positions per image (out_h*out_w when dense) */
    int in_spatial;     /* floats per input plane: in_h*in_w, or count_in for a compact input */
    int kk;             /* kernel_h * kernel_w */
    int cin_g, cout_g;  /* channels per group */
    int k_gemm;         /* cin_g * kk: the GEMM's inner dimension */
    int pointwise;      /* 1x1, stride 1, no padding, dense output: the input plane IS the GEMM operand */
    int shift;          /* forward by shifted GEMMs over a padded input copy (cpu/conv_shift.c) */
    int threads;        /* OpenMP threads the workspace was sized for */
    int chunk_rows;     /* rows per GEMM chunk (see above) */
    int32_t *table;     /* [count][kk]: input index within a plane for each kernel tap, -1 = padding */
    int32_t *origin;    /* [count]: index of tap (0, 0) when every tap of the position is inside a full
                         * (not compact) input, so kernel rows are contiguous runs; else PERF_NO_ORIGIN */
    size_t workspace_floats;
    /* channels-last forward (cpu/conv_nhwc.c, set by perf_cpu_conv_nhwc_setup) */
    const struct perf_igemm_isa *isa; /* micro-kernel set chosen for this CPU */
    int nhwc_nv;       /* vectors of the widest column panel */
    int nhwc_panels;   /* column panels per group */
    int nhwc_klen;     /* most channels (k values) of one tap range in a K block */
    int nhwc_rows;     /* GEMM rows per task */
    int nhwc_psplit;   /* the column panels are split into this many tasks' ranges (small row counts) */
    int nhwc_rowruns;  /* taps are kernel rows: runs of kernel_w*cin channels (small cin, groups 1) */
    const perf_context *ctx; /* CUDA plans only (perf_conv_plan_create_ctx); NULL on the CPU */
    int32_t *dev_table;      /* CUDA plans: device copy of table (NULL for a pointwise plan) */
};



/* CPU kernels (cpu/conv.c); arguments already validated by conv.c. */
void perf_cpu_conv_forward(const perf_conv_plan *p, const float *x, const float *weight, const float *bias,
                           float *y, float *workspace);
void perf_cpu_conv_forward_shift(const perf_conv_plan *p, const float *x, const float *weight, const float *bias,
                                 float *y, float *workspace);
size_t perf_conv_shift_workspace_floats(const perf_conv_plan *p);
void perf_cpu_conv_nhwc_setup(perf_conv_plan *p);
size_t perf_conv_nhwc_workspace_floats(const perf_conv_plan *p);
/* prepacked: weights packed by perf_cpu_conv_nhwc_pack, or NULL to pack w into the workspace;
 * res: a residual laid out like y added before the ReLU, or NULL */
void perf_cpu_conv_forward_nhwc(const perf_conv_plan *p, const float *x, const float *w, const float *prepacked,
                                const float *scale, const float *bias, const float *res, int relu, float *y,
                                float *ws);
size_t perf_conv_nhwc_packed_floats(const perf_conv_plan *p);
void perf_cpu_conv_nhwc_pack(const perf_conv_plan *p, const float *w, float *packed);
void perf_cpu_conv_backward_data(const perf_conv_plan *p, const float *weight, const float *dy, float *dx,
                                 float *workspace);
void perf_cpu_conv_backward_filter(const perf_conv_plan *p, const float *x, const float *dy, float *dweight,
                                   float *dbias, float *workspace);
#endif /* PERF_CONV_INTERNAL_H */
