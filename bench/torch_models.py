"""python -m bench.torch_models — torchvision models (random weights) perforated with
``perforated.torch.perforate``: forward and training-step time on the CPU of PyTorch's dense model, our
C path and the pure-PyTorch path of the same perforated model; writes results/torch_models.md and .json.

Rows per model, timed in alternating rounds in one process (perforated.timing.alternating_times),
minimum per call, ``torch.set_num_threads(threads)`` and the library's own threads alike: the dense
``nn.Conv2d`` model (PyTorch, oneDNN), then for each grid rate the perforated model on libperforated
(``implementation="c"``) and on PyTorch operations (``implementation="torch"``). A training step is
forward, cross-entropy, backward and an SGD update. Needs torch and torchvision (``perforated[torch]``).
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Dict, List, Optional

from bench.markdown import md_table, write_result
from bench.measure import machine_metadata, progress
from bench.paths import RESULTS


def _set_impl(model, impl: str) -> None:
    from perforated.torch import PerforatedConv2d

    for m in model.modules():
        if isinstance(m, PerforatedConv2d):
            m.implementation = impl


def measure(name: str, batch: int, size: int, rates: List[float], rounds: int, threads: int) -> Dict[str, object]:
    import torch
    import torchvision
    from perforated.timing import alternating_times
    from perforated.torch import perforate, uniform_plan

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    dense = torchvision.models.get_model(name, weights=None, num_classes=1000)
    x = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 1000, (batch,))
    models = [("pytorch", "dense", 0.0, dense)]
    for r in rates:
        m = copy.deepcopy(dense)
        perforate(m, uniform_plan(m, r, "grid", seed=1, example_input=x[:1]), example_input=x[:1])
        models.append(("ours (C path)", f"grid rate {r}", r, m))
        models.append(("ours (pure PyTorch path)", f"grid rate {r}", r, m))

    def forward(model, impl):
        def call():
            _set_impl(model, impl)
            with torch.no_grad():
                model(x)
        return call

    def train_step(model, impl):
        opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

        def call():
            _set_impl(model, impl)
            loss = torch.nn.functional.cross_entropy(model(x), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return call

    rows = []
    for phase, make in (("forward", forward), ("train step", train_step)):
        calls = []
        for engine, variant, rate, model in models:
            model.train(phase == "train step")
            impl = "torch" if "pure" in engine else "c"
            calls.append(make(model, impl))
            rows.append({"phase": phase, "engine": engine, "variant": variant, "rate": rate})
        progress(f"{name} b{batch} {phase}: {len(calls)} calls, {rounds} alternating rounds")
        times = alternating_times(calls, rounds)
        for t, r in zip(times, rows[-len(calls):]):
            r["min_ms"] = min(t) * 1e3
            r["median_ms"] = sorted(t)[len(t) // 2] * 1e3
        base = rows[-len(calls)]["min_ms"]
        for r in rows[-len(calls):]:
            r["vs_pytorch_dense"] = base / r["min_ms"]
    return {"model": name, "batch": batch, "size": size, "rounds": rounds, "threads": threads, "rows": rows,
            "torch": torch.__version__, "machine": machine_metadata()}


def render(results: List[Dict[str, object]]) -> List[str]:
    m = results[0]["machine"]
    lines = ["# torchvision models perforated in PyTorch (random weights), CPU", "",
             f"`{m['command']}` on {m['cpu']} ({m.get('isa', '?')}, {m['logical_cpus']} logical CPUs), commit "
             f"{m.get('commit') or '?'}, {m['date']}, torch "
             f"{results[0]['torch']}; {results[0]['rounds']} alternating rounds, min per call, "
             f"{results[0]['threads']} threads. Perforated rows: every convolution at the grid rate "
             f"(``perforate(model, uniform_plan(model, rate, 'grid'))``), explicit interpolation.", ""]
    for res in results:
        lines += [f"## {res['model']}, batch {res['batch']}, {res['size']}x{res['size']}", ""]
        body = [[r["phase"], r["engine"], r["variant"], f"{r['min_ms']:.1f}", f"{r['median_ms']:.1f}",
                 f"{r['vs_pytorch_dense']:.2f}x"] for r in res["rows"]]
        lines += md_table(["phase", "engine", "model", "min ms", "median ms", "speed vs PyTorch dense"], body)
        lines.append("")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,vgg16", help="torchvision model names")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rates", default="0.5,0.75", help="grid rates of the perforated rows")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS), help="folder for torch_models.md/.json")
    args = p.parse_args(argv)
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        print("bench.torch_models needs torch and torchvision: pip install \"perforated[torch]\"", file=sys.stderr)
        return 2
    results = [measure(name, args.batch, args.size, [float(r) for r in args.rates.split(",") if r], args.rounds,
                       args.threads) for name in args.models.split(",") if name]
    print(write_result(Path(args.out) / "torch_models", results, render(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
