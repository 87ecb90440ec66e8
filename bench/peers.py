"""Dense peers measured in the same run as our library: ONNX Runtime, OpenVINO and PyTorch (all optional).

Each builder returns a zero-argument callable running the peer on fixed inputs (so the timing covers
the computation, not input conversion), or None with a reason when the peer is not installed.
ONNX Runtime runs with all graph optimisations and `threads` intra-op threads; OpenVINO reads the same
ONNX graph and compiles it for its CPU plugin with `threads` inference threads, f32 precision (its
default on CPUs with bf16 / AMX would be bf16) and the latency hint (one stream); PyTorch with
`torch.set_num_threads(threads)`, in NCHW and in channels-last memory format.

`time_together` times the peers in the same alternating rounds as our own calls (bench.measure
.alternating), and `best_peer` / `ordered` pick the fastest peer and the table columns from what was
measured, so a table shows exactly the peers that ran.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

Runner = Callable[[], object]
Peers = Dict[str, Tuple[Optional[Runner], str]]

# Every peer the harness knows, in the order tables show them, and how tables name them.
ORDER = ("onnxruntime", "openvino", "torch_nchw", "torch_cl")
LABELS = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "torch_nchw": "torch NCHW",
          "torch_cl": "torch channels-last"}
INSTALL = {"onnxruntime": "pip install onnxruntime onnx", "openvino": "pip install openvino onnx",
           "torch": "pip install torch"}


def available() -> Dict[str, Optional[str]]:
    """Peer package -> version, or None when it cannot be imported."""
    out: Dict[str, Optional[str]] = {}
    for name in ("onnxruntime", "openvino", "torch"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "unknown")
        except Exception:  # ImportError, or a broken install raising something else
            out[name] = None
    return out


def label(name: str) -> str:
    """How tables name a peer (its key when unknown)."""
    return LABELS.get(name, name)


def ordered(names: Iterable[str]) -> List[str]:
    """The given peer names, each once, known peers in ORDER first, then the others sorted."""
    names = set(names)
    return [n for n in ORDER if n in names] + sorted(names - set(ORDER))


def timed_names(results: Iterable[Mapping[str, Mapping]]) -> List[str]:
    """The peers with a time in at least one of the result dicts ``{name: {"note", "time"}}``, in
    ORDER: the peer columns of a table (a peer that never ran, e.g. not installed, gets none)."""
    return ordered(name for r in results for name, v in (r or {}).items() if v.get("time"))


def untimed_notes(results: Iterable[Mapping[str, Mapping]]) -> List[str]:
    """"label (note)" of each peer that has no time in any of the result dicts: why it has no column."""
    results = list(results)
    timed = set(timed_names(results))
    notes = {name: v.get("note") for r in results for name, v in (r or {}).items() if name not in timed}
    return [f"{label(k)} ({notes[k] or 'not measured'})" for k in ordered(notes)]


def best_peer(times: Mapping[str, Optional[float]]) -> Optional[Tuple[str, float]]:
    """(name, seconds) of the fastest peer among those with a time, or None when none has one.
    Ties go to the first in ORDER."""
    timed = [(t, ordered(times).index(name), name) for name, t in times.items() if t is not None and t > 0]
    if not timed:
        return None
    t, _, name = min(timed)
    return name, t


def medians(results: Mapping[str, Mapping]) -> Dict[str, Optional[float]]:
    """Peer name -> median seconds (None when not measured) from ``{name: {"note", "time"}}``."""
    return {name: (r.get("time") or {}).get("median") for name, r in (results or {}).items()}


# --- ONNX Runtime ---------------------------------------------------------------------------------

def _ort_session(model, threads: int):
    """An ONNX Runtime CPU session of an onnx ModelProto or its serialised bytes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's pool threads otherwise spin for a while after each run, on the cores the next engine timed
    # in the same alternating round needs (measured on a 2-vCPU Xeon, 2026-12-05: our conv layer at
    # ~310 GFLOP/s right after an ORT run, ~425 with spinning off; ORT's own time unchanged)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def onnx_model(nodes, inputs, outputs, initializers):
    """A model at an IR version every onnxruntime 1.x accepts (onnx may default to a newer one)."""
    from onnx import helper

    graph = helper.make_graph(nodes, "perforated_peer", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def conv_model(x_shape: Sequence[int], weight: np.ndarray, stride: int, pad: int, groups: int):
    """One ONNX Conv node (no bias): input "x" of `x_shape`, output "y"."""
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=list(weight.shape[2:]),
                            strides=[stride, stride], pads=[pad] * 4, group=groups)
    return onnx_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                      [numpy_helper.from_array(weight, "w")])


def ort_runner(model, x: np.ndarray, threads: int) -> Runner:
    """One ONNX Runtime run of a model on its (first and only) input fixed to `x` -> its first output."""
    session = _ort_session(model, threads)
    feeds = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feeds)[0]


def ort_conv(x: np.ndarray, weight: np.ndarray, stride: int, pad: int, groups: int,
             threads: int) -> Runner:
    return ort_runner(conv_model(x.shape, weight, stride, pad, groups), x, threads)


# --- OpenVINO -------------------------------------------------------------------------------------

def ov_config(threads: int) -> Dict[str, object]:
    """The CPU plugin's compile settings: `threads` threads, f32 (never bf16 / f16), latency hint."""
    return {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY"}


def ov_runner(model, x: np.ndarray, threads: int) -> Tuple[Runner, str]:
    """(one OpenVINO inference of an onnx ModelProto or its bytes on the fixed input `x` -> its first
    output, note). The input tensor shares `x`'s memory (set once); the output is OpenVINO's own
    tensor, read as a numpy view (copy it to keep it past the next call)."""
    import openvino as ov

    data = model if isinstance(model, bytes) else model.SerializeToString()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(data, b""), "CPU", ov_config(threads))
    request = compiled.create_infer_request()
    x = np.ascontiguousarray(x, np.float32)
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))

    def run():
        request.infer()
        return request.get_output_tensor(0).data

    run.keep = x  # the input buffer must outlive the request that reads it
    # what the plugin chose, read back (an ov.Type prints as "<Type: 'float32'>": name it "f32")
    props = {k: compiled.get_property(k) for k in ("INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT",
                                                   "NUM_STREAMS")}
    precision = props["INFERENCE_PRECISION_HINT"]
    precision = precision.get_type_name() if hasattr(precision, "get_type_name") else precision
    note = (f"openvino {ov.__version__.split('-')[0]}, CPU plugin, {props['INFERENCE_NUM_THREADS']} threads, "
            f"{precision}, latency hint, {props['NUM_STREAMS']} stream(s)")
    return run, note


def ov_conv(x: np.ndarray, weight: np.ndarray, stride: int, pad: int, groups: int,
            threads: int) -> Runner:
    return ov_runner(conv_model(x.shape, weight, stride, pad, groups), x, threads)[0]


# --- PyTorch --------------------------------------------------------------------------------------

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


# --- all peers of one convolution -----------------------------------------------------------------

def _built(build: Callable[[], Tuple[Runner, str]]) -> Tuple[Optional[Runner], str]:
    """A peer's (runner, note), or (None, why) when building it failed: a peer must not lose the run."""
    try:
        return build()
    except Exception as e:  # noqa: BLE001
        return None, f"failed: {type(e).__name__}: {e}"


def conv_peers(x: np.ndarray, weight: np.ndarray, stride: int, pad: int, groups: int,
               threads: int) -> Peers:
    """Every known conv peer: name -> (runner or None, note). ONNX Runtime and OpenVINO run the same
    one-node ONNX graph."""
    have = available()
    peers: Peers = {}
    model = None
    if have["onnxruntime"] or have["openvino"]:
        try:
            model = conv_model(x.shape, weight, stride, pad, groups).SerializeToString()
        except ImportError:  # the graph needs the onnx package
            pass
    for name in ("onnxruntime", "openvino"):
        if not have[name] or model is None:
            peers[name] = (None, f"not installed ({INSTALL[name]})")
        elif name == "onnxruntime":
            peers[name] = _built(lambda: (ort_runner(model, x, threads),
                                          f"onnxruntime {have['onnxruntime']}, all optimisations"))
        else:
            peers[name] = _built(lambda: ov_runner(model, x, threads))
    for name, channels_last in (("torch_nchw", False), ("torch_cl", True)):
        if have["torch"]:
            layout = "channels-last" if channels_last else "NCHW"
            peers[name] = _built(lambda: (torch_conv(x, weight, stride, pad, groups, threads, channels_last),
                                          f"torch {have['torch']} {layout}"))
        else:
            peers[name] = (None, f"not installed ({INSTALL['torch']})")
    return peers


# --- timing in the same rounds as our calls --------------------------------------------------------

def time_together(ours: Sequence[Runner], peers: Peers, rounds: int) -> Tuple[List[Dict[str, float]],
                                                                                 Dict[str, Dict[str, object]]]:
    """Time our calls and the peers in the same alternating rounds (bench.measure.alternating): every
    call runs once untimed first; a peer whose warm-up raises is dropped with the reason in its note.

    Returns (one summary per call of `ours`, ``{peer: {"note": str, "time": summary or None}}``)."""
    from bench import measure

    for call in ours:
        call()
    results: Dict[str, Dict[str, object]] = {}
    timed: List[Tuple[str, Runner]] = []
    for name, (runner, note) in peers.items():
        results[name] = {"note": note, "time": None}
        if runner is None:
            continue
        try:
            runner()
        except Exception as e:  # noqa: BLE001 - a peer failing must not lose the run
            results[name]["note"] = f"failed: {type(e).__name__}: {e}"
            continue
        timed.append((name, runner))
    runs = measure.alternating(list(ours) + [runner for _, runner in timed], rounds)
    for (name, _), r in zip(timed, runs[len(ours):]):
        results[name]["time"] = measure.summarize(r)
    return [measure.summarize(r) for r in runs[:len(ours)]], results
