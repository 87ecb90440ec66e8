"""Max / average pooling (Caffe ceil mode), optionally reading a compact input through a mask.

Input: full ``(N, C, H, W)``, or compact ``(N, C, count_in)`` when ``input_mask`` is given (implicit
interpolation; ``(H, W) = input_mask.shape``). Max pooling through a mask takes the maximum over the
window's distinct compact indices; average pooling sums the window's in-bounds positions (with
duplicates) and divides by their number. The output is always full ``(N, C, oh, ow)`` with
``oh = ceil((H + 2 pad - k) / s) + 1``, reduced by one if the last window starts in the padding.

Backward functions share one signature: ``*_backward(x, dy, kernel, stride, pad=0, input_mask=None,
out=None)`` returning ``dx`` in x's layout. Average pooling only needs x's shape, so ``x`` may be
the array or its shape tuple there.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .._c.arrays import IntPair, check_array, fptr, output_array, to_int, to_pair
from .._c.lib import ffi, lib
from .._c.device import Context, check_device_array, device_output, dptr, is_device_array, resolve
from .._c.errors import check
from .masks import Mask

_MODES = {"max": 0, "avg": 1, "average": 1}


class PoolPlan:
    """A pooling layer of fixed geometry (and input mask), with its gather tables.

    mode: "max" or "avg". kernel, stride, pad: int or ``(h, w)`` pair. in_size: full ``(H, W)``.
    Invalid geometry (pad >= kernel, kernel larger than the padded input, mask size mismatch)
    raises ``ValueError`` with the C message.
    device: ``"cpu"`` (numpy arrays) or ``"cuda"`` (GPU arrays, default context of the current GPU);
    context: a :class:`perforated.Context` instead. A CUDA plan uploads its gather table.
    """

    def __init__(self, batch: int, channels: int, in_size: IntPair, kernel: IntPair,
                 stride: IntPair, pad: IntPair = 0, mode: str = "max",
                 input_mask: Optional[Mask] = None, device: str = "cpu",
                 context: Optional[Context] = None) -> None:
        fn = "PoolPlan"
        self.context = resolve(fn, device, context)
        self.device = "cuda" if self.context is not None else "cpu"
        if mode not in _MODES:
            raise ValueError(f"{fn}: unknown mode {mode!r}; expected 'max' or 'avg'")
        if input_mask is not None and not isinstance(input_mask, Mask):
            raise TypeError(f"{fn}: input_mask must be a perforated.Mask or None, "
                            f"got {type(input_mask).__name__}")
        self.mode = "max" if _MODES[mode] == 0 else "avg"
        self.input_mask = input_mask
        d = ffi.new("perf_pool_desc *")
        d.batch = to_int(fn, "batch", batch)
        d.channels = to_int(fn, "channels", channels)
        d.in_h, d.in_w = to_pair(fn, "in_size", in_size)
        d.kernel_h, d.kernel_w = to_pair(fn, "kernel", kernel)
        d.stride_h, d.stride_w = to_pair(fn, "stride", stride)
        d.pad_h, d.pad_w = to_pair(fn, "pad", pad)
        d.mode = _MODES[mode]
        self._desc = d
        out = ffi.new("perf_pool_plan **")
        in_ptr = input_mask._ptr if input_mask is not None else ffi.NULL
        if self.context is not None:
            check(lib.perf_pool_plan_create_ctx(self.context._ptr, d, in_ptr, out))
        else:
            check(lib.perf_pool_plan_create(d, in_ptr, out))
        self._ptr = ffi.gc(out[0], lib.perf_pool_plan_destroy)
        oh, ow = ffi.new("int *"), ffi.new("int *")
        check(lib.perf_pool_plan_output(self._ptr, oh, ow))
        self.out_size: Tuple[int, int] = (int(oh[0]), int(ow[0]))

    @property
    def x_shape(self) -> Tuple[int, ...]:
        d = self._desc
        if self.input_mask is not None:
            return (d.batch, d.channels, self.input_mask.count)
        return (d.batch, d.channels, d.in_h, d.in_w)

    @property
    def y_shape(self) -> Tuple[int, int, int, int]:
        d = self._desc
        return (d.batch, d.channels) + self.out_size

    def forward(self, x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        fn = "PoolPlan.forward"
        if self.context is not None:
            check_device_array(fn, "x", x, shape=self.x_shape)
            y = device_output(fn, "out", out, self.y_shape, self.context)
            check(lib.perf_pool_forward(self._ptr, dptr(x), dptr(y)))
            return y
        check_array(fn, "x", x, shape=self.x_shape)
        y = output_array(fn, "out", out, self.y_shape)
        check(lib.perf_pool_forward(self._ptr, fptr(x), fptr(y)))
        return y

    @property
    def x_shape_nhwc(self) -> Tuple[int, int, int]:
        """Channels-last input ``(N, positions, C)`` (positions: H*W, or the input mask's count)."""
        n, c = self.x_shape[:2]
        return (n, int(np.prod(self.x_shape[2:])), c)

    @property
    def y_shape_nhwc(self) -> Tuple[int, int, int]:
        n, c, oh, ow = self.y_shape
        return (n, oh * ow, c)

    def forward_nhwc(self, x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The forward in channels-last layout: x of ``x_shape_nhwc``, returns ``y_shape_nhwc``."""
        fn = "PoolPlan.forward_nhwc"
        if self.context is not None:
            raise ValueError(f"{fn}: the channels-last pooling runs on the CPU; this plan is on the GPU")
        check_array(fn, "x", x, shape=self.x_shape_nhwc)
        y = output_array(fn, "out", out, self.y_shape_nhwc)
        check(lib.perf_pool_forward_nhwc(self._ptr, fptr(x), fptr(y)))
        return y

    def backward(self, x: Optional[np.ndarray], dy: np.ndarray,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
        """``dx`` (x's layout). ``x`` is required for max pooling, ignored (may be None) for avg."""
        fn = "PoolPlan.backward"
        if self.context is not None:
            if self.mode == "max" and x is None:
                raise ValueError(f"{fn}: max pooling needs x")
            if x is not None:
                check_device_array(fn, "x", x, shape=self.x_shape)
            check_device_array(fn, "dy", dy, shape=self.y_shape)
            dx = device_output(fn, "out", out, self.x_shape, self.context)
            check(lib.perf_pool_backward(self._ptr, dptr(x), dptr(dy), dptr(dx)))
            return dx
        if self.mode == "max" or x is not None:
            if x is None:
                raise ValueError(f"{fn}: max pooling needs x")
            check_array(fn, "x", x, shape=self.x_shape)
        check_array(fn, "dy", dy, shape=self.y_shape)
        dx = output_array(fn, "out", out, self.x_shape)
        check(lib.perf_pool_backward(self._ptr, fptr(x), fptr(dy), fptr(dx)))
        return dx

    def __repr__(self) -> str:
        d = self._desc
        return (f"PoolPlan(mode={self.mode!r}, x={self.x_shape}, kernel=({d.kernel_h}, {d.kernel_w}), "
                f"stride=({d.stride_h}, {d.stride_w}), pad=({d.pad_h}, {d.pad_w}), out={self.out_size})")


def _x_geometry(fn: str, x: Any, input_mask: Optional[Mask],
                shape_ok: bool = False) -> Tuple[int, int, Tuple[int, int]]:
    """(batch, channels, full in_size) from x (an array, or a shape tuple when ``shape_ok``)."""
    if input_mask is not None and not isinstance(input_mask, Mask):
        raise TypeError(f"{fn}: input_mask must be a perforated.Mask or None, "
                        f"got {type(input_mask).__name__}")
    want = 3 if input_mask is not None else 4
    if shape_ok and isinstance(x, (tuple, list)):
        shape = tuple(to_int(fn, "x shape", v) for v in x)
        if len(shape) != want:
            raise ValueError(f"{fn}: x shape must have {want} dimensions, got {shape}")
    elif is_device_array(x):
        shape = check_device_array(fn, "x", x, ndim=want)
    else:
        check_array(fn, "x", x, ndim=want)
        shape = x.shape
    if input_mask is not None:
        if shape[2] != input_mask.count:
            raise ValueError(f"{fn}: x must have shape (*, *, {input_mask.count}) (input_mask.count), "
                             f"got {tuple(shape)}")
        return shape[0], shape[1], input_mask.shape
    return shape[0], shape[1], (shape[2], shape[3])


def _pool(fn: str, mode: str, x: np.ndarray, kernel: IntPair, stride: IntPair, pad: IntPair,
          input_mask: Optional[Mask], out: Optional[np.ndarray]) -> np.ndarray:
    n, c, size = _x_geometry(fn, x, input_mask)
    device = "cuda" if is_device_array(x) else "cpu"
    plan = PoolPlan(n, c, size, kernel, stride, pad, mode, input_mask, device=device)
    if out is not None and device == "cpu":
        check_array(fn, "out", out, shape=plan.y_shape, writable=True)
    return plan.forward(x, out=out)


def max_pool2d(x: np.ndarray, kernel: IntPair, stride: IntPair, pad: IntPair = 0,
               input_mask: Optional[Mask] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Max pooling, Caffe ceil mode; see the module docstring for layouts."""
    return _pool("max_pool2d", "max", x, kernel, stride, pad, input_mask, out)


def avg_pool2d(x: np.ndarray, kernel: IntPair, stride: IntPair, pad: IntPair = 0,
               input_mask: Optional[Mask] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Average pooling (divided by the number of in-bounds positions), Caffe ceil mode."""
    return _pool("avg_pool2d", "avg", x, kernel, stride, pad, input_mask, out)


def global_avg_pool2d(x: np.ndarray, input_mask: Optional[Mask] = None,
                      out: Optional[np.ndarray] = None) -> np.ndarray:
    """Mean over all positions of each plane; returns ``(N, C, 1, 1)``."""
    fn = "global_avg_pool2d"
    _, _, size = _x_geometry(fn, x, input_mask)
    return _pool(fn, "avg", x, size, 1, 0, input_mask, out)


def _pool_backward(fn: str, mode: str, x: Any, dy: np.ndarray, kernel: IntPair, stride: IntPair,
                   pad: IntPair, input_mask: Optional[Mask], out: Optional[np.ndarray]) -> np.ndarray:
    n, c, size = _x_geometry(fn, x, input_mask, shape_ok=(mode == "avg"))
    if is_device_array(dy):  # GPU arrays (x may be a GPU array or, for avg, a shape)
        plan = PoolPlan(n, c, size, kernel, stride, pad, mode, input_mask, device="cuda")
        return plan.backward(x if is_device_array(x) else None, dy, out=out)
    plan = PoolPlan(n, c, size, kernel, stride, pad, mode, input_mask)
    check_array(fn, "dy", dy, shape=plan.y_shape)
    if out is not None:
        check_array(fn, "out", out, shape=plan.x_shape, writable=True)
    return plan.backward(x if isinstance(x, np.ndarray) else None, dy, out=out)


def max_pool2d_backward(x: np.ndarray, dy: np.ndarray, kernel: IntPair, stride: IntPair,
                        pad: IntPair = 0, input_mask: Optional[Mask] = None,
                        out: Optional[np.ndarray] = None) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: each ``dy`` goes to the first maximum of its window in x."""
    return _pool_backward("max_pool2d_backward", "max", x, dy, kernel, stride, pad, input_mask, out)


def avg_pool2d_backward(x: Union[np.ndarray, Sequence[int]], dy: np.ndarray, kernel: IntPair,
                        stride: IntPair, pad: IntPair = 0, input_mask: Optional[Mask] = None,
                        out: Optional[np.ndarray] = None) -> np.ndarray:
    """Gradient of :func:`avg_pool2d`; ``x`` may be the input array or just its shape."""
    return _pool_backward("avg_pool2d_backward", "avg", x, dy, kernel, stride, pad, input_mask, out)


def global_avg_pool2d_backward(x: Union[np.ndarray, Sequence[int]], dy: np.ndarray,
                               input_mask: Optional[Mask] = None,
                               out: Optional[np.ndarray] = None) -> np.ndarray:
    """Gradient of :func:`global_avg_pool2d`; ``dy`` is ``(N, C, 1, 1)``."""
    fn = "global_avg_pool2d_backward"
    _, _, size = _x_geometry(fn, x, input_mask, shape_ok=True)
    return _pool_backward(fn, "avg", x, dy, size, 1, 0, input_mask, out)
