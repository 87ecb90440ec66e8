"""The paper's networks in the graph IR: rows (:mod:`.networks`) as IR nodes, and everything rows are
measured by (output shapes, weight shapes, conv output sizes, multiply-adds) through the IR's one
shape inference (:data:`perforated.graph.ops.SHAPES`).

A row becomes the ONNX-form node of :mod:`.ops`: ``conv`` a Conv (constants ``<name>/W``, ``<name>/B``),
``relu`` a Relu, ``dropout`` a Dropout (the identity at inference), ``lrn`` an LRN, ``pool`` a
MaxPool / AveragePool in ceil mode without padded positions in the average (Caffe's pooling, which
the library runs) or a GlobalAveragePool, ``fc`` a Gemm with ``transB = 1`` (a Flatten before the
first). :func:`to_graph` closes the graph with a Flatten when the network ends on a map and, if
asked, a Softmax; its input is ``x`` and its output ``y``.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..ops.masks import Mask, grid_shape
from .ir import Graph, Node, Shape
from .networks import Row
from .ops import SHAPES

Weights = Mapping[str, Mapping[str, np.ndarray]]


def pair(v) -> Tuple[int, int]:
    """An int or an (h, w) pair as a pair: rows may give non-square kernels (low-rank layers)."""
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _row_nodes(kind: str, name: str, p: dict, x: str, shape: Shape) -> Tuple[List[Node], Dict[str, Shape]]:
    """The nodes of one row reading value `x` of `shape`, and the shapes of the constants they read."""
    if kind == "conv":
        (kh, kw), (sh, sw), (ph, pw) = pair(p["kernel"]), pair(p.get("stride", 1)), pair(p.get("pad", 0))
        g = int(p.get("groups", 1))
        consts = {name + "/W": (p["out"], shape[1] // g, kh, kw), name + "/B": (p["out"],)}
        attrs = dict(kernel=(kh, kw), strides=(sh, sw), pads=(ph, pw, ph, pw), dilations=(1, 1), group=g)
        return [Node(name, "Conv", [x, name + "/W", name + "/B"], [name], attrs)], consts
    if kind == "relu":
        return [Node(name, "Relu", [x], [name])], {}
    if kind == "dropout":
        return [Node(name, "Dropout", [x], [name])], {}
    if kind == "lrn":
        attrs = dict(size=int(p["size"]), alpha=float(p["alpha"]), beta=float(p["beta"]), bias=float(p["k"]))
        return [Node(name, "LRN", [x], [name], attrs)], {}
    if kind == "pool" and p.get("global_"):
        if p.get("mode", "avg") != "avg":
            raise ValueError(f"row {name!r}: a global pooling must be mode 'avg', got {p.get('mode')!r}")
        return [Node(name, "GlobalAveragePool", [x], [name])], {}
    if kind == "pool":
        if p["mode"] not in ("max", "avg"):
            raise ValueError(f"row {name!r}: pooling mode must be 'max' or 'avg', got {p['mode']!r}")
        pad = pair(p.get("pad", 0))
        attrs = dict(kernel=pair(p["kernel"]), strides=pair(p["stride"]), pads=pad + pad, ceil_mode=1)
        if p["mode"] == "avg":
            attrs["count_include_pad"] = 0
        return [Node(name, "MaxPool" if p["mode"] == "max" else "AveragePool", [x], [name], attrs)], {}
    if kind == "fc":
        nodes = []
        if len(shape) != 2:
            nodes.append(Node(name + "/flatten", "Flatten", [x], [name + "/flat"], dict(axis=1)))
            x = name + "/flat"
        features = int(np.prod(shape[1:]))
        consts = {name + "/W": (p["out"], features), name + "/B": (p["out"],)}
        nodes.append(Node(name, "Gemm", [x, name + "/W", name + "/B"], [name],
                          dict(transA=0, transB=1, alpha=1.0, beta=1.0)))
        return nodes, consts
    raise ValueError(f"row {name!r}: unknown layer kind {kind!r}")


def _walk(rows: Sequence[Row], input_shape: Sequence[int], batch: int = 1,
          grids: Optional[Mapping[str, Tuple[int, int]]] = None
          ) -> Iterator[Tuple[Row, List[Node], Dict[str, Shape], Shape]]:
    """Per row: the row, its nodes, its constants' shapes and its output shape (batch first), each node's
    shape inferred by the IR's rule as the graph is built. A conv named in `grids` hands the next row that
    (h, w) instead of its output size (a fractional-stride conv, whose output is its mask's grid)."""
    shape: Shape = (int(batch),) + tuple(int(d) for d in input_shape)
    x = "x"
    for kind, name, p in rows:
        nodes, consts = _row_nodes(kind, name, p, x, shape)
        for node in nodes:
            shape = SHAPES[node.op](node, [shape] + [consts[i] for i in node.inputs[1:]])[0]
        if grids and name in grids:
            shape = tuple(shape[:2]) + tuple(grids[name])
        yield (kind, name, p), nodes, consts, tuple(int(d) for d in shape)
        x = nodes[-1].outputs[0]


def trace(rows: Sequence[Row], input_shape: Sequence[int], batch: int = 1) -> Dict[str, Shape]:
    """Row name -> output shape, ``(batch, C, H, W)`` for maps and ``(batch, features)`` after an fc."""
    return {row[1]: shape for row, _, _, shape in _walk(rows, input_shape, batch)}


def weight_shapes(rows: Sequence[Row], input_shape: Sequence[int]) -> Dict[str, Tuple[Shape, Shape]]:
    """Layer name -> (weight shape, bias shape) of every conv ``(out, in / groups, kh, kw)`` and fc
    ``(out, in)`` layer (Caffe / PyTorch layout)."""
    out = {}
    for (kind, name, _), _, consts, _ in _walk(rows, input_shape):
        if kind in ("conv", "fc"):
            out[name] = (consts[name + "/W"], consts[name + "/B"])
    return out


def conv_output_sizes(rows: Sequence[Row], input_shape: Sequence[int],
                      masks: Optional[Mapping[str, Mask]] = None) -> Dict[str, Tuple[int, int]]:
    """Output ``(h, w)`` of every conv layer of ``rows`` on a ``(c, h, w)`` input. A fractional-stride
    conv (``"fractional"`` in its row) with a mask in ``masks`` hands the next layer its grid."""
    masks = masks or {}
    grids = {name: grid_shape(masks[name]) for kind, name, p in rows
             if kind == "conv" and p.get("fractional") and name in masks}
    return {row[1]: tuple(shape[2:]) for row, _, _, shape in _walk(rows, input_shape, 1, grids) if row[0] == "conv"}


def layer_costs(rows: Sequence[Row], input_shape: Sequence[int], counts: Optional[Mapping[str, int]] = None
                ) -> Tuple[int, Dict[str, dict]]:
    """Multiply-adds per image of ``rows`` (the rule of :meth:`Model.multiply_adds`: a perforated conv
    counts ``counts[name]`` positions and 1x1 stride-1 convs after it run on its compact tensor), and per
    conv / fc layer its geometry: ``c_in, h_in, w_in, oh, ow, positions, macs`` (conv) or ``c_in, out,
    macs`` (fc)."""
    counts = counts or {}
    count: Optional[int] = None  # computed positions of the current tensor when it is compact
    total, info = 0, {}
    shape: Shape = (1,) + tuple(int(d) for d in input_shape)
    for (kind, name, p), _, consts, out in _walk(rows, input_shape):
        if kind == "conv":
            (kh, kw), g = pair(p["kernel"]), int(p.get("groups", 1))
            pointwise = (kh, kw) == (1, 1) and pair(p.get("stride", 1)) == (1, 1) and pair(p.get("pad", 0)) == (0, 0)
            if not (count is not None and pointwise):
                count = counts.get(name)
            positions = count if count is not None else out[2] * out[3]
            macs = positions * int(np.prod(consts[name + "/W"]))
            info[name] = dict(c_in=shape[1], h_in=shape[2], w_in=shape[3], groups=g, kernel=(kh, kw),
                              oh=out[2], ow=out[3], positions=positions, macs=macs)
            total += macs
        elif kind == "pool":
            count = None
        elif kind == "fc":
            macs = int(np.prod(consts[name + "/W"]))
            info[name] = dict(c_in=consts[name + "/W"][1], out=p["out"], macs=macs)
            total += macs
            count = None
        shape = out
    return total, info


def to_graph(rows: Sequence[Row], input_shape: Sequence[int], batch: int = 1, weights: Optional[Weights] = None,
             softmax: bool = False, name: str = "network") -> Graph:
    """The network of `rows` as a :class:`Graph` on a ``(batch, *input_shape)`` input ``x``, output ``y``
    (``(batch, classes)`` logits, or probabilities with `softmax`). `weights`: ``{layer: {"weight": W,
    "bias": b}}`` in the layout of :func:`weight_shapes`, checked; without them every constant is a
    zero-filled read-only view of one float (no memory: a graph for its shapes, costs and structure)."""
    nodes: List[Node] = []
    constants: Dict[str, np.ndarray] = {}
    shape: Shape = ()
    for (kind, lname, _), row_nodes, consts, shape in _walk(rows, input_shape, batch):
        nodes += row_nodes
        for cname, cshape in consts.items():
            if weights is None:
                constants[cname] = np.broadcast_to(np.float32(0), cshape)
                continue
            key = "weight" if cname.endswith("/W") else "bias"
            if lname not in weights or key not in weights[lname]:
                raise ValueError(f"weights: missing {key!r} of layer {lname!r}")
            arr = np.ascontiguousarray(weights[lname][key], np.float32)
            if arr.shape != tuple(cshape):
                raise ValueError(f"weights[{lname!r}][{key!r}]: shape {arr.shape}, expected {tuple(cshape)}")
            constants[cname] = arr
    last = nodes[-1].outputs[0]
    if len(shape) != 2:  # ends on a map (NIN's global pooling): (N, classes, 1, 1) -> (N, classes)
        nodes.append(Node("logits/flatten", "Flatten", [last], ["logits"], dict(axis=1)))
        last = "logits"
    nodes.append(Node("y", "Softmax", [last], ["y"], dict(axis=1, coerce_2d=0)) if softmax
                 else Node("y", "Identity", [last], ["y"]))
    return Graph({"x": (int(batch),) + tuple(int(d) for d in input_shape)}, ["y"], nodes, constants, name)
