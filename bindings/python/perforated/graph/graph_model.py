"""A graph IR network ready to run: shapes inferred, perforation masks made, every node's kernels
planned once for a batch size. ``GraphModel(graph, batch, plan).forward(x)`` returns the graph's
first output as a numpy array."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import numpy as np

from ..ops.interp import interpolate_nhwc
from ..ops.layout import to_nchw
from ..ops.masks import Mask
from .plan import PerforationPlan, plan_layers, spec_mask
from .ir import Graph, GraphError, Node
from .kernels import build, c_pool_plan
from .nhwc import Buffers, build as build_nhwc
from .ops import conv_macs, conv_nodes, infer_shapes
from .passes import drop_identities, fold_batchnorm, fuse_relu, fuse_residual

PlanLike = Union[None, PerforationPlan, str, Path, Mapping]


def perforable(graph: Graph, shapes: Mapping[str, tuple]) -> List[str]:
    """Conv nodes whose output map has more than one position (those a mask can thin)."""
    return [n.name for n in conv_nodes(graph) if shapes[n.outputs[0]][2] * shapes[n.outputs[0]][3] > 1]


# ops between a conv and the pooling whose windows a "pooling" mask follows: position-wise, one input map
_POSITIONWISE = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "BatchNormalization", "Dropout", "Identity"}
# ops that run on a compact tensor as they are (its (N, count, C) array as a map of count positions)
_COMPACT_UNARY = {"Relu", "Clip", "BatchNormalization", "LRN"}
_COMPACT_JOIN = {"Add", "Sub", "Mul", "Div", "Sum", "Concat"}


def _pointwise(node: Node) -> bool:
    """A 1x1 stride-1 unpadded conv without a residual input: it maps each position on its own."""
    a = node.attrs
    return (node.op == "Conv" and tuple(a["kernel"]) == (1, 1) and tuple(a["strides"]) == (1, 1)
            and tuple(a["pads"]) == (0, 0, 0, 0) and tuple(a["dilations"]) == (1, 1) and len(node.inputs) <= 3)


def _interpolated(run, mask: Mask, shape):
    """`run` (a channels-last runner computing on compact inputs) followed by the interpolation of its
    compact output to the full ``(N, H*W, C)`` map."""
    def full(xs, buffers):
        y = run(xs, buffers)[0]
        out = interpolate_nhwc(y, mask, out=buffers.take((shape[0], shape[2] * shape[3], y.shape[2])))
        buffers.give(y)
        return [out]
    return full


def pool_after(graph: Graph, conv: str, size) -> Optional[tuple]:
    """``(kernel, stride, pad)`` of the pooling that reads conv node `conv`'s output (through position-wise
    ops, each the only reader), for pooling-structure masks over its `size` output; a global pooling is
    one window over the map; None when no pooling follows."""
    consumers = graph.consumers()
    value = graph.node(conv).outputs[0]
    while True:
        users = consumers.get(value, [])
        if len(users) != 1:
            return None
        n = users[0]
        if n.op in ("MaxPool", "AveragePool"):
            pt, pl = n.attrs["pads"][:2]  # the windows start at o*stride - pad_begin
            return tuple(n.attrs["kernel"]), tuple(n.attrs["strides"]), (pt, pl)
        if n.op in ("GlobalAveragePool", "GlobalMaxPool"):
            return tuple(size), tuple(size), 0
        if n.op not in _POSITIONWISE:
            return None
        value = n.outputs[0]


def _scores(name: str, spec: Mapping, base_dir: Optional[Path]) -> np.ndarray:
    source = spec.get("scores")
    if source is None:
        raise ValueError(f"plan: layers.{name} is an impact mask but names no 'scores' file")
    path = Path(source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    with np.load(path) as data:
        if name not in data:
            raise ValueError(f"plan: {path} has no scores for node {name!r}")
        return np.ascontiguousarray(data[name], dtype=np.float32)


def _masks(layers: Mapping[str, dict], graph: Graph, shapes: Mapping[str, tuple],
           base_dir: Optional[Path] = None) -> Dict[str, Mask]:
    masks = {}
    for name, spec in layers.items():
        size = shapes[graph.node(name).outputs[0]][2:]
        kind = spec["kind"]
        mask = spec_mask(name, spec, size, pool=pool_after(graph, name, size) if kind == "pooling" else None,
                         scores=_scores(name, spec, base_dir) if kind == "impact" and spec["rate"] > 0 else None)
        if mask is not None:
            masks[name] = mask
    return masks


def _plan_dir(plan: PlanLike) -> Optional[Path]:
    """Where an impact spec's relative 'scores' path starts: the plan file's folder, if any."""
    if isinstance(plan, PerforationPlan):
        return plan.base_dir
    if isinstance(plan, (str, Path)):
        return Path(plan).resolve().parent
    return None


class GraphModel:
    """A graph planned for `batch` images (default: the graph's own) with a perforation `plan`.
    Batch normalisations right after a conv are folded into its weights and ReLUs fused into it
    (:mod:`.passes`). ``layout="nhwc"`` (default) runs convolutions, pooling and the position-wise
    ops channels-last (:mod:`.nhwc`: the CPU engine's micro-kernels), converting to NCHW only for
    ops that need it (reshape, Gemm, ...); ``"nchw"`` runs every op on the NCHW kernels.

    Attributes: ``graph``, ``batch``, ``shapes`` (every value's shape), ``masks`` (conv node -> Mask),
    ``perforable`` (the conv nodes a plan may name)."""

    def __init__(self, graph: Graph, batch: Optional[int] = None, plan: PlanLike = None, layout: str = "nhwc"):
        if layout not in ("nhwc", "nchw"):
            raise ValueError(f"GraphModel: layout must be 'nhwc' or 'nchw', got {layout!r}")
        if batch is not None:
            graph = graph.with_batch(batch)
        infer_shapes(graph)  # errors name the node of the graph as given, before any rewrite
        self.graph = fuse_relu(fold_batchnorm(drop_identities(graph)))
        graph = self.graph
        self.layout = layout
        self.batch = next(iter(graph.inputs.values()))[0]
        self.shapes = infer_shapes(graph)
        self.perforable = perforable(graph, self.shapes)
        self.plan_layers = plan_layers(plan, self.perforable, "perforable Conv node of this graph")
        self.masks = _masks(self.plan_layers, graph, self.shapes, _plan_dir(plan))
        self.graph = graph = fuse_residual(graph, self.shapes, set(self.masks))
        self.shapes = infer_shapes(graph)
        consts = graph.constants
        self.layouts: Dict[str, str] = {name: "nchw" for name in graph.inputs}
        self._consumers = graph.consumers()
        self._compact = self._compact_values()  # values left compact, with their masks
        self.conv_masks: Dict[str, Mask] = {}  # conv node -> the mask of the positions it computes
        self._buffers = Buffers()  # channels-last arrays reused from call to call
        self._runs = [self._runner(n) for n in graph.nodes]
        # the last node reading each value: its array is dropped after that node
        last: Dict[str, int] = {}
        for k, n in enumerate(graph.nodes):
            for i in n.inputs:
                last[i] = k
        self._drop = [[i for i in set(n.inputs) if last.get(i) == k and i not in graph.outputs and i not in consts]
                      for k, n in enumerate(graph.nodes)]

    # -- compact flow ------------------------------------------------------------------------------
    # A perforated conv's output is compact: (N, count, C), its mask's kept positions. It stays compact
    # while every reader can take it so: a conv reading it through the mask's nearest map (implicit
    # interpolation), a 1x1 stride-1 conv or a position-wise op (computing the kept positions only, the
    # output compact on the same mask), an add / concat of compact values on the same mask, a pooling
    # through the mask. Anything else gets the interpolated map, written once by the producer.

    def _join_mask(self, node: Node, compact: Mapping[str, Mask]) -> Optional[Mask]:
        """The mask shared by every non-constant input of an elementwise op or channel concat when all
        are compact on it (same shapes; constants per channel or scalar), else None."""
        consts = self.graph.constants
        main = [i for i in node.inputs if i and i not in consts]
        masks = [compact.get(i) for i in main]
        if not main or masks[0] is None or any(m is not masks[0] for m in masks):
            return None
        if len({tuple(self.shapes[i]) for i in main}) != 1:
            return None
        if node.op == "Concat":
            return masks[0] if node.attrs["axis"] % 4 == 1 and len(main) == len(node.inputs) else None
        c = self.shapes[main[0]][1]
        ok = all(np.size(consts[i]) == 1 or (np.ndim(consts[i]) >= 3 and np.shape(consts[i])[-3] == c
                                             and np.size(consts[i]) == c)
                 for i in node.inputs if i in consts)
        return masks[0] if ok else None

    def _compact_candidate(self, node: Node, compact: Mapping[str, Mask]) -> Optional[Mask]:
        """The mask `node`'s output is compact on if its readers allow, or None."""
        if node.op == "Conv":
            pt, pl, pb, pr = node.attrs["pads"]
            if node.name in self.masks:
                return self.masks[node.name] if (pt, pl) == (pb, pr) and len(node.inputs) <= 3 else None
            return compact.get(node.inputs[0]) if _pointwise(node) else None
        if node.op in _COMPACT_UNARY:
            return compact.get(node.inputs[0])
        if node.op in _COMPACT_JOIN:
            return self._join_mask(node, compact)
        return None

    def _reads_compact(self, reader: Node, value: str, compact: Mapping[str, Mask]) -> bool:
        """Whether `reader` can take `value` compact."""
        if reader.op == "Conv":
            if reader.inputs[0] != value or reader.inputs.count(value) != 1:
                return False
            pt, pl, pb, pr = reader.attrs["pads"]
            return (pt, pl) == (pb, pr) and not (len(reader.inputs) > 3 and reader.name in self.masks)
        if reader.op in _COMPACT_UNARY or reader.op == "GlobalAveragePool":
            return True
        if reader.op in _COMPACT_JOIN:
            return self._join_mask(reader, compact) is not None
        if reader.op in ("MaxPool", "AveragePool"):
            mode = "max" if reader.op == "MaxPool" else "avg"
            return c_pool_plan(reader, self.shapes[value], mode, compact[value]) is not None
        return False

    def _compact_values(self) -> Dict[str, Mask]:
        """value -> mask of the values left compact (see above). Candidates are proposed in graph order
        from the compact inputs; a candidate a reader refuses (or a graph output) is barred and the
        proposal repeats, since a join's inputs decide together."""
        if self.layout != "nhwc" or not self.masks:
            return {}
        barred: set = set(self.graph.outputs)
        while True:
            compact: Dict[str, Mask] = {}
            for node in self.graph.nodes:
                mask = self._compact_candidate(node, compact)
                if mask is not None and node.outputs[0] not in barred:
                    compact[node.outputs[0]] = mask
            refused = {v for v in compact
                       if not all(self._reads_compact(r, v, compact) for r in self._consumers.get(v, []))}
            if not refused:
                return compact
            barred |= refused

    def _runner(self, node: Node):
        consts = self.graph.constants
        names = [i for i in node.inputs if i]
        shapes = [self.shapes[i] for i in names]
        lays = ["const" if i in consts else self.layouts[i] for i in names]
        # a conv or pooling reads its first input compact; a join any of its (non-constant) inputs
        firsts = names[:1] if node.op not in _COMPACT_JOIN else names
        in_mask = next((self._compact[i] for i in firsts if i in self._compact), None)
        compact_out = node.outputs[0] in self._compact
        mask = self.masks.get(node.name)
        if node.op == "Conv" and mask is None and in_mask is not None and _pointwise(node):
            mask = in_mask  # a 1x1 conv on a compact input computes the kept positions only
        run = build_nhwc(node, shapes, consts, mask, lays, in_mask, compact_out) if self.layout == "nhwc" else None
        if in_mask is not None and run is None:
            raise node.fail("internal error: a compact input reached a node that cannot read it")
        if run is not None:
            if node.op == "Conv" and mask is not None:
                self.conv_masks[node.name] = mask
            self.layouts.update({o: "nhwc" for o in node.outputs})
            if compact_out:
                self.layouts[node.outputs[0]] = "compact"
            elif in_mask is not None and node.op in _COMPACT_UNARY | _COMPACT_JOIN:
                run = _interpolated(run, in_mask, self.shapes[node.outputs[0]])  # computed compact, read full
            return lambda xs, run=run: run(xs, self._buffers)
        run = build(node, shapes, consts, mask)
        self.layouts.update({o: "nchw" for o in node.outputs})
        convert = [k for k, lay in enumerate(lays) if lay == "nhwc"]
        if not convert:
            return run

        def converted(xs, run=run):
            xs = list(xs)
            for k in convert:
                xs[k] = to_nchw(xs[k]).reshape(shapes[k])
            return run(xs)
        converted.plan = getattr(run, "plan", None)
        return converted

    def _feeds(self, x) -> Dict[str, np.ndarray]:
        names = list(self.graph.inputs)
        feeds = x if isinstance(x, Mapping) else {names[0]: x}
        out = {}
        for name in names:
            if name not in feeds:
                raise ValueError(f"forward: missing input {name!r}")
            a = np.asarray(feeds[name])
            if a.shape != tuple(self.graph.inputs[name]):
                raise ValueError(f"forward: input {name!r} must have shape {tuple(self.graph.inputs[name])}, "
                                 f"got {a.shape}")
            out[name] = np.ascontiguousarray(a, np.float32)
        return out

    def run(self, x, timings: Optional[List[float]] = None) -> Dict[str, np.ndarray]:
        """Every graph output by name, for an input array (the first graph input) or a dict of inputs."""
        env: Dict[str, np.ndarray] = dict(self.graph.constants)
        env.update(self._feeds(x))
        holders: Dict[int, int] = {}  # id(array) -> values holding it (an Identity may pass one on)
        for k, (node, run) in enumerate(zip(self.graph.nodes, self._runs)):
            start = time.perf_counter() if timings is not None else 0.0
            outs = run([env[i] for i in node.inputs if i])
            if timings is not None:
                timings.append(time.perf_counter() - start)
            for name, value in zip(node.outputs, outs):
                env[name] = value
                holders[id(value)] = holders.get(id(value), 0) + 1
            for name in self._drop[k]:
                value = env.pop(name)
                holders[id(value)] = holders.get(id(value), 1) - 1
                if holders[id(value)] == 0:
                    self._buffers.give(value)
        out = {}
        for name in self.graph.outputs:
            v = env[name]
            if self.layouts.get(name) == "nhwc":
                out[name] = to_nchw(v).reshape(self.shapes[name])
                self._buffers.give(v)
            else:
                self._buffers.forget(v)  # handed to the caller: never reused
                out[name] = v
        return out

    def forward(self, x) -> np.ndarray:
        """The graph's first output."""
        return self.run(x)[self.graph.outputs[0]]

    def convs(self) -> List[Dict[str, object]]:
        """One row per conv node: name, channels, kernel, stride, output map, multiply-adds per image
        dense and as planned (a perforated conv, and a 1x1 conv on its compact output, compute the
        mask's positions only)."""
        rows = []
        for n in conv_nodes(self.graph):
            macs = conv_macs(n, self.shapes)
            mask, computed = self.masks.get(n.name), self.conv_masks.get(n.name)
            kept = computed.count / (computed.shape[0] * computed.shape[1]) if computed is not None else 1.0
            _, cout, oh, ow = self.shapes[n.outputs[0]]
            rows.append({"name": n.name, "in_channels": self.shapes[n.inputs[0]][1], "out_channels": cout,
                         "kernel": tuple(n.attrs["kernel"]), "stride": tuple(n.attrs["strides"]),
                         "group": n.attrs["group"], "out_size": (oh, ow), "macs": macs,
                         "planned_macs": int(round(macs * kept)),
                         "rate": round(1.0 - kept, 4) if mask is not None else 0.0})
        return rows

    def macs(self) -> Dict[str, int]:
        rows = self.convs()
        return {"dense": sum(r["macs"] for r in rows), "planned": sum(r["planned_macs"] for r in rows)}

    def profile(self, x=None, repeat: int = 3) -> List[Dict[str, object]]:
        """Median seconds of each node over `repeat` forward passes (after one warm-up)."""
        if x is None:
            x = np.random.default_rng(0).standard_normal(next(iter(self.graph.inputs.values()))).astype(np.float32)
        self.run(x)
        runs = []
        for _ in range(repeat):
            t: List[float] = []
            self.run(x, timings=t)
            runs.append(t)
        med = np.median(np.array(runs), axis=0)
        return [{"node": n.name, "op": n.op, "out_shape": self.shapes[n.outputs[0]], "seconds": float(s)}
                for n, s in zip(self.graph.nodes, med)]


__all__ = ["GraphModel", "GraphError", "perforable"]
