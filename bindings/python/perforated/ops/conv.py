"""Perforated 2-D convolution (NCHW float32): plans and the functional API.

A :class:`ConvPlan` holds the C plan (gather tables built once) and its workspace; reuse it across
calls with the same geometry and masks. :func:`conv2d` / :func:`conv2d_backward` build a plan per
call (convenient, not for timed loops).

Layouts: the input is full ``(N, C, H, W)``, or compact ``(N, C, count_in)`` when ``input_mask`` is
given (implicit interpolation: read through ``input_mask.nearest``; ``(H, W) = input_mask.shape``).
The C output is compact ``(N, Cout, count)`` when ``mask`` is given, else full ``(N, Cout, oh, ow)``.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import threading

import numpy as np

from .._c.arrays import IntPair, check_array, fptr, output_array, to_int, to_pair, workspace
from .._c.lib import ffi, lib
from .._c.errors import check
from .._c.device import (Context, DeviceBuffer, check_device_array, device_output, dptr,
                     is_device_array, resolve)
from .interp import interpolate, interpolate_backward
from .masks import Mask


def _opt_mask(fn: str, name: str, mask: Any) -> Optional[Mask]:
    if mask is not None and not isinstance(mask, Mask):
        raise TypeError(f"{fn}: {name} must be a perforated.Mask or None, got {type(mask).__name__}")
    return mask


class PackedWeights:
    """Weights packed by :meth:`ConvPlan.pack_nhwc` (an aligned buffer that records the geometry it was
    packed for: a plan of another geometry refuses it)."""

    def __init__(self, owner: np.ndarray, ptr: Any, nbytes: int, weight_shape: Tuple[int, ...]) -> None:
        self._owner, self.ptr, self.nbytes, self.weight_shape = owner, ptr, nbytes, weight_shape

    def __repr__(self) -> str:
        return f"PackedWeights(weight_shape={self.weight_shape}, {self.nbytes} bytes)"


class ConvPlan:
    """A convolution of fixed geometry and masks, with its gather tables and workspace.

    Args:
      batch, in_channels, out_channels: sizes.
      in_size: ``(H, W)`` of the full input (equal to ``input_mask.shape`` when it is given).
      kernel, stride, pad: int or ``(h, w)`` pair.
      groups: Caffe groups (divides both channel counts).
      dilation: int or ``(h, w)`` pair (tap ``(ki, kj)`` reads input row ``oy*stride - pad + ki*dilation``;
        the output is ``(H + 2*pad - dilation*(kernel-1) - 1) // stride + 1``).
      mask: output mask (the perforated positions); ``None`` for a dense convolution.
      input_mask: mask of the producer when the input is compact; ``None`` for a full input.
      device: ``"cpu"`` (numpy arrays) or ``"cuda"`` (GPU arrays with ``__cuda_array_interface__``,
        on the default context of the current GPU); context: a :class:`perforated.Context` instead.
        A CUDA plan uploads its gather table and owns a device workspace.
    Invalid geometry raises ``ValueError`` (``InvalidArgumentError``) with the C message.
    The plan owns ONE workspace, so its calls are serialised by a lock: one plan may be shared by
    several threads (correct, but they take turns); give each thread its own plan to run them in
    parallel (the C plans are immutable, each Python plan has its own workspace).
    """

    def __init__(self, batch: int, in_channels: int, in_size: IntPair, out_channels: int,
                 kernel: IntPair, stride: IntPair = 1, pad: IntPair = 0, groups: int = 1,
                 mask: Optional[Mask] = None, input_mask: Optional[Mask] = None,
                 device: str = "cpu", context: Optional[Context] = None, dilation: IntPair = 1) -> None:
        fn = "ConvPlan"
        self._lock = threading.Lock()  # guards the workspace (released GIL: threads run C at once)
        self.context = resolve(fn, device, context)
        self.device = "cuda" if self.context is not None else "cpu"
        self.mask = _opt_mask(fn, "mask", mask)
        self.input_mask = _opt_mask(fn, "input_mask", input_mask)
        desc = ffi.new("perf_conv_desc *")
        desc.batch = to_int(fn, "batch", batch)
        desc.in_channels = to_int(fn, "in_channels", in_channels)
        desc.in_h, desc.in_w = to_pair(fn, "in_size", in_size)
        desc.out_channels = to_int(fn, "out_channels", out_channels)
        desc.kernel_h, desc.kernel_w = to_pair(fn, "kernel", kernel)
        desc.stride_h, desc.stride_w = to_pair(fn, "stride", stride)
        desc.pad_h, desc.pad_w = to_pair(fn, "pad", pad)
        desc.groups = to_int(fn, "groups", groups)
        desc.dilation_h, desc.dilation_w = to_pair(fn, "dilation", dilation)
        if desc.dilation_h < 1 or desc.dilation_w < 1:
            raise ValueError(f"{fn}: dilation must be >= 1, got {(desc.dilation_h, desc.dilation_w)}")
        self._desc = desc
        out = ffi.new("perf_conv_plan **")
        masks = (mask._ptr if mask is not None else ffi.NULL,
                 input_mask._ptr if input_mask is not None else ffi.NULL)
        if self.context is not None:
            check(lib.perf_conv_plan_create_ctx(self.context._ptr, desc, *masks, out))
        else:
            check(lib.perf_conv_plan_create(desc, *masks, out))
        self._ptr = ffi.gc(out[0], lib.perf_conv_plan_destroy)
        oh, ow, cnt = ffi.new("int *"), ffi.new("int *"), ffi.new("int *")
        check(lib.perf_conv_plan_output(self._ptr, oh, ow, cnt))
        self.out_size: Tuple[int, int] = (int(oh[0]), int(ow[0]))
        self.count: int = int(cnt[0])
        nbytes = ffi.new("size_t *")
        check(lib.perf_conv_workspace_size(self._ptr, nbytes))
        if self.context is not None:
            self._ws_owner = DeviceBuffer(self.context, int(nbytes[0]))
            self._ws, self.workspace_bytes = self._ws_owner.ptr, int(nbytes[0])
        else:
            self._ws_owner, self._ws, self.workspace_bytes = workspace(int(nbytes[0]))

    @property
    def path(self) -> str:
        """How the CPU forward runs: ``"pointwise"``, ``"shift"`` (one GEMM per kernel tap over a padded
        copy of the input) or ``"im2row"`` (perf_conv_plan_path)."""
        out = ffi.new("const char **")
        check(lib.perf_conv_plan_path(self._ptr, out))
        return ffi.string(out[0]).decode()

    # Shapes of the arrays each call takes.
    @property
    def x_shape(self) -> Tuple[int, ...]:
        d = self._desc
        if self.input_mask is not None:
            return (d.batch, d.in_channels, self.input_mask.count)
        return (d.batch, d.in_channels, d.in_h, d.in_w)

    @property
    def weight_shape(self) -> Tuple[int, int, int, int]:
        d = self._desc
        return (d.out_channels, d.in_channels // d.groups, d.kernel_h, d.kernel_w)

    @property
    def y_shape(self) -> Tuple[int, ...]:
        """Shape of the C output: compact ``(N, Cout, count)`` with a mask, else ``(N, Cout, oh, ow)``."""
        d = self._desc
        if self.mask is not None:
            return (d.batch, d.out_channels, self.count)
        return (d.batch, d.out_channels) + self.out_size

    @property
    def full_y_shape(self) -> Tuple[int, int, int, int]:
        d = self._desc
        return (d.batch, d.out_channels) + self.out_size

    def _weight(self, fn: str, weight: np.ndarray) -> np.ndarray:
        return check_array(fn, "weight", weight, shape=self.weight_shape)

    def forward(self, x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        """``conv(x, weight) + bias`` at the computed positions; returns an array of ``y_shape``."""
        fn = "ConvPlan.forward"
        if self.context is not None:
            return self._forward_device(fn, x, weight, bias, out)
        check_array(fn, "x", x, shape=self.x_shape)
        self._weight(fn, weight)
        if bias is not None:
            check_array(fn, "bias", bias, shape=(self._desc.out_channels,))
        y = output_array(fn, "out", out, self.y_shape)
        with self._lock:
            check(lib.perf_conv_forward(self._ptr, fptr(x), fptr(weight), fptr(bias), fptr(y),
                                        self._ws, self.workspace_bytes))
        return y

    # Channels-last forward (the CPU inference engine's layout; perf_conv_forward_nhwc).
    @property
    def x_shape_nhwc(self) -> Tuple[int, int, int]:
        """``(N, positions, C)``: positions ``H*W``, or ``input_mask.count`` for a compact input."""
        d = self._desc
        positions = self.input_mask.count if self.input_mask is not None else d.in_h * d.in_w
        return (d.batch, positions, d.in_channels)

    @property
    def y_shape_nhwc(self) -> Tuple[int, int, int]:
        """``(N, count, Cout)``: count ``oh*ow`` when dense."""
        return (self._desc.batch, self.count, self._desc.out_channels)

    @property
    def kernels(self) -> str:
        """Micro-kernel set of :meth:`forward_nhwc`: ``"avx512"``, ``"avx2"`` or ``"generic"``."""
        out = ffi.new("const char **")
        check(lib.perf_conv_plan_kernels(self._ptr, out))
        return ffi.string(out[0]).decode()

    def pack_nhwc(self, weight: np.ndarray) -> "PackedWeights":
        """`weight` packed once into the channels-last kernels' panels, for :meth:`forward_nhwc` calls of
        this plan (or one of the same geometry) whose weights do not change: skips the packing pass of
        every call, which dominates small maps (perf_conv_nhwc_pack)."""
        fn = "ConvPlan.pack_nhwc"
        if self.context is not None:
            raise ValueError(f"{fn}: the channels-last forward runs on the CPU; this plan is on {self.device}")
        self._weight(fn, weight)
        nbytes = ffi.new("size_t *")
        check(lib.perf_conv_nhwc_packed_size(self._ptr, nbytes))
        owner, ptr, size = workspace(int(nbytes[0]))
        check(lib.perf_conv_nhwc_pack(self._ptr, fptr(weight), ptr, size))
        return PackedWeights(owner, ptr, size, self.weight_shape)

    def forward_nhwc(self, x: np.ndarray, weight: Union[np.ndarray, "PackedWeights"],
                     bias: Optional[np.ndarray] = None, scale: Optional[np.ndarray] = None, relu: bool = False,
                     out: Optional[np.ndarray] = None, residual: Optional[np.ndarray] = None) -> np.ndarray:
        """``relu?(conv(x, weight) * scale + bias + residual)`` in channels-last layout: x of
        ``x_shape_nhwc``, returns ``y_shape_nhwc``. ``weight``: the NCHW weight array (packed at this
        call) or what :meth:`pack_nhwc` returned. ``scale``, ``bias``: ``(Cout,)`` or None;
        ``residual``: ``y_shape_nhwc`` (a shortcut added in the output pass; not overlapping ``out``)
        or None. CPU plans only."""
        fn = "ConvPlan.forward_nhwc"
        if self.context is not None:
            raise ValueError(f"{fn}: the channels-last forward runs on the CPU; this plan is on {self.device}")
        check_array(fn, "x", x, shape=self.x_shape_nhwc)
        packed = weight if isinstance(weight, PackedWeights) else None
        if packed is None:
            self._weight(fn, weight)
        if residual is not None:
            check_array(fn, "residual", residual, shape=self.y_shape_nhwc)
            if packed is None:  # the residual form takes packed weights
                packed = self.pack_nhwc(weight)
        cout = self._desc.out_channels
        if bias is not None:
            check_array(fn, "bias", bias, shape=(cout,))
        if scale is not None:
            check_array(fn, "scale", scale, shape=(cout,))
        y = output_array(fn, "out", out, self.y_shape_nhwc)
        if residual is not None and np.shares_memory(residual, y):
            raise ValueError(f"{fn}: residual must not overlap out")
        with self._lock:
            if not hasattr(self, "_ws_nhwc"):
                nbytes = ffi.new("size_t *")
                check(lib.perf_conv_nhwc_workspace_size(self._ptr, nbytes))
                self._ws_nhwc = workspace(int(nbytes[0]))
            _, ws, nbytes = self._ws_nhwc
            if packed is not None:
                check(lib.perf_conv_forward_nhwc_packed(self._ptr, fptr(x), packed.ptr, packed.nbytes, fptr(scale),
                                                        fptr(bias), fptr(residual), 1 if relu else 0, fptr(y), ws,
                                                        nbytes))
            else:
                check(lib.perf_conv_forward_nhwc(self._ptr, fptr(x), fptr(weight), fptr(scale), fptr(bias),
                                                 1 if relu else 0, fptr(y), ws, nbytes))
        return y

    def backward_data(self, weight: np.ndarray, dy: np.ndarray,
                      out: Optional[np.ndarray] = None) -> np.ndarray:
        """``dx`` (layout of x: full or compact) from ``dy`` of shape ``y_shape``."""
        fn = "ConvPlan.backward_data"
        if self.context is not None:
            return self._backward_data_device(fn, weight, dy, out)
        self._weight(fn, weight)
        check_array(fn, "dy", dy, shape=self.y_shape)
        dx = output_array(fn, "out", out, self.x_shape)
        with self._lock:
            check(lib.perf_conv_backward_data(self._ptr, fptr(weight), fptr(dy), fptr(dx),
                                              self._ws, self.workspace_bytes))
        return dx

    def backward_filter(self, x: np.ndarray, dy: np.ndarray, dweight: Optional[np.ndarray] = None,
                        dbias: Optional[np.ndarray] = None,
                        need_bias: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """``(dweight, dbias)`` from ``x`` and ``dy`` (shape ``y_shape``); ``dbias`` is ``None``
        when ``need_bias`` is false. ``dweight`` / ``dbias`` may be given to be overwritten."""
        fn = "ConvPlan.backward_filter"
        if self.context is not None:
            return self._backward_filter_device(fn, x, dy, dweight, dbias, need_bias)
        check_array(fn, "x", x, shape=self.x_shape)
        check_array(fn, "dy", dy, shape=self.y_shape)
        dw = output_array(fn, "dweight", dweight, self.weight_shape)
        db = output_array(fn, "dbias", dbias, (self._desc.out_channels,)) if need_bias else None
        with self._lock:
            check(lib.perf_conv_backward_filter(self._ptr, fptr(x), fptr(dy), fptr(dw), fptr(db),
                                                self._ws, self.workspace_bytes))
        return dw, db

    # CUDA plans: the same calls on GPU arrays (outputs allocated with CuPy when not given).
    def _forward_device(self, fn: str, x: Any, weight: Any, bias: Any, out: Any) -> Any:
        check_device_array(fn, "x", x, shape=self.x_shape)
        check_device_array(fn, "weight", weight, shape=self.weight_shape)
        if bias is not None:
            check_device_array(fn, "bias", bias, shape=(self._desc.out_channels,))
        y = device_output(fn, "out", out, self.y_shape, self.context)
        with self._lock:
            check(lib.perf_conv_forward(self._ptr, dptr(x), dptr(weight), dptr(bias), dptr(y),
                                        self._ws, self.workspace_bytes))
        return y

    def _backward_data_device(self, fn: str, weight: Any, dy: Any, out: Any) -> Any:
        check_device_array(fn, "weight", weight, shape=self.weight_shape)
        check_device_array(fn, "dy", dy, shape=self.y_shape)
        dx = device_output(fn, "out", out, self.x_shape, self.context)
        with self._lock:
            check(lib.perf_conv_backward_data(self._ptr, dptr(weight), dptr(dy), dptr(dx),
                                              self._ws, self.workspace_bytes))
        return dx

    def _backward_filter_device(self, fn: str, x: Any, dy: Any, dweight: Any, dbias: Any,
                                need_bias: bool) -> Tuple[Any, Any]:
        check_device_array(fn, "x", x, shape=self.x_shape)
        check_device_array(fn, "dy", dy, shape=self.y_shape)
        dw = device_output(fn, "dweight", dweight, self.weight_shape, self.context)
        db = device_output(fn, "dbias", dbias, (self._desc.out_channels,), self.context) if need_bias else None
        with self._lock:
            check(lib.perf_conv_backward_filter(self._ptr, dptr(x), dptr(dy), dptr(dw), dptr(db),
                                                self._ws, self.workspace_bytes))
        return dw, db

    def __repr__(self) -> str:
        d = self._desc
        return (f"ConvPlan(x={self.x_shape}, weight={self.weight_shape}, stride=({d.stride_h}, "
                f"{d.stride_w}), pad=({d.pad_h}, {d.pad_w}), groups={d.groups}, "
                f"dilation=({d.dilation_h}, {d.dilation_w}), "
                f"out={self.out_size}, count={self.count})")


def _plan_for(fn: str, x: Any, weight: Any, stride: IntPair, pad: IntPair, groups: int,
              mask: Optional[Mask], input_mask: Optional[Mask], dilation: IntPair = 1) -> ConvPlan:
    _opt_mask(fn, "mask", mask)
    _opt_mask(fn, "input_mask", input_mask)
    if is_device_array(x):  # GPU arrays: a CUDA plan on the default context
        xs = check_device_array(fn, "x", x, ndim=3 if input_mask is not None else 4)
        ws = check_device_array(fn, "weight", weight, ndim=4)
        if input_mask is not None:
            check_device_array(fn, "x", x, shape=(None, None, input_mask.count))
        in_size = input_mask.shape if input_mask is not None else xs[2:]
        return ConvPlan(xs[0], xs[1], in_size, ws[0], ws[2:], stride, pad, to_int(fn, "groups", groups),
                        mask, input_mask, device="cuda", dilation=dilation)
    check_array(fn, "x", x, ndim=3 if input_mask is not None else 4)
    check_array(fn, "weight", weight, ndim=4)
    if input_mask is not None:
        in_size = input_mask.shape
        check_array(fn, "x", x, shape=(None, None, input_mask.count))
    else:
        in_size = x.shape[2:]
    groups = to_int(fn, "groups", groups)
    plan = ConvPlan(x.shape[0], x.shape[1], in_size, weight.shape[0], weight.shape[2:],
                    stride, pad, groups, mask, input_mask, dilation=dilation)
    check_array(fn, "weight", weight, shape=plan.weight_shape)
    return plan


def conv2d(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None,
           stride: IntPair = 1, pad: IntPair = 0, groups: int = 1, mask: Optional[Mask] = None,
           compact: bool = False, input_mask: Optional[Mask] = None,
           out: Optional[np.ndarray] = None, dilation: IntPair = 1) -> np.ndarray:
    """2-D convolution (cross-correlation, Caffe), optionally perforated.

    x: float32 ``(N, C, H, W)``, or compact ``(N, C, count_in)`` when ``input_mask`` is given.
    weight: ``(Cout, C/groups, kh, kw)``; bias: ``(Cout,)`` or None; stride, pad, dilation: int or pair.
    mask: output mask of ``(oh, ow)`` (``oh = (H + 2 pad - dilation (kh - 1) - 1) // stride + 1``) or None
    (dense).
    Returns full ``(N, Cout, oh, ow)`` (perforated positions filled by explicit nearest-neighbour
    interpolation), or compact ``(N, Cout, count)`` when ``compact=True`` (requires a mask).
    """
    fn = "conv2d"
    if compact and mask is None:
        raise ValueError(f"{fn}: compact=True requires a mask")
    plan = _plan_for(fn, x, weight, stride, pad, groups, mask, input_mask, dilation)
    if plan.context is not None:
        if mask is None or compact:
            return plan.forward(x, weight, bias, out=out)
        if out is not None:
            check_device_array(fn, "out", out, shape=plan.full_y_shape, writable=True)
        return interpolate(plan.forward(x, weight, bias), mask, out=out, context=plan.context)
    if bias is not None:
        check_array(fn, "bias", bias, shape=(weight.shape[0],))
    if mask is None or compact:
        if out is not None:
            check_array(fn, "out", out, shape=plan.y_shape, writable=True)
        return plan.forward(x, weight, bias, out=out)
    if out is not None:
        check_array(fn, "out", out, shape=plan.full_y_shape, writable=True)
    y_c = plan.forward(x, weight, bias)
    return interpolate(y_c, mask, out=out)


def conv2d_backward(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, stride: IntPair = 1,
                    pad: IntPair = 0, groups: int = 1, mask: Optional[Mask] = None,
                    input_mask: Optional[Mask] = None, compact: bool = False,
                    dilation: IntPair = 1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dweight, dbias)`` of :func:`conv2d` (same arguments).

    dy: gradient of the full output ``(N, Cout, oh, ow)`` (explicit interpolation: it is
    de-interpolated first), or of the compact output ``(N, Cout, count)`` when ``compact=True``.
    dx has x's layout (compact ``(N, C, count_in)`` when ``input_mask`` is given).
    """
    fn = "conv2d_backward"
    if compact and mask is None:
        raise ValueError(f"{fn}: compact=True requires a mask")
    plan = _plan_for(fn, x, weight, stride, pad, groups, mask, input_mask, dilation)
    if plan.context is not None:
        if mask is not None and not compact:
            check_device_array(fn, "dy", dy, shape=plan.full_y_shape)
            dy = interpolate_backward(dy, mask, context=plan.context)
        dw, db = plan.backward_filter(x, dy)
        return plan.backward_data(weight, dy), dw, db
    if mask is not None and not compact:
        check_array(fn, "dy", dy, shape=plan.full_y_shape)
        dy = interpolate_backward(dy, mask)
    else:
        check_array(fn, "dy", dy, shape=plan.y_shape)
    dx = plan.backward_data(weight, dy)
    dw, db = plan.backward_filter(x, dy)
    return dx, dw, db
