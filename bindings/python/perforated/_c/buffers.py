"""Where a :class:`perforated.graph.model.Model` keeps its arrays: numpy on the CPU, CuPy on a CUDA device.

The model allocates every activation, gradient and parameter through one of these two classes, so
its steps run unchanged on either device: CuPy arrays support the reshape views and in-place
assignments the steps use, and the library's functions and plans dispatch on GPU arrays. On the GPU
they also carry the model's :class:`perforated.Context`, passed to every call, so that all the
model's work is enqueued on that context's stream, in order.

Ordering with CuPy: the context's stream is a blocking stream, ordered with the legacy default
stream that CuPy uses unless told otherwise. Copies made here on another CuPy stream (a ``with
cupy.cuda.Stream()`` block, or CuPy's per-thread default stream) are waited for before returning.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from .arrays import to_labels
from .device import Context, is_device_array, resolve
from .errors import PerforatedError

CUDA_EXTRA = "pip install 'perforated[cuda]'"


class HostBuffers:
    """numpy arrays; every method is what the CPU model always did."""

    device = "cpu"
    context: Optional[Context] = None

    def zeros(self, shape: Sequence[int]) -> np.ndarray:
        return np.zeros(shape, np.float32)

    def zeros_like(self, a: np.ndarray) -> np.ndarray:
        return np.zeros_like(a)

    def put(self, host: np.ndarray) -> np.ndarray:
        """A parameter drawn on the host, where it stays."""
        return host

    def copy_into(self, dst: np.ndarray, src: Any, casting: str = "same_kind") -> None:
        """``dst[...] = src``, casting as numpy's ``casting`` rule allows (same_kind: float64 and
        other floats are cast, integers refused)."""
        np.copyto(dst, src, casting=casting)

    def to_host(self, a: np.ndarray) -> np.ndarray:
        return a

    def labels(self, fn: str, labels: Any, batch: int) -> Any:
        return labels  # checked and converted by the layer functions

    def synchronize(self) -> None:
        pass


class DeviceBuffers:
    """CuPy arrays on the context's GPU."""

    device = "cuda"

    def __init__(self, context: Context) -> None:
        try:
            import cupy
        except ImportError:
            raise ImportError(f"Model: device='cuda' keeps the network's buffers and parameters in CuPy "
                              f"arrays, and CuPy is not installed: {CUDA_EXTRA}") from None
        self.cupy, self.context = cupy, context
        self._device = cupy.cuda.Device(context.index)

    def zeros(self, shape: Sequence[int]) -> Any:
        with self._device:
            return self.cupy.zeros(tuple(shape), self.cupy.float32)

    def zeros_like(self, a: Any) -> Any:
        with self._device:
            return self.cupy.zeros_like(a)

    def put(self, host: np.ndarray) -> Any:
        """A copy on the GPU of a parameter drawn on the host."""
        with self._device:
            out = self.cupy.asarray(host)
        self._wait_for_cupy()
        return out

    def copy_into(self, dst: Any, src: Any, casting: str = "same_kind") -> None:
        """``dst[...] = src`` from a numpy or a GPU array, casting as numpy's ``casting`` allows."""
        cp = self.cupy
        with self._device:
            if is_device_array(src):
                src = cp.asarray(src)  # a view of any __cuda_array_interface__ array, no copy
            else:
                src = np.asarray(src)
                if src.dtype != np.float32:  # cast on the host: half the bytes to copy for float64
                    src = src.astype(np.float32, casting=casting)
                src = cp.asarray(src)
            cp.copyto(dst, src, casting=casting)
        self._wait_for_cupy()

    def to_host(self, a: Any) -> np.ndarray:
        self.context.synchronize()  # our stream's work on `a` first
        with self._device:
            return self.cupy.asnumpy(a)

    def labels(self, fn: str, labels: Any, batch: int) -> Any:
        """Labels on the GPU as int32: numpy labels are checked, converted and copied."""
        if is_device_array(labels):
            return labels
        host = to_labels(fn, labels, batch)
        with self._device:
            out = self.cupy.asarray(host)
        self._wait_for_cupy()
        return out

    def synchronize(self) -> None:
        self.context.synchronize()

    def _wait_for_cupy(self) -> None:
        """CuPy's work on its legacy default stream (ptr 0) is ordered with our blocking stream;
        on any other stream it must finish before the context's stream reads the result."""
        stream = self.cupy.cuda.get_current_stream()
        if stream.ptr != 0:
            stream.synchronize()


Buffers = Union[HostBuffers, DeviceBuffers]
HOST = HostBuffers()


def buffers_for(device: str, context: Optional[Context]) -> Buffers:
    """The buffers of a model on ``device`` (``"cpu"`` or ``"cuda"``) or on ``context``.

    A device this build or machine cannot serve raises the library's error (``UnsupportedError``
    in a build without CUDA, ``InvalidArgumentError`` without a GPU) naming the device asked for;
    a missing CuPy raises ``ImportError`` naming the ``cuda`` extra."""
    fn = "Model"
    try:
        ctx = resolve(fn, device, context)
    except PerforatedError as e:
        asked = f"context={context!r}" if context is not None else f"device={device!r}"
        raise type(e)(f"{fn}: {asked} is not available: {e}") from e
    return HOST if ctx is None else DeviceBuffers(ctx)
