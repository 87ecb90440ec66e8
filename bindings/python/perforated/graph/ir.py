"""The graph IR: a network as a DAG of named nodes over named tensors (values).

A :class:`Graph` has one or more inputs (name -> shape, NCHW, batch first), named constants
(weights, numpy arrays), nodes in any order, and outputs. A :class:`Node` reads values (graph
inputs, constants or other nodes' outputs) by name and writes its own outputs. Op names and their
attributes follow ONNX (``Conv``, ``MaxPool``, ``Gemm``, ...) with attributes in one normalised
form per op, listed in :mod:`perforated.graph.ops`; the importers (``perforated.onnx``) translate
into it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

Shape = Tuple[int, ...]


class GraphError(ValueError):
    """A graph that cannot be built or run: names the node, its op and what is wrong."""


@dataclass
class Node:
    name: str
    op: str
    inputs: List[str]
    outputs: List[str]
    attrs: Dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> GraphError:
        return GraphError(f"node {self.name!r} ({self.op}): {message}")


@dataclass
class Graph:
    inputs: Dict[str, Shape]
    outputs: List[str]
    nodes: List[Node]
    constants: Dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "graph"

    def __post_init__(self) -> None:
        self.nodes = topological(self.nodes, set(self.inputs) | set(self.constants))
        produced = {o for n in self.nodes for o in n.outputs}
        for out in self.outputs:
            if out not in produced and out not in self.inputs:
                raise GraphError(f"graph output {out!r} is produced by no node")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}; nodes: {[n.name for n in self.nodes][:20]}...")

    def producers(self) -> Dict[str, Node]:
        """value name -> the node writing it."""
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> Dict[str, List[Node]]:
        """value name -> the nodes reading it (in graph order)."""
        users: Dict[str, List[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                users.setdefault(i, []).append(n)
        return users

    def with_batch(self, batch: int) -> "Graph":
        """The same graph on inputs with `batch` images (shapes after the batch are kept)."""
        if not isinstance(batch, int) or batch < 1:
            raise GraphError(f"batch must be a positive int, got {batch!r}")
        inputs = {k: (batch,) + tuple(v[1:]) for k, v in self.inputs.items()}
        return Graph(inputs, list(self.outputs), list(self.nodes), self.constants, self.name)


def topological(nodes: Sequence[Node], available: set) -> List[Node]:
    """`nodes` in an order where every node follows the producers of its inputs (stable: a graph already
    in order keeps it). Raises GraphError for a value nobody produces, a name written twice, or a cycle."""
    writers: Dict[str, Node] = {}
    for n in nodes:
        for o in n.outputs:
            if o in writers or o in available:
                raise GraphError(f"value {o!r} is written twice (node {n.name!r})")
            writers[o] = n
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        dup = sorted({x for x in names if names.count(x) > 1})
        raise GraphError(f"node names must be unique; repeated: {dup[:5]}")
    done = set(available)
    order: List[Node] = []
    pending = list(nodes)
    while pending:
        rest = []
        for n in pending:
            missing = [i for i in n.inputs if i and i not in done]
            unknown = [i for i in missing if i not in writers]
            if unknown:
                raise n.fail(f"reads {unknown[0]!r}, which is no graph input, constant or node output")
            if missing:
                rest.append(n)
                continue
            order.append(n)
            done.update(n.outputs)
        if len(rest) == len(pending):
            raise GraphError(f"the graph has a cycle through node {rest[0].name!r}")
        pending = rest
    return order


def describe(graph: Graph, shapes: Mapping[str, Shape]) -> List[str]:
    """One line per node: name, op, output shape (for `python -m perforated.onnx info`)."""
    return [f"{n.name:40s} {n.op:20s} {tuple(shapes.get(n.outputs[0], ()))}" for n in graph.nodes]
