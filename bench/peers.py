"""Dense peers measured in the same run as our library: ONNX Runtime and PyTorch (both optional).

Each builder returns a zero-argument callable running the peer on fixed inputs (so the timing covers
the computation, not input conversion), or None with a reason when the peer is not installed.
ONNX Runtime runs with all graph optimisations and `threads` intra-op threads; PyTorch with
`torch.set_num_threads(threads)`, in NCHW and in channels-last memory format.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

Runner = Callable[[], object]


def available() -> Dict[str, Optional[str]]:
    """Peer name -> version, or None when it cannot be imported."""
    out: Dict[str, Optional[str]] = {}
    for name in ("onnxruntime", "torch"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "unknown")
        except Exception:  # ImportError, or a broken install raising something else
            out[name] = None
    return out


def _ort_session(model, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnx_model(nodes, inputs, outputs, initializers):
    """A model at an IR version every onnxruntime 1.x accepts (onnx may default to a newer one)."""
    from onnx import helper

    graph = helper.make_graph(nodes, "perforated_peer", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def ort_conv(x: np.ndarray, weight: np.ndarray, stride: int, pad: int, groups: int,
             threads: int) -> Runner:
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=list(weight.shape[2:]),
                            strides=[stride, stride], pads=[pad] * 4, group=groups)
    model = onnx_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                       [numpy_helper.from_array(weight, "w")])
    session = _ort_session(model, threads)
    feeds = {"x": x}
    return lambda: session.run(None, feeds)


def torch_conv(x: np.ndarray, weight: np.ndarray, stride: int, pad: int, groups: int, threads: int,
               channels_last: bool) -> Runner:
    import torch

    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    wt = torch.from_numpy(weight)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
        wt = wt.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode():
            return torch.nn.functional.conv2d(xt, wt, None, stride, pad, 1, groups)

    return run


def conv_peers(x: np.ndarray, weight: np.ndarray, stride: int, pad: int, groups: int,
               threads: int) -> Dict[str, Tuple[Optional[Runner], str]]:
    """Every installed conv peer: name -> (runner or None, note)."""
    have = available()
    peers: Dict[str, Tuple[Optional[Runner], str]] = {}
    if have["onnxruntime"]:
        peers["onnxruntime"] = (ort_conv(x, weight, stride, pad, groups, threads),
                                f"onnxruntime {have['onnxruntime']}, all optimisations")
    else:
        peers["onnxruntime"] = (None, "not installed (pip install onnxruntime onnx)")
    if have["torch"]:
        peers["torch_nchw"] = (torch_conv(x, weight, stride, pad, groups, threads, False),
                               f"torch {have['torch']} NCHW")
        peers["torch_cl"] = (torch_conv(x, weight, stride, pad, groups, threads, True),
                             f"torch {have['torch']} channels-last")
    else:
        peers["torch_nchw"] = (None, "not installed")
        peers["torch_cl"] = (None, "not installed")
    return peers
