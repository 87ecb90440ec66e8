"""Explicit interpolation between compact ``[N][C][count]`` and full ``[N][C][h][w]`` tensors.

numpy arrays run on the CPU; GPU arrays (``__cuda_array_interface__``) run the CUDA twin on
``context`` (default: the default context of the current GPU), which keeps the mask's nearest map
on the device between calls.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .._c.arrays import check_array, fptr, output_array
from .._c.lib import lib
from .._c.device import (Context, array_context, check_device_array, device_output, dptr, host_context,
                     is_device_array)
from .._c.errors import check
from .masks import Mask


def _check_mask(fn: str, mask: Mask) -> Mask:
    if not isinstance(mask, Mask):
        raise TypeError(f"{fn}: mask must be a perforated.Mask, got {type(mask).__name__}")
    return mask


def interpolate(compact: np.ndarray, mask: Mask, out: Optional[np.ndarray] = None, *,
                context: Optional[Context] = None) -> np.ndarray:
    """Nearest-neighbour fill: ``y[n, c].flat[p] = compact[n, c, mask.nearest[p]]``.

    compact: float32 ``(N, C, count)``. Returns (or fills ``out``) float32 ``(N, C, h, w)``.
    """
    fn = "interpolate"
    _check_mask(fn, mask)
    if is_device_array(compact):  # GPU arrays: the CUDA twin
        n, c, _ = check_device_array(fn, "compact", compact, ndim=3)
        check_device_array(fn, "compact", compact, shape=(n, c, mask.count))
        ctx = array_context(fn, context)  # after the checks: they need no context
        y = device_output(fn, "out", out, (n, c) + tuple(mask.shape), ctx)
        if n * c:
            check(lib.perf_interp_forward_ctx(ctx._ptr, mask._ptr, n * c, dptr(compact), dptr(y)))
        return y
    host_context(fn, context)
    check_array(fn, "compact", compact, ndim=3)
    n, c = compact.shape[:2]
    check_array(fn, "compact", compact, shape=(n, c, mask.count))
    h, w = mask.shape
    y = output_array(fn, "out", out, (n, c, h, w))
    if y.size:
        check(lib.perf_interp_forward(mask._ptr, n * c, fptr(compact), fptr(y)))
    return y


def interpolate_nhwc(compact: np.ndarray, mask: Mask, out: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`interpolate` in channels-last layout: compact ``(N, count, C)`` -> ``(N, h*w, C)`` (CPU)."""
    fn = "interpolate_nhwc"
    _check_mask(fn, mask)
    check_array(fn, "compact", compact, ndim=3)
    n, _, c = compact.shape
    check_array(fn, "compact", compact, shape=(n, mask.count, c))
    h, w = mask.shape
    y = output_array(fn, "out", out, (n, h * w, c))
    check(lib.perf_interp_forward_nhwc(mask._ptr, n, c, fptr(compact), fptr(y)))
    return y


def interpolate_backward(dy: np.ndarray, mask: Mask, out: Optional[np.ndarray] = None, *,
                         context: Optional[Context] = None) -> np.ndarray:
    """Adjoint of :func:`interpolate`: ``dc[n, c, k] = sum of dy[n, c].flat[p] over nearest[p] == k``.

    dy: float32 ``(N, C, h, w)``. Returns (or fills ``out``) float32 ``(N, C, count)``.
    """
    fn = "interpolate_backward"
    _check_mask(fn, mask)
    h, w = mask.shape
    if is_device_array(dy):
        n, c = check_device_array(fn, "dy", dy, ndim=4)[:2]
        check_device_array(fn, "dy", dy, shape=(n, c, h, w))
        ctx = array_context(fn, context)
        dc = device_output(fn, "out", out, (n, c, mask.count), ctx)
        if n * c:
            check(lib.perf_interp_backward_ctx(ctx._ptr, mask._ptr, n * c, dptr(dy), dptr(dc)))
        return dc
    host_context(fn, context)
    check_array(fn, "dy", dy, ndim=4)
    n, c = dy.shape[:2]
    check_array(fn, "dy", dy, shape=(n, c, h, w))
    dc = output_array(fn, "out", out, (n, c, mask.count))
    if dc.size:
        check(lib.perf_interp_backward(mask._ptr, n * c, fptr(dy), fptr(dc)))
    return dc
