"""PyTorch integration (``pip install "perforated[torch]"``): perforated convolutions inside any torch model.

* :func:`perforated_conv2d`: the functional form, autograd-aware; libperforated on CPU float32 tensors,
  PyTorch operations elsewhere (any device, any dtype, traceable for ``torch.onnx.export``).
* :class:`PerforatedConv2d`: a drop-in ``nn.Conv2d`` (``rate`` / ``kind`` / ``seed`` or a mask).
* :func:`perforate` / :func:`unperforate`: apply a plan (qualified module names) to a model, undo it.
* :func:`impact_maps`, :func:`greedy_search`: impact estimation and the paper's greedy search.
* :func:`from_onnx`: an ONNX model (through the graph IR) as a trainable torch module.
* ``python -m perforated.torch.finetune``: fine-tuning, also under ``torchrun`` with DDP.
"""
import importlib.util

if importlib.util.find_spec("torch") is None:  # pragma: no cover - exercised only without torch
    raise ImportError("perforated.torch needs PyTorch: pip install \"perforated[torch]\" (or pip install torch)")

from .functional import c_path_reason, conv_output_size, perforated_conv2d
from .modules import PerforatedConv2d, strip_masks
from .convert import conv_layers, output_sizes, perforate, plan_of, uniform_plan, unperforate
from .search import forward_time, greedy_search, impact_maps, mean_nll
from .graph import GraphModule, from_onnx, node_plan

__all__ = ["perforated_conv2d", "conv_output_size", "c_path_reason", "PerforatedConv2d", "strip_masks",
           "perforate", "unperforate", "uniform_plan", "conv_layers", "output_sizes", "plan_of", "impact_maps",
           "greedy_search", "mean_nll", "forward_time", "GraphModule", "from_onnx", "node_plan"]
