"""Regenerate the paper's tables under results/: ``python -m bench.tables [--quick]``.

For NIN (batch 128), AlexNet (256) and VGG-16 (16) — the paper's timing batch sizes — it measures, in
one run on this machine:

- the original network: forward time, activation memory, multiply-adds (Table 1 analogue);
- perforated networks at the paper's multiplication reductions (Table 3 analogue). Without ImageNet
  weights the plans are chosen without accuracy: the same rate on every perforable layer (uniform
  masks), the rate found by bisection so that the multiplication reduction equals the paper's row.
  NIN rows aim at 2x / 3x / 4x. Error columns come from results/nin_accuracy.json when the training
  work has produced it, and read "not measured" otherwise;
- per-layer times of each network inside the model (DeepBench style), dense and perforated;
- whole-network dense inference of ONNX Runtime, OpenVINO and PyTorch (optional peers) on the same
  shapes, weights and input, timed in the same alternating rounds as our dense and perforated networks;
  every table names the fastest peer per network and our speed against it;
- where a GPU is usable (CUDA build of the library, a visible GPU, CuPy; see bench/gpu.py): the dense
  and perforated networks' forward time on the GPU, the GPU speedups, and PyTorch / cuDNN's dense
  forward on the same GPU with our dense / cuDNN ratio. Without one, the tables say in one line why
  the GPU columns are missing;
- plots (PNG): per-layer speedup vs rate with the ideal curve, network speedup vs multiplication
  reduction, and mask pictures.

``--quick`` divides the batch sizes by 16 and repeats once: a smoke run of a few minutes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

import perforated
from bench import gpu as gpu_mod, measure, report
from bench.paper import PAPER_ROWS, PAPER_TABLE1
from perforated.graph.model import Model
from perforated.graph.networks import NETWORKS
from perforated.graph.plan import PerforationPlan

from bench.paths import RESULTS
from bench.rates import rate_for_reduction
NIN_TARGETS = (2.0, 3.0, 4.0)


def describe_model(model: Model, t: Dict[str, float], repeat: int,
                   plan: Optional[PerforationPlan] = None) -> Dict[str, object]:
    from bench import rss

    return {"time": t, "per_image_ms": t["median"] / model.batch * 1e3,
            "multiply_adds": model.multiply_adds(), "multiply_adds_legacy": model.multiply_adds(legacy=True),
            "activation_bytes": model.activation_bytes(), "layers": model.profile(repeat),
            "peak_rss_bytes": rss.measure_in_child(model.name, model.batch, plan.to_dict() if plan else None)}


def network_peers(model: Model, threads: int) -> Dict[str, tuple]:
    """The whole-network peers (bench.peer_networks) on our dense model's weights and input, to the
    logits as our forward: the same function, so their outputs can be checked against ours."""
    from bench import peer_networks

    info = NETWORKS[model.name]
    weights = {name: {"weight": p["weight"], "bias": p["bias"]} for name, p in model.params.items()}
    return peer_networks.network_peers(info["layers"](), info["input"], model.batch, info["classes"], threads,
                                       weights, softmax=False, x=np.array(model.x))


def times_with_peers(models: List[Model], peers: Dict[str, tuple], repeat: int) -> tuple:
    """Our models' forward passes and the peers in the same alternating rounds (bench.peers
    .time_together; random inputs as interleaved_times). Returns (one summary per model, peer results
    ``{name: {"note", "time", "max_rel_diff"}}``; max_rel_diff: the peer's logits against our first
    model's after the warm-up, relative to their largest magnitude, when the peers got its input)."""
    from bench import peers as peer_mod

    ours, results = peer_mod.time_together([model.forward for model in models], peers, repeat)
    if models:
        logits = np.asarray(models[0].forward(), np.float64)
        for name, (runner, _) in peers.items():
            if runner is not None and results[name]["time"] is not None:
                got = np.asarray(runner(), np.float64).reshape(logits.shape)
                results[name]["max_rel_diff"] = float(np.abs(got - logits).max() / max(np.abs(logits).max(), 1e-30))
    return ours, results


def nin_accuracy(folder: Path = RESULTS) -> Optional[dict]:
    """Error columns for NIN written by the training work (results/nin_accuracy.json), if present."""
    path = folder / "nin_accuracy.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_network(network: str, batch: int, repeat: int, threads: int, peers: bool,
                gpu: bool = False) -> Dict[str, object]:
    targets = [(row["mult"], row) for row in PAPER_ROWS if row["network"] == network and row["device"] == "CPU"]
    if not targets:
        targets = [(t, None) for t in NIN_TARGETS]
    plans = []
    for reduction, paper in targets:
        rate = rate_for_reduction(network, reduction)
        plans.append((reduction, paper, rate, PerforationPlan.uniform_rate(network, rate, kind="uniform", seed=1)))
    measure.progress(f"{network}: batch {batch}, dense and rates "
                     + ", ".join(f"{r:.3f}" for _, _, r, _ in plans) + " on every perforable layer")
    dense_model = Model(network, batch)
    models = [dense_model] + [Model(network, batch, plan=plan, shared_params=dense_model.params) for *_, plan in plans]
    rng = np.random.default_rng(0)
    for model in models:
        model.x[...] = rng.standard_normal(model.x.shape, dtype=np.float32)
    peer_runners = {}
    if peers:
        measure.progress(f"{network}: building the dense peers (same weights and input as ours)")
        peer_runners = network_peers(dense_model, threads)
        measure.progress(f"{network}: timing ours and {', '.join(n for n, (r, _) in peer_runners.items() if r)} "
                         "in the same rounds")
    times, peer_results = times_with_peers(models, peer_runners, repeat)
    del peer_runners
    measure.progress(f"{network}: per-layer profiles and peak memory")
    dense = describe_model(dense_model, times[0], repeat)
    result: Dict[str, object] = {"network": network, "batch": batch, "dense": dense, "rows": []}
    for (reduction, paper, rate, plan), model, t in zip(plans, models[1:], times[1:]):
        perf = describe_model(model, t, repeat, plan)
        result["rows"].append({"rate": rate, "target_mult": reduction, "paper": paper, "plan": plan.to_dict(),
                               "measured": perf,
                               "speedup": dense["time"]["median"] / perf["time"]["median"],
                               "mult_reduction": dense["multiply_adds"] / perf["multiply_adds"],
                               "mem_reduction": dense["activation_bytes"] / perf["activation_bytes"],
                               "rss_reduction": (dense["peak_rss_bytes"] / perf["peak_rss_bytes"]
                                                 if dense["peak_rss_bytes"] and perf["peak_rss_bytes"] else None)})
    del models, dense_model
    if peers:
        result["peers"] = peer_results
        result["peers_interleaved"] = True
    if gpu:
        result["gpu"] = gpu_mod.run_network(network, batch, [(rate, plan) for _, _, rate, plan in plans], repeat)
    return result


GRAPH_BATCH = 16  # the imported graphs' batch (ResNet-50: an ImageNet network, like VGG-16 at 16)
GRAPH_REDUCTIONS = [2.0, 3.0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch sizes / 16, one repeat: a smoke run")
    parser.add_argument("--networks", default="nin,alexnet,vgg16", help="comma-separated subset")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed rounds per measurement (default 5; dense and perforated alternate)")
    parser.add_argument("--graphs", default="resnet50",
                        help="comma-separated ONNX zoo graphs (perforated.onnx.zoo) timed dense and at 2x / 3x "
                             "fewer conv multiply-adds against the peers, batch 16 (bench.graph_networks); "
                             "'' for none")
    parser.add_argument("--no-peers", action="store_true", help="skip ONNX Runtime / OpenVINO / PyTorch")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder (default results/)")
    parser.add_argument("--no-lowrank", action="store_true",
                        help="skip the low-rank table (bench.lowrank_tables --speed-only: results/lowrank.md)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: re-render the tables from OUT/tables.json with the current "
                             "OUT/nin_accuracy.json (e.g. after bench.nin_accuracy)")
    args = parser.parse_args(argv)
    if args.report_only:
        source = args.out / ("tables_quick.json" if args.quick else "tables.json")
        if not source.is_file():
            parser.error(f"--report-only: no {source} to re-render (run without --report-only first)")
        raw = json.loads(source.read_text())
        raw["nin_accuracy"] = nin_accuracy(args.out)
        source.write_text(json.dumps(raw, indent=1, default=str))
        print(report.write_all(raw, args.out, "_quick" if args.quick else ""))
        return
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown:
        parser.error(f"--networks: unknown {unknown}; choose from {sorted(NETWORKS)}")
    repeat = args.repeat or (1 if args.quick else 5)
    threads = perforated.get_num_threads()
    gpu = gpu_mod.status()
    measure.progress(f"GPU: {gpu['device']}" if gpu["measured"] else gpu_mod.not_measured_line({"gpu": gpu}))
    results: List[Dict[str, object]] = []
    for network in networks:
        batch = NETWORKS[network]["timing_batch"]
        if args.quick:
            batch = max(1, batch // 16)
        results.append(run_network(network, batch, repeat, threads, not args.no_peers, gpu["measured"]))
    graphs = []
    for name in (g.strip() for g in args.graphs.split(",") if g.strip()):
        from bench import graph_networks

        try:
            graphs.append(graph_networks.measure(name, 1 if args.quick else GRAPH_BATCH, [], repeat, threads,
                                                 kind="uniform", reductions=GRAPH_REDUCTIONS))
        except Exception as e:  # noqa: BLE001 - e.g. onnx not installed: the other tables are still written
            measure.progress(f"{name}: not measured ({type(e).__name__}: {e})")
            graphs.append({"network": name, "error": f"{type(e).__name__}: {e}"})
    if not args.no_lowrank:  # low-rank, perforation and both, timed in this run (NIN accuracy: stored)
        from bench import lowrank_tables

        try:
            lowrank_tables.main(["--speed-only", "--networks", ",".join(networks), "--out", str(args.out)]
                                + (["--quick"] if args.quick else [])
                                + (["--repeat", str(args.repeat)] if args.repeat else []))
        except Exception as e:  # noqa: BLE001 - the tables measured above must still be written
            measure.progress(f"low-rank table failed ({type(e).__name__}: {e}); the other tables are written, "
                             f"the low-rank section shows the previous results/lowrank.json if any")
    meta = measure.machine_metadata()
    meta.update(threads=threads, repeat=repeat, quick=args.quick, gpu=gpu)
    from bench import peers as peer_mod

    meta["peers"] = peer_mod.available()
    raw = {"metadata": meta, "paper_table1": PAPER_TABLE1, "networks": results, "graphs": graphs,
           "nin_accuracy": nin_accuracy(args.out)}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out / f"tables{suffix}.json").write_text(json.dumps(raw, indent=1, default=str))
    text = report.write_all(raw, args.out, suffix)
    print(text)
    measure.progress(f"wrote {args.out}/tables{suffix}.md (.csv, .json, plots/)")
    if not args.quick and args.out.resolve() == RESULTS.resolve() and set(networks) == set(NETWORKS):
        from bench import readme

        if readme.README.is_file() and readme.update(raw):
            measure.progress(f"rewrote the results block of {readme.README} (python -m bench.readme)")


if __name__ == "__main__":
    main()
