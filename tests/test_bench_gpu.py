"""GPU columns of the benchmark tables: rendered from measurements when present, one line when not.

Uses a frozen bench.tables result (tests/data/tables_snapshot.json, a real CPU run), with GPU results
added by hand, so the rendering is tested without a GPU.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import perforated as P
from bench import conv_layers, gpu, report

# a frozen bench.tables result (a real CPU run, copied from results/ on 2026-12-07): regenerating
# results/ does not change what these rendering tests read
COMMITTED = Path(__file__).resolve().parent / "data" / "tables_snapshot.json"


@pytest.fixture
def raw():
    return json.loads(COMMITTED.read_text())


def _t(seconds):
    return {"median": seconds, "min": seconds, "max": seconds, "iqr_rel": 0.0, "runs": 10}


def with_gpu(raw):
    raw = copy.deepcopy(raw)
    raw["metadata"]["gpu"] = {"measured": True, "reason": None, "device": "Fake GPU 80GB"}
    for net in raw["networks"]:
        b = net["batch"]
        net["gpu"] = {"batch": b, "rounds": 10, "dense": {"time": _t(0.010), "per_image_ms": 10.0 / b},
                      "rows": [{"rate": r["rate"], "time": _t(0.010 / (i + 2)), "speedup": i + 2.0}
                               for i, r in enumerate(net["rows"])],
                      "cudnn": {"time": _t(0.008), "note": "torch 9.9, cuDNN 1, TF32 off"},
                      "dense_vs_cudnn": 1.25}
    return raw


def test_without_gpu_one_line_and_nothing_else(raw, tmp_path):
    raw["metadata"]["gpu"] = {"measured": False, "reason": "no GPU on this machine", "device": None}
    text = report.write_all(raw, tmp_path)
    assert [line for line in text.splitlines() if "GPU" in line] == \
        ["GPU columns: not measured (no GPU on this machine)."]
    h1, rows1 = report.table1(raw)
    h3, rows3 = report.table3(raw)
    assert not any("GPU" in h for h in h1 + h3) and len(rows1[0]) == len(h1) and len(rows3[0]) == len(h3)
    old = dict(raw["metadata"])
    del old["gpu"]  # measurements from before the GPU columns existed
    assert gpu.not_measured_line(old) == "GPU columns: not measured (this run recorded no GPU information)."


def test_with_gpu_columns(raw, tmp_path):
    raw = with_gpu(raw)
    h1, rows1 = report.table1(raw)
    assert h1[-3:] == ["GPU time / image, ms", "cuDNN (PyTorch) / image, ms", "GPU dense / cuDNN"]
    nin = next(r for r in rows1 if r[0] == "nin")
    assert nin[-3:] == [f"{10.0 / 128:.3f}", f"{8.0 / 128:.3f}", "1.25"] and len(nin) == len(h1)
    h3, rows3 = report.table3(raw)
    assert h3[-2:] == ["GPU speedup", "paper GPU speedup"]
    vgg = [r for r in rows3 if r[0] == "vgg16"]
    assert [r[-2] for r in vgg] == ["2.00", "3.00", "4.00"]
    assert [r[-1] for r in vgg] == ["2.0 (mult. 1.9)", "3.0 (mult. 2.8)", "4.0 (mult. 4.7)"]
    assert all(r[-1] == "-" for r in rows3 if r[0] == "nin")  # the paper has no NIN GPU rows
    text = report.write_all(raw, tmp_path)
    assert "GPU: Fake GPU 80GB" in text and "not measured (" not in text.split("## Table 1")[0]
    assert "perforated networks (CPU, GPU columns)" in text


def test_gpu_peer_missing_is_a_note(raw):
    raw = with_gpu(raw)
    for net in raw["networks"]:
        net["gpu"]["cudnn"] = {"time": None, "note": "not installed (pip install torch)"}
        net["gpu"]["dense_vs_cudnn"] = None
    _, rows = report.table1(raw)
    assert rows[0][-2:] == ["not installed (pip install torch)", "n/a"]


@pytest.mark.skipif(P.cuda_available(), reason="a GPU is usable here")
def test_status_without_gpu_says_why():
    s = gpu.status()
    assert s["measured"] is False and s["device"] is None and s["reason"]


def test_conv_layers_gpu_columns(tmp_path):
    """bench.conv_layers: one line without GPU rows, GPU columns and a summary with them."""
    meta = {"command": "c", "date": "d", "cpu": "cpu", "logical_cpus": 2, "platform": "p",
            "perforated_build": "b", "environment": {}, "peers": {}, "threads": 2, "repeat": 1,
            "gpu": {"measured": False, "reason": "no GPU on this machine", "device": None}}
    row = {"network": "vgg16", "layer": "conv1_1", "batch": 2, "shape": "s", "dense": _t(0.01),
           "dense_gflops": 1.0}
    for name in conv_layers.RATE_NAMES:
        row.update({f"r{name}": _t(0.005), f"r{name}_speedup": 2.0, f"r{name}_ideal": 2.0})
    text = conv_layers.write_tables([dict(row)], meta, tmp_path)
    assert "GPU columns: not measured (no GPU on this machine)." in text and "GPU dense ms" not in text
    meta["gpu"] = {"measured": True, "reason": None, "device": "Fake GPU"}
    row["gpu"] = {"dense": _t(0.004), "cudnn": _t(0.002), "cudnn_note": "torch"}
    for name, ideal in zip(conv_layers.RATE_NAMES, (2.0, 3.0, 4.0)):
        row["gpu"].update({f"r{name}": _t(0.004 / ideal * 1.2), f"r{name}_speedup": ideal / 1.2,
                           f"r{name}_ideal": ideal})
    text = conv_layers.write_tables([row], meta, tmp_path)
    assert "## GPU: Fake GPU" in text and "| GPU dense ms | cuDNN ms | dense / cuDNN |" in text
    assert "| vgg16 | 0.0040 | 0.0020 | 2.00x | 3/3 |" in text  # every rate reaches 0.8 x ideal (ideal / 1.2)
    assert (tmp_path / "conv_layers_gpu.csv").is_file()


def test_gpu_timing_loop_and_peer_notes():
    """The timing loop synchronises each call (a no-op for CPU models, which share the interface);
    the cuDNN peer answers with a note where PyTorch has no CUDA."""
    from perforated.graph.model import Model

    models = [Model("nin", 1), Model("nin", 1, masks=None, seed=1)]
    times = gpu.interleaved_times(models, repeat=1)
    assert len(times) == 2 and all(t["runs"] == gpu.MIN_ROUNDS and t["median"] > 0 for t in times)
    try:
        import torch
    except Exception:
        torch = None
    if torch is None or not torch.cuda.is_available():
        runner, note = gpu.torch_cudnn_runner("nin", 1)
        assert runner is None and ("not installed" in note or "sees no CUDA GPU" in note)
