"""ONNX models in and out: :func:`load` reads an ONNX graph (a path or an ``onnx.ModelProto``) into a
:class:`perforated.graph.GraphModel`, dense or perforated by a plan; :func:`export` writes one back in
standard ONNX ops (a perforated conv as gather + MatMul + nearest-neighbour gather), to deploy in ONNX
Runtime or OpenVINO; ``python -m perforated.onnx`` lists, runs, times, perforates and exports a model
from the command line. Needs the ``onnx`` package."""
from __future__ import annotations

from typing import Mapping, Optional, Union

from ..graph import GraphModel
from ..graph.graph_model import PlanLike
from ..search.lowrank_graph import decompose_graph, select_ranks_graph
from .exporter import export, to_onnx
from .importer import to_graph


def load(model, batch: Optional[int] = None, plan: PlanLike = None, layout: str = "nhwc",
         lowrank: Union[None, float, Mapping[str, int]] = None, weights=None) -> GraphModel:
    """A runnable model of an ONNX graph: weights from its initializers, batch from the graph or
    `batch`; `plan` a PerforationPlan, a plan file's path, ``{"layers": {conv node: spec}}`` or
    ``{"rate": r, "kind": "uniform" | "grid", "seed": s}`` for every perforable conv.
    ``load(...).forward(x)`` returns the graph's first output as a numpy array. An op or attribute
    the engine cannot run raises ``GraphError`` naming the node before anything runs. `layout`: see
    :class:`perforated.graph.GraphModel` ("nhwc", the channels-last engine, or "nchw"). `lowrank`: a
    multiply-add ratio for the data-free low-rank decomposition of the convs (ranks chosen by
    :func:`perforated.search.lowrank_graph.select_ranks_graph`) or ``{node: rank}``; applied before
    the plan, which then perforates a decomposed conv's horizontal part (it keeps the node's name).
    `weights`: an ``.npz``, a PyTorch ``state_dict`` file or a dict replacing the initializers of the same
    names (e.g. a fine-tuned PyTorch model's state_dict on its ``torch.onnx.export`` graph); a name that
    is no initializer, or a shape that differs, is a ``ValueError``."""
    graph = to_graph(model, batch, weights)
    if lowrank is not None:
        ranks = dict(lowrank) if isinstance(lowrank, Mapping) else select_ranks_graph(graph, float(lowrank))
        graph = decompose_graph(graph, ranks)
    return GraphModel(graph, plan=plan, layout=layout)


__all__ = ["export", "load", "to_graph", "to_onnx"]
