"""Rewrites of a graph that keep its outputs: identities (Dropout at inference, Identity) removed, batch
normalisation folded into the conv before it, a
ReLU after a conv or an elementwise add fused into it (the producer's ``relu`` attribute), and a
residual add fused into the conv that feeds it (the conv's fourth input)."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ..ops import batchnorm as BN
from .ir import Graph, Node


def fold_batchnorm(graph: Graph) -> Graph:
    """Every BatchNormalization whose input is a Conv output read by nothing else becomes part of that
    conv's weights and bias: ``W' = W * s``, ``b' = (b - mean) * s + beta`` with
    ``s = scale / sqrt(var + eps)`` (computed in float64). Other batch normalisations stay."""
    consumers = graph.consumers()
    producers = graph.producers()
    consts: Dict[str, np.ndarray] = dict(graph.constants)
    folded: Dict[str, Node] = {}  # conv name -> rewritten conv
    dropped = set()
    for bn in graph.nodes:
        if bn.op != "BatchNormalization":
            continue
        conv = producers.get(bn.inputs[0])
        if (conv is None or conv.op != "Conv" or conv.name in folded or len(consumers.get(bn.inputs[0], [])) != 1
                or bn.inputs[0] in graph.outputs):
            continue
        w = np.asarray(consts[conv.inputs[1]], np.float64)
        has_bias = len(conv.inputs) > 2 and conv.inputs[2]
        b = np.asarray(consts[conv.inputs[2]]) if has_bias else np.zeros(w.shape[0], np.float32)
        gamma, beta, mean, var = (consts[i] for i in bn.inputs[1:5])
        s, shift = BN.affine(gamma, beta, mean, var, b, bn.attrs.get("epsilon", 1e-5))
        wname, bname = conv.name + "/folded_W", conv.name + "/folded_B"
        consts[wname] = (w * s[:, None, None, None]).astype(np.float32)
        consts[bname] = shift
        folded[conv.name] = Node(conv.name, "Conv", [conv.inputs[0], wname, bname], list(bn.outputs), dict(conv.attrs))
        dropped.add(bn.name)
    if not folded:
        return graph
    nodes: List[Node] = [folded.get(n.name, n) for n in graph.nodes if n.name not in dropped]
    used = {i for n in nodes for i in n.inputs}
    return Graph(dict(graph.inputs), list(graph.outputs), nodes, {k: v for k, v in consts.items() if k in used},
                 graph.name)


def fuse_relu(graph: Graph) -> Graph:
    """A Relu whose input is the output of a Conv, Add or Sum read by nothing else becomes that node's
    epilogue (attribute ``relu``; the node then writes the Relu's output)."""
    consumers = graph.consumers()
    producers = graph.producers()
    fused: Dict[str, Node] = {}
    dropped = set()
    for r in graph.nodes:
        if r.op != "Relu":
            continue
        conv = producers.get(r.inputs[0])
        if (conv is None or conv.op not in ("Conv", "Add", "Sum") or conv.attrs.get("relu")
                or len(consumers.get(r.inputs[0], [])) != 1 or r.inputs[0] in graph.outputs):
            continue
        fused[conv.name] = Node(conv.name, conv.op, list(conv.inputs), list(r.outputs), dict(conv.attrs, relu=True))
        dropped.add(r.name)
    if not fused:
        return graph
    nodes = [fused.get(n.name, n) for n in graph.nodes if n.name not in dropped]
    return Graph(dict(graph.inputs), list(graph.outputs), nodes, graph.constants, graph.name)


def fuse_residual(graph: Graph, shapes: Dict[str, tuple], skip: set) -> Graph:
    """An Add (or two-input Sum) of a Conv output read by nothing else and another value of the same
    shape becomes that conv with the other value as its residual input (fourth input; the conv's output
    pass adds it before the ReLU the add carried). Convs named in `skip` (perforated ones, whose output
    is compact) keep their add."""
    consumers = graph.consumers()
    producers = graph.producers()
    consts: Dict[str, np.ndarray] = dict(graph.constants)
    fused: Dict[str, Node] = {}
    dropped = set()
    for add in graph.nodes:
        if add.op not in ("Add", "Sum") or len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
            continue
        for k in (0, 1):
            src, other = add.inputs[k], add.inputs[1 - k]
            conv = producers.get(src)
            if (conv is None or conv.op != "Conv" or conv.name in skip or conv.name in fused
                    or conv.attrs.get("relu") or len(conv.inputs) > 3 or other in consts
                    or len(consumers.get(src, [])) != 1 or src in graph.outputs
                    or tuple(shapes[src]) != tuple(shapes[other])):
                continue
            inputs = list(conv.inputs[:3])
            if len(inputs) < 3 or not inputs[2]:
                bias = conv.name + "/zero_bias"
                consts[bias] = np.zeros(shapes[src][1], np.float32)
                inputs = inputs[:2] + [bias]
            fused[conv.name] = Node(conv.name, "Conv", inputs + [other], list(add.outputs),
                                    dict(conv.attrs, relu=bool(add.attrs.get("relu"))))
            dropped.add(add.name)
            break
    if not fused:
        return graph
    nodes = [fused.get(n.name, n) for n in graph.nodes if n.name not in dropped]
    used = {i for n in nodes for i in n.inputs}
    return Graph(dict(graph.inputs), list(graph.outputs), nodes, {k: v for k, v in consts.items() if k in used},
                 graph.name)


def drop_identities(graph: Graph) -> Graph:
    """Dropout (the identity at inference) and Identity nodes removed, their readers reading the node's
    input instead: no copy of the tensor. A node writing a graph output stays (the output is its own value)."""
    rename: Dict[str, str] = {}
    dropped = set()
    for n in graph.nodes:
        if n.op in ("Dropout", "Identity") and n.outputs[0] not in graph.outputs:
            rename[n.outputs[0]] = rename.get(n.inputs[0], n.inputs[0])
            dropped.add(n.name)
    if not dropped:
        return graph
    nodes = [Node(n.name, n.op, [rename.get(i, i) for i in n.inputs], list(n.outputs), dict(n.attrs))
             for n in graph.nodes if n.name not in dropped]
    return Graph(dict(graph.inputs), list(graph.outputs), nodes, graph.constants, graph.name)
