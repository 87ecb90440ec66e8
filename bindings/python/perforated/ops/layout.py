"""Conversions between NCHW (the public layout) and channels-last (the CPU inference engine's).

``to_nhwc``: ``(N, C, *spatial)`` -> ``(N, prod(spatial), C)``; ``to_nchw``: ``(N, S, C)`` -> ``(N, C, S)``
(reshape the result to the spatial shape you need). One conversion at each end of a network.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .._c.arrays import check_array, fptr, output_array
from .._c.lib import lib
from .._c.errors import check


def to_nhwc(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``(N, C, H, W)`` (or ``(N, C, count)``) float32 -> channels-last ``(N, H*W, C)``."""
    fn = "to_nhwc"
    check_array(fn, "x", x, ndim=(3, 4))
    n, c = x.shape[:2]
    s = int(np.prod(x.shape[2:]))
    y = output_array(fn, "out", out, (n, s, c))
    if np.shares_memory(x, y):
        raise ValueError(f"{fn}: out must not overlap x")
    check(lib.perf_layout_nchw_to_nhwc(n, c, s, fptr(x), fptr(y)))
    return y


def to_nchw(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Channels-last ``(N, S, C)`` float32 -> ``(N, C, S)``; ``out`` may have any shape of that size
    (e.g. ``(N, C, H, W)``)."""
    fn = "to_nchw"
    check_array(fn, "x", x, ndim=3)
    n, s, c = x.shape
    if out is None:
        out = np.empty((n, c, s), dtype=np.float32)
    else:
        check_array(fn, "out", out, writable=True)
        if out.size != x.size or out.shape[:2] != (n, c):
            raise ValueError(f"{fn}: out must have shape ({n}, {c}, ...) with {x.size} values, got {out.shape}")
    if np.shares_memory(x, out):
        raise ValueError(f"{fn}: out must not overlap x")
    check(lib.perf_layout_nhwc_to_nchw(n, c, s, fptr(x), fptr(out)))
    return out
