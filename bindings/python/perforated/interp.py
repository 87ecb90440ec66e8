"""Explicit interpolation between compact ``[N][C][count]`` and full ``[N][C][h][w]`` tensors."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ._arrays import check_array, fptr, output_array
from ._lib import lib
from .device import check_device_array, default_context, device_output, dptr, is_device_array
from .errors import check
from .masks import Mask


def _check_mask(fn: str, mask: Mask) -> Mask:
    if not isinstance(mask, Mask):
        raise TypeError(f"{fn}: mask must be a perforated.Mask, got {type(mask).__name__}")
    return mask


def interpolate(compact: np.ndarray, mask: Mask, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Nearest-neighbour fill: ``y[n, c].flat[p] = compact[n, c, mask.nearest[p]]``.

    compact: float32 ``(N, C, count)``. Returns (or fills ``out``) float32 ``(N, C, h, w)``.
    """
    fn = "interpolate"
    _check_mask(fn, mask)
    if is_device_array(compact):  # GPU arrays: the CUDA twin on the default context
        n, c, _ = check_device_array(fn, "compact", compact, ndim=3)
        check_device_array(fn, "compact", compact, shape=(n, c, mask.count))
        y = device_output(fn, "out", out, (n, c) + tuple(mask.shape))
        if n * c:
            check(lib.perf_interp_forward_ctx(default_context()._ptr, mask._ptr, n * c, dptr(compact),
                                              dptr(y)))
        return y
    check_array(fn, "compact", compact, ndim=3)
    n, c = compact.shape[:2]
    check_array(fn, "compact", compact, shape=(n, c, mask.count))
    h, w = mask.shape
    y = output_array(fn, "out", out, (n, c, h, w))
    if y.size:
        check(lib.perf_interp_forward(mask._ptr, n * c, fptr(compact), fptr(y)))
    return y


def interpolate_backward(dy: np.ndarray, mask: Mask, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Adjoint of :func:`interpolate`: ``dc[n, c, k] = sum of dy[n, c].flat[p] over nearest[p] == k``.

    dy: float32 ``(N, C, h, w)``. Returns (or fills ``out``) float32 ``(N, C, count)``.
    """
    fn = "interpolate_backward"
    _check_mask(fn, mask)
    h, w = mask.shape
    if is_device_array(dy):
        n, c = check_device_array(fn, "dy", dy, ndim=4)[:2]
        check_device_array(fn, "dy", dy, shape=(n, c, h, w))
        dc = device_output(fn, "out", out, (n, c, mask.count))
        if n * c:
            check(lib.perf_interp_backward_ctx(default_context()._ptr, mask._ptr, n * c, dptr(dy),
                                               dptr(dc)))
        return dc
    check_array(fn, "dy", dy, ndim=4)
    n, c = dy.shape[:2]
    check_array(fn, "dy", dy, shape=(n, c, h, w))
    dc = output_array(fn, "out", out, (n, c, mask.count))
    if dc.size:
        check(lib.perf_interp_backward(mask._ptr, n * c, fptr(dy), fptr(dc)))
    return dc
