/*
 * perforated.h - perforated convolutions (Figurnov et al., NIPS 2016) on the CPU with BLAS.
 *
 * THE public header of libperforated: every type and function, with shapes, memory ownership and the
 * statuses each function returns. The Python bindings read the declarations between the cdef markers
 * below, so this file is the single source of truth for both languages.
 *
 * Conventions
 * -----------
 * - Tensors are float32, NCHW, C-contiguous: x[batch][channels][height][width].
 * - A mask chooses `count` of the h*w output positions of a layer (row-major linear indices p =
 *   row*w + col, strictly increasing). Its nearest map gives, for every position p, the index k of the
 *   computed position that p copies (Euclidean distance; ties broken by a seeded hash).
 * - A *compact* tensor holds a layer's output at the computed positions only: y_c[batch][channels][count].
 *   Interpolation fills the full tensor: y[n][c][p] = y_c[n][c][nearest[p]].
 * - Every fallible function returns a perf_status. On failure it sets a thread-local message, read with
 *   perf_last_error(), that names the function, the argument, the expected and the actual value.
 *   Nothing in the library aborts or prints.
 * - Plans (convolution, pooling) precompute gather tables once; they are immutable after creation and
 *   may be used from several threads at once, each with its own workspace. Workspaces are owned by the
 *   caller: query their size once, allocate once, and no call that takes a workspace allocates.
 * - Sizes are int (each dimension <= INT32_MAX); products of sizes are checked for overflow.
 *
 * Output-size formula (convolution and pooling, Caffe):
 *   conv:    out = (in + 2*pad - kernel) / stride + 1                       (floor)
 *   pooling: out = ceil((in + 2*pad - kernel) / stride) + 1, then reduced by one if the last window
 *            would start inside the bottom/right padding or past the map (Caffe ceil mode, with no empty
 *            window; the same rule as PyTorch ceil_mode).
 */
#ifndef PERFORATED_H
#define PERFORATED_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(PERF_BUILDING_LIBRARY)
#    define PERF_API __declspec(dllexport)
#  else
#    define PERF_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define PERF_API __attribute__((visibility("default")))
#else
#  define PERF_API
#endif

#define PERF_VERSION_MAJOR 0
#define PERF_VERSION_MINOR 2
#define PERF_VERSION_PATCH 0

#ifdef __cplusplus
extern "C" {
#endif

/* <cdef> */

/* ------------------------------------------------------------------------------------------------
 * Statuses, messages, build information
 * ---------------------------------------------------------------------------------------------- */

typedef enum perf_status {
    PERF_STATUS_SUCCESS = 0,
    PERF_STATUS_INVALID_ARGUMENT = 1, /* a NULL pointer, a bad size, an inconsistent descriptor */
    PERF_STATUS_UNSUPPORTED = 2,      /* valid request this build cannot serve (e.g. CUDA off) */
    PERF_STATUS_OUT_OF_MEMORY = 3,    /* an allocation failed (or its size overflowed size_t) */
    PERF_STATUS_DEVICE_ERROR = 4,     /* a CUDA / cuBLAS call failed */
    PERF_STATUS_INTERNAL_ERROR = 5    /* a bug in the library: please report it */
} perf_status;

/* The message of the last failed call on this thread ("" if none). Valid until the next failing call
 * on the same thread. Never NULL. */
PERF_API const char *perf_last_error(void);

/* A static name for a status ("success", "invalid argument", ...). Never NULL. */
PERF_API const char *perf_status_string(perf_status status);

/* A static description of this build: version, BLAS vendor and its thread count, OpenMP threads,
 * CUDA on/off. For benchmark metadata. Never NULL. */
PERF_API const char *perf_build_info(void);

/* Threads of the library's own loops (OpenMP). perf_get_num_threads() returns omp_get_max_threads()
 * (1 without OpenMP). perf_set_num_threads(n) calls omp_set_num_threads(n): it applies to later calls
 * from the calling thread only (an OpenMP setting of that thread), and a convolution plan keeps the
 * thread count it was created with (its workspace is sized for it). It does not change BLAS's
 * threads: with OpenMP the library sets its BLAS to one thread when loaded and each OpenMP thread
 * calls BLAS on its own slice (with a system BLAS shared with numpy, numpy's BLAS stays
 * single-threaded too). Only a build without OpenMP passes n to the BLAS instead.
 * Returns PERF_STATUS_INVALID_ARGUMENT for n < 1. */
PERF_API int perf_get_num_threads(void);
PERF_API perf_status perf_set_num_threads(int num_threads);

/* ------------------------------------------------------------------------------------------------
 * Masks
 * ---------------------------------------------------------------------------------------------- */

/* An immutable mask over an h x w map: `count` computed positions and the nearest map.
 * Created by the perf_mask_* functions below, released with perf_mask_destroy. */
typedef struct perf_mask perf_mask;

/* Build a mask from explicit positions. indices[count]: strictly increasing, in [0, h*w).
 * seed: breaks ties of the nearest map. Copies indices.
 * Returns INVALID_ARGUMENT (h, w < 1; count < 1 or > h*w; indices NULL, out of range or not strictly
 * increasing; out NULL) or OUT_OF_MEMORY. */
PERF_API perf_status perf_mask_create(int h, int w, int count, const int32_t *indices, uint64_t seed,
                                      perf_mask **out);

/* Number of computed positions a rate-r mask keeps: max(1, floor((1 - r) * h * w)).
 * rate in [0, 1). (Grid masks keep fewer: see perf_mask_grid.) */
PERF_API perf_status perf_mask_count_for_rate(int h, int w, double rate, int *count);

/* Uniform: `count_for_rate` positions drawn at random without replacement (seeded). */
PERF_API perf_status perf_mask_uniform(int h, int w, double rate, uint64_t seed, perf_mask **out);

/* Grid (pseudorandom integer sequences, SPEC 4.2): rows a_i = ceil((h/n_h)(i+u)) - 1,
 * cols b_j = ceil((w/n_w)(j+v)) - 1, u, v ~ U(0,1) from the seed; n_h * n_w <= (1-r)*h*w maximal with
 * n_h/n_w close to h/w (n_h = n_w = floor(sqrt((1-r)hw)) on square maps). */
PERF_API perf_status perf_mask_grid(int h, int w, double rate, uint64_t seed, perf_mask **out);

/* Pooling structure: keeps the positions covered by the most windows of the *next* pooling layer
 * (kernel, stride, pad of that layer; Caffe ceil mode; windows clipped to the map); ties seeded. */
PERF_API perf_status perf_mask_pooling(int h, int w, double rate, int pool_kernel_h, int pool_kernel_w,
                                       int pool_stride_h, int pool_stride_w, int pool_pad_h,
                                       int pool_pad_w, uint64_t seed, perf_mask **out);

/* Impact (or any score): keeps the `count_for_rate` positions with the largest scores[h*w]
 * (row-major); ties broken by the seed. Scores must be finite. */
PERF_API perf_status perf_mask_from_scores(int h, int w, double rate, const float *scores,
                                           uint64_t seed, perf_mask **out);

PERF_API void perf_mask_destroy(perf_mask *mask); /* NULL is a no-op */

/* Accessors. The pointers stay valid until perf_mask_destroy. A NULL mask returns 0 / NULL. */
PERF_API int perf_mask_height(const perf_mask *mask);
PERF_API int perf_mask_width(const perf_mask *mask);
PERF_API int perf_mask_count(const perf_mask *mask);
PERF_API uint64_t perf_mask_seed(const perf_mask *mask);
PERF_API const int32_t *perf_mask_indices(const perf_mask *mask); /* [count] */
PERF_API const int32_t *perf_mask_nearest(const perf_mask *mask); /* [h*w], values in [0, count) */

/* ------------------------------------------------------------------------------------------------
 * Interpolation (explicit): compact <-> full
 * ---------------------------------------------------------------------------------------------- */

/* full[n][c][h*w] = compact[n][c][nearest[p]], with n*c = `planes`. */
PERF_API perf_status perf_interp_forward(const perf_mask *mask, int planes, const float *compact,
                                         float *full);

/* The adjoint: compact[n][c][k] = sum over p with nearest[p] == k of full[n][c][p]. Overwrites compact. */
PERF_API perf_status perf_interp_backward(const perf_mask *mask, int planes, const float *full,
                                          float *compact);

/* Channels-last: full[b][h*w][channels] = compact[b][count][channels] read through the mask's nearest
 * map (the CPU inference engine's layout). */
PERF_API perf_status perf_interp_forward_nhwc(const perf_mask *mask, int batch, int channels,
                                              const float *compact, float *full);

/* Layout conversions at a network's ends: y[batch][spatial][channels] from x[batch][channels][spatial]
 * and back. x and y must not overlap. */
PERF_API perf_status perf_layout_nchw_to_nhwc(int batch, int channels, int spatial, const float *x, float *y);
PERF_API perf_status perf_layout_nhwc_to_nchw(int batch, int channels, int spatial, const float *x, float *y);

/* ------------------------------------------------------------------------------------------------
 * Convolution
 * ---------------------------------------------------------------------------------------------- */

/* Geometry of a convolution: x[batch][in_channels][in_h][in_w] (full input size, also when the input
 * is stored compact), weight[out_channels][in_channels/groups][kernel_h][kernel_w], bias[out_channels],
 * output y[batch][out_channels][out_h][out_w] with out_h = (in_h + 2 pad_h - span_h)/stride_h + 1, where
 * span_h = dilation_h * (kernel_h - 1) + 1: tap (ki, kj) of output (oy, ox) reads input
 * (oy*stride_h - pad_h + ki*dilation_h, ox*stride_w - pad_w + kj*dilation_w). dilation 0 means 1, so a
 * descriptor zero-initialised before these fields existed keeps its meaning. */
typedef struct perf_conv_desc {
    int batch;
    int in_channels;
    int in_h, in_w;
    int out_channels;
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int groups;
    int dilation_h, dilation_w;
} perf_conv_desc;

typedef struct perf_conv_plan perf_conv_plan;

/* Create a plan: the gather table from output positions to input positions, built once.
 * output_mask: NULL for a dense convolution (output [batch][out_channels][out_h*out_w]); else a mask of
 *   out_h x out_w and the output is compact [batch][out_channels][count].
 * input_mask: NULL if the input is a full tensor; else the input is the compact output of a perforated
 *   producer, x_c[batch][in_channels][count_in], read through the producer's nearest map (implicit
 *   interpolation); it must be in_h x in_w.
 * The plan copies what it needs; the masks may be destroyed afterwards.
 * Returns INVALID_ARGUMENT (non-positive sizes, negative padding or dilation, kernel span larger than
 * the padded input, groups not dividing the channels, mask sizes not matching, overflowing sizes) or
 * OUT_OF_MEMORY. */
PERF_API perf_status perf_conv_plan_create(const perf_conv_desc *desc, const perf_mask *output_mask,
                                           const perf_mask *input_mask, perf_conv_plan **out);
PERF_API void perf_conv_plan_destroy(perf_conv_plan *plan); /* NULL is a no-op */

/* Output spatial size and the number of computed positions (out_h*out_w when dense). */
PERF_API perf_status perf_conv_plan_output(const perf_conv_plan *plan, int *out_h, int *out_w,
                                           int *count);

/* Bytes of workspace that perf_conv_forward / _backward_data / _backward_filter need with this plan
 * (one size serves all three). */
PERF_API perf_status perf_conv_workspace_size(const perf_conv_plan *plan, size_t *bytes);

/* How the CPU forward of this plan runs, as a static string: "pointwise" (1x1 stride-1 dense: one GEMM
 * on the input planes), "shift" (stride 1, no masks, a 1-D or thin kernel: one GEMM per kernel tap over
 * a padded copy of the input), or "im2row" (every other plan, perforated ones included). Backward
 * always uses im2row (or the pointwise GEMMs). Environment PERF_CONV_PATH=im2row|shift, read when a
 * plan is created, overrides the choice between the last two where "shift" is allowed. */
PERF_API perf_status perf_conv_plan_path(const perf_conv_plan *plan, const char **path);

/* y = conv(x, weight) + bias at the plan's computed positions.
 * x: full [batch][in_channels][in_h][in_w] or compact [batch][in_channels][count_in];
 * bias: [out_channels] or NULL; y: [batch][out_channels][count] (overwritten).
 * workspace: at least perf_conv_workspace_size bytes, 64-byte alignment recommended (any alignment
 * of float works). x and y must not overlap. */
PERF_API perf_status perf_conv_forward(const perf_conv_plan *plan, const float *x, const float *weight,
                                       const float *bias, float *y, void *workspace,
                                       size_t workspace_bytes);

/* Channels-last (NHWC) forward, the CPU inference engine's layout:
 *   x: full x[batch][in_h*in_w][in_channels], or compact x_c[batch][count_in][in_channels];
 *   y: y[batch][count][out_channels] (count = out_h*out_w when dense), overwritten;
 *   weight: the usual [out_channels][in_channels/groups][kernel_h][kernel_w] (packed at each call);
 *   y = relu?(conv(x, weight) * scale + bias) per output channel: scale [out_channels] or NULL (1;
 *   a batch normalisation folded in), bias [out_channels] or NULL (0), relu 0 or 1.
 * Register-blocked micro-kernels (AVX-512, AVX2+FMA or portable C, chosen at run time: see
 * perf_conv_plan_kernels) read the input through pointers to channel runs (no im2row copy) and write
 * y directly. Same result for any thread count. CPU plans only (UNSUPPORTED for a CUDA plan).
 * workspace: at least perf_conv_nhwc_workspace_size bytes, any alignment of float. */
PERF_API perf_status perf_conv_nhwc_workspace_size(const perf_conv_plan *plan, size_t *bytes);
PERF_API perf_status perf_conv_forward_nhwc(const perf_conv_plan *plan, const float *x, const float *weight,
                                            const float *scale, const float *bias, int relu, float *y,
                                            void *workspace, size_t workspace_bytes);

/* Weights packed once for a network whose weights do not change between calls: the forward then skips
 * its packing pass, which dominates small maps (a 512 -> 512 3x3 conv on a 7x7 map packs 9.4 MB for
 * 0.23 GFLOP). packed: perf_conv_nhwc_packed_size bytes, 64-byte aligned; it records the geometry and
 * kernel set it was packed for, and the packed forward refuses (INVALID_ARGUMENT) a buffer packed for
 * another. perf_conv_forward_nhwc_packed is perf_conv_forward_nhwc with the weights taken from it and an
 * optional residual: y = relu?(conv(x, weight) * scale + bias + residual), residual laid out like y
 * (a ResNet shortcut fused into the conv's output pass) or NULL; it must not overlap y
 * (INVALID_ARGUMENT: y holds partial sums while the residual is still to be read). */
PERF_API perf_status perf_conv_nhwc_packed_size(const perf_conv_plan *plan, size_t *bytes);
PERF_API perf_status perf_conv_nhwc_pack(const perf_conv_plan *plan, const float *weight, void *packed,
                                         size_t packed_bytes);
PERF_API perf_status perf_conv_forward_nhwc_packed(const perf_conv_plan *plan, const float *x, const void *packed,
                                                   size_t packed_bytes, const float *scale, const float *bias,
                                                   const float *residual, int relu, float *y, void *workspace,
                                                   size_t workspace_bytes);

/* The micro-kernel set perf_conv_forward_nhwc uses, as a static string: "avx512", "avx2" or "generic".
 * The environment variable PERF_ISA=avx2|generic, read at the first plan, picks a weaker set. */
PERF_API perf_status perf_conv_plan_kernels(const perf_conv_plan *plan, const char **name);

/* dx = d(loss)/dx given dy = d(loss)/dy of the plan's (compact) output.
 * dy: [batch][out_channels][count]; dx: same layout as x (full or compact), overwritten.
 * Input positions that no computed output reads get zero gradient. */
PERF_API perf_status perf_conv_backward_data(const perf_conv_plan *plan, const float *weight,
                                             const float *dy, float *dx, void *workspace,
                                             size_t workspace_bytes);

/* dweight = d(loss)/dweight (overwritten), dbias = sum of dy over batch and positions (overwritten;
 * NULL to skip). */
PERF_API perf_status perf_conv_backward_filter(const perf_conv_plan *plan, const float *x,
                                               const float *dy, float *dweight, float *dbias,
                                               void *workspace, size_t workspace_bytes);

/* ------------------------------------------------------------------------------------------------
 * Pooling (max, average; Caffe ceil mode; global average = kernel equal to the input size)
 * ---------------------------------------------------------------------------------------------- */

typedef enum perf_pool_mode { PERF_POOL_MAX = 0, PERF_POOL_AVERAGE = 1 } perf_pool_mode;

typedef struct perf_pool_desc {
    int batch;
    int channels;
    int in_h, in_w;
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    perf_pool_mode mode;
} perf_pool_desc;

typedef struct perf_pool_plan perf_pool_plan;

/* input_mask: NULL for a full input x[batch][channels][in_h][in_w]; else the input is compact
 * [batch][channels][count_in] read through the mask's nearest map. Max pooling takes the maximum over
 * the window's distinct compact indices; average pooling sums the window's in-bounds positions (with
 * duplicates) and divides by their number. Output is always full: y[batch][channels][out_h][out_w].
 * Returns INVALID_ARGUMENT (bad sizes, pad >= kernel, kernel larger than the padded input, mask size
 * not in_h x in_w) or OUT_OF_MEMORY. */
PERF_API perf_status perf_pool_plan_create(const perf_pool_desc *desc, const perf_mask *input_mask,
                                           perf_pool_plan **out);
PERF_API void perf_pool_plan_destroy(perf_pool_plan *plan);
PERF_API perf_status perf_pool_plan_output(const perf_pool_plan *plan, int *out_h, int *out_w);

PERF_API perf_status perf_pool_forward(const perf_pool_plan *plan, const float *x, float *y);
/* Channels-last: x[batch][in_spatial][channels] (in_spatial = in_h*in_w, or the input mask's count),
 * y[batch][out_h*out_w][channels]; the same windows and values as perf_pool_forward. CPU plans only. */
PERF_API perf_status perf_pool_forward_nhwc(const perf_pool_plan *plan, const float *x, float *y);

/* dx (overwritten; same layout as x) from dy [batch][channels][out_h][out_w]. Max pooling routes each
 * gradient to the first maximum of its window in x (recomputed from x), so x is required for max and
 * ignored (may be NULL) for average. */
PERF_API perf_status perf_pool_backward(const perf_pool_plan *plan, const float *x, const float *dy,
                                        float *dx);

/* ------------------------------------------------------------------------------------------------
 * Position-wise and dense layers. `spatial` is h*w for a full tensor or count for a compact one:
 * these layers run on compact tensors unchanged.
 * ---------------------------------------------------------------------------------------------- */

/* y = max(x, 0) over `size` elements (y may equal x). */
PERF_API perf_status perf_relu_forward(size_t size, const float *x, float *y);
/* dx = dy where y > 0 else 0 (y is the forward output; dx may equal dy). */
PERF_API perf_status perf_relu_backward(size_t size, const float *y, const float *dy, float *dx);

/* Local response normalisation across channels (Caffe/AlexNet):
 * scale[n][c][s] = k + alpha/local_size * sum_{c' in window(c)} x[n][c'][s]^2,
 * y = x * scale^-beta; local_size odd. x, y: [batch][channels][spatial]; y must not overlap x. */
PERF_API perf_status perf_lrn_forward(int batch, int channels, int spatial, int local_size, float alpha,
                                      float beta, float k, const float *x, float *y);
/* The same in channels-last layout: x, y [positions][channels] (positions = batch * spatial). */
PERF_API perf_status perf_lrn_forward_nhwc(int positions, int channels, int local_size, float alpha,
                                           float beta, float k, const float *x, float *y);
/* dx (overwritten) given x, y = lrn(x) and dy. */
PERF_API perf_status perf_lrn_backward(int batch, int channels, int spatial, int local_size,
                                       float alpha, float beta, float k, const float *x, const float *y,
                                       const float *dy, float *dx);

/* Fully connected: y[batch][out] = x[batch][in] . weight[out][in]^T + bias[out] (bias may be NULL). */
PERF_API perf_status perf_fc_forward(int batch, int in_features, int out_features, const float *x,
                                     const float *weight, const float *bias, float *y);
/* dx[batch][in] = dy . weight (overwritten; NULL to skip); dweight[out][in] = dy^T . x (overwritten;
 * NULL to skip); dbias[out] = sum over batch of dy (overwritten; NULL to skip). */
PERF_API perf_status perf_fc_backward(int batch, int in_features, int out_features, const float *x,
                                      const float *weight, const float *dy, float *dx, float *dweight,
                                      float *dbias);

/* Inverted dropout: y = x * keep / (1 - ratio), keep drawn per element from (seed, element index) by a
 * counter-based hash, so the backward regenerates the same keep pattern without storing it.
 * ratio in [0, 1); y may equal x. */
PERF_API perf_status perf_dropout_forward(size_t size, float ratio, uint64_t seed, const float *x,
                                          float *y);
PERF_API perf_status perf_dropout_backward(size_t size, float ratio, uint64_t seed, const float *dy,
                                           float *dx);

/* Softmax + cross-entropy over logits[batch][classes]; labels[batch] in [0, classes).
 * prob[batch][classes] (overwritten), loss[batch] = -log prob[label] (overwritten; NULL to skip). */
PERF_API perf_status perf_softmax_xent_forward(int batch, int classes, const float *logits,
                                               const int32_t *labels, float *prob, float *loss);
/* dlogits = (prob - onehot(label)) * scale (e.g. scale = 1/batch for a mean loss). */
PERF_API perf_status perf_softmax_xent_backward(int batch, int classes, const float *prob,
                                                const int32_t *labels, float scale, float *dlogits);

/* Per-channel bias on a [batch][channels][spatial] tensor, in place; and its gradient
 * dbias[c] = sum over batch and spatial of dy (overwritten). */
PERF_API perf_status perf_bias_forward(int batch, int channels, int spatial, const float *bias,
                                       float *y);
PERF_API perf_status perf_bias_backward(int batch, int channels, int spatial, const float *dy,
                                        float *dbias);

/* Batch normalisation on a [batch][channels][spatial] tensor, per channel over batch*spatial values.
 * Training: mean[c], invstd[c] = 1/sqrt(var + eps) of the batch (overwritten; var biased) and
 * y = gamma*(x - mean)*invstd + beta; y must not be x. Inference: the same map with the given mean
 * and var (e.g. running averages; var >= 0); y may be x. Backward (of training): dx (may be dy),
 * dgamma[c] = sum dy*xhat and dbeta[c] = sum dy (overwritten), from x and the forward's mean/invstd.
 * eps must be finite and > 0. */
PERF_API perf_status perf_batchnorm_forward_train(int batch, int channels, int spatial, float eps,
                                                  const float *x, const float *gamma, const float *beta,
                                                  float *y, float *mean, float *invstd);
PERF_API perf_status perf_batchnorm_forward_inference(int batch, int channels, int spatial, float eps,
                                                      const float *x, const float *gamma,
                                                      const float *beta, const float *mean,
                                                      const float *var, float *y);
PERF_API perf_status perf_batchnorm_backward(int batch, int channels, int spatial, const float *x,
                                             const float *dy, const float *gamma, const float *mean,
                                             const float *invstd, float *dx, float *dgamma,
                                             float *dbeta);

/* ------------------------------------------------------------------------------------------------
 * Devices and contexts (CUDA backend)
 *
 * A context names where work runs. A CPU context (or a NULL context, wherever a context is taken)
 * runs the CPU code above on host memory. A CUDA context owns one device, a CUDA stream and a cuBLAS
 * handle bound to that stream: every call made with it (or with a plan created with it) is enqueued
 * on that stream and returns before the work is done, and every pointer it takes is device memory
 * (cudaMalloc, perf_device_alloc, or another library's allocation such as a CuPy array), workspaces
 * included. The stream is a blocking stream, so it is ordered with the legacy default stream that
 * CuPy uses by default. Call perf_context_synchronize before reading results on the host.
 * A context may be shared by several plans and calls but not used from two threads at once; it must
 * outlive the plans created with it.
 * A build without the CUDA backend (PERF_WITH_CUDA off) answers every CUDA request with
 * PERF_STATUS_UNSUPPORTED and the message "<function>: this build has no CUDA backend (rebuild with
 * -DPERF_WITH_CUDA=ON)". CUDA and cuBLAS failures return PERF_STATUS_DEVICE_ERROR with the CUDA
 * error string or the cuBLAS status name in the message; nothing aborts.
 * A call with a CUDA context makes that context's device current on the calling thread
 * (cudaSetDevice) and leaves it current: with several GPUs, set your own device again afterwards if
 * your code relies on the current device.
 * ---------------------------------------------------------------------------------------------- */

typedef enum perf_device { PERF_DEVICE_CPU = 0, PERF_DEVICE_CUDA = 1 } perf_device;

typedef struct perf_context perf_context;

/* Number of CUDA devices visible to this process: 0 (and SUCCESS) in a build without CUDA or on a
 * machine without a GPU or driver. INVALID_ARGUMENT if count is NULL. */
PERF_API perf_status perf_cuda_device_count(int *count);

/* Create a context. device: PERF_DEVICE_CPU (device_index ignored) or PERF_DEVICE_CUDA with
 * device_index in [0, perf_cuda_device_count). Returns INVALID_ARGUMENT (unknown device, index out of
 * range, out NULL), UNSUPPORTED (CUDA requested, no CUDA backend), DEVICE_ERROR, OUT_OF_MEMORY. */
PERF_API perf_status perf_context_create(perf_device device, int device_index, perf_context **out);
/* Waits for the context's pending work, then releases it. NULL is a no-op. */
PERF_API void perf_context_destroy(perf_context *ctx);
/* The context's device (PERF_DEVICE_CPU for NULL) and device index (0 for CPU and NULL). */
PERF_API perf_device perf_context_device(const perf_context *ctx);
PERF_API int perf_context_device_index(const perf_context *ctx);
/* Block until every call enqueued on the context has finished; reports a failure of that work as
 * DEVICE_ERROR. A no-op for a CPU or NULL context. */
PERF_API perf_status perf_context_synchronize(const perf_context *ctx);

/* Memory of the context's device: host memory (64-byte aligned) for a CPU context, device memory
 * for a CUDA one. bytes may be 0 (a valid, unusable pointer). Release with perf_device_free (NULL is
 * a no-op). Returns INVALID_ARGUMENT (ctx or out NULL), OUT_OF_MEMORY, DEVICE_ERROR. */
PERF_API perf_status perf_device_alloc(const perf_context *ctx, size_t bytes, void **out);
PERF_API perf_status perf_device_free(const perf_context *ctx, void *ptr);

/* Copies of `bytes` bytes between host and the context's device memory, enqueued on the context's
 * stream (a plain memcpy for a CPU context): synchronise before reading a host destination or reusing
 * a host source. bytes 0 is a no-op. Returns INVALID_ARGUMENT (NULL ctx or pointers) or DEVICE_ERROR. */
PERF_API perf_status perf_memcpy_to_device(const perf_context *ctx, void *device_dst,
                                           const void *host_src, size_t bytes);
PERF_API perf_status perf_memcpy_to_host(const perf_context *ctx, void *host_dst,
                                         const void *device_src, size_t bytes);
PERF_API perf_status perf_memcpy_device_to_device(const perf_context *ctx, void *device_dst,
                                                  const void *device_src, size_t bytes);

/* Plans bound to a context. ctx NULL or a CPU context: exactly perf_conv_plan_create /
 * perf_pool_plan_create. A CUDA context: the plan's gather tables are uploaded to the device, and
 * perf_conv_forward / _backward_data / _backward_filter (resp. perf_pool_forward / _backward) with
 * this plan take device pointers (workspace too: perf_conv_workspace_size bytes of device memory) and
 * run asynchronously on the context's stream. Results agree with the CPU up to float rounding
 * (the backward passes accumulate with atomic adds, so their summation order is not fixed).
 * Same statuses as the CPU functions, plus UNSUPPORTED and DEVICE_ERROR. */
PERF_API perf_status perf_conv_plan_create_ctx(const perf_context *ctx, const perf_conv_desc *desc,
                                               const perf_mask *output_mask,
                                               const perf_mask *input_mask, perf_conv_plan **out);
PERF_API perf_status perf_pool_plan_create_ctx(const perf_context *ctx, const perf_pool_desc *desc,
                                               const perf_mask *input_mask, perf_pool_plan **out);
/* The context a plan was created with (NULL for a CPU plan). */
PERF_API const perf_context *perf_conv_plan_context(const perf_conv_plan *plan);
PERF_API const perf_context *perf_pool_plan_context(const perf_pool_plan *plan);

/* Context variants of the plan-less operations: the same arguments, semantics and statuses as the
 * functions above, preceded by a context. ctx NULL or CPU: the CPU function (host pointers). CUDA:
 * device pointers, enqueued on the context's stream. Notes for CUDA:
 * - interp: the mask stays on the host; the context keeps device copies of the last 8 nearest maps it
 *   used (matched by content, so a new mask at a freed mask's address is never confused with it) and
 *   uploads a map only on a miss. Conv and pooling plans with input masks read compact tensors with
 *   no interpolation at all; prefer them in timed loops.
 * - softmax_xent: labels are device memory; they are copied back and range-checked before the kernel
 *   runs (a synchronisation of the stream).
 * - dropout: the keep pattern is the same function of (seed, element index) as on the CPU, so CPU and
 *   CUDA agree bit for bit. */
PERF_API perf_status perf_interp_forward_ctx(const perf_context *ctx, const perf_mask *mask, int planes,
                                             const float *compact, float *full);
PERF_API perf_status perf_interp_backward_ctx(const perf_context *ctx, const perf_mask *mask,
                                              int planes, const float *full, float *compact);
PERF_API perf_status perf_relu_forward_ctx(const perf_context *ctx, size_t size, const float *x,
                                           float *y);
PERF_API perf_status perf_relu_backward_ctx(const perf_context *ctx, size_t size, const float *y,
                                            const float *dy, float *dx);
PERF_API perf_status perf_lrn_forward_ctx(const perf_context *ctx, int batch, int channels, int spatial,
                                          int local_size, float alpha, float beta, float k,
                                          const float *x, float *y);
PERF_API perf_status perf_lrn_backward_ctx(const perf_context *ctx, int batch, int channels,
                                           int spatial, int local_size, float alpha, float beta,
                                           float k, const float *x, const float *y, const float *dy,
                                           float *dx);
PERF_API perf_status perf_fc_forward_ctx(const perf_context *ctx, int batch, int in_features,
                                         int out_features, const float *x, const float *weight,
                                         const float *bias, float *y);
PERF_API perf_status perf_fc_backward_ctx(const perf_context *ctx, int batch, int in_features,
                                          int out_features, const float *x, const float *weight,
                                          const float *dy, float *dx, float *dweight, float *dbias);
PERF_API perf_status perf_dropout_forward_ctx(const perf_context *ctx, size_t size, float ratio,
                                              uint64_t seed, const float *x, float *y);
PERF_API perf_status perf_dropout_backward_ctx(const perf_context *ctx, size_t size, float ratio,
                                               uint64_t seed, const float *dy, float *dx);
PERF_API perf_status perf_softmax_xent_forward_ctx(const perf_context *ctx, int batch, int classes,
                                                   const float *logits, const int32_t *labels,
                                                   float *prob, float *loss);
PERF_API perf_status perf_softmax_xent_backward_ctx(const perf_context *ctx, int batch, int classes,
                                                    const float *prob, const int32_t *labels,
                                                    float scale, float *dlogits);
PERF_API perf_status perf_bias_forward_ctx(const perf_context *ctx, int batch, int channels,
                                           int spatial, const float *bias, float *y);
PERF_API perf_status perf_bias_backward_ctx(const perf_context *ctx, int batch, int channels,
                                            int spatial, const float *dy, float *dbias);

/* batchnorm: var >= 0 is checked on the CPU only (on CUDA, var is device memory and reading it back
 * would synchronise the stream; a negative var gives NaN outputs). */
PERF_API perf_status perf_batchnorm_forward_train_ctx(const perf_context *ctx, int batch, int channels,
                                                      int spatial, float eps, const float *x,
                                                      const float *gamma, const float *beta, float *y,
                                                      float *mean, float *invstd);
PERF_API perf_status perf_batchnorm_forward_inference_ctx(const perf_context *ctx, int batch, int channels,
                                                          int spatial, float eps, const float *x,
                                                          const float *gamma, const float *beta,
                                                          const float *mean, const float *var, float *y);
PERF_API perf_status perf_batchnorm_backward_ctx(const perf_context *ctx, int batch, int channels,
                                                 int spatial, const float *x, const float *dy,
                                                 const float *gamma, const float *mean,
                                                 const float *invstd, float *dx, float *dgamma,
                                                 float *dbeta);

/* </cdef> */

#ifdef __cplusplus
}
#endif

#endif /* PERFORATED_H */
