/*
 * cuda/conv.cu - perforated convolution on the GPU: im2row through the plan's gather table, then
 * cuBLAS SGEMM; the twin of cpu/conv.c, with the same chunking of output rows (conv_internal.h).
 *
 * Rows are numbered r = b*count + j (image b, computed position j); a chunk is a run of at most
 * chunk_rows of them, possibly spanning images, so the GEMM stays tall on perforated layers.
 * Device workspace (one chunk at a time, the stream serialises chunks):
 *   rows[chunk_rows][k_gemm]   rows[i][c*kk + t] = x[b][g*cin_g + c][table[j][t]] (0 where -1)
 *   gemm[chunk_rows][Cout]     rows . W_g^T for each group side by side (ldc = Cout)
 * cuBLAS is column-major: a row-major A[m][n] is the column-major A^T, so the row-major products of
 * cpu/conv.c are issued with their operands swapped (see each call).
 * Forward:  im2row, GEMM, transpose gemm -> y[b][co][j] (+ bias).
 * Backward data: transpose dy -> gemm, rows = gemm_g . W_g, then row2im: the scatter-add adjoint of
 *   im2row with atomicAdd (several rows read the same input position; with a compact input, several
 *   taps read the same compact index), into dx zeroed first.
 * Backward filter: dW_g (+)= gemm_g^T . rows per chunk (beta 0 on the first chunk), dbias = channel
 *   sums of dy. A pointwise plan has no table: position j reads input index j.
 */
#include <limits.h>

#include "cuda_internal.h"

extern "C" {
#include "../conv_internal.h"
}

/* Workspace per plan: about 128 MiB (32 Mi floats) of rows + gemm, at least 1024 rows. */
static const size_t CHUNK_FLOATS = (size_t)32 << 20;

struct conv_geom { /* the plan's numbers, passed by value to the kernels */
    int count, kk, cin_g, cin, cout;
    size_t plane;
};

static conv_geom geom_of(const perf_conv_plan *p) {
    conv_geom g = {p->count, p->kk, p->cin_g, p->d.in_channels, p->d.out_channels, (size_t)p->in_spatial};
    return g;
}

__global__ void im2row_kernel(conv_geom G, const float *x, const int32_t *table, int g, size_t r0,
                              size_t n, float *rows) {
    const size_t K = (size_t)G.cin_g * G.kk;
    PERF_GRID_LOOP(e, n * K) {
        size_t i = e / K, ct = e % K, r = r0 + i, b = r / G.count, j = r % G.count;
        int c = (int)(ct / G.kk), t = (int)(ct % G.kk);
        int32_t src = table ? table[j * G.kk + t] : (int32_t)j;
        rows[e] = src >= 0 ? x[(b * G.cin + (size_t)g * G.cin_g + c) * G.plane + src] : 0.0f;
    }
}

__global__ void row2im_kernel(conv_geom G, const float *rows, const int32_t *table, int g, size_t r0,
                              size_t n, float *dx) {
    const size_t K = (size_t)G.cin_g * G.kk;
    PERF_GRID_LOOP(e, n * K) {
        size_t i = e / K, ct = e % K, r = r0 + i, b = r / G.count, j = r % G.count;
        int c = (int)(ct / G.kk), t = (int)(ct % G.kk);
        int32_t src = table ? table[j * G.kk + t] : (int32_t)j;
        if (src >= 0) atomicAdd(&dx[(b * G.cin + (size_t)g * G.cin_g + c) * G.plane + src], rows[e]);
    }
}

/* gemm[i][co] (+ bias[co]) -> y[b][co][j]; e = co*n + i, so consecutive threads write consecutive j. */
__global__ void gemm_to_output_kernel(conv_geom G, const float *gemm, const float *bias, size_t r0, size_t n,
                                      float *y) {
    PERF_GRID_LOOP(e, n * G.cout) {
        size_t co = e / n, i = e % n, r = r0 + i, b = r / G.count, j = r % G.count;
        y[(b * G.cout + co) * G.count + j] = gemm[i * G.cout + co] + (bias ? bias[co] : 0.0f);
    }
}

__global__ void output_to_gemm_kernel(conv_geom G, const float *dy, size_t r0, size_t n, float *gemm) {
    PERF_GRID_LOOP(e, n * G.cout) {
        size_t co = e / n, i = e % n, r = r0 + i, b = r / G.count, j = r % G.count;
        gemm[i * G.cout + co] = dy[(b * G.cout + co) * G.count + j];
    }
}

perf_status perf_cuda_conv_plan_init(perf_conv_plan *p) {
    static const char fn[] = "perf_conv_plan_create_ctx";
    const size_t total = (size_t)p->d.batch * p->count, per_row = (size_t)p->k_gemm + p->d.out_channels;
    size_t rows = CHUNK_FLOATS / per_row;
    if (rows < 1024) rows = 1024;
    if (rows > total) rows = total;
    if (rows > (size_t)INT_MAX / 2) rows = (size_t)INT_MAX / 2;
    p->threads = 1;
    p->shift = 0; /* the CPU's shifted-GEMM forward does not apply: the CUDA forward gathers */
    p->chunk_rows = (int)rows;
    p->workspace_floats = rows * per_row;
    if (!p->table) return PERF_STATUS_SUCCESS; /* pointwise: identity table */
    PERF_CUDA_ENTER(fn, p->ctx);
    const size_t bytes = (size_t)p->count * p->kk * sizeof(int32_t);
    PERF_CUDA_TRY(fn, cudaMalloc((void **)&p->dev_table, bytes));
    PERF_CUDA_TRY(fn, cudaMemcpy(p->dev_table, p->table, bytes, cudaMemcpyHostToDevice));
    return PERF_STATUS_SUCCESS;
}

void perf_cuda_conv_plan_release(perf_conv_plan *p) {
    if (!p->dev_table || cudaSetDevice(p->ctx->index) != cudaSuccess) return;
    cudaFree(p->dev_table); /* waits for pending work that may still read it */
    p->dev_table = NULL;
    (void)cudaGetLastError();
}

perf_status perf_cuda_conv_forward(const perf_conv_plan *p, const float *x, const float *w, const float *bias,
                                   float *y, float *ws) {
    static const char fn[] = "perf_conv_forward";
    PERF_CUDA_ENTER(fn, p->ctx);
    const conv_geom G = geom_of(p);
    const int K = p->k_gemm, cout = G.cout, cout_g = p->cout_g, chunk = p->chunk_rows;
    const size_t total = (size_t)p->d.batch * p->count;
    float *rows = ws, *gemm = ws + (size_t)chunk * K;
    const float one = 1.0f, zero = 0.0f;
    cudaStream_t s = perf_stream(p->ctx);
    for (size_t r0 = 0; r0 < total; r0 += chunk) {
        const int n = (int)(total - r0 < (size_t)chunk ? total - r0 : (size_t)chunk);
        for (int g = 0; g < p->d.groups; g++) {
            im2row_kernel<<<perf_blocks((size_t)n * K), PERF_THREADS, 0, s>>>(G, x, p->dev_table, g, r0, n, rows);
            PERF_CUDA_LAUNCHED(fn);
            /* row-major gemm_g[n][cout_g] = rows[n][K] . W_g^T  <=>  col-major gemm_g^T = W_g^T(op T) . rows^T */
            PERF_CUBLAS_TRY(fn, cublasSgemm(perf_blas(p->ctx), CUBLAS_OP_T, CUBLAS_OP_N, cout_g, n, K, &one,
                                            w + (size_t)g * cout_g * K, K, rows, K, &zero, gemm + (size_t)g * cout_g,
                                            cout));
        }
        gemm_to_output_kernel<<<perf_blocks((size_t)n * cout), PERF_THREADS, 0, s>>>(G, gemm, bias, r0, n, y);
        PERF_CUDA_LAUNCHED(fn);
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_conv_backward_data(const perf_conv_plan *p, const float *w, const float *dy, float *dx,
                                         float *ws) {
    static const char fn[] = "perf_conv_backward_data";
    PERF_CUDA_ENTER(fn, p->ctx);
    const conv_geom G = geom_of(p);
    const int K = p->k_gemm, cout = G.cout, cout_g = p->cout_g, chunk = p->chunk_rows;
    const size_t total = (size_t)p->d.batch * p->count;
    float *rows = ws, *gemm = ws + (size_t)chunk * K;
    const float one = 1.0f, zero = 0.0f;
    cudaStream_t s = perf_stream(p->ctx);
    PERF_CUDA_TRY(fn, cudaMemsetAsync(dx, 0, (size_t)p->d.batch * G.cin * G.plane * sizeof(float), s));
    for (size_t r0 = 0; r0 < total; r0 += chunk) {
        const int n = (int)(total - r0 < (size_t)chunk ? total - r0 : (size_t)chunk);
        output_to_gemm_kernel<<<perf_blocks((size_t)n * cout), PERF_THREADS, 0, s>>>(G, dy, r0, n, gemm);
        PERF_CUDA_LAUNCHED(fn);
        for (int g = 0; g < p->d.groups; g++) {
            /* row-major rows[n][K] = gemm_g[n][cout_g] . W_g[cout_g][K]  <=>  rows^T = W_g^T . gemm_g^T */
            PERF_CUBLAS_TRY(fn, cublasSgemm(perf_blas(p->ctx), CUBLAS_OP_N, CUBLAS_OP_N, K, n, cout_g, &one,
                                            w + (size_t)g * cout_g * K, K, gemm + (size_t)g * cout_g, cout, &zero,
                                            rows, K));
            row2im_kernel<<<perf_blocks((size_t)n * K), PERF_THREADS, 0, s>>>(G, rows, p->dev_table, g, r0, n, dx);
            PERF_CUDA_LAUNCHED(fn);
        }
    }
    return PERF_STATUS_SUCCESS;
}

perf_status perf_cuda_conv_backward_filter(const perf_conv_plan *p, const float *x, const float *dy, float *dw,
                                           float *dbias, float *ws) {
    static const char fn[] = "perf_conv_backward_filter";
    PERF_CUDA_ENTER(fn, p->ctx);
    const conv_geom G = geom_of(p);
    const int K = p->k_gemm, cout = G.cout, cout_g = p->cout_g, chunk = p->chunk_rows;
    const size_t total = (size_t)p->d.batch * p->count;
    float *rows = ws, *gemm = ws + (size_t)chunk * K;
    const float one = 1.0f, zero = 0.0f;
    cudaStream_t s = perf_stream(p->ctx);
    if (dbias) PERF_CHECK(perf_cuda_bias_backward(p->ctx, fn, p->d.batch, cout, p->count, dy, dbias));
    for (size_t r0 = 0; r0 < total; r0 += chunk) {
        const int n = (int)(total - r0 < (size_t)chunk ? total - r0 : (size_t)chunk);
        output_to_gemm_kernel<<<perf_blocks((size_t)n * cout), PERF_THREADS, 0, s>>>(G, dy, r0, n, gemm);
        PERF_CUDA_LAUNCHED(fn);
        for (int g = 0; g < p->d.groups; g++) {
            im2row_kernel<<<perf_blocks((size_t)n * K), PERF_THREADS, 0, s>>>(G, x, p->dev_table, g, r0, n, rows);
            PERF_CUDA_LAUNCHED(fn);
            /* row-major dW_g[cout_g][K] (+)= gemm_g^T . rows  <=>  dW_g^T = rows^T . gemm_g (op T) */
            PERF_CUBLAS_TRY(fn, cublasSgemm(perf_blas(p->ctx), CUBLAS_OP_N, CUBLAS_OP_T, K, cout_g, n, &one, rows,
                                            K, gemm + (size_t)g * cout_g, cout, r0 == 0 ? &zero : &one,
                                            dw + (size_t)g * cout_g * K, K));
        }
    }
    return PERF_STATUS_SUCCESS;
}
