"""Position-wise and dense layers: ReLU, LRN, bias, dropout, fully connected, softmax cross-entropy.

Position-wise layers accept full ``(N, C, H, W)`` and compact ``(N, C, count)`` tensors alike (a
compact tensor is just a smaller spatial extent), so they run after a perforated conv unchanged.

Every function also accepts GPU arrays (``__cuda_array_interface__``, e.g. CuPy) for all its array
arguments; it then runs the CUDA twin on ``context`` (a CUDA :class:`perforated.Context`; by default
the default context of the current GPU, see :mod:`perforated._c.device`), and allocates outputs with
CuPy when ``out`` is not given. With numpy arrays, ``context`` must be None or a CPU context.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .._c.arrays import check_array, fptr, iptr, output_array, to_int, to_labels, to_seed
from .._c.lib import ffi, lib
from .._c.device import (Context, array_context, check_device_array, device_output, dptr, host_context,
                     is_device_array)
from .._c.errors import check


def _spatial_layout(fn: str, name: str, x: np.ndarray) -> Tuple[int, int, int]:
    """(batch, channels, spatial) of an (N, C, H, W) or (N, C, count) array."""
    check_array(fn, name, x, ndim=(3, 4))
    n, c = x.shape[:2]
    return n, c, int(np.prod(x.shape[2:]))


# --- ReLU ----------------------------------------------------------------------------------------

def relu(x: np.ndarray, out: Optional[np.ndarray] = None, *,
         context: Optional[Context] = None) -> np.ndarray:
    """``max(x, 0)``, any shape; ``out`` may be ``x`` (in place)."""
    fn = "relu"
    if is_device_array(x):
        return _dev_relu(x, out, context)
    host_context(fn, context)
    check_array(fn, "x", x)
    y = output_array(fn, "out", out, x.shape)
    if x.size:
        check(lib.perf_relu_forward(x.size, fptr(x), fptr(y)))
    return y


def relu_backward(y: np.ndarray, dy: np.ndarray, out: Optional[np.ndarray] = None, *,
                  context: Optional[Context] = None) -> np.ndarray:
    """``dy`` where the forward output ``y > 0``, else 0; ``out`` may be ``dy``."""
    fn = "relu_backward"
    if is_device_array(y):
        return _dev_relu_backward(y, dy, out, context)
    host_context(fn, context)
    check_array(fn, "y", y)
    check_array(fn, "dy", dy, shape=y.shape)
    dx = output_array(fn, "out", out, y.shape)
    if y.size:
        check(lib.perf_relu_backward(y.size, fptr(y), fptr(dy), fptr(dx)))
    return dx


# --- LRN -----------------------------------------------------------------------------------------

def lrn(x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
        out: Optional[np.ndarray] = None, *, context: Optional[Context] = None) -> np.ndarray:
    """Local response normalisation across channels (Caffe):
    ``y = x * (k + alpha/size * sum of x^2 over the size channels around c) ** -beta``.

    x: ``(N, C, H, W)`` or compact ``(N, C, count)``; size odd (checked in C). ``out`` must not be x.
    """
    fn = "lrn"
    if is_device_array(x):
        return _dev_lrn(x, size, alpha, beta, k, out, context)
    host_context(fn, context)
    n, c, s = _spatial_layout(fn, "x", x)
    y = output_array(fn, "out", out, x.shape)
    if out is not None and np.shares_memory(x, y):
        raise ValueError(f"{fn}: out must not overlap x")
    check(lib.perf_lrn_forward(n, c, s, to_int(fn, "size", size), float(alpha), float(beta),
                               float(k), fptr(x), fptr(y)))
    return y


def lrn_nhwc(x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
             out: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`lrn` in channels-last layout: x ``(N, positions, C)`` (CPU). ``out`` must not be x."""
    fn = "lrn_nhwc"
    check_array(fn, "x", x, ndim=3)
    y = output_array(fn, "out", out, x.shape)
    if out is not None and np.shares_memory(x, y):
        raise ValueError(f"{fn}: out must not overlap x")
    n, s, c = x.shape
    check(lib.perf_lrn_forward_nhwc(n * s, c, to_int(fn, "size", size), float(alpha), float(beta), float(k),
                                    fptr(x), fptr(y)))
    return y


def lrn_backward(x: np.ndarray, y: np.ndarray, dy: np.ndarray, size: int = 5, alpha: float = 1e-4,
                 beta: float = 0.75, k: float = 1.0,
                 out: Optional[np.ndarray] = None, *, context: Optional[Context] = None) -> np.ndarray:
    """Gradient of :func:`lrn` given its input ``x``, output ``y`` and ``dy``."""
    fn = "lrn_backward"
    if is_device_array(x):
        return _dev_lrn_backward(x, y, dy, size, alpha, beta, k, out, context)
    host_context(fn, context)
    n, c, s = _spatial_layout(fn, "x", x)
    check_array(fn, "y", y, shape=x.shape)
    check_array(fn, "dy", dy, shape=x.shape)
    dx = output_array(fn, "out", out, x.shape)
    check(lib.perf_lrn_backward(n, c, s, to_int(fn, "size", size), float(alpha), float(beta),
                                float(k), fptr(x), fptr(y), fptr(dy), fptr(dx)))
    return dx


# --- bias ----------------------------------------------------------------------------------------

def bias_add(x: np.ndarray, bias: np.ndarray, out: Optional[np.ndarray] = None, *,
             context: Optional[Context] = None) -> np.ndarray:
    """``x + bias[c]`` per channel on ``(N, C, H, W)`` / ``(N, C, count)``. Pass ``out=x`` to add in
    place; otherwise x is copied into a new array first."""
    fn = "bias_add"
    if is_device_array(x):
        return _dev_bias_add(x, bias, out, context)
    host_context(fn, context)
    n, c, s = _spatial_layout(fn, "x", x)
    check_array(fn, "bias", bias, shape=(c,))
    y = output_array(fn, "out", out, x.shape)
    if y is not x:
        np.copyto(y, x)
    check(lib.perf_bias_forward(n, c, s, fptr(bias), fptr(y)))
    return y


def bias_backward(dy: np.ndarray, out: Optional[np.ndarray] = None, *,
                  context: Optional[Context] = None) -> np.ndarray:
    """``dbias[c] = sum of dy over batch and positions``."""
    fn = "bias_backward"
    if is_device_array(dy):
        return _dev_bias_backward(dy, out, context)
    host_context(fn, context)
    n, c, s = _spatial_layout(fn, "dy", dy)
    db = output_array(fn, "out", out, (c,))
    check(lib.perf_bias_backward(n, c, s, fptr(dy), fptr(db)))
    return db


# --- dropout -------------------------------------------------------------------------------------

def dropout(x: np.ndarray, ratio: float, seed: int, out: Optional[np.ndarray] = None, *,
            context: Optional[Context] = None) -> np.ndarray:
    """Inverted dropout: ``x * keep / (1 - ratio)``, keep drawn from ``(seed, element index)`` so
    :func:`dropout_backward` with the same seed regenerates it. ratio in [0, 1) (checked in C)."""
    fn = "dropout"
    if is_device_array(x):
        return _dev_dropout(fn, x, ratio, seed, out, True, context)
    host_context(fn, context)
    check_array(fn, "x", x)
    y = output_array(fn, "out", out, x.shape)
    check(lib.perf_dropout_forward(x.size, float(ratio), to_seed(fn, seed), fptr(x), fptr(y)))
    return y


def dropout_backward(dy: np.ndarray, ratio: float, seed: int,
                     out: Optional[np.ndarray] = None, *, context: Optional[Context] = None) -> np.ndarray:
    """Gradient of :func:`dropout` with the same ratio and seed."""
    fn = "dropout_backward"
    if is_device_array(dy):
        return _dev_dropout(fn, dy, ratio, seed, out, False, context)
    host_context(fn, context)
    check_array(fn, "dy", dy)
    dx = output_array(fn, "out", out, dy.shape)
    check(lib.perf_dropout_backward(dy.size, float(ratio), to_seed(fn, seed), fptr(dy), fptr(dx)))
    return dx


# --- fully connected -----------------------------------------------------------------------------

def linear(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None,
           out: Optional[np.ndarray] = None, *, context: Optional[Context] = None) -> np.ndarray:
    """``x @ weight.T + bias``; x ``(N, in)``, weight ``(out, in)``, bias ``(out,)`` or None."""
    fn = "linear"
    if is_device_array(x):
        return _dev_linear(x, weight, bias, out, context)
    host_context(fn, context)
    check_array(fn, "x", x, ndim=2)
    check_array(fn, "weight", weight, ndim=2)
    n, fin = x.shape
    fout = weight.shape[0]
    check_array(fn, "weight", weight, shape=(fout, fin))
    if bias is not None:
        check_array(fn, "bias", bias, shape=(fout,))
    y = output_array(fn, "out", out, (n, fout))
    check(lib.perf_fc_forward(n, fin, fout, fptr(x), fptr(weight), fptr(bias), fptr(y)))
    return y


def linear_backward(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, *,
                    context: Optional[Context] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dweight, dbias)`` of :func:`linear`."""
    fn = "linear_backward"
    if is_device_array(x):
        return _dev_linear_backward(x, weight, dy, context)
    host_context(fn, context)
    check_array(fn, "x", x, ndim=2)
    check_array(fn, "weight", weight, ndim=2)
    n, fin = x.shape
    fout = weight.shape[0]
    check_array(fn, "weight", weight, shape=(fout, fin))
    check_array(fn, "dy", dy, shape=(n, fout))
    dx = np.empty((n, fin), np.float32)
    dw = np.empty((fout, fin), np.float32)
    db = np.empty((fout,), np.float32)
    check(lib.perf_fc_backward(n, fin, fout, fptr(x), fptr(weight), fptr(dy), fptr(dx), fptr(dw),
                               fptr(db)))
    return dx, dw, db


# --- softmax cross-entropy -----------------------------------------------------------------------

def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, *,
                          context: Optional[Context] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(prob, loss)``: softmax of ``logits (N, classes)`` and ``loss[n] = -log prob[n, label]``.

    labels: ``(N,)`` of any integer dtype (converted to int32 explicitly), values in [0, classes)
    (checked in C).
    """
    fn = "softmax_cross_entropy"
    if is_device_array(logits):
        return _dev_softmax(logits, labels, context)
    host_context(fn, context)
    check_array(fn, "logits", logits, ndim=2)
    n, classes = logits.shape
    lab = to_labels(fn, labels, n)
    prob = np.empty((n, classes), np.float32)
    loss = np.empty((n,), np.float32)
    check(lib.perf_softmax_xent_forward(n, classes, fptr(logits), iptr(lab), fptr(prob), fptr(loss)))
    return prob, loss


def softmax_cross_entropy_backward(prob: np.ndarray, labels: np.ndarray, scale: float = 1.0,
                                   out: Optional[np.ndarray] = None, *,
                                   context: Optional[Context] = None) -> np.ndarray:
    """``dlogits = (prob - onehot(labels)) * scale`` (``scale = 1/N`` for a mean loss)."""
    fn = "softmax_cross_entropy_backward"
    if is_device_array(prob):
        return _dev_softmax_backward(prob, labels, scale, out, context)
    host_context(fn, context)
    check_array(fn, "prob", prob, ndim=2)
    n, classes = prob.shape
    lab = to_labels(fn, labels, n)
    d = output_array(fn, "out", out, prob.shape)
    check(lib.perf_softmax_xent_backward(n, classes, fptr(prob), iptr(lab), float(scale), fptr(d)))
    return d


# --- GPU arrays: the CUDA twins on the given (or default) context -------------------------------
# (arguments are checked before the context is resolved: a wrong array fails without a GPU)

def _dev_layout(fn: str, name: str, x: Any) -> Tuple[Tuple[int, ...], int, int, int]:
    shape = check_device_array(fn, name, x, ndim=(3, 4))
    return shape, shape[0], shape[1], int(np.prod(shape[2:]))


def _dev_relu(x: Any, out: Any, context: Optional[Context]) -> Any:
    fn = "relu"
    shape = check_device_array(fn, "x", x)
    ctx = array_context(fn, context)
    y = device_output(fn, "out", out, shape, ctx)
    if int(np.prod(shape)):
        check(lib.perf_relu_forward_ctx(ctx._ptr, int(np.prod(shape)), dptr(x), dptr(y)))
    return y


def _dev_relu_backward(y: Any, dy: Any, out: Any, context: Optional[Context]) -> Any:
    fn = "relu_backward"
    shape = check_device_array(fn, "y", y)
    check_device_array(fn, "dy", dy, shape=shape)
    ctx = array_context(fn, context)
    dx = device_output(fn, "out", out, shape, ctx)
    if int(np.prod(shape)):
        check(lib.perf_relu_backward_ctx(ctx._ptr, int(np.prod(shape)), dptr(y), dptr(dy), dptr(dx)))
    return dx


def _dev_lrn(x: Any, size: int, alpha: float, beta: float, k: float, out: Any,
             context: Optional[Context]) -> Any:
    fn = "lrn"
    shape, n, c, s = _dev_layout(fn, "x", x)
    ctx = array_context(fn, context)
    y = device_output(fn, "out", out, shape, ctx)
    if dptr(y) == dptr(x):
        raise ValueError(f"{fn}: out must not overlap x")
    check(lib.perf_lrn_forward_ctx(ctx._ptr, n, c, s, to_int(fn, "size", size), float(alpha),
                                   float(beta), float(k), dptr(x), dptr(y)))
    return y


def _dev_lrn_backward(x: Any, y: Any, dy: Any, size: int, alpha: float, beta: float, k: float,
                      out: Any, context: Optional[Context]) -> Any:
    fn = "lrn_backward"
    shape, n, c, s = _dev_layout(fn, "x", x)
    check_device_array(fn, "y", y, shape=shape)
    check_device_array(fn, "dy", dy, shape=shape)
    ctx = array_context(fn, context)
    dx = device_output(fn, "out", out, shape, ctx)
    check(lib.perf_lrn_backward_ctx(ctx._ptr, n, c, s, to_int(fn, "size", size), float(alpha),
                                    float(beta), float(k), dptr(x), dptr(y), dptr(dy), dptr(dx)))
    return dx


def _dev_bias_add(x: Any, bias: Any, out: Any, context: Optional[Context]) -> Any:
    fn = "bias_add"
    shape, n, c, s = _dev_layout(fn, "x", x)
    check_device_array(fn, "bias", bias, shape=(c,))
    ctx = array_context(fn, context)
    y = device_output(fn, "out", out, shape, ctx)
    if dptr(y) != dptr(x):  # copy x into y on the context's stream
        check(lib.perf_memcpy_device_to_device(ctx._ptr, ffi.cast("void *", dptr(y)),
                                               ffi.cast("void *", dptr(x)), n * c * s * 4))
    check(lib.perf_bias_forward_ctx(ctx._ptr, n, c, s, dptr(bias), dptr(y)))
    return y


def _dev_bias_backward(dy: Any, out: Any, context: Optional[Context]) -> Any:
    fn = "bias_backward"
    _, n, c, s = _dev_layout(fn, "dy", dy)
    ctx = array_context(fn, context)
    db = device_output(fn, "out", out, (c,), ctx)
    check(lib.perf_bias_backward_ctx(ctx._ptr, n, c, s, dptr(dy), dptr(db)))
    return db


def _dev_dropout(fn: str, x: Any, ratio: float, seed: int, out: Any, forward: bool,
                 context: Optional[Context]) -> Any:
    shape = check_device_array(fn, "x" if forward else "dy", x)
    ctx = array_context(fn, context)
    y = device_output(fn, "out", out, shape, ctx)
    f = lib.perf_dropout_forward_ctx if forward else lib.perf_dropout_backward_ctx
    check(f(ctx._ptr, int(np.prod(shape)), float(ratio), to_seed(fn, seed), dptr(x), dptr(y)))
    return y


def _dev_linear(x: Any, weight: Any, bias: Any, out: Any, context: Optional[Context]) -> Any:
    fn = "linear"
    n, fin = check_device_array(fn, "x", x, ndim=2)
    fout = check_device_array(fn, "weight", weight, ndim=2)[0]
    check_device_array(fn, "weight", weight, shape=(fout, fin))
    if bias is not None:
        check_device_array(fn, "bias", bias, shape=(fout,))
    ctx = array_context(fn, context)
    y = device_output(fn, "out", out, (n, fout), ctx)
    check(lib.perf_fc_forward_ctx(ctx._ptr, n, fin, fout, dptr(x), dptr(weight), dptr(bias), dptr(y)))
    return y


def _dev_linear_backward(x: Any, weight: Any, dy: Any, context: Optional[Context]) -> Tuple[Any, Any, Any]:
    fn = "linear_backward"
    n, fin = check_device_array(fn, "x", x, ndim=2)
    fout = check_device_array(fn, "weight", weight, ndim=2)[0]
    check_device_array(fn, "weight", weight, shape=(fout, fin))
    check_device_array(fn, "dy", dy, shape=(n, fout))
    ctx = array_context(fn, context)
    dx = device_output(fn, "dx", None, (n, fin), ctx)
    dw = device_output(fn, "dweight", None, (fout, fin), ctx)
    db = device_output(fn, "dbias", None, (fout,), ctx)
    check(lib.perf_fc_backward_ctx(ctx._ptr, n, fin, fout, dptr(x), dptr(weight), dptr(dy), dptr(dx),
                                   dptr(dw), dptr(db)))
    return dx, dw, db


def _dev_labels(fn: str, labels: Any, n: int) -> Any:
    check_device_array(fn, "labels", labels, shape=(n,), dtype=np.int32)
    return dptr(labels, "int32_t *")


def _dev_softmax(logits: Any, labels: Any, context: Optional[Context]) -> Tuple[Any, Any]:
    fn = "softmax_cross_entropy"
    n, classes = check_device_array(fn, "logits", logits, ndim=2)
    lab = _dev_labels(fn, labels, n)
    ctx = array_context(fn, context)
    prob = device_output(fn, "prob", None, (n, classes), ctx)
    loss = device_output(fn, "loss", None, (n,), ctx)
    check(lib.perf_softmax_xent_forward_ctx(ctx._ptr, n, classes, dptr(logits), lab, dptr(prob),
                                            dptr(loss)))
    return prob, loss


def _dev_softmax_backward(prob: Any, labels: Any, scale: float, out: Any,
                          context: Optional[Context]) -> Any:
    fn = "softmax_cross_entropy_backward"
    n, classes = check_device_array(fn, "prob", prob, ndim=2)
    lab = _dev_labels(fn, labels, n)
    ctx = array_context(fn, context)
    d = device_output(fn, "out", out, (n, classes), ctx)
    check(lib.perf_softmax_xent_backward_ctx(ctx._ptr, n, classes, dptr(prob), lab, float(scale),
                                             dptr(d)))
    return d
