"""python -m bench.graph_networks — an imported ONNX network (default: the zoo ResNet-50 with seeded
random weights) dense and perforated, against ONNX Runtime and OpenVINO on the same file, and the
exported perforated graph in both; writes results/graph_<name>.md and .json.

Rows, timed in alternating rounds in one process (perforated.timing.alternating_times), minimum per
call: ours dense, ours perforated (the same rate on every perforable conv: given rates, or for each
--reductions target the rate whose conv multiply-add reduction is closest to it, by bisection as
bench.rates does for the paper's networks; the measured MAC ratio is reported), the peers on the
original file, the peers on our exported perforated files. bench.tables runs it for its ResNet-50 rows.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from bench.markdown import md_table, write_result
from bench.measure import machine_metadata, progress
from bench.paths import RESULTS


def _peer_runners(model_bytes: bytes, x: np.ndarray, threads: int) -> Dict[str, object]:
    from bench.peers import ort_runner, ov_runner

    runners: Dict[str, object] = {}
    try:
        runners["onnxruntime"] = ort_runner(model_bytes, x, threads)
    except Exception as e:  # noqa: BLE001 - a missing or failing peer leaves a note, not a crash
        progress(f"onnxruntime: {type(e).__name__}: {e}")
    try:
        runners["openvino"] = ov_runner(model_bytes, x, threads)[0]
    except Exception as e:  # noqa: BLE001
        progress(f"openvino: {type(e).__name__}: {e}")
    return runners


def planned_macs(convs: List[Dict[str, object]], rate: float) -> int:
    """Conv multiply-adds per image with `rate` on every perforable conv (uniform masks keep
    count_for_rate positions), from a dense GraphModel's ``convs()`` rows."""
    from perforated.ops.masks import count_for_rate

    total = 0
    for c in convs:
        h, w = c["out_size"]
        kept = count_for_rate((h, w), rate) if rate > 0 and h * w > 1 else h * w
        total += c["macs"] * kept // (h * w)
    return total


def rate_for_reduction(convs: List[Dict[str, object]], reduction: float) -> float:
    """The uniform rate whose conv multiply-add reduction is closest to `reduction` (bench.rates' bisection)."""
    from bench.rates import bisect_rate

    return bisect_rate(lambda rate: planned_macs(convs, rate), reduction)


def measure(name: str, batch: int, rates: List[float], rounds: int, threads: int, kind: str = "grid",
            reductions: Optional[List[float]] = None) -> Dict[str, object]:
    """Times ours and the peers (see the module's docstring). ``reductions``: targets of conv MAC
    reduction, each turned into a rate (added after ``rates``)."""
    import perforated.onnx as pon
    from perforated.onnx.zoo import zoo_model
    from perforated.timing import alternating_times

    proto = zoo_model(name)
    dense = pon.load(proto, batch=batch)
    targets = [(r, None) for r in rates] + [(rate_for_reduction(dense.convs(), t), t) for t in reductions or []]
    progress(f"{name} b{batch}: loaded dense; building {len(targets)} plan(s)")
    x = np.random.default_rng(1).standard_normal(next(iter(dense.graph.inputs.values()))).astype(np.float32)
    calls, rows = [lambda: dense.forward(x)], [{"engine": "ours", "variant": "dense", "mac_reduction": 1.0}]
    for r, target in targets:
        m = pon.load(proto, batch=batch, plan={"rate": r, "kind": kind, "seed": 1})
        macs = m.macs()
        calls.append(lambda m=m: m.forward(x))
        rows.append({"engine": "ours", "variant": f"{kind} rate {r}", "rate": r, "target_reduction": target,
                     "mac_reduction": macs["dense"] / macs["planned"]})
        m_bytes = pon.to_onnx(m).SerializeToString()
        for peer, run in _peer_runners(m_bytes, x, threads).items():
            calls.append(run)
            rows.append({"engine": peer, "variant": f"exported {kind} rate {r}", "rate": r,
                         "target_reduction": target, "mac_reduction": macs["dense"] / macs["planned"]})
    peer_bytes = pon.to_onnx(dense).SerializeToString()  # the file at this batch, batch norms folded
    for peer, run in _peer_runners(peer_bytes, x, threads).items():
        calls.append(run)
        rows.append({"engine": peer, "variant": "dense", "mac_reduction": 1.0})
    progress(f"{name} b{batch}: timing {len(calls)} calls, {rounds} alternating rounds")
    times = alternating_times(calls, rounds)
    dense_peers = [(min(t), r["engine"]) for t, r in zip(times, rows) if r["engine"] != "ours" and r["variant"] == "dense"]
    best_peer, best_name = min(dense_peers) if dense_peers else (None, None)
    for t, r in zip(times, rows):
        r["min_ms"] = min(t) * 1e3
        r["median_ms"] = float(np.median(t)) * 1e3
        r["vs_best_dense_peer"] = best_peer / min(t) if best_peer else None
        r["speedup"] = min(times[0]) / min(t) if r["engine"] == "ours" else None
    return {"network": name, "batch": batch, "rounds": rounds, "threads": threads, "kind": kind, "rows": rows,
            "best_dense_peer": best_name, "machine": machine_metadata()}


def table(result: Dict[str, object]) -> tuple:
    """Header and rows of one measured network (every engine and variant)."""
    body = [[r["engine"], r["variant"], f"{r['mac_reduction']:.2f}x",
             f"{r['speedup']:.2f}x" if r.get("speedup") else "-", f"{r['min_ms']:.1f}", f"{r['median_ms']:.1f}",
             f"{r['vs_best_dense_peer']:.2f}x" if r["vs_best_dense_peer"] else "-"] for r in result["rows"]]
    return (["engine", "network", "fewer conv MACs", "speedup over ours dense", "min ms", "median ms",
             "speed vs best dense peer"], body)


def render(result: Dict[str, object]) -> List[str]:
    lines = [f"# {result['network']} (ONNX zoo graph, seeded random weights), batch {result['batch']}", "",
             f"`{result['machine']['command']}` on {result['machine']['cpu']} "
             f"({result['machine'].get('isa', '?')}, {result['machine']['logical_cpus']} logical CPUs), commit "
             f"{result['machine'].get('commit') or '?'}, {result['machine']['date']}; "
             f"{result['rounds']} alternating rounds, min per call, {result['threads']} threads for every engine.",
             "The peers read the file at this batch as our exporter writes it (batch norms folded); the "
             "exported plans are our perforated graphs in standard ONNX ops.", ""]
    return lines + md_table(*table(result))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="resnet50", help="a zoo graph name (perforated.onnx.zoo.NAMES)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rates", default="0.5,0.667", help="rates of the perforated rows")
    p.add_argument("--reductions", default="", help="conv MAC reductions, each made a rate (e.g. 2,3)")
    p.add_argument("--kind", default="grid", choices=("grid", "uniform"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS), help="folder for graph_<network>.md/.json")
    args = p.parse_args(argv)
    result = measure(args.network, args.batch, [float(r) for r in args.rates.split(",") if r], args.rounds,
                     args.threads, args.kind, [float(r) for r in args.reductions.split(",") if r])
    print(write_result(Path(args.out) / f"graph_{args.network}_b{args.batch}", result, render(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
