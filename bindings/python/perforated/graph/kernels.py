"""How each op of the graph IR runs on the CPU (float32 NCHW numpy arrays): convolution, pooling and
LRN on the C library's plans; the glue (elementwise, concat, reshape, Gemm through numpy's BLAS)
in numpy. ``build(node, shapes, constants, mask)`` returns ``run(inputs) -> outputs`` with the plans
made once; attributes the kernels cannot honour raise GraphError here, before anything runs.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..ops import batchnorm as BN
from ..ops.conv import ConvPlan
from ..ops.interp import interpolate
from ..ops.layers import linear, lrn
from ..ops.masks import Mask
from ..ops.pooling import PoolPlan, global_avg_pool2d
from .ir import Node, Shape
from .ops import pool_shape, reshape_target

Run = Callable[[Sequence[np.ndarray]], List[np.ndarray]]


def _conv(node: Node, shapes: Sequence[Shape], consts: Mapping[str, np.ndarray], mask: Optional[Mask]) -> Run:
    a = node.attrs
    n, c, h, w = shapes[0]
    weight = np.ascontiguousarray(consts[node.inputs[1]], np.float32)
    bias = consts.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    pt, pl, pb, pr = a["pads"]
    symmetric = pt == pb and pl == pr
    pad = (pt, pl) if symmetric else (0, 0)
    size = (h, w) if symmetric else (h + pt + pb, w + pl + pr)
    plan = ConvPlan(n, c, size, weight.shape[0], a["kernel"], a["strides"], pad, a["group"], mask=mask,
                    dilation=a["dilations"])
    relu, residual = bool(a.get("relu")), len(node.inputs) > 3

    def run(xs):
        x = xs[0]
        if not symmetric:  # asymmetric padding: an explicit zero border, then an unpadded conv
            x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        y = plan.forward(np.ascontiguousarray(x, np.float32), weight, bias)
        if residual:
            y = interpolate(y, mask) if mask is not None else y
            y += xs[3]
            return [np.maximum(y, 0, out=y) if relu else y]
        if relu:
            np.maximum(y, 0, out=y)
        return [interpolate(y, mask) if mask is not None else y]
    run.plan = plan
    return run


def _pool_windows(node: Node, x: np.ndarray, out_hw, mode: str) -> np.ndarray:
    """Pooling by shifted slices of a padded copy (the forms the C pooling does not cover: windows
    starting in a padding wider than the kernel allows, count_include_pad)."""
    a = node.attrs
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel"], a["strides"], a["pads"]
    n, c, h, w = x.shape
    oh, ow = out_hw
    need_h, need_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    fill = -np.inf if mode == "max" else 0.0
    padded = np.full((n, c, need_h, need_w), fill, np.float32)
    inside = np.zeros((need_h, need_w), np.float32)  # 1 on the map
    rows, cols = slice(pt, min(pt + h, need_h)), slice(pl, min(pl + w, need_w))
    padded[:, :, rows, cols] = x[:, :, :rows.stop - pt, :cols.stop - pl]
    inside[rows, cols] = 1.0
    if a.get("count_include_pad"):  # the padding counts, the region past it does not
        inside[:min(pt + h + pb, need_h), :min(pl + w + pr, need_w)] = 1.0
    acc = np.full((n, c, oh, ow), fill, np.float32)
    count = np.zeros((oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            win = padded[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            if mode == "max":
                np.maximum(acc, win, out=acc)
            else:
                acc += win
                count += inside[i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
    return acc if mode == "max" else acc / count


def c_pool_plan(node: Node, shape: Shape, mode: str, input_mask: Optional[Mask] = None) -> Optional[PoolPlan]:
    """The C pooling plan of a pooling node, or None where it cannot give ONNX's answer. Its windows
    start at o*stride - pad_begin and are clipped to the map, like ONNX's; it averages over the map only
    (count_include_pad=0) and gives at least as many outputs as ONNX's floor mode: the first oh x ow
    of its outputs are the answer. With `input_mask` it reads a compact input through the mask."""
    a = node.attrs
    n, c, h, w = shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel"], a["strides"], a["pads"]
    if pt >= kh or pl >= kw or (mode == "avg" and a.get("count_include_pad") and (pt or pl or pb or pr)):
        return None
    try:
        plan = PoolPlan(n, c, (h, w), (kh, kw), (sh, sw), (pt, pl), mode, input_mask=input_mask)
    except ValueError:
        return None
    oh, ow = pool_shape(node, [shape])[0][2:]
    return plan if plan.out_size[0] >= oh and plan.out_size[1] >= ow else None


def _pool(mode: str):
    def build(node: Node, shapes: Sequence[Shape], consts, mask) -> Run:
        oh, ow = pool_shape(node, shapes)[0][2:]
        plan = c_pool_plan(node, shapes[0], mode)

        def run(xs):
            x = np.ascontiguousarray(xs[0], np.float32)
            if plan is None:
                return [_pool_windows(node, x, (oh, ow), mode)]
            y = plan.forward(x)
            if plan.out_size != (oh, ow):
                y = np.ascontiguousarray(y[:, :, :oh, :ow])
            return [y]
        return run
    return build


def _global_pool(mode: str):
    def build(node, shapes, consts, mask) -> Run:
        if mode == "avg":
            return lambda xs: [global_avg_pool2d(np.ascontiguousarray(xs[0], np.float32))]
        return lambda xs: [xs[0].max(axis=(2, 3), keepdims=True)]
    return build


def bn_affine(node: Node, consts: Mapping[str, np.ndarray]):
    """(scale, shift) float32 of a BatchNormalization node: y = x * scale + shift per channel."""
    gamma, beta, mean, var = (consts[i] for i in node.inputs[1:5])
    return BN.affine(gamma, beta, mean, var, np.zeros_like(np.asarray(mean)), node.attrs.get("epsilon", 1e-5))


def _batchnorm(node: Node, shapes, consts, mask) -> Run:
    mul, add = bn_affine(node, consts)
    shape = (1, -1) + (1,) * (len(shapes[0]) - 2)
    mul, add = mul.reshape(shape), add.reshape(shape)
    return lambda xs: [xs[0] * mul + add]


def _lrn(node: Node, shapes, consts, mask) -> Run:
    a = node.attrs
    if a["size"] % 2 == 0:
        raise node.fail(f"attribute size={a['size']} must be odd")
    if len(shapes[0]) != 4:
        raise node.fail(f"expects an NCHW input, got shape {tuple(shapes[0])}")
    return lambda xs: [lrn(np.ascontiguousarray(xs[0], np.float32), a["size"], a["alpha"], a["beta"], a["bias"])]


def _gemm(node: Node, shapes, consts, mask) -> Run:
    a = node.attrs
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = bool(a.get("transA")), bool(a.get("transB"))
    b_const = consts.get(node.inputs[1])
    fc = _fc_form(node, shapes, consts, alpha, beta, ta, tb)
    if fc is not None:  # the layer form: the C library's fully connected layer, weights made once
        weight, bias = fc
        return lambda xs: [linear(np.ascontiguousarray(xs[0], np.float32), weight, bias)]
    # a constant B (the weights) is transposed once, contiguous: BLAS then reads it in its own order
    b_ready = None if b_const is None else np.ascontiguousarray(b_const.T if tb else b_const, np.float32)

    def run(xs):
        A = xs[0].T if ta else xs[0]
        B = b_ready if b_ready is not None else (xs[1].T if tb else xs[1])
        y = A @ B
        if alpha != 1.0:
            y *= np.float32(alpha)
        if len(xs) > 2 and beta != 0.0:
            y += xs[2] if beta == 1.0 else np.float32(beta) * xs[2]
        return [y]
    return run


def _fc_form(node: Node, shapes, consts, alpha: float, beta: float, ta: bool, tb: bool):
    """``(weight (out, in), bias (out,) or None)`` when the Gemm is a fully connected layer: 2-D float
    input A (not transposed), constant B, C absent or a constant that broadcasts as one value per output;
    else None. alpha and beta are folded into the weight and bias. The C layer runs on the library's
    OpenMP threads: numpy's matmul, whose BLAS keeps threads of its own, measured 20 ms instead of 0.9 on
    ResNet-50's last layer (2048 -> 1000, batch 16) inside a network (2-vCPU AMD EPYC)."""
    b_const = consts.get(node.inputs[1])
    if ta or b_const is None or b_const.ndim != 2 or len(shapes[0]) != 2:
        return None
    weight = np.ascontiguousarray((b_const if tb else b_const.T) * np.float32(alpha), np.float32)
    if weight.shape[1] != shapes[0][1]:
        return None
    bias = None
    if len(node.inputs) > 2 and node.inputs[2] and beta != 0.0:
        c = consts.get(node.inputs[2])
        if c is None or c.size not in (1, weight.shape[0]) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            return None
        bias = np.ascontiguousarray(np.broadcast_to(np.asarray(c, np.float32).reshape(-1) * np.float32(beta),
                                                    (weight.shape[0],)), np.float32)
    return weight, bias


def _softmax(node: Node, shapes, consts, mask) -> Run:
    a = node.attrs
    rank = len(shapes[0])
    axis = a.get("axis", -1) % rank

    def run(xs):
        x = xs[0]
        if a.get("coerce_2d"):
            x2 = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
            e = np.exp(x2 - x2.max(axis=1, keepdims=True))
            return [(e / e.sum(axis=1, keepdims=True)).reshape(x.shape)]
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return [e / e.sum(axis=axis, keepdims=True)]
    return run


def _numpy(fn: Callable[..., np.ndarray]):
    def build(node, shapes, consts, mask) -> Run:
        return lambda xs: [fn(node, *xs)]
    return build


def _sum(node, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _clip(node, x, *_):
    return np.clip(x, node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)).astype(x.dtype, copy=False)


def _unsqueeze(node, x):
    rank = x.ndim + len(node.attrs["axes"])
    return np.expand_dims(x, tuple(sorted(a % rank for a in node.attrs["axes"])))


def _squeeze(node, x):
    axes = node.attrs.get("axes")
    return np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))


BUILDERS: Dict[str, Callable[..., Run]] = {
    "Conv": _conv,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool("avg"), "GlobalMaxPool": _global_pool("max"),
    "BatchNormalization": _batchnorm, "LRN": _lrn, "Gemm": _gemm, "Softmax": _softmax,
    "Relu": _numpy(lambda node, x: np.maximum(x, 0, dtype=x.dtype)),
    "Clip": _numpy(_clip),
    "Dropout": _numpy(lambda node, x, *_: x), "Identity": _numpy(lambda node, x: x),
    "Add": _numpy(lambda node, a, b: a + b), "Sub": _numpy(lambda node, a, b: a - b),
    "Mul": _numpy(lambda node, a, b: a * b), "Div": _numpy(lambda node, a, b: a / b),
    "Sum": _numpy(_sum),
    "Concat": _numpy(lambda node, *xs: np.concatenate(xs, axis=node.attrs["axis"])),
    "Flatten": _numpy(lambda node, x: x.reshape(int(np.prod(x.shape[:node.attrs.get("axis", 1) % (x.ndim + 1)],
                                                            dtype=np.int64)), -1)),
    "Reshape": _numpy(lambda node, x: x.reshape(reshape_target(node, x.shape, node.attrs["shape"]))),
    "Transpose": _numpy(lambda node, x: np.ascontiguousarray(np.transpose(x, node.attrs.get("perm")))),
    "Squeeze": _numpy(_squeeze), "Unsqueeze": _numpy(_unsqueeze),
    "MatMul": _numpy(lambda node, a, b: a @ b),
}


def build(node: Node, shapes: Sequence[Shape], consts: Mapping[str, np.ndarray],
          mask: Optional[Mask] = None) -> Run:
    """The runner of one node, given its input shapes (and its perforation mask: Conv only)."""
    if mask is not None and node.op != "Conv":
        raise node.fail("only Conv nodes can be perforated")
    run = BUILDERS[node.op](node, shapes, consts, mask)
    if node.op == "Conv" or not node.attrs.get("relu"):
        return run

    def with_relu(xs):  # a ReLU fused into an elementwise node (graph.passes.fuse_relu)
        return [np.maximum(y, 0, out=y) for y in run(xs)]
    return with_relu
