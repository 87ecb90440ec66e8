"""im2row vs shifted GEMMs for the forward of dense convolutions: ``python -m bench.conv_paths``.

libperforated runs a stride-1 convolution without masks either through im2row + one GEMM per chunk
of positions, or as one GEMM per kernel tap over a padded copy of the input (cpu/conv_shift.c); the
plan picks the second for 1-D kernels and thin k x k layers (conv_plan.c, ``use_shift``). This times
both on the layers of the low-rank networks (VGG-16 spatial halves, channel-decomposition k x k parts)
and on dense layers of the paper's networks, in alternating rounds in one process
(``PERF_CONV_PATH`` is read when a plan is made), and writes results/conv_paths.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

import perforated
from bench import measure
from bench.paths import RESULTS
from bench.markdown import md_table
from perforated.ops.conv import ConvPlan

# name, batch, in channels, map size, out channels, kernel, pad, groups
LAYERS = [
    ("vgg16 conv1_2 vertical, rank 30", 4, 64, 224, 30, (3, 1), (1, 0), 1),
    ("vgg16 conv1_2 horizontal, rank 30", 4, 30, 224, 64, (1, 3), (0, 1), 1),
    ("vgg16 conv3_3 vertical, rank 117", 16, 256, 56, 117, (3, 1), (1, 0), 1),
    ("vgg16 conv3_3 horizontal, rank 117", 16, 117, 56, 256, (1, 3), (0, 1), 1),
    ("vgg16 conv4_2 vertical, rank 236", 16, 512, 28, 236, (3, 1), (1, 0), 1),
    ("vgg16 conv4_2 horizontal, rank 236", 16, 236, 28, 512, (1, 3), (0, 1), 1),
    ("vgg16 conv3_3 channel k x k, rank 64", 16, 256, 56, 64, (3, 3), (1, 1), 1),
    ("nin conv2 channel k x k, rank 48", 128, 96, 16, 48, (5, 5), (2, 2), 1),
    ("vgg16 conv2_1 channel k x k, rank 54", 16, 64, 112, 54, (3, 3), (1, 1), 1),
    ("alexnet conv3 channel k x k, rank 136", 256, 256, 13, 136, (3, 3), (1, 1), 1),
    ("alexnet conv5 channel k x k, rank 91 (2 groups)", 256, 384, 13, 182, (3, 3), (1, 1), 2),
    ("alexnet conv5 (dense, 2 groups)", 256, 384, 13, 256, (3, 3), (1, 1), 2),
    ("vgg16 conv1_2 (dense)", 4, 64, 224, 64, (3, 3), (1, 1), 1),
    ("vgg16 conv4_3 (dense)", 16, 512, 28, 512, (3, 3), (1, 1), 1),
    ("alexnet conv3 (dense)", 64, 256, 13, 384, (3, 3), (1, 1), 1),
    ("alexnet conv4 (dense, 2 groups)", 64, 384, 13, 384, (3, 3), (1, 1), 2),
    ("nin conv2 (dense)", 128, 96, 16, 192, (5, 5), (2, 2), 1),
    ("nin conv3 (dense)", 128, 192, 8, 192, (3, 3), (1, 1), 1),
]
PATHS = ("im2row", "shift")


def _plan(path: str, b, c, h, n, k, pad, g) -> ConvPlan:
    old = os.environ.get("PERF_CONV_PATH")
    os.environ["PERF_CONV_PATH"] = path
    try:
        return ConvPlan(b, c, (h, h), n, k, 1, pad, g)
    finally:
        if old is None:
            del os.environ["PERF_CONV_PATH"]
        else:
            os.environ["PERF_CONV_PATH"] = old


def run(rounds: int, scale: int) -> List[Dict[str, object]]:
    rng = np.random.default_rng(0)
    out = []
    for name, b, c, h, n, k, pad, g in LAYERS:
        b = max(1, b // scale)
        measure.progress(f"{name}: batch {b}")
        x = rng.standard_normal((b, c, h, h)).astype(np.float32)
        w = rng.standard_normal((n, c // g) + k).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        plans = {p: _plan(p, b, c, h, n, k, pad, g) for p in PATHS}
        auto = ConvPlan(b, c, (h, h), n, k, 1, pad, g)
        ys = {p: plans[p].forward(x, w, bias) for p in PATHS}
        np.testing.assert_allclose(ys["shift"], ys["im2row"], rtol=1e-3, atol=1e-3 * float(np.abs(ys["im2row"]).max()))
        times: Dict[str, List[float]] = {p: [] for p in PATHS}
        for _ in range(rounds):  # alternate, so drift of the shared machine hits both paths alike
            for p in PATHS:
                t = time.perf_counter()
                plans[p].forward(x, w, bias, out=ys[p])
                times[p].append(time.perf_counter() - t)
        oh, ow = ys["im2row"].shape[2:]
        flops = 2.0 * b * n * (c // g) * k[0] * k[1] * oh * ow
        med = {p: float(np.median(times[p])) for p in PATHS}
        chosen = auto.path
        out.append({"layer": name, "batch": b, "seconds": med, "gflops": {p: flops / med[p] / 1e9 for p in PATHS},
                    "shift_speedup": med["im2row"] / med["shift"], "plan_picks": chosen})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="batches / 4, 2 rounds")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    rows = run(2 if a.quick else a.rounds, 4 if a.quick else 1)
    meta = measure.machine_metadata()
    meta.update(threads=perforated.get_num_threads(), rounds=2 if a.quick else a.rounds)
    suffix = "_quick" if a.quick else ""
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"conv_paths{suffix}.json").write_text(json.dumps({"metadata": meta, "layers": rows}, indent=1))
    header = ["layer", "batch", "im2row ms", "shift ms", "im2row GFLOP/s", "shift GFLOP/s", "shift speedup",
              "the plan picks"]
    table = [[r["layer"], str(r["batch"]), f"{r['seconds']['im2row'] * 1e3:.1f}", f"{r['seconds']['shift'] * 1e3:.1f}",
              f"{r['gflops']['im2row']:.1f}", f"{r['gflops']['shift']:.1f}", f"{r['shift_speedup']:.2f}",
              r["plan_picks"]] for r in rows]
    text = "\n".join(["# Convolution forward: im2row vs shifted GEMMs", "",
                      f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
                      f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs, {meta['threads']} threads  ",
                      f"Library: {meta['perforated_build']}  ", f"OpenBLAS: {meta.get('openblas_config', 'n/a')}  ",
                      f"Timing: median of {meta['rounds']} alternating rounds per layer (forward, bias included).", ""]
                     + md_table(header, table)) + "\n"
    (a.out / f"conv_paths{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
