"""ONNX -> graph IR (:mod:`perforated.graph`).

Weights come from initializers and Constant nodes; subgraphs whose inputs are all constants (weight
fills such as ConstantOfShape, Unsqueeze of a scale vector, a Shape -> Gather -> Concat feeding a
Reshape) are folded into constants at import, with shapes inferred as the nodes are read. Every
attribute is checked here: an op or attribute the engine cannot run raises GraphError naming the
node, the op and the attribute, before anything runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..graph.ir import Graph, GraphError, Node
from ..graph.kernels import build
from ..graph.ops import SHAPES


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:  # pragma: no cover - onnx is a dependency of the extra
        raise ImportError("perforated.onnx needs the onnx package: pip install onnx") from e
    return onnx, helper, numpy_helper


def _attrs(node) -> Dict[str, Any]:
    _, helper, _ = _onnx()
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _pair(v: Sequence[int], node: Node, name: str) -> tuple:
    if len(v) != 2:
        raise node.fail(f"attribute {name}={list(v)}: only 2-D (NCHW) convolutions and poolings are supported")
    return (int(v[0]), int(v[1]))


def _pads(a: Dict[str, Any], node: Node, in_hw, kernel, strides, dilations=(1, 1)) -> tuple:
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = a.get("pads", [0, 0, 0, 0])
        if len(p) != 4:
            raise node.fail(f"attribute pads={list(p)}: expected 4 values (2-D)")
        return (int(p[0]), int(p[1]), int(p[2]), int(p[3]))
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return (begin[0], begin[1], end[0], end[1])
    raise node.fail(f"attribute auto_pad={auto!r} is not supported")


def _only(a: Dict[str, Any], node: Node, allowed: Sequence[str]) -> None:
    extra = sorted(set(a) - set(allowed))
    if extra:
        raise node.fail(f"attribute {extra[0]}={a[extra[0]]!r} is not supported")


def read_weights(weights) -> Dict[str, np.ndarray]:
    """Named arrays from `weights`: an ``.npz`` file, a PyTorch ``state_dict`` file (``.pt`` / ``.pth`` /
    ``.bin``, read with ``torch.load(weights_only=True)``; needs torch) or a mapping of names to arrays or
    tensors. ``num_batches_tracked`` entries of a state_dict (batch-norm counters) are left out."""
    if isinstance(weights, Mapping):
        items = dict(weights)
    else:
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"weights: no file {str(path)!r}")
        if path.suffix == ".npz":
            with np.load(path) as data:
                items = {k: data[k] for k in data.files}
        elif path.suffix in (".pt", ".pth", ".bin"):
            try:
                import torch
            except ImportError:
                raise ValueError(f"weights: {path.name} is a PyTorch file; reading it needs torch "
                                 f"(pip install torch)") from None
            items = torch.load(str(path), map_location="cpu", weights_only=True)
            if not isinstance(items, Mapping):
                raise ValueError(f"weights: {path.name} holds a {type(items).__name__}, not a state_dict")
        else:
            raise ValueError(f"weights: {path.name}: expected an .npz or a PyTorch state_dict (.pt / .pth / .bin)")
    out = {}
    for k, v in items.items():
        if str(k).endswith("num_batches_tracked"):
            continue
        out[str(k)] = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
    return out


class _Importer:
    def __init__(self, model, batch: Optional[int], weights: Optional[Mapping[str, np.ndarray]] = None):
        onnx, _, numpy_helper = _onnx()
        self.model = model
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        newest = onnx.defs.onnx_opset_version()
        if self.opset is None:
            raise GraphError("the model imports no opset of the default ONNX domain (opset_import)")
        if not 1 <= self.opset <= newest:
            raise GraphError(f"opset {self.opset} of the default domain is not supported: this onnx package knows "
                             f"opsets 1 to {newest} (ops of a newer opset may mean something else)")
        self.consts: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        if weights:
            self._replace(weights)
        self.inputs: Dict[str, tuple] = {}
        self.orig_batch: Optional[int] = None
        for vi in g.input:
            if vi.name in self.consts:
                continue
            dims = []
            for k, d in enumerate(vi.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                elif k == 0 and batch is not None:
                    dims.append(batch)
                else:
                    raise GraphError(f"graph input {vi.name!r}: dimension {k} is symbolic "
                                     f"({d.dim_param or '?'}); pass batch= for the first dimension")
            if dims:
                self.orig_batch = self.orig_batch or dims[0]
                if batch is not None:
                    dims[0] = batch
            self.inputs[vi.name] = tuple(dims)
        if not self.inputs:
            raise GraphError("the graph has no input that is not an initializer")
        self.batch = batch
        self.shapes: Dict[str, tuple] = dict(self.inputs)
        self.shapes.update({k: v.shape for k, v in self.consts.items()})
        self.nodes: List[Node] = []
        self.used_names: set = set()
        self.read = {i for n in g.node for i in n.input} | {o.name for o in g.output}

    def _replace(self, weights: Mapping[str, np.ndarray]) -> None:
        """Initializers replaced by the arrays of the same names (before anything is folded from them)."""
        unknown = sorted(set(weights) - set(self.consts))
        if unknown:
            raise ValueError(f"weights: {len(unknown)} name(s) are no initializer of the graph, e.g. {unknown[:5]}; "
                             f"initializers: {sorted(self.consts)[:8]}... (for a PyTorch state_dict, export the "
                             f"graph with torch.onnx.export(..., dynamo=False, do_constant_folding=False, "
                             f"keep_initializers_as_inputs=True): every parameter and buffer is then an "
                             f"initializer of its own name)")
        for name, value in weights.items():
            old = self.consts[name]
            if tuple(value.shape) != tuple(old.shape):
                raise ValueError(f"weights[{name!r}]: shape {tuple(value.shape)}, the graph's initializer has "
                                 f"{tuple(old.shape)}")
            self.consts[name] = np.asarray(value, old.dtype)

    # -- helpers -------------------------------------------------------------------------------------

    def const(self, node: Node, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise node.fail(f"input {what} ({name!r}) must be a constant (computed at run time is not supported)")
        return self.consts[name]

    def name_of(self, onnx_node, index: int) -> str:
        name = onnx_node.name or (onnx_node.output[0] if onnx_node.output else f"{onnx_node.op_type}_{index}")
        while name in self.used_names:
            name = f"{name}_{index}"
        self.used_names.add(name)
        return name

    def emit(self, node: Node) -> None:
        """Add a node, or fold it into constants when all its inputs are constants."""
        shapes = [self.shapes[i] for i in node.inputs if i]
        outs = SHAPES[node.op](node, shapes)
        if node.inputs and all(i in self.consts for i in node.inputs if i) and node.op != "Conv":
            values = build(node, shapes, self.consts)([self.consts[i] for i in node.inputs if i])
            for name, v in zip(node.outputs, values):
                self.consts[name] = np.asarray(v)
                self.shapes[name] = np.asarray(v).shape
            return
        for name, s in zip(node.outputs, outs):
            self.shapes[name] = tuple(s)
        self.nodes.append(node)

    def fold(self, outputs: Sequence[str], values: Sequence[np.ndarray]) -> None:
        for name, v in zip(outputs, values):
            self.consts[name] = np.asarray(v)
            self.shapes[name] = self.consts[name].shape

    # -- translation ---------------------------------------------------------------------------------

    def run(self) -> Graph:
        for k, on in enumerate(self.model.graph.node):
            self.translate(on, k)
        outputs = [o.name for o in self.model.graph.output]
        for o in outputs:
            if o in self.consts:
                raise GraphError(f"graph output {o!r} is a constant: nothing to run")
        used = {i for n in self.nodes for i in n.inputs}
        consts = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in self.consts.items() if k in used}
        name = self.model.graph.name or "onnx"
        return Graph(dict(self.inputs), outputs, self.nodes, consts, name)

    def translate(self, on, index: int) -> None:
        op, a = on.op_type, _attrs(on)
        if on.domain not in ("", "ai.onnx"):
            raise GraphError(f"node {on.name or on.output[0]!r} ({on.domain}::{op}): custom domains are not supported")
        ins, outs = list(on.input), list(on.output)
        node = Node(self.name_of(on, index), op, ins, outs, {})
        missing = [i for i in ins if i and i not in self.shapes]
        if missing:
            raise node.fail(f"reads {missing[0]!r}, which is no graph input, initializer or output of an earlier "
                            f"node (a missing initializer, or nodes out of order)")
        fold = getattr(self, "fold_" + op, None)
        if fold is not None:
            self.fold(outs, fold(node, a, ins))
            return
        handler = getattr(self, "op_" + op, None)
        if handler is None and op not in SHAPES:
            raise node.fail(f"op {op!r} is not supported (supported: {', '.join(sorted(SHAPES))})")
        if handler is not None:
            node = handler(node, a)
        else:
            _only(a, node, ())
        if node is not None:
            self.emit(node)

    # ops that exist only to compute constants (folded; their inputs must be constants or shapes)
    def fold_Constant(self, node, a, ins):
        _, _, numpy_helper = _onnx()
        if "value" in a:
            return [numpy_helper.to_array(a["value"])]
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                           ("value_ints", np.int64)):
            if key in a:
                return [np.asarray(a[key], dtype)]
        raise node.fail(f"attributes {sorted(a)} are not supported")

    def fold_ConstantOfShape(self, node, a, ins):
        _, _, numpy_helper = _onnx()
        shape = self.const(node, ins[0], "shape").astype(np.int64)
        value = numpy_helper.to_array(a["value"]).reshape(-1) if "value" in a else np.zeros(1, np.float32)
        return [np.full(tuple(shape), value[0], value.dtype)]

    def fold_Shape(self, node, a, ins):
        shape = np.asarray(self.shapes[ins[0]], np.int64)
        start, end = a.get("start", 0), a.get("end", None)
        return [shape[start:end]]

    def fold_Gather(self, node, a, ins):
        return [np.take(self.const(node, ins[0], "data"), self.const(node, ins[1], "indices"), axis=a.get("axis", 0))]

    def fold_Cast(self, node, a, ins):
        onnx, helper, _ = _onnx()
        dtype = helper.tensor_dtype_to_np_dtype(a["to"])
        return [self.const(node, ins[0], "input").astype(dtype)]

    def fold_Range(self, node, a, ins):
        start, limit, delta = (self.const(node, i, "range") for i in ins)
        return [np.arange(start, limit, delta)]

    # ops translated into the IR's normalised attributes
    def op_Conv(self, node, a):
        _only(a, node, ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"))
        w = self.shapes[node.inputs[1]]
        if len(w) != 4:
            raise node.fail(f"weight of shape {tuple(w)}: only 2-D convolutions are supported")
        kernel = _pair(a.get("kernel_shape", w[2:]), node, "kernel_shape")
        strides = _pair(a.get("strides", [1, 1]), node, "strides")
        dil = _pair(a.get("dilations", [1, 1]), node, "dilations")
        pads = _pads(a, node, self.shapes[node.inputs[0]][2:], kernel, strides, dil)
        node.attrs = {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dil,
                      "group": int(a.get("group", 1))}
        return node

    def _pool(self, node, a, avg: bool):
        allowed = ["kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "dilations", "storage_order"]
        _only(a, node, allowed + (["count_include_pad"] if avg else []))
        if len(node.outputs) > 1 and node.outputs[1] in self.read:
            raise node.fail("the Indices output is not supported")
        kernel = _pair(a["kernel_shape"], node, "kernel_shape")
        strides = _pair(a.get("strides", [1, 1]), node, "strides")
        if tuple(a.get("dilations", [1, 1])) != (1, 1):
            raise node.fail(f"attribute dilations={list(a['dilations'])} is not supported (only 1)")
        node.attrs = {"kernel": kernel, "strides": strides,
                      "pads": _pads(a, node, self.shapes[node.inputs[0]][2:], kernel, strides),
                      "ceil_mode": int(a.get("ceil_mode", 0))}
        if avg:
            node.attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
        node.outputs = node.outputs[:1]
        return node

    def op_MaxPool(self, node, a):
        return self._pool(node, a, False)

    def op_AveragePool(self, node, a):
        return self._pool(node, a, True)

    def op_BatchNormalization(self, node, a):
        _only(a, node, ("epsilon", "momentum", "spatial", "training_mode", "is_test", "consumed_inputs"))
        if a.get("training_mode", 0) or any(o in self.read for o in node.outputs[1:]):
            raise node.fail("training mode (running statistics outputs) is not supported: export for inference")
        if a.get("spatial", 1) != 1:
            raise node.fail(f"attribute spatial={a['spatial']} is not supported (only 1)")
        node.attrs = {"epsilon": float(a.get("epsilon", 1e-5))}
        node.outputs = node.outputs[:1]
        return node

    def op_LRN(self, node, a):
        _only(a, node, ("size", "alpha", "beta", "bias"))
        node.attrs = {"size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)),
                      "beta": float(a.get("beta", 0.75)), "bias": float(a.get("bias", 1.0))}
        return node

    def op_Clip(self, node, a):
        _only(a, node, ("min", "max"))
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        if len(node.inputs) > 1 and node.inputs[1]:
            lo = float(self.const(node, node.inputs[1], "min"))
        if len(node.inputs) > 2 and node.inputs[2]:
            hi = float(self.const(node, node.inputs[2], "max"))
        node.inputs = node.inputs[:1]
        node.attrs = {"min": float(lo), "max": float(hi)}
        return node

    def op_Gemm(self, node, a):
        _only(a, node, ("transA", "transB", "alpha", "beta", "broadcast"))
        node.attrs = {"transA": int(a.get("transA", 0)), "transB": int(a.get("transB", 0)),
                      "alpha": float(a.get("alpha", 1.0)), "beta": float(a.get("beta", 1.0))}
        return node

    def op_Softmax(self, node, a):
        _only(a, node, ("axis",))
        legacy = self.opset < 13
        node.attrs = {"axis": int(a.get("axis", 1 if legacy else -1)), "coerce_2d": legacy}
        return node

    def op_Flatten(self, node, a):
        _only(a, node, ("axis",))
        node.attrs = {"axis": int(a.get("axis", 1))}
        return node

    def op_Concat(self, node, a):
        _only(a, node, ("axis",))
        node.attrs = {"axis": int(a["axis"])}
        return node

    def op_Transpose(self, node, a):
        _only(a, node, ("perm",))
        node.attrs = {"perm": [int(p) for p in a["perm"]] if "perm" in a else None}
        return node

    def op_Reshape(self, node, a):
        _only(a, node, ("allowzero", "shape"))
        target = a["shape"] if "shape" in a else self.const(node, node.inputs[1], "shape")
        target = [int(t) for t in np.asarray(target).reshape(-1)]
        if a.get("allowzero", 0) and 0 in target:
            raise node.fail("attribute allowzero=1 with a zero in the shape is not supported")
        shape = self.shapes[node.inputs[0]]
        # a batch changed at import: a target that hard-codes the graph's own batch copies the new one
        if (self.batch is not None and target and target[0] == self.orig_batch and shape and shape[0] == self.batch
                and self.batch != self.orig_batch):
            target[0] = 0
        node.inputs = node.inputs[:1]
        node.attrs = {"shape": target}
        return node

    def _axes(self, node, a):
        _only(a, node, ("axes",))
        if "axes" in a:
            axes = [int(x) for x in a["axes"]]
        elif len(node.inputs) > 1 and node.inputs[1]:
            axes = [int(x) for x in self.const(node, node.inputs[1], "axes").reshape(-1)]
        else:
            axes = None
        node.inputs = node.inputs[:1]
        node.attrs = {"axes": axes}
        return node

    def op_Squeeze(self, node, a):
        return self._axes(node, a)

    def op_Unsqueeze(self, node, a):
        node = self._axes(node, a)
        if node.attrs["axes"] is None:
            raise node.fail("needs axes")
        return node

    def op_Dropout(self, node, a):
        _only(a, node, ("ratio", "is_test", "seed"))
        if len(node.outputs) > 1 and node.outputs[1] in self.read:
            raise node.fail("the mask output is not supported at inference")
        node.inputs, node.outputs, node.attrs = node.inputs[:1], node.outputs[:1], {}
        return node

    def _elementwise(self, node, a):
        _only(a, node, ("broadcast", "axis"))
        if "axis" in a:
            raise node.fail("attribute axis (legacy broadcasting before opset 7) is not supported")
        return node

    op_Add = op_Sub = op_Mul = op_Div = op_Sum = _elementwise


def to_graph(model, batch: Optional[int] = None, weights=None) -> Graph:
    """The graph IR of an ONNX model (a path or an ``onnx.ModelProto``), its first input dimension set
    to `batch` when given; `weights` (see :func:`read_weights`) replace the initializers of the same
    names, shapes checked, before constant subgraphs are folded."""
    onnx, _, _ = _onnx()
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        if not path.is_file():
            raise ValueError(f"no ONNX file at {str(path)!r}")
        try:
            model = onnx.load(str(path))
        except Exception as e:  # protobuf's DecodeError and friends: a truncated or foreign file
            raise ValueError(f"{str(path)!r} is not a readable ONNX model ({type(e).__name__}: {e})") from None
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    return _Importer(model, batch, read_weights(weights) if weights is not None else None).run()
