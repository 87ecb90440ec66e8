"""Batch normalisation for training, and folding it into the conv before it.

NIN, AlexNet and VGG-16 have no batch normalisation; it is here as a training aid: a network trained
with ``python -m perforated.train --batchnorm`` normalises every conv's output (except the last
conv's) with batch statistics, which lets it train at higher rates in fewer epochs. Afterwards each
normalisation, an affine map per channel with the running statistics, is folded into its conv
(:func:`fold`): the saved weights are those of the plain network, which perforation, impact, the
greedy search and low-rank decomposition take as they are.

Functions take ``(N, C, H, W)`` or compact ``(N, C, count)`` float32 arrays (per channel over the
batch and positions) and run the C library (``perf_batchnorm_*``).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ._arrays import check_array, fptr, output_array
from ._lib import lib
from .device import host_context, is_device_array
from .errors import UnsupportedError, check

EPS = 1e-5
MOMENTUM = 0.1  # running = (1 - MOMENTUM) * running + MOMENTUM * batch statistic (PyTorch's convention)


def _layout(fn: str, x: np.ndarray) -> Tuple[int, int, int]:
    if is_device_array(x):
        raise UnsupportedError(f"{fn}: batch normalisation runs on the CPU only; got a GPU array")
    check_array(fn, "x", x, ndim=(3, 4))
    n, c = x.shape[:2]
    return n, c, int(np.prod(x.shape[2:]))


def _channel_vector(fn: str, name: str, v: np.ndarray, c: int, writable: bool = False) -> np.ndarray:
    return check_array(fn, name, v, shape=(c,), writable=writable)


def forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = EPS,
                  out: Optional[np.ndarray] = None, mean: Optional[np.ndarray] = None,
                  invstd: Optional[np.ndarray] = None, *, context=None
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, mean, invstd)``: ``y = gamma * (x - mean) * invstd + beta`` with the batch's per-channel
    mean and ``invstd = 1 / sqrt(var + eps)`` (biased variance). ``out`` must not be x."""
    fn = "batchnorm.forward_train"
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
                      eps: float = EPS, out: Optional[np.ndarray] = None, *, context=None) -> np.ndarray:
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with given statistics; ``out`` may be x."""
    fn = "batchnorm.forward_inference"
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
             dbeta: Optional[np.ndarray] = None, *, context=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of :func:`forward_train` given its input ``x`` and its ``mean`` and
    ``invstd``; ``out`` may be ``dy`` (in place)."""
    fn = "batchnorm.backward"
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
    channel scaled by ``gamma / sqrt(var + eps)``, the bias shifted. Computed in float64."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = (bias.astype(np.float64) - mean) * scale + beta
    return w.astype(np.float32), b.astype(np.float32)


def update_running(running_mean: np.ndarray, running_var: np.ndarray, mean: np.ndarray, invstd: np.ndarray,
                   count: int, eps: float = EPS, momentum: float = MOMENTUM) -> None:
    """Running averages after one training batch of ``count`` values per channel (the variance
    unbiased, as PyTorch keeps it), in place."""
    var = 1.0 / np.square(invstd.astype(np.float64)) - eps
    var = np.maximum(var, 0.0) * (count / max(count - 1, 1))
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += (momentum * var).astype(np.float32)


def identity_init(x_mean: np.ndarray, x_var: np.ndarray, eps: float = EPS) -> Dict[str, np.ndarray]:
    """``gamma``, ``beta`` that make the normalisation the identity on data with these channel
    statistics: a network with trained weights keeps its function when normalisation is added."""
    return {"weight": np.sqrt(x_var.astype(np.float64) + eps).astype(np.float32),
            "bias": x_mean.astype(np.float32)}
