"""Perforation masks: which output positions of a layer are computed (SPEC section 4).

A :class:`Mask` owns a C ``perf_mask``. Build one with :func:`make_mask` (a generator: "uniform",
"grid", "pooling", "impact") or :meth:`Mask.from_indices` (explicit positions).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .._c.arrays import check_array, iptr, to_int, to_pair, to_rate, to_seed
from .._c.lib import ffi, lib
from .._c.errors import check

KINDS = ("uniform", "grid", "pooling", "impact")


def _size(fn: str, size: Any) -> Tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{fn}: size must be a pair (h, w), got {size!r}")
    return to_int(fn, "size[0]", size[0]), to_int(fn, "size[1]", size[1])


class Mask:
    """An immutable mask over an ``h x w`` map: ``count`` computed positions and the nearest map.

    Attributes (read-only):
      ``shape``    (h, w) of the map (the output size of the perforated layer).
      ``count``    number of computed positions.
      ``indices``  int32 ``[count]``: row-major linear positions ``row*w + col``, strictly increasing.
      ``nearest``  int32 ``[h*w]`` (flat, row-major): for every position ``p`` the index ``k`` into
                   ``indices`` of the computed position it copies; ``nearest[indices[k]] == k``.
                   Use ``nearest.reshape(shape)`` for a 2-D view.
      ``rate``     achieved perforation rate ``1 - count/(h*w)``.
      ``seed``     the seed that broke ties (and drew random positions).
      ``kind``     how it was made ("uniform", "grid", "pooling", "impact" or "indices").
    ``indices`` and ``nearest`` are copies of the C arrays made once, marked read-only.
    """

    __slots__ = ("_ptr", "_shape", "_count", "_seed", "_indices", "_nearest", "kind", "__weakref__")

    def __init__(self, ptr: Any, kind: str = "indices") -> None:
        """Wrap a C ``perf_mask *`` (takes ownership). Prefer :func:`make_mask` / :meth:`from_indices`."""
        if ptr == ffi.NULL:
            raise ValueError("Mask: NULL perf_mask pointer")
        self._ptr = ffi.gc(ptr, lib.perf_mask_destroy)
        h, w = int(lib.perf_mask_height(ptr)), int(lib.perf_mask_width(ptr))
        self._shape = (h, w)
        self._count = int(lib.perf_mask_count(ptr))
        self._seed = int(lib.perf_mask_seed(ptr))
        self._indices = np.frombuffer(ffi.buffer(lib.perf_mask_indices(ptr), 4 * self._count),
                                      dtype=np.int32).copy()
        self._nearest = np.frombuffer(ffi.buffer(lib.perf_mask_nearest(ptr), 4 * h * w),
                                      dtype=np.int32).copy()
        self._indices.flags.writeable = False
        self._nearest.flags.writeable = False
        self.kind = kind

    @classmethod
    def from_indices(cls, size: Tuple[int, int], indices: Any, seed: int = 0) -> "Mask":
        """A mask computing the given positions of an ``(h, w)`` map.

        ``indices``: 1-D integer array (or sequence) of row-major positions, strictly increasing,
        in ``[0, h*w)`` (checked by the C library). Converted to int32 explicitly.
        """
        fn = "Mask.from_indices"
        h, w = _size(fn, size)
        seed = to_seed(fn, seed)
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{fn}: indices must have an integer dtype, got {idx.dtype.name}")
        if idx.ndim != 1:
            raise ValueError(f"{fn}: indices must have 1 dimension, got shape {idx.shape}")
        if idx.size and (idx.min() < -2**31 or idx.max() >= 2**31):
            raise ValueError(f"{fn}: indices must fit int32, got values in [{idx.min()}, {idx.max()}]")
        idx = np.ascontiguousarray(idx, dtype=np.int32)
        out = ffi.new("perf_mask **")
        ptr = iptr(idx) if idx.size else ffi.NULL
        check(lib.perf_mask_create(h, w, int(idx.size), ptr, seed, out))
        return cls(out[0], "indices")

    @property
    def shape(self) -> Tuple[int, int]:
        return self._shape

    @property
    def count(self) -> int:
        return self._count

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def indices(self) -> np.ndarray:
        return self._indices

    @property
    def nearest(self) -> np.ndarray:
        return self._nearest

    @property
    def rate(self) -> float:
        h, w = self._shape
        return 1.0 - self._count / (h * w)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        h, w = self._shape
        return (f"Mask(kind={self.kind!r}, shape=({h}, {w}), count={self._count}, "
                f"rate={self.rate:.4f}, seed={self._seed})")


def grid_shape(mask: Mask) -> Tuple[int, int]:
    """``(rows, cols)`` of a mask whose positions are a product set (a Grid mask): its compact
    tensor, in row-major order, is then a dense ``rows x cols`` map. Raises ``ValueError`` for
    any other mask (a fractional-stride conv needs one, see :class:`perforated.graph.model.Model`)."""
    h, w = mask.shape
    rows, cols = np.unique(mask.indices // w), np.unique(mask.indices % w)
    if rows.size * cols.size != mask.count:
        raise ValueError(f"grid_shape: the mask's {mask.count} positions span {rows.size} rows and "
                         f"{cols.size} columns of its {h}x{w} map, expected a product set of "
                         f"{rows.size * cols.size} (a grid mask; got kind {mask.kind!r})")
    return int(rows.size), int(cols.size)


def count_for_rate(size: Tuple[int, int], rate: float) -> int:
    """Positions a rate-``rate`` mask keeps: ``max(1, floor((1 - rate) * h * w))``, the product taken as
    exact when within rounding of an integer (rate 1 - 1/k keeps h*w/k); Grid keeps fewer."""
    fn = "count_for_rate"
    h, w = _size(fn, size)
    out = ffi.new("int *")
    check(lib.perf_mask_count_for_rate(h, w, to_rate(fn, rate), out))
    return int(out[0])


def _pool_geometry(fn: str, pool: Any) -> Tuple[int, int, int, int, int, int]:
    if not isinstance(pool, (tuple, list)) or len(pool) not in (2, 3):
        raise ValueError(f"{fn}: pool must be (kernel, stride) or (kernel, stride, pad) of the next "
                         f"pooling layer, got {pool!r}")
    kh, kw = to_pair(fn, "pool kernel", pool[0])
    sh, sw = to_pair(fn, "pool stride", pool[1])
    ph, pw = to_pair(fn, "pool pad", pool[2]) if len(pool) == 3 else (0, 0)
    return kh, kw, sh, sw, ph, pw


def make_mask(kind: str, size: Tuple[int, int], rate: float, seed: int = 0, *,
              scores: Optional[np.ndarray] = None,
              pool: Optional[Sequence[Any]] = None) -> Mask:
    """Generate a perforation mask over an ``(h, w)`` output map.

    kind:
      "uniform"  ``count`` positions at random without replacement.
      "grid"     pseudorandom integer sequences (a product set of rows x cols; keeps fewer positions).
      "pooling"  positions covered by the most windows of the NEXT pooling layer;
                 needs ``pool=(kernel, stride[, pad])`` (ints or (h, w) pairs).
      "impact"   the positions with the largest ``scores`` (any score map); needs ``scores``, an
                 ``(h, w)`` float32 or float64 array (float64 is converted to float32 explicitly: the
                 scores only rank positions). Scores must be finite.
    rate: the fraction of positions NOT computed, in [0, 1). seed: draws positions and breaks ties.
    """
    fn = "make_mask"
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"{fn}: unknown mask kind {kind!r}; expected one of {', '.join(KINDS)}")
    h, w = _size(fn, size)
    rate = to_rate(fn, rate)
    seed = to_seed(fn, seed)
    if kind != "pooling" and pool is not None:
        raise ValueError(f"{fn}: pool is only used by kind 'pooling', got kind {kind!r}")
    if kind != "impact" and scores is not None:
        raise ValueError(f"{fn}: scores are only used by kind 'impact', got kind {kind!r}")
    out = ffi.new("perf_mask **")
    if kind == "uniform":
        check(lib.perf_mask_uniform(h, w, rate, seed, out))
    elif kind == "grid":
        check(lib.perf_mask_grid(h, w, rate, seed, out))
    elif kind == "pooling":
        if pool is None:
            raise ValueError(f"{fn}: kind 'pooling' needs pool=(kernel, stride[, pad]) of the next "
                             f"pooling layer")
        kh, kw, sh, sw, ph, pw = _pool_geometry(fn, pool)
        check(lib.perf_mask_pooling(h, w, rate, kh, kw, sh, sw, ph, pw, seed, out))
    else:
        if scores is None:
            raise ValueError(f"{fn}: kind 'impact' needs scores, an (h, w) float array")
        if isinstance(scores, np.ndarray) and scores.dtype == np.float64:
            scores = check_array(fn, "scores", scores, shape=(h, w), dtype=np.float64)
            scores = scores.astype(np.float32)
        scores = check_array(fn, "scores", scores, shape=(h, w))
        check(lib.perf_mask_from_scores(h, w, rate, ffi.from_buffer("float[]", scores), seed, out))
    return Mask(out[0], kind)
