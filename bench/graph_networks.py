"""python -m bench.graph_networks — an imported ONNX network (default: the zoo ResNet-50 with seeded
random weights) dense and perforated, against ONNX Runtime and OpenVINO on the same file, and the
exported perforated graph in both; writes results/graph_<name>.md and .json.

Rows, timed in alternating rounds in one process (perforated.timing.alternating_times), minimum per
call: ours dense, ours at uniform grid rates for 2x and 3x fewer conv multiply-adds (the measured MAC
ratio is reported), the peers on the original file, the peers on our exported perforated files.
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


def measure(name: str, batch: int, rates: List[float], rounds: int, threads: int) -> Dict[str, object]:
    import perforated.onnx as pon
    from perforated.onnx.zoo import zoo_model
    from perforated.timing import alternating_times

    proto = zoo_model(name)
    progress(f"{name} b{batch}: loading dense and {len(rates)} plan(s)")
    dense = pon.load(proto, batch=batch)
    x = np.random.default_rng(1).standard_normal(next(iter(dense.graph.inputs.values()))).astype(np.float32)
    calls, rows = [lambda: dense.forward(x)], [{"engine": "ours", "variant": "dense", "mac_reduction": 1.0}]
    for r in rates:
        m = pon.load(proto, batch=batch, plan={"rate": r, "kind": "grid", "seed": 1})
        macs = m.macs()
        calls.append(lambda m=m: m.forward(x))
        rows.append({"engine": "ours", "variant": f"grid rate {r}", "mac_reduction": macs["dense"] / macs["planned"]})
        m_bytes = pon.to_onnx(m).SerializeToString()
        for peer, run in _peer_runners(m_bytes, x, threads).items():
            calls.append(run)
            rows.append({"engine": peer, "variant": f"exported grid rate {r}",
                         "mac_reduction": macs["dense"] / macs["planned"]})
    peer_bytes = pon.to_onnx(dense).SerializeToString()  # the file at this batch, batch norms folded
    for peer, run in _peer_runners(peer_bytes, x, threads).items():
        calls.append(run)
        rows.append({"engine": peer, "variant": "dense", "mac_reduction": 1.0})
    progress(f"{name} b{batch}: timing {len(calls)} calls, {rounds} alternating rounds")
    times = alternating_times(calls, rounds)
    best_peer = min((min(t) for t, r in zip(times, rows) if r["engine"] != "ours" and r["variant"] == "dense"),
                    default=None)
    for t, r in zip(times, rows):
        r["min_ms"] = min(t) * 1e3
        r["median_ms"] = float(np.median(t)) * 1e3
        r["vs_best_dense_peer"] = best_peer / min(t) if best_peer else None
    return {"network": name, "batch": batch, "rounds": rounds, "threads": threads, "rows": rows,
            "machine": machine_metadata()}


def render(result: Dict[str, object]) -> List[str]:
    lines = [f"# {result['network']} (ONNX zoo graph, seeded random weights), batch {result['batch']}", "",
             f"`{result['machine']['command']}` on {result['machine']['cpu']} "
             f"({result['machine'].get('isa', '?')}, {result['machine']['logical_cpus']} logical CPUs), commit "
             f"{result['machine'].get('commit') or '?'}, {result['machine']['date']}; "
             f"{result['rounds']} alternating rounds, min per call, {result['threads']} threads for every engine.",
             "The peers read the file at this batch as our exporter writes it (batch norms folded); the "
             "exported plans are our perforated graphs in standard ONNX ops.", ""]
    body = [[r["engine"], r["variant"], f"{r['mac_reduction']:.2f}x", f"{r['min_ms']:.1f}", f"{r['median_ms']:.1f}",
             f"{r['vs_best_dense_peer']:.2f}x" if r["vs_best_dense_peer"] else "-"] for r in result["rows"]]
    return lines + md_table(["engine", "network", "fewer conv MACs", "min ms", "median ms",
                             "speed vs best dense peer"], body)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="resnet50", help="a zoo graph name (perforated.onnx.zoo.NAMES)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rates", default="0.5,0.667", help="grid rates of the perforated rows")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS), help="folder for graph_<network>.md/.json")
    args = p.parse_args(argv)
    result = measure(args.network, args.batch, [float(r) for r in args.rates.split(",") if r], args.rounds,
                     args.threads)
    print(write_result(Path(args.out) / f"graph_{args.network}_b{args.batch}", result, render(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
