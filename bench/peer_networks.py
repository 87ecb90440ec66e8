"""Whole-network dense peers: the paper's networks (SPEC §7) in ONNX Runtime, OpenVINO and PyTorch
(all optional; OpenVINO reads the ONNX graph ONNX Runtime runs).

    python -m bench.peer_networks --check
    python -m bench.peer_networks --time nin:128,alexnet:64 [--threads 2] [--repeat 3]

The networks come as rows ``(kind, name, params)`` (perforated.graph.networks), are turned into the
graph IR (perforated.graph.rows.to_graph) and written as ONNX by perforated's exporter, built for
inference: dropout is the identity, Caffe's ceil-mode pooling is kept, an optional softmax
closes the network (the paper's forward includes it). Weights are He-normal from a seeded numpy
generator when none are given (so AlexNet / VGG-16 can be timed without trained weights), or the
given arrays ``{layer name: {"weight": ..., "bias": ...}}`` in Caffe / PyTorch layout: conv
``(out, in / groups, k, k)``, fc ``(out, in)``, so the peers compute what our model computes.

Semantics the peers must share with Caffe and our library (checked by ``--check``):

- pooling output size ``ceil((in + 2 pad - k) / stride) + 1``, minus one when the last window would
  start in the padding: ONNX ``ceil_mode=1`` and torch ``ceil_mode=True`` use the same rule;
- average pooling divides by the number of in-bounds positions (Caffe clips the window to the map
  when pad is 0, and every pooling of these networks has pad 0): ``count_include_pad=0`` / ``False``;
- LRN ``x / (k + alpha / size * sum of squares over size channels) ** beta``: ONNX LRN and torch
  ``LocalResponseNorm`` both scale the sum by ``alpha / size`` like Caffe.

The runners return a zero-argument callable that runs one forward on a fixed random float32 input
(warm-up is the caller's job), or ``(None, "not installed (...)")`` when the package is missing.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from perforated.graph.networks import NETWORKS
from perforated.graph.rows import trace, weight_shapes

Row = Tuple[str, str, dict]
Weights = Dict[str, Dict[str, np.ndarray]]
Runner = Callable[[], object]
Shape = Tuple[int, ...]

ROOT = Path(__file__).resolve().parents[1]


# --- shapes and weights ----------------------------------------------------------------------------

def trace_shapes(rows: Sequence[Row], input_shape: Shape) -> List[Shape]:
    """Per-image output shape of every row: ``(C, H, W)`` for maps, ``(features,)`` after an fc (the
    graph IR's shape inference, perforated.graph.rows.trace)."""
    return [s[1:] for s in trace(rows, input_shape).values()]


def random_weights(rows: Sequence[Row], input_shape: Shape, seed: int = 0) -> Weights:
    """He-normal weights (std sqrt(2 / fan_in)) and small random biases (so the bias path is
    exercised by the check), drawn in row order from one seeded generator: reproducible."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for name, (w_shape, b_shape) in weight_shapes(rows, input_shape).items():
        fan_in = int(np.prod(w_shape[1:]))
        w = rng.standard_normal(w_shape, dtype=np.float32)
        w *= np.float32(math.sqrt(2.0 / fan_in))
        b = rng.standard_normal(b_shape, dtype=np.float32) * np.float32(0.01)
        weights[name] = {"weight": w, "bias": b}
    return weights


def _checked_weights(rows: Sequence[Row], input_shape: Shape, classes: int,
                     weights: Optional[Weights], seed: int) -> Weights:
    """The given weights (validated, as contiguous float32) or random ones; checks the class count."""
    final = trace_shapes(rows, input_shape)[-1]
    if int(np.prod(final)) != classes:
        raise ValueError(f"network ends with shape {final}, expected {classes} classes")
    if weights is None:
        return random_weights(rows, input_shape, seed)
    out: Weights = {}
    for name, shapes in weight_shapes(rows, input_shape).items():
        if name not in weights:
            raise ValueError(f"weights: missing layer {name!r}")
        out[name] = {}
        for key, expected in zip(("weight", "bias"), shapes):
            arr = np.ascontiguousarray(weights[name][key], dtype=np.float32)
            if arr.shape != expected:
                raise ValueError(f"weights[{name!r}][{key!r}]: shape {arr.shape}, expected {expected}")
            out[name][key] = arr
    return out


def _input(batch: int, input_shape: Shape, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)


# --- ONNX / ONNX Runtime ---------------------------------------------------------------------------

def onnx_network(rows: Sequence[Row], input_shape: Shape, batch: int, classes: int,
                 weights: Optional[Weights] = None, seed: int = 0, softmax: bool = True):
    """An onnx ModelProto of the network for inference: input "x" (batch, *input_shape), output "y"
    (batch, classes), probabilities when `softmax` else logits. The rows become the graph IR
    (perforated.graph.rows.to_graph) and the IR is written as ONNX (perforated.onnx.exporter.graph_to_onnx):
    the graph our GraphModel runs and the exporter writes for any imported network."""
    from perforated.graph.rows import to_graph
    from perforated.onnx.exporter import graph_to_onnx

    params = _checked_weights(rows, input_shape, classes, weights, seed)
    return graph_to_onnx(to_graph(rows, input_shape, batch, params, softmax=softmax))


def _onnx_bytes(rows: Sequence[Row], input_shape: Shape, batch: int, classes: int,
                weights: Optional[Weights], softmax: bool) -> bytes:
    return onnx_network(rows, input_shape, batch, classes, weights, softmax=softmax).SerializeToString()


def _fixed_input(batch: int, input_shape: Shape, x: Optional[np.ndarray]) -> np.ndarray:
    return _input(batch, input_shape) if x is None else np.ascontiguousarray(x, np.float32)


def ort_network_runner(rows: Sequence[Row], input_shape: Shape, batch: int, classes: int,
                       threads: int, weights: Optional[Weights] = None, softmax: bool = True,
                       x: Optional[np.ndarray] = None, model: Optional[bytes] = None
                       ) -> Tuple[Optional[Runner], str]:
    """(callable running one ONNX Runtime forward on a fixed input, note), or (None, reason).
    `model`: the serialised ONNX graph when already built (shared with OpenVINO)."""
    try:
        import onnx  # noqa: F401  (the model is built with onnx)
        import onnxruntime as ort
    except Exception:  # ImportError, or a broken install raising something else
        return None, "not installed (pip install onnxruntime onnx)"
    from bench.peers import ort_runner

    if model is None:
        model = _onnx_bytes(rows, input_shape, batch, classes, weights, softmax)
    return ort_runner(model, _fixed_input(batch, input_shape, x), threads), \
        f"onnxruntime {ort.__version__}, all optimisations, {threads} intra-op threads"


def ov_network_runner(rows: Sequence[Row], input_shape: Shape, batch: int, classes: int,
                      threads: int, weights: Optional[Weights] = None, softmax: bool = True,
                      x: Optional[np.ndarray] = None, model: Optional[bytes] = None
                      ) -> Tuple[Optional[Runner], str]:
    """(callable running one OpenVINO forward of the same ONNX graph on a fixed input, note), or
    (None, reason). CPU plugin, f32, latency hint, `threads` threads (bench.peers.ov_config)."""
    try:
        import onnx  # noqa: F401
        import openvino  # noqa: F401
    except Exception:
        return None, "not installed (pip install openvino onnx)"
    from bench.peers import ov_runner

    if model is None:
        model = _onnx_bytes(rows, input_shape, batch, classes, weights, softmax)
    return ov_runner(model, _fixed_input(batch, input_shape, x), threads)


def network_peers(rows: Sequence[Row], input_shape: Shape, batch: int, classes: int, threads: int,
                  weights: Optional[Weights] = None, softmax: bool = True,
                  x: Optional[np.ndarray] = None) -> Dict[str, Tuple[Optional[Runner], str]]:
    """Every known whole-network peer: name -> (runner or None, note), all on the same input and
    weights; ONNX Runtime and OpenVINO read one ONNX graph, built once. A peer whose build fails
    gets (None, "failed: ...") instead of stopping the run."""
    from bench.peers import ORDER, _built

    x = _fixed_input(batch, input_shape, x)
    if weights is None:
        weights = random_weights(rows, input_shape)
    model: Optional[bytes] = None
    try:
        import onnx  # noqa: F401

        model = _onnx_bytes(rows, input_shape, batch, classes, weights, softmax)
    except ImportError:
        pass
    builders = {
        "onnxruntime": lambda: ort_network_runner(rows, input_shape, batch, classes, threads, weights,
                                                  softmax, x, model),
        "openvino": lambda: ov_network_runner(rows, input_shape, batch, classes, threads, weights,
                                              softmax, x, model),
        "torch_nchw": lambda: torch_network_runner(rows, input_shape, batch, classes, threads, False,
                                                   weights, softmax, x),
        "torch_cl": lambda: torch_network_runner(rows, input_shape, batch, classes, threads, True,
                                                 weights, softmax, x),
    }
    peers = {name: _built(builders[name]) for name in ORDER}
    del model  # the sessions hold their own copies of the weights
    return peers


# --- PyTorch -------------------------------------------------------------------------------------

def torch_network(rows: Sequence[Row], input_shape: Shape, batch: int, classes: int,
                  weights: Optional[Weights] = None, seed: int = 0, softmax: bool = True):
    """A torch.nn.Sequential of the network in eval mode (modules named after the rows); `batch` is
    accepted for symmetry with onnx_network (torch models take any batch)."""
    import torch
    from torch import nn

    del batch
    params = _checked_weights(rows, input_shape, classes, weights, seed)
    shapes = [tuple(input_shape)] + trace_shapes(rows, input_shape)
    modules: List[Tuple[str, nn.Module]] = []
    flat = False
    for (kind, name, p), in_shape in zip(rows, shapes):
        if kind == "conv":
            m = nn.Conv2d(in_shape[0], p["out"], p["kernel"], p.get("stride", 1), p.get("pad", 0),
                          groups=p.get("groups", 1))
        elif kind == "relu":
            m = nn.ReLU()
        elif kind == "dropout":
            m = nn.Dropout(p.get("ratio", 0.5))  # identity in eval mode
        elif kind == "pool" and p.get("global_"):
            m = nn.AdaptiveAvgPool2d(1)
        elif kind == "pool" and p["mode"] == "max":
            m = nn.MaxPool2d(p["kernel"], p["stride"], p.get("pad", 0), ceil_mode=True)
        elif kind == "pool":
            m = nn.AvgPool2d(p["kernel"], p["stride"], p.get("pad", 0), ceil_mode=True,
                             count_include_pad=False)
        elif kind == "lrn":
            m = nn.LocalResponseNorm(p["size"], p["alpha"], p["beta"], p["k"])
        elif kind == "fc":
            if not flat:
                modules.append(("flatten_" + name, nn.Flatten()))
                flat = True
            m = nn.Linear(int(np.prod(in_shape)), p["out"])
        else:
            raise ValueError(f"{name}: unknown layer kind {kind!r}")
        if kind in ("conv", "fc"):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(params[name]["weight"]))
                m.bias.copy_(torch.from_numpy(params[name]["bias"]))
        modules.append((name, m))
    if not flat:
        modules.append(("flatten", nn.Flatten()))
    if softmax:
        modules.append(("softmax", nn.Softmax(dim=1)))
    return nn.Sequential(OrderedDict(modules)).eval()


def torch_network_runner(rows: Sequence[Row], input_shape: Shape, batch: int, classes: int,
                         threads: int, channels_last: bool, weights: Optional[Weights] = None,
                         softmax: bool = True,
                         x: Optional[np.ndarray] = None) -> Tuple[Optional[Runner], str]:
    """(callable running one PyTorch forward under inference_mode on a fixed input, note), or
    (None, reason). Fresh output tensors come from torch's default CPU allocator each call."""
    try:
        import torch
    except Exception:
        return None, "not installed (pip install torch)"
    torch.set_num_threads(threads)
    model = torch_network(rows, input_shape, batch, classes, weights, softmax=softmax)
    xt = torch.from_numpy(_input(batch, input_shape) if x is None
                          else np.ascontiguousarray(x, np.float32))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode():
            return model(xt)

    layout = "channels-last" if channels_last else "NCHW"
    return run, f"torch {torch.__version__} {layout}, {threads} threads, default CPU allocator"


# --- check and timing ----------------------------------------------------------------------------

def _load(path: Path, name: str):
    """Import a module by path (the tests' float64 reference, which is no package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _networks() -> dict:
    return NETWORKS


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _check_ops() -> bool:
    """LRN and ceil-mode pooling of both peers against the float64 reference of tests/reference.py."""
    import torch
    from onnx import TensorProto, helper

    from bench.peers import _ort_session, onnx_model

    ref = _load(ROOT / "tests/reference.py", "_perforated_reference")
    x = np.random.default_rng(3).standard_normal((2, 23, 16, 16), dtype=np.float32) * 30
    lrn = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
    cases = [("lrn", ref.lrn(x, **lrn),
              helper.make_node("LRN", ["x"], ["y"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
              torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)),
             ("max 3/2 ceil", ref.pool2d(x, 3, 2, 0, "max"),
              helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                               pads=[0] * 4, ceil_mode=1),
              torch.nn.MaxPool2d(3, 2, ceil_mode=True)),
             ("avg 3/2 ceil", ref.pool2d(x, 3, 2, 0, "avg"),
              helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                               pads=[0] * 4, ceil_mode=1, count_include_pad=0),
              torch.nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False))]
    ok = True
    for label, want, node, module in cases:
        model = onnx_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [])
        got_ort = _ort_session(model, 1).run(None, {"x": x})[0]
        with torch.inference_mode():
            got_torch = module(torch.from_numpy(x)).numpy()
        e_ort = _rel_err(got_ort, want) if got_ort.shape == want.shape else float("inf")
        e_torch = _rel_err(got_torch, want) if got_torch.shape == want.shape else float("inf")
        good = max(e_ort, e_torch) < 1e-5
        ok &= good
        print(f"  {label:13s} ref {want.shape}: ort {got_ort.shape} rel err {e_ort:.1e}, "
              f"torch {got_torch.shape} rel err {e_torch:.1e} {'ok' if good else 'MISMATCH'}")
    return ok


def check() -> bool:
    """Both peers agree on NIN (same random weights), ops match the reference, shapes are right."""
    import torch

    torch.set_num_threads(2)
    nets = _networks()
    ok = True
    print("ops vs tests/reference.py (float64):")
    ok &= _check_ops()

    print("NIN, batch 4, same random weights (seed 0), ONNX Runtime vs torch:")
    spec = nets["nin"]
    rows, shape, classes = spec["layers"](), spec["input"], spec["classes"]
    x = _input(4, shape)
    for softmax in (False, True):
        ort_run, _ = ort_network_runner(rows, shape, 4, classes, 2, softmax=softmax, x=x)
        torch_run, _ = torch_network_runner(rows, shape, 4, classes, 2, False, softmax=softmax, x=x)
        a, b = ort_run(), torch_run().numpy()
        err = _rel_err(a, b)
        good = a.shape == b.shape == (4, classes) and err < 1e-4
        ok &= good
        print(f"  {'softmax' if softmax else 'logits '} {a.shape} (max |torch| {np.abs(b).max():.3g}): "
              f"max |ort - torch| / max |torch| = {err:.1e} {'ok' if good else 'MISMATCH'}")
        ov_run, note = ov_network_runner(rows, shape, 4, classes, 2, softmax=softmax, x=x)
        if ov_run is None:
            print(f"  OpenVINO: skipped, {note}")
            continue
        c = np.array(ov_run())
        err = _rel_err(c, a)
        good = c.shape == a.shape and err < 1e-4
        ok &= good
        print(f"  {'softmax' if softmax else 'logits '} OpenVINO {c.shape}: max |ov - ort| / max |ort| = "
              f"{err:.1e} {'ok' if good else 'MISMATCH'}")

    for net in ("nin", "alexnet", "vgg16"):
        spec = nets[net]
        rows, shape, classes = spec["layers"](), spec["input"], spec["classes"]
        trace = [f"{n} {'x'.join(map(str, s))}" for (k, n, _), s in zip(rows, trace_shapes(rows, shape))
                 if k in ("pool", "fc")]
        print(f"{net}: Caffe shapes after pools/fcs: " + ", ".join(trace))
        if net == "nin":
            continue
        weights = random_weights(rows, shape)  # built once, shared by both peers
        # logits, not probabilities: a saturated softmax would hide differences
        ort_run, _ = ort_network_runner(rows, shape, 1, classes, 2, weights, softmax=False)
        torch_run, _ = torch_network_runner(rows, shape, 1, classes, 2, False, weights, softmax=False)
        a, b = ort_run(), torch_run().numpy()
        err = _rel_err(a, b)
        good = a.shape == b.shape == (1, classes) and err < 1e-4
        ok &= good
        print(f"  batch 1 output: ort {a.shape}, torch {tuple(b.shape)}, logits rel diff "
              f"{err:.1e} {'ok' if good else 'MISMATCH'}")
        del weights, ort_run, torch_run
    print("CHECK", "PASSED" if ok else "FAILED")
    return ok


def time_networks(plan: List[Tuple[str, int]], threads: int, repeat: int) -> None:
    """Median of `repeat` alternating rounds after one warm-up, every installed peer in each round."""
    from bench.peers import time_together

    nets = _networks()
    for net, batch in plan:
        spec = nets[net]
        rows, shape, classes = spec["layers"](), spec["input"], spec["classes"]
        weights = random_weights(rows, shape)
        x = _input(batch, shape)
        _, results = time_together([], network_peers(rows, shape, batch, classes, threads, weights, x=x),
                                   repeat)
        for peer, r in results.items():
            t, note = r["time"], r["note"]
            if t is None:
                print(f"{net} b{batch} {peer}: skipped, {note}")
                continue
            print(f"{net} b{batch} {peer:11s}: median {t['median']:.3f} s (min {t['min']:.3f}, "
                  f"max {t['max']:.3f}, {t['runs']} runs)  [{note}]", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the peers (NIN) and shapes")
    parser.add_argument("--time", default="", help="comma-separated net:batch, e.g. nin:128,alexnet:64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    ok = True
    if args.check:
        ok = check()
    if args.time:
        plan = [(item.split(":")[0], int(item.split(":")[1])) for item in args.time.split(",")]
        time_networks(plan, args.threads, args.repeat)
    if not (args.check or args.time):
        parser.print_help()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
