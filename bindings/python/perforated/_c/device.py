"""Devices: CUDA contexts and GPU arrays for the CUDA backend of libperforated.

``cuda_available()`` says whether this build has the CUDA backend and a GPU is visible. A
:class:`Context` owns a CUDA stream and a cuBLAS handle; plans take ``device="cuda"`` (the default
context of the current device) or ``context=``. GPU arrays are any object with a
``__cuda_array_interface__`` (CuPy, PyTorch, Numba...): float32 (int32 for labels), C-contiguous,
of the expected shape; they are never copied. Outputs are allocated with CuPy when ``out`` is not
given, so CuPy (the ``cuda`` extra: ``pip install perforated[cuda]``) is needed only then.

Ordering: the context's stream is a *blocking* stream, so its work is ordered with the legacy
default stream that CuPy uses unless told otherwise. With other streams, call
``Context.synchronize()`` (or synchronise your stream) between producers and consumers.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .arrays import Shape, _fmt_shape
from .lib import ffi, lib
from .errors import check

_DEVICES = {"cpu": 0, "cuda": 1}


def cuda_device_count() -> int:
    """Number of visible CUDA devices; 0 in a CPU-only build or without a GPU / driver."""
    n = ffi.new("int *")
    check(lib.perf_cuda_device_count(n))
    return int(n[0])


def cuda_available() -> bool:
    """True if this build has the CUDA backend and at least one GPU is visible."""
    return cuda_device_count() > 0


class Context:
    """Where work runs: ``Context("cuda", index)`` (a stream + cuBLAS handle on GPU ``index``) or
    ``Context("cpu")``. Raises ``UnsupportedError`` for CUDA in a CPU-only build."""

    def __init__(self, device: str = "cuda", index: int = 0) -> None:
        if device not in _DEVICES:
            raise ValueError(f"Context: device must be 'cpu' or 'cuda', got {device!r}")
        out = ffi.new("perf_context **")
        check(lib.perf_context_create(_DEVICES[device], int(index), out))
        self._ptr = ffi.gc(out[0], lib.perf_context_destroy)
        self.device = device
        self.index = int(index) if device == "cuda" else 0

    @property
    def is_cuda(self) -> bool:
        return self.device == "cuda"

    def synchronize(self) -> None:
        """Wait for every call enqueued on this context (raises ``DeviceError`` if one failed)."""
        check(lib.perf_context_synchronize(self._ptr))

    def __repr__(self) -> str:
        return f"Context({self.device!r}, {self.index})"


_DEFAULT: Dict[int, Context] = {}


def _current_device() -> int:
    try:
        import cupy

        return int(cupy.cuda.Device().id)
    except Exception:  # no CuPy: device 0
        return 0


def default_context(index: Optional[int] = None) -> Context:
    """The shared CUDA context of GPU ``index`` (CuPy's current device, else 0), created once."""
    index = _current_device() if index is None else int(index)
    if index not in _DEFAULT:
        _DEFAULT[index] = Context("cuda", index)
    return _DEFAULT[index]


def resolve(fn: str, device: str, context: Optional[Context]) -> Optional[Context]:
    """The CUDA context a plan runs on, or None for the CPU."""
    if context is not None:
        if not isinstance(context, Context):
            raise TypeError(f"{fn}: context must be a perforated.Context or None, "
                            f"got {type(context).__name__}")
        return context if context.is_cuda else None
    if device == "cpu":
        return None
    if device == "cuda":
        return default_context()
    raise ValueError(f"{fn}: device must be 'cpu' or 'cuda', got {device!r}")


def array_context(fn: str, context: Optional[Context]) -> Context:
    """The CUDA context that functions given GPU arrays run on: ``context`` (checked: a CUDA
    :class:`Context`, since a CPU one would hand device pointers to host code), or the default
    context of the current GPU when None."""
    if context is None:
        return default_context()
    if not isinstance(context, Context):
        raise TypeError(f"{fn}: context must be a perforated.Context or None, got {type(context).__name__}")
    if not context.is_cuda:
        raise ValueError(f"{fn}: GPU arrays need a CUDA context, got context={context!r}")
    return context


def host_context(fn: str, context: Optional[Context]) -> None:
    """Reject a CUDA ``context`` given with numpy arrays (they run on the CPU, never copied)."""
    if context is not None and (not isinstance(context, Context) or context.is_cuda):
        raise TypeError(f"{fn}: numpy arrays run on the CPU: context must be None or a CPU Context, "
                        f"got {context!r} (pass GPU arrays to run on it)")


def is_device_array(obj: Any) -> bool:
    return hasattr(obj, "__cuda_array_interface__") and not isinstance(obj, np.ndarray)


_TYPESTR = {np.dtype(np.float32): ("<f4",), np.dtype(np.int32): ("<i4",)}


def check_device_array(fn: str, name: str, arr: Any, *, shape: Optional[Shape] = None,
                       ndim: Optional[Any] = None, dtype: Any = np.float32,
                       writable: bool = False) -> Tuple[int, ...]:
    """Check a ``__cuda_array_interface__`` array (dtype, shape, C-contiguous, writable); return its
    shape. Messages name the function, the argument, the expected and the actual value."""
    if not is_device_array(arr):
        raise TypeError(f"{fn}: {name} must be a GPU array (__cuda_array_interface__) like the other "
                        f"arguments, got {type(arr).__name__}")
    cai = arr.__cuda_array_interface__
    want = np.dtype(dtype)
    if cai["typestr"] not in _TYPESTR[want]:
        raise TypeError(f"{fn}: {name} must be {want.name}, got {np.dtype(cai['typestr']).name}")
    got = tuple(int(d) for d in cai["shape"])
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(got) not in allowed:
            wanted = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{fn}: {name} must have {wanted} dimensions, got {len(got)} (shape {got})")
    if shape is not None:
        if len(got) != len(shape) or any(e is not None and int(e) != a for e, a in zip(shape, got)):
            raise ValueError(f"{fn}: {name} must have shape {_fmt_shape(shape)}, got {got}")
    strides = cai.get("strides")
    if strides is not None:
        expect, step = [], want.itemsize
        for d in reversed(got):
            expect.append(step)
            step *= d
        if any(d > 1 and s != e for d, s, e in zip(got, tuple(strides), reversed(expect))):
            raise ValueError(f"{fn}: {name} must be C-contiguous (got strides {tuple(strides)})")
    if cai.get("mask") is not None:
        raise ValueError(f"{fn}: {name} must not be a masked array")
    if writable and cai["data"][1]:
        raise ValueError(f"{fn}: {name} must be writable")
    return got


def dptr(arr: Any, ctype: str = "float *") -> Any:
    """The device pointer of a checked GPU array (``NULL`` for ``None``)."""
    if arr is None:
        return ffi.NULL
    return ffi.cast(ctype, int(arr.__cuda_array_interface__["data"][0]))


def device_output(fn: str, name: str, out: Any, shape: Sequence[int],
                  context: Optional[Context] = None) -> Any:
    """``out`` after checking it, or a new CuPy float32 array of ``shape`` (on ``context``'s GPU
    when given, else on CuPy's current device)."""
    shape = tuple(int(d) for d in shape)
    if out is not None:
        check_device_array(fn, name, out, shape=shape, writable=True)
        return out
    try:
        import cupy
    except ImportError:
        raise ImportError(f"{fn}: allocating {name} on the GPU needs CuPy (pip install "
                          f"'perforated[cuda]'); or pass {name}= a GPU array of shape {shape}") from None
    if context is None:
        return cupy.empty(shape, dtype=cupy.float32)
    with cupy.cuda.Device(context.index):
        return cupy.empty(shape, dtype=cupy.float32)


class DeviceBuffer:
    """``nbytes`` of memory on a context's device (perf_device_alloc), freed with the object."""

    def __init__(self, context: Context, nbytes: int) -> None:
        self.context = context  # keeps the context alive while the memory is
        self.nbytes = int(nbytes)
        out = ffi.new("void **")
        check(lib.perf_device_alloc(context._ptr, self.nbytes, out))
        self.ptr = out[0]

    def __del__(self) -> None:
        ptr, self.ptr = getattr(self, "ptr", None), None
        if ptr is not None and ptr != ffi.NULL:
            lib.perf_device_free(self.context._ptr, ptr)
