"""Turn the raw measurements of bench.tables into Markdown and CSV tables and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from bench.markdown import NOT_MEASURED, md_table, shown, write_csv
from bench.paper import PAPER_ROWS, PAPER_TABLE1

def best_dense_peer(net: Dict[str, object]) -> Optional[tuple]:
    """(median seconds, label) of the network's fastest dense peer, or None when no peer was timed."""
    from bench import peers as peer_mod

    best = peer_mod.best_peer(peer_mod.medians(net.get("peers")))
    return (best[1], peer_mod.label(best[0])) if best else None


def _dense_error(network: str, accuracy: Optional[dict]) -> str:
    """NIN's measured test error from the training results; else not measured."""
    if network != "nin" or not accuracy:
        return NOT_MEASURED
    return f"{accuracy['dense_error']:.2f}%"


def _nin_accuracy_plot(accuracy: dict, path: Path) -> List[str]:
    """The NIN rows as a plot beside their table (error increase against measured speedup)."""
    try:
        from bench import plots
    except ImportError as e:
        return ["", f"Plot skipped: {e} (pip install matplotlib)"]
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.nin_accuracy(accuracy, path)
    return ["", f"![nin accuracy](plots/{path.name})"]


def _recipe_variants(out: Path, accuracy: dict, nin_table) -> List[str]:
    """Other fine-tuning recipes run on the same weights (OUT/variants/nin_accuracy_*.json, matched by
    the weights' SHA-256), so the table shows them beside the default recipe's rows; files from other
    weights are not comparable and stay out."""
    digest = accuracy["metadata"].get("weights_digest")
    if not digest:  # results from before the digest was recorded: nothing to match against
        return []
    found, repeated = [], []
    for path in sorted((out / "variants").glob("nin_accuracy_*.json")):
        variant = json.loads(path.read_text())
        if variant.get("metadata", {}).get("weights_digest") != digest or not variant.get("rows"):
            continue
        (repeated if _rows_shown_already(variant, accuracy) else found).append((path, variant))
    if not found and not repeated:
        return []
    lines = ["", "### Other fine-tuning recipes on the same weights", ""]
    if repeated:  # e.g. the runs that first made the main table's rows: their files keep the notes
        names = ", ".join(shown(path) for path, _ in repeated)
        lines += [f"Rows of {names}: the same recipe and the same fine-tuned errors as rows above, "
                  "so not repeated here (their speedups came from other timing runs).", ""]
    for path, variant in found:
        header, rows = nin_table(variant)
        m = variant["metadata"]
        lines += [f"From {shown(path)} (`{m['command']}`, {m['date']}):", ""] + md_table(header, rows) + [""]
    return lines


def _recipe(row: dict) -> dict:
    """A row's fine-tuning recipe, without what its run measured (the error, the seconds it took)."""
    return {k: v for k, v in (row.get("finetune") or {}).items() if k not in ("top1_error", "seconds")}


def _rows_shown_already(variant: dict, accuracy: dict) -> bool:
    """Every row of the variant is a row of the main table: same plan kind and target, same recipe,
    same fine-tuned error (the same finished run read twice, timed apart)."""
    def key(row):
        return row["kind"], row["target"], json.dumps(_recipe(row), sort_keys=True), round(row["tuned_error"], 6)
    main = {key(row) for row in accuracy["rows"] if row.get("tuned_error") is not None}
    return all(row.get("tuned_error") is not None and key(row) in main for row in variant["rows"])


def _has_gpu(raw: dict) -> bool:
    return any(net.get("gpu") for net in raw["networks"])


def _gpu_line(raw: dict) -> str:
    """How the GPU columns were measured, or the one line saying they were not (bench/gpu.py)."""
    from bench.gpu import not_measured_line

    if not _has_gpu(raw):
        return not_measured_line(raw["metadata"])
    gpu = raw["metadata"].get("gpu") or {}
    first = next(net["gpu"] for net in raw["networks"] if net.get("gpu"))
    note = first["cudnn"]["note"]
    return (f"GPU: {gpu.get('device', 'unknown')}, our CUDA backend (cuBLAS SGEMM); whole forward pass to the "
            f"logits at the same batch sizes and plans, every call synchronised, median of {first['rounds']} "
            f"rounds in alternation. Dense peer: PyTorch / cuDNN ({note}). Targets: our dense within 1.5x "
            "of cuDNN; perforated layers >= 0.8 x 1/(1-r) (bench.conv_layers).")


def _gpu_table1_cells(net: dict) -> List[str]:
    g = net.get("gpu")
    if not g:
        return ["-", "-", "-"]
    cudnn = g["cudnn"]["time"]
    return [f"{g['dense']['per_image_ms']:.3f}",
            f"{cudnn['median'] / g['batch'] * 1e3:.3f}" if cudnn else (g["cudnn"]["note"] or "n/a"),
            f"{g['dense_vs_cudnn']:.2f}" if g.get("dense_vs_cudnn") else "n/a"]


def _paper_gpu_speedup(network: str, index: int) -> str:
    """The paper's GPU row of the same ordinal (its plans, tuned on a GTX 980, differ from the CPU's)."""
    rows = [p for p in PAPER_ROWS if p["network"] == network and p["device"] == "GPU"]
    return f"{rows[index]['speedup']} (mult. {rows[index]['mult']})" if index < len(rows) else "-"


def table1(raw: dict) -> tuple:
    header = ["network", "batch", "error (ours)", "error (paper)", "CPU time / image, ms", "activation memory, MB",
              "peak RSS, MB",
              "multiply-adds / image", "# conv", "best dense peer, ms / image"]
    gpu = _has_gpu(raw)
    if gpu:
        header += ["GPU time / image, ms", "cuDNN (PyTorch) / image, ms", "GPU dense / cuDNN"]
    rows = []
    for net in raw["networks"]:
        d = net["dense"]
        paper = PAPER_TABLE1[net["network"]]
        best = best_dense_peer(net)
        from perforated.graph.networks import NETWORKS

        n_conv = sum(1 for k, _, _ in NETWORKS[net["network"]]["layers"]() if k == "conv")
        rows.append([net["network"], str(net["batch"]), _dense_error(net["network"], raw.get("nin_accuracy")),
                     f"{paper['error']}% {paper['metric']}", f"{d['per_image_ms']:.2f}",
                     f"{d['activation_bytes'] / 2**20:.1f}",
                     f"{d['peak_rss_bytes'] / 2**20:.0f}" if d.get("peak_rss_bytes") else "n/a", f"{d['multiply_adds']:.3e}", str(n_conv),
                     f"{best[0] / net['batch'] * 1e3:.2f} ({best[1]})" if best else "n/a"]
                    + (_gpu_table1_cells(net) if gpu else []))
    return header, rows


def table3(raw: dict) -> tuple:
    header = ["network", "rate (all perforable layers)", "speedup", "mult. red.", "mem. red.", "peak RSS red.",
              "paper speedup", "paper mult.", "paper mem.", "paper error+", "paper tuned+",
              "speedup vs best dense peer"]
    gpu = _has_gpu(raw)
    if gpu:
        header += ["GPU speedup", "paper GPU speedup"]
    rows = []
    for net in raw["networks"]:
        best = best_dense_peer(net)
        gpu_rows = (net.get("gpu") or {}).get("rows") or []
        for i, r in enumerate(net["rows"]):
            p = r["paper"] or {}
            cell = lambda key: f"{p[key]}" if key in p else "-"
            vs_peer = f"{best[0] / r['measured']['time']['median']:.2f}x ({best[1]})" if best else "n/a"
            rows.append([net["network"], f"{r['rate']:.3f}", f"{r['speedup']:.2f}", f"{r['mult_reduction']:.2f}",
                         f"{r['mem_reduction']:.2f}", f"{r['rss_reduction']:.2f}" if r.get("rss_reduction") else "n/a",
                         cell("speedup"), cell("mult"), cell("mem"), cell("error"), cell("tuned"), vs_peer]
                        + ([f"{gpu_rows[i]['speedup']:.2f}" if i < len(gpu_rows) else "-",
                            _paper_gpu_speedup(net["network"], i)] if gpu else []))
    return header, rows


def layer_table(net: dict) -> tuple:
    rates = [r["rate"] for r in net["rows"]]
    header = ["layer", "output (dense)", "dense ms", "GFLOP/s"] + \
        [h for r in rates for h in (f"r={r:.2f} ms", f"speedup (ideal)")]
    dense_layers = net["dense"]["layers"]
    perf_layers = [{l["layer"]: l for l in r["measured"]["layers"]} for r in net["rows"]]
    rows = []
    for layer in dense_layers:
        if layer["kind"] in ("relu", "dropout"):
            continue
        sec = layer["seconds"]
        gflops = 2 * layer["macs"] * net["batch"] / sec / 1e9 if layer["macs"] and sec > 0 else 0
        cells = [layer["layer"], "x".join(str(s) for s in layer["out_shape"][1:]), f"{sec * 1e3:.2f}",
                 f"{gflops:.0f}" if gflops else "-"]
        for pl in perf_layers:
            other = pl.get(layer["layer"])
            if other is None:
                cells += ["-", "-"]
                continue
            ideal = layer["macs"] / other["macs"] if other["macs"] else 1.0
            cells += [f"{other['seconds'] * 1e3:.2f}",
                      f"{sec / other['seconds']:.2f} ({ideal:.2f})" if other["seconds"] > 0 else "-"]
        rows.append(cells)
    return header, rows


def peer_table(raw: dict) -> tuple:
    """Our dense network, every peer with a time in the measurements (one column each, in
    bench.peers.ORDER; peer_note says why the others have none), the fastest peer per network, our dense speed relative to it and each
    perforated plan's speedup over it (with the plan's multiplication reduction)."""
    from bench import peers as peer_mod

    names = peer_mod.timed_names(net.get("peers") for net in raw["networks"])
    plans = max((len(net["rows"]) for net in raw["networks"]), default=0)
    header = (["network", "batch", "ours dense, s"] + [f"{peer_mod.label(k)}, s" for k in names]
              + ["best dense peer", "ours dense vs best peer (speed)"]
              + [f"plan {i + 1} vs best peer (mult. red.)" for i in range(plans)])
    rows = []
    for net in raw["networks"]:
        peers = net.get("peers") or {}
        times = peer_mod.medians(peers)
        best = peer_mod.best_peer(times)
        dense = net["dense"]["time"]["median"]
        cells = [net["network"], str(net["batch"]), f"{dense:.3f}"]
        cells += [f"{times[k]:.3f}" if times.get(k) else (peers.get(k, {}).get("note") or "n/a") for k in names]
        cells += [peer_mod.label(best[0]) if best else "n/a", f"{best[1] / dense:.2f}x" if best else "n/a"]
        for i in range(plans):
            r = net["rows"][i] if i < len(net["rows"]) else None
            cells.append("-" if r is None else "n/a" if not best else
                         f"{best[1] / r['measured']['time']['median']:.2f}x ({r['mult_reduction']:.2f})")
        rows.append(cells)
    return header, rows


def peer_note(raw: dict) -> str:
    """How the peers were timed, and how closely their logits matched our dense network's."""
    from bench import peers as peer_mod

    nets = [net for net in raw["networks"] if net.get("peers")]
    if not nets:
        return "Peers: not measured in this run (--no-peers)."
    if all(net.get("peers_interleaved") for net in nets):
        how = ("Peers ran in the same alternating rounds as our dense and perforated networks (order "
               "reversed every other round), on our dense network's weights and input, to the logits.")
    else:
        how = "Peers were timed after our networks (measurements from before they were interleaved)."
    diffs = {}
    for net in nets:
        for name, r in net["peers"].items():
            if r.get("max_rel_diff") is not None:
                diffs[name] = max(diffs.get(name, 0.0), r["max_rel_diff"])
    if diffs:
        how += (" Largest relative difference of their logits from ours: "
                + ", ".join(f"{peer_mod.label(k)} {diffs[k]:.1e}" for k in peer_mod.ordered(diffs)) + ".")
    missing = peer_mod.untimed_notes(net.get("peers") for net in nets)
    if missing:
        how += " Not timed: " + "; ".join(missing) + "."
    return how + " Speed ratios: best peer's time / ours (above 1: ours is faster)."


def graph_section(raw: dict) -> List[str]:
    """Lines of the imported-graph rows (bench.graph_networks results measured in this run)."""
    from bench.graph_networks import table as graph_table
    from bench.peers import LABELS

    lines: List[str] = []
    for g in raw.get("graphs") or []:
        lines += ["", f"## Imported ONNX graph: {g['network']} (zoo file, seeded random weights)", ""]
        if "error" in g:
            lines.append(f"Not measured: {g['error']}.")
            continue
        lines += [f"Batch {g['batch']}, {g['rounds']} alternating rounds (min per call), {g['threads']} threads for "
                  f"every engine; the same uniform rate on every conv, chosen by bisection for 2x / 3x fewer conv "
                  f"multiply-adds (measured reduction shown). The peers run the file as our exporter writes it "
                  f"(batch norms folded) and our perforated graphs exported in standard ONNX ops. Best dense peer: "
                  f"{LABELS.get(g.get('best_dense_peer'), g.get('best_dense_peer') or 'none')}. Activation memory "
                  f"is not measured for imported graphs.", ""]
        lines += md_table(*graph_table(g))
    return lines


def write_all(raw: dict, out: Path, suffix: str = "") -> str:
    meta = raw["metadata"]
    accuracy_file = shown(out / "nin_accuracy.json")  # the file bench.tables read the NIN errors from
    lines = ["# PerforatedCNNs tables, regenerated", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
             f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs, {meta['platform']}  ",
             f"Library: {meta['perforated_build']}  ", f"OpenBLAS: {meta.get('openblas_config', 'n/a')}  ",
             f"Environment: {meta['environment']}  ", f"Peers: {meta['peers']}  ",
             f"Timing: whole forward pass (to the logits), median of {meta['repeat']} rounds after a warm-up; in "
             "each round the dense network and its perforated versions run in alternation, so drift of this "
             "shared machine cancels out of the speedups; "
             f"{meta['threads']} threads for every engine.", "", _gpu_line(raw), "",
             "Plans: without ImageNet weights, every perforable layer gets the same rate (uniform masks), "
             "chosen by bisection so that the multiplication reduction matches the paper's row; NIN rows aim "
             "at 2x / 3x / 4x. Errors need trained weights and data: NIN's come from "
             f"{accuracy_file} (its own section below); AlexNet / VGG-16 errors are not "
             "measured here (no ImageNet on these machines).", "",
             "## Table 1 analogue: the original networks", ""]
    for name, (header, rows) in [("table1", table1(raw))]:
        lines += md_table(header, rows)
        write_csv(out / f"{name}{suffix}.csv", header, rows)
    lines += ["", "## Table 3 analogue: perforated networks (CPU" + (", GPU columns" if _has_gpu(raw) else "")
              + ")", ""]
    header, rows = table3(raw)
    lines += md_table(header, rows)
    write_csv(out / f"table3{suffix}.csv", header, rows)
    accuracy = raw.get("nin_accuracy")
    lines += ["", "## NIN on CIFAR-10: error before and after fine-tuning", ""]
    if accuracy:
        from bench.nin_accuracy import table as nin_table

        header, rows = nin_table(accuracy)
        m = accuracy["metadata"]
        lines += [f"From {accuracy_file} (`{m['command']}`, {m['date']}, {m['cpu']}); speedups "
                  "there were measured in that run. Original network top-1 error "
                  f"{accuracy['dense_error']:.2f}%.", ""] + md_table(header, rows) + ["", accuracy.get("note", "")]
        lines += _nin_accuracy_plot(accuracy, out / "plots" / f"nin_accuracy{suffix}.png")
        lines += _recipe_variants(out, accuracy, nin_table)
    else:
        lines += [f"Not measured: {accuracy_file} is missing (run `python -m bench.nin_accuracy` "
                  "after training NIN)."]
    masks_file = out / "mask_comparison.json"
    if masks_file.is_file():
        from bench.mask_comparison import ranking, ranking_at_equal_reduction

        masks = json.loads(masks_file.read_text())
        lines += ["", "## NIN mask comparison (results/mask_comparison.md, before fine-tuning)", "",
                  "At equal nominal rate:", ""] + [f"- {line}" for line in ranking(masks)] + \
                 ["", "At equal multiplication reduction (interpolated):", ""] + \
                 [f"- {line}" for line in ranking_at_equal_reduction(masks)] + \
                 ["", "![mask comparison](plots/mask_comparison.png)"]
    lowrank_file = out / f"lowrank{suffix}.json"
    if lowrank_file.is_file():
        from bench.lowrank_tables import table as lowrank_table

        lowrank = json.loads(lowrank_file.read_text())
        header, rows = lowrank_table(lowrank)
        lines += ["", f"## Low-rank decomposition (accnn), perforation, and both (results/lowrank{suffix}.md)", "",
                  f"`{lowrank['metadata']['command']}`, {lowrank['metadata']['date']}; NIN accuracy columns: "
                  f"{lowrank['metadata'].get('nin_accuracy_source', 'this run')}.", ""] + md_table(header, rows)
    lines += graph_section(raw)
    lines += ["", "## Whole-network dense peers (same run)", "", peer_note(raw), ""]
    header, rows = peer_table(raw)
    lines += md_table(header, rows)
    write_csv(out / f"peers{suffix}.csv", header, rows)
    for net in raw["networks"]:
        lines += ["", f"## Per-layer times: {net['network']} (batch {net['batch']})", ""]
        header, rows = layer_table(net)
        lines += md_table(header, rows)
        write_csv(out / f"layers_{net['network']}{suffix}.csv", header, rows)
    try:
        from bench import plots

        written = plots.write_plots(raw, out / "plots", suffix)
        lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in written]
    except ImportError as e:
        lines += ["", f"Plots skipped: {e} (pip install matplotlib)"]
    text = "\n".join(lines) + "\n"
    (out / f"tables{suffix}.md").write_text(text)
    return text
