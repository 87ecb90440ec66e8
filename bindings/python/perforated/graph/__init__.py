"""Bring your own network: the graph IR (:mod:`.ir`), its ops and shape inference (:mod:`.ops`), their
kernels (:mod:`.kernels`) and :class:`GraphModel`, which runs a graph dense or perforated. Importers
(``perforated.onnx``) build graphs from other formats."""
from .ir import Graph, GraphError, Node
from .model import GraphModel, perforable
from .ops import infer_shapes

__all__ = ["Graph", "GraphError", "GraphModel", "Node", "infer_shapes", "perforable"]
