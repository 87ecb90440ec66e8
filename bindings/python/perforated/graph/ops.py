"""The ops of the graph IR: their normalised attributes and their shape inference (the one shape
inference of a graph: :func:`infer_shapes`). How each op runs is in :mod:`perforated.graph.kernels`.

Attributes (NCHW tensors; pairs are (h, w); pads are (top, left, bottom, right)):

  Conv                kernel, strides, pads, dilations, group [, relu]; inputs x, W [, B [, residual]]
                      (W, B constants; a residual of the output's shape is added before the ReLU)
  MaxPool, AveragePool  kernel, strides, pads, ceil_mode (0/1); AveragePool: count_include_pad (0/1)
  GlobalAveragePool, GlobalMaxPool
  BatchNormalization  epsilon; inputs x, scale, B, mean, var (constants)
  Relu; Clip          min, max (floats, -inf / inf for none)
  LRN                 size, alpha, beta, bias
  Add, Sub, Mul, Div  numpy broadcasting; Sum: any number of inputs
  Concat              axis
  Flatten             axis
  Reshape             shape (0 copies the input's dim, -1 is inferred)
  Transpose           perm
  Squeeze, Unsqueeze  axes
  Gemm                transA, transB, alpha, beta; inputs A, B [, C]
  MatMul
  Softmax             axis, coerce_2d (ONNX before opset 13: flatten at axis, softmax of each row)
  Dropout, Identity   the identity at inference
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Sequence

import numpy as np

from .ir import Graph, GraphError, Node, Shape


def _axis(node: Node, axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise node.fail(f"axis {axis} is out of range for a rank-{rank} input")
    return a


def _spatial_out(node: Node, size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                 dilation: int = 1, ceil_mode: int = 0) -> int:
    span = size + pad_begin + pad_end - ((kernel - 1) * dilation + 1)
    if span < 0:
        raise node.fail(f"the kernel ({kernel}, dilation {dilation}) is larger than the padded input "
                        f"({size} + {pad_begin} + {pad_end})")
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_begin:  # no window may start in the end padding
        out -= 1
    return out


def _nchw(node: Node, shape: Shape) -> Shape:
    if len(shape) != 4:
        raise node.fail(f"expects an NCHW input (rank 4), got shape {tuple(shape)}")
    return shape


def conv_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    n, c, h, w = _nchw(node, shapes[0])
    a = node.attrs
    wshape = shapes[1]
    g = a["group"]
    if len(wshape) != 4 or wshape[1] * g != c or wshape[0] % g:
        raise node.fail(f"weight shape {tuple(wshape)} does not fit {c} input channels in {g} group(s)")
    if tuple(wshape[2:]) != tuple(a["kernel"]):
        raise node.fail(f"attribute kernel_shape {a['kernel']} differs from the weight's {tuple(wshape[2:])}")
    if len(shapes) > 2 and tuple(shapes[2]) != (wshape[0],):
        raise node.fail(f"bias shape {tuple(shapes[2])} must be ({wshape[0]},)")
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = a["kernel"], a["strides"], a["pads"], a["dilations"]
    out = (n, wshape[0], _spatial_out(node, h, kh, sh, pt, pb, dh), _spatial_out(node, w, kw, sw, pl, pr, dw))
    if len(shapes) > 3 and tuple(shapes[3]) != out:
        raise node.fail(f"residual shape {tuple(shapes[3])} must be the output's {out}")
    return [out]


def pool_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    n, c, h, w = _nchw(node, shapes[0])
    a = node.attrs
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel"], a["strides"], a["pads"]
    ceil = a.get("ceil_mode", 0)
    return [(n, c, _spatial_out(node, h, kh, sh, pt, pb, 1, ceil), _spatial_out(node, w, kw, sw, pl, pr, 1, ceil))]


def global_pool_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    n, c, _, _ = _nchw(node, shapes[0])
    return [(n, c, 1, 1)]


def same_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    return [tuple(shapes[0])]


def batchnorm_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    c = shapes[0][1] if len(shapes[0]) > 1 else None
    for name, s in zip(("scale", "B", "mean", "var"), shapes[1:5]):
        if tuple(s) != (c,):
            raise node.fail(f"{name} has shape {tuple(s)}, expected ({c},)")
    return [tuple(shapes[0])]


def broadcast_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    try:
        return [tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))]
    except ValueError:
        raise node.fail(f"input shapes {[tuple(s) for s in shapes]} do not broadcast") from None


def concat_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    rank = len(shapes[0])
    axis = _axis(node, node.attrs["axis"], rank)
    for s in shapes[1:]:
        if len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != axis):
            raise node.fail(f"inputs {[tuple(x) for x in shapes]} differ outside axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return [tuple(out)]


def flatten_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    s = shapes[0]
    axis = node.attrs.get("axis", 1)
    axis = axis + len(s) if axis < 0 else axis
    if not 0 <= axis <= len(s):
        raise node.fail(f"axis {node.attrs.get('axis')} is out of range for shape {tuple(s)}")
    return [(int(np.prod(s[:axis], dtype=np.int64)), int(np.prod(s[axis:], dtype=np.int64)))]


def reshape_target(node: Node, shape: Shape, target: Sequence[int]) -> Shape:
    """ONNX Reshape's rule: 0 copies the input's dim, one -1 takes what is left."""
    out = [shape[i] if t == 0 and i < len(shape) else int(t) for i, t in enumerate(target)]
    total = int(np.prod(shape, dtype=np.int64))
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise node.fail(f"shape {list(target)} has more than one -1 or a negative dim")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            raise node.fail(f"cannot reshape {tuple(shape)} to {list(target)}")
        out[out.index(-1)] = total // known
    if int(np.prod(out, dtype=np.int64)) != total:
        raise node.fail(f"cannot reshape {tuple(shape)} ({total} elements) to {list(target)}")
    return tuple(out)


def reshape_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    return [reshape_target(node, tuple(shapes[0]), node.attrs["shape"])]


def transpose_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    s = shapes[0]
    perm = node.attrs.get("perm") or list(range(len(s)))[::-1]
    if sorted(perm) != list(range(len(s))):
        raise node.fail(f"perm {list(perm)} is not a permutation of the {len(s)} axes")
    return [tuple(s[p] for p in perm)]


def squeeze_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    s = shapes[0]
    axes = node.attrs.get("axes")
    axes = [i for i, d in enumerate(s) if d == 1] if axes is None else [_axis(node, a, len(s)) for a in axes]
    if any(s[a] != 1 for a in axes):
        raise node.fail(f"cannot squeeze axes {axes} of shape {tuple(s)}")
    return [tuple(d for i, d in enumerate(s) if i not in axes)]


def unsqueeze_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    s = list(shapes[0])
    rank = len(s) + len(node.attrs["axes"])
    for a in sorted(_axis(node, a, rank) for a in node.attrs["axes"]):
        s.insert(a, 1)
    return [tuple(s)]


def gemm_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    a, b = shapes[0], shapes[1]
    if len(a) != 2 or len(b) != 2:
        raise node.fail(f"A and B must be matrices, got shapes {tuple(a)} and {tuple(b)}")
    m, k = (a[1], a[0]) if node.attrs.get("transA") else (a[0], a[1])
    kb, n = (b[1], b[0]) if node.attrs.get("transB") else (b[0], b[1])
    if k != kb:
        raise node.fail(f"inner dimensions differ: A gives {k}, B gives {kb} (transA={node.attrs.get('transA', 0)}, "
                        f"transB={node.attrs.get('transB', 0)})")
    if len(shapes) > 2:
        try:
            np.broadcast_shapes(tuple(shapes[2]), (m, n))
        except ValueError:
            raise node.fail(f"C of shape {tuple(shapes[2])} does not broadcast to ({m}, {n})") from None
    return [(m, n)]


def matmul_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    a, b = shapes
    try:
        return [np.matmul(np.empty(a, np.float32), np.empty(b, np.float32)).shape]
    except ValueError:
        raise node.fail(f"shapes {tuple(a)} and {tuple(b)} do not multiply") from None


def softmax_shape(node: Node, shapes: Sequence[Shape]) -> List[Shape]:
    _axis(node, node.attrs.get("axis", -1), len(shapes[0]))
    return [tuple(shapes[0])]


InferFn = Callable[[Node, Sequence[Shape]], List[Shape]]

SHAPES: Dict[str, InferFn] = {
    "Conv": conv_shape,
    "MaxPool": pool_shape, "AveragePool": pool_shape,
    "GlobalAveragePool": global_pool_shape, "GlobalMaxPool": global_pool_shape,
    "BatchNormalization": batchnorm_shape,
    "Relu": same_shape, "Clip": same_shape, "LRN": same_shape,
    "Dropout": same_shape, "Identity": same_shape,
    "Add": broadcast_shape, "Sub": broadcast_shape, "Mul": broadcast_shape, "Div": broadcast_shape,
    "Sum": broadcast_shape,
    "Concat": concat_shape, "Flatten": flatten_shape, "Reshape": reshape_shape,
    "Transpose": transpose_shape, "Squeeze": squeeze_shape, "Unsqueeze": unsqueeze_shape,
    "Gemm": gemm_shape, "MatMul": matmul_shape, "Softmax": softmax_shape,
}

# Inputs that must be constants (weights), by op: their positions.
CONSTANT_INPUTS: Dict[str, Sequence[int]] = {"Conv": (1, 2), "BatchNormalization": (1, 2, 3, 4)}


def infer_shapes(graph: Graph) -> Dict[str, Shape]:
    """Shape of every value of `graph` (inputs, constants, node outputs), checking each node's
    attributes and inputs; the first problem raises GraphError naming the node."""
    shapes: Dict[str, Shape] = {k: tuple(v) for k, v in graph.inputs.items()}
    shapes.update({k: tuple(v.shape) for k, v in graph.constants.items()})
    for node in graph.nodes:
        infer = SHAPES.get(node.op)
        if infer is None:
            raise node.fail(f"op {node.op!r} is not supported; supported ops: {', '.join(sorted(SHAPES))}")
        for pos in CONSTANT_INPUTS.get(node.op, ()):
            if pos < len(node.inputs) and node.inputs[pos] and node.inputs[pos] not in graph.constants:
                raise node.fail(f"input {pos} ({node.inputs[pos]!r}) must be a constant (weights computed "
                                f"at run time are not supported)")
        outs = infer(node, [shapes[i] for i in node.inputs if i])
        for name, s in zip(node.outputs, outs):
            shapes[name] = tuple(int(d) for d in s)
    return shapes


def conv_nodes(graph: Graph) -> List[Node]:
    return [n for n in graph.nodes if n.op == "Conv"]


def conv_macs(node: Node, shapes: Mapping[str, Shape]) -> int:
    """Multiply-adds of one image through a dense conv node."""
    _, cout, oh, ow = shapes[node.outputs[0]]
    w = shapes[node.inputs[1]]
    return int(cout) * int(oh) * int(ow) * int(w[1]) * int(w[2]) * int(w[3])


__all__ = ["SHAPES", "CONSTANT_INPUTS", "infer_shapes", "conv_nodes", "conv_macs", "reshape_target",
           "GraphError"]
