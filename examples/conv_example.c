/*
 * conv_example.c - libperforated from C, end to end: a perforated 3x3 convolution.
 *
 *   cc conv_example.c $(pkg-config --cflags --libs perforated) -o conv_example && ./conv_example
 *
 * 1. a uniform mask keeping about half of the 9x11 output positions (perf_mask_uniform);
 * 2. a convolution plan whose output is compact, y_c[batch][out_channels][count] (perf_conv_plan_create);
 * 3. perf_conv_forward with a caller-owned workspace (queried once, allocated once);
 * 4. nearest-neighbour interpolation back to the full map, y[batch][out_channels][9*11];
 * 5. a check of the computed positions against a direct convolution written out here, and of every
 *    interpolated position against the compact value it copies;
 * 6. the error path: an invalid rate returns a status and a message, never an abort.
 * Exits 0 on success, 1 on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <perforated.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        perf_status s_ = (call);                                                                   \
        if (s_ != PERF_STATUS_SUCCESS) {                                                           \
            fprintf(stderr, "%s failed: %s: %s\n", #call, perf_status_string(s_), perf_last_error()); \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Deterministic inputs in [-1, 1) without depending on rand()'s implementation. */
static float pseudo(unsigned i) {
    i = i * 2654435761u + 12345u;
    return (float)((i >> 8) & 0xffff) / 32768.0f - 1.0f;
}

int main(void) {
    const perf_conv_desc d = {.batch = 2, .in_channels = 3, .in_h = 9, .in_w = 11, .out_channels = 4,
                              .kernel_h = 3, .kernel_w = 3, .stride_h = 1, .stride_w = 1,
                              .pad_h = 1, .pad_w = 1, .groups = 1};
    const int oh = 9, ow = 11; /* (9 + 2 - 3) / 1 + 1, (11 + 2 - 3) / 1 + 1 */
    perf_mask *mask = NULL, *bad = NULL;
    perf_conv_plan *plan = NULL;
    float *x = NULL, *w = NULL, *b = NULL, *yc = NULL, *y = NULL;
    void *ws = NULL;
    size_t ws_bytes = 0;
    int out_h = 0, out_w = 0, count = 0, rc = 1;

    printf("%s\n", perf_build_info());

    CHECK(perf_mask_uniform(oh, ow, 0.5, 42, &mask));
    CHECK(perf_conv_plan_create(&d, mask, NULL, &plan));
    CHECK(perf_conv_plan_output(plan, &out_h, &out_w, &count));
    CHECK(perf_conv_workspace_size(plan, &ws_bytes));
    printf("output %dx%d, computing %d of %d positions, workspace %zu bytes\n", out_h, out_w, count,
           out_h * out_w, ws_bytes);
    if (out_h != oh || out_w != ow || count != perf_mask_count(mask)) {
        fprintf(stderr, "unexpected plan output %dx%d count %d\n", out_h, out_w, count);
        goto fail;
    }

    const size_t nx = (size_t)d.batch * d.in_channels * d.in_h * d.in_w;
    const size_t nw = (size_t)d.out_channels * d.in_channels * d.kernel_h * d.kernel_w;
    const size_t planes = (size_t)d.batch * d.out_channels;
    x = malloc(nx * sizeof *x);
    w = malloc(nw * sizeof *w);
    b = malloc((size_t)d.out_channels * sizeof *b);
    yc = malloc(planes * (size_t)count * sizeof *yc);
    y = malloc(planes * (size_t)(oh * ow) * sizeof *y);
    ws = ws_bytes ? malloc(ws_bytes) : NULL;
    if (!x || !w || !b || !yc || !y || (ws_bytes && !ws)) {
        fprintf(stderr, "out of memory\n");
        goto fail;
    }
    for (size_t i = 0; i < nx; i++) x[i] = pseudo((unsigned)i);
    for (size_t i = 0; i < nw; i++) w[i] = pseudo((unsigned)(i + 100000));
    for (int i = 0; i < d.out_channels; i++) b[i] = 0.1f * (float)i;

    CHECK(perf_conv_forward(plan, x, w, b, yc, ws, ws_bytes));
    CHECK(perf_interp_forward(mask, (int)planes, yc, y));

    /* Direct convolution at each computed position, and the interpolation identity. */
    const int32_t *idx = perf_mask_indices(mask), *nearest = perf_mask_nearest(mask);
    double checksum = 0.0, max_err = 0.0;
    for (int n = 0; n < d.batch; n++)
        for (int o = 0; o < d.out_channels; o++) {
            const float *yp = yc + ((size_t)n * d.out_channels + o) * count;
            const float *fp = y + ((size_t)n * d.out_channels + o) * (oh * ow);
            for (int k = 0; k < count; k++) {
                int r = idx[k] / ow, c = idx[k] % ow;
                double ref = b[o];
                for (int ci = 0; ci < d.in_channels; ci++)
                    for (int i = 0; i < d.kernel_h; i++)
                        for (int j = 0; j < d.kernel_w; j++) {
                            int ir = r - d.pad_h + i, ic = c - d.pad_w + j;
                            if (ir < 0 || ir >= d.in_h || ic < 0 || ic >= d.in_w) continue;
                            ref += (double)x[(((size_t)n * d.in_channels + ci) * d.in_h + ir) * d.in_w + ic] *
                                   w[(((size_t)o * d.in_channels + ci) * d.kernel_h + i) * d.kernel_w + j];
                        }
                max_err = fmax(max_err, fabs(ref - yp[k]));
            }
            for (int p = 0; p < oh * ow; p++) {
                if (fp[p] != yp[nearest[p]]) {
                    fprintf(stderr, "interpolation mismatch at n=%d o=%d p=%d\n", n, o, p);
                    goto fail;
                }
                checksum += fp[p];
            }
        }
    printf("checksum of the interpolated output: %.6f\n", checksum);
    printf("max |direct - perforated| at computed positions: %.3g\n", max_err);
    if (!(max_err < 1e-4)) {
        fprintf(stderr, "perforated convolution disagrees with the direct convolution\n");
        goto fail;
    }

    /* The error path: a rate outside [0, 1) is refused with a status and a message. */
    perf_status s = perf_mask_uniform(oh, ow, 1.5, 42, &bad);
    printf("perf_mask_uniform(rate=1.5) -> %s: %s\n", perf_status_string(s), perf_last_error());
    if (s != PERF_STATUS_INVALID_ARGUMENT) {
        fprintf(stderr, "expected an invalid-argument status\n");
        goto fail;
    }
    printf("ok\n");
    rc = 0;
fail:
    perf_mask_destroy(bad);
    perf_conv_plan_destroy(plan);
    perf_mask_destroy(mask);
    free(ws);
    free(y);
    free(yc);
    free(b);
    free(w);
    free(x);
    return rc;
}
