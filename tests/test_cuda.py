"""CUDA backend: every op on the GPU against the CPU on the shared shape lists, and the answers of
a build or machine without CUDA.

GPU tests are marked ``gpu`` (run with ``--run-gpu``) and skip cleanly unless the loaded library
has the CUDA backend, a GPU is visible (``perforated.cuda_available()``, which checks the device
count) and CuPy is installed. The other tests run everywhere: a CPU-only build must answer CUDA
requests with UNSUPPORTED and its message, contexts and the ``_ctx`` functions must work on the CPU,
and GPU-array arguments are validated before any C call.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import perforated as P
from perforated.ops import batchnorm as BN
from perforated._c.lib import ffi, lib
from helpers import assert_close, gpu_test, randn
from cases import (CONV_GEOMETRIES, INTERP_MASKS, OUT_MASKS, POOL_GEOMETRIES, POOL_INPUTS, conv_setup,
                   pool_setup)

CUDA_BUILD = "CUDA on" in P.build_info()
NO_CUDA_MESSAGE = "this build has no CUDA backend (rebuild with -DPERF_WITH_CUDA=ON)"

# --- everywhere: CPU-only build answers, CPU contexts, argument checks ----------------------------


def test_device_count_and_available_agree():
    n = P.cuda_device_count()
    assert type(n) is int
    assert P.cuda_available() == (n > 0)
    if not CUDA_BUILD:
        assert n == 0


@pytest.mark.skipif(CUDA_BUILD, reason="the loaded library has the CUDA backend")
def test_cpu_build_answers_unsupported():
    out = ffi.new("perf_context **")
    assert lib.perf_context_create(lib.PERF_DEVICE_CUDA, 0, out) == lib.PERF_STATUS_UNSUPPORTED
    assert out[0] == ffi.NULL
    assert ffi.string(lib.perf_last_error()).decode() == "perf_context_create: " + NO_CUDA_MESSAGE
    for make in (lambda: P.Context("cuda"),
                 lambda: P.ConvPlan(1, 2, (5, 5), 3, 3, device="cuda"),
                 lambda: P.PoolPlan(1, 2, (5, 5), 2, 2, device="cuda")):
        with pytest.raises(P.UnsupportedError, match=r"rebuild with -DPERF_WITH_CUDA=ON"):
            make()


@pytest.mark.skipif(not CUDA_BUILD or P.cuda_available(), reason="needs a CUDA build on a machine without a GPU")
def test_cuda_build_without_gpu_says_no_device():
    with pytest.raises(P.InvalidArgumentError, match=r"CUDA devices found: 0"):
        P.Context("cuda")


def test_context_create_validates():
    out = ffi.new("perf_context **")
    assert lib.perf_context_create(7, 0, out) == lib.PERF_STATUS_INVALID_ARGUMENT
    assert "device must be PERF_DEVICE_CPU (0) or PERF_DEVICE_CUDA (1), got 7" in \
        ffi.string(lib.perf_last_error()).decode()
    assert lib.perf_context_create(0, 0, ffi.NULL) == lib.PERF_STATUS_INVALID_ARGUMENT
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        P.Context("tpu")


def test_cpu_context_memory_round_trip():
    ctx = P.Context("cpu")
    assert lib.perf_context_device(ctx._ptr) == lib.PERF_DEVICE_CPU
    assert lib.perf_context_device(ffi.NULL) == lib.PERF_DEVICE_CPU
    buf = P._c.device.DeviceBuffer(ctx, 40)
    src = np.arange(10, dtype=np.float32)
    dst = np.zeros(10, dtype=np.float32)
    assert lib.perf_memcpy_to_device(ctx._ptr, buf.ptr, ffi.from_buffer(src), 40) == 0
    assert lib.perf_memcpy_to_host(ctx._ptr, ffi.from_buffer(dst), buf.ptr, 40) == 0
    ctx.synchronize()
    np.testing.assert_array_equal(dst, src)
    assert lib.perf_memcpy_to_host(ffi.NULL, ffi.from_buffer(dst), buf.ptr, 40) == \
        lib.PERF_STATUS_INVALID_ARGUMENT


def test_cpu_context_plans_and_ctx_functions_match_cpu(rng):
    ctx = P.Context("cpu")
    x, weight, b, kw, _ = conv_setup(rng, CONV_GEOMETRIES["13x17_23to19_3x3p1"], "uniform", True)
    plan = P.ConvPlan(x.shape[0], x.shape[1], kw["input_mask"].shape, weight.shape[0], weight.shape[2:],
                      kw["stride"], kw["pad"], kw["groups"], kw["mask"], kw["input_mask"], context=ctx)
    assert plan.device == "cpu" and lib.perf_conv_plan_context(plan._ptr) == ffi.NULL
    np.testing.assert_array_equal(plan.forward(x, weight, b),
                                  P.conv2d(x, weight, b, compact=True, **kw))
    v = randn(rng, 3, 5, 7)
    y = np.empty_like(v)
    assert lib.perf_relu_forward_ctx(ctx._ptr, v.size, ffi.from_buffer("float[]", v),
                                     ffi.from_buffer("float[]", y)) == 0
    np.testing.assert_array_equal(y, P.relu(v))
    assert lib.perf_dropout_forward_ctx(ffi.NULL, v.size, 0.5, 9, ffi.from_buffer("float[]", v),
                                        ffi.from_buffer("float[]", y)) == 0
    np.testing.assert_array_equal(y, P.dropout(v, 0.5, 9))


class FakeGpuArray:
    """Just a __cuda_array_interface__: the checks must reject it before any C call."""

    def __init__(self, shape, typestr="<f4", strides=None, readonly=False):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr, "strides": strides,
                                         "data": (0, readonly), "version": 3}


def test_gpu_array_checks():
    check = P._c.device.check_device_array
    assert check("f", "x", FakeGpuArray((2, 3))) == (2, 3)
    with pytest.raises(TypeError, match="f: x must be float32, got float64"):
        check("f", "x", FakeGpuArray((2, 3), "<f8"))
    with pytest.raises(ValueError, match=r"f: x must have shape \(2, 4\), got \(2, 3\)"):
        check("f", "x", FakeGpuArray((2, 3)), shape=(2, 4))
    with pytest.raises(ValueError, match="must be C-contiguous"):
        check("f", "x", FakeGpuArray((2, 3), strides=(4, 8)))
    assert check("f", "x", FakeGpuArray((2, 3), strides=(12, 4))) == (2, 3)
    with pytest.raises(ValueError, match="f: out must be writable"):
        check("f", "out", FakeGpuArray((2, 3), readonly=True), writable=True)
    with pytest.raises(TypeError, match="must be a GPU array"):
        check("f", "x", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"relu_backward: dy must have shape \(2, 3\)"):
        P.relu_backward(FakeGpuArray((2, 3)), FakeGpuArray((3, 2)))


def _f(a):
    return ffi.from_buffer("float[]", a)


def test_batchnorm_ctx_on_cpu_is_the_cpu_function(rng):
    """perf_batchnorm_*_ctx with a NULL or CPU context: the CPU functions' results (bit for bit, the
    backward in place too) and their checks and messages (var >= 0 included)."""
    x, dy = randn(rng, 3, 4, 5, 6) * 3 + 50, randn(rng, 3, 4, 5, 6)
    gamma, beta, var = randn(rng, 4), randn(rng, 4), np.abs(randn(rng, 4)) + 0.1
    y, mean, invstd = BN.forward_train(x, gamma, beta)
    inf = BN.forward_inference(x, gamma, beta, mean, var)
    dx, dgamma, dbeta = BN.backward(x, dy, gamma, mean, invstd)
    n, c, s = 3, 4, 30
    for ctx in (ffi.NULL, P.Context("cpu")._ptr):
        got = [np.full_like(a, np.nan) for a in (y, mean, invstd)]
        assert lib.perf_batchnorm_forward_train_ctx(ctx, n, c, s, BN.EPS, _f(x), _f(gamma), _f(beta),
                                                    *map(_f, got)) == 0
        for g, want in zip(got, (y, mean, invstd)):
            np.testing.assert_array_equal(g, want)
        in_place = x.copy()  # inference may run in place
        assert lib.perf_batchnorm_forward_inference_ctx(ctx, n, c, s, BN.EPS, _f(in_place), _f(gamma), _f(beta),
                                                        _f(mean), _f(var), _f(in_place)) == 0
        np.testing.assert_array_equal(in_place, inf)
        grads, g_gamma, g_beta = dy.copy(), np.empty(4, np.float32), np.empty(4, np.float32)
        assert lib.perf_batchnorm_backward_ctx(ctx, n, c, s, _f(x), _f(grads), _f(gamma), _f(mean), _f(invstd),
                                               _f(grads), _f(g_gamma), _f(g_beta)) == 0  # dx == dy
        for g, want in zip((grads, g_gamma, g_beta), (dx, dgamma, dbeta)):
            np.testing.assert_array_equal(g, want)
    bad_var = np.array([1, 1, -1, 1], np.float32)
    assert lib.perf_batchnorm_forward_inference_ctx(ffi.NULL, n, c, s, BN.EPS, _f(x), _f(gamma), _f(beta),
                                                    _f(mean), _f(bad_var), _f(y)) == lib.PERF_STATUS_INVALID_ARGUMENT
    assert ffi.string(lib.perf_last_error()).decode() == \
        "perf_batchnorm_forward_inference: var[2] must be >= 0, got -1"
    assert lib.perf_batchnorm_forward_train_ctx(ffi.NULL, n, c, s, 0.0, _f(x), _f(gamma), _f(beta), _f(y), _f(mean),
                                                _f(invstd)) == lib.PERF_STATUS_INVALID_ARGUMENT
    assert "eps must be finite and > 0, got 0" in ffi.string(lib.perf_last_error()).decode()
    assert lib.perf_batchnorm_backward_ctx(ffi.NULL, n, 0, s, _f(x), _f(dy), _f(gamma), _f(mean), _f(invstd), _f(dx),
                                           _f(dgamma), _f(dbeta)) == lib.PERF_STATUS_INVALID_ARGUMENT
    assert ffi.string(lib.perf_last_error()).decode() == "perf_batchnorm_backward: channels must be >= 1, got 0"


def test_batchnorm_gpu_array_checks():
    """GPU arrays are checked (names, shapes, overlap) before any context is resolved or C call made."""
    x, v3 = FakeGpuArray((2, 3, 4)), FakeGpuArray((3,))
    with pytest.raises(ValueError, match=r"batchnorm.forward_train: gamma must have shape \(3,\), got \(4,\)"):
        BN.forward_train(x, FakeGpuArray((4,)), v3)
    with pytest.raises(ValueError, match="batchnorm.forward_train: out must not overlap x"):
        BN.forward_train(x, v3, v3, out=x)
    with pytest.raises(TypeError, match="batchnorm.forward_train: beta must be a GPU array"):
        BN.forward_train(x, v3, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"batchnorm.forward_inference: var must have shape \(3,\)"):
        BN.forward_inference(x, v3, v3, v3, FakeGpuArray((2,)))
    with pytest.raises(ValueError, match=r"batchnorm.backward: dy must have shape \(2, 3, 4\)"):
        BN.backward(x, FakeGpuArray((2, 3, 5)), v3, v3, v3)
    with pytest.raises(ValueError, match=r"batchnorm.backward: x must have 3 or 4 dimensions, got 2"):
        BN.backward(FakeGpuArray((2, 3)), FakeGpuArray((2, 3)), v3, v3, v3)
    with pytest.raises(ValueError, match=r"batchnorm.forward_train: GPU arrays need a CUDA context"):
        BN.forward_train(x, v3, v3, context=P.Context("cpu"))


@pytest.mark.skipif(CUDA_BUILD, reason="the loaded library has the CUDA backend")
def test_cpu_build_batchnorm_on_gpu_arrays_is_unsupported():
    x, v3 = FakeGpuArray((2, 3, 4)), FakeGpuArray((3,))
    for call in (lambda: BN.forward_train(x, v3, v3), lambda: BN.forward_inference(x, v3, v3, v3, v3),
                 lambda: BN.backward(x, x, v3, v3, v3)):
        with pytest.raises(P.UnsupportedError, match="perf_context_create: " + re.escape(NO_CUDA_MESSAGE)):
            call()


# --- GPU: CUDA vs CPU ---------------------------------------------------------------------------

def close(gpu_value, cpu_value, what=""):
    import cupy

    assert_close(cupy.asnumpy(gpu_value), cpu_value, rtol=1e-4, atol=1e-4, what=what)


@gpu_test
@pytest.mark.parametrize("implicit", [False, True], ids=["full_in", "compact_in"])
@pytest.mark.parametrize("mask_kind", OUT_MASKS)
@pytest.mark.parametrize("gid", list(CONV_GEOMETRIES))
def test_conv_cuda_matches_cpu(rng, cp, gid, mask_kind, implicit):
    x, weight, b, kw, (oh, ow) = conv_setup(rng, CONV_GEOMETRIES[gid], mask_kind, implicit)
    mask, in_mask = kw["mask"], kw["input_mask"]
    in_size = in_mask.shape if in_mask is not None else x.shape[2:]
    args = (x.shape[0], x.shape[1], in_size, weight.shape[0], weight.shape[2:], kw["stride"], kw["pad"],
            kw["groups"], mask, in_mask)
    cpu, dev = P.ConvPlan(*args), P.ConvPlan(*args, device="cuda")
    assert lib.perf_conv_plan_context(dev._ptr) != ffi.NULL
    xd, wd, bd = cp.asarray(x), cp.asarray(weight), cp.asarray(b)
    close(dev.forward(xd, wd, bd), cpu.forward(x, weight, b), "forward")
    dy = randn(rng, *cpu.y_shape)
    close(dev.backward_data(wd, cp.asarray(dy)), cpu.backward_data(weight, dy), "dx")
    dw, db = dev.backward_filter(xd, cp.asarray(dy))
    rdw, rdb = cpu.backward_filter(x, dy)
    close(dw, rdw, "dweight")
    close(db, rdb, "dbias")
    # the functional API on GPU arrays (explicit interpolation of the output)
    close(P.conv2d(xd, wd, bd, **kw), P.conv2d(x, weight, b, **kw), "conv2d")


@gpu_test
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("kind", POOL_INPUTS)
@pytest.mark.parametrize("gid", list(POOL_GEOMETRIES))
def test_pool_cuda_matches_cpu(rng, cp, gid, kind, mode):
    x, m, (k, s, p), yshape = pool_setup(rng, gid, kind)
    n, c = x.shape[:2]
    size = m.shape if m is not None else x.shape[2:]
    cpu = P.PoolPlan(n, c, size, k, s, p, mode, m)
    dev = P.PoolPlan(n, c, size, k, s, p, mode, m, device="cuda")
    xd = cp.asarray(x)
    close(dev.forward(xd), cpu.forward(x), "forward")
    dy = randn(rng, *yshape)
    close(dev.backward(xd, cp.asarray(dy)), cpu.backward(x, dy), "backward")


@gpu_test
@pytest.mark.parametrize("name", list(INTERP_MASKS))
def test_interp_cuda_matches_cpu(rng, cp, name):
    mask = INTERP_MASKS[name]()
    c = randn(rng, 2, 3, mask.count)
    close(P.interpolate(cp.asarray(c), mask), P.interpolate(c, mask), "forward")
    dy = randn(rng, 2, 3, *mask.shape)
    close(P.interpolate_backward(cp.asarray(dy), mask), P.interpolate_backward(dy, mask), "backward")


@gpu_test
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 19, 11), (7,), (3, 64, 1000)])
def test_elementwise_cuda_matches_cpu(rng, cp, shape):
    x, dy = randn(rng, *shape), randn(rng, *shape)
    y = P.relu(x)
    np.testing.assert_array_equal(cp.asnumpy(P.relu(cp.asarray(x))), y)
    np.testing.assert_array_equal(cp.asnumpy(P.relu_backward(cp.asarray(y), cp.asarray(dy))),
                                  P.relu_backward(y, dy))
    for ratio in (0.0, 0.3, 0.9):  # the same keep pattern, bit for bit
        np.testing.assert_array_equal(cp.asnumpy(P.dropout(cp.asarray(x), ratio, 123)),
                                      P.dropout(x, ratio, 123))
        np.testing.assert_array_equal(cp.asnumpy(P.dropout_backward(cp.asarray(dy), ratio, 5)),
                                      P.dropout_backward(dy, ratio, 5))


@gpu_test
@pytest.mark.parametrize("shape", [(2, 23, 5, 6), (2, 9, 13), (1, 3, 4, 4), (2, 96, 27, 27)])
@pytest.mark.parametrize("args", [dict(), dict(size=3, alpha=0.5, beta=0.75, k=2.0),
                                  dict(size=1, alpha=0.2, beta=0.5, k=1.0),
                                  dict(size=7, alpha=1e-2, beta=0.6, k=1.0)])
def test_lrn_cuda_matches_cpu(rng, cp, shape, args):
    x, dy = randn(rng, *shape), randn(rng, *shape)
    y = P.lrn(x, **args)
    close(P.lrn(cp.asarray(x), **args), y, "forward")
    close(P.lrn_backward(cp.asarray(x), cp.asarray(y), cp.asarray(dy), **args),
          P.lrn_backward(x, y, dy, **args), "backward")


@gpu_test
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 19, 7), (8, 64, 55, 55)])
def test_bias_cuda_matches_cpu(rng, cp, shape):
    x, b = randn(rng, *shape), randn(rng, shape[1])
    close(P.bias_add(cp.asarray(x), cp.asarray(b)), P.bias_add(x, b), "forward")
    close(P.bias_backward(cp.asarray(x)), P.bias_backward(x), "backward")


@gpu_test
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 5, 7), (1, 2, 1, 1), (3, 4, 300), (8, 64, 55, 55)])
def test_batchnorm_cuda_matches_cpu(rng, cp, shape):
    x, dy = randn(rng, *shape) * 3 + 50, randn(rng, *shape)  # a large mean: the shifted-data variance
    c = shape[1]
    gamma, beta, var = randn(rng, c), randn(rng, c), np.abs(randn(rng, c)) + 0.1
    y, mean, invstd = BN.forward_train(x, gamma, beta)
    xd, gd, bd = cp.asarray(x), cp.asarray(gamma), cp.asarray(beta)
    gy, gmean, ginvstd = BN.forward_train(xd, gd, bd, context=P.Context("cuda", 0))
    for got, want, what in zip((gy, gmean, ginvstd), (y, mean, invstd), ("y", "mean", "invstd")):
        close(got, want, what)
    inf = BN.forward_inference(x, gamma, beta, mean, var)
    close(BN.forward_inference(xd, gd, bd, cp.asarray(mean), cp.asarray(var)), inf, "inference")
    in_place = xd.copy()
    BN.forward_inference(in_place, gd, bd, cp.asarray(mean), cp.asarray(var), out=in_place)
    close(in_place, inf, "inference in place")
    want = BN.backward(x, dy, gamma, mean, invstd)
    got = BN.backward(xd, cp.asarray(dy), gd, cp.asarray(mean), cp.asarray(invstd))
    for g, w, what in zip(got, want, ("dx", "dgamma", "dbeta")):
        close(g, w, what)
    dyd = cp.asarray(dy)  # dx == dy: every channel's sums read dy before dx overwrites it
    same = BN.backward(xd, dyd, gd, cp.asarray(mean), cp.asarray(invstd), out=dyd)
    assert same[0] is dyd
    for g, w in zip(same, got):  # the same kernels in the same order: bit for bit
        np.testing.assert_array_equal(cp.asnumpy(g), cp.asnumpy(w))


@gpu_test
@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (3, 23, 19), (5, 64, 10), (64, 9216, 4096)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_cuda_matches_cpu(rng, cp, n, fin, fout, with_bias):
    x, w = randn(rng, n, fin), randn(rng, fout, fin)
    b = randn(rng, fout) if with_bias else None
    close(P.linear(cp.asarray(x), cp.asarray(w), None if b is None else cp.asarray(b)),
          P.linear(x, w, b), "forward")
    dy = randn(rng, n, fout)
    for got, want, what in zip(P.linear_backward(cp.asarray(x), cp.asarray(w), cp.asarray(dy)),
                               P.linear_backward(x, w, dy), ("dx", "dweight", "dbias")):
        close(got, want, what)


@gpu_test
@pytest.mark.parametrize("n,classes", [(1, 1), (4, 10), (3, 1000), (256, 1000)])
def test_softmax_cuda_matches_cpu(rng, cp, n, classes):
    logits = randn(rng, n, classes) * 5
    labels = rng.integers(0, classes, n).astype(np.int32)
    prob, loss = P.softmax_cross_entropy(logits, labels)
    gprob, gloss = P.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels))
    close(gprob, prob, "prob")
    close(gloss, loss, "loss")
    close(P.softmax_cross_entropy_backward(gprob, cp.asarray(labels), 1.0 / n),
          P.softmax_cross_entropy_backward(prob, labels, 1.0 / n), "dlogits")
    bad = cp.asarray(np.full(n, classes, np.int32))
    with pytest.raises(P.InvalidArgumentError, match=rf"labels\[0\] must be in \[0, {classes}\)"):
        P.softmax_cross_entropy(cp.asarray(logits), bad)


@gpu_test
def test_context_api_on_gpu(cp):
    ctx = P.Context("cuda", 0)
    assert lib.perf_context_device(ctx._ptr) == lib.PERF_DEVICE_CUDA
    buf = P._c.device.DeviceBuffer(ctx, 4 * 1000)
    src, dst = np.arange(1000, dtype=np.float32), np.zeros(1000, np.float32)
    assert lib.perf_memcpy_to_device(ctx._ptr, buf.ptr, ffi.from_buffer(src), 4000) == 0
    assert lib.perf_memcpy_to_host(ctx._ptr, ffi.from_buffer(dst), buf.ptr, 4000) == 0
    ctx.synchronize()
    np.testing.assert_array_equal(dst, src)
    with pytest.raises(P.InvalidArgumentError, match="device_index must be in"):
        P.Context("cuda", P.cuda_device_count())
