"""GPU measurements for the tables: our CUDA backend, dense and perforated, beside PyTorch / cuDNN.

Measured only where everything needed is present (:func:`status`): a libperforated built with the
CUDA backend, a visible GPU and CuPy (the ``cuda`` extra); the cuDNN peer also needs PyTorch with
CUDA. Otherwise :func:`status` says why in one line, and the tables print that line instead of GPU
columns.

Timing: every timed call ends with a synchronisation (``Model.synchronize``, i.e. the context's
stream; ``torch.cuda.synchronize`` for the peer), so a time covers the GPU work and not only its
launch. The dense network and its perforated versions run in alternation, as on the CPU. The peer
runs the same network (bench.peer_networks) in float32 NCHW with cuDNN's autotuner on and TF32 off:
our kernels compute in full float32 through cuBLAS SGEMM, and TF32 tensor cores would compare a
different precision.
"""
from __future__ import annotations

import glob
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

import perforated
from bench import measure
from perforated.timing import alternating_times

# GPU runs are cheap next to the CPU's: at least this many timed rounds, whatever --repeat says.
MIN_ROUNDS = 10


def status() -> Dict[str, object]:
    """``{"measured": bool, "reason": why not (None when measured), "device": GPU name or None}``."""
    def no(reason: str) -> Dict[str, object]:
        return {"measured": False, "reason": reason, "device": None}

    if "CUDA on" not in perforated.build_info():
        if not glob.glob("/dev/nvidia[0-9]*"):
            return no("no GPU on this machine")
        return no("this build of libperforated has no CUDA backend (rebuild with -DPERF_WITH_CUDA=ON)")
    if not perforated.cuda_available():
        return no("no GPU on this machine")
    try:
        import cupy
    except ImportError:
        return no("CuPy is not installed (pip install 'perforated[cuda]')")
    try:
        props = cupy.cuda.runtime.getDeviceProperties(perforated.default_context().index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception as e:  # CuPy built for another CUDA major version, driver too old...
        return no(f"CuPy cannot use the GPU: {type(e).__name__}: {e}")
    return {"measured": True, "reason": None, "device": name, "cupy": cupy.__version__}


def not_measured_line(meta: Dict[str, object]) -> str:
    """The one line the tables print when the run has no GPU columns."""
    gpu = meta.get("gpu") or {}
    reason = gpu.get("reason") or "this run recorded no GPU information"
    return f"GPU columns: not measured ({reason})."


def interleaved_times(models, repeat: int) -> List[Dict[str, float]]:
    """Median forward time of each CUDA model (to the logits, synchronised), in alternation."""
    x = np.random.default_rng(0).standard_normal(models[0].x.shape, dtype=np.float32)
    for model in models:  # warm-up: cuBLAS's first calls, CuPy's memory pool
        model.forward(x)
        model.synchronize()

    def synchronised(model):
        def run():
            model.forward()
            model.synchronize()
        return run

    runs = alternating_times([synchronised(m) for m in models], max(repeat, MIN_ROUNDS), warmup=False)
    return [measure.summarize(r) for r in runs]


def torch_cudnn_runner(network: str, batch: int) -> Tuple[Optional[Callable[[], object]], str]:
    """(a callable running one dense forward of `network` on the GPU with PyTorch / cuDNN and waiting
    for it, note), or (None, why not)."""
    try:
        import torch
    except Exception:
        return None, "not installed (pip install torch)"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA GPU"
    from bench import peer_networks
    from perforated.graph.networks import NETWORKS

    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape (a tuned peer)
    torch.backends.cudnn.allow_tf32 = False  # full float32, like our SGEMM
    torch.backends.cuda.matmul.allow_tf32 = False
    info = NETWORKS[network]
    model = peer_networks.torch_network(info["layers"](), info["input"], batch, info["classes"],
                                        softmax=False).cuda()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((batch,) + tuple(info["input"]),
                                                                  dtype=np.float32)).cuda()

    def run():
        with torch.inference_mode():
            y = model(x)
        torch.cuda.synchronize()
        return y

    return run, (f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, float32 NCHW, "
                 "cudnn.benchmark on, TF32 off")


def run_network(network: str, batch: int, plans: List[Tuple[float, object]], repeat: int) -> Dict[str, object]:
    """Dense and perforated forward times on the GPU (``plans``: (rate, PerforationPlan) of the CPU
    rows, in order), speedups, and the dense cuDNN peer with our dense / cuDNN ratio."""
    from perforated.graph.model import Model

    measure.progress(f"{network}: GPU, batch {batch}, dense and {len(plans)} perforated")
    dense = Model(network, batch, device="cuda")
    models = [dense] + [Model(network, batch, plan=plan, shared_params=dense.params, device="cuda") for _, plan in plans]
    times = interleaved_times(models, repeat)
    rows = [{"rate": rate, "time": t, "speedup": times[0]["median"] / t["median"]}
            for (rate, _), t in zip(plans, times[1:])]
    del models, dense
    import cupy

    cupy.get_default_memory_pool().free_all_blocks()  # our buffers' memory back to the driver for torch
    measure.progress(f"{network}: GPU peer torch / cuDNN")
    try:
        runner, note = torch_cudnn_runner(network, batch)
    except Exception as e:  # a peer failing must not lose the run: record why
        runner, note = None, f"failed: {type(e).__name__}: {e}"
    cudnn = measure.time_call(runner, warmup=2, repeat=max(repeat, MIN_ROUNDS)) if runner else None
    return {"batch": batch, "rounds": max(repeat, MIN_ROUNDS),
            "dense": {"time": times[0], "per_image_ms": times[0]["median"] / batch * 1e3},
            "rows": rows, "cudnn": {"time": cudnn, "note": note},
            "dense_vs_cudnn": times[0]["median"] / cudnn["median"] if cudnn else None}


def torch_conv_runner(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, pad: int,
                      groups: int) -> Tuple[Optional[Callable[[], object]], str]:
    """(a callable running one PyTorch / cuDNN convolution on the GPU and waiting for it, note), or
    (None, why not). Same settings as :func:`torch_cudnn_runner`."""
    try:
        import torch
    except Exception:
        return None, "not installed (pip install torch)"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA GPU"
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    xt, wt, bt = (torch.from_numpy(a).cuda() for a in (x, weight, bias))

    def run():
        with torch.inference_mode():
            y = torch.nn.functional.conv2d(xt, wt, bt, stride, pad, 1, groups)
        torch.cuda.synchronize()
        return y

    return run, f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, cudnn.benchmark on, TF32 off"
