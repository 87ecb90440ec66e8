"""Low-rank acceleration of any graph (the accnn decompositions of :mod:`.lowrank`, on graph IR nodes).

- A Conv node with both kernel sides above 1 (dilation 1) becomes a vertical ``(g*K, C/g, kh, 1)`` conv
  (the vertical stride and pads, node ``<name>/v``) and a horizontal ``(N, K, 1, kw)`` conv (the
  horizontal stride and pads, the bias, the fused ReLU and residual input) that keeps the node's name
  and output: a perforation plan naming the conv perforates the horizontal part, whose output is the
  layer's (the paper's combination, as :mod:`.lowrank` does for the paper's networks).
- A Gemm in fully connected form (``A @ B^T`` or ``A @ B`` with B a constant, alpha scaling it, C a
  constant bias of N values scaled by beta) becomes two Gemms through K hidden units (the truncated SVD;
  ``<name>/a``, then the node itself).

:func:`select_ranks_graph` chooses ranks for a multiply-add ratio with the rank selection of
:mod:`.lowrank` (greedy on the log kept energy per saved multiply-add, each layer's own spectrum):
the graph's conv and fully connected multiply-adds at most ``original / ratio``. Both are data-free; the
channel decomposition (fitted to responses) is for the paper's networks only.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..graph.ir import Graph, GraphError, Node
from ..graph.ops import conv_macs, infer_shapes
from .lowrank import fc_decompose, fc_spectrum, select_ranks, spatial_decompose, spatial_spectrum


def _fc_form(node: Node, graph: Graph) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(W (N, F), b (N,))`` of a Gemm in fully connected form (folding alpha, beta and transB), or None."""
    a, consts = node.attrs, graph.constants
    if node.op != "Gemm" or a.get("transA") or node.inputs[1] not in consts:
        return None
    w = np.asarray(consts[node.inputs[1]], np.float64)
    if w.ndim != 2:
        return None
    w = (w if a.get("transB") else w.T) * float(a.get("alpha", 1.0))
    n = w.shape[0]
    if len(node.inputs) > 2 and node.inputs[2]:
        if node.inputs[2] not in consts or np.size(consts[node.inputs[2]]) != n:
            return None
        b = np.asarray(consts[node.inputs[2]], np.float64).reshape(n) * float(a.get("beta", 1.0))
    else:
        b = np.zeros(n)
    return w.astype(np.float32), b.astype(np.float32)


def _spatial_ok(node: Node) -> bool:
    a = node.attrs
    return node.op == "Conv" and min(a["kernel"]) > 1 and tuple(a["dilations"]) == (1, 1)


def candidates(graph: Graph, fc: bool = False) -> List[str]:
    """The nodes a ratio decomposes by default: convs with both kernel sides above 1 (dilation 1), and
    with `fc` the fully connected Gemms."""
    return [n.name for n in graph.nodes if _spatial_ok(n) or (fc and _fc_form(n, graph) is not None)]


def _costs(node: Node, graph: Graph, shapes) -> Tuple[int, int, int, np.ndarray]:
    """(multiply-adds per image undecomposed, per unit of rank, the largest rank, the energy spectrum)."""
    if node.op == "Conv":
        w = graph.constants[node.inputs[1]]
        n, cg, kh, kw = w.shape
        g = node.attrs["group"]
        _, c, _, w_in = shapes[node.inputs[0]]
        _, _, oh, ow = shapes[node.outputs[0]]
        unit = oh * w_in * c * kh + oh * ow * n * kw  # vertical: oh x w_in outputs; horizontal: N over K
        return conv_macs(node, shapes), unit, min(cg * kh, n // g * kw), spatial_spectrum(w, g)
    w, _ = _fc_form(node, graph)
    return w.size, w.shape[0] + w.shape[1], min(w.shape), fc_spectrum(w)


def graph_macs(graph: Graph, shapes=None) -> int:
    """Multiply-adds per image of the graph's convs and fully connected Gemms."""
    shapes = infer_shapes(graph) if shapes is None else shapes
    total = 0
    for n in graph.nodes:
        if n.op == "Conv":
            total += conv_macs(n, shapes)
        elif n.op == "Gemm":
            fc = _fc_form(n, graph)  # one transposed copy of the weight per Gemm (VGG's fc6 is 411 MB)
            total += fc[0].size if fc is not None else 0
    return total


def select_ranks_graph(graph: Graph, ratio: float, layers: Optional[Sequence[str]] = None,
                       fc: bool = False) -> Dict[str, int]:
    """Ranks for `layers` (default :func:`candidates`) so that the graph's conv and fully connected
    multiply-adds are at most ``original / ratio``; layers kept whole are left out."""
    if not ratio >= 1.0:
        raise ValueError(f"select_ranks_graph: ratio must be >= 1, got {ratio!r}")
    shapes = infer_shapes(graph)
    names = list(layers) if layers is not None else candidates(graph, fc)
    cand = {}
    for name in names:
        node = graph.node(name)
        if not (_spatial_ok(node) or _fc_form(node, graph) is not None):
            raise node.fail("has no data-free decomposition (a conv needs both kernel sides above 1 and "
                            "dilation 1; a Gemm the fully connected form)")
        orig, unit, kmax, energy = _costs(node, graph, shapes)
        cand[name] = dict(energy=energy, unit=unit, orig=orig, kmax=kmax)
    total = graph_macs(graph, shapes)
    fixed = total - sum(c["orig"] for c in cand.values())
    floor = fixed + sum(min(c["unit"], c["orig"]) for c in cand.values())  # every layer at rank 1
    if total / ratio < floor:
        raise ValueError(f"select_ranks_graph: ratio {ratio:g} is out of reach: the {len(cand)} decomposable "
                         f"layers are {100 * (total - fixed) / total:.0f}% of the multiply-adds, so even at rank 1 "
                         f"the graph keeps {floor / total:.0%} of them (at most {total / floor:.2f}x); the rest "
                         f"(1x1 convs{', fully connected layers' if not fc else ''}) stays")
    ranks = select_ranks(cand, total / ratio - fixed)
    return {n: int(r) for n, r in ranks.items() if r is not None}


def decompose_graph(graph: Graph, ranks: Mapping[str, int]) -> Graph:
    """`graph` with each node named in `ranks` replaced by its two-part decomposition at that rank
    (module docstring); weights from the graph's constants."""
    consts: Dict[str, np.ndarray] = dict(graph.constants)
    nodes: List[Node] = []
    names = {n.name for n in graph.nodes}
    for name in ranks:
        if name not in names:
            raise GraphError(f"decompose_graph: no node named {name!r}")
    for node in graph.nodes:
        if node.name not in ranks:
            nodes.append(node)
            continue
        rank, a = ranks[node.name], node.attrs
        mid = node.name + "/low_rank"
        if node.op == "Conv" and _spatial_ok(node):
            w = consts[node.inputs[1]]
            bias = consts[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else np.zeros(w.shape[0], np.float32)
            try:
                wv, bv, wh, bh = spatial_decompose(w, bias, rank, a["group"])
            except ValueError as e:
                raise node.fail(str(e)) from None
            (sh, sw), (pt, pl, pb, pr) = a["strides"], a["pads"]
            names_v = [node.name + "/v_W", node.name + "/v_B"]
            names_h = [node.name + "/h_W", node.name + "/h_B"]
            consts.update(zip(names_v + names_h, (wv, bv, wh, bh)))
            vertical = dict(kernel=(w.shape[2], 1), strides=(sh, 1), pads=(pt, 0, pb, 0), dilations=(1, 1),
                            group=a["group"])
            horizontal = dict(a, kernel=(1, w.shape[3]), strides=(1, sw), pads=(0, pl, 0, pr))
            nodes.append(Node(node.name + "/v", "Conv", [node.inputs[0]] + names_v, [mid], vertical))
            nodes.append(Node(node.name, "Conv", [mid] + names_h + list(node.inputs[3:]), list(node.outputs),
                              horizontal))
        elif _fc_form(node, graph) is not None:
            w, b = _fc_form(node, graph)
            try:
                wa, ba, wb, bb = fc_decompose(w, b, rank)
            except ValueError as e:
                raise node.fail(str(e)) from None
            names_a, names_b = [node.name + "/a_W", node.name + "/a_B"], [node.name + "/b_W", node.name + "/b_B"]
            consts.update(zip(names_a + names_b, (wa, ba, wb, bb)))
            fc = dict(transA=0, transB=1, alpha=1.0, beta=1.0)
            nodes.append(Node(node.name + "/a", "Gemm", [node.inputs[0]] + names_a, [mid], dict(fc)))
            nodes.append(Node(node.name, "Gemm", [mid] + names_b, list(node.outputs), dict(fc)))
        else:
            raise node.fail("has no data-free decomposition")
    used = {i for n in nodes for i in n.inputs}
    return Graph(dict(graph.inputs), list(graph.outputs), nodes, {k: v for k, v in consts.items() if k in used},
                 graph.name)
