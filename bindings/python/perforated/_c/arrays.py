"""Argument checks shared by the numpy-facing API, run before any C call.

Arrays are never copied silently: a wrong dtype is a ``TypeError``, a wrong shape or a
non-contiguous or read-only buffer is a ``ValueError``; every message names the function, the
argument, the expected and the actual value ("conv2d: x must be float32, got float64").
"""
from __future__ import annotations

import operator
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .lib import ffi

Shape = Sequence[Optional[int]]
IntPair = Union[int, Tuple[int, int]]


def _fmt_shape(shape: Shape) -> str:
    parts = ["*" if d is None else str(int(d)) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_array(fn: str, name: str, arr: Any, *, shape: Optional[Shape] = None,
                ndim: Optional[Union[int, Tuple[int, ...]]] = None, dtype: Any = np.float32,
                writable: bool = False) -> np.ndarray:
    """Return ``arr`` unchanged if it is a C-contiguous ndarray of ``dtype`` with the expected shape.

    ``shape`` entries may be ``None`` (any size). ``ndim`` may be an int or a tuple of allowed ranks.
    """
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(arr).__name__}")
    want = np.dtype(dtype)
    if arr.dtype != want:
        raise TypeError(f"{fn}: {name} must be {want.name}, got {arr.dtype.name}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            wanted = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{fn}: {name} must have {wanted} dimensions, got {arr.ndim} "
                             f"(shape {tuple(arr.shape)})")
    if shape is not None:
        ok = arr.ndim == len(shape) and all(e is None or int(e) == a for e, a in zip(shape, arr.shape))
        if not ok:
            raise ValueError(f"{fn}: {name} must have shape {_fmt_shape(shape)}, "
                             f"got {tuple(arr.shape)}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous (got strides {arr.strides}); "
                         f"use numpy.ascontiguousarray explicitly")
    if writable and not arr.flags.writeable:
        raise ValueError(f"{fn}: {name} must be writable")
    return arr


def output_array(fn: str, name: str, out: Optional[np.ndarray], shape: Sequence[int]) -> np.ndarray:
    """A new float32 array of ``shape``, or ``out`` after checking it (float32, shape, contiguous,
    writable)."""
    shape = tuple(int(d) for d in shape)
    if out is None:
        return np.empty(shape, dtype=np.float32)
    return check_array(fn, name, out, shape=shape, writable=True)


def to_int(fn: str, name: str, value: Any) -> int:
    """An int (numpy integers accepted; bool and float rejected)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}") from None


def to_pair(fn: str, name: str, value: Any) -> Tuple[int, int]:
    """``v`` -> ``(v, v)``; a pair of ints -> itself (height first)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair (h, w), got {tuple(value)}")
        return to_int(fn, name, value[0]), to_int(fn, name, value[1])
    v = to_int(fn, name, value)
    return v, v


def to_seed(fn: str, value: Any) -> int:
    """A seed in [0, 2**64)."""
    s = to_int(fn, "seed", value)
    if not 0 <= s < 2**64:
        raise ValueError(f"{fn}: seed must be in [0, 2**64), got {s}")
    return s


def to_rate(fn: str, value: Any) -> float:
    """A float rate (its range is checked by the C library, which names it in the message)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: rate must be a real number, got {type(value).__name__}")
    return float(value)


def to_labels(fn: str, labels: Any, batch: int) -> np.ndarray:
    """Class labels as int32 [batch]. Any integer dtype is accepted and converted explicitly (labels
    are small); values that do not fit int32 are rejected here, the class range is checked in C."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{fn}: labels must be a numpy.ndarray, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels must have an integer dtype, got {labels.dtype.name}")
    check_array(fn, "labels", labels, shape=(batch,), dtype=labels.dtype)
    if labels.dtype != np.int32:
        if labels.size and (labels.min() < -2**31 or labels.max() >= 2**31):
            raise ValueError(f"{fn}: labels must fit int32, got values in "
                             f"[{labels.min()}, {labels.max()}]")
        labels = labels.astype(np.int32)
    return labels


def fptr(arr: Optional[np.ndarray]) -> Any:
    """``float *`` to the data of a checked float32 array (``NULL`` for ``None``)."""
    if arr is None:
        return ffi.NULL
    return ffi.from_buffer("float[]", arr)


def iptr(arr: np.ndarray) -> Any:
    """``int32_t *`` to the data of a checked int32 array."""
    return ffi.from_buffer("int32_t[]", arr)


def workspace(nbytes: int) -> Tuple[np.ndarray, Any, int]:
    """A 64-byte-aligned scratch buffer: ``(owner, void_pointer, nbytes)``. Keep ``owner`` alive as
    long as the pointer is used. A zero size still gets a valid (unused) pointer."""
    nbytes = int(nbytes)
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    offset = (-raw.ctypes.data) % 64
    base = ffi.from_buffer("char[]", raw)
    return raw, ffi.cast("void *", base + offset), nbytes
