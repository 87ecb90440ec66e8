"""Batch normalisation for training, and folding it into the conv before it.

NIN, AlexNet and VGG-16 have no batch normalisation; it is here as a training aid: a network trained
with ``python -m perforated.train --batchnorm`` normalises every conv's output (except the last
conv's) with batch statistics, which lets it train at higher rates in fewer epochs. Afterwards each
normalisation, an affine map per channel with the running statistics, is folded into its conv
(:func:`fold`): the saved weights are those of the plain network, which perforation, impact, the
greedy search and low-rank decomposition take as they are.

Functions take ``(N, C, H, W)`` or compact ``(N, C, count)`` float32 arrays (per channel over the
batch and positions) and run the C library (``perf_batchnorm_*``). Like :mod:`perforated.ops.layers`, they
also accept GPU arrays (``__cuda_array_interface__``, e.g. CuPy) for all their array arguments and then
run the CUDA twins on ``context`` (a CUDA :class:`perforated.Context`; by default the default context
of the current GPU), allocating outputs with CuPy when not given. :func:`update_running` and
:func:`identity_init` compute with the arrays' own module (numpy or CuPy), so running statistics stay
on the device; :func:`fold` copies to the host.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from .._c.arrays import check_array, fptr, output_array
from .._c.lib import lib
from .._c.device import Context, array_context, check_device_array, device_output, dptr, host_context, is_device_array
from .._c.errors import check

EPS = 1e-5
MOMENTUM = 0.1  # running = (1 - MOMENTUM) * running + MOMENTUM * batch statistic (PyTorch's convention)


def _layout(fn: str, x: np.ndarray) -> Tuple[int, int, int]:
    check_array(fn, "x", x, ndim=(3, 4))
    n, c = x.shape[:2]
    return n, c, int(np.prod(x.shape[2:]))


def _channel_vector(fn: str, name: str, v: np.ndarray, c: int, writable: bool = False) -> np.ndarray:
    return check_array(fn, name, v, shape=(c,), writable=writable)


def forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = EPS,
                  out: Optional[np.ndarray] = None, mean: Optional[np.ndarray] = None,
                  invstd: Optional[np.ndarray] = None, *, context: Optional[Context] = None
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, mean, invstd)``: ``y = gamma * (x - mean) * invstd + beta`` with the batch's per-channel
    mean and ``invstd = 1 / sqrt(var + eps)`` (biased variance). ``out`` must not be x."""
    fn = "batchnorm.forward_train"
    if is_device_array(x):
        return _dev_forward_train(x, gamma, beta, eps, out, mean, invstd, context)
    n, c, s = _layout(fn, x)
    host_context(fn, context)
    _channel_vector(fn, "gamma", gamma, c)
    _channel_vector(fn, "beta", beta, c)
    y = output_array(fn, "out", out, x.shape)
    mean = output_array(fn, "mean", mean, (c,))
    invstd = output_array(fn, "invstd", invstd, (c,))
    if np.shares_memory(x, y):
        raise ValueError(f"{fn}: out must not overlap x (the backward reads x)")
    check(lib.perf_batchnorm_forward_train(n, c, s, float(eps), fptr(x), fptr(gamma), fptr(beta), fptr(y),
                                           fptr(mean), fptr(invstd)))
    return y, mean, invstd


def forward_inference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                      eps: float = EPS, out: Optional[np.ndarray] = None, *,
                      context: Optional[Context] = None) -> np.ndarray:
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with given statistics; ``out`` may be x."""
    fn = "batchnorm.forward_inference"
    if is_device_array(x):
        return _dev_forward_inference(x, gamma, beta, mean, var, eps, out, context)
    n, c, s = _layout(fn, x)
    host_context(fn, context)
    for name, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        _channel_vector(fn, name, v, c)
    y = output_array(fn, "out", out, x.shape)
    check(lib.perf_batchnorm_forward_inference(n, c, s, float(eps), fptr(x), fptr(gamma), fptr(beta), fptr(mean),
                                               fptr(var), fptr(y)))
    return y


def backward(x: np.ndarray, dy: np.ndarray, gamma: np.ndarray, mean: np.ndarray, invstd: np.ndarray,
             out: Optional[np.ndarray] = None, dgamma: Optional[np.ndarray] = None,
             dbeta: Optional[np.ndarray] = None, *, context: Optional[Context] = None
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of :func:`forward_train` given its input ``x`` and its ``mean`` and
    ``invstd``; ``out`` may be ``dy`` (in place)."""
    fn = "batchnorm.backward"
    if is_device_array(x):
        return _dev_backward(x, dy, gamma, mean, invstd, out, dgamma, dbeta, context)
    n, c, s = _layout(fn, x)
    host_context(fn, context)
    check_array(fn, "dy", dy, shape=x.shape)
    for name, v in (("gamma", gamma), ("mean", mean), ("invstd", invstd)):
        _channel_vector(fn, name, v, c)
    dx = output_array(fn, "out", out, x.shape)
    dgamma = output_array(fn, "dgamma", dgamma, (c,))
    dbeta = output_array(fn, "dbeta", dbeta, (c,))
    check(lib.perf_batchnorm_backward(n, c, s, fptr(x), fptr(dy), fptr(gamma), fptr(mean), fptr(invstd), fptr(dx),
                                      fptr(dgamma), fptr(dbeta)))
    return dx, dgamma, dbeta


def fold(weight: np.ndarray, bias: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
         var: np.ndarray, eps: float = EPS) -> Tuple[np.ndarray, np.ndarray]:
    """The conv ``(weight, bias)`` that computes ``batchnorm(conv(x))`` at inference: each output
    channel scaled by ``gamma / sqrt(var + eps)``, the bias shifted. Computed in float64 on the host
    (GPU arrays are copied there; the result is numpy)."""
    weight = _to_host(weight)
    scale, shift = _affine64(gamma, beta, mean, var, bias, eps)
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return w.astype(np.float32), shift.astype(np.float32)


def affine(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, bias: np.ndarray,
           eps: float = EPS) -> Tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)``, float32, with ``batchnorm(conv(x) + bias) = conv(x) * scale + shift`` per
    channel at inference: what a conv's epilogue applies (the same float64 arithmetic as :func:`fold`)."""
    scale, shift = _affine64(gamma, beta, mean, var, bias, eps)
    return scale.astype(np.float32), shift.astype(np.float32)


def _affine64(gamma, beta, mean, var, bias, eps: float):
    gamma, beta, mean, var, bias = (_to_host(a).astype(np.float64) for a in (gamma, beta, mean, var, bias))
    scale = gamma / np.sqrt(var + eps)
    return scale, (bias - mean) * scale + beta


def batch_variance(invstd: np.ndarray, eps: float = EPS) -> np.ndarray:
    """The biased batch variance (float64, >= 0) back from :func:`forward_train`'s ``invstd``, with
    the array's own module (numpy, or CuPy for a GPU array)."""
    xp = _module(invstd)
    v = xp.asarray(invstd).astype(xp.float64)
    return xp.maximum(1.0 / xp.square(v) - eps, 0.0)


def update_running(running_mean: np.ndarray, running_var: np.ndarray, mean: np.ndarray, invstd: np.ndarray,
                   count: int, eps: float = EPS, momentum: float = MOMENTUM) -> None:
    """Running averages after one training batch of ``count`` values per channel (the variance
    unbiased, as PyTorch keeps it), in place. numpy or GPU arrays (all four on the same device; on
    the GPU the arithmetic runs there, on CuPy's current stream)."""
    xp = _module(running_mean)
    rm, rv = xp.asarray(running_mean), xp.asarray(running_var)  # the caller's arrays (views), updated in place
    var = batch_variance(invstd, eps) * (count / max(count - 1, 1))
    rm *= 1 - momentum
    rm += momentum * xp.asarray(mean)
    rv *= 1 - momentum
    rv += (momentum * var).astype(xp.float32)


def identity_init(x_mean: np.ndarray, x_var: np.ndarray, eps: float = EPS) -> Dict[str, np.ndarray]:
    """``gamma``, ``beta`` that make the normalisation the identity on data with these channel
    statistics: a network with trained weights keeps its function when normalisation is added.
    numpy or GPU arrays (the result is on the same device)."""
    xp = _module(x_var)
    return {"weight": xp.sqrt(xp.asarray(x_var).astype(xp.float64) + eps).astype(xp.float32),
            "bias": xp.asarray(x_mean).astype(xp.float32)}


def _module(a: Any) -> Any:
    """numpy for a host array; CuPy for a GPU array (any ``__cuda_array_interface__`` array becomes a
    CuPy view with ``cupy.asarray``, so its operations run on the GPU)."""
    if not is_device_array(a):
        return np
    import cupy

    return cupy


def _to_host(a: Any) -> np.ndarray:
    if is_device_array(a):
        import cupy

        return cupy.asnumpy(cupy.asarray(a))
    return np.asarray(a)


# --- GPU arrays: the CUDA twins on the given (or default) context -------------------------------
# (arguments are checked before the context is resolved, as in layers.py)

def _dev_layout(fn: str, x: Any) -> Tuple[Tuple[int, ...], int, int, int]:
    shape = check_device_array(fn, "x", x, ndim=(3, 4))
    return shape, shape[0], shape[1], int(np.prod(shape[2:]))


def _dev_channel_vectors(fn: str, c: int, **vectors: Any) -> None:
    for name, v in vectors.items():
        check_device_array(fn, name, v, shape=(c,))


def _dev_overlap(a: Any, b: Any, nbytes: int) -> bool:
    """Do two device arrays of ``nbytes`` each share memory?"""
    pa, pb = (int(v.__cuda_array_interface__["data"][0]) for v in (a, b))
    return abs(pa - pb) < nbytes


def _dev_forward_train(x: Any, gamma: Any, beta: Any, eps: float, out: Any, mean: Any, invstd: Any,
                       context: Optional[Context]) -> Tuple[Any, Any, Any]:
    fn = "batchnorm.forward_train"
    shape, n, c, s = _dev_layout(fn, x)
    _dev_channel_vectors(fn, c, gamma=gamma, beta=beta)
    if out is not None and _dev_overlap(x, out, n * c * s * 4):
        raise ValueError(f"{fn}: out must not overlap x (the backward reads x)")
    ctx = array_context(fn, context)
    y = device_output(fn, "out", out, shape, ctx)
    mean = device_output(fn, "mean", mean, (c,), ctx)
    invstd = device_output(fn, "invstd", invstd, (c,), ctx)
    check(lib.perf_batchnorm_forward_train_ctx(ctx._ptr, n, c, s, float(eps), dptr(x), dptr(gamma), dptr(beta),
                                               dptr(y), dptr(mean), dptr(invstd)))
    return y, mean, invstd


def _dev_forward_inference(x: Any, gamma: Any, beta: Any, mean: Any, var: Any, eps: float, out: Any,
                           context: Optional[Context]) -> Any:
    fn = "batchnorm.forward_inference"
    shape, n, c, s = _dev_layout(fn, x)
    _dev_channel_vectors(fn, c, gamma=gamma, beta=beta, mean=mean, var=var)
    ctx = array_context(fn, context)
    y = device_output(fn, "out", out, shape, ctx)
    check(lib.perf_batchnorm_forward_inference_ctx(ctx._ptr, n, c, s, float(eps), dptr(x), dptr(gamma),
                                                   dptr(beta), dptr(mean), dptr(var), dptr(y)))
    return y


def _dev_backward(x: Any, dy: Any, gamma: Any, mean: Any, invstd: Any, out: Any, dgamma: Any, dbeta: Any,
                  context: Optional[Context]) -> Tuple[Any, Any, Any]:
    fn = "batchnorm.backward"
    shape, n, c, s = _dev_layout(fn, x)
    check_device_array(fn, "dy", dy, shape=shape)
    _dev_channel_vectors(fn, c, gamma=gamma, mean=mean, invstd=invstd)
    ctx = array_context(fn, context)
    dx = device_output(fn, "out", out, shape, ctx)
    dgamma = device_output(fn, "dgamma", dgamma, (c,), ctx)
    dbeta = device_output(fn, "dbeta", dbeta, (c,), ctx)
    check(lib.perf_batchnorm_backward_ctx(ctx._ptr, n, c, s, dptr(x), dptr(dy), dptr(gamma), dptr(mean),
                                          dptr(invstd), dptr(dx), dptr(dgamma), dptr(dbeta)))
    return dx, dgamma, dbeta
