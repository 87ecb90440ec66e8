"""Networks and how they run. Any network: the graph IR (:mod:`.ir`), its ops and shape inference
(:mod:`.ops`), rewrites (:mod:`.passes`), their kernels (:mod:`.kernels`, :mod:`.nhwc`) and
:class:`GraphModel` (:mod:`.graph_model`), which runs a graph dense or perforated; importers
(``perforated.onnx``, ``perforated.torch``) build graphs from other formats. The paper's networks: their
rows (:mod:`.networks`), output sizes (:mod:`.shapes`), perforation plans (:mod:`.plan`) and
:class:`~perforated.graph.model.Model` (:mod:`.model`, with its channels-last inference engine in
:mod:`.engine`), which trains them forward and backward."""
from .ir import Graph, GraphError, Node
from .graph_model import GraphModel, perforable
from .ops import infer_shapes

__all__ = ["Graph", "GraphError", "GraphModel", "Node", "infer_shapes", "perforable"]
