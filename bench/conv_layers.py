"""Per-layer convolution benchmark: our dense and perforated paths beside ONNX Runtime, OpenVINO and PyTorch.

    python -m bench.conv_layers [--quick] [--networks alexnet,vgg16,nin] [--repeat N]

For every conv layer of AlexNet (batch 256), VGG-16 (batch 16) and NIN (batch 128) it times, in one
run: our dense convolution (rate 0) on the CPU engine's channels-last path (ConvPlan.forward_nhwc, the
input converted once beforehand, as a network does at its input), our perforated convolution at
r = 1/2, 2/3, 3/4 (uniform masks) with the full interpolated output (the computed positions, then
interpolate_nhwc into every position: the speedup a layer delivers whatever reads it), and the dense
convolution of the
installed peers (ONNX Runtime and OpenVINO run the same one-node ONNX graph; PyTorch NCHW and
channels-last), all in the same alternating rounds. Each row and each network's sum names the
fastest peer and gives our dense and perforated speed relative to it. Each of our calls reuses a
plan and a workspace built beforehand, so nothing is allocated inside the timed call. Writes
results/conv_layers.{md,csv,json}.

Where a GPU is usable (bench/gpu.py: CUDA build, visible GPU, CuPy) the same layers are also timed
on it: our CUDA plans (dense, and perforated with compact output) and PyTorch / cuDNN's dense
convolution, every call synchronised; a GPU table (and conv_layers_gpu.csv) checks the issue's
targets, perforated layers at >= 0.8 x ideal speedup and our dense path within 1.5x of cuDNN.
Without a GPU the report says so in one line.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Dict, List

import numpy as np

import perforated
from bench import gpu as gpu_mod, measure, peers
from perforated.ops.interp import interpolate_nhwc
from perforated.ops.layout import to_nhwc
from bench.shapes import BATCH, CONV_LAYERS, ConvShape

RATES = (0.5, 2 / 3, 0.75)
RATE_NAMES = ("1/2", "2/3", "3/4")
from bench.paths import RESULTS


def bench_layer(layer: ConvShape, batch: int, repeat: int, threads: int, gpu: bool = False) -> Dict[str, object]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, layer.in_channels, layer.in_h, layer.in_w), dtype=np.float32)
    w = (rng.standard_normal((layer.out_channels, layer.in_channels // layer.groups, layer.kernel,
                              layer.kernel), dtype=np.float32) * 0.01)
    b = np.zeros(layer.out_channels, np.float32)
    oh, ow = layer.out_hw
    row: Dict[str, object] = {"network": layer.network, "layer": layer.layer, "batch": batch,
                              "shape": f"{layer.in_channels}x{layer.in_h}x{layer.in_w} -> "
                                       f"{layer.out_channels}x{oh}x{ow}, k{layer.kernel} s{layer.stride} "
                                       f"p{layer.pad} g{layer.groups}"}
    flop = 2.0 * layer.macs_per_image() * batch

    x_cl = to_nhwc(x)  # our engine's layout; a network converts once, at its input

    def ours(mask):
        plan = perforated.ConvPlan(batch, layer.in_channels, (layer.in_h, layer.in_w), layer.out_channels,
                                   layer.kernel, layer.stride, layer.pad, layer.groups, mask=mask)
        y = np.empty(plan.y_shape_nhwc, np.float32)
        if mask is None:
            return plan, (lambda: plan.forward_nhwc(x_cl, w, b, out=y))
        full = np.empty((batch, oh * ow, layer.out_channels), np.float32)

        def perforated_full():  # the computed positions, then every position filled (the full output)
            plan.forward_nhwc(x_cl, w, b, out=y)
            interpolate_nhwc(y, mask, out=full)
        return plan, perforated_full

    calls = [ours(None)[1]]
    ideals = []
    for rate in RATES:
        mask = perforated.make_mask("uniform", (oh, ow), rate, seed=1)
        calls.append(ours(mask)[1])
        ideals.append(oh * ow / mask.count)
    # ours (dense, perforated) and the peers in the same alternating rounds
    times, row["peers"] = peers.time_together(calls, peers.conv_peers(x, w, layer.stride, layer.pad, layer.groups,
                                                                      threads), repeat)
    dense = row["dense"] = times[0]
    row["dense_gflops"] = flop / dense["median"] / 1e9
    for name, t, ideal in zip(RATE_NAMES, times[1:], ideals):
        row[f"r{name}"] = t
        row[f"r{name}_speedup"] = dense["median"] / t["median"]
        row[f"r{name}_ideal"] = ideal
    if gpu:
        row["gpu"] = bench_layer_gpu(layer, batch, repeat, x, w, b)
    return row


def bench_layer_gpu(layer: ConvShape, batch: int, repeat: int, x: np.ndarray, w: np.ndarray,
                    b: np.ndarray) -> Dict[str, object]:
    """The layer on the GPU: our CUDA plans (dense, perforated at RATES) and cuDNN, synchronised."""
    import cupy

    ctx = perforated.default_context()
    xd, wd, bd = cupy.asarray(x), cupy.asarray(w), cupy.asarray(b)
    oh, ow = layer.out_hw
    rounds = max(repeat, gpu_mod.MIN_ROUNDS)

    def ours(mask):
        plan = perforated.ConvPlan(batch, layer.in_channels, (layer.in_h, layer.in_w), layer.out_channels,
                                   layer.kernel, layer.stride, layer.pad, layer.groups, mask=mask, context=ctx)
        y = cupy.empty(plan.y_shape, cupy.float32)

        def run():
            plan.forward(xd, wd, bd, out=y)
            ctx.synchronize()
        return measure.time_call(run, warmup=2, repeat=rounds)

    out: Dict[str, object] = {"dense": ours(None)}
    for rate, name in zip(RATES, RATE_NAMES):
        mask = perforated.make_mask("uniform", (oh, ow), rate, seed=1)
        out[f"r{name}"] = t = ours(mask)
        out[f"r{name}_speedup"] = out["dense"]["median"] / t["median"]
        out[f"r{name}_ideal"] = oh * ow / mask.count
    try:
        runner, note = gpu_mod.torch_conv_runner(x, w, b, layer.stride, layer.pad, layer.groups)
    except Exception as e:  # a peer failing must not lose the run
        runner, note = None, f"failed: {type(e).__name__}: {e}"
    out["cudnn"] = measure.time_call(runner, warmup=2, repeat=rounds) if runner else None
    out["cudnn_note"] = note
    return out


def gpu_tables(rows: List[Dict[str, object]], meta: Dict[str, object], out_dir: Path) -> List[str]:
    """Markdown lines of the GPU table and its per-network summary (conv_layers_gpu.csv beside), or
    the one line saying why there is none."""
    if not any(r.get("gpu") for r in rows):
        return ["", gpu_mod.not_measured_line(meta)]
    header = ["network", "layer", "batch", "GPU dense ms", "cuDNN ms", "dense / cuDNN"]
    for name in RATE_NAMES:
        header += [f"r={name} ms", f"r={name} speedup (ideal)"]
    table = [header]
    for r in rows:
        g = r["gpu"]
        ratio = g["dense"]["median"] / g["cudnn"]["median"] if g.get("cudnn") else None
        cells = [r["network"], r["layer"], str(r["batch"]), _ms(g["dense"], 3), _ms(g.get("cudnn"), 3),
                 f"{ratio:.2f}" if ratio else "n/a"]
        for name in RATE_NAMES:
            cells += [_ms(g[f"r{name}"], 3), f"{g[f'r{name}_speedup']:.2f} ({g[f'r{name}_ideal']:.2f})"]
        table.append(cells)
    with open(out_dir / "conv_layers_gpu.csv", "w", newline="") as f:
        csv.writer(f).writerows(table)
    gpu = meta.get("gpu") or {}
    note = next((r["gpu"]["cudnn_note"] for r in rows if r.get("gpu")), "")
    lines = ["", f"## GPU: {gpu.get('device', 'unknown')}", "",
             f"Our CUDA plans and PyTorch / cuDNN ({note}); medians of at least {gpu_mod.MIN_ROUNDS} "
             "synchronised calls after warm-ups. Targets: perforated speedup >= 0.8 x ideal; our dense within "
             "1.5x of cuDNN.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in table[1:]]
    lines += ["", "| network | ours dense sum | cuDNN sum | dense / cuDNN | layers meeting 0.8 x ideal |",
              "|---|---|---|---|---|"]
    for net in dict.fromkeys(r["network"] for r in rows if r.get("gpu")):
        sub = [r["gpu"] for r in rows if r["network"] == net and r.get("gpu")]
        dense = sum(g["dense"]["median"] for g in sub)
        cudnn = sum(g["cudnn"]["median"] for g in sub) if all(g.get("cudnn") for g in sub) else None
        met = sum(g[f"r{n}_speedup"] >= 0.8 * g[f"r{n}_ideal"] for g in sub for n in RATE_NAMES)
        lines.append(f"| {net} | {dense:.4f} | {f'{cudnn:.4f}' if cudnn else 'n/a'} | "
                     f"{f'{dense / cudnn:.2f}x' if cudnn else 'n/a'} | {met}/{len(sub) * len(RATE_NAMES)} |")
    return lines


def _ms(t, digits: int = 1) -> str:
    return f"{t['median'] * 1e3:.{digits}f}" if t else "n/a"


def peer_columns(rows: List[Dict[str, object]]) -> List[str]:
    """The peers with a time on at least one layer (bench.peers.ORDER): one column each."""
    return peers.timed_names(r.get("peers") for r in rows)


def _ratio(best, t) -> str:
    return f"{best[1] / t['median']:.2f}x" if best and t else "n/a"


def layer_cells(r: Dict[str, object], names: List[str]) -> tuple:
    """(header, cells) of one layer: ours, every peer in `names`, the fastest peer, our dense speed
    relative to it and each rate's speedup over it (best peer's time / ours)."""
    header = ["network", "layer", "batch", "shape", "dense ms", "dense GFLOP/s"]
    for name in RATE_NAMES:
        header += [f"r={name} ms", f"r={name} speedup (ideal)"]
    header += [f"{peers.label(k)} ms" for k in names]
    if names:
        header += ["best peer", "dense vs best peer"] + [f"r={n} vs best peer" for n in RATE_NAMES]
    cells = [r["network"], r["layer"], str(r["batch"]), r["shape"], _ms(r["dense"]), f"{r['dense_gflops']:.0f}"]
    for name in RATE_NAMES:
        cells += [_ms(r[f"r{name}"]), f"{r[f'r{name}_speedup']:.2f} ({r[f'r{name}_ideal']:.2f})"]
    results = r.get("peers") or {}
    cells += [_ms(results.get(k, {}).get("time")) for k in names]
    if names:
        best = peers.best_peer(peers.medians(results))
        cells += [peers.label(best[0]) if best else "n/a", _ratio(best, r["dense"])]
        cells += [_ratio(best, r[f"r{n}"]) for n in RATE_NAMES]
    return header, cells


def summary_lines(rows: List[Dict[str, object]], names: List[str]) -> List[str]:
    """Conv layers summed per network: ours, each peer measured on every layer of the network, the
    fastest of them by sum, and our dense / perforated speed against it."""
    header = ["network", "batch", "ours dense"] + [peers.label(k) for k in names]
    if names:
        header += ["best peer", "dense vs best peer"]
    header += [f"r={n} sum (speedup)" for n in RATE_NAMES]
    if names:
        header += [f"r={n} vs best peer" for n in RATE_NAMES]
    header.append("layers meeting 0.9 x ideal")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for net in dict.fromkeys(r["network"] for r in rows):
        sub = [r for r in rows if r["network"] == net]
        total = lambda key: sum(r[key]["median"] for r in sub) if all(r.get(key) for r in sub) else None
        peer_total = lambda k: (sum(r["peers"][k]["time"]["median"] for r in sub)
                                if all(((r.get("peers") or {}).get(k) or {}).get("time") for r in sub) else None)
        dense = total("dense")
        totals = {k: peer_total(k) for k in names}
        best = peers.best_peer(totals)
        sums = {n: total(f"r{n}") for n in RATE_NAMES}
        cells = [net, str(sub[0]["batch"]), f"{dense:.3f}"] + [f"{v:.3f}" if v else "n/a" for v in totals.values()]
        if names:
            cells += [peers.label(best[0]) if best else "n/a", f"{best[1] / dense:.2f}x" if best else "n/a"]
        cells += [f"{sums[n]:.3f} ({dense / sums[n]:.2f}x)" for n in RATE_NAMES]
        if names:
            cells += [f"{best[1] / sums[n]:.2f}x" if best else "n/a" for n in RATE_NAMES]
        met = sum(r[f"r{n}_speedup"] >= 0.9 * r[f"r{n}_ideal"] for r in sub for n in RATE_NAMES)
        cells.append(f"{met}/{len(sub) * len(RATE_NAMES)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_tables(rows: List[Dict[str, object]], meta: Dict[str, object], out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "conv_layers.json").write_text(json.dumps({"metadata": meta, "rows": rows}, indent=1))
    names = peer_columns(rows)
    table = [layer_cells(r, names)[1] for r in rows]
    header = layer_cells(rows[0], names)[0] if rows else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(cells) + " |" for cells in table]
    with open(out_dir / "conv_layers.csv", "w", newline="") as f:
        csv.writer(f).writerows([header] + table)
    notes = sorted({f"{peers.label(k)}: {res['note']}" for r in rows for k, res in (r.get("peers") or {}).items()
                    if k in names})
    missing = peers.untimed_notes(r.get("peers") for r in rows)
    summary = ["", "Conv layers summed per network (medians, seconds); speedup target: >= 0.9 x ideal "
               "on every layer. Best peer: the fastest peer by the network's sum; ratios are its time / ours "
               "(above 1: ours is faster).", ""] + summary_lines(rows, names)
    md = ["# Convolution layers: ours (dense, perforated) vs dense peers", "",
          f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
          f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs; {meta['platform']}  ",
          f"Library: {meta['perforated_build']}  ", f"OpenBLAS: {meta.get('openblas_config', 'n/a')}  ",
          f"Environment: {meta['environment']}  ", f"Peers: {meta['peers']}  ",
          f"Threads: {meta['threads']} for every engine. Times are medians of {meta['repeat']} rounds after a "
          "warm-up; in each round our dense and perforated calls and every peer run once, in alternation "
          "(order reversed every other round); ours run channels-last (the input converted once, beforehand); "
          "perforated layers use uniform masks and deliver the full interpolated output (compute, then "
          "interpolate_nhwc). "
          "Per layer, the best peer is the fastest one on that layer; ratios are its time / ours.", ""]
    if notes or missing:
        md += [("Peer settings: " + "; ".join(notes) + ". " if notes else "")
               + ("Not timed: " + "; ".join(missing) + "." if missing else ""), ""]
    text = "\n".join(md + lines + summary + gpu_tables(rows, meta, out_dir)) + "\n"
    (out_dir / "conv_layers.md").write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch / 8, one repeat (a smoke run)")
    parser.add_argument("--networks", default="alexnet,vgg16,nin")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    threads = perforated.get_num_threads()
    gpu = gpu_mod.status()
    measure.progress(f"GPU: {gpu['device']}" if gpu["measured"] else gpu_mod.not_measured_line({"gpu": gpu}))
    nets = args.networks.split(",")
    layers = [layer for layer in CONV_LAYERS if layer.network in nets]
    rows = []
    for i, layer in enumerate(layers):
        batch = max(1, BATCH[layer.network] // (8 if args.quick else 1))
        measure.progress(f"[{i + 1}/{len(layers)}] {layer.network} {layer.layer} batch {batch}")
        rows.append(bench_layer(layer, batch, repeat, threads, gpu["measured"]))
    meta = measure.machine_metadata()
    meta.update(peers=peers.available(), threads=threads, repeat=repeat, quick=args.quick, gpu=gpu)
    print(write_tables(rows, meta, args.out))


if __name__ == "__main__":
    main()
