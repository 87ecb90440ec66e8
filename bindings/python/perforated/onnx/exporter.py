"""Graph IR -> ONNX in standard ops only (opset 13): a perforated network that runs in stock ONNX Runtime
or OpenVINO, no custom operator.

A perforated convolution becomes the same mathematics as ours (SPEC: compute the kept positions,
fill the rest from the nearest kept one):

  Pad -> Transpose to channels-last (N, Hp*Wp, C) -> Gather(axis 1, receptive-field table [count, kh*kw])
  -> Reshape (N, count, kh*kw*C) -> MatMul with the weights as (kh*kw*C, Cout) (per group: batched)
  -> Add bias [-> Relu] -> Gather(axis 1, nearest map [h*w]) -> Transpose / Reshape (N, Cout, h, w)

Channels-last, every gathered element is a run of C (or Cout) contiguous floats: a Gather along an
NCHW map's last axis copies one float at a time (ONNX Runtime ran that form at 0.43x its dense ResNet-50).

Every other node is written as the ONNX op it came from (batch norms folded and ReLUs fused by the
graph passes are written as the conv with its folded weights, or the add, then Relu).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import numpy as np

from ..graph.ir import Graph, Node, Shape
from ..graph.ops import infer_shapes
from ..ops.masks import Mask
from ..graph.graph_model import GraphModel
from .importer import _onnx

OPSET = 13


class _Writer:
    def __init__(self, graph: Graph, shapes: Mapping[str, Shape], masks: Mapping[str, Mask]):
        self.graph, self.shapes, self.masks = graph, shapes, masks
        self.nodes: List = []
        self.inits: Dict[str, np.ndarray] = {}
        self.counter = 0

    def const(self, hint: str, value: np.ndarray) -> str:
        self.counter += 1
        name = f"{hint}__{self.counter}"
        self.inits[name] = np.asarray(value)
        return name

    def tmp(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}__t{self.counter}"

    def add(self, op: str, inputs: List[str], outputs: List[str], name: str, **attrs) -> None:
        _, helper, _ = _onnx()
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))

    # -- nodes -------------------------------------------------------------------------------------------

    def conv(self, node: Node) -> None:
        a = node.attrs
        mask = self.masks.get(node.name)
        out = node.outputs[0]
        relu, residual = bool(a.get("relu")), len(node.inputs) > 3
        conv_out = self.tmp(node.name + "/pre_add") if (relu or residual) else out
        if mask is None:
            self.add("Conv", list(node.inputs[:3]), [conv_out], node.name, kernel_shape=list(a["kernel"]),
                     strides=list(a["strides"]), pads=list(a["pads"]), dilations=list(a["dilations"]),
                     group=int(a["group"]))
        else:
            self.perforated_conv(node, mask, conv_out)
        if residual:  # a shortcut fused by graph.passes.fuse_residual
            summed = self.tmp(node.name + "/pre_relu") if relu else out
            self.add("Add", [conv_out, node.inputs[3]], [summed], node.name + "/residual")
            conv_out = summed
        if relu:
            self.add("Relu", [conv_out], [out], node.name + "/relu")

    def perforated_conv(self, node: Node, mask, out: str) -> None:
        a = node.attrs
        shapes = self.shapes
        n, c, h, w = shapes[node.inputs[0]]
        weight = np.asarray(self.graph.constants[node.inputs[1]], np.float32)
        cout = weight.shape[0]
        g = int(a["group"])
        cg, coutg = c // g, cout // g
        (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel"], a["strides"], a["pads"]
        dh, dw = a["dilations"]
        hp, wp = h + pt + pb, w + pl + pr
        oh, ow = shapes[node.outputs[0]][2:]
        name = node.name
        x = node.inputs[0]
        if pt or pl or pb or pr:
            padded = self.tmp(name + "/padded")
            self.add("Pad", [x, self.const(name + "/pads", np.array([0, 0, pt, pl, 0, 0, pb, pr], np.int64))],
                     [padded], name + "/pad")
            x = padded
        # channels last, so that every gathered element is a run of C contiguous floats (a Gather along
        # the last axis copies one float at a time)
        nhwc = self.tmp(name + "/nhwc")
        self.add("Transpose", [x], [nhwc], name + "/channels_last", perm=[0, 2, 3, 1])
        flat = self.tmp(name + "/flat")
        self.add("Reshape", [nhwc, self.const(name + "/flat_shape", np.array([0, hp * wp, c], np.int64))], [flat],
                 name + "/flatten")
        # receptive field of each kept position, in the padded map: table[j, ki*kw + kj]
        idx = mask.indices.astype(np.int64)
        oy, ox = idx // ow, idx % ow
        ki, kj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
        table = (oy[:, None] * sh + dh * ki.reshape(1, -1)) * wp + (ox[:, None] * sw + dw * kj.reshape(1, -1))
        count, kk = table.shape
        fields = self.tmp(name + "/fields")  # (N, count, kk, C)
        self.add("Gather", [flat, self.const(name + "/field_table", table)], [fields], name + "/gather_fields", axis=1)
        prod = self.tmp(name + "/product")
        if g == 1:
            rows = self.tmp(name + "/rows")
            self.add("Reshape", [fields, self.const(name + "/row_shape", np.array([0, count, kk * c], np.int64))],
                     [rows], name + "/im2row")
            wmat = weight.transpose(2, 3, 1, 0).reshape(kk * c, cout).copy()  # rows (ki, kj, c)
            self.add("MatMul", [rows, self.const(name + "/weight_matrix", wmat)], [prod], name + "/matmul")
        else:
            split = self.tmp(name + "/split")
            self.add("Reshape", [fields, self.const(name + "/split_shape", np.array([0, count, kk, g, cg], np.int64))],
                     [split], name + "/split_groups")
            per_group = self.tmp(name + "/per_group")
            self.add("Transpose", [split], [per_group], name + "/groups_first", perm=[0, 3, 1, 2, 4])
            rows = self.tmp(name + "/rows")
            self.add("Reshape", [per_group, self.const(name + "/row_shape", np.array([0, g, count, kk * cg], np.int64))],
                     [rows], name + "/im2row")
            wmat = weight.reshape(g, coutg, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(g, kk * cg, coutg).copy()
            grouped = self.tmp(name + "/grouped")
            self.add("MatMul", [rows, self.const(name + "/weight_matrix", wmat)], [grouped], name + "/matmul")
            back = self.tmp(name + "/back")
            self.add("Transpose", [grouped], [back], name + "/positions_first", perm=[0, 2, 1, 3])
            self.add("Reshape", [back, self.const(name + "/prod_shape", np.array([0, count, cout], np.int64))],
                     [prod], name + "/join_groups")
        if len(node.inputs) > 2 and node.inputs[2]:
            biased = self.tmp(name + "/biased")
            bias = np.asarray(self.graph.constants[node.inputs[2]], np.float32)
            self.add("Add", [prod, self.const(name + "/bias", bias)], [biased], name + "/bias")
            prod = biased
        filled = self.tmp(name + "/filled")  # (N, h*w, Cout): runs of Cout floats
        self.add("Gather", [prod, self.const(name + "/nearest", mask.nearest.astype(np.int64))], [filled],
                 name + "/interpolate", axis=1)
        chw = self.tmp(name + "/channels_first")
        self.add("Transpose", [filled], [chw], name + "/channels_first", perm=[0, 2, 1])
        self.add("Reshape", [chw, self.const(name + "/out_shape", np.array([0, cout, oh, ow], np.int64))], [out],
                 name + "/unflatten")

    def pool(self, node: Node) -> None:
        a = node.attrs
        extra = {"count_include_pad": int(a.get("count_include_pad", 0))} if node.op == "AveragePool" else {}
        (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel"], a["strides"], a["pads"]
        ceil = int(a.get("ceil_mode", 0))
        modes = (ceil, ceil)
        if ceil:
            # ONNX's shape inference (opset 13) counts a last ceil-mode window that starts past the input and
            # its begin padding, which ONNX Runtime's kernel (and ours) drop: the declared size then exceeds
            # the computed one, a perforated conv's tables behind it do not fit, and ONNX Runtime fails.
            # Exactly then the windows kept along that axis are floor mode's (the span is no multiple of the
            # stride, no kept window reaches past the padded input): floor mode says it unambiguously.
            in_hw = self.shapes[node.inputs[0]][2:]
            declared = tuple(-(-(s + p0 + p1 - k) // st) + 1 for s, k, st, p0, p1 in
                             zip(in_hw, a["kernel"], a["strides"], (pt, pl), (pb, pr)))
            modes = tuple(int(d == o) for d, o in zip(declared, self.shapes[node.outputs[0]][2:]))
        if modes[0] == modes[1]:
            self.add(node.op, list(node.inputs), list(node.outputs), node.name, kernel_shape=[kh, kw],
                     strides=[sh, sw], pads=[pt, pl, pb, pr], ceil_mode=modes[0], **extra)
            return
        # one axis in ceil mode, the other in floor mode: max and average pooling over a rectangle are
        # separable (the window clipped to the map, or to the padded map, is a rectangle), so rows then columns
        rows = self.tmp(node.name + "/rows")
        self.add(node.op, list(node.inputs), [rows], node.name + "/rows", kernel_shape=[kh, 1], strides=[sh, 1],
                 pads=[pt, 0, pb, 0], ceil_mode=modes[0], **extra)
        self.add(node.op, [rows], list(node.outputs), node.name, kernel_shape=[1, kw], strides=[1, sw],
                 pads=[0, pl, 0, pr], ceil_mode=modes[1], **extra)

    def softmax(self, node: Node) -> None:
        a = node.attrs
        if not a.get("coerce_2d"):
            self.add("Softmax", list(node.inputs), list(node.outputs), node.name, axis=int(a["axis"]))
            return
        # ONNX before opset 13: softmax of the rows of the input flattened at `axis`
        shape = self.shapes[node.inputs[0]]
        flat, soft = self.tmp(node.name + "/flat"), self.tmp(node.name + "/soft")
        self.add("Flatten", list(node.inputs), [flat], node.name + "/flatten", axis=int(a["axis"]) % len(shape))
        self.add("Softmax", [flat], [soft], node.name, axis=1)
        self.add("Reshape", [soft, self.const(node.name + "/shape", np.array(shape, np.int64))], list(node.outputs),
                 node.name + "/reshape")

    def write(self, node: Node) -> None:
        op, a = node.op, node.attrs
        if op == "Conv":
            self.conv(node)
        elif op in ("MaxPool", "AveragePool"):
            self.pool(node)
        elif op == "Softmax":
            self.softmax(node)
        elif op == "BatchNormalization":
            self.add(op, list(node.inputs), list(node.outputs), node.name, epsilon=float(a["epsilon"]))
        elif op == "LRN":
            self.add(op, list(node.inputs), list(node.outputs), node.name, size=int(a["size"]), alpha=float(a["alpha"]),
                     beta=float(a["beta"]), bias=float(a["bias"]))
        elif op == "Clip":
            lo = self.const(node.name + "/min", np.float32(a["min"]))
            hi = self.const(node.name + "/max", np.float32(a["max"]))
            self.add(op, [node.inputs[0], lo, hi], list(node.outputs), node.name)
        elif op == "Gemm":
            self.add(op, list(node.inputs), list(node.outputs), node.name, transA=int(a["transA"]),
                     transB=int(a["transB"]), alpha=float(a["alpha"]), beta=float(a["beta"]))
        elif op in ("Flatten", "Concat"):
            self.add(op, list(node.inputs), list(node.outputs), node.name, axis=int(a["axis"] if op == "Concat"
                                                                                 else a.get("axis", 1)))
        elif op == "Reshape":
            shape = self.const(node.name + "/shape", np.array(a["shape"], np.int64))
            self.add(op, [node.inputs[0], shape], list(node.outputs), node.name)
        elif op == "Transpose":
            perm = {} if a.get("perm") is None else {"perm": list(a["perm"])}
            self.add(op, list(node.inputs), list(node.outputs), node.name, **perm)
        elif op in ("Squeeze", "Unsqueeze"):
            inputs = list(node.inputs[:1])
            if a.get("axes") is not None:
                inputs.append(self.const(node.name + "/axes", np.array(a["axes"], np.int64)))
            self.add(op, inputs, list(node.outputs), node.name)
        elif op == "Dropout":
            self.add("Identity", list(node.inputs[:1]), list(node.outputs), node.name)
        elif a.get("relu"):  # an Add or Sum with a ReLU fused by graph.passes.fuse_relu
            pre = self.tmp(node.name + "/pre_relu")
            self.add(op, list(node.inputs), [pre], node.name)
            self.add("Relu", [pre], list(node.outputs), node.name + "/relu")
        else:  # ops without attributes: Relu, Add, Sub, Mul, Div, Sum, MatMul, Identity, global pooling
            self.add(op, list(node.inputs), list(node.outputs), node.name)


def graph_to_onnx(graph: Graph, shapes: Optional[Mapping[str, Shape]] = None,
                  masks: Optional[Mapping[str, Mask]] = None):
    """The ``onnx.ModelProto`` of `graph` (its batch), standard ops only; convs named in `masks` are
    written perforated. `shapes`: the graph's :func:`~perforated.graph.ops.infer_shapes`, inferred when
    not given."""
    onnx, helper, numpy_helper = _onnx()
    from onnx import TensorProto

    shapes = infer_shapes(graph) if shapes is None else shapes
    w = _Writer(graph, shapes, masks or {})
    for node in graph.nodes:
        w.write(node)
    used = {i for n in w.nodes for i in n.input}
    inits = [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in graph.constants.items() if k in used]
    inits += [numpy_helper.from_array(v, k) for k, v in w.inits.items()]
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in graph.inputs.items()]
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(shapes[k])) for k in graph.outputs]
    proto = helper.make_model(helper.make_graph(w.nodes, graph.name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="perforated")
    onnx.checker.check_model(proto)
    return proto


def to_onnx(model: GraphModel):
    """The ``onnx.ModelProto`` of a GraphModel (its batch, its masks), standard ops only."""
    return graph_to_onnx(model.graph, model.shapes, model.masks)


def export(model: GraphModel, path) -> None:
    """Write :func:`to_onnx` of `model` to `path`."""
    onnx, _, _ = _onnx()
    onnx.save(to_onnx(model), str(path))
