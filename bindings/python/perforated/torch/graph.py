"""A graph of the IR (``perforated.graph``; an imported ONNX model) as a PyTorch ``nn.Module``.

``from_onnx("resnet50.onnx")`` gives a module whose convolutions are ``nn.Conv2d`` (so ``perforate``
applies, plans naming them by :attr:`GraphModule.module_names`), batch norms ``nn.BatchNorm2d`` with the
file's statistics and fully connected Gemms ``nn.Linear``, all trainable; the other ops run as torch
functions. The batch is free: a Reshape whose target names the file's batch size takes the input's.
Ops or attribute forms this conversion does not cover raise ``GraphError`` naming the node.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..graph.ir import Graph, GraphError, Node
from ..graph.ops import infer_shapes, reshape_target


def _module_key(name: str, taken: set) -> str:
    key = re.sub(r"\W", "_", name) or "node"
    if key[0].isdigit():
        key = "n_" + key
    base, i = key, 1
    while key in taken:
        i += 1
        key = f"{base}_{i}"
    taken.add(key)
    return key


class GraphModule(nn.Module):
    """The nodes of `graph` run in order with torch operations; see the module docstring."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph
        self.shapes = infer_shapes(graph)
        self.batch = next(iter(graph.inputs.values()))[0]
        consts = graph.constants
        taken: set = set()
        self.module_names: Dict[str, str] = {}  # node name -> attribute (qualified module) name
        self._consts: Dict[str, str] = {}        # constant value name -> buffer name
        self._absorbed: set = set()              # constants held by a module (weights)
        for node in graph.nodes:
            module = self._module(node, consts)
            if module is not None:
                key = _module_key(node.name, taken)
                self.add_module(key, module)
                self.module_names[node.name] = key
        for name, value in consts.items():
            if name in self._absorbed:
                continue
            key = _module_key("const_" + name, taken)
            self.register_buffer(key, torch.from_numpy(np.array(value)))
            self._consts[name] = key

    def _module(self, node: Node, consts) -> Optional[nn.Module]:
        a, op = node.attrs, node.op
        if op == "Conv":
            if any(i not in consts for i in node.inputs[1:3]):
                raise node.fail("the weight and bias must be constants to become an nn.Conv2d")
            if a.get("relu") or len(node.inputs) > 3:
                raise node.fail("fused ReLU / residual forms are the engine's; convert the graph before its passes")
            w = consts[node.inputs[1]]
            pt, pl, pb, pr = a["pads"]
            conv = nn.Conv2d(w.shape[1] * a["group"], w.shape[0], tuple(a["kernel"]), tuple(a["strides"]),
                             (pt, pl) if (pt, pl) == (pb, pr) else 0, tuple(a["dilations"]), a["group"],
                             bias=len(node.inputs) > 2)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
                if len(node.inputs) > 2:
                    conv.bias.copy_(torch.from_numpy(np.asarray(consts[node.inputs[2]], np.float32)))
            self._absorbed.update(node.inputs[1:3])
            return conv
        if op == "BatchNormalization" and all(i in consts for i in node.inputs[1:5]):
            gamma, beta, mean, var = (np.asarray(consts[i], np.float32) for i in node.inputs[1:5])
            bn = nn.BatchNorm2d(len(gamma), eps=float(a.get("epsilon", 1e-5)))
            with torch.no_grad():
                for p, v in ((bn.weight, gamma), (bn.bias, beta), (bn.running_mean, mean), (bn.running_var, var)):
                    p.copy_(torch.from_numpy(v))
            self._absorbed.update(node.inputs[1:5])
            return bn
        if op == "Gemm" and not a.get("transA") and node.inputs[1] in consts and float(a.get("alpha", 1.0)) == 1.0 \
                and (len(node.inputs) < 3 or (node.inputs[2] in consts and float(a.get("beta", 1.0)) == 1.0
                                              and np.ndim(consts[node.inputs[2]]) == 1)):
            b = np.asarray(consts[node.inputs[1]], np.float32)
            weight = b if a.get("transB") else b.T           # Linear keeps (out, in)
            lin = nn.Linear(weight.shape[1], weight.shape[0], bias=len(node.inputs) > 2)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
                if len(node.inputs) > 2:
                    lin.bias.copy_(torch.from_numpy(np.asarray(consts[node.inputs[2]], np.float32)))
            self._absorbed.update(node.inputs[1:3])
            return lin
        if op not in _FUNCTIONS:
            raise node.fail("this op has no PyTorch form in perforated.torch.graph")
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: Dict[str, torch.Tensor] = {next(iter(self.graph.inputs)): x}
        for name, key in self._consts.items():
            env[name] = getattr(self, key)
        for node in self.graph.nodes:
            key = self.module_names.get(node.name)
            if key is not None:
                module = getattr(self, key)
                inp = env[node.inputs[0]]
                if node.op == "Conv" and module.padding == (0, 0) and any(node.attrs["pads"]):
                    pt, pl, pb, pr = node.attrs["pads"]
                    inp = F.pad(inp, (pl, pr, pt, pb))
                if node.op == "Gemm" and inp.dim() != 2:
                    raise node.fail(f"Gemm input must be 2-D, got shape {tuple(inp.shape)}")
                out = module(inp)
            else:
                out = _FUNCTIONS[node.op](self, node, *[env[i] for i in node.inputs if i])
            env[node.outputs[0]] = out
        outs = [env[o] for o in self.graph.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _pool(mode: str):
    def run(gm: GraphModule, node: Node, x: torch.Tensor) -> torch.Tensor:
        a = node.attrs
        (kh, kw), s, (pt, pl, pb, pr) = tuple(a["kernel"]), tuple(a["strides"]), tuple(a["pads"])
        ceil, include = bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0))
        if (pt, pl) == (pb, pr) and pt <= kh // 2 and pl <= kw // 2:  # a form torch pooling takes
            if mode == "max":
                return F.max_pool2d(x, (kh, kw), s, (pt, pl), ceil_mode=ceil)
            return F.avg_pool2d(x, (kh, kw), s, (pt, pl), ceil_mode=ceil, count_include_pad=include)
        # other paddings (Caffe's ceil mode written as extra end padding): pad explicitly, pool every
        # window that starts on the padded map, keep the output size of the graph's shape inference
        oh, ow = gm.shapes[node.outputs[0]][2:]
        if mode == "max":
            y = F.max_pool2d(F.pad(x, (pl, pr, pt, pb), value=float("-inf")), (kh, kw), s, ceil_mode=True)
        else:
            total = F.avg_pool2d(F.pad(x, (pl, pr, pt, pb)), (kh, kw), s, ceil_mode=True, divisor_override=1)
            ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
            ones = F.pad(ones, (pl, pr, pt, pb), value=1.0 if include else 0.0)
            y = total / F.avg_pool2d(ones, (kh, kw), s, ceil_mode=True, divisor_override=1)
        if y.shape[2] < oh or y.shape[3] < ow:
            raise node.fail(f"torch pooling gave {tuple(y.shape[2:])} positions, the graph expects {(oh, ow)}")
        return y[:, :, :oh, :ow]
    return run


def _reshape(gm: GraphModule, node: Node, x: torch.Tensor, *_):
    target = list(node.attrs["shape"])
    if target and target[0] == gm.batch and x.shape[0] != gm.batch:
        target[0] = x.shape[0]  # the file's batch size written out: follow the input's
    return x.reshape(reshape_target(node, tuple(x.shape), target))


def _gemm(gm: GraphModule, node: Node, a_: torch.Tensor, b: torch.Tensor, c: Optional[torch.Tensor] = None):
    at = node.attrs
    A = a_.t() if at.get("transA") else a_
    B = b.t() if at.get("transB") else b
    y = float(at.get("alpha", 1.0)) * (A @ B)
    if c is not None and float(at.get("beta", 1.0)) != 0.0:
        y = y + float(at.get("beta", 1.0)) * c
    return y


def _softmax(gm: GraphModule, node: Node, x: torch.Tensor):
    axis = node.attrs.get("axis", -1) % x.dim()
    if node.attrs.get("coerce_2d"):
        return torch.softmax(x.reshape(int(np.prod(x.shape[:axis])), -1), 1).reshape(x.shape)
    return torch.softmax(x, axis)


def _unsqueeze(gm, node, x):
    rank = x.dim() + len(node.attrs["axes"])
    for ax in sorted(a % rank for a in node.attrs["axes"]):
        x = x.unsqueeze(ax)
    return x


def _squeeze(gm, node, x):
    axes = node.attrs.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _sum(gm, node, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


_FUNCTIONS = {
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda gm, node, x: x.mean((2, 3), keepdim=True),
    "GlobalMaxPool": lambda gm, node, x: x.amax((2, 3), keepdim=True),
    "BatchNormalization": lambda gm, node, x, g, b, m, v: F.batch_norm(x, m, v, g, b, False, 0.0,
                                                                       node.attrs.get("epsilon", 1e-5)),
    "Relu": lambda gm, node, x: F.relu(x),
    "Clip": lambda gm, node, x, *_: torch.clamp(x, node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)),
    "LRN": lambda gm, node, x: F.local_response_norm(x, node.attrs["size"], node.attrs["alpha"], node.attrs["beta"],
                                                     node.attrs["bias"]),
    "Dropout": lambda gm, node, x, *_: x, "Identity": lambda gm, node, x: x,
    "Add": lambda gm, node, a, b: a + b, "Sub": lambda gm, node, a, b: a - b,
    "Mul": lambda gm, node, a, b: a * b, "Div": lambda gm, node, a, b: a / b, "Sum": _sum,
    "Concat": lambda gm, node, *xs: torch.cat(xs, node.attrs["axis"]),
    "Flatten": lambda gm, node, x: x.reshape(int(np.prod(x.shape[:node.attrs.get("axis", 1) % (x.dim() + 1)])), -1),
    "Reshape": _reshape,
    "Transpose": lambda gm, node, x: x.permute(*(node.attrs.get("perm") or reversed(range(x.dim())))),
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Gemm": _gemm, "MatMul": lambda gm, node, a, b: torch.matmul(a, b), "Softmax": _softmax,
}


def from_graph(graph: Graph) -> GraphModule:
    return GraphModule(graph)


def from_onnx(model, batch: Optional[int] = None) -> GraphModule:
    """An ONNX model (a path or an ``onnx.ModelProto``) as a trainable torch module (see the module
    docstring); needs the ``onnx`` package."""
    from ..onnx import to_graph

    return GraphModule(to_graph(model, batch))


def node_plan(module: GraphModule, plan: Dict) -> Dict:
    """A plan naming Conv nodes (``{"layers": {node: spec}}``) renamed to the module's qualified names."""
    layers = plan.get("layers", {})
    missing = [n for n in layers if n not in module.module_names]
    if missing:
        raise GraphError(f"node_plan: {missing} are not Conv nodes of this graph")
    return dict(plan, layers={module.module_names[n]: spec for n, spec in layers.items()})


__all__: List[str] = ["GraphModule", "from_graph", "from_onnx", "node_plan"]
