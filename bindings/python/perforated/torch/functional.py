"""``perforated_conv2d``: a perforated convolution as an autograd-aware PyTorch function.

Two implementations of the same mathematics (compute the convolution at the mask's positions, fill the
other positions with the nearest computed value):

* the **C path**: CPU float32 tensors run on libperforated. The input, weight and bias are
  handed to C as numpy views of the tensors' memory (no copy; a non-contiguous or channels_last input is
  made contiguous once), the output is written into a new tensor, and the backward runs the library's
  de-interpolation, data and filter gradients.
* the **pure path**: PyTorch operations only (pad, gather of the receptive fields at the computed
  positions, matmul, nearest-neighbour gather), so any device and dtype torch supports, autograd by torch,
  and a graph ``torch.onnx.export`` can write (Pad, Gather, MatMul, Gather). Chosen for every tensor the C
  path does not take, and while tracing or exporting.

``implementation="auto"`` (default) picks the C path where it applies; ``"c"`` insists on it (an error
says why it cannot run), ``"torch"`` forces the pure path.
"""
from __future__ import annotations

import threading
import weakref
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .._c.arrays import to_pair
from ..ops.conv import ConvPlan
from ..ops.interp import interpolate, interpolate_backward
from ..ops.masks import Mask

IntOrPair = Union[int, Sequence[int]]
IMPLEMENTATIONS = ("auto", "c", "torch")

# Per mask (weakly: a cache entry dies with its mask): C plans by geometry, gather indices by device.
_plans: "weakref.WeakKeyDictionary[Mask, Dict[tuple, ConvPlan]]" = weakref.WeakKeyDictionary()
_indices: "weakref.WeakKeyDictionary[Mask, Dict[tuple, Tuple[torch.Tensor, torch.Tensor]]]" = \
    weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _pair(fn: str, name: str, v: IntOrPair, minimum: int) -> Tuple[int, int]:
    pair = to_pair(fn, name, v)
    if min(pair) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {pair}")
    return pair


def _padding(fn: str, padding: Union[str, IntOrPair], kernel: Tuple[int, int], stride: Tuple[int, int],
             dilation: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) of ``padding``: ints, a pair, ``"valid"`` or ``"same"`` (stride 1)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{fn}: padding='same' needs stride 1, got stride {stride}")
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2  # torch puts the odd one at the end
        raise ValueError(f"{fn}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = _pair(fn, "padding", padding, 0)
    return ph, ph, pw, pw


def conv_output_size(in_size: Sequence[int], kernel: IntOrPair, stride: IntOrPair = 1,
                     padding: Union[str, IntOrPair] = 0, dilation: IntOrPair = 1) -> Tuple[int, int]:
    """``(oh, ow)`` of a convolution (torch's arithmetic): the size a mask of it must have."""
    fn = "conv_output_size"
    k, s, d = _pair(fn, "kernel", kernel, 1), _pair(fn, "stride", stride, 1), _pair(fn, "dilation", dilation, 1)
    return _out_size(in_size, k, s, _padding(fn, padding, k, s, d), d)


def _out_size(in_size: Sequence[int], k: Tuple[int, int], s: Tuple[int, int], pads: Tuple[int, int, int, int],
              d: Tuple[int, int]) -> Tuple[int, int]:
    return ((int(in_size[0]) + pads[0] + pads[1] - d[0] * (k[0] - 1) - 1) // s[0] + 1,
            (int(in_size[1]) + pads[2] + pads[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1)


def _exporting() -> bool:
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch >= 2.6
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling() or exporting())


def c_path_reason(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  dilation: Tuple[int, int]) -> Optional[str]:
    """Why the C path cannot run this call, or ``None`` when it can."""
    if _exporting():
        return "the call is being traced, compiled or exported"
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.device.type != "cpu":
            return f"{name} is on {t.device} (the C path takes CPU tensors)"
        if t.dtype != torch.float32:
            return f"{name} is {t.dtype} (the C path takes torch.float32)"
    return None


def _plan(mask: Mask, key: tuple) -> ConvPlan:
    with _cache_lock:
        plans = _plans.setdefault(mask, {})
        plan = plans.get(key)
    if plan is None:
        n, c, hw, o, k, s, p, g, d = key
        plan = ConvPlan(n, c, hw, o, k, s, p, g, mask=mask, dilation=d)
        with _cache_lock:
            if len(plans) > 16:  # batch sizes come and go (the last batch of an epoch): keep a few
                plans.clear()
            plans[key] = plan
    return plan


class _PerforatedConvC(torch.autograd.Function):
    """libperforated forward and backward on CPU float32 tensors (explicit interpolation)."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan, mask):  # type: ignore[override]
        xn, wn = x.detach().numpy(), weight.detach().numpy()
        bn = bias.detach().numpy() if bias is not None else None
        compact = plan.forward(xn, wn, bn)
        y = torch.empty(plan.full_y_shape, dtype=torch.float32)
        interpolate(compact, mask, out=y.numpy())
        ctx.save_for_backward(x, weight)
        ctx.plan, ctx.mask, ctx.has_bias = plan, mask, bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        plan, mask = ctx.plan, ctx.mask
        dyn = dy.detach().to(torch.float32).contiguous().numpy()
        dc = interpolate_backward(dyn, mask)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.from_numpy(plan.backward_data(weight.detach().numpy(), dc))
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            dwn, dbn = plan.backward_filter(x.detach().numpy(), dc, need_bias=ctx.has_bias)
            dw = torch.from_numpy(dwn) if ctx.needs_input_grad[1] else None
            db = torch.from_numpy(dbn) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


def _gather_tables(mask: Mask, padded: Tuple[int, int], kernel: Tuple[int, int], stride: Tuple[int, int],
                   dilation: Tuple[int, int], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(fields, nearest): flat positions of the padded input read by each tap at each computed position
    (``[kh*kw*count]``, tap-major), and the mask's nearest map, as int64 tensors on `device`."""
    key = (padded, kernel, stride, dilation, str(device))
    with _cache_lock:
        hit = _indices.setdefault(mask, {}).get(key)
    if hit is not None:
        return hit
    wp = padded[1]
    ow = mask.shape[1]
    oy, ox = np.divmod(mask.indices.astype(np.int64), ow)
    base = oy * stride[0] * wp + ox * stride[1]
    taps = (np.arange(kernel[0])[:, None] * dilation[0] * wp + np.arange(kernel[1])[None, :] * dilation[1]).ravel()
    fields = torch.from_numpy((taps[:, None] + base[None, :]).ravel()).to(device)
    nearest = torch.from_numpy(mask.nearest.astype(np.int64)).to(device)
    with _cache_lock:
        _indices[mask][key] = (fields, nearest)
    return fields, nearest


def _pure(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: Tuple[int, int],
          pads: Tuple[int, int, int, int], dilation: Tuple[int, int], groups: int, mask: Mask) -> torch.Tensor:
    n, c = x.shape[:2]
    o, _, kh, kw = weight.shape
    top, bottom, left, right = pads
    xp = F.pad(x, (left, right, top, bottom)) if any(pads) else x
    hp, wp = xp.shape[2:]
    fields, nearest = _gather_tables(mask, (hp, wp), (kh, kw), stride, dilation, x.device)
    count = mask.count
    cols = xp.reshape(n, c, hp * wp).index_select(2, fields)            # [N, C, kh*kw*count]
    cols = cols.reshape(n, groups, (c // groups) * kh * kw, count)       # rows ordered (c, i, j)
    w = weight.reshape(groups, o // groups, (c // groups) * kh * kw)
    compact = torch.matmul(w, cols).reshape(n, o, count)
    if bias is not None:
        compact = compact + bias.reshape(1, o, 1)
    oh, ow = mask.shape
    return compact.index_select(2, nearest).reshape(n, o, oh, ow)


def perforated_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                      stride: IntOrPair = 1, padding: Union[str, IntOrPair] = 0, dilation: IntOrPair = 1,
                      groups: int = 1, mask: Optional[Mask] = None, implementation: str = "auto") -> torch.Tensor:
    """``torch.nn.functional.conv2d`` computed only at ``mask``'s positions, the rest filled from the
    nearest computed position (explicit interpolation). ``mask=None`` is the dense ``F.conv2d``.

    x: ``(N, C, H, W)``; weight: ``(Cout, C/groups, kh, kw)``; bias ``(Cout,)`` or None; stride, padding,
    dilation, groups as in ``F.conv2d`` (padding may be ``"valid"`` or ``"same"``). mask: a
    :class:`perforated.Mask` whose shape is the output size (:func:`conv_output_size`).
    implementation: ``"auto"``, ``"c"`` (libperforated; CPU float32) or ``"torch"``.
    Differentiable in x, weight and bias on both paths.
    """
    fn = "perforated_conv2d"
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{fn}: implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if mask is None:
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    if not isinstance(mask, Mask):
        raise TypeError(f"{fn}: mask must be a perforated.Mask or None, got {type(mask).__name__}")
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{fn}: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{fn}: weight must be (Cout, C/groups, kh, kw), got shape {tuple(weight.shape)}")
    if not isinstance(groups, int) or groups < 1 or x.shape[1] % groups or weight.shape[0] % groups:
        raise ValueError(f"{fn}: groups must be a positive int dividing C={x.shape[1]} and "
                         f"Cout={weight.shape[0]}, got {groups!r}")
    if weight.shape[1] * groups != x.shape[1]:
        raise ValueError(f"{fn}: weight must have C/groups = {x.shape[1] // groups} input channels, "
                         f"got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{fn}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    s, d = _pair(fn, "stride", stride, 1), _pair(fn, "dilation", dilation, 1)
    k = (int(weight.shape[2]), int(weight.shape[3]))
    pads = _padding(fn, padding, k, s, d)
    out = _out_size(x.shape[2:], k, s, pads, d)
    if min(out) < 1:
        raise ValueError(f"{fn}: the output would be empty ({out}) for input {tuple(x.shape[2:])}, kernel {k}")
    if tuple(mask.shape) != tuple(out):
        raise ValueError(f"{fn}: mask must have the output size {out}, got a mask of {tuple(mask.shape)}")

    reason = None if implementation == "torch" else c_path_reason(x, weight, bias, d)
    if implementation == "c" and reason is not None:
        raise ValueError(f"{fn}: implementation='c' cannot run: {reason}; use implementation='auto'")
    if implementation == "torch" or reason is not None:
        return _pure(x, weight, bias, s, pads, d, groups, mask)
    if pads[0] != pads[1] or pads[2] != pads[3]:  # asymmetric ('same' with an even kernel): pad once here
        x = F.pad(x, (pads[2], pads[3], pads[0], pads[1]))
        pads = (0, 0, 0, 0)
    x = x.contiguous()
    weight_c = weight.contiguous()
    bias_c = bias.contiguous() if bias is not None else None
    key = (int(x.shape[0]), int(x.shape[1]), (int(x.shape[2]), int(x.shape[3])), int(weight.shape[0]), k, s,
           (pads[0], pads[2]), groups, d)
    return _PerforatedConvC.apply(x, weight_c, bias_c, _plan(mask, key), mask)
