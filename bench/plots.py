"""PNG plots for results/: per-layer speedup vs rate, network speedup vs multiplication reduction, masks."""
from __future__ import annotations

from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")  # no display on these machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import perforated  # noqa: E402
from bench.paper import PAPER_NIN_TUNED, PAPER_ROWS  # noqa: E402


def layer_speedups(raw: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    r = np.linspace(0, 0.9, 100)
    ax.plot(r, 1 / (1 - r), "k--", label="ideal 1/(1-r)")
    for net, marker in zip(raw["networks"], "os^"):
        dense = {l["layer"]: l for l in net["dense"]["layers"] if l["kind"] == "conv"}
        xs, ys = [], []
        for row in net["rows"]:
            for l in row["measured"]["layers"]:
                d = dense.get(l["layer"])
                if d is None or not l["compact"] or l["macs"] == 0 or d["macs"] == l["macs"]:
                    continue
                xs.append(1 - l["macs"] / d["macs"])
                ys.append(d["seconds"] / l["seconds"])
        ax.scatter(xs, ys, marker=marker, label=f"{net['network']} conv layers", alpha=0.7)
    ax.set_xlabel("perforation rate r")
    ax.set_ylabel("layer speedup over our dense path")
    ax.set_title("Per-layer speedup (measured, CPU)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def network_speedups(raw: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    top = 1.0
    for net, marker in zip(raw["networks"], "os^"):
        xs = [r["mult_reduction"] for r in net["rows"]]
        ys = [r["speedup"] for r in net["rows"]]
        top = max([top] + xs + ys)
        ax.plot(xs, ys, marker=marker, label=f"{net['network']} (ours)")
        paper = [p for p in PAPER_ROWS if p["network"] == net["network"] and p["device"] == "CPU"]
        if paper:
            ax.plot([p["mult"] for p in paper], [p["speedup"] for p in paper], marker=marker, linestyle=":",
                    label=f"{net['network']} (paper, i5-4460)")
    ax.plot([1, top], [1, top], "k--", label="speedup = mult. reduction")
    ax.set_xlabel("multiplication reduction")
    ax.set_ylabel("whole-network speedup")
    ax.set_title("Network speedup vs multiplication reduction (CPU)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def nin_accuracy(accuracy: dict, path: Path) -> None:
    """bench.nin_accuracy's rows: error increase over the original network against measured speedup,
    before fine-tuning (hollow, dashed) and after (filled), one colour per mask kind."""
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    kinds = list(dict.fromkeys(r["kind"] for r in accuracy["rows"]))
    for kind, marker, colour in zip(kinds, "osD^v", plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rows = sorted((r for r in accuracy["rows"] if r["kind"] == kind), key=lambda r: r["speedup"])
        ax.plot([r["speedup"] for r in rows], [r["error_increase"] for r in rows], marker=marker, linestyle="--", color=colour,
                markerfacecolor="none", label=f"{kind}, before fine-tuning")
        tuned = [(r["speedup"], r["tuned_error_increase"]) for r in rows if r.get("tuned_error_increase") is not None]
        if tuned:
            ax.plot(*zip(*tuned), marker=marker, color=colour, label=f"{kind}, fine-tuned")
    ax.scatter(list(PAPER_NIN_TUNED), list(PAPER_NIN_TUNED.values()), marker="*", s=160, color="k", zorder=5,
               label="target after fine-tuning (paper)")
    if accuracy.get("dense_tuned_error") is not None:
        control = accuracy["dense_tuned_error"] - accuracy["dense_error"]
        ax.axhline(control, color="grey", linestyle=":", label=f"original network fine-tuned alike ({control:+.2f})")
    ax.axhline(0, color="k", linewidth=0.8)
    title = "NIN / CIFAR-10: perforated networks"
    recipe = next((r["finetune"] for r in accuracy["rows"] if r.get("finetune")), None)
    if recipe:
        title += f"\nfine-tuned {recipe['epochs']} epoch(s) at lr {recipe['lr']:g}"
        title += " with batch norm" if recipe.get("batchnorm") else ""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("measured speedup (CPU, batch 128)")
    ax.set_ylabel(f"top-1 error increase, points (original {accuracy['dense_error']:.2f}%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mask_pictures(path: Path) -> None:
    """The four mask kinds on a 32x32 map (NIN conv1's output) at r = 1/2 and 3/4: computed
    positions in black over the nearest-map cells they fill."""
    size = (32, 32)
    yy, xx = np.mgrid[0:32, 0:32]
    scores = np.exp(-((yy - 12) ** 2 + (xx - 18) ** 2) / 120.0).astype(np.float32)  # a stand-in impact map
    kinds = [("uniform", {}), ("grid", {}), ("pooling", {"pool": (3, 2)}), ("impact", {"scores": scores})]
    fig, axes = plt.subplots(2, 4, figsize=(11, 5.8))
    for row, rate in enumerate((0.5, 0.75)):
        for col, (kind, extra) in enumerate(kinds):
            m = perforated.make_mask(kind, size, rate, seed=0, **extra)
            ax = axes[row, col]
            cells = np.random.default_rng(0).permutation(m.count)[m.nearest].reshape(size)
            ax.imshow(cells, cmap="tab20", interpolation="nearest")
            rr, cc = np.divmod(m.indices, size[1])
            ax.scatter(cc, rr, s=6, c="k")
            ax.set_title(f"{kind}, r={rate} ({m.count} computed)", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Masks on a 32x32 map (impact: a synthetic score map peaked at (12, 18))")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(raw: dict, folder: Path, suffix: str = "") -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"layer_speedup{suffix}.png", folder / f"network_speedup{suffix}.png",
             folder / f"masks{suffix}.png"]
    layer_speedups(raw, paths[0])
    network_speedups(raw, paths[1])
    mask_pictures(paths[2])
    return paths
