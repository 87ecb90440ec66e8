"""Mask comparison on NIN / CIFAR-10 (the paper's Fig. 2): test error vs measured speedup, no fine-tuning.

Kinds: uniform, grid, pooling structure and impact masks (SPEC §4), and three baselines: **stride**
(the layer's stride becomes 2 or 3, no interpolation: the following layers see a smaller map),
**fractional stride** (the Grid mask's rows x cols become the layer's output map, no interpolation:
a non-integer stride, the following layers see a smaller map) and **resize** (the input image is
downscaled by sqrt(1 - r) with Pillow's bilinear filter; NIN ends with a global pooling, so it runs
at any input size). Two scopes: conv2 alone, and the whole network (the same rate on conv1, conv2
and conv3). Impact maps come from the dense network over training images.

    python -m bench.mask_comparison [--weights results/models/nin_cifar10.npz] [--images 2000]
    python -m bench.mask_comparison --kinds "fractional stride" --merge   # one kind, into the stored table

writes results/mask_comparison.{json,csv,md} and results/plots/mask_comparison.png. Errors are
measured on ``--images`` test images (a seeded random subset, the same for every row, so
differences between rows are paired); speedups are whole-network forward times at batch 128, original /
modified, timed in alternating rounds on this machine.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import perforated
from bench import measure
from bench.paths import RESULTS
from bench.mask_baselines import (baseline_model, fractional_masks, fractional_rows, resize_split, skipped_rate,
                                  strided_rows)
from bench.markdown import md_table, shown, write_csv
from perforated.data import Split, load_dataset, preprocess_for, training_subsets
from perforated.search.impact import estimate_impact
from perforated._c.errors import PerforatedError
from perforated.files import file_digest
from perforated.graph.model import Model
from perforated.graph.networks import NETWORKS, perforable_layers
from perforated.graph.plan import layer_masks
from perforated.train.sgd import evaluate_split

RATES = (1 / 2, 2 / 3, 3 / 4, 4 / 5, 5 / 6)
MASK_KINDS = ("uniform", "grid", "pooling", "impact")
ALL_KINDS = MASK_KINDS + ("stride", "fractional stride", "resize")
RANKED = ("impact", "grid", "uniform")  # the paper's order, best first
SCOPES = {"conv2": ("conv2",), "network": ("conv1", "conv2", "conv3")}
DEFAULT_WEIGHTS = RESULTS / "models" / "nin_cifar10.npz"


def configurations(impact: Dict[str, np.ndarray], kinds: Sequence[str] = ALL_KINDS) -> List[dict]:
    """Every row of the comparison (of `kinds`): a builder for the model at a batch, and what to
    evaluate it on."""
    configs = []
    for scope, layers in SCOPES.items():
        for kind in MASK_KINDS:
            for rate in (RATES if kind in kinds else ()):
                masks = layer_masks("nin", kind, rate, layers, impact)
                achieved = float(np.mean([m.rate for m in masks.values()]))
                configs.append(dict(scope=scope, kind=kind, rate=achieved, nominal_rate=rate,
                                    build=lambda b, masks=masks: Model("nin", b, masks=masks)))
        for stride in ((2, 3) if scope == "conv2" else (2,)) if "stride" in kinds else ():
            # (stride 3 everywhere leaves pool2 a 2x2 map)
            rows = strided_rows(layers, stride)
            configs.append(dict(scope=scope, kind="stride", rate=skipped_rate(baseline_model(rows), layers),
                                nominal_rate=1 - 1 / stride ** 2,
                                build=lambda b, rows=rows: baseline_model(rows, batch=b)))
        rows = fractional_rows(layers)
        for rate in (RATES if "fractional stride" in kinds else ()):
            try:
                masks = fractional_masks(layers, rate)
            except PerforatedError:  # whole network: a high rate leaves pool2 a map smaller than its window
                if scope == "conv2":
                    raise
                continue
            configs.append(dict(scope=scope, kind="fractional stride", nominal_rate=rate,
                                rate=skipped_rate(baseline_model(rows, masks), layers),
                                build=lambda b, rows=rows, masks=masks: baseline_model(rows, masks, b)))
    for rate in (RATES if "resize" in kinds else ()):  # resize changes the whole network's input: "network" only
        side = int(round(32 * np.sqrt(1 - rate)))
        configs.append(dict(scope="network", kind="resize", rate=1 - side * side / 1024, nominal_rate=rate, side=side,
                            build=lambda b, side=side: Model(NETWORKS["nin"]["layers"](), b,
                                                             input_shape=(3, side, side), classes=10)))
    return configs


def time_configs(configs: List[dict], batch: int, rounds: int) -> Tuple[float, List[float]]:
    """Median forward time of the dense network and of every configuration, in alternating rounds."""
    builders = [lambda b: Model("nin", b)] + [c["build"] for c in configs]
    runs: List[List[float]] = [[] for _ in builders]
    rng = np.random.default_rng(0)
    for r in range(rounds):
        measure.progress(f"timing round {r + 1}/{rounds} ({len(builders)} networks, batch {batch})")
        for i, build in enumerate(builders):
            model = build(batch)
            model.x[...] = rng.standard_normal(model.x.shape, dtype=np.float32)
            model.forward()  # warm-up
            runs[i].append(measure.time_call(model.forward, warmup=0, repeat=1)["median"])
    medians = [float(np.median(r)) for r in runs]
    return medians[0], medians[1:]


def run(weights: Path, data: Optional[str], images: int, impact_images: int, rounds: int,
        eval_batch: int = 100, kinds: Sequence[str] = ALL_KINDS) -> dict:
    splits = load_dataset(data)
    preprocess = preprocess_for(weights, splits["train"])
    if preprocess.mode == "zca":
        raise ValueError("mask_comparison: the resize baseline needs per-channel normalisation, "
                         "these weights were trained with ZCA")
    test = splits["test"]
    # a seeded random subset: the image-folder layout stores the test split sorted by class
    test = test.subset(min(images, len(test)), seed=1)
    dense = Model("nin", eval_batch, weights=weights)
    impact = {}
    if "impact" in kinds:
        measure.progress(f"impact maps over {impact_images} training images")
        [(ix, iy)] = training_subsets(data, weights, [impact_images], seed=0)
        impact = estimate_impact(dense, ix, iy, perforable_layers(dense.rows))
    configs = configurations(impact, kinds)
    dense_eval = evaluate_split(dense, test, preprocess)
    dense_macs = dense.multiply_adds()
    resized: Dict[int, Split] = {}
    for i, c in enumerate(configs):
        measure.progress(f"[{i + 1}/{len(configs)}] {c['scope']} {c['kind']} r={c['rate']:.3f}")
        model = c["build"](eval_batch)
        model.load_weights(weights)
        split = test
        if "side" in c:
            split = resized.setdefault(c["side"], resize_split(test, c["side"]))
        ev = evaluate_split(model, split, preprocess)
        c.update(top1_error=ev["top1_error"], error_increase=ev["top1_error"] - dense_eval["top1_error"],
                 loss=ev["loss"], mult_reduction=dense_macs / model.multiply_adds())
    t_dense, times = time_configs(configs, NETWORKS["nin"]["timing_batch"], rounds)
    for c, t in zip(configs, times):
        c["time"], c["speedup"] = t, t_dense / t
        del c["build"]
    meta = measure.machine_metadata()
    meta.update(threads=perforated.get_num_threads(), rounds=rounds, images=images, impact_images=impact_images,
                weights=shown(weights), weights_digest=file_digest(weights), kinds=list(kinds))
    return {"metadata": meta, "dense": {"top1_error": dense_eval["top1_error"], "loss": dense_eval["loss"],
                                        "time": t_dense}, "rows": configs}


def merge(raw: dict, old: dict) -> dict:
    """`old` (a full comparison) with the rows of `raw`'s kinds replaced by `raw`'s: for a baseline
    added or measured again without running every kind. Both must be of the same weights and test
    images: the original network's error on them must agree exactly. Each run's speedups are against
    the original network timed in that run, and the metadata lists the merged runs."""
    kinds = raw["metadata"]["kinds"]
    m, o = raw["metadata"], old["metadata"]
    if not mergeable(old, m["images"], m["weights_digest"]) or raw["dense"]["top1_error"] != old["dense"]["top1_error"]:
        raise ValueError(f"mask_comparison --merge: the stored comparison is of other weights or images "
                         f"({o['weights']}, {o['images']} images, original error {old['dense']['top1_error']:.2f}%; "
                         f"this run {m['weights']}, {m['images']} images, {raw['dense']['top1_error']:.2f}%)")
    order = {k: i for i, k in enumerate(ALL_KINDS)}
    scopes = {s: i for i, s in enumerate(SCOPES)}
    rows = [r for r in old["rows"] if r["kind"] not in kinds] + raw["rows"]
    # stable: rates keep their order; an unknown scope or kind goes last
    rows.sort(key=lambda r: (scopes.get(r["scope"], len(scopes)), order.get(r["kind"], len(order))))
    merged = dict(old, rows=rows, metadata=dict(o, weights_digest=m["weights_digest"]))
    earlier = []
    for r in o.get("merged", []):  # an earlier merge keeps only the kinds this one does not replace
        left = [k for k in r["kinds"] if k not in kinds]
        if left:
            earlier.append(dict(r, kinds=left))
    merged["metadata"]["merged"] = earlier + [
        {"kinds": list(kinds), "command": m["command"], "date": m["date"], "rounds": m["rounds"],
         "dense_time": raw["dense"]["time"], "seconds": m.get("seconds")}]
    if set(o.get("note_kinds", ())) & set(kinds):  # the note was about rows measured again now
        merged["metadata"].pop("note", None)
        merged["metadata"].pop("note_kinds", None)
    return merged


def mergeable(old: dict, images: int, weights_digest: str) -> bool:
    """Whether rows measured on `images` test images with these weights may join `old` (the
    original network's error is compared too, by merge(), once measured)."""
    o = old["metadata"]
    return o["images"] == images and o.get("weights_digest", weights_digest) == weights_digest


def ranking(raw: dict) -> List[str]:
    """The paper's ranking, impact <= grid <= uniform error at the same nominal rate, per scope. (Grid
    keeps n x n positions, so its achieved rate is a little higher: the comparison favours the others.)"""
    lines = []
    for scope in SCOPES:
        by = {(r["kind"], round(r["nominal_rate"], 4)): r for r in raw["rows"] if r["scope"] == scope}
        ok = total = 0
        for rate in RATES:
            trio = [by.get((k, round(rate, 4))) for k in RANKED]
            if any(t is None for t in trio):
                continue
            total += 1
            ok += trio[0]["top1_error"] <= trio[1]["top1_error"] <= trio[2]["top1_error"]
            errs = ", ".join(f"{k} {t['top1_error']:.2f}%" for k, t in zip(RANKED, trio))
            lines.append(f"{scope} r={rate:.3f}: {errs}")
        lines.append(f"{scope}: impact <= grid <= uniform at {ok} of {total} rates")
    return lines


def ranking_at_equal_reduction(raw: dict, points: int = 5) -> List[str]:
    """The paper's ranking at equal cost: each kind's error interpolated (linearly in the log of the
    multiplication reduction) at `points` reductions spread over the range all three kinds cover.
    The cost axis is the multiplication reduction, not the measured speedup: the two track each other
    (both count the computed positions), but single timings on a shared machine are not monotonic in
    the rate (one conv2 row read 0.79x), and interpolating through such a point would rank noise.
    The points are read off curves through the same rows, not new measurements, and differences
    smaller than the test set's noise decide nothing."""
    lines, kinds = [], RANKED
    for scope in SCOPES:
        curves = {}
        for kind in kinds:
            by_x: Dict[float, List[float]] = {}  # rows of equal reduction (a grid on a small map) averaged
            for r in raw["rows"]:
                if r["scope"] == scope and r["kind"] == kind and "mult_reduction" in r:
                    by_x.setdefault(round(float(np.log(r["mult_reduction"])), 9), []).append(r["top1_error"])
            if len(by_x) >= 2:
                xs = sorted(by_x)
                curves[kind] = np.array(xs), np.array([np.mean(by_x[x]) for x in xs])
        if len(curves) < len(kinds):
            lines.append(f"{scope}: not ranked (needs two reductions of each of {', '.join(kinds)})")
            continue
        low = max(c[0][0] for c in curves.values())
        high = min(c[0][-1] for c in curves.values())
        if high <= low:
            lines.append(f"{scope}: not ranked (the kinds' reductions do not overlap)")
            continue
        ok = 0
        for x in np.linspace(low, high, points):
            errs = [float(np.interp(x, *curves[k])) for k in kinds]
            ok += errs[0] <= errs[1] <= errs[2]
            lines.append(f"{scope} {np.exp(x):.2f}x fewer multiplications: "
                         + ", ".join(f"{k} {e:.2f}%" for k, e in zip(kinds, errs)))
        lines.append(f"{scope}: impact <= grid <= uniform at {ok} of {points} equal reductions")
    return lines


def write(raw: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "mask_comparison.json").write_text(json.dumps(raw, indent=1, default=str))
    header = ["scope", "kind", "rate", "mult. red.", "speedup (measured)", "top-1 error", "error+"]
    rows = [[r["scope"], r["kind"], f"{r['rate']:.3f}", f"{r['mult_reduction']:.2f}", f"{r['speedup']:.2f}",
             f"{r['top1_error']:.2f}%", f"{r['error_increase']:+.2f}"] for r in raw["rows"]]
    write_csv(out / "mask_comparison.csv", header, rows)
    m = raw["metadata"]
    lines = ["# Mask comparison: NIN on CIFAR-10, no fine-tuning", "",
             f"Command: `{m['command']}`  ", f"Date: {m['date']}  ",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs; {m['threads']} threads  ",
             f"OpenBLAS: {m.get('openblas_config', 'n/a')}  ",
             f"Weights: {m['weights']}"
             + (f" (SHA-256 {m['weights_digest']}...)" if m.get("weights_digest") else "")
             + f"; errors on {m['images']} test images (seeded random subset); impact from "
             f"{m['impact_images']} training images; speedup = whole-network forward time at batch 128, "
             f"median of {m['rounds']} alternating rounds.  ",
             f"Original network: top-1 error {raw['dense']['top1_error']:.2f}% on these images.", ""] + \
            ([m["note"], ""] if m.get("note") else []) + \
            [f"Rows of {', '.join(r['kinds'])}: measured later by `{r['command']}` ({r['date']}, {r['rounds']} "
             f"timing rounds; their speedups are against the original timed in that run, "
             f"{r['dense_time'] * 1000:.0f} ms there, {raw['dense']['time'] * 1000:.0f} ms in the first) and "
             f"merged here.  " for r in m.get("merged", [])] + ([""] if m.get("merged") else []) + [
             "## Ranking (paper: impact <= grid <= uniform)", "", "At equal nominal rate (grid keeps a few "
             "positions fewer, which favours the others):", ""] + [f"- {l}" for l in ranking(raw)] + \
            ["", "At equal multiplication reduction (each kind's error interpolated between its rows; "
             "`ranking_at_equal_reduction`):", ""] + [f"- {l}" for l in ranking_at_equal_reduction(raw)] + \
            ["", "## All rows", ""] + md_table(header, rows) + \
            ["", "Rates of the baselines count the positions they really compute, against the original "
                 "network's maps (on the whole network a layer also sees the map the layers before it "
                 "shrank). Fractional stride on the whole network builds only up to the rate where pool2 "
                 "still gets a map as large as its 3x3 window.", ""]
    (out / "mask_comparison.md").write_text("\n".join(lines))
    plot(raw, out / "plots" / "mask_comparison.png")


def plot(raw: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, scope in zip(axes, SCOPES):
        for kind, marker in zip(ALL_KINDS, "osD^v<x"):
            pts = sorted((r["speedup"], r["top1_error"]) for r in raw["rows"] if r["scope"] == scope and r["kind"] == kind)
            if pts:
                ax.plot(*zip(*pts), marker=marker, label=kind)
        ax.axhline(raw["dense"]["top1_error"], color="k", linestyle="--", label="original")
        ax.set_title("conv2 alone" if scope == "conv2" else "whole network (conv1-3, same rate)")
        ax.set_xlabel("measured speedup (CPU, batch 128)")
        ax.set_ylabel("top-1 error, %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("NIN / CIFAR-10: masks vs baselines, before fine-tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--data", default=None, help="CIFAR-10 (default: the shared tarball)")
    p.add_argument("--images", type=int, default=2000, help="test images for the errors (10000: all)")
    p.add_argument("--impact-images", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5, help="timing rounds")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--kinds", default=",".join(ALL_KINDS),
                   help=f"comma-separated kinds to measure (default: all of {', '.join(ALL_KINDS)})")
    p.add_argument("--merge", action="store_true",
                   help="replace only these kinds' rows in the comparison stored in --out (same weights and "
                        "test images), keeping the others")
    a = p.parse_args(argv)
    if not a.weights.is_file():
        p.error(f"--weights: no file at {a.weights} (train NIN first: see README, 'Training')")
    kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown or not kinds:
        p.error(f"--kinds: expected some of {', '.join(ALL_KINDS)}, got {a.kinds!r}")
    stored = a.out / "mask_comparison.json"
    if a.merge and not stored.is_file():
        p.error(f"--merge: no comparison stored at {stored} to merge into")
    if a.merge and not mergeable(json.loads(stored.read_text()), a.images, file_digest(a.weights)):
        p.error(f"--merge: {stored} holds a comparison of other weights or another --images count")
    if not a.merge and set(kinds) != set(ALL_KINDS) and stored.is_file():
        p.error(f"--kinds: {stored} holds a full comparison that these kinds alone would replace; "
                f"add --merge to replace only their rows, or give another --out")
    start = time.perf_counter()
    raw = run(a.weights, a.data, a.images, a.impact_images, a.rounds, kinds=kinds)
    raw["metadata"]["seconds"] = time.perf_counter() - start
    if a.merge:
        raw = merge(raw, json.loads(stored.read_text()))
    write(raw, a.out)
    print("\n".join(ranking(raw) + ranking_at_equal_reduction(raw)))
    measure.progress(f"wrote {a.out}/mask_comparison.md (.csv, .json, plots/mask_comparison.png)")


if __name__ == "__main__":
    main()
