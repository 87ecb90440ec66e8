"""Channels-last runners of graph IR ops: the CPU engine's layout (``(N, H*W, C)`` float32 arrays) for
the ops that have a form in it; convolutions run ``ConvPlan.forward_nhwc`` (micro-kernels on weights packed
once at build, bias and ReLU fused), a perforated conv's compact output is interpolated in the same layout.

``build(node, shapes, consts, mask, layouts)`` returns ``run(inputs) -> outputs`` producing
channels-last outputs, or None where the op (or this form of it) has no channels-last runner: then
:class:`perforated.graph.GraphModel` runs the NCHW kernel of :mod:`.kernels` on converted inputs.
``layouts`` gives each input's layout: "nhwc", "nchw" or "const".

Runners take their output arrays from ``buffers`` (a :class:`Buffers` pool the model keeps across
calls: a large fresh array costs page faults on every call, 5-10 ms for a 50 MB map) and give back
arrays they only used inside the call.
"""
from __future__ import annotations

from typing import Callable, List, Mapping, Optional, Sequence

import numpy as np

from ..ops.conv import ConvPlan
from ..ops.interp import interpolate_nhwc
from ..ops.layers import lrn_nhwc
from ..ops.layout import to_nhwc
from ..ops.masks import Mask
from .ir import Node, Shape
from .kernels import bn_affine, c_pool_plan
from .ops import pool_shape

Run = Callable[[Sequence[np.ndarray], "Buffers"], List[np.ndarray]]


class Buffers:
    """Float32 arrays by shape, reused: :meth:`take` one (a pooled one when there is one), :meth:`give`
    it back once nothing reads it."""

    def __init__(self) -> None:
        self._free: dict = {}
        self._mine: set = set()

    def take(self, shape) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        free = self._free.get(shape)
        if free:
            return free.pop()
        a = np.empty(shape, np.float32)
        self._mine.add(id(a))
        return a

    def give(self, a: np.ndarray) -> None:
        if id(a) in self._mine:
            self._free.setdefault(a.shape, []).append(a)

    def forget(self, a: np.ndarray) -> None:
        """`a` leaves the pool for good (handed to the caller)."""
        self._mine.discard(id(a))


def _conv(node: Node, shapes, consts, mask: Optional[Mask], layouts, input_mask: Optional[Mask] = None,
          compact_out: bool = False) -> Optional[Run]:
    a = node.attrs
    pt, pl, pb, pr = a["pads"]
    if (pt, pl) != (pb, pr):
        return None
    n, c, h, w = shapes[0]
    weight = np.ascontiguousarray(consts[node.inputs[1]], np.float32)
    bias = consts.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    plan = ConvPlan(n, c, (h, w), weight.shape[0], a["kernel"], a["strides"], (pt, pl), a["group"], mask=mask,
                    input_mask=input_mask, dilation=a["dilations"])
    packed = plan.pack_nhwc(weight)  # graph weights are constants: packed once, not at every call
    relu, convert = bool(a.get("relu")), layouts[0] == "nchw"
    residual = len(node.inputs) > 3
    if residual and mask is not None:
        return None  # a compact output cannot take a full-map residual
    convert_res = residual and layouts[3] == "nchw"

    def run(xs, buffers):
        x = to_nhwc(np.ascontiguousarray(xs[0], np.float32)) if convert else xs[0]
        res = None
        if residual:
            res = to_nhwc(np.ascontiguousarray(xs[3], np.float32)) if convert_res else xs[3]
        y = plan.forward_nhwc(x, packed, bias, relu=relu, out=buffers.take(plan.y_shape_nhwc), residual=res)
        if mask is None or compact_out:
            return [y]
        full = interpolate_nhwc(y, mask, out=buffers.take((n, mask.shape[0] * mask.shape[1], y.shape[2])))
        buffers.give(y)
        return [full]
    run.plan = plan
    return run


def _channel_vector(value: np.ndarray, c: int) -> Optional[np.ndarray]:
    """A constant that broadcasts per channel or as a scalar in NCHW, in its channels-last form."""
    v = np.asarray(value, np.float32)
    if v.size == 1:
        return v.reshape(())
    squeezed = [d for d in v.shape if d != 1]
    if squeezed == [c] and v.ndim >= 3 and v.shape[-3] == c:  # (C,1,1) or (1,C,1,1)
        return v.reshape(1, 1, c)
    return None


def _elementwise(fn):
    """fn(node, out, *inputs) writes into out (a pooled array of the broadcast shape)."""
    def build(node: Node, shapes, consts, mask, layouts) -> Optional[Run]:
        main = [s for s, lay in zip(shapes, layouts) if lay != "const"]
        if not main or any(lay == "nchw" for lay in layouts) or any(tuple(s) != tuple(main[0]) for s in main):
            return None
        c = main[0][1]
        args = []
        for name, lay in zip([i for i in node.inputs if i], layouts):
            if lay == "const":
                v = _channel_vector(consts[name], c)
                if v is None:
                    return None
                args.append(v)
            else:
                args.append(None)

        relu = bool(node.attrs.get("relu"))

        def run(xs, buffers):
            vals = [x if v is None else v for x, v in zip(xs, args)]
            main_x = next(x for x, v in zip(xs, args) if v is None)
            out = buffers.take(main_x.shape)
            fn(node, out, *vals)
            if relu:
                np.maximum(out, 0, out=out)
            return [out]
        return run
    return build


def _sum(node, out, *xs):
    if len(xs) == 1:
        np.copyto(out, xs[0])
        return
    np.add(xs[0], xs[1], out=out)
    for x in xs[2:]:
        out += x


def _pool(mode: str):
    def build(node: Node, shapes, consts, mask, layouts, input_mask: Optional[Mask] = None) -> Optional[Run]:
        if layouts[0] != "nhwc":
            return None
        plan = c_pool_plan(node, shapes[0], mode, input_mask)
        if plan is None:
            return None
        n, c = shapes[0][:2]
        oh, ow = pool_shape(node, shapes)[0][2:]
        ph, pw = plan.out_size

        def run(xs, buffers):
            y = plan.forward_nhwc(xs[0], out=buffers.take((n, ph * pw, c)))
            if (ph, pw) != (oh, ow):
                cut = buffers.take((n, oh * ow, c))
                np.copyto(cut.reshape(n, oh, ow, c), y.reshape(n, ph, pw, c)[:, :oh, :ow])
                buffers.give(y)
                y = cut
            return [y]
        return run
    return build


def _global_avg(node, shapes, consts, mask, layouts, input_mask: Optional[Mask] = None) -> Optional[Run]:
    if layouts[0] != "nhwc":
        return None
    if input_mask is None:
        return lambda xs, buffers: [xs[0].mean(axis=1, keepdims=True, dtype=np.float32)]
    # the mean of the interpolated map: each kept position weighs the positions it fills
    weight = (np.bincount(input_mask.nearest, minlength=input_mask.count) / input_mask.nearest.size).astype(np.float32)
    return lambda xs, buffers: [np.einsum("k,nkc->nc", weight, xs[0])[:, None, :]]


def _concat(node, shapes, consts, mask, layouts) -> Optional[Run]:
    if any(lay != "nhwc" for lay in layouts) or node.attrs["axis"] % 4 != 1:
        return None
    def run(xs, buffers):
        n, s_ = xs[0].shape[:2]
        return [np.concatenate(xs, axis=2, out=buffers.take((n, s_, sum(x.shape[2] for x in xs))))]
    return run


def _batchnorm(node, shapes, consts, mask, layouts) -> Optional[Run]:
    if layouts[0] != "nhwc":
        return None
    mul, add = bn_affine(node, consts)
    return lambda xs, buffers: [xs[0] * mul + add]


def _lrn(node, shapes, consts, mask, layouts) -> Optional[Run]:
    a = node.attrs
    if layouts[0] != "nhwc" or a["size"] % 2 == 0:
        return None
    return lambda xs, buffers: [lrn_nhwc(xs[0], a["size"], a["alpha"], a["beta"], a["bias"],
                                          out=buffers.take(xs[0].shape))]


def _unary(fn):
    def build(node, shapes, consts, mask, layouts) -> Optional[Run]:
        if layouts[0] != "nhwc":
            return None
        return lambda xs, buffers: [fn(node, xs[0], buffers.take(xs[0].shape))]
    return build


BUILDERS = {
    "Conv": _conv,
    "Relu": _unary(lambda node, x, out: np.maximum(x, 0, out=out)),
    "Clip": _unary(lambda node, x, out: np.clip(x, node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf),
                                                out=out)),
    "Dropout": _unary(lambda node, x, out: np.copyto(out, x) or out),
    "Identity": _unary(lambda node, x, out: np.copyto(out, x) or out),
    "Add": _elementwise(lambda node, out, a, b: np.add(a, b, out=out)),
    "Sub": _elementwise(lambda node, out, a, b: np.subtract(a, b, out=out)),
    "Mul": _elementwise(lambda node, out, a, b: np.multiply(a, b, out=out)),
    "Div": _elementwise(lambda node, out, a, b: np.divide(a, b, out=out)),
    "Sum": _elementwise(_sum),
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_avg, "Concat": _concat,
    "BatchNormalization": _batchnorm, "LRN": _lrn,
}


def build(node: Node, shapes: Sequence[Shape], consts: Mapping[str, np.ndarray], mask: Optional[Mask],
          layouts: Sequence[str], input_mask: Optional[Mask] = None, compact_out: bool = False) -> Optional[Run]:
    """The channels-last runner of `node`, or None (see the module docstring). ``input_mask`` when input 0
    is compact (layout "compact"): convolutions and pooling read it through the mask's nearest map
    (implicit interpolation); position-wise ops, adds and concats compute on the compact arrays as they
    are. ``compact_out``: a conv leaves its output compact (on its mask)."""
    if node.op == "Conv":
        return _conv(node, shapes, consts, mask, layouts, input_mask, compact_out)
    main = [s for s, lay in zip(shapes, layouts) if lay != "const"]
    if not main or len(main[0]) != 4:
        return None
    builder = BUILDERS.get(node.op)
    if builder is None:
        return None
    layouts = ["nhwc" if lay == "compact" else lay for lay in layouts]  # compact arrays are (N, count, C)
    if node.op in ("MaxPool", "AveragePool", "GlobalAveragePool"):
        return builder(node, shapes, consts, mask, layouts, input_mask)
    return builder(node, shapes, consts, mask, layouts)
